//! Erasure by data subject: keyed hashes of the configured fields, taken
//! from the unredacted body at any depth, find every event of a person;
//! the audit trail records the hash, never the value.

use serde_json::{json, Value};

use imggo_receiver::subjects::SubjectKind::Email;

use crate::api_support::*;
use crate::helpers::*;

async fn erase(app: &TestApp, token: &str, value: &str) -> reqwest::Response {
    app.client
        .post(app.api("/v1/erasure"))
        .bearer_auth(token)
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap()
}

/// The body of a successful erasure of `value`.
async fn erased(app: &TestApp, token: &str, value: &str) -> Value {
    erase(app, token, value).await.json().await.unwrap()
}

async fn erasure_across_events(sqlite: Option<&std::path::Path>) {
    let app = app_on(sqlite).await;
    let token = make_token(&app.store, "dpo", "events:read,events:delete").await;
    let alice = [new_job_id(), new_job_id(), new_job_id()];
    let bob = new_job_id();
    app.deliver(body_with(
        &alice[0],
        "job.succeeded",
        json!({"customer": {"Email": "alice@example.com"}}),
    ))
    .await;
    app.deliver(body_with(
        &alice[1],
        "job.succeeded",
        json!({"rows": [{"x": 1}, {"customer_email": "ALICE@EXAMPLE.COM"}]}),
    ))
    .await;
    // A hash-rule field is a subject too; redaction then stores only its hash.
    app.deliver(body_with(
        &alice[2],
        "job.failed",
        json!({"email": "alice@example.com", "ssn": "123-45-6789"}),
    ))
    .await;
    app.deliver(body_with(
        &bob,
        "job.succeeded",
        json!({"email": "bob@example.com", "note": "alice@example.com"}),
    ))
    .await;
    // Unredacted values were indexed, redacted ones stored.
    let stored = app.stored_payload(&alice[2], "job.failed").await;
    assert!(stored["manifest"].get("ssn").is_none());
    assert!(stored["manifest"]["ssn_hash"].is_string());

    // The value as a person gives it, in another spelling.
    let res = erase(&app, &token, " Alice@Example.com ").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"deleted": 3}));
    for j in &alice {
        assert!(app.events(j).await.is_empty(), "{j}");
    }
    assert_eq!(
        app.events(&bob).await.len(),
        1,
        "a mention in free text is not a subject field"
    );
    // By SSN: found through the hash rule, before redaction.
    app.deliver(body_with(
        &new_job_id(),
        "job.succeeded",
        json!({"applicant": {"SSN": "123456789"}}),
    ))
    .await;
    let res = erase(&app, &token, "123-45-6789").await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"deleted": 1}));
    // Again: nothing left.
    let res = erase(&app, &token, "alice@example.com").await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"deleted": 0}));

    // The audit trail holds the subject's keyed hash, never the value.
    let records = audit_records(&app.store).await;
    let erasures: Vec<_> = records.iter().filter(|r| r.action == "erasure").collect();
    assert_eq!(erasures.len(), 3);
    assert_eq!(erasures[0].count, 3);
    assert_eq!(erasures[0].actor, "token:dpo");
    let key = imggo_receiver::subjects::SubjectKey::new(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, HASH_KEY).unwrap(),
    );
    assert_eq!(
        erasures[0].target.as_deref(),
        Some(key.hash("alice@example.com").unwrap().to_hex().as_str())
    );
    for r in &records {
        let line = r.to_json_line().to_lowercase();
        assert!(
            !line.contains("alice") && !line.contains("123-45"),
            "{line}"
        );
    }
    // Subject rows went with their events; bob's stay.
    assert_eq!(
        app.store
            .count_subject(&key.hash_as(Email, "alice@example.com").unwrap())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.store
            .count_subject(&key.hash_as(Email, "bob@example.com").unwrap())
            .await
            .unwrap(),
        1
    );
    // Retention takes subject rows with the events.
    backdate_rows(&app.store, &[bob.as_str()], 40 * 86_400).await;
    app.store
        .purge(std::time::Duration::from_secs(30 * 86_400), 100, false)
        .await
        .unwrap();
    assert_eq!(
        app.store
            .count_subject(&key.hash_as(Email, "bob@example.com").unwrap())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_across_events_on_postgres() {
    erasure_across_events(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_across_events_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    erasure_across_events(Some(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_fields_decide_what_is_indexed() {
    let app = spawn_app_with(|o| {
        o.settings.subjects.fields = vec!["member-no".into()];
        o.settings.subjects.hash_rule_fields = false;
    })
    .await;
    let token = make_token(&app.store, "dpo", "events:delete").await;
    let job = new_job_id();
    app.deliver(body_with(
        &job,
        "job.succeeded",
        json!({"MemberNo": 4711, "email": "c@d.e", "ssn": "123-45-6789"}),
    ))
    .await;
    assert_eq!(erased(&app, &token, "c@d.e").await, json!({"deleted": 0}));
    assert_eq!(
        erased(&app, &token, "123-45-6789").await,
        json!({"deleted": 0})
    );
    // A number is indexed by its text.
    assert_eq!(erased(&app, &token, "4711").await, json!({"deleted": 1}));
}
