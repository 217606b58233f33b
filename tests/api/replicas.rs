//! Three replicas sharing one Postgres under load, one killed with -9 in
//! the middle (CONTRACT §5, §10): no acknowledged delivery is lost, the feed
//! gives each event exactly once, and retention with partition maintenance
//! runs on one replica at a time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::api_support::make_token;
use crate::helpers::*;

struct Replica {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    port: u16,
    api: u16,
}

fn replica(db: &TestDb) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin, api) = (free_port(), free_port(), free_port());
    let mut env = serve_env(db, port, admin);
    env.extend([
        ("IMGGO__API__BIND".into(), format!("127.0.0.1:{api}")),
        ("IMGGO__RATE_LIMIT__PER_SECOND".into(), "1000000".into()),
        ("IMGGO__RATE_LIMIT__BURST".into(), "1000000".into()),
        // Retention and partition maintenance on every replica, often: at
        // most one may run at a time, and none may fail for the others.
        ("IMGGO__RETENTION__PURGE_INTERVAL".into(), "200ms".into()),
        ("IMGGO__STORAGE__PARTITION_INTERVAL".into(), "1h".into()),
    ]);
    Replica {
        dir,
        env,
        port,
        api,
    }
}

impl Replica {
    fn start(&self) -> Server {
        let mut server = Server::start(command(self.dir.path(), &self.env));
        server.wait_for("listening");
        server
    }
}

/// Follows the feed of `api` from the start until `expect` (0: not known
/// yet) events have come and a page after them comes back empty; returns
/// every event id in the order given.
async fn follow(api: u16, token: String, expect: Arc<AtomicUsize>) -> Vec<String> {
    let client = reqwest::Client::new();
    let (mut ids, mut after) = (Vec::new(), String::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed stalled at {}",
            ids.len()
        );
        let target = expect.load(Ordering::SeqCst);
        let done = target > 0 && ids.len() >= target;
        let from = if after.is_empty() {
            String::new()
        } else {
            format!("&after={after}")
        };
        let url = format!("http://127.0.0.1:{api}/v1/events?limit=200&wait=1{from}");
        let page: Value = client
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap();
        ids.extend(events.iter().map(|e| e["id"].to_string()));
        after = page["next"].as_str().unwrap().to_owned();
        if done && events.is_empty() {
            return ids;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_killed_under_load_lose_nothing_and_feed_each_event_once() {
    let db = TestDb::new().await;
    let token = make_token(&db.store(), "reader", "events:read").await;
    let replicas: Vec<Replica> = (0..3).map(|_| replica(&db)).collect();
    let mut servers: Vec<Server> = replicas.iter().map(Replica::start).collect();

    let expect = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn(follow(replicas[0].api, token, expect.clone()));

    let urls: Vec<String> = replicas
        .iter()
        .map(|r| format!("http://127.0.0.1:{}/webhooks/imggo", r.port))
        .collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..6)
        .map(|w| {
            let (urls, acked, stop) = (urls.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let job = format!("replica-{w}-{n}");
                    let body = prod_body(&job);
                    let sent = client
                        .post(&urls[(w + n) % urls.len()])
                        .header("x-imggo-signature", prod_signature(&body))
                        .body(body)
                        .send()
                        .await;
                    n += 1;
                    if matches!(sent, Ok(ref res) if res.status() == 200) {
                        acked.lock().unwrap().push(job);
                    }
                }
            })
        })
        .collect();
    let acked_at_least = |n: usize| {
        let acked = acked.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(60), async {
                while acked.lock().unwrap().len() < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("deliveries were acknowledged");
        }
    };
    acked_at_least(300).await;
    servers[2].child.kill().unwrap(); // SIGKILL, mid-load
    servers[2].child.wait().unwrap();
    let at_kill = acked.lock().unwrap().len();
    acked_at_least(at_kill + 300).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    // The killed replica comes back on its own spool and drains it.
    servers[2] = replicas[2].start();

    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let stored = eventually("every acknowledged delivery is stored", || async {
        let stored: HashSet<String> = db.stored_job_ids().await.into_iter().collect();
        acked.is_subset(&stored).then_some(stored)
    })
    .await;
    expect.store(stored.len(), Ordering::SeqCst);
    let ids = reader.await.unwrap();
    let once: HashSet<&String> = ids.iter().collect();
    assert_eq!(once.len(), ids.len(), "an event came twice in the feed");
    assert_eq!(ids.len(), stored.len(), "the feed gave every stored event");

    // Retention ran on all three every 200 ms; none of them failed.
    for server in servers {
        let (status, log) = server.terminate();
        assert!(status.success());
        assert!(!log.contains("retention pass failed"), "{log}");
        assert!(!log.contains("cannot make the time partitions"), "{log}");
    }
}
