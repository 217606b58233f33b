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

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use super::AppState;
use crate::error::AppError;
use crate::feed::{CursorForm, FeedWatch};

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

/// One event in the API's shape, on one line (what `export` prints).
pub fn render_event_line(
    out: &mut Vec<u8>,
    keys: &crate::crypto::KeyRing,
    form: CursorForm,
    event: &crate::store::FeedEvent,
) -> Result<(), AppError> {
    let start = out.len();
    render::write_event(out, keys, form, event.position, &event.row)?;
    // A payload stored as it was sent may have line breaks between its
    // tokens (strings escape theirs): a line needs it written compactly.
    if out[start..].iter().any(|b| matches!(b, b'\n' | b'\r')) {
        let line = out.split_off(start);
        let tree = crate::json::Json::parse(&line).map_err(|_| AppError::Internal)?;
        tree.write_to(out);
    }
    Ok(())
}

/// The API router with its layers.
pub fn router(state: ApiState) -> Router {
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
        // The public listener's request pipeline: request id, client IP,
        // `api.request_timeout`, the access line and the API's metrics.
        .layer(middleware::from_fn_with_state(
            state.app.clone(),
            super::pipeline::api_layer,
        ))
        .with_state(state)
}
