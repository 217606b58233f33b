//! One structured line per request: request id, method, route, client IP,
//! job_id, event, outcome, status, latency. Never headers, bodies or secrets.
//!
//! The line is one flat event, not a span: tracing-subscriber formats span
//! fields when the span is created and re-reads them for every event, which
//! cost a fifth of the webhook's throughput under load.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Level;

use crate::error::Outcome;
use crate::security::ClientIp;

/// What is logged and counted about one finished request.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a Method,
    /// The matched route template, or `<unmatched>`.
    pub route: &'a str,
    pub client_ip: Option<IpAddr>,
    /// Set once a delivery's envelope was read.
    pub ids: Option<(&'a str, &'a str)>,
    pub outcome: &'static str,
    pub status: u16,
    pub elapsed: Duration,
    /// The webhook route (its outcomes feed the delivery metrics).
    pub webhook: bool,
}

impl AccessLine<'_> {
    /// Writes the line and records the request's metrics.
    pub fn emit(&self) {
        // Probes every few seconds would drown the log at INFO.
        let probe = matches!(self.route, "/healthz" | "/readyz");
        let level = match self.status {
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
                    request_id = self.request_id,
                    method = self.method.as_str(),
                    route = self.route,
                    client_ip = self.client_ip.map(tracing::field::display),
                    job_id = self.ids.map(|i| i.0),
                    event = self.ids.map(|i| i.1),
                    outcome = self.outcome,
                    status = self.status,
                    latency_ms = self.elapsed.as_secs_f64() * 1000.0,
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
        crate::metrics::record_request(self.route, self.webhook, self.outcome, self.elapsed);
    }
}

/// The access line for requests served by the router (everything but the
/// webhook route, which logs its own line: see `webhook::handle`).
pub async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let request_id = req
        .headers()
        .get(super::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let client_ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    let method = req.method().clone();

    let res = next.run(req).await;

    AccessLine {
        request_id: &request_id,
        method: &method,
        route: route.as_deref().unwrap_or("<unmatched>"),
        client_ip,
        ids: None,
        outcome: res.extensions().get::<Outcome>().map_or("ok", |o| o.0),
        status: res.status().as_u16(),
        elapsed: start.elapsed(),
        webhook: false,
    }
    .emit();
    res
}
