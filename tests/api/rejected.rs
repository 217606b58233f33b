//! The way out of the quarantine for a delivery that can never pass as it
//! was received: `rejected discard ID`, and `rejected replay ID --body FILE`
//! with an operator's corrected body, stored marked as operator-supplied.
//! Both through the real binary, both audited.

use serde_json::Value;

use crate::helpers::*;
use crate::quarantine::{listed, rejected};

/// Posts a signed body validation refuses; returns its quarantine id.
async fn quarantined(app: &TestApp, body: &[u8]) -> String {
    let res = app.post_signed(body.to_vec()).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let rows = listed(app);
    rows.last().unwrap()["id"].to_string()
}

/// Audit records of `action` as JSON values.
fn audited(app: &TestApp, action: &str) -> Vec<Value> {
    let env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(command(dir.path(), &env), &["audit"]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == action)
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_delivery_that_never_parses_can_be_discarded_and_that_is_audited() {
    let app = spawn_app().await;
    let id = quarantined(&app, b"{\"event\": \"job.succeeded\", oops").await;
    let out = rejected(&app, &["replay", &id], &[]);
    assert!(!out.status.success(), "invalid_json fails every replay");

    let out = rejected(&app, &["discard", &id], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "discarded\n");
    assert!(listed(&app).is_empty());
    let records = audited(&app, "rejected.discard");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["target"], id.as_str());
    assert_eq!(records[0]["count"], 1);
    assert_eq!(records[0]["actor"], "cli");

    let again = rejected(&app, &["discard", &id], &[]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("no quarantined delivery"));
    assert_eq!(audited(&app, "rejected.discard").len(), 1);
}

#[tokio::test]
async fn a_corrected_body_is_validated_redacted_stored_marked_and_audited() {
    let app = spawn_app().await;
    let job = new_job_id();
    let id = quarantined(&app, b"{\"event\":\"job.succeeded\" \"job_id\":").await;
    let dir = tempfile::tempdir().unwrap();

    // Still refused: validated as a delivery is, kept, audited with count 0.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, br#"{"event":"job.succeeded"}"#).unwrap();
    let out = rejected(&app, &["replay", &id, "--body", bad.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).starts_with("invalid_payload"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(listed(&app).len(), 1, "kept");

    let fixed = dir.path().join("fixed.json");
    let body = format!(
        r#"{{"event":"job.succeeded","job_id":"{job}","manifest":{{"customer":{{"ssn":"123-45-6789"}},"note":"card 4111 1111 1111 1111"}}}}"#
    );
    std::fs::write(&fixed, &body).unwrap();
    let out = rejected(
        &app,
        &["replay", &id, "--body", fixed.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "received\n");
    assert!(listed(&app).is_empty(), "the quarantined delivery is gone");

    let records = audited(&app, "rejected.replay_operator_body");
    let counts: Vec<&Value> = records.iter().map(|r| &r["count"]).collect();
    assert_eq!(counts, [0, 1], "{records:?}");
    assert!(records.iter().all(|r| r["target"] == id.as_str()));
    assert!(audited(&app, "rejected.replay").is_empty());

    // Stored marked, and redacted like any delivery.
    let env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
    let shown = text(&run_ok(command(dir.path(), &env), &["show", &job]).stdout);
    let line: Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(line["operator_supplied"], true, "{shown}");
    assert!(!shown.contains("123-45-6789"), "{shown}");
    assert!(!shown.contains("4111 1111 1111 1111"), "{shown}");
    // The feed holds a commit back while an older transaction anywhere in
    // the cluster (another test's) is open: wait for it, bounded.
    let exported = eventually("the replayed event in the feed", || async {
        let out = text(&run_ok(command(dir.path(), &env), &["export"]).stdout);
        (!out.is_empty()).then_some(out)
    })
    .await;
    assert!(
        exported.contains("\"operator_supplied\":true"),
        "{exported}"
    );

    // A delivery ImgGo sent carries no mark.
    let sent = new_job_id();
    assert_eq!(app.post_signed(prod_body(&sent)).await.status(), 200);
    let shown = text(&run_ok(command(dir.path(), &env), &["show", &sent]).stdout);
    assert!(!shown.contains("operator_supplied"), "{shown}");
}

/// A corrected body goes through the same insert as a delivery: an erased
/// event does not come back through it.
#[tokio::test]
async fn a_corrected_body_cannot_bring_back_an_erased_event() {
    let app = spawn_app().await;
    let job = new_job_id();
    let body = format!(
        r#"{{"event":"job.succeeded","job_id":"{job}","manifest":{{"email":"erased@example.com"}}}}"#
    );
    assert_eq!(
        app.post_signed(body.clone().into_bytes()).await.status(),
        200
    );
    let env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let forgot = run_ok(command(dir.path(), &env), &["forget", "erased@example.com"]);
    assert_eq!(text(&forgot.stdout), "deleted 1 event(s)\n");

    let id = quarantined(&app, b"{not json").await;
    let fixed = dir.path().join("fixed.json");
    std::fs::write(&fixed, &body).unwrap();
    let out = rejected(
        &app,
        &["replay", &id, "--body", fixed.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "duplicate\n");
    assert!(
        app.events(&job).await.is_empty(),
        "the erased event came back"
    );
    let records = audited(&app, "rejected.replay_operator_body");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["count"], 0);
}
