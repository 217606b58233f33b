//! Forwarding to an HTTP destination (CONTRACT §11), end to end against the
//! test's own signature-verifying server: every event in feed order with
//! the feed's body, retries with backoff, dead letters and their replay,
//! the 410 pause, erasure notices, and the `forward` commands.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api_support::*;
use crate::forward_support::*;
use crate::helpers::*;

/// An app (Postgres, or SQLite in `sqlite`) forwarding to `dest` as `name`.
async fn app_forwarding(
    name: &str,
    dest: &Destination,
    sqlite: Option<&std::path::Path>,
) -> TestApp {
    let url = sqlite.map(sqlite_url);
    let env = http_destination(name, &dest.url());
    spawn_app_with(|o| {
        with_destinations(&mut o.settings, env);
        o.database_url = url;
    })
    .await
}

impl TestApp {
    /// The `forward` command line against this app's Postgres database,
    /// with `name` configured as the test's destination.
    fn forward_cli(&self, name: &str, dest: &Destination, args: &[&str]) -> std::process::Output {
        let mut env: Vec<(String, String)> = secret_env(&self.db.url).into_iter().collect();
        env.extend(http_destination(name, &dest.url()));
        let mut all = vec!["forward"];
        all.extend(args);
        run(command(self.dir.path(), &env), &all)
    }
}

async fn every_event_in_feed_order(sqlite: Option<&std::path::Path>, name: &str) {
    let dest = Destination::start().await;
    let app = app_forwarding(name, &dest, sqlite).await;
    let token = make_token(&app.store, "reader", "events:read").await;
    const N: usize = 20;
    for i in 0..N {
        let manifest = json!({"payment": {"creditCard": "4111 1111 1111 1111", "cvv": "cvv-marker-a"}, "n": i});
        app.deliver(body_with(&new_job_id(), "job.succeeded", manifest))
            .await;
    }
    let got = dest.until_accepted(N).await;
    let (feed, _) = app.drain(&token, 1000, N).await;
    assert_eq!(feed.len(), N);
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    // Nothing failed, so nothing is out of order: the feed, exactly.
    assert_eq!(bodies, feed);
    for (r, event) in got.iter().zip(&feed) {
        assert_eq!(r.id, event["id"].as_str().unwrap());
        let text = String::from_utf8_lossy(&r.body);
        for pii in ["4111 1111 1111 1111", "4111111111111111", "cvv-marker-a"] {
            assert!(!text.contains(pii), "PII forwarded: {text}");
        }
    }
    assert_eq!(dest.bad_signatures(), 0);
    assert_eq!(dest.requests().len(), N, "a message was sent twice");
    let metrics = scrape_app(&app).await;
    assert_eq!(
        sample(
            &metrics,
            &format!("imggo_forward_sent_total{{destination=\"{name}\"}}")
        ),
        N as f64
    );
}

#[tokio::test]
async fn every_event_reaches_an_http_destination_in_feed_order_on_postgres() {
    every_event_in_feed_order(None, "pg-order").await;
}

#[tokio::test]
async fn every_event_reaches_an_http_destination_in_feed_order_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    every_event_in_feed_order(Some(dir.path()), "lite-order").await;
}

