//! Retention passes and key rotation, end to end.

use std::process::Command;
use std::time::Duration;

use imggo_receiver::config::RetentionSettings;
use imggo_receiver::reencrypt::reencrypt;
use imggo_receiver::store::{PurgeOutcome, Store};
use serde_json::Value;

use crate::helpers::*;

const HOUR: Duration = Duration::from_secs(3600);

async fn backdate(app: &TestApp, job_ids: &[String], secs: i64) {
    let ids: Vec<&str> = job_ids.iter().map(String::as_str).collect();
    backdate_rows(&app.store, &ids, secs).await;
}

async fn job_ids_left(app: &TestApp) -> Vec<String> {
    app.db.stored_job_ids().await
}

#[tokio::test]
async fn purge_deletes_exactly_the_expired_rows_in_batches() {
    let app = spawn_app().await;
    let mut jobs: Vec<String> = (0..7).map(|i| format!("job-{i}")).collect();
    for job in &jobs {
        assert_eq!(app.post_signed(prod_body(job)).await.status(), 200);
    }
    backdate(&app, &jobs[..5], 2 * 3600).await;

    assert_eq!(
        app.store.purge(HOUR, 2, true).await.unwrap(),
        PurgeOutcome::WouldDelete(5)
    );
    assert_eq!(app.rows().await, 7, "a dry run deletes nothing");
    // Batch size 2 < backlog 5: the pass loops until the backlog is gone.
    assert_eq!(
        app.store.purge(HOUR, 2, false).await.unwrap(),
        PurgeOutcome::Deleted(5)
    );
    jobs.drain(..5);
    assert_eq!(job_ids_left(&app).await, jobs);
    assert_eq!(
        app.store.purge(HOUR, 2, false).await.unwrap(),
        PurgeOutcome::Deleted(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_purging_at_once_delete_each_row_once() {
    let app = spawn_app().await;
    app.db.insert_raw_events(3000, 3).await;
    // Two "replicas": separate pools on the same database.
    let settings = test_settings();
    let url = secrecy::SecretString::from(app.db.url.clone());
    let a = Store::connect(&url, &settings.database).await.unwrap();
    let b = Store::connect(&url, &settings.database).await.unwrap();
    let (ra, rb) = tokio::join!(a.purge(HOUR, 100, false), b.purge(HOUR, 100, false));
    let deleted = |o: PurgeOutcome| match o {
        PurgeOutcome::Deleted(n) => n,
        PurgeOutcome::Skipped => 0,
        other => panic!("{other:?}"),
    };
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(deleted(ra) + deleted(rb), 3000, "{ra:?} {rb:?}");
    assert_eq!(app.rows().await, 0);
    // The lock is released after a pass: the next one runs.
    assert_eq!(
        a.purge(HOUR, 100, false).await.unwrap(),
        PurgeOutcome::Deleted(0)
    );
}

#[tokio::test]
async fn the_server_purges_on_its_own_schedule() {
    let app = spawn_app_with(|o| {
        o.settings.retention = RetentionSettings {
            max_age: HOUR,
            purge_interval: Duration::from_millis(100),
            batch_size: 10,
        };
    })
    .await;
    let jobs: Vec<String> = (0..25).map(|i| format!("old-{i:02}")).collect();
    for job in &jobs {
        app.post_signed(prod_body(job)).await;
    }
    app.post_signed(prod_body("fresh")).await;
    // Two hours: an hourly partition is dropped once all of it is past max_age.
    backdate(&app, &jobs, 2 * 3600).await;
    let purged = tokio::time::timeout(Duration::from_secs(10), async {
        while app.rows().await > 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(purged.is_ok(), "the purge task did not run");
    assert_eq!(job_ids_left(&app).await, vec!["fresh".to_owned()]);
}

fn cli(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imggo-receiver"));
    cmd.current_dir(std::env::temp_dir());
    for (k, _) in std::env::vars() {
        if k.starts_with("IMGGO") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.envs(env.iter().cloned()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn env_with_ring(db_url: &str, ring: &str) -> Vec<(String, String)> {
    let mut env = secret_env(db_url);
    env.insert("IMGGO_ENCRYPTION_KEYS".into(), ring.into());
    env.into_iter().collect()
}

#[tokio::test]
async fn purge_command_reports_and_dry_runs() {
    let app = spawn_app().await;
    for job in ["a", "b", "c"] {
        app.post_signed(prod_body(job)).await;
    }
    backdate(&app, &["a".into(), "b".into()], 40 * 86_400).await;
    let env = env_with_ring(&app.db.url, KEY_A);
    let (ok, out, err) = cli(&env, &["purge", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("would delete 2"), "{out}");
    assert_eq!(app.rows().await, 3);
    let (ok, out, _) = cli(&env, &["purge"]);
    assert!(ok && out.contains("deleted 2"), "{out}");
    assert_eq!(job_ids_left(&app).await, vec!["c".to_owned()]);
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// `purge` is the server's own pass: events and quarantined deliveries past
/// `retention.max_age`, audit records past `audit.max_age`, each counted,
/// and a dry run counts each without deleting.
#[tokio::test]
async fn purge_is_the_servers_whole_pass_and_counts_each_kind() {
    let app = spawn_app().await;
    for job in ["old", "new"] {
        assert_eq!(app.post_signed(prod_body(job)).await.status(), 200);
    }
    backdate(&app, &["old".into()], 40 * 86_400).await;
    for body in ["not json 1", "not json 2"] {
        let res = app.post_signed(body.as_bytes().to_vec()).await;
        assert_eq!(res.status(), 400);
    }
    sqlx::query(
        "UPDATE quarantined_deliveries SET received_at = received_at - interval '40 days' \
         WHERE id = (SELECT min(id) FROM quarantined_deliveries)",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    for at in [now - 401 * 86_400 * 1_000_000, now] {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, count) \
             VALUES ($1, 'cli', 'job.read', 'x', 1)",
        )
        .bind(at)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    let env = env_with_ring(&app.db.url, KEY_A);
    let (ok, out, err) = cli(&env, &["purge", "--dry-run"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "would delete 1 event(s) older than 30d (dry run)\n\
         would delete 1 quarantined delivery(ies) older than 30d (dry run)\n\
         would delete 1 audit record(s) older than 400d (dry run)\n"
    );
    let tables = ["webhook_events", "quarantined_deliveries", "audit_log"];
    for table in tables {
        assert_eq!(count(&app, table).await, 2, "{table}: a dry run deleted");
    }
    let (ok, out, err) = cli(&env, &["purge"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "deleted 1 event(s) older than 30d\n\
         deleted 1 quarantined delivery(ies) older than 30d\n\
         deleted 1 audit record(s) older than 400d\n"
    );
    for table in tables {
        assert_eq!(count(&app, table).await, 1, "{table}");
    }
    assert_eq!(job_ids_left(&app).await, vec!["new".to_owned()]);
}

#[tokio::test]
async fn key_rotation_end_to_end() {
    let k1 = spawn_app().await;
    k1.post_signed(prod_body("under-k1")).await;
    let db_url = k1.db.url.clone();
    let ring_21 = format!("{KEY_B},{KEY_A}");
    let k2 = spawn_app_with(|o| {
        o.database_url = Some(db_url.clone());
        o.env
            .insert("IMGGO_ENCRYPTION_KEYS".into(), ring_21.clone());
    })
    .await;
    assert_eq!(k2.post_signed(prod_body("under-k2")).await.status(), 200);
    assert_eq!(
        (
            k1.db.key_id_of("under-k1").await,
            k1.db.key_id_of("under-k2").await
        ),
        ("ka".into(), "kb".into())
    );

    // Old rows stay readable under the two-key ring.
    let show = |ring: &str, job: &str| cli(&env_with_ring(&db_url, ring), &["show", job]);
    let (ok, out, err) = show(&ring_21, "under-k1");
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["job_id"],
        "under-k1"
    );

    let (ok, out, err) = cli(&env_with_ring(&db_url, &ring_21), &["reencrypt"]);
    assert!(ok, "{err}");
    assert!(out.contains("re-encrypted 1 "), "{out}");
    assert_eq!(k1.db.key_id_of("under-k1").await, "kb");
    let (ok, out, _) = cli(&env_with_ring(&db_url, &ring_21), &["reencrypt"]);
    assert!(ok && out.contains("re-encrypted 0 "), "idempotent: {out}");

    // The old key can go: everything reads under "kb" alone.
    for job in ["under-k1", "under-k2"] {
        let (ok, out, err) = show(KEY_B, job);
        assert!(ok, "{err}");
        let line: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(line["payload"]["job_id"], job);
    }
    // A ring missing the needed key says so instead of printing garbage.
    let (ok, out, err) = show(KEY_A, "under-k2");
    assert!(!ok);
    assert!(out.is_empty());
    assert!(
        err.contains("key `kb` is not in IMGGO_ENCRYPTION_KEYS"),
        "{err}"
    );
}

#[tokio::test]
async fn rows_under_unknown_keys_are_reported_and_kept() {
    let app = spawn_app().await;
    let stray = test_ring("kz:ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=");
    let event = |job: &str, ring: &imggo_receiver::crypto::KeyRing| {
        sealed_event_with(ring, job, "e", b"{}")
    };
    app.store.insert(&event("stray", &stray)).await.unwrap();
    app.store
        .insert(&event("normal", &test_ring(KEY_A)))
        .await
        .unwrap();
    let ring = test_ring(&format!("{KEY_B},{KEY_A}"));
    let report = reencrypt(&app.store, &ring, None).await.unwrap();
    assert_eq!(report.events, 1);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].key_id, "kz");
    assert_eq!(app.rows().await, 2, "never deleted");
    let (ok, _, err) = cli(
        &env_with_ring(&app.db.url, &format!("{KEY_B},{KEY_A}")),
        &["reencrypt"],
    );
    assert!(!ok, "a skipped row makes the command fail");
    assert!(
        err.contains(&format!("skipped row {}", report.skipped[0].id)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencrypt_under_write_load_loses_nothing() {
    let ring_21 = format!("{KEY_B},{KEY_A}");
    let app = spawn_app_with(|o| {
        o.env
            .insert("IMGGO_ENCRYPTION_KEYS".into(), ring_21.clone());
    })
    .await;
    // A backlog under the old key.
    let old = test_ring(KEY_A);
    for i in 0..1500 {
        let job = format!("old-{i}");
        app.store
            .insert(&sealed_event_with(
                &old,
                &job,
                "job.succeeded",
                format!("{{\"n\":{i}}}").as_bytes(),
            ))
            .await
            .unwrap();
    }
    let url = app.webhook_url();
    let writer = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut acked = Vec::new();
        for i in 0..300 {
            let job = format!("live-{i}");
            let body = prod_body(&job);
            let sig = prod_signature(&body);
            if post_from(&client, &url, body, Some(&sig)).await.status() == 200 {
                acked.push(job);
            }
        }
        acked
    });
    let ring = test_ring(&ring_21);
    let report = reencrypt(&app.store, &ring, None).await.unwrap();
    let acked = writer.await.unwrap();
    assert_eq!(report.events, 1500);
    assert!(report.skipped.is_empty());
    assert_eq!(acked.len(), 300);

    let store = app.db.store();
    assert_eq!(app.rows().await, 1800);
    for job in acked
        .iter()
        .chain(["old-0".to_owned(), "old-1499".to_owned()].iter())
    {
        let rows = store.events_for_job(job).await.unwrap();
        assert_eq!(rows.len(), 1, "{job}");
        let r = &rows[0];
        assert_eq!(r.key_id, "kb");
        ring.open(r.key(), &r.key_id, &r.nonce, &r.ciphertext)
            .unwrap();
    }
    let left = app.db.events_not_sealed_under("kb").await;
    assert_eq!(left, 0);
}
