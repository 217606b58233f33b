//! The spool (CONTRACT §10): Postgres unreachable under load answers 200
//! from the local spool, and every acknowledged delivery reaches Postgres
//! exactly once when it is back; a full spool answers 503; a spool left by
//! `kill -9` drains at the next start.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::helpers::*;

/// Waits (bounded) until Postgres holds exactly `expected`, never a job twice.
async fn until_stored(db: &TestDb, expected: &BTreeSet<String>) {
    eventually("every acknowledged delivery in Postgres", || async {
        let stored = db.stored_job_ids().await;
        let unique: BTreeSet<String> = stored.iter().cloned().collect();
        assert_eq!(unique.len(), stored.len(), "a job stored twice");
        (unique == *expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_loses_nothing_and_answers_only_2xx() {
    let (app, proxy) = spawn_app_behind_proxy(|_| {}).await;
    let metrics_url = format!("http://{}/metrics", app.admin_addr);
    let before = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // 16 senders deliver unique jobs until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..16)
        .map(|s| {
            let (url, stop, acks) = (app.webhook_url(), stop.clone(), acks.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut acked, mut refused) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let job = format!("load-{s}-{i}");
                    i += 1;
                    let body = prod_body(&job);
                    let sig = prod_signature(&body);
                    let res = post_from(&client, &url, body, Some(&sig)).await;
                    if res.status() == 200 {
                        acked.push(job);
                        acks.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.push(res.status().as_u16());
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    // Load first reaches Postgres...
    let acked_at = |n: usize| {
        let acks = acks.clone();
        move || {
            let acks = acks.clone();
            async move { (acks.load(Ordering::Relaxed) >= n).then_some(()) }
        }
    };
    eventually("deliveries acknowledged from Postgres", acked_at(50)).await;
    proxy.set_up(false);
    // The balancer keeps the replica in rotation: it can still acknowledge.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // ...then the spool, under the same load.
    let spooled_before = sample(&before, "imggo_spooled_total");
    let during = eventually("deliveries acknowledged from the spool", || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (sample(&text, "imggo_spooled_total") >= spooled_before + 100.0).then_some(text)
    })
    .await;
    proxy.set_up(true);
    // Once the drainer reaches Postgres again, deliveries go on meanwhile.
    eventually("the spool drains while load goes on", || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (sample(&text, "imggo_spool_drained_total") > sample(&before, "imggo_spool_drained_total"))
            .then_some(())
    })
    .await;
    let seen = acks.load(Ordering::Relaxed);
    eventually(
        "deliveries acknowledged after the outage",
        acked_at(seen + 50),
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    let mut acked = BTreeSet::new();
    for sender in senders {
        let (jobs, refused) = sender.await.unwrap();
        assert!(refused.is_empty(), "non-2xx answers: {refused:?}");
        acked.extend(jobs);
    }
    assert!(acked.len() > 100, "too little load: {}", acked.len());
    until_stored(&app.db, &acked).await;

    let spooled = |t: &str| sample(t, "imggo_spooled_total");
    assert!(spooled(&during) > spooled(&before), "nothing was spooled");
    let after = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sample(&after, "imggo_spool_drained_total") > sample(&before, "imggo_spool_drained_total")
    );
    // Drained: the spool file holds nothing.
    let left: i64 = spool_rows(&app.dir.path().join("spool.db")).await;
    assert_eq!(left, 0);
}

async fn spool_rows(path: &std::path::Path) -> i64 {
    spooled_rows(path, "spooled_events").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_a_spooled_redelivery_is_a_duplicate() {
    let (app, proxy) = spawn_app_behind_proxy(|o| {
        // Room for one or two deliveries (sealed, compressed: about 1 KB each).
        o.settings.spool.max_bytes = 2000;
    })
    .await;
    proxy.set_up(false);
    let first = prod_body("spooled-1");
    let res = app.post_signed(first.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "received");
    let res = app.post_signed(first.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "duplicate");

    let mut statuses = Vec::new();
    for i in 2..8 {
        let res = app.post_signed(prod_body(&format!("spooled-{i}"))).await;
        statuses.push(res.status().as_u16());
        if res.status() == 503 {
            assert!(res.headers().get("retry-after").is_some());
            assert_eq!(error_code(res).await, "unavailable");
        }
    }
    assert!(statuses.contains(&503), "never full: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    // Full, and a redelivery of a spooled one is still a duplicate.
    let res = app.post_signed(first).await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "duplicate");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let status = ready.status();
    assert_eq!(
        status,
        503,
        "full spool and no database: not ready: {}",
        ready.text().await.unwrap()
    );

    proxy.set_up(true);
    let acked: BTreeSet<String> = std::iter::once("spooled-1".to_owned())
        .chain(
            statuses
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == 200)
                .map(|(i, _)| format!("spooled-{}", i + 2)),
        )
        .collect();
    until_stored(&app.db, &acked).await;
}

/// `kill -9` of a replica holding spooled deliveries; restarted with
/// Postgres back, it drains them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_by_kill_9_drains_at_the_next_start() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(upstream_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env: Vec<(String, String)> = secret_env(&via_proxy(&db.url, proxy.addr))
        .into_iter()
        .collect();
    env.extend([
        ("IMGGO__SERVER__BIND".into(), format!("127.0.0.1:{port}")),
        (
            "IMGGO__ADMIN__BIND".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        ("IMGGO__DATABASE__ACQUIRE_TIMEOUT".into(), "500ms".into()),
    ]);
    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let start = || {
        let mut server = Server::start(command(dir.path(), &env));
        server.wait_for("listening");
        server
    };

    let mut server = start();
    proxy.set_up(false);
    let client = reqwest::Client::new();
    let mut acked = BTreeSet::new();
    for i in 0..50 {
        let job = format!("crash-{i}");
        let body = prod_body(&job);
        let res = post_from(&client, &url, body.clone(), Some(&prod_signature(&body))).await;
        assert_eq!(res.status(), 200, "{job}");
        acked.insert(job);
    }
    server.child.kill().unwrap(); // SIGKILL: nothing is flushed on the way out
    server.child.wait().unwrap();
    assert!(db.stored_job_ids().await.is_empty());

    proxy.set_up(true);
    let server = start();
    until_stored(&db, &acked).await;
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// An erasure while Postgres is away (made on any replica) reaches what a
/// spool holds: the drainer drops that subject's spooled deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_spooled_before_an_erasure_never_reach_postgres() {
    let (app, proxy) = spawn_app_behind_proxy(|_| {}).await;
    proxy.set_up(false);
    let about = |job: &str, email: &str| {
        serde_json::json!({"event":"job.succeeded","job_id":job,
            "manifest":{"customer":{"email":email}}})
        .to_string()
        .into_bytes()
    };
    assert_eq!(
        app.post_signed(about("spooled-alice", "alice@example.com"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_signed(about("spooled-bob", "bob@example.com"))
            .await
            .status(),
        200
    );

    // The erasure commits in Postgres directly (another replica, or the CLI).
    let store = app.db.store();
    let key = imggo_receiver::subjects::SubjectKey::new(&base64_decode(HASH_KEY));
    let subject = key.hash("alice@example.com").unwrap();
    let entry = imggo_receiver::audit::AuditEntry::new(
        imggo_receiver::audit::Actor::Cli,
        imggo_receiver::audit::Action::Erasure,
        Some(subject.to_hex()),
    );
    store
        .forget_subject(&key.lookups("alice@example.com"), &entry)
        .await
        .unwrap();

    proxy.set_up(true);
    until_stored(&app.db, &BTreeSet::from(["spooled-bob".to_owned()])).await;
    eventually("the spool emptied", || async {
        (spool_rows(&app.dir.path().join("spool.db")).await == 0).then_some(())
    })
    .await;
    assert!(app.events("spooled-alice").await.is_empty());
    // Dropped at the drain, its key is remembered as an erased one's is:
    // the same delivery again is a duplicate and stays unstored.
    let again = app
        .post_signed(about("spooled-alice", "alice@example.com"))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "duplicate");
    assert!(app.events("spooled-alice").await.is_empty());
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Postgres that hangs rather than fails (a lock held on the table, a
/// stalled network): a delivery waits `database.acquire_timeout` for the
/// commit, then goes to the spool and is answered 200, never 408. When the
/// hang ends each delivery is in Postgres once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_database_sends_deliveries_to_the_spool_not_into_a_timeout() {
    let app = spawn_app().await;
    let mut lock = app.db.lock_events().await;
    let mut acked = BTreeSet::new();
    for i in 0..3 {
        let job = format!("hang-{i}");
        let res = app.post_signed(prod_body(&job)).await;
        assert_eq!(res.status(), 200, "{job}");
        assert_eq!(res.json::<Value>().await.unwrap()["status"], "received");
        acked.insert(job);
    }
    assert!(spool_rows(&app.dir.path().join("spool.db")).await >= 3);
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    until_stored(&app.db, &acked).await;
    eventually("the spool emptied", || async {
        (spool_rows(&app.dir.path().join("spool.db")).await == 0).then_some(())
    })
    .await;
}
