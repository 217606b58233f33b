//! One structured line per request: request id, method, route, client IP,
//! job_id, event, outcome, status, latency. Never headers, bodies or secrets.
//!
//! The line is one flat event, not a span: tracing-subscriber formats span
//! fields when the span is created and re-reads them for every event, which
//! cost a fifth of the webhook's throughput under load.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Level;

use super::{DeliveryIds, WebhookRoute};
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
    let method = req.method().clone();
    let webhook = req.extensions().get::<WebhookRoute>().is_some();
    // Probes every few seconds would drown the log at INFO.
    let probe = matches!(route.as_str(), "/healthz" | "/readyz");

    let res = next.run(req).await;

    let status = res.status().as_u16();
    let outcome = res.extensions().get::<Outcome>().map_or("ok", |o| o.0);
    let ids = res.extensions().get::<DeliveryIds>();
    let elapsed = start.elapsed();
    let level = match status {
        _ if probe => Level::DEBUG,
        500.. => Level::ERROR,
        400.. => Level::WARN,
        _ => Level::INFO,
    };
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "imggo_receiver::access",
                $level,
                request_id = %request_id,
                method = %method,
                route = %route,
                client_ip = client_ip.map(tracing::field::display),
                job_id = ids.map(|i| i.job_id.as_str()),
                event = ids.map(|i| i.event.as_str()),
                outcome,
                status,
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            )
        };
    }
    // `event!` needs its level as a constant.
    match level {
        Level::DEBUG => line!(Level::DEBUG),
        Level::ERROR => line!(Level::ERROR),
        Level::WARN => line!(Level::WARN),
        _ => line!(Level::INFO),
    }
    crate::metrics::record_request(route, webhook, outcome, elapsed);
    res
}
