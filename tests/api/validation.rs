//! Validation of extracted data (CONTRACT §12) through the real server and
//! binary: the verdict is stored whatever it is, never holds a value from
//! the delivery, reaches the feed, `show` and the metric, and filters the
//! feed; hostile schema files stop start-up naming the file.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::api_support::*;
use crate::helpers::*;

fn schemas_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schemas")
        .display()
        .to_string()
}

fn good_invoice() -> Value {
    json!({"invoice_number": "INV-1042", "invoice_date": "2026-11-30",
           "customer_email": "alice@example.com", "currency": "EUR",
           "total_amount": 1234.5, "card_number": "4111111111111111",
           "line_items": [{"description": "Widget", "quantity": 2, "unit_price": 617.25}]})
}

fn bad_invoice() -> Value {
    // What a model misreads: a number as text, an email with a typo, a
    // card with a letter in it, a quantity in words.
    json!({"invoice_number": "INV-1043", "customer_email": "bob at example.com",
           "currency": "EUR", "total_amount": "12,40", "card_number": "4111 1111 111l 1111",
           "line_items": [{"description": "Widget", "quantity": "two", "unit_price": 1}],
           "extra": {"bob@example.com": 1}})
}

async fn verdicts_reach_feed_show_and_metric(sqlite: Option<&Path>) {
    let dir = schemas_dir();
    let app = spawn_app_with(|o| {
        o.settings.validation.schemas_dir = dir;
        if let Some(sqlite) = sqlite {
            o.database_url = Some(sqlite_url(sqlite));
        }
    })
    .await;
    let token = make_token(&app.store, "reader", "events:read").await;
    let (good, bad, other) = (new_job_id(), new_job_id(), new_job_id());
    app.deliver(body_with(&good, "job.succeeded", good_invoice()))
        .await;
    // Invalid data is stored all the same: the sender tries once.
    app.deliver(body_with(&bad, "job.succeeded", bad_invoice()))
        .await;
    let unchecked = json!({"event": "job.succeeded", "job_id": other,
        "pattern_id": "pat_without_schema", "manifest": {"x": 1}});
    app.deliver(serde_json::to_vec(&unchecked).unwrap()).await;

    let (events, _) = app.drain(&token, 100, 3).await;
    let by_job = |job: &str| events.iter().find(|e| e["job_id"] == job).unwrap().clone();
    let g = by_job(&good);
    assert_eq!(g["valid"], true);
    assert_eq!(g["validation_errors"], json!([]));
    assert!(g["id"].is_string());
    let b = by_job(&bad);
    assert_eq!(b["valid"], false);
    let errors = b["validation_errors"].as_array().unwrap();
    for expected in [
        json!({"path": "/total_amount", "keyword": "type"}),
        json!({"path": "/customer_email", "keyword": "format"}),
        json!({"path": "/card_number", "keyword": "pattern"}),
        json!({"path": "/line_items/0/quantity", "keyword": "type"}),
    ] {
        assert!(errors.contains(&expected), "{expected} in {errors:?}");
    }
    let text = serde_json::to_string(errors).unwrap();
    for value in ["12,40", "bob", "111l", "two", "example"] {
        assert!(!text.contains(value), "{value} leaked into {text}");
    }
    // Validated before redaction (a masked card would fail the pattern),
    // stored after it.
    assert_eq!(g["payload"]["manifest"]["card_number"], "************1111");
    let u = by_job(&other);
    assert_eq!(u["valid"], Value::Null);
    assert_eq!(u["validation_errors"], json!([]));

    // The feed filters by verdict; unchecked events match neither.
    let only = |q: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            let page = app.feed(q, &token).await;
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["job_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(only("valid=true").await, vec![good.clone()]);
    assert_eq!(only("valid=false").await, vec![bad.clone()]);
    for wrong in [
        "valid=yes",
        "valid=1",
        "valid=TRUE",
        "valid=",
        "valid=true&valid=false",
    ] {
        let res = app.api_get(&format!("/v1/events?{wrong}"), &token).await;
        assert_eq!(res.status(), 400, "{wrong}");
        assert_eq!(error_code(res).await, "invalid_parameter");
    }

    // The metric counts each outcome (the recorder is process-wide and
    // shared by the tests running beside this one: at least ours).
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for outcome in ["valid", "invalid", "unchecked"] {
        let series = format!("imggo_validation_total{{outcome=\"{outcome}\"}}");
        assert!(sample(&metrics, &series) >= 1.0, "{series}\n{metrics}");
    }

    // `show` carries the verdict too.
    let url = match sqlite {
        Some(sqlite) => sqlite_url(sqlite),
        None => app.db.url.clone(),
    };
    let env: Vec<(String, String)> = secret_env(&url).into_iter().collect();
    let work = tempfile::tempdir().unwrap();
    let out = run_ok(command(work.path(), &env), &["show", &bad]);
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["valid"], false);
    assert_eq!(line["validation_errors"], b["validation_errors"]);
    let out = run_ok(command(work.path(), &env), &["show", &other]);
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["valid"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_on_postgres() {
    verdicts_reach_feed_show_and_metric(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    verdicts_reach_feed_show_and_metric(Some(dir.path())).await;
}

/// A delivery spooled while Postgres is away keeps its verdict, and a
/// quarantined one is validated again when replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_survive_the_spool_and_replay_validates_again() {
    let dir = schemas_dir();
    let (app, proxy) = spawn_app_behind_proxy(|o| o.settings.validation.schemas_dir = dir).await;
    let token = make_token(&app.store, "reader", "events:read").await;
    proxy.set_up(false);
    let spooled = new_job_id();
    app.deliver(body_with(&spooled, "job.succeeded", bad_invoice()))
        .await;
    proxy.set_up(true);
    let (events, _) = app.drain(&token, 100, 1).await;
    assert_eq!(events[0]["job_id"], spooled);
    assert_eq!(events[0]["valid"], false);
    assert!(!events[0]["validation_errors"]
        .as_array()
        .unwrap()
        .is_empty());

    // Replay validates the quarantined body, which was redacted when it
    // was kept: an invoice whose fields redaction leaves alone.
    let stale = new_job_id();
    let mut invoice = good_invoice();
    invoice.as_object_mut().unwrap().remove("card_number");
    let body = json!({"event": "job.succeeded", "job_id": stale, "pattern_id": "pat_invoices",
        "manifest": invoice, "timestamp": "2020-01-01T00:00:00Z"});
    assert_eq!(
        app.post_signed(serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        400
    );
    let mut env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
    env.push(("IMGGO__VALIDATION__SCHEMAS_DIR".into(), schemas_dir()));
    let work = tempfile::tempdir().unwrap();
    // Refused just after the outage, the delivery may have been kept in
    // the spool (still draining, CONTRACT §10) and reach the quarantine
    // with the drainer's next pass.
    let row: Value = eventually("the refused delivery is in the quarantine", || {
        let list = run_ok(command(work.path(), &env), &["rejected", "list"]);
        let first = list
            .stdout
            .split(|b| *b == b'\n')
            .next()
            .map(<[u8]>::to_vec);
        async move { serde_json::from_slice(&first?).ok() }
    })
    .await;
    run_ok(
        command(work.path(), &env),
        &[
            "rejected",
            "replay",
            &row["id"].to_string(),
            "--ignore-timestamp",
        ],
    );
    // The feed holds a commit back while an older transaction anywhere in
    // the cluster (another test's) is open: wait for it, bounded.
    let page = eventually("the replayed event in the feed", || async {
        let page = app.feed("valid=true", &token).await;
        (page["events"].as_array().is_some_and(|e| !e.is_empty())).then_some(page)
    })
    .await;
    assert_eq!(page["events"][0]["job_id"], stale);
}

/// A spool file left by a crash of the release before verdicts (no
/// verdict columns, schema version 0) is migrated when it is opened, and
/// its rows drain with `valid: null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_file_from_the_previous_release_is_migrated_and_drained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old-spool.db");
    let ring = test_ring(KEY_A);
    let sealed = ring
        .seal(
            imggo_receiver::dedup::DedupKey::new("old-job", "job.succeeded"),
            br#"{"job_id":"old-job"}"#,
        )
        .unwrap();
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        // The previous release's schema, as it created it.
        sqlx::query(
            "CREATE TABLE spooled_events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, event TEXT NOT NULL,
                pattern_id TEXT, status TEXT, received_at INTEGER NOT NULL, key_id TEXT NOT NULL,
                nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,
                subjects BLOB NOT NULL DEFAULT x'', UNIQUE (job_id, event))",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO spooled_events (job_id, event, received_at, key_id, nonce, ciphertext) \
             VALUES ('old-job', 'job.succeeded', ?, ?, ?, ?)",
        )
        .bind(chrono::Utc::now().timestamp_micros())
        .bind(sealed.key_id.as_str())
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let spool = path.display().to_string();
    let app = spawn_app_with(|o| o.settings.spool.path = spool).await;
    let token = make_token(&app.store, "reader", "events:read").await;
    let (events, _) = app.drain(&token, 100, 1).await;
    assert_eq!(events[0]["job_id"], "old-job");
    assert_eq!(events[0]["valid"], Value::Null);
    assert_eq!(events[0]["payload"]["job_id"], "old-job");
}

#[test]
fn validate_command_exit_codes_and_shape() {
    let work = tempfile::tempdir().unwrap();
    let env = vec![("IMGGO__VALIDATION__SCHEMAS_DIR".to_owned(), schemas_dir())];
    let write = |name: &str, value: &Value| {
        let file = work.path().join(name);
        std::fs::write(&file, serde_json::to_vec(value).unwrap()).unwrap();
        file.display().to_string()
    };
    let good = write("good.json", &good_invoice());
    let bad = write("bad.json", &bad_invoice());
    let delivery = write(
        "delivery.json",
        &json!({"event": "job.succeeded", "job_id": "j", "manifest": good_invoice()}),
    );
    let validate = |file: &str, pattern: &str| {
        run(
            command(work.path(), &env),
            &["validate", "--pattern", pattern, file],
        )
    };
    let out = validate(&good, "pat_invoices");
    assert_eq!(out.status.code(), Some(0));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["valid"], true);
    let out = validate(&bad, "pat_invoices");
    assert_eq!(out.status.code(), Some(1));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(printed["validation_errors"]
        .as_array()
        .unwrap()
        .contains(&json!({"path": "/total_amount", "keyword": "type"})));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("12,40"));
    assert_eq!(validate(&delivery, "pat_invoices").status.code(), Some(0));
    assert_eq!(validate(&good, "pat_unknown").status.code(), Some(2));

    // check-config lists what it loaded.
    let mut with_secrets: Vec<(String, String)> =
        secret_env("sqlite://unused.db").into_iter().collect();
    with_secrets.extend(env.clone());
    let out = run_ok(command(work.path(), &with_secrets), &["check-config"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("pattern schema(s) loaded: pat_invoices"),
        "{printed}"
    );
}

