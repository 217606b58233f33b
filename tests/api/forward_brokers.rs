//! Forwarding to NATS JetStream, RabbitMQ and Redis Streams end to end
//! (CONTRACT §11): signed deliveries in, the brokers' own contents checked.
//! Each test owns its stream, exchange + queue and key (`Brokers`) and
//! removes them; outages come from TCP forwarders the test owns (`Tap`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api_support::*;
use crate::broker_support::*;
use crate::forward_support::with_destinations;
use crate::helpers::*;

const PII: [&str; 3] = ["4111 1111 1111 1111", "4111111111111111", "cvv-marker-b"];

fn pii_body(i: usize) -> Vec<u8> {
    let manifest = json!({"payment": {"creditCard": PII[0], "cvv": PII[2]}, "n": i});
    body_with(&new_job_id(), "job.succeeded", manifest)
}

/// Asserts `got` is exactly the feed: one message per event, in feed
/// order, the id as the destination's dedup id, the EVENT as the body, and
/// no personal data.
fn assert_is_the_feed(kind: &str, got: &[(String, Vec<u8>)], feed: &[Value]) {
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    let want: Vec<&str> = feed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, want, "{kind}: every event once, in feed order");
    for ((_, body), event) in got.iter().zip(feed) {
        let sent: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(&sent, event, "{kind}: the body is the feed's EVENT");
        let text = String::from_utf8_lossy(body);
        for pii in PII {
            assert!(!text.contains(pii), "{kind}: PII forwarded: {text}");
        }
    }
}

/// Each distinct id of `got`, in order of first arrival.
fn first_arrivals(got: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut seen = HashSet::new();
    got.iter()
        .filter(|(id, _)| seen.insert(id.clone()))
        .map(|(id, _)| id.clone())
        .collect()
}

