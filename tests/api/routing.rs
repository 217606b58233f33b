//! Routes, methods, request ids, probes and the allowlist on the public
//! listener.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");
    let res = app.client.get(app.webhook_url()).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(error_code(res).await, "method_not_allowed");
    let res = app.client.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test]
async fn a_request_id_is_kept_when_sent_and_made_when_not() {
    let app = spawn_app().await;
    let body = prod_body(&new_job_id());
    let res = app
        .client
        .post(app.webhook_url())
        .header("x-imggo-signature", prod_signature(&body))
        .header("x-request-id", "lb-trace-7f3a")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "lb-trace-7f3a");
    // Ids that would bloat or garble every log line are replaced, on the
    // webhook route and the others alike.
    for bad in [
        "x".repeat(129),
        "has space".to_owned(),
        "tab\tid".to_owned(),
    ] {
        for url in [app.webhook_url(), app.url("/healthz")] {
            let res = app
                .client
                .post(&url)
                .header("x-request-id", &bad)
                .send()
                .await
                .unwrap();
            let id = res.headers()["x-request-id"].to_str().unwrap();
            assert_ne!(id, bad);
            assert_eq!(id.len(), 36, "{url}: a fresh UUID, not {id}");
        }
    }
    // Refusals carry one too, fresh per request.
    let ids: Vec<String> = futures_util::future::join_all((0..2).map(|_| async {
        let res = app
            .client
            .post(app.webhook_url())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        res.headers()["x-request-id"].to_str().unwrap().to_owned()
    }))
    .await;
    assert_eq!(ids[0].len(), 36, "a UUID: {}", ids[0]);
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn other_methods_on_the_webhook_path_pass_the_guards_first() {
    let app =
        spawn_app_with(|o| o.settings.network.allowed_ips = vec!["127.0.0.2/32".parse().unwrap()])
            .await;
    let res = client_from("127.0.0.3")
        .get(app.webhook_url())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = client_from("127.0.0.2")
        .put(app.webhook_url())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(app.rows().await, 0);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.get_status("/healthz").await, 200);
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
    // A database whose migrations were rolled back is not ready.
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap()["reason"],
        "migrations_pending"
    );
}

#[tokio::test]
async fn the_allowlist_admits_listed_sources_only() {
    let app =
        spawn_app_with(|o| o.settings.network.allowed_ips = vec!["127.0.0.2/32".parse().unwrap()])
            .await;
    let body = prod_body(&new_job_id());
    let sig = prod_signature(&body);
    let denied = post_from(
        &client_from("127.0.0.3"),
        &app.webhook_url(),
        body.clone(),
        Some(&sig),
    )
    .await;
    assert_eq!(denied.status(), 403);
    assert_eq!(error_code(denied).await, "forbidden");
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = client_from("127.0.0.3")
        .post(app.webhook_url())
        .header("x-forwarded-for", "127.0.0.2")
        .header("x-imggo-signature", &sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 403);
    let allowed = post_from(
        &client_from("127.0.0.2"),
        &app.webhook_url(),
        body,
        Some(&sig),
    )
    .await;
    assert_eq!(allowed.status(), 200);
    // Probes are never allowlisted.
    let probe = client_from("127.0.0.3")
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
}
