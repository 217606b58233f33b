//! Key rotation reaches every sealed row (docs/operations.md runbook): `reencrypt`
//! re-seals stored events, quarantined deliveries and the local spool, with
//! a count per kind, and start-up and `check-config` warn about rows a
//! missing key still guards.

use std::path::Path;

use serde_json::{json, Value};
use sqlx::Row as _;

use crate::helpers::*;

fn env(db_url: &str, ring: &str, spool: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = secret_env(db_url).into_iter().collect();
    env.push(("IMGGO_ENCRYPTION_KEYS".into(), ring.into()));
    env.push(("IMGGO__SPOOL__PATH".into(), spool.display().to_string()));
    env
}

fn stale(job: &str) -> Vec<u8> {
    json!({"event":"job.succeeded","job_id":job,"manifest":{"total":1},
           "timestamp":"2020-01-01T00:00:00Z"})
    .to_string()
    .into_bytes()
}

/// (key_id, nonce, ciphertext, aad parts) of every spooled row.
async fn spooled(path: &Path) -> Vec<(String, Vec<u8>, Vec<u8>, String, String)> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mut rows = Vec::new();
    for r in sqlx::query("SELECT key_id, nonce, ciphertext, job_id, event FROM spooled_events")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        rows.push((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)));
    }
    for r in sqlx::query("SELECT key_id, nonce, ciphertext, seal_id FROM spooled_quarantine")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        rows.push((r.get(0), r.get(1), r.get(2), r.get(3), String::new()));
    }
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reseals_events_quarantine_and_spool() {
    // Under ka: one event and one quarantined delivery in Postgres, then
    // two deliveries and one refusal spooled while Postgres is away.
    let (app, proxy) = spawn_app_behind_proxy(|_| {}).await;
    assert_eq!(app.post_signed(prod_body("rot-stored")).await.status(), 200);
    assert_eq!(app.post_signed(stale("rot-refused")).await.status(), 400);
    proxy.set_up(false);
    for job in ["rot-spooled-1", "rot-spooled-2"] {
        assert_eq!(app.post_signed(prod_body(job)).await.status(), 200);
    }
    assert_eq!(app.post_signed(stale("rot-refused-2")).await.status(), 400);
    let spool = app.dir.path().join("spool.db");
    app.shutdown.cancel();
    app.server.await.unwrap().unwrap();
    assert_eq!(spooled(&spool).await.len(), 3);
    let work = tempfile::tempdir().unwrap();
    let db = app.db.url.clone();

    // The runbook's step 1: a new key first. Removing ka now would strand
    // rows: start-up and check-config say which, and how many.
    let kb_only = env(&db, KEY_B, &spool);
    let out = run_ok(command(work.path(), &kb_only), &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    for warning in [
        "1 events row(s) are sealed under key `ka`",
        "1 quarantine row(s) are sealed under key `ka`",
        "3 spool row(s) are sealed under key `ka`",
    ] {
        assert!(err.contains(warning), "{warning}: {err}");
    }
    // Start-up (without the spool, which it would drain) warns the same.
    let mut no_spool = env(&db, KEY_B, Path::new(""));
    no_spool.push((
        "IMGGO__SERVER__BIND".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    no_spool.push((
        "IMGGO__ADMIN__BIND".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    let mut server = Server::start(command(work.path(), &no_spool));
    server.wait_for("missing from IMGGO_ENCRYPTION_KEYS");
    let (_, log) = server.terminate();
    assert!(log.contains("\"kind\":\"quarantine\""), "{log}");
    for material in [KEY_A, KEY_B] {
        let (_, secret) = material.split_once(':').unwrap();
        assert!(!log.contains(secret), "key material in the log: {log}");
    }

    // Step 2: reencrypt with the new key first, a count per kind.
    let both = env(&db, &format!("{KEY_B},{KEY_A}"), &spool);
    let out = run_ok(command(work.path(), &both), &["reencrypt"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(
            "re-encrypted 1 event(s), 1 quarantined delivery(ies), 3 spooled row(s) under key `kb`"
        ),
        "{printed}"
    );

    // Step 3: ka removed. Everything still opens; nothing is left to warn about.
    let out = run_ok(command(work.path(), &kb_only), &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning"), "{err}");
    let list = run_ok(command(work.path(), &kb_only), &["rejected", "list"]);
    let first: Value =
        serde_json::from_slice(list.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let shown = run_ok(
        command(work.path(), &kb_only),
        &["rejected", "show", &first["id"].to_string()],
    );
    let body: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(body["job_id"], "rot-refused");
    run_ok(command(work.path(), &kb_only), &["show", "rot-stored"]);
    let ring = test_ring(KEY_B);
    let rows = spooled(&spool).await;
    assert_eq!(rows.len(), 3);
    for (key_id, nonce, ciphertext, a, b) in rows {
        assert_eq!(key_id, "kb");
        let opened = if b.is_empty() {
            ring.open_quarantined(&a, &key_id, &nonce, &ciphertext)
        } else {
            ring.open(
                imggo_receiver::dedup::DedupKey::new(&a, &b),
                &key_id,
                &nonce,
                &ciphertext,
            )
        };
        assert!(opened.is_ok(), "spooled row of {a} does not open under kb");
    }
    // Idempotent.
    let out = run_ok(command(work.path(), &both), &["reencrypt"]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("re-encrypted 0 event(s), 0 quarantined delivery(ies), 0 spooled row(s)"));
}
