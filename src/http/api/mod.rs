//! The Results API (CONTRACT §9): how the team's own services read and
//! delete stored results. Its own router, on its own listener (`api.bind`,
//! never the public webhook listener), with its own timeout and connection
//! cap; bearer tokens turn into a [`auth::Caller`] before any handler runs.
//! One file per resource: `events` (the feed), `jobs`, `erasure`,
//! `openapi`; `render` writes events as JSON.

pub mod auth;
mod erasure;
mod events;
mod jobs;
pub mod openapi;
mod render;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use super::{AppState, REQUEST_ID_HEADER};
use crate::error::{AppError, Outcome};
use crate::feed::{CursorForm, FeedWatch};
use crate::security::ClientIp;

/// What API handlers share: the application's services and the feed.
#[derive(Clone)]
pub struct ApiState(Arc<ApiServices>);

pub struct ApiServices {
    pub app: AppState,
    /// The feed head, for long-polls.
    pub feed: FeedWatch,
    /// The cursor form of the configured store.
    pub form: CursorForm,
    /// `imggo_feed_waiters{listener}`: long-polls waiting on this listener.
    pub waiters: metrics::Gauge,
}

impl ApiState {
    /// `listener`: the API's bound address (labels its waiters gauge, so
    /// several listeners in one process are told apart).
    pub fn new(app: AppState, feed: FeedWatch, listener: String) -> Self {
        let form = CursorForm::of(&app.store);
        let waiters = metrics::gauge!(crate::metrics::FEED_WAITERS, "listener" => listener);
        Self(Arc::new(ApiServices {
            app,
            feed,
            form,
            waiters,
        }))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiServices;

    fn deref(&self) -> &ApiServices {
        &self.0
    }
}

/// One event in the API's shape (what `export` prints per line).
pub fn render_event_line(
    out: &mut Vec<u8>,
    keys: &crate::crypto::KeyRing,
    form: CursorForm,
    event: &crate::store::FeedEvent,
) -> Result<(), AppError> {
    render::write_event(out, keys, form, event.position, &event.row)
}

/// The API router with its layers.
pub fn router(state: ApiState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    Router::new()
        .route("/v1/events", get(events::list))
        .route("/v1/jobs/{job_id}", get(jobs::get).delete(jobs::delete))
        .route(
            "/v1/erasure",
            post(erasure::erase).layer(axum::extract::DefaultBodyLimit::max(
                erasure::MAX_BODY_BYTES,
            )),
        )
        .route("/v1/openapi.json", get(openapi::document))
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        .layer(middleware::from_fn(track))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            resolve_client_ip,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn(super::drop_unusable_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
        ]))
        .with_state(state)
}

/// The client IP (through the same trusted-proxy rule as the public
/// listener), for audit records and the access line.
async fn resolve_client_ip(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let ip = state.app.client_ip.resolve(peer, req.headers());
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// Cuts requests off after `api.request_timeout` (a long-poll ends before).
async fn request_timeout(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.app.settings.api.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => AppError::Timeout.into_response(),
    }
}

/// One access line per API request (never the Authorization header, the
/// query string or a body) and `imggo_api_requests_total{route,outcome}`.
async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", |p| p.as_str())
        .to_owned();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let client_ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    let method = req.method().clone();
    let res = next.run(req).await;
    let outcome = res.extensions().get::<Outcome>().map_or("ok", |o| o.0);
    let status = res.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "imggo_receiver::access",
                $level,
                request_id = request_id.as_str(),
                method = method.as_str(),
                route = route.as_str(),
                client_ip = client_ip.map(tracing::field::display),
                outcome,
                status,
                latency_ms,
                "api request finished"
            )
        };
    }
    match status {
        500.. => line!(tracing::Level::ERROR),
        400.. => line!(tracing::Level::WARN),
        _ => line!(tracing::Level::INFO),
    }
    crate::metrics::record_api_request(&route, outcome);
    res
}
