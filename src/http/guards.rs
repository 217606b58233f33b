//! Route layers of the webhook: allowlist (and, later in the chain, the
//! rate limit), cheapest first.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::AppError;
use crate::security::ClientIp;

/// 403 for clients outside `network.allowed_ips`.
pub async fn allowlist(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    match ip {
        Some(ip) if state.allowlist.allows(ip) => next.run(req).await,
        // The access log records the refusal at WARN with the client IP.
        _ => AppError::Forbidden.into_response(),
    }
}
