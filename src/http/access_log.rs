//! One structured line per request: request id, method, route, client IP,
//! job_id, event, outcome, status, latency. Never headers, bodies or secrets.
//!
//! The line is one flat event, not a span: tracing-subscriber formats span
//! fields when the span is created and re-reads them for every event, which
//! cost a fifth of the webhook's throughput under load.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::Method;
use tracing::Level;

use crate::error::Outcome;
use crate::event::Envelope;

/// What is logged about one finished request.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a Method,
    /// The matched route template, or `<unmatched>`.
    pub route: &'a str,
    pub client_ip: IpAddr,
    /// Set once a delivery's envelope was read.
    pub envelope: Option<&'a Envelope>,
    pub outcome: Outcome,
    pub status: u16,
    pub elapsed: Duration,
}

impl AccessLine<'_> {
    /// Writes the line: INFO for 2xx, WARN for 4xx, ERROR for 5xx, DEBUG for probes.
    pub fn write(&self) {
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
                    client_ip = tracing::field::display(self.client_ip),
                    job_id = self.envelope.map(|e| e.job_id.as_str()),
                    event = self.envelope.map(|e| e.event.as_str()),
                    outcome = self.outcome.as_str(),
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
    }
}
