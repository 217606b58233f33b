//! One structured line per request: request id, method, route, client IP,
//! job_id, event, outcome, status, latency. Never headers, bodies or secrets.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::Empty;
use tracing::{Instrument, Level};

use super::WebhookRoute;
use crate::error::Outcome;
use crate::security::ClientIp;

pub async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let request_id = req
        .headers()
        .get(super::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let client_ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    let probe = matches!(route.as_str(), "/healthz" | "/readyz");
    let webhook = req.extensions().get::<WebhookRoute>().is_some();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = %route,
        client_ip = client_ip.map(tracing::field::display),
        job_id = Empty,
        event = Empty,
    );
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    let outcome = res.extensions().get::<Outcome>().map_or("ok", |o| o.0);
    let elapsed = start.elapsed();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    crate::metrics::record_request(&route, webhook, outcome, elapsed);
    span.in_scope(|| {
        // Probes every few seconds would drown the log at INFO.
        if probe {
            tracing::event!(
                Level::DEBUG,
                status,
                outcome,
                latency_ms,
                "request finished"
            );
        } else if status >= 500 {
            tracing::event!(
                Level::ERROR,
                status,
                outcome,
                latency_ms,
                "request finished"
            );
        } else if status >= 400 {
            tracing::event!(Level::WARN, status, outcome, latency_ms, "request finished");
        } else {
            tracing::event!(Level::INFO, status, outcome, latency_ms, "request finished");
        }
    });
    res
}
