//! The Redis Streams publisher against the real server (127.0.0.1:6379,
//! Redis 7): each test writes its own key and deletes it.

use imggo_receiver::forward::publish::Verdict;
use imggo_receiver::forward::redis::RedisPublisher;
use redis::AsyncCommands as _;

use crate::broker_support::*;
use crate::helpers::Proxy;

pub const URL: &str = "redis://127.0.0.1:6379";

pub async fn conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis at 127.0.0.1:6379")
}

pub async fn delete(key: String) {
    let _: Result<i64, _> = conn().await.del(&key).await;
}

/// (entry id, field id, field body) of every entry, in stream order.
pub async fn entries(key: &str) -> Vec<(String, String, Vec<u8>)> {
    let reply: redis::streams::StreamRangeReply = conn().await.xrange_all(key).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            let id: String = e.get("id").unwrap();
            let body: Vec<u8> = e.get("body").unwrap();
            (e.id, id, body)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_batch_is_appended_in_order_and_a_resend_is_not_duplicated() {
    let key = unique("imggo-test:");
    let k = key.clone();
    with_cleanup(
        async move {
            let mut p = RedisPublisher::new(URL.into(), 0, TIMEOUT);
            let batch = messages("r", &k, 1, 600);
            assert_all_confirmed(&publish(&mut p, &batch).await, 600);
            let held = entries(&k).await;
            assert_eq!(held.len(), 600);
            for (m, (entry, id, body)) in batch.iter().zip(&held) {
                assert_eq!(entry, &format!("{}-{}", m.seq.0, m.seq.1));
                assert_eq!(id, &m.id);
                assert_eq!(body, &m.body.to_vec());
            }
            // A re-send (after a crash, say): confirmed, not appended again.
            assert_all_confirmed(&publish(&mut p, &batch[100..300]).await, 200);
            assert_eq!(entries(&k).await.len(), 600);
        },
        delete(key),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_maxlen_trims_and_a_resend_of_a_trimmed_entry_is_confirmed() {
    let key = unique("imggo-test:");
    let k = key.clone();
    with_cleanup(
        async move {
            let mut p = RedisPublisher::new(URL.into(), 100, TIMEOUT);
            let batch = messages("t", &k, 1, 1000);
            assert_all_confirmed(&publish(&mut p, &batch).await, 1000);
            let held = entries(&k).await;
            assert!(
                held.len() < 1000 && held.len() >= 100,
                "trimmed to about 100: {}",
                held.len()
            );
            assert_eq!(held.last().unwrap().1, batch[999].id);
            assert_all_confirmed(&publish(&mut p, &batch[..5]).await, 5);
        },
        delete(key),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entry_the_stream_skipped_is_refused_not_counted_sent() {
    let key = unique("imggo-test:");
    let k = key.clone();
    with_cleanup(
        async move {
            let mut p = RedisPublisher::new(URL.into(), 0, TIMEOUT);
            let batch = messages("s", &k, 1, 3);
            // Someone else's entry at our position 2, and one above 3.
            let _: String = conn()
                .await
                .xadd(&k, "2-0", &[("id", "other")])
                .await
                .unwrap();
            let verdicts = publish(&mut p, &batch).await;
            assert_eq!(verdicts.len(), 3, "{verdicts:?}");
            assert!(
                matches!(verdicts[0], Verdict::Refused(_)),
                "1-0 was skipped: {verdicts:?}"
            );
            assert!(
                matches!(verdicts[1], Verdict::Refused(_)),
                "2-0 holds another: {verdicts:?}"
            );
            assert!(matches!(verdicts[2], Verdict::Confirmed), "{verdicts:?}");
        },
        delete(key),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_key_of_the_wrong_type_fails_the_batch_there() {
    let key = unique("imggo-test:");
    let k = key.clone();
    with_cleanup(
        async move {
            let _: () = conn().await.set(&k, "not a stream").await.unwrap();
            let mut p = RedisPublisher::new(URL.into(), 0, TIMEOUT);
            let verdicts = publish(&mut p, &messages("w", &k, 1, 3)).await;
            assert_eq!(verdicts.len(), 1, "{verdicts:?}");
            assert_eq!(failed_reason(&verdicts), "other");
        },
        delete(key),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_connection_fails_then_recovers_without_duplicates() {
    let key = unique("imggo-test:");
    let k = key.clone();
    with_cleanup(
        async move {
            let proxy = Proxy::start(local(6379)).await;
            let mut p = RedisPublisher::new(format!("redis://{}", proxy.addr), 0, TIMEOUT);
            let batch = messages("cut", &k, 1, 30);
            assert_all_confirmed(&publish(&mut p, &batch[..10]).await, 10);

            proxy.set_up(false);
            let verdicts = publish(&mut p, &batch[10..]).await;
            let reason = failed_reason(&verdicts);
            assert!(["unreachable", "timeout"].contains(&reason), "{verdicts:?}");

            proxy.set_up(true);
            publish_until_confirmed(&mut p, &batch[10..]).await;
            let ids: Vec<_> = entries(&k).await.into_iter().map(|e| e.1).collect();
            let want: Vec<_> = batch.iter().map(|m| m.id.clone()).collect();
            assert_eq!(ids, want, "every message once, in order");
        },
        delete(key),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_server_fails_fast_and_hides_the_password() {
    let proxy = Proxy::start(local(6379)).await;
    proxy.set_up(false);
    let url = format!("redis://relay:s3cretpw@{}/0", proxy.addr);
    let mut p = RedisPublisher::new(url, 0, TIMEOUT);
    let verdicts = publish(&mut p, &messages("u", "k", 1, 2)).await;
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