/// Schema files are input too: each hostile one stops start-up with a
/// message naming it (and never reaches the network).
#[test]
fn hostile_schema_files_stop_start_up_naming_the_file() {
    for (name, content, why) in [
        ("broken.json", "{\"type\": ", "not valid JSON"),
        (
            "remote.json",
            r#"{"$ref": "http://127.0.0.1:9/s.json"}"#,
            "not a valid schema",
        ),
        (
            "notschema.json",
            r#"{"type": "nonsense"}"#,
            "not a valid schema",
        ),
        (
            "redos.json",
            r#"{"pattern": "^(?=a)(a+)+$"}"#,
            "not a valid schema",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), content).unwrap();
        let mut env: Vec<(String, String)> =
            secret_env(&format!("sqlite://{}/db.sqlite", dir.path().display()))
                .into_iter()
                .collect();
        env.push((
            "IMGGO__VALIDATION__SCHEMAS_DIR".into(),
            dir.path().display().to_string(),
        ));
        env.push(("IMGGO__SERVER__BIND".into(), "127.0.0.1:0".into()));
        env.push(("IMGGO__ADMIN__BIND".into(), "127.0.0.1:0".into()));
        let out = run(command(dir.path(), &env), &["serve"]);
        assert!(!out.status.success(), "{name} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name) && err.contains(why), "{name}: {err}");
        let out = run(command(dir.path(), &env), &["check-config"]);
        assert!(!out.status.success(), "check-config accepted {name}");
    }
    // Too large to be a pattern's schema.
    let dir = tempfile::tempdir().unwrap();
    let huge = format!(
        r#"{{"anyOf": [{}]}}"#,
        vec![r#"{"type": "string", "minLength": 1}"#; 20_000].join(",")
    );
    std::fs::write(dir.path().join("huge.json"), huge).unwrap();
    let env = vec![(
        "IMGGO__VALIDATION__SCHEMAS_DIR".to_owned(),
        dir.path().display().to_string(),
    )];
    let out = run(
        command(dir.path(), &env),
        &["validate", "--pattern", "huge", "/dev/null"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("huge.json"));
}
