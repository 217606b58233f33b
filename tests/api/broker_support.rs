//! Shared by the broker publisher tests: messages shaped like the relay's,
//! bounded publishing, and clean-up that runs even when a test fails.

use std::future::Future;
use std::time::Duration;

use imggo_receiver::forward::publish::{Message, Publisher, Verdict};

/// The publisher timeout the tests use: short, so failures come quickly.
pub const TIMEOUT: Duration = Duration::from_secs(2);

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// `n` messages for `target`, seq `(base + i, 0)`, ids `ev_<tag>_<i>`, each
/// body an EVENT-like JSON object that names its id.
pub fn messages(tag: &str, target: &str, base: u64, n: u64) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let id = format!("ev_{tag}_{i}");
            let body = serde_json::json!({
                "id": id,
                "cursor": format!("c{i}"),
                "job_id": format!("job-{i}"),
                "event": "job.succeeded",
                "payload": {"n": i},
            });
            Message {
                id,
                target: target.to_owned(),
                body: serde_json::to_vec(&body).unwrap().into(),
                timestamp: 1_765_000_000 + i as i64,
                seq: (base + i, 0),
            }
        })
        .collect()
}

/// One `publish` call that must come back within 30 s.
pub async fn publish(p: &mut dyn Publisher, batch: &[Message]) -> Vec<Verdict> {
    tokio::time::timeout(Duration::from_secs(30), p.publish(batch))
        .await
        .expect("publish hung past 30 s")
}

/// Asserts one verdict per message, every one Confirmed.
pub fn assert_all_confirmed(verdicts: &[Verdict], n: usize) {
    assert_eq!(verdicts.len(), n, "{verdicts:?}");
    assert!(
        verdicts.iter().all(|v| matches!(v, Verdict::Confirmed)),
        "{verdicts:?}"
    );
}

/// The reason of a batch's last verdict, which must be a Failed.
pub fn failed_reason(verdicts: &[Verdict]) -> &'static str {
    match verdicts.last() {
        Some(Verdict::Failed { reason, .. }) => reason,
        other => panic!("expected Failed last, got {other:?} in {verdicts:?}"),
    }
}

/// Publishes `batch` again and again (each call bounded) until every
/// message is confirmed: recovery after an outage, within 30 s.
pub async fn publish_until_confirmed(p: &mut dyn Publisher, batch: &[Message]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let verdicts = publish(p, batch).await;
        if verdicts.len() == batch.len() && verdicts.iter().all(|v| matches!(v, Verdict::Confirmed))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {verdicts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `body`, then `cleanup` whether or not `body` panicked, then lets a
/// panic go on: test streams, queues and keys never outlive their test.
pub async fn with_cleanup<B, C>(body: B, cleanup: C)
where
    B: Future<Output = ()> + Send + 'static,
    C: Future<Output = ()>,
{
    let outcome = tokio::spawn(body).await;
    tokio::time::timeout(Duration::from_secs(30), cleanup)
        .await
        .expect("clean-up hung");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}
