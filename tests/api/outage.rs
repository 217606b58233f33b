//! The database going away mid-run with the spool turned off: 503 +
//! Retry-After, /readyz 503, and recovery without a restart.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_503_then_recovers_without_restart() {
    let (app, proxy) = spawn_app_behind_proxy(|o| {
        o.settings.spool.path = String::new();
    })
    .await;

    assert_eq!(app.post_signed(prod_body("before")).await.status(), 200);

    proxy.set_up(false);
    let res = app.post_signed(prod_body("during")).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(error_code(res).await, "unavailable");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(app.get_status("/healthz").await, 200);

    proxy.set_up(true);
    let res = app.post_signed(prod_body("during")).await;
    assert_eq!(res.status(), 200, "the retry after recovery is stored");
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "received");
    assert_eq!(app.get_status("/readyz").await, 200);
    assert_eq!(app.rows().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_replaced_transparently() {
    let app = spawn_app().await;
    assert_eq!(app.post_signed(prod_body("one")).await.status(), 200);
    // Kill every server process of the app's pool (not the test's own).
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'imggo-receiver'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(app.post_signed(prod_body("two")).await.status(), 200);
    assert_eq!(app.rows().await, 2);
}
