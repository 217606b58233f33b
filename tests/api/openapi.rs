//! `/v1/openapi.json` describes the service as it answers: what the
//! document allows is accepted, what the service refuses the document
//! refuses too. (`.ci/schemathesis.sh` checks this property-based; these
//! are the mismatches it found, kept as plain tests.)

use serde_json::{json, Value};

use crate::api_support::*;
use crate::helpers::*;

async fn document(app: &TestApp) -> Value {
    let res = app
        .client
        .get(app.api("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The schema of query parameter `name` of `GET path`.
fn query_schema<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
    doc["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name && p["in"] == "query")
        .map(|p| &p["schema"])
        .unwrap_or_else(|| panic!("no query parameter {name}"))
}

/// The schema of the erasure request's `value`.
fn erasure_value_schema(doc: &Value) -> &Value {
    &doc["components"]["schemas"]["ErasureRequest"]["properties"]["value"]
}

async fn erase(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.api("/v1/erasure"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_feed_parameters_are_refused_by_service_and_document_alike() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "reader", "events:read").await;
    let res = app
        .api_get("/v1/events?after=&limit=1&event=&pattern_id=", &token)
        .await;
    assert_eq!(res.status(), 400);
    let doc = document(&app).await;
    for name in ["after", "event", "pattern_id"] {
        let schema = query_schema(&doc, "/v1/events", name);
        assert_eq!(schema["type"], "string", "{name}: {schema}");
        assert!(
            schema["minLength"].as_u64() >= Some(1),
            "{name}: the document allows an empty string: {schema}"
        );
        // Each one alone, empty, is refused too.
        let res = app.api_get(&format!("/v1/events?{name}="), &token).await;
        assert_eq!(res.status(), 400, "{name}=");
    }
    // The bounds the service enforces are the document's.
    assert_eq!(query_schema(&doc, "/v1/events", "event")["maxLength"], 64);
    assert_eq!(
        query_schema(&doc, "/v1/events", "pattern_id")["maxLength"],
        128
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_erasure_value_is_refused_by_service_and_document_alike() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "dpo", "events:delete").await;
    let res = erase(&app, &token, json!({"value": ""})).await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_parameter");
    let doc = document(&app).await;
    let schema = erasure_value_schema(&doc);
    assert!(
        schema["minLength"].as_u64() >= Some(1),
        "the document allows an empty value: {schema}"
    );
    // The longest value the document allows is accepted, one more refused.
    let max = schema["maxLength"].as_u64().expect("a maxLength") as usize;
    let res = erase(
        &app,
        &token,
        json!({"value": "\u{1}".repeat(max - 1) + "a"}),
    )
    .await;
    assert_eq!(res.status(), 200, "{max} characters, every one escaped");
    let res = erase(&app, &token, json!({"value": "a".repeat(max + 1)})).await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_parameter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_string_erasure_value_is_refused_as_the_document_says() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "dpo", "events:delete").await;
    let doc = document(&app).await;
    assert_eq!(erasure_value_schema(&doc)["type"], "string");
    for value in [
        json!(0),
        json!(1042),
        json!(1.5),
        json!(true),
        json!({"a": 1}),
    ] {
        let res = erase(&app, &token, json!({ "value": value })).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 400, "{value}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{value}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // Nothing was erased, so nothing was audited.
    let erasures = audit_records(&app.store)
        .await
        .into_iter()
        .filter(|r| r.action == "erasure")
        .count();
    assert_eq!(erasures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_a_data_route_can_give_is_documented() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    for (path, method, statuses) in [
        ("/v1/events", "get", &["400", "401", "403", "503"][..]),
        (
            "/v1/jobs/{job_id}",
            "get",
            &["400", "401", "403", "404", "503"][..],
        ),
        (
            "/v1/jobs/{job_id}",
            "delete",
            &["400", "401", "403", "503"][..],
        ),
        (
            "/v1/erasure",
            "post",
            &["400", "401", "403", "413", "503"][..],
        ),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in statuses {
            assert!(
                responses.get(*status).is_some(),
                "{method} {path} {status}: {responses}"
            );
        }
        assert!(
            responses["401"]["headers"]
                .get("WWW-Authenticate")
                .is_some(),
            "{method} {path}: 401 names its header"
        );
        assert!(
            responses["503"]["headers"].get("Retry-After").is_some(),
            "{method} {path}: 503 names its header"
        );
    }
}
