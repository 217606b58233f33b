//! The operator listener (`admin.bind`): `/metrics` in Prometheus text
//! format. Never exposed on the public port.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::AppError;

pub fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .fallback(|| async { AppError::NotFound })
        .with_state(handle)
}

async fn render(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    // Counted by the log writer without the metrics registry (it runs
    // inside logging); published here, at scrape time.
    metrics::counter!(crate::metrics::LOG_LINES_DROPPED)
        .absolute(crate::telemetry::lines_dropped());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}
