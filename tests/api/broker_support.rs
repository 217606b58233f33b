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

/// The three broker destinations of one test, all named `name`: a JetStream
/// stream capturing `name.>`, a RabbitMQ direct exchange and queue bound
/// under `ROUTED`, and a Redis stream key.
#[derive(Clone)]
pub struct Brokers {
    pub name: String,
}

/// Where a test's receiver reaches each broker (the real one, or a proxy).
pub struct Routes {
    pub nats: std::net::SocketAddr,
    pub amqp: std::net::SocketAddr,
    pub redis: std::net::SocketAddr,
}

impl Routes {
    pub fn direct() -> Self {
        Self {
            nats: local(4222),
            amqp: local(5672),
            redis: local(6379),
        }
    }
}

impl Brokers {
    pub async fn create() -> Self {
        let name = unique("imggo");
        crate::forward_nats::create_stream(&name, -1).await;
        crate::forward_amqp::declare(&name).await;
        Self { name }
    }

    pub async fn remove(self) {
        crate::forward_nats::delete_stream(self.name.clone()).await;
        crate::forward_amqp::remove(self.name.clone()).await;
        crate::forward_redis::delete(self.name).await;
    }

    /// Destinations `{prefix}-nats`, `{prefix}-mq`, `{prefix}-redis` as
    /// environment overrides, reaching the brokers by `routes`.
    pub fn env(&self, prefix: &str, routes: &Routes) -> Vec<(String, String)> {
        let n = &self.name;
        let mut env = Vec::new();
        let mut dest = |dest: &str, pairs: &[(&str, String)]| {
            for (k, v) in pairs {
                let key = format!(
                    "IMGGO__FORWARD__{}__{k}",
                    format!("{prefix}-{dest}").to_uppercase()
                );
                env.push((key, v.clone()));
            }
            env.push((
                format!(
                    "IMGGO__FORWARD__{}__TIMEOUT",
                    format!("{prefix}-{dest}").to_uppercase()
                ),
                "2s".into(),
            ));
            env.push((
                format!(
                    "IMGGO__FORWARD__{}__MAX_BACKOFF",
                    format!("{prefix}-{dest}").to_uppercase()
                ),
                "2s".into(),
            ));
        };
        dest(
            "nats",
            &[
                ("KIND", "nats".into()),
                ("URL", format!("nats://{}", routes.nats)),
                ("SUBJECT", format!("{n}.{{event}}")),
            ],
        );
        dest(
            "mq",
            &[
                ("KIND", "rabbitmq".into()),
                ("URL", format!("amqp://guest:guest@{}/%2f", routes.amqp)),
                ("EXCHANGE", n.clone()),
                ("ROUTING_KEY", crate::forward_amqp::ROUTED.into()),
            ],
        );
        dest(
            "redis",
            &[
                ("KIND", "redis".into()),
                ("URL", format!("redis://{}", routes.redis)),
                ("STREAM", n.clone()),
            ],
        );
        env
    }

    /// (id, body) of each JetStream message, in stream order.
    pub async fn nats(&self) -> Vec<(String, Vec<u8>)> {
        crate::forward_nats::stored(&self.name).await
    }

    /// (id, body) of each Redis entry, in stream order.
    pub async fn redis(&self) -> Vec<(String, Vec<u8>)> {
        crate::forward_redis::entries(&self.name)
            .await
            .into_iter()
            .map(|(_, id, body)| (id, body))
            .collect()
    }

    /// Messages waiting in the RabbitMQ queue.
    pub async fn amqp_count(&self) -> u32 {
        let (conn, ch) = crate::forward_amqp::channel().await;
        let queue = ch
            .queue_declare(
                &self.name,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = conn.close(200, "done").await;
        queue.message_count()
    }

    /// (id, body) of each RabbitMQ message, in queue order (taken off it).
    pub async fn amqp_take(&self) -> Vec<(String, Vec<u8>)> {
        crate::forward_amqp::drain(&self.name)
            .await
            .into_iter()
            .map(|g| (g.message_id, g.body))
            .collect()
    }

    /// Messages the JetStream stream holds.
    pub async fn nats_count(&self) -> u64 {
        let context = async_nats::jetstream::new(
            async_nats::connect(crate::forward_nats::URL).await.unwrap(),
        );
        let mut stream = context.get_stream(&self.name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Entries the Redis stream holds.
    pub async fn redis_count(&self) -> u64 {
        redis::AsyncCommands::xlen(&mut crate::forward_redis::conn().await, &self.name)
            .await
            .unwrap()
    }

    /// Waits (bounded) until every destination holds at least `n` messages
    /// (counted, not read: reading a queue takes its messages off).
    pub async fn until_all_hold(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let nats = self.nats_count().await as usize;
            let redis = self.redis_count().await as usize;
            let mq = self.amqp_count().await as usize;
            if nats >= n && redis >= n && mq >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "destinations never held {n}: nats {nats}, redis {redis}, rabbitmq {mq}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A TCP forwarder the test owns, like `helpers::Proxy` (cut and heal), that
/// can also slow the client's bytes down and count a marker in them.
pub struct Tap {
    pub addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    /// Client-to-server bytes let through per 10 ms; 0 = no limit.
    pace: std::sync::atomic::AtomicUsize,
    marker: Vec<u8>,
    seen: std::sync::atomic::AtomicUsize,
}

impl Tap {
    /// Counts `marker` (e.g. `b"\r\nXADD\r\n"`) in what clients send.
    pub async fn start(upstream: std::net::SocketAddr, marker: &[u8]) -> std::sync::Arc<Self> {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tap = std::sync::Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            up: tokio::sync::watch::channel(true).0,
            pace: 0.into(),
            marker: marker.to_vec(),
            seen: 0.into(),
        });
        let t = tap.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    break;
                };
                if !*t.up.borrow() {
                    continue;
                }
                let t = t.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut in_r, mut in_w) = inbound.into_split();
                    let (mut out_r, mut out_w) = outbound.into_split();
                    let mut down = t.up.subscribe();
                    let tc = t.clone();
                    let upward = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut tail: Vec<u8> = Vec::new();
                        loop {
                            let pace = tc.pace.load(Ordering::Relaxed);
                            let want = if pace == 0 {
                                buf.len()
                            } else {
                                pace.min(buf.len())
                            };
                            let Ok(n) = in_r.read(&mut buf[..want]).await else {
                                break;
                            };
                            if n == 0 {
                                break;
                            }
                            if !tc.marker.is_empty() {
                                tail.extend_from_slice(&buf[..n]);
                                let m = tc.marker.len();
                                let hits = tail
                                    .windows(m)
                                    .filter(|w| *w == tc.marker.as_slice())
                                    .count();
                                tc.seen.fetch_add(hits, Ordering::Relaxed);
                                let keep = tail.len().min(m - 1);
                                tail.drain(..tail.len() - keep);
                            }
                            if out_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            if pace > 0 {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    };
                    let downward = tokio::io::copy(&mut out_r, &mut in_w);
                    tokio::select! {
                        _ = upward => {}
                        _ = downward => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        tap
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// Client bytes let through per 10 ms (0: unlimited).
    pub fn pace(&self, bytes_per_10ms: usize) {
        self.pace
            .store(bytes_per_10ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How often the marker went through so far.
    pub fn seen(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }
}