async fn scrape_app(app: &TestApp) -> String {
    reqwest::get(format!("http://{}/metrics", app.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let dest = Destination::start().await;
    dest.answer_next(&[500, 503, 500]);
    let app = app_forwarding("retry5xx", &dest, None).await;
    app.deliver(prod_body(&new_job_id())).await;
    let got = dest.until_accepted(1).await;
    let tries = dest.requests();
    assert_eq!(tries.len(), 4, "three failures, then the success");
    assert!(tries.iter().all(|t| t.id == got[0].id));
    // 1 s doubling, jittered within the upper half, never under 1 s.
    for pair in tries.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    }
    let metrics = scrape_app(&app).await;
    let failures = sample(
        &metrics,
        "imggo_forward_failures_total{destination=\"retry5xx\",reason=\"status_5xx\"}",
    );
    assert_eq!(failures, 3.0, "{metrics}");
}

#[tokio::test]
async fn a_refused_event_is_dead_lettered_while_the_rest_go_on_and_replay_sends_it() {
    let dest = Destination::start().await;
    let jobs = [new_job_id(), new_job_id(), new_job_id()];
    dest.refuse_once(&jobs[1]);
    let app = app_forwarding("deadletters", &dest, None).await;
    let token = make_token(&app.store, "reader", "events:read").await;
    for job in &jobs {
        app.deliver(prod_body(job)).await;
    }
    let (events, _) = app.drain(&token, 10, 3).await;
    let dead_id = events[1]["id"].as_str().unwrap().to_owned();
    // The rest go on: the events around the refused one are accepted.
    let got = dest.until_accepted(2).await;
    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            events[0]["id"].as_str().unwrap(),
            events[2]["id"].as_str().unwrap()
        ]
    );
    let list = eventually("the dead letter is listed", || async {
        let out = app.forward_cli("deadletters", &dest, &["dead", "list", "deadletters"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).ok()
    })
    .await;
    assert_eq!(list["destination"], "deadletters");
    assert_eq!(list["id"], dead_id.as_str());
    assert_eq!(list["reason"], "HTTP 400");
    let metrics = scrape_app(&app).await;
    assert_eq!(
        sample(
            &metrics,
            "imggo_forward_dead_total{destination=\"deadletters\"}"
        ),
        1.0
    );
    let replay = app.forward_cli("deadletters", &dest, &["dead", "replay", "deadletters"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let got = dest.until_accepted(3).await;
    assert_eq!(got[2].id, dead_id);
    let body: Value = serde_json::from_slice(&got[2].body).unwrap();
    assert_eq!(body, events[1]);
    eventually("the dead letter is gone once accepted", || async {
        let out = app.forward_cli("deadletters", &dest, &["dead", "list"]);
        out.stdout.is_empty().then_some(())
    })
    .await;
}

/// A replay goes out while ingest goes on: under steady ingest the relay
/// seldom reads an empty page, so it may not wait for one (it replays once
/// a batch has caught up to what is readable).
#[tokio::test]
async fn a_replay_goes_out_while_ingest_never_lets_the_relay_idle() {
    let dest = Destination::start().await;
    let refused = new_job_id();
    dest.refuse_once(&refused);
    let app = std::sync::Arc::new(app_forwarding("busyreplay", &dest, None).await);
    app.deliver(prod_body(&refused)).await;
    eventually("the dead letter is listed", || async {
        let out = app.forward_cli("busyreplay", &dest, &["dead", "list"]);
        (!out.stdout.is_empty()).then_some(())
    })
    .await;
    // Ingest that never pauses for long: a delivery every few ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                app.deliver(prod_body(&new_job_id())).await;
                sent += 1;
            }
            sent
        })
    };
    eventually("ingest is flowing to the destination", || async {
        (dest.accepted().len() >= 20).then_some(())
    })
    .await;
    let replay = app.forward_cli("busyreplay", &dest, &["dead", "replay", "busyreplay"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let first = dest.accepted().iter().position(|r| {
                serde_json::from_slice::<Value>(&r.body)
                    .is_ok_and(|b| b["job_id"] == refused.as_str())
            });
            if first.is_some() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // Still ingesting when the replay arrived (or timed out).
    assert!(!ingest.is_finished(), "ingest stopped on its own");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = ingest.await.unwrap();
    assert!(
        replayed.is_ok(),
        "the replay did not go out within 10 s of steady ingest ({sent} deliveries)"
    );
}

#[tokio::test]
async fn gone_pauses_the_destination_until_resume() {
    let dest = Destination::start().await;
    dest.answer_next(&[410]);
    let app = app_forwarding("gone", &dest, None).await;
    app.deliver(prod_body(&new_job_id())).await;
    app.deliver(prod_body(&new_job_id())).await;
    let status = eventually("the destination is paused", || async {
        let out = app.forward_cli("gone", &dest, &["status"]);
        let line: Value = serde_json::from_slice(&out.stdout).ok()?;
        (line["paused"] == true).then_some(line)
    })
    .await;
    assert_eq!(status["name"], "gone");
    assert_eq!(status["kind"], "http");
    assert_eq!(status["lag_events"], 2);
    assert!(status["last_error"].as_str().unwrap().contains("410"));
    assert_eq!(
        dest.requests().len(),
        1,
        "a paused destination gets nothing"
    );
    let out = app.forward_cli("gone", &dest, &["resume", "gone"]);
    assert!(out.status.success());
    dest.until_accepted(2).await;
    let status = eventually("the lag is back to zero", || async {
        let out = app.forward_cli("gone", &dest, &["status"]);
        let line: Value = serde_json::from_slice(&out.stdout).ok()?;
        (line["lag_events"] == 0).then_some(line)
    })
    .await;
    assert_eq!(status["paused"], false);
    assert_eq!(status["last_error"], Value::Null);
}

/// Three deliveries: Alice's, another, Alice's again. Returns a token
/// that may read and erase, and the three as the feed serves them.
async fn deliver_alice_other_alice(app: &TestApp) -> (String, Vec<Value>) {
    let token = make_token(&app.store, "dpo", "events:read,events:delete").await;
    let alice = json!({"customer": {"email": "alice@example.com"}});
    app.deliver(body_with(&new_job_id(), "job.succeeded", alice.clone()))
        .await;
    app.deliver(body_with(&new_job_id(), "job.succeeded", json!({"n": 1})))
        .await;
    app.deliver(body_with(&new_job_id(), "job.succeeded", alice))
        .await;
    let (events, _) = app.drain(&token, 10, 3).await;
    (token, events)
}

/// Erases Alice by her e-mail address through the Results API.
async fn erase_alice(app: &TestApp, token: &str) {
    let res = app
        .client
        .post(app.api("/v1/erasure"))
        .bearer_auth(token)
        .json(&json!({"value": "alice@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn erasure_notice(sqlite: Option<&std::path::Path>, name: &str) {
    let dest = Destination::start().await;
    let app = app_forwarding(name, &dest, sqlite).await;
    let (token, events) = deliver_alice_other_alice(&app).await;
    dest.until_accepted(3).await;
    erase_alice(&app, &token).await;
    let got = dest.until_accepted(4).await;
    let notice: Value = serde_json::from_slice(&got[3].body).unwrap();
    let wanted = json!({"erasure": {"ids": [events[0]["id"], events[2]["id"]]}});
    assert_eq!(notice, wanted);
    assert!(got[3].id.starts_with("erasure-"), "{}", got[3].id);
    let text = String::from_utf8_lossy(&got[3].body);
    assert!(
        !text.contains("alice"),
        "the erased value travelled: {text}"
    );
}

#[tokio::test]
async fn erasure_sends_each_destination_the_deleted_ids_on_postgres() {
    erasure_notice(None, "pg-erasure").await;
}

#[tokio::test]
async fn erasure_sends_each_destination_the_deleted_ids_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    erasure_notice(Some(dir.path()), "lite-erasure").await;
}

/// The race of a shared read and an erasure, forced. The relays of a
/// replica share what one of them read of the feed (`forward::shared`).
/// "fast" reads the events and then hangs on sending the first, so what it
/// read stays in memory and it reads nothing more; "held" fails and
/// retries from the start, served from that memory. Alice's two events are
/// erased. From the first step "held" begins after the erasure answered,
/// it must never get an erased event out of that memory: only the other
/// event and the notice naming the two. (A request already in flight when
/// the erasure committed may carry one: the notice covers that.)
#[tokio::test]
async fn a_destination_behind_never_gets_an_event_erased_after_another_read_it() {
    let fast = Destination::start().await;
    let held = Destination::start().await;
    fast.delay(Duration::from_secs(30));
    held.answer_always(500);
    let mut env = http_destination("fast", &fast.url());
    env.push(("IMGGO__FORWARD__FAST__TIMEOUT".into(), "60s".into()));
    env.extend(http_destination("held", &held.url()));
    let app = spawn_app_with(|o| with_destinations(&mut o.settings, env)).await;
    let (token, events) = deliver_alice_other_alice(&app).await;
    eventually("fast hangs on its first message, held tried", || async {
        (fast.arrived() >= 1 && !held.requests().is_empty()).then_some(())
    })
    .await;
    erase_alice(&app, &token).await;
    let before = held.requests().len();
    // Two more attempts: the second one's step began after the erasure.
    eventually("held retried twice", || async {
        (held.requests().len() >= before + 2).then_some(())
    })
    .await;
    held.answer_always(200);
    let got = held.until_accepted(2).await;
    let erased = [
        events[0]["id"].as_str().unwrap(),
        events[2]["id"].as_str().unwrap(),
    ];
    for r in &held.requests()[before + 1..] {
        assert!(
            !erased.contains(&r.id.as_str()),
            "an erased event went out after the erasure: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(got[0].id, events[1]["id"].as_str().unwrap());
    let notice: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(
        notice,
        json!({"erasure": {"ids": [events[0]["id"], events[2]["id"]]}})
    );
    assert_eq!(fast.arrived(), 1, "fast read on while it hung");
}

#[tokio::test]
async fn an_unreachable_destination_does_not_stop_the_service() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dest = Destination::start().await;
    let env = http_destination("down", &format!("http://127.0.0.1:{port}/hook"));
    let app = spawn_app_with(|o| with_destinations(&mut o.settings, env)).await;
    assert_eq!(app.get_status("/readyz").await, 200);
    app.deliver(prod_body(&new_job_id())).await;
    let status = eventually("status shows the failure", || async {
        let out = app.forward_cli("down", &dest, &["status"]);
        let line: Value = serde_json::from_slice(&out.stdout).ok()?;
        line["last_error"].is_string().then_some(line)
    })
    .await;
    assert_eq!(status["lag_events"], 1);
    assert_eq!(status["paused"], false);
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{status}"
    );
    assert_eq!(app.get_status("/readyz").await, 200);
    // The lag is measured every 2 s: wait for the measurement after the delivery.
    let metrics = eventually("the lag gauge shows the event", || async {
        let metrics = scrape_app(&app).await;
        let lag = sample(&metrics, "imggo_forward_lag_events{destination=\"down\"}");
        (lag == 1.0).then_some(metrics)
    })
    .await;
    assert!(
        sample(
            &metrics,
            "imggo_forward_failures_total{destination=\"down\",reason=\"unreachable\"}"
        ) >= 1.0
    );
    assert!(sample(&metrics, "imggo_forward_lag_seconds{destination=\"down\"}") > 0.0);
}

async fn purged_before_forwarding(sqlite: Option<&std::path::Path>, name: &str) {
    let dest = Destination::start().await;
    dest.answer_always(503);
    // The destination takes `job.succeeded` only: a purged `job.failed`
    // was never its to forward, so it is not missed.
    let mut env = http_destination(name, &dest.url());
    env.push((
        format!("IMGGO__FORWARD__{}__EVENTS", name.to_uppercase()),
        "job.succeeded".into(),
    ));
    let url = sqlite.map(sqlite_url);
    let app = spawn_app_with(|o| {
        with_destinations(&mut o.settings, env);
        o.database_url = url;
    })
    .await;
    let old = new_job_id();
    let old_other = new_job_id();
    app.deliver(prod_body(&old)).await;
    app.deliver(body_with(&old_other, "job.failed", json!({"n": 1})))
        .await;
    app.deliver(prod_body(&new_job_id())).await;
    eventually("the destination is registered", || async {
        app.store.forward_state(name).await.unwrap()
    })
    .await;
    backdate_rows(&app.store, &[&old, &old_other], 40 * 86_400).await;
    let mut retention = test_settings().retention;
    retention.max_age = Duration::from_secs(30 * 86_400);
    imggo_receiver::retention::pass(
        &app.store,
        &retention,
        Duration::from_secs(400 * 86_400),
        false,
    )
    .await
    .unwrap();
    let metrics = scrape_app(&app).await;
    let series = format!("imggo_forward_missed_total{{destination=\"{name}\"}}");
    assert_eq!(sample(&metrics, &series), 1.0, "{metrics}");
    let state = app.store.forward_state(name).await.unwrap().unwrap();
    assert_eq!(state.missed, 1);
}

#[tokio::test]
async fn events_purged_before_forwarding_are_counted_on_postgres() {
    purged_before_forwarding(None, "pg-missed").await;
}

#[tokio::test]
async fn events_purged_before_forwarding_are_counted_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    purged_before_forwarding(Some(dir.path()), "lite-missed").await;
}

/// `forward dead replay NAME` sends every dead letter, however many: more
/// than the 1023 replays that once fitted between two feed positions (the
/// rest then waited for a new event that might never come).
#[tokio::test]
async fn replay_sends_every_dead_letter_past_a_thousand() {
    const N: usize = 1040;
    let name = "manydead";
    let dest = Destination::start().await;
    dest.answer_always(400);
    let app = app_forwarding(name, &dest, None).await;
    let jobs: Vec<String> = (0..N).map(|_| new_job_id()).collect();
    for chunk in jobs.chunks(32) {
        futures_util::future::join_all(chunk.iter().map(|j| app.deliver(prod_body(j)))).await;
    }
    eventually("every event dead-lettered", || async {
        let dead = app.store.forward_dead(Some(name), false).await.unwrap();
        (dead.len() == N).then_some(())
    })
    .await;
    dest.answer_always(200);
    let replay = app.forward_cli(name, &dest, &["dead", "replay", name]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    // One request and one commit per replay: on a loaded machine this takes
    // longer than `eventually`'s 30 s, so a wider deadline (still no sleep
    // standing in for a condition).
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while dest.accepted().len() < N {
        assert!(
            std::time::Instant::now() < deadline,
            "replayed {} of {N}",
            dest.accepted().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("no dead letter left", || async {
        let dead = app.store.forward_dead(Some(name), false).await.unwrap();
        dead.is_empty().then_some(())
    })
    .await;
}
