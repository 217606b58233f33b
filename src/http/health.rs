//! `/healthz` (liveness: the process answers) and `/readyz` (deliveries can
//! be acknowledged: the database answers with migrations applied, or the
//! spool has room; and we are not shutting down).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::AppState;

/// A readiness probe must answer well inside a balancer's probe timeout.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Response {
    status_body(StatusCode::OK, json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return not_ready("shutting_down");
    }
    let reason = if state.schema.is_ready() {
        match tokio::time::timeout(READY_CHECK_TIMEOUT, state.store.ready()).await {
            Ok(Ok(())) => return status_body(StatusCode::OK, json!({"status": "ready"})),
            Ok(Err(crate::store::StoreError::NotMigrated)) => {
                return not_ready("migrations_pending")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness check failed");
                "database_unavailable"
            }
            Err(_) => "database_timeout",
        }
    } else {
        // Started while Postgres was unreachable: it has not answered
        // since (start-up said so once; each probe need not).
        "database_unavailable"
    };
    // Deliveries are still acknowledged while the spool has room.
    match &state.ingest.commit.spool {
        Some(spool) if spool.has_room() => status_body(
            StatusCode::OK,
            json!({"status": "ready", "spooling": true, "reason": reason}),
        ),
        _ => not_ready(reason),
    }
}

fn not_ready(reason: &str) -> Response {
    status_body(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"status": "not_ready", "reason": reason}),
    )
}

fn status_body(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}
