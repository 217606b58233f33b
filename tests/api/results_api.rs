//! The Results API routes end to end, on Postgres and SQLite: every route,
//! status and error code, adversarial auth, bad parameters, the OpenAPI
//! document, metrics and the audit records of reads and deletes.

use serde_json::{json, Value};

use crate::api_support::*;
use crate::helpers::*;

async fn routes_statuses_and_codes(sqlite: Option<&std::path::Path>) {
    let app = app_on(sqlite).await;
    let reader = make_token(&app.store, "reader", "events:read").await;
    let deleter = make_token(&app.store, "deleter", "events:delete").await;

    // Empty feed: no events, `next` is a cursor from the start.
    let empty = app.feed("", &reader).await;
    assert_eq!(empty["events"], json!([]));
    let start = empty["next"].as_str().unwrap().to_owned();

    let jobs: Vec<String> = (0..5).map(|_| new_job_id()).collect();
    for j in &jobs {
        app.deliver(prod_body(j)).await;
    }
    app.deliver(docs_body(&jobs[0])).await;

    // The whole feed, two pages at a time, in commit order.
    let (events, last) = app.drain(&reader, 2, 6).await;
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["job_id"].as_str().unwrap().into(),
                e["event"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut expected: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.clone(), "job.succeeded".into()))
        .collect();
    expected.push((jobs[0].clone(), "job.completed".into()));
    assert_eq!(seen, expected);
    // The payload is the stored body as a JSON value, not a string.
    assert_eq!(
        events[0]["payload"],
        app.stored_payload(&jobs[0], "job.succeeded").await
    );
    assert_eq!(events[5]["status"], "completed");
    assert!(events[0]["received_at"].as_str().unwrap().ends_with('Z'));
    // An empty page gives back the same cursor.
    let page = app.feed(&format!("after={last}"), &reader).await;
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["next"], last.as_str());
    // `after` absent and the start cursor read the same.
    let from_start = app
        .feed(&format!("after={start}&limit=1000"), &reader)
        .await;
    assert_eq!(from_start["events"].as_array().unwrap().len(), 6);
    // An event's own cursor continues after it.
    let cursor = events[2]["cursor"].as_str().unwrap();
    let rest = app.feed(&format!("after={cursor}"), &reader).await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 3);

    // Filters are exact.
    let filtered = app.feed("event=job.completed", &reader).await;
    assert_eq!(filtered["events"].as_array().unwrap().len(), 1);
    let filtered = app.feed("pattern_id=pat_invoices_v2", &reader).await;
    assert_eq!(filtered["events"].as_array().unwrap().len(), 1);
    let filtered = app.feed("event=job.succ", &reader).await;
    assert_eq!(filtered["events"], json!([]));

    // Jobs.
    let res = app.api_get(&format!("/v1/jobs/{}", jobs[0]), &reader).await;
    assert_eq!(res.status(), 200);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["events"].as_array().unwrap().len(), 2);
    assert_eq!(job["events"][0]["cursor"], events[0]["cursor"]);
    let res = app.api_get("/v1/jobs/no-such-job", &reader).await;
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");

    // Delete needs events:delete; read needs events:read.
    let del = |token: &str, job: &str| {
        app.client
            .delete(app.api(&format!("/v1/jobs/{job}")))
            .bearer_auth(token)
            .send()
    };
    let res = del(&reader, &jobs[0]).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "forbidden");
    let res = app.api_get("/v1/events", &deleter).await;
    assert_eq!(res.status(), 403);
    let res = del(&deleter, &jobs[0]).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"deleted": 2}));
    let res = del(&deleter, &jobs[0]).await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"deleted": 0}));
    // Deleted events simply disappear from the feed.
    let (after_delete, _) = app.drain(&reader, 100, 4).await;
    assert_eq!(after_delete.len(), 4);

    // Unknown routes and methods.
    let res = app.api_get("/v1/nothing", &reader).await;
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");
    let res = app
        .client
        .put(app.api("/v1/events"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(error_code(res).await, "method_not_allowed");

    // Audit: reads and deletes by token, with request ids and client IPs.
    let records = audit_records(&app.store).await;
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.actor.as_str(), r.action.as_str()))
        .collect();
    assert!(
        actions.contains(&("token:reader", "feed.read")),
        "{actions:?}"
    );
    assert!(actions.contains(&("token:reader", "job.read")));
    let deletes: Vec<_> = records
        .iter()
        .filter(|r| r.action == "job.delete")
        .collect();
    assert_eq!(deletes.len(), 2, "both deletes, the empty one too");
    assert_eq!(deletes[0].count, 2);
    assert_eq!(deletes[0].target.as_deref(), Some(jobs[0].as_str()));
    assert_eq!(deletes[0].actor, "token:deleter");
    assert_eq!(deletes[0].client_ip.as_deref(), Some("127.0.0.1"));
    assert!(deletes[0]
        .request_id
        .as_deref()
        .is_some_and(|r| r.len() == 36));
    // Empty pages, 403s and 404s returned no event data: not audited.
    let reads: i64 = records
        .iter()
        .filter(|r| r.action == "feed.read")
        .map(|r| r.count)
        .sum();
    assert!(reads >= 6 + 6 + 3 + 2 + 4, "{reads}");
    assert!(records
        .iter()
        .all(|r| r.count > 0 || r.action == "job.delete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_statuses_and_codes_on_postgres() {
    routes_statuses_and_codes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_statuses_and_codes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    routes_statuses_and_codes(Some(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_authorization() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "reader", "events:read").await;
    let revoked = make_token(&app.store, "old", "events:read,events:delete").await;
    let audit = imggo_receiver::audit::AuditEntry::new(
        imggo_receiver::audit::Actor::Cli,
        imggo_receiver::audit::Action::TokenRevoke,
        Some("old".into()),
    );
    // It works, then revocation holds from the very next request.
    assert_eq!(app.api_get("/v1/events", &revoked).await.status(), 200);
    assert!(app.store.revoke_token("old", &audit).await.unwrap());
    let (unknown, _) = imggo_receiver::tokens::generate();
    let unknown = imggo_receiver::tokens::expose(&unknown).to_owned();
    let url = app.api("/v1/events");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty", Some(String::new())),
        ("wrong scheme", Some(format!("Basic {token}"))),
        ("no scheme", Some(token.clone())),
        ("garbage", Some("Bearer not-a-token".into())),
        (
            "truncated",
            Some(format!("Bearer {}", &token[..token.len() - 1])),
        ),
        ("unknown", Some(format!("Bearer {unknown}"))),
        ("revoked", Some(format!("Bearer {revoked}"))),
        ("two tokens", Some(format!("Bearer {token} {token}"))),
        ("control bytes", Some("Bearer igr_\t\t".into())),
    ];
    for (what, header) in cases {
        let mut req = app.client.get(&url);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{what}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer", "{what}");
        let text = res.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized", "{what}");
        assert!(!text.contains(&token) && !text.contains(&revoked), "{what}");
    }
    // Two Authorization headers: refused, not "first wins".
    let res = app
        .client
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A token in the query string is ignored.
    let res = app
        .client
        .get(format!("{url}?access_token={token}&token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Scope checks come after authentication: 403 with a valid token.
    let res = app
        .client
        .post(app.api("/v1/erasure"))
        .bearer_auth(&token)
        .body(r#"{"value":"x@y.z"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "forbidden");
    // The scheme name is case-insensitive.
    let res = app
        .client
        .get(&url)
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // last_used_at is recorded (off the request path: bounded wait).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let tokens = app.store.list_tokens().await.unwrap();
        let t = tokens.iter().find(|t| t.name == "reader").unwrap();
        if t.last_used_at.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never set"
        );
        tokio::task::yield_now().await;
    }
    // The public listener has no API routes.
    assert_eq!(app.get_status("/v1/events").await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_4xx_never_500() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "all", "events:read,events:delete").await;
    app.deliver(prod_body(&new_job_id())).await;
    use base64::Engine as _;
    let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    let sqlite_form = b64("v1.5");
    let long = "x".repeat(300);
    let cases: Vec<(String, &str)> = vec![
        ("after=".into(), "invalid_cursor"),
        ("after=%%%".into(), "invalid_cursor"),
        ("after=not-base64!".into(), "invalid_cursor"),
        (format!("after={}", b64("v2.1.2")), "invalid_cursor"),
        (format!("after={}", b64("v1.-1.2")), "invalid_cursor"),
        (format!("after={}", b64("v1.1.2.3")), "invalid_cursor"),
        (format!("after={sqlite_form}"), "invalid_cursor"),
        (format!("after={}", "A".repeat(5000)), "invalid_cursor"),
        ("limit=0".into(), "invalid_parameter"),
        ("limit=1001".into(), "invalid_parameter"),
        ("limit=-1".into(), "invalid_parameter"),
        ("limit=abc".into(), "invalid_parameter"),
        ("limit=1&limit=2".into(), "invalid_parameter"),
        ("wait=31".into(), "invalid_parameter"),
        ("wait=-1".into(), "invalid_parameter"),
        ("wait=NaN".into(), "invalid_parameter"),
        ("wait=inf".into(), "invalid_parameter"),
        ("event=".into(), "invalid_parameter"),
        (format!("pattern_id={long}"), "invalid_parameter"),
        // Postgres refuses a NUL in text: such a filter never reaches it.
        ("event=a%00b".into(), "invalid_parameter"),
        ("event=a%20b".into(), "invalid_parameter"),
        ("pattern_id=a%00b".into(), "invalid_parameter"),
        ("pattern_id=a%00b&wait=2".into(), "invalid_parameter"),
    ];
    for (query, code) in cases {
        let res = app.api_get(&format!("/v1/events?{query}"), &token).await;
        let status = res.status().as_u16();
        assert_eq!(error_code(res).await, code, "{query}");
        assert_eq!(status, 400, "{query}");
    }
    // Erasure bodies.
    let post = |body: Vec<u8>| {
        app.client
            .post(app.api("/v1/erasure"))
            .bearer_auth(&token)
            .body(body)
            .send()
    };
    let bodies: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"not json".to_vec(), 400, "invalid_json"),
        (b"[]".to_vec(), 400, "invalid_json"),
        (b"{}".to_vec(), 400, "invalid_parameter"),
        (br#"{"value":null}"#.to_vec(), 400, "invalid_parameter"),
        (br#"{"value":""}"#.to_vec(), 400, "invalid_parameter"),
        (br#"{"value":["a"]}"#.to_vec(), 400, "invalid_parameter"),
        (br#"{"value":"--"}"#.to_vec(), 400, "invalid_parameter"),
        // A lone surrogate is valid JSON (JSON.stringify writes it); its
        // canonical form holds no letter or digit.
        (br#"{"value":"\ud800"}"#.to_vec(), 400, "invalid_parameter"),
        (vec![0xff, 0xfe], 400, "invalid_json"),
        (
            format!(r#"{{"value":"{}"}}"#, "a".repeat(10_000)).into_bytes(),
            413,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in bodies {
        let res = post(body.clone()).await.unwrap();
        assert_eq!(
            res.status().as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error_code(res).await, code);
    }
    // A bad job id in the path (invalid UTF-8 escape).
    let res = app.api_get("/v1/jobs/%ff%fe", &token).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    // A job id no delivery can have (a NUL, a space): none stored.
    for id in ["a%00b", "a%20b", &"j".repeat(129)] {
        let res = app.api_get(&format!("/v1/jobs/{id}"), &token).await;
        assert_eq!(res.status(), 404, "{id}");
        assert_eq!(error_code(res).await, "not_found");
        let res = app
            .client
            .delete(app.api(&format!("/v1/jobs/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{id}");
        assert_eq!(res.json::<Value>().await.unwrap()["deleted"], 0);
    }
    // Nothing was deleted by any of it.
    assert_eq!(app.rows().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_comes_back_byte_for_byte_as_stored() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "reader", "events:read").await;
    let job = new_job_id();
    // Number text, unicode escapes and serde_json's magic key as data.
    let body = format!(
        r#"{{"event":"job.succeeded","job_id":"{job}","manifest":{{"total":1.50,"big":123456789012345678901234567890,"s":"\u00e9\n\"","k":{{"$serde_json::private::Number":"12.50"}}}}}}"#
    );
    app.deliver(body.into_bytes()).await;
    let res = app.api_get("/v1/events?wait=20", &token).await;
    let text = res.text().await.unwrap();
    assert!(text.contains(r#""total":1.50"#), "{text}");
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["events"][0]["payload"]["manifest"]["s"], "é\n\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_covers_every_route() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.api("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let doc: utoipa::openapi::OpenApi = serde_json::from_str(&text).unwrap();
    assert!(text.contains(r#""openapi":"3."#), "OpenAPI 3");
    for (path, methods) in [
        ("/v1/events", &["get"][..]),
        ("/v1/jobs/{job_id}", &["get", "delete"][..]),
        ("/v1/erasure", &["post"][..]),
        ("/v1/openapi.json", &["get"][..]),
    ] {
        let item = doc
            .paths
            .paths
            .get(path)
            .unwrap_or_else(|| panic!("{path}"));
        let item = serde_json::to_value(item).unwrap();
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path}");
        }
    }
    // Every $ref resolves to a schema or security scheme in the document.
    let v: Value = serde_json::from_str(&text).unwrap();
    // Every event field is always present (null where empty), as served.
    let required = &v["components"]["schemas"]["ApiEvent"]["required"];
    for field in [
        "cursor",
        "job_id",
        "event",
        "pattern_id",
        "status",
        "received_at",
        "payload",
    ] {
        assert!(
            required.as_array().unwrap().iter().any(|f| f == field),
            "{field} not required: {required}"
        );
    }
    // A database outage is a documented answer of every data route.
    for (path, method) in [
        ("/v1/events", "get"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
        ("/v1/erasure", "post"),
    ] {
        let responses = &v["paths"][path][method]["responses"];
        assert!(
            responses.get("503").is_some(),
            "{method} {path}: {responses}"
        );
    }
    let mut refs = Vec::new();
    collect_refs(&v, &mut refs);
    assert!(refs.len() >= 5, "{refs:?}");
    for r in refs {
        let path = r.strip_prefix("#/").unwrap();
        let mut node = &v;
        for part in path.split('/') {
            node = node.get(part).unwrap_or_else(|| panic!("unresolved {r}"));
        }
    }
    assert!(v["components"]["securitySchemes"]["bearer"].is_object());
    // The error shape is the contract's.
    assert!(v["components"]["schemas"]["ErrorBody"]["properties"]["error"].is_object());
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap().to_owned());
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_off_and_metrics() {
    let off = spawn_app_with(|o| o.settings.api.bind = String::new()).await;
    assert!(off.api_addr.is_none());

    let app = spawn_app().await;
    let token = make_token(&app.store, "reader", "events:read").await;
    assert_eq!(app.api_get("/v1/events", &token).await.status(), 200);
    assert_eq!(
        app.api_get("/v1/events?limit=0", &token).await.status(),
        400
    );
    let metrics = app
        .client
        .get(format!("http://{}/metrics", app.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"imggo_api_requests_total{route="/v1/events",outcome="ok"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"outcome="invalid_parameter""#));
    assert!(metrics.contains("imggo_feed_lag_seconds"));
}

#[test]
fn results_api_settings_are_validated_by_key() {
    use imggo_receiver::config::Settings;
    let load = |k: &str, v: &str| Settings::load_with_env(None, vec![(k.to_owned(), v.to_owned())]);
    let defaults = Settings::load_with_env(None, Vec::new()).unwrap();
    assert_eq!(
        defaults.api.bind_addr(),
        Some("127.0.0.1:8081".parse().unwrap())
    );
    assert_eq!(
        defaults.audit.max_age,
        std::time::Duration::from_secs(400 * 86_400)
    );
    assert_eq!(
        defaults.subjects.fields,
        ["email", "customer_email", "customer_id"]
    );
    assert!(defaults.subjects.hash_rule_fields);
    for (key, value, named) in [
        ("IMGGO__API__BIND", "not-an-address", "api.bind"),
        ("IMGGO__API__REQUEST_TIMEOUT", "1s", "api.request_timeout"),
        ("IMGGO__API__MAX_CONNECTIONS", "0", "api.max_connections"),
        ("IMGGO__AUDIT__MAX_AGE", "0s", "audit.max_age"),
        ("IMGGO__SUBJECTS__FIELDS", "email,--", "subjects.fields"),
    ] {
        let err = load(key, value).unwrap_err().to_string();
        assert!(err.contains(named), "{key}: {err}");
    }
    assert!(load("IMGGO__API__BIND", "")
        .unwrap()
        .api
        .bind_addr()
        .is_none());
    let s = load("IMGGO__SUBJECTS__FIELDS", "member_no, email").unwrap();
    assert_eq!(s.subjects.fields, ["member_no", "email"]);
}

/// With the database unreachable, every route that needs it answers 503
/// `unavailable` with `Retry-After`, never 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_with_retry_after_on_every_route() {
    let (app, proxy) = spawn_app_behind_proxy(|_| {}).await;
    let token = make_token(&app.store, "all", "events:read,events:delete").await;
    proxy.set_up(false);
    let requests = [
        app.client.get(app.api("/v1/events")),
        app.client.get(app.api("/v1/events?wait=1")),
        app.client.get(app.api("/v1/jobs/j-1")),
        app.client.delete(app.api("/v1/jobs/j-1")),
        app.client
            .post(app.api("/v1/erasure"))
            .body(r#"{"value":"alice@example.com"}"#),
    ];
    for req in requests {
        let res = req.bearer_auth(&token).send().await.unwrap();
        let what = format!("{} {}", res.status(), res.url());
        assert_eq!(res.status(), 503, "{what}");
        assert!(res.headers().contains_key("retry-after"), "{what}");
        assert_eq!(error_code(res).await, "unavailable", "{what}");
    }
    proxy.set_up(true);
}

/// A running replica whose database login is refused (the role disabled,
/// credentials being rotated) is unavailable, not broken: 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_503_not_500() {
    let role = format!("imggo_test_role_{}", uuid::Uuid::new_v4().simple());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url())
        .await
        .unwrap();
    // Superuser: it needs no grants on the test database, and owns nothing.
    sqlx::query(&format!("CREATE ROLE {role} LOGIN SUPERUSER"))
        .execute(&mut admin)
        .await
        .unwrap();
    let as_role = role.clone();
    let app = spawn_app_with(move |o| {
        let url = o.env["DATABASE_URL"].replacen("postgres@", &format!("{as_role}@"), 1);
        assert_ne!(
            url, o.env["DATABASE_URL"],
            "the test database URL names its user"
        );
        o.database_url = Some(url);
    })
    .await;
    let token = make_token(&app.store, "reader", "events:read").await;
    assert_eq!(app.api_get("/v1/events", &token).await.status(), 200);

    sqlx::query(&format!("ALTER ROLE {role} NOLOGIN"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(&role)
        .execute(&mut admin)
        .await
        .unwrap();
    let res = app.api_get("/v1/jobs/j-1", &token).await;
    let status = res.status();
    assert_eq!(status, 503, "{}", res.text().await.unwrap());

    app.shutdown.cancel();
    drop(app);
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
}
