//! Prometheus metrics, served on the admin listener only. Labels are bounded
//! sets (route templates, outcome codes): never job ids or client IPs.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorCode, Outcome};

pub const REQUESTS: &str = "imggo_http_requests_total";
pub const WEBHOOK_DURATION: &str = "imggo_webhook_duration_seconds";
pub const SIGNATURE_FAILURES: &str = "imggo_signature_failures_total";
pub const ALLOWLIST_DENIALS: &str = "imggo_allowlist_denials_total";
pub const RATE_LIMITED: &str = "imggo_rate_limited_total";
pub const DUPLICATES: &str = "imggo_duplicates_total";
pub const EVENTS_STORED: &str = "imggo_events_stored_total";
pub const DATABASE_ERRORS: &str = "imggo_database_errors_total";
pub const PURGE_RUNS: &str = "imggo_purge_runs_total";
pub const PURGE_ROWS: &str = "imggo_purge_rows_total";
pub const PURGE_DURATION: &str = "imggo_purge_duration_seconds";
pub const RATE_LIMITER_KEYS: &str = "imggo_rate_limiter_keys";
pub const BUILD_INFO: &str = "imggo_build_info";
pub const BATCH_SIZE: &str = "imggo_write_batch_size";
pub const QUEUE_FULL: &str = "imggo_write_queue_full_total";
pub const CONNECTIONS_REFUSED: &str = "imggo_connections_refused_total";
pub const LOG_LINES_DROPPED: &str = "imggo_log_lines_dropped_total";
pub const SEAL_FAILURES: &str = "imggo_seal_failures_total";
pub const SPOOL_DEPTH: &str = "imggo_spool_depth";
pub const SPOOLED: &str = "imggo_spooled_total";
pub const SPOOL_DRAINED: &str = "imggo_spool_drained_total";
pub const QUARANTINED: &str = "imggo_quarantined_total";
pub const API_REQUESTS: &str = "imggo_api_requests_total";
pub const FEED_LAG: &str = "imggo_feed_lag_seconds";
pub const FEED_WAITERS: &str = "imggo_feed_waiters";
pub const VALIDATION: &str = "imggo_validation_total";
pub const FORWARD_SENT: &str = "imggo_forward_sent_total";
pub const FORWARD_FAILURES: &str = "imggo_forward_failures_total";
pub const FORWARD_DEAD: &str = "imggo_forward_dead_total";
pub const FORWARD_LAG_EVENTS: &str = "imggo_forward_lag_events";
pub const FORWARD_LAG_SECONDS: &str = "imggo_forward_lag_seconds";
pub const FORWARD_MISSED: &str = "imggo_forward_missed_total";

/// Rows per batch: powers of two up to the largest sensible batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Webhook latencies cluster in milliseconds; purges take longer.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
/// `webhook_path` is the `route` label of the webhook's request series.
pub fn install(webhook_path: &str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)
                })
                .map(PrometheusBuilder::build_recorder);
            let recorder = match recorder {
                Ok(r) => r,
                // Only fails on empty buckets, which ours are not.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            register_at_zero(webhook_path);
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS,
        "HTTP requests by route and outcome (received, duplicate or error code)"
    );
    describe_histogram!(WEBHOOK_DURATION, Unit::Seconds, "Webhook request latency");
    describe_counter!(
        SIGNATURE_FAILURES,
        "Webhook deliveries refused for a missing or wrong signature"
    );
    describe_counter!(
        ALLOWLIST_DENIALS,
        "Webhook requests refused because the client IP is not allowed"
    );
    describe_counter!(
        RATE_LIMITED,
        "Webhook requests refused by the per-IP rate limit"
    );
    describe_counter!(
        DUPLICATES,
        "Deliveries whose (job_id, event) was already stored"
    );
    describe_counter!(EVENTS_STORED, "Deliveries committed as new rows");
    describe_counter!(
        DATABASE_ERRORS,
        "Database operations that failed, by operation"
    );
    describe_counter!(PURGE_RUNS, "Retention passes by result");
    describe_counter!(PURGE_ROWS, "Rows deleted by retention");
    describe_histogram!(PURGE_DURATION, Unit::Seconds, "Retention pass duration");
    describe_gauge!(
        RATE_LIMITER_KEYS,
        "Client IPs currently tracked by the rate limiter"
    );
    describe_gauge!(BUILD_INFO, "Build information");
    describe_histogram!(BATCH_SIZE, "Rows committed per group-commit transaction");
    describe_counter!(
        VALIDATION,
        "Deliveries checked against their pattern's JSON Schema, by outcome (valid, invalid, unchecked)"
    );
    describe_counter!(
        API_REQUESTS,
        "Results API requests by route template and outcome (ok or error code)"
    );
    describe_gauge!(
        FEED_LAG,
        Unit::Seconds,
        "Age of the oldest committed event the feed cannot show yet (held back by an older open transaction); 0 when none"
    );
    describe_gauge!(
        FEED_WAITERS,
        "Long-polls of GET /v1/events waiting for an event (no database connection held)"
    );
    describe_counter!(
        QUEUE_FULL,
        "Deliveries refused with 503 because the write queue was full"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed on arrival because server.max_connections were open"
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines dropped because the log output could not keep up"
    );
    describe_counter!(
        SEAL_FAILURES,
        "Payloads that could not be sealed (encrypted)"
    );
    describe_gauge!(
        SPOOL_DEPTH,
        "Deliveries in this replica's spool, waiting for the database"
    );
    describe_counter!(
        SPOOLED,
        "Deliveries committed to the spool because the database could not take them"
    );
    describe_counter!(SPOOL_DRAINED, "Spooled deliveries moved into the database");
    describe_counter!(
        QUARANTINED,
        "Signed deliveries refused with a 4xx and kept in quarantine, by reason"
    );
    describe_counter!(
        API_REQUESTS,
        "Results API requests by route and outcome (ok or an error code)"
    );
    describe_gauge!(
        FEED_LAG,
        Unit::Seconds,
        "Age of the oldest committed event not yet visible to the feed (0 when none)"
    );
    describe_counter!(
        FORWARD_SENT,
        "Messages a destination confirmed, by destination"
    );
    describe_counter!(
        FORWARD_FAILURES,
        "Failed sends to a destination (retried with backoff), by destination and reason"
    );
    describe_counter!(
        FORWARD_DEAD,
        "Messages a destination refused for good (dead letters)"
    );
    describe_gauge!(
        FORWARD_LAG_EVENTS,
        "Stored events a destination has not confirmed yet"
    );
    describe_gauge!(
        FORWARD_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest stored event a destination has not confirmed (0 when none)"
    );
    describe_counter!(
        FORWARD_MISSED,
        "Events purged by retention before the destination forwarded them"
    );
}

