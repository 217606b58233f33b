//! The RabbitMQ publisher against the real broker (127.0.0.1:5672,
//! guest/guest): each test declares its own exchange and queue and deletes
//! them.

use imggo_receiver::forward::amqp::AmqpPublisher;
use imggo_receiver::forward::publish::Verdict;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::broker_support::*;
use crate::helpers::Proxy;

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const ROUTED: &str = "routed";

pub async fn channel() -> (Connection, Channel) {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    let conn = tokio::time::timeout(TIMEOUT * 5, Connection::connect(URL, properties))
        .await
        .expect("connect hung")
        .expect("RabbitMQ at 127.0.0.1:5672");
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

/// A direct exchange `name` with the queue `name` bound under `ROUTED`.
pub async fn declare(name: &str) {
    let (conn, ch) = channel().await;
    ch.exchange_declare(
        name,
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(name, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        name,
        name,
        ROUTED,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "done").await;
}

pub async fn remove(name: String) {
    let (conn, ch) = channel().await;
    let _ = ch.queue_delete(&name, QueueDeleteOptions::default()).await;
    let _ = ch
        .exchange_delete(&name, ExchangeDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done").await;
}

pub struct Got {
    pub message_id: String,
    pub body: Vec<u8>,
    delivery_mode: u8,
    content_type: String,
}

/// Everything in the queue, in queue order (taken off it).
pub async fn drain(queue: &str) -> Vec<Got> {
    let (conn, ch) = channel().await;
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let props = &m.delivery.properties;
        out.push(Got {
            message_id: props
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            body: m.delivery.data.clone(),
            delivery_mode: props.delivery_mode().unwrap_or(0),
            content_type: props
                .content_type()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        });
    }
    let _ = conn.close(200, "done").await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_batch_is_confirmed_persistent_and_in_order() {
    let name = unique("imggo-test-");
    declare(&name).await;
    let n = name.clone();
    with_cleanup(
        async move {
            let mut p = AmqpPublisher::new(URL.into(), n.clone(), TIMEOUT);
            let batch = messages("a", ROUTED, 1, 600);
            assert_all_confirmed(&publish(&mut p, &batch).await, 600);
            let got = drain(&n).await;
            assert_eq!(got.len(), 600);
            for (m, g) in batch.iter().zip(&got) {
                assert_eq!(g.message_id, m.id);
                assert_eq!(g.body, m.body.to_vec());
                assert_eq!(g.delivery_mode, 2, "persistent");
                assert_eq!(g.content_type, "application/json");
            }
        },
        remove(name),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_unroutable_message_fails_instead_of_vanishing() {
    let name = unique("imggo-test-");
    declare(&name).await;
    let n = name.clone();
    with_cleanup(
        async move {
            let mut p = AmqpPublisher::new(URL.into(), n.clone(), TIMEOUT);
            let mut batch = messages("u", ROUTED, 1, 3);
            batch[1].target = "no-queue-bound-here".into();
            let verdicts = publish(&mut p, &batch).await;
            assert_eq!(verdicts.len(), 2, "{verdicts:?}");
            assert!(matches!(verdicts[0], Verdict::Confirmed));
            assert_eq!(failed_reason(&verdicts), "unroutable");
            // The same publisher goes on once the message is routable.
            batch[1].target = ROUTED.into();
            assert_all_confirmed(&publish(&mut p, &batch[1..]).await, 2);
            // Message 2 was already on its way when 1 came back: it arrives
            // twice (at-least-once), and the re-sent tail keeps its order.
            let ids: Vec<_> = drain(&n).await.into_iter().map(|g| g.message_id).collect();
            assert_eq!(ids[0], batch[0].id);
            let tail: Vec<_> = batch[1..].iter().map(|m| m.id.clone()).collect();
            assert_eq!(ids[ids.len() - 2..], tail[..], "{ids:?}");
            assert!(batch.iter().all(|m| ids.contains(&m.id)), "{ids:?}");
        },
        remove(name),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_missing_exchange_fails_and_the_publisher_recovers() {
    let name = unique("imggo-test-");
    let n = name.clone();
    with_cleanup(
        async move {
            let mut p = AmqpPublisher::new(URL.into(), n.clone(), TIMEOUT);
            // The broker closes the channel (404): a failure, not a hang.
            let verdicts = publish(&mut p, &messages("m", ROUTED, 1, 2)).await;
            assert_eq!(verdicts.len(), 1, "{verdicts:?}");
            failed_reason(&verdicts);
            // Once the exchange exists, the same publisher gets through.
            declare(&n).await;
            assert_all_confirmed(&publish(&mut p, &messages("m", ROUTED, 1, 2)).await, 2);
            assert_eq!(drain(&n).await.len(), 2);
        },
        remove(name),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_cut_connection_fails_then_recovers() {
    let name = unique("imggo-test-");
    declare(&name).await;
    let n = name.clone();
    with_cleanup(
        async move {
            let proxy = Proxy::start(local(5672)).await;
            let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
            let mut p = AmqpPublisher::new(url, n.clone(), TIMEOUT);
            let batch = messages("cut", ROUTED, 1, 30);
            assert_all_confirmed(&publish(&mut p, &batch[..10]).await, 10);

            proxy.set_up(false);
            let verdicts = publish(&mut p, &batch[10..]).await;
            let reason = failed_reason(&verdicts);
            assert!(["unreachable", "timeout"].contains(&reason), "{verdicts:?}");
            let confirmed = verdicts.len() - 1;

            proxy.set_up(true);
            publish_until_confirmed(&mut p, &batch[10 + confirmed..]).await;
            let ids: Vec<_> = drain(&n).await.into_iter().map(|g| g.message_id).collect();
            // At-least-once: every id there, in order of first arrival.
            let mut seen = std::collections::HashSet::new();
            let firsts: Vec<_> = ids
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            let want: Vec<_> = batch.iter().map(|m| m.id.clone()).collect();
            assert_eq!(firsts, want);
        },
        remove(name),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_unreachable_broker_fails_fast_and_hides_the_password() {
    let proxy = Proxy::start(local(5672)).await;
    proxy.set_up(false);
    let url = format!("amqp://relay:s3cretpw@{}/%2f", proxy.addr);
    let mut p = AmqpPublisher::new(url, "x".into(), TIMEOUT);
    let verdicts = publish(&mut p, &messages("u", ROUTED, 1, 2)).await;
    assert_eq!(verdicts.len(), 1);
    let Verdict::Failed { reason, detail, .. } = &verdicts[0] else {
        panic!("{verdicts:?}")
    };
    assert!(
        ["unreachable", "timeout", "other"].contains(reason),
        "{verdicts:?}"
    );
    assert!(
        !detail.contains("s3cretpw") && !detail.contains("relay"),
        "{detail}"
    );
}

/// A message over the broker's `max_message_size` (16 MiB by default on
/// RabbitMQ 4, whose channel close 406 names the size) is refused: a dead
/// letter of that one message, not a failure retried forever; the messages
/// before it are confirmed, and the ones after go on a fresh channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_finds_too_large_is_refused_and_the_rest_go_on() {
    let name = unique("imggo-test-");
    declare(&name).await;
    let n = name.clone();
    with_cleanup(
        async move {
            let mut p =
                AmqpPublisher::new(URL.into(), n.clone(), std::time::Duration::from_secs(10));
            let mut batch = messages("big", ROUTED, 1, 3);
            batch[1].body = bytes::Bytes::from(vec![b' '; 128 * 1024 * 1024 + 1024]);
            let verdicts = publish(&mut p, &batch).await;
            assert!(matches!(verdicts[0], Verdict::Confirmed), "{verdicts:?}");
            match &verdicts[1] {
                Verdict::Refused(why) => assert!(why.contains("message size"), "{why}"),
                other => panic!("not refused: {other:?}"),
            }
            // What came after it on the closed channel goes again.
            let rest = &batch[2..];
            // (The close fails its confirm too: not a refusal of it.)
            if verdicts.len() > 2 {
                assert!(
                    matches!(verdicts[2], Verdict::Failed { .. }),
                    "{verdicts:?}"
                );
            }
            publish_until_confirmed(&mut p, rest).await;
            let got: Vec<String> = drain(&n).await.into_iter().map(|g| g.message_id).collect();
            assert!(
                got.contains(&batch[0].id) && got.contains(&batch[2].id),
                "{got:?}"
            );
            assert!(!got.contains(&batch[1].id), "{got:?}");
        },
        remove(name),
    )
    .await;
}
