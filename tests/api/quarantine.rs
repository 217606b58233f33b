//! Quarantine (CONTRACT §10): signed deliveries refused by validation keep
//! their 4xx and are kept, redacted and sealed; unsigned or badly signed
//! ones never are; `rejected list/show/replay` recover them.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

async fn post_with_id(app: &TestApp, body: &[u8], signature: Option<String>, id: &str) -> u16 {
    let mut req = app
        .client
        .post(app.webhook_url())
        .header("content-type", "application/json")
        .header("x-request-id", id)
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-imggo-signature", sig);
    }
    req.send().await.unwrap().status().as_u16()
}

/// `rejected ...` through the real binary against the app's database.
pub(crate) fn rejected(
    app: &TestApp,
    args: &[&str],
    extra: &[(&str, &str)],
) -> std::process::Output {
    let mut env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let dir = tempfile::tempdir().unwrap();
    let mut full = vec!["rejected"];
    full.extend_from_slice(args);
    run(command(dir.path(), &env), &full)
}

pub(crate) fn listed(app: &TestApp) -> Vec<Value> {
    let out = rejected(app, &["list"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stale_body(job: &str) -> Vec<u8> {
    json!({"event":"job.succeeded","job_id":job,"manifest":{"total":12.5},
           "timestamp":"2020-01-01T00:00:00Z"})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn each_refusal_of_a_signed_delivery_is_kept_with_reason_and_request_id() {
    let app = spawn_app().await;
    let cases: [(&[u8], u16, &str); 4] = [
        (b"{\"event\":\"job.succeeded\",", 400, "invalid_json"),
        (b"[1,2,3]", 400, "invalid_json"),
        (b"{\"event\":\"job.succeeded\"}", 422, "invalid_payload"),
        (&stale_body("stale-1"), 400, "stale_timestamp"),
    ];
    for (i, (body, status, _)) in cases.iter().enumerate() {
        let got = post_with_id(&app, body, Some(prod_signature(body)), &format!("req-{i}")).await;
        assert_eq!(got, *status, "case {i}");
    }
    // Unsigned and badly signed requests are never kept.
    let body = b"{\"event\":".to_vec();
    assert_eq!(post_with_id(&app, &body, None, "unsigned").await, 401);
    let wrong = format!("sha256={}", "0".repeat(64));
    assert_eq!(post_with_id(&app, &body, Some(wrong), "forged").await, 401);
    let truncated = prod_signature(&body)[..40].to_owned();
    assert_eq!(post_with_id(&app, &body, Some(truncated), "cut").await, 401);

    let list = listed(&app);
    assert_eq!(list.len(), 4, "{list:?}");
    for (i, (entry, (body, _, reason))) in list.iter().zip(cases.iter()).enumerate() {
        assert_eq!(entry["reason"], *reason);
        assert_eq!(entry["request_id"], format!("req-{i}"));
        assert_eq!(entry["bytes"], body.len());
        let shown = rejected(&app, &["show", &entry["id"].to_string()], &[]);
        assert!(shown.status.success());
        assert_eq!(shown.stdout.trim_ascii_end(), *body, "case {i} reads back");
    }
    assert_eq!(app.rows().await, 0, "nothing refused is an event");
}

#[tokio::test]
async fn personal_data_in_unparsable_bodies_never_reaches_storage() {
    let app = spawn_app().await;
    // Cards spelled as keys too: a key is a string of the payload.
    let body = br#"{"event":"job.succeeded","job_id":"j-1","manifest":{"4111111111111111":1,"\u0034111 1111 1111 1111":{"note":"card 4111 1111 1111 1111, ssn 123-45-6789"#.to_vec();
    assert_eq!(
        post_with_id(&app, &body, Some(prod_signature(&body)), "pii").await,
        400
    );
    let parsable =
        br#"{"event":"job.succeeded","manifest":{"ssn":"123-45-6789","pan":"4111111111111111","4111 1111 1111 1111":1}}"#
            .to_vec();
    assert_eq!(
        post_with_id(&app, &parsable, Some(prod_signature(&parsable)), "pii2").await,
        422
    );

    // Nothing to redact, but an escaped digit glued to a card-shaped run:
    // seventeen digits to a reader, stored as a reader sees them.
    let spelled = br#"{"event":"job.succeeded","n":"4111111111111111\u0034"}"#.to_vec();
    assert_eq!(
        post_with_id(&app, &spelled, Some(prod_signature(&spelled)), "pii3").await,
        422
    );

    // A job_id refused for its pattern is no identifier: scanned.
    let bad_id = br#"{"event":"job.succeeded","job_id":"cust 4111 1111 1111 1111"}"#.to_vec();
    assert_eq!(
        post_with_id(&app, &bad_id, Some(prod_signature(&bad_id)), "pii4").await,
        422
    );

    let list = listed(&app);
    assert_eq!(list.len(), 4);
    let shown = rejected(&app, &["show", &list[3]["id"].to_string()], &[]).stdout;
    assert_eq!(
        String::from_utf8(shown).unwrap().trim_end(),
        r#"{"event":"job.succeeded","job_id":"cust ************1111"}"#
    );
    let shown = rejected(&app, &["show", &list[2]["id"].to_string()], &[]).stdout;
    assert_eq!(
        String::from_utf8(shown).unwrap().trim_end(),
        r#"{"event":"job.succeeded","n":"41111111111111114"}"#
    );
    let raw = rejected(&app, &["show", &list[0]["id"].to_string()], &[]).stdout;
    let raw = String::from_utf8(raw).unwrap();
    assert!(
        raw.contains(r#"{"************1111":1,"************1111":{"note":"card ************1111, ssn ***-**-6789"#),
        "{raw}"
    );
    let parsed = rejected(&app, &["show", &list[1]["id"].to_string()], &[]).stdout;
    let parsed = String::from_utf8(parsed).unwrap();
    assert!(
        parsed.contains("ssn_hash") && parsed.contains(r#""************1111":1"#),
        "{parsed}"
    );
    for shown in [&raw, &parsed] {
        assert!(!shown.contains("4111 1111") && !shown.contains("4111111111111111"));
    }

    // The whole table, every column as text: no plaintext anywhere. The
    // random nonce and ciphertext are left out of the short search (their
    // hex holds any four digits now and then) and searched for the long
    // forms only.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT (to_jsonb(q) - 'nonce' - 'ciphertext')::text FROM quarantined_deliveries q",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    for text in &columns {
        for secret in ["4111", "123-45-6789", "123456789"] {
            assert!(!text.contains(secret), "{secret} stored: {text}");
        }
    }
    let sealed: Vec<String> = sqlx::query_scalar(
        "SELECT encode(nonce, 'escape') || encode(ciphertext, 'escape') FROM quarantined_deliveries",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    for text in &sealed {
        for secret in ["4111 1111", "4111111111111111", "123-45-6789", "123456789"] {
            assert!(!text.contains(secret), "{secret} stored: {text}");
        }
    }
}

#[tokio::test]
async fn replay_stores_once_the_cause_is_gone_and_keeps_the_row_otherwise() {
    let app = spawn_app().await;
    let stale = stale_body("late-job");
    assert_eq!(
        post_with_id(&app, &stale, Some(prod_signature(&stale)), "s").await,
        400
    );
    let broken = br#"{"event":"job.succeeded","job_id":"no/slashes"}"#.to_vec();
    assert_eq!(
        post_with_id(&app, &broken, Some(prod_signature(&broken)), "b").await,
        422
    );
    let list = listed(&app);
    let (stale_id, broken_id) = (list[0]["id"].to_string(), list[1]["id"].to_string());

    let out = rejected(&app, &["replay", &stale_id], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stale_timestamp"));
    let out = rejected(&app, &["replay", &broken_id], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("job_id"));
    assert_eq!(listed(&app).len(), 2, "failed replays keep their rows");
    assert_eq!(app.rows().await, 0);
    // Each failed replay decrypted a body: audited, with nothing stored.
    let audit = app.store.audit_since(0).await.unwrap();
    let replays: Vec<(Option<&str>, i64)> = audit
        .iter()
        .filter(|r| r.action == "rejected.replay")
        .map(|r| (r.target.as_deref(), r.count))
        .collect();
    assert_eq!(
        replays,
        [(Some(stale_id.as_str()), 0), (Some(broken_id.as_str()), 0)]
    );

    // The cause gone: the freshness check turned off by configuration.
    let out = rejected(
        &app,
        &["replay", &stale_id],
        &[("IMGGO__WEBHOOK__MAX_TIMESTAMP_AGE", "0s")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "received");
    assert_eq!(app.events("late-job").await.len(), 1);
    let left = listed(&app);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"].to_string(), broken_id);
}

#[tokio::test]
async fn ignore_timestamp_replays_a_stale_delivery_and_a_repeat_is_a_duplicate() {
    let app = spawn_app().await;
    let stale = stale_body("late-2");
    for id in ["first", "second"] {
        assert_eq!(
            post_with_id(&app, &stale, Some(prod_signature(&stale)), id).await,
            400
        );
    }
    let list = listed(&app);
    let out = rejected(
        &app,
        &["replay", &list[0]["id"].to_string(), "--ignore-timestamp"],
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "received");
    let out = rejected(
        &app,
        &["replay", &list[1]["id"].to_string(), "--ignore-timestamp"],
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "duplicate");
    assert!(listed(&app).is_empty());
    let out = rejected(&app, &["replay", "999999"], &[]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn the_quarantine_keeps_the_newest_max_rows_and_ages_out_with_retention() {
    let app = spawn_app_with(|o| o.settings.quarantine.max_rows = 2).await;
    for i in 0..3 {
        let body = format!("{{\"broken\": {i}").into_bytes();
        assert_eq!(
            post_with_id(&app, &body, Some(prod_signature(&body)), &format!("r{i}")).await,
            400
        );
    }
    let ids: Vec<Value> = listed(&app)
        .iter()
        .map(|e| e["request_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("r1"), json!("r2")], "the oldest went first");

    sqlx::query("UPDATE quarantined_deliveries SET received_at = received_at - interval '2 hours' WHERE request_id = 'r1'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.store
        .purge(Duration::from_secs(3600), 100, false)
        .await
        .unwrap();
    let ids: Vec<Value> = listed(&app)
        .iter()
        .map(|e| e["request_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("r2")]);
}

/// The same flow on the embedded store, through the binary alone.
#[test]
fn quarantine_works_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = secret_env(&sqlite_url(dir.path())).into_iter().collect();
    let out = run(command(dir.path(), &env), &["migrate"]);
    assert!(out.status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = imggo_receiver::store::Store::connect(
            &secrecy::SecretString::from(sqlite_url(dir.path())),
            &test_settings().database,
        )
        .await
        .unwrap();
        let redactor = imggo_receiver::redact::Redactor::new(
            &Default::default(),
            b"0123456789abcdef0123456789abcdef",
        );
        let indexer = imggo_receiver::subjects::SubjectIndexer::new(
            imggo_receiver::subjects::SubjectFields::new(
                &test_settings().subjects,
                &Default::default(),
            ),
            imggo_receiver::subjects::SubjectKey::new(b"0123456789abcdef0123456789abcdef"),
        );
        let row = imggo_receiver::quarantine::seal(
            &stale_body("sqlite-late"),
            "stale_timestamp",
            "req-sqlite",
            &indexer,
            &redactor,
            &test_ring(KEY_A),
        )
        .unwrap();
        store.quarantine(&row, 10).await.unwrap();
        store.close().await;
    });
    let list = run(command(dir.path(), &env), &["rejected", "list"]);
    let line: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(line["reason"], "stale_timestamp");
    let id = line["id"].to_string();
    let shown = run(command(dir.path(), &env), &["rejected", "show", &id]);
    assert_eq!(shown.stdout.trim_ascii_end(), stale_body("sqlite-late"));
    let out = run(
        command(dir.path(), &env),
        &["rejected", "replay", &id, "--ignore-timestamp"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "received");
    let out = run(command(dir.path(), &env), &["show", "sqlite-late"]);
    assert!(out.status.success());
}

#[tokio::test]
async fn erasure_reaches_quarantined_deliveries_and_rejected_reads_are_audited() {
    let app = spawn_app().await;
    // Refused (no job_id), about alice: kept in quarantine, indexed.
    let body =
        json!({"event":"job.succeeded","manifest":{"customer":{"email":"alice@example.com"}}})
            .to_string()
            .into_bytes();
    assert_eq!(
        post_with_id(&app, &body, Some(prod_signature(&body)), "q-alice").await,
        422
    );
    let other = json!({"event":"job.succeeded","manifest":{"email":"bob@example.com"}})
        .to_string()
        .into_bytes();
    assert_eq!(
        post_with_id(&app, &other, Some(prod_signature(&other)), "q-bob").await,
        422
    );
    let list = listed(&app);
    assert_eq!(list.len(), 2);
    let shown = rejected(&app, &["show", &list[1]["id"].to_string()], &[]);
    assert!(shown.status.success());

    let forget = {
        let mut env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
        env.push(("IMGGO__API__BIND".into(), String::new()));
        let dir = tempfile::tempdir().unwrap();
        run(command(dir.path(), &env), &["forget", "Alice@Example.com"])
    };
    assert!(
        forget.status.success(),
        "{}",
        String::from_utf8_lossy(&forget.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&forget.stdout).trim(),
        "deleted 1 event(s)"
    );
    let left = listed(&app);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["request_id"], "q-bob");

    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(actions.contains(&"rejected.read".to_owned()), "{actions:?}");
    assert!(actions.contains(&"erasure".to_owned()), "{actions:?}");
    let dump: Vec<String> = sqlx::query_scalar("SELECT row_to_json(a)::text FROM audit_log a")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(
        dump.iter().all(|r| !r.to_lowercase().contains("alice")),
        "{dump:?}"
    );
}

/// A signed delivery refused while Postgres is unreachable is not lost: its
/// quarantine row is spooled (sealed, redacted) and moved into Postgres
/// when it answers again, with its reason, request id and received time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_while_postgres_is_down_reach_the_quarantine_through_the_spool() {
    let (app, proxy) = spawn_app_behind_proxy(|_| {}).await;
    proxy.set_up(false);
    let before = chrono::Utc::now();
    let stale = stale_body("stale-while-down");
    let broken = b"{\"job_id\":\"j-1\",\"card\":\"4111 1111 1111 1111\",".to_vec();
    // The first finds Postgres down; the second finds the spool active.
    for (body, id) in [(&stale, "down-0"), (&broken, "down-1")] {
        let got = post_with_id(&app, body, Some(prod_signature(body)), id).await;
        assert_eq!(got, 400, "{id} keeps its refusal");
    }
    let spool_path = app.dir.path().join("spool.db");
    assert_eq!(spooled_rows(&spool_path, "spooled_quarantine").await, 2);
    let mut on_disk = std::fs::read(&spool_path).unwrap();
    if let Ok(wal) = std::fs::read(app.dir.path().join("spool.db-wal")) {
        on_disk.extend(wal);
    }
    for plain in [&b"4111 1111"[..], b"stale-while-down", b"manifest"] {
        assert!(
            !on_disk.windows(plain.len()).any(|w| w == plain),
            "the spool holds plaintext {}",
            String::from_utf8_lossy(plain)
        );
    }

    proxy.set_up(true);
    eventually("the spooled refusals in quarantine", || async {
        (spooled_rows(&spool_path, "spooled_quarantine").await == 0).then_some(())
    })
    .await;
    let list = listed(&app);
    assert_eq!(list.len(), 2, "each kept once: {list:?}");
    let reasons: Vec<(&str, &str)> = list
        .iter()
        .map(|e| {
            (
                e["request_id"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [("down-0", "stale_timestamp"), ("down-1", "invalid_json")]
    );
    let received: chrono::DateTime<chrono::Utc> =
        list[0]["received_at"].as_str().unwrap().parse().unwrap();
    assert!(received >= before - chrono::Duration::seconds(1));
    let shown = rejected(&app, &["show", &list[0]["id"].to_string()], &[]);
    assert_eq!(shown.stdout.trim_ascii_end(), stale.as_slice());
    let shown = rejected(&app, &["show", &list[1]["id"].to_string()], &[]);
    let text = String::from_utf8(shown.stdout).unwrap();
    assert!(!text.contains("4111 1111 1111 1111"), "{text}");
    assert!(text.contains("\"job_id\":\"j-1\""), "{text}");

    // The refused stale delivery replays into an event once Postgres is back.
    let out = rejected(
        &app,
        &["replay", &list[0]["id"].to_string(), "--ignore-timestamp"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(app.events("stale-while-down").await.len(), 1);
}

/// A quarantine insert that hangs (the table locked) does not turn the
/// refusal into a timeout: the 400 comes after `database.acquire_timeout`
/// and the row reaches the quarantine through the spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_quarantine_insert_keeps_the_refusal_and_the_row() {
    let app = spawn_app().await;
    let mut lock = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE quarantined_deliveries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let stale = stale_body("stale-while-locked");
    let got = post_with_id(&app, &stale, Some(prod_signature(&stale)), "locked-0").await;
    assert_eq!(got, 400);
    lock.rollback().await.unwrap();
    eventually("the refusal in quarantine", || async {
        let list = listed(&app);
        (list.len() == 1 && list[0]["request_id"] == "locked-0").then_some(())
    })
    .await;
}