/// Adds `n` to a forwarding counter of `destination`.
pub fn counter_forward(metric: &'static str, destination: &str, n: u64) {
    metrics::counter!(metric, "destination" => destination.to_owned()).increment(n);
}

/// The reasons a send to a destination fails (`imggo_forward_failures_total`).
pub const FORWARD_FAILURE_REASONS: [&str; 8] = [
    "unreachable",
    "timeout",
    "status_5xx",
    "status_408",
    "status_429",
    "nack",
    "unroutable",
    "other",
];

/// Every series of a destination, at zero, so it is exported from start-up.
pub fn register_forward(destination: &str) {
    let d = || destination.to_owned();
    for metric in [FORWARD_SENT, FORWARD_DEAD, FORWARD_MISSED] {
        metrics::counter!(metric, "destination" => d()).increment(0);
    }
    for reason in FORWARD_FAILURE_REASONS {
        metrics::counter!(FORWARD_FAILURES, "destination" => d(), "reason" => reason).increment(0);
    }
    metrics::gauge!(FORWARD_LAG_EVENTS, "destination" => d()).set(0.0);
    metrics::gauge!(FORWARD_LAG_SECONDS, "destination" => d()).set(0.0);
}

/// Retention purged events some destinations had not forwarded yet: counted
/// and logged, never silent (CONTRACT §11). A failed count is logged only:
/// the purge goes on.
pub fn forward_missed<E: std::fmt::Display>(missed: Result<Vec<(String, u64)>, E>) {
    match missed {
        Ok(missed) => {
            for (destination, n) in missed {
                tracing::warn!(
                    destination = %destination,
                    missed = n,
                    "retention purges events this destination has not forwarded"
                );
                metrics::counter!(FORWARD_MISSED, "destination" => destination).increment(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count events purged before forwarding"),
    }
}

/// Codes the webhook route never answers with: `not_found` is the
/// router's; the rest are the Results API's (tokens, cursors, query
/// parameters), on its own listener.
const NOT_FROM_THE_WEBHOOK: [ErrorCode; 4] = [
    ErrorCode::NotFound,
    ErrorCode::Unauthorized,
    ErrorCode::InvalidCursor,
    ErrorCode::InvalidParameter,
];

/// Outcomes of the webhook route: the 200 answers and every error code it
/// can answer with, so its series carry nothing it could never produce.
fn webhook_outcomes() -> impl Iterator<Item = Outcome> {
    [Outcome::Received, Outcome::Duplicate].into_iter().chain(
        ErrorCode::ALL
            .into_iter()
            .filter(|c| !NOT_FROM_THE_WEBHOOK.contains(c))
            .map(Outcome::Refused),
    )
}

/// The Results API's route templates.
const API_ROUTES: &[&str] = &[
    "/v1/events",
    "/v1/jobs/{job_id}",
    "/v1/erasure",
    "/v1/openapi.json",
];

/// Creates every series alerts and dashboards read, at zero, before any
/// traffic: a series that appears only with its first event leaves
/// `rate()` with nothing to compare and `absent()` firing until then.
/// Registering never resets a value already recorded.
fn register_at_zero(webhook_path: &str) {
    use metrics::{counter, gauge, histogram};
    // Registering a handle is what creates the series; nothing is recorded.
    for outcome in webhook_outcomes() {
        let outcome = outcome.as_str();
        let _ = counter!(REQUESTS, "route" => webhook_path.to_owned(), "outcome" => outcome);
        let _ = histogram!(WEBHOOK_DURATION, "outcome" => outcome);
    }
    for name in [
        EVENTS_STORED,
        DUPLICATES,
        ALLOWLIST_DENIALS,
        RATE_LIMITED,
        PURGE_ROWS,
        QUEUE_FULL,
        CONNECTIONS_REFUSED,
        LOG_LINES_DROPPED,
        SEAL_FAILURES,
        SPOOLED,
        SPOOL_DRAINED,
    ] {
        let _ = counter!(name);
    }
    for reason in ["missing", "invalid"] {
        let _ = counter!(SIGNATURE_FAILURES, "reason" => reason);
    }
    for operation in ["insert", "purge"] {
        let _ = counter!(DATABASE_ERRORS, "operation" => operation);
    }
    for result in ["completed", "skipped", "failed", "dry_run"] {
        let _ = counter!(PURGE_RUNS, "result" => result);
    }
    for reason in ["invalid_json", "invalid_payload", "stale_timestamp"] {
        let _ = counter!(QUARANTINED, "reason" => reason);
    }
    for outcome in ["valid", "invalid", "unchecked"] {
        let _ = counter!(VALIDATION, "outcome" => outcome);
    }
    for &route in API_ROUTES {
        let _ = counter!(API_REQUESTS, "route" => route, "outcome" => "ok");
    }
    for name in [RATE_LIMITER_KEYS, SPOOL_DEPTH, FEED_LAG] {
        let _ = gauge!(name);
    }
    for name in [PURGE_DURATION, BATCH_SIZE] {
        let _ = histogram!(name);
    }
}

/// The series one finished request updates, for one (route, outcome).
struct RequestSeries {
    route: String,
    outcome: Outcome,
    requests: metrics::Counter,
    /// Webhook route only.
    duration: Option<metrics::Histogram>,
    /// The outcome's own counter (stored, duplicate, refused...), if any.
    outcome_total: Option<metrics::Counter>,
}

impl RequestSeries {
    fn register(route: &str, webhook: bool, outcome: Outcome) -> Self {
        let outcome_total = match outcome {
            _ if !webhook => None,
            Outcome::Received => Some(metrics::counter!(EVENTS_STORED)),
            Outcome::Duplicate => Some(metrics::counter!(DUPLICATES)),
            Outcome::Refused(ErrorCode::MissingSignature) => {
                Some(metrics::counter!(SIGNATURE_FAILURES, "reason" => "missing"))
            }
            Outcome::Refused(ErrorCode::InvalidSignature) => {
                Some(metrics::counter!(SIGNATURE_FAILURES, "reason" => "invalid"))
            }
            Outcome::Refused(ErrorCode::Forbidden) => Some(metrics::counter!(ALLOWLIST_DENIALS)),
            Outcome::Refused(ErrorCode::RateLimited) => Some(metrics::counter!(RATE_LIMITED)),
            _ => None,
        };
        let label = outcome.as_str();
        Self {
            route: route.to_owned(),
            outcome,
            requests: metrics::counter!(REQUESTS, "route" => route.to_owned(), "outcome" => label),
            duration: webhook.then(|| metrics::histogram!(WEBHOOK_DURATION, "outcome" => label)),
            outcome_total,
        }
    }

    fn record(&self, latency: Duration) {
        self.requests.increment(1);
        if let Some(h) = &self.duration {
            h.record(latency.as_secs_f64());
        }
        if let Some(c) = &self.outcome_total {
            c.increment(1);
        }
    }
}

thread_local! {
    /// Handles of the (route, outcome) pairs this thread has seen: a handle
    /// updates its series without the registry's key build, hash and lookup
    /// (three per webhook request). Routes and outcomes are small bounded
    /// sets, so this stays a few entries.
    static SERIES: RefCell<Vec<RequestSeries>> = const { RefCell::new(Vec::new()) };
}

/// Records one finished request.
pub fn record_request(route: &str, webhook: bool, outcome: Outcome, latency: Duration) {
    // Handles taken before the recorder is installed would stay no-ops.
    if HANDLE.get().is_none() {
        RequestSeries::register(route, webhook, outcome).record(latency);
        return;
    }
    SERIES.with(|series| {
        let mut series = series.borrow_mut();
        let found = series
            .iter()
            .position(|s| s.outcome == outcome && s.route == route);
        let i = found.unwrap_or_else(|| {
            series.push(RequestSeries::register(route, webhook, outcome));
            series.len() - 1
        });
        series[i].record(latency);
    });
}

/// Records one finished Results API request (route template, outcome code).
pub fn record_api_request(route: &str, outcome: Outcome) {
    metrics::counter!(API_REQUESTS, "route" => route.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

pub fn database_error(operation: &'static str) {
    metrics::counter!(DATABASE_ERRORS, "operation" => operation).increment(1);
}

/// Keeps histogram memory bounded (metrics-exporter-prometheus needs this
/// called periodically when nothing scrapes for a while).
pub async fn upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            () = shutdown.cancelled() => return,
        }
    }
}
