//! The NATS JetStream publisher against the real server (127.0.0.1:4222):
//! each test makes its own stream and deletes it.

use async_nats::jetstream::{self, stream};
use imggo_receiver::forward::nats::NatsPublisher;
use imggo_receiver::forward::publish::Verdict;

use crate::broker_support::*;
use crate::helpers::Proxy;

pub const URL: &str = "nats://127.0.0.1:4222";

async fn context() -> jetstream::Context {
    let client = async_nats::connect(URL)
        .await
        .expect("NATS at 127.0.0.1:4222");
    jetstream::new(client)
}

/// A stream named `name` capturing `name.>` (names are unique per test).
pub async fn create_stream(name: &str, max_message_size: i32) {
    context()
        .await
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{name}.>")],
            max_message_size,
            ..Default::default()
        })
        .await
        .unwrap();
}

pub async fn delete_stream(name: String) {
    let _ = context().await.delete_stream(&name).await;
}

/// (Nats-Msg-Id, payload) of every message in the stream, by sequence.
pub async fn stored(name: &str) -> Vec<(String, Vec<u8>)> {
    let mut stream = context().await.get_stream(name).await.unwrap();
    let count = stream.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let m = stream.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((id, m.payload.to_vec()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_batch_is_stored_in_order_and_a_resend_is_not_duplicated() {
    let name = unique("T");
    create_stream(&name, -1).await;
    let n = name.clone();
    with_cleanup(
        async move {
            let mut p = NatsPublisher::new(URL.into(), TIMEOUT);
            let batch = messages("n", &format!("{n}.job_succeeded"), 1, 600);
            assert_all_confirmed(&publish(&mut p, &batch).await, 600);
            let held = stored(&n).await;
            assert_eq!(held.len(), 600);
            for (m, (id, body)) in batch.iter().zip(&held) {
                assert_eq!(id, &m.id);
                assert_eq!(body, &m.body.to_vec());
            }
            // A re-send (after a crash, say) within duplicate_window.
            assert_all_confirmed(&publish(&mut p, &batch[100..300]).await, 200);
            assert_eq!(
                stored(&n).await.len(),
                600,
                "JetStream dropped the re-sent ids"
            );
        },
        delete_stream(name),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_subject_without_a_stream_fails_as_unroutable() {
    let mut p = NatsPublisher::new(URL.into(), TIMEOUT);
    let batch = messages("x", &format!("{}.none", unique("nostream")), 1, 3);
    let verdicts = publish(&mut p, &batch).await;
    assert_eq!(verdicts.len(), 1, "the batch stops at the first failure");
    assert_eq!(failed_reason(&verdicts), "unroutable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_too_large_messages_are_refused_alone() {
    let name = unique("T");
    create_stream(&name, 4096).await;
    let n = name.clone();
    with_cleanup(
        async move {
            let mut p = NatsPublisher::new(URL.into(), TIMEOUT);
            let mut batch = messages("big", &format!("{n}.e"), 1, 4);
            // Over the stream's max_msg_size: the server refuses it.
            batch[1].body = vec![b' '; 8192].into();
            // Over the server's max_payload: never sent at all.
            batch[2].body = vec![b' '; 2 * 1024 * 1024].into();
            let verdicts = publish(&mut p, &batch).await;
            assert_eq!(verdicts.len(), 4, "{verdicts:?}");
            assert!(matches!(verdicts[0], Verdict::Confirmed), "{verdicts:?}");
            assert!(matches!(verdicts[1], Verdict::Refused(_)), "{verdicts:?}");
            assert!(matches!(verdicts[2], Verdict::Refused(_)), "{verdicts:?}");
            assert!(matches!(verdicts[3], Verdict::Confirmed), "{verdicts:?}");
            let ids: Vec<_> = stored(&n).await.into_iter().map(|(id, _)| id).collect();
            assert_eq!(ids, vec![batch[0].id.clone(), batch[3].id.clone()]);
            // The connection survived the refusals.
            assert_all_confirmed(&publish(&mut p, &batch[3..]).await, 1);
        },
        delete_stream(name),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cut_connection_fails_then_recovers_without_duplicates() {
    let name = unique("T");
    create_stream(&name, -1).await;
    let n = name.clone();
    with_cleanup(
        async move {
            let proxy = Proxy::start(local(4222)).await;
            let mut p = NatsPublisher::new(format!("nats://{}", proxy.addr), TIMEOUT);
            let batch = messages("cut", &format!("{n}.e"), 1, 30);
            assert_all_confirmed(&publish(&mut p, &batch[..10]).await, 10);

            proxy.set_up(false);
            let verdicts = publish(&mut p, &batch[10..]).await;
            let reason = failed_reason(&verdicts);
            assert!(["unreachable", "timeout"].contains(&reason), "{verdicts:?}");
            assert!(verdicts[..verdicts.len() - 1]
                .iter()
                .all(|v| matches!(v, Verdict::Confirmed)));

            proxy.set_up(true);
            publish_until_confirmed(&mut p, &batch[10..]).await;
            let ids: Vec<_> = stored(&n).await.into_iter().map(|(id, _)| id).collect();
            let want: Vec<_> = batch.iter().map(|m| m.id.clone()).collect();
            assert_eq!(ids, want, "every message once, in order");
        },
        delete_stream(name),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_unreachable_server_fails_fast_and_hides_the_password() {
    // A port nothing listens on: a proxy that is down from the start.
    let proxy = Proxy::start(local(4222)).await;
    proxy.set_up(false);
    let mut p = NatsPublisher::new(format!("nats://relay:s3cretpw@{}", proxy.addr), TIMEOUT);
    let verdicts = publish(&mut p, &messages("u", "a.b", 1, 2)).await;
    assert_eq!(verdicts.len(), 1);
    let Verdict::Failed { reason, detail, .. } = &verdicts[0] else {
        panic!("{verdicts:?}")
    };
    assert!(["unreachable", "timeout"].contains(reason), "{verdicts:?}");
    assert!(
        !detail.contains("s3cretpw") && !detail.contains("relay"),
        "{detail}"
    );
}