fn feed_ids(feed: &[Value]) -> Vec<String> {
    feed.iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn every_event_in_feed_order(sqlite: bool, prefix: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let database_url = sqlite.then(|| sqlite_url(dir.path()));
    let brokers = Brokers::create().await;
    let b = brokers.clone();
    with_cleanup(
        async move {
            let env = b.env(prefix, &Routes::direct());
            let app = spawn_app_with(|o| {
                with_destinations(&mut o.settings, env);
                o.database_url = database_url;
            })
            .await;
            let token = make_token(&app.store, "reader", "events:read").await;
            const N: usize = 25;
            for i in 0..N {
                app.deliver(pii_body(i)).await;
            }
            let (feed, _) = app.drain(&token, 1000, N).await;
            assert_eq!(feed.len(), N);
            b.until_all_hold(N).await;
            assert_is_the_feed("nats", &b.nats().await, &feed);
            assert_is_the_feed("redis", &b.redis().await, &feed);
            assert_is_the_feed("rabbitmq", &b.amqp_take().await, &feed);
        },
        brokers.remove(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_each_broker_in_feed_order_on_postgres() {
    every_event_in_feed_order(false, "pg-brokers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_each_broker_in_feed_order_on_sqlite() {
    every_event_in_feed_order(true, "lite-brokers").await;
}

/// The events in feed order, from the `export` command.
fn exported(dir: &std::path::Path, env: &[(String, String)]) -> Vec<Value> {
    let out = run_ok(command(dir, env), &["export"]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_forwarding_to_brokers_loses_nothing() {
    let brokers = Brokers::create().await;
    let b = brokers.clone();
    with_cleanup(
        async move {
            let db = TestDb::new().await;
            let dir = tempfile::tempdir().unwrap();
            // Slow links, so that the kill lands in the middle.
            let taps = [
                Tap::start(local(4222), b"").await,
                Tap::start(local(5672), b"").await,
                Tap::start(local(6379), b"").await,
            ];
            for tap in &taps {
                tap.pace(200);
            }
            let routes = Routes {
                nats: taps[0].addr,
                amqp: taps[1].addr,
                redis: taps[2].addr,
            };
            let (port, admin) = (free_port(), free_port());
            let mut env = serve_env(&db, port, admin);
            env.extend(b.env("crash", &routes));
            let mut server = Server::start(command(dir.path(), &env));
            server.wait_for("listening");
            const N: usize = 60;
            let client = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
            for i in 0..N {
                let body = pii_body(i);
                let sig = prod_signature(&body);
                assert_eq!(
                    post_from(&client, &url, body, Some(&sig)).await.status(),
                    200
                );
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while b.nats_count().await < 5 {
                assert!(Instant::now() < deadline, "nothing reached NATS");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            server.child.kill().unwrap(); // SIGKILL
            server.child.wait().unwrap();
            let before = b.nats_count().await as usize;
            assert!(
                before < N,
                "everything went before the kill: the test proves nothing"
            );

            for tap in &taps {
                tap.pace(0);
            }
            let mut server = Server::start(command(dir.path(), &env));
            server.wait_for("listening");
            b.until_all_hold(N).await;
            let feed = exported(dir.path(), &env);
            assert_eq!(feed.len(), N);
            // JetStream dropped every re-sent id; Redis refused every
            // re-sent entry id: each holds the feed exactly.
            assert_is_the_feed("nats", &b.nats().await, &feed);
            assert_is_the_feed("redis", &b.redis().await, &feed);
            // RabbitMQ has no dedup: at least once, first copies in order.
            assert_eq!(first_arrivals(&b.amqp_take().await), feed_ids(&feed));
            let _ = server.terminate();
        },
        brokers.remove(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10s_broker_cut_under_load_keeps_ingest_200_and_loses_nothing() {
    let brokers = Brokers::create().await;
    let b = brokers.clone();
    with_cleanup(
        async move {
            let taps = [
                Tap::start(local(4222), b"").await,
                Tap::start(local(5672), b"").await,
                Tap::start(local(6379), b"").await,
            ];
            let routes = Routes {
                nats: taps[0].addr,
                amqp: taps[1].addr,
                redis: taps[2].addr,
            };
            let env = b.env("cut", &routes);
            let app = std::sync::Arc::new(
                spawn_app_with(|o| with_destinations(&mut o.settings, env)).await,
            );
            let token = make_token(&app.store, "reader", "events:read").await;

            // Four senders for 14 s; the brokers are cut from 2 s to 12 s.
            let start = Instant::now();
            let load = Duration::from_secs(14);
            let senders: Vec<_> = (0..4)
                .map(|s| {
                    let app = app.clone();
                    tokio::spawn(async move {
                        let mut statuses = Vec::new();
                        let mut i = 0;
                        while start.elapsed() < load {
                            let res = app.post_signed(pii_body(s * 100_000 + i)).await;
                            statuses.push(res.status().as_u16());
                            i += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        statuses
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(2)).await;
            for tap in &taps {
                tap.set_up(false);
            }
            let cut_at = b.nats_count().await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(
                b.nats_count().await <= cut_at + 64,
                "NATS kept receiving through the cut: the proxy is not in the path"
            );
            for tap in &taps {
                tap.set_up(true);
            }
            let mut statuses = Vec::new();
            for s in senders {
                statuses.extend(s.await.unwrap());
            }
            let n = statuses.len();
            assert!(n > 200, "too little load: {n}");
            assert!(
                statuses.iter().all(|s| *s == 200),
                "the webhook route was not always 200"
            );

            let (feed, _) = app.drain(&token, 1000, n).await;
            assert_eq!(feed.len(), n);
            b.until_all_hold(n).await;
            assert_is_the_feed("nats", &b.nats().await, &feed);
            assert_is_the_feed("redis", &b.redis().await, &feed);
            assert_eq!(first_arrivals(&b.amqp_take().await), feed_ids(&feed));
        },
        brokers.remove(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_event_to_one_redis_stream_exactly_once() {
    let brokers = Brokers::create().await;
    let b = brokers.clone();
    with_cleanup(
        async move {
            // Each replica reaches Redis through its own tap, which counts
            // the XADDs it sends: a duplicate refused by the explicit entry
            // id would not show in the stream, but shows here.
            let xadd = b"$4\r\nXADD\r\n";
            let taps = [
                Tap::start(local(6379), xadd).await,
                Tap::start(local(6379), xadd).await,
            ];
            let only_redis = |env: Vec<(String, String)>| -> Vec<(String, String)> {
                env.into_iter()
                    .filter(|(k, _)| k.contains("__PAIR-REDIS__"))
                    .collect()
            };
            let routes = |redis| Routes {
                redis,
                ..Routes::direct()
            };
            let env_a = only_redis(b.env("pair", &routes(taps[0].addr)));
            let env_b = only_redis(b.env("pair", &routes(taps[1].addr)));
            let a = spawn_app_with(|o| with_destinations(&mut o.settings, env_a)).await;
            let shared = a.db.url.clone();
            let second = spawn_app_with(|o| {
                with_destinations(&mut o.settings, env_b);
                o.database_url = Some(shared);
            })
            .await;
            const N: usize = 40;
            for i in 0..N {
                let app = if i % 2 == 0 { &a } else { &second };
                app.deliver(pii_body(i)).await;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while (b.redis_count().await as usize) < N {
                assert!(Instant::now() < deadline, "Redis never held {N}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let token = make_token(&a.store, "reader", "events:read").await;
            let (feed, _) = a.drain(&token, 1000, N).await;
            assert_is_the_feed("redis", &b.redis().await, &feed);
            let sent = (taps[0].seen(), taps[1].seen());
            assert_eq!(sent.0 + sent.1, N, "XADDs sent by the replicas: {sent:?}");
            assert!(
                sent.0 == 0 || sent.1 == 0,
                "both replicas forwarded: {sent:?}"
            );
            assert!(!a.server.is_finished() && !second.server.is_finished());
        },
        brokers.remove(),
    )
    .await;
}
