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
mod schema;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::crypto::KeyRing;
use crate::error::AppError;
use crate::feed::{CursorForm, FeedWatch};
use crate::store::{SchemaReady, Store};
use crate::subjects::SubjectKey;

/// What API handlers share. Each handler takes only the sub-states it
/// needs (axum's `FromRef`), never the whole application.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub reader: EventReader,
    pub waits: FeedWaits,
    /// Hashes an erasure's value as the subject index does.
    pub subjects: SubjectKey,
}

/// How stored events are read back: the store, the keys that open them and
/// the store's cursor form.
#[derive(Clone)]
pub struct EventReader {
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub form: CursorForm,
}

/// What a long-poll waits on.
#[derive(Clone)]
pub struct FeedWaits {
    /// The feed head, published by the application's feed watcher.
    pub feed: FeedWatch,
    /// `imggo_feed_waiters{listener}`: long-polls waiting on this listener.
    pub waiters: metrics::Gauge,
    /// The longest wait, so the request itself does not time out first.
    pub ceiling: Duration,
    /// Ends every wait when the process starts shutting down.
    pub shutdown: CancellationToken,
}

impl ApiState {
    /// `listener`: the API's bound address (labels its waiters gauge, so
    /// several listeners in one process are told apart).
    pub fn new(app: &AppState, feed: FeedWatch, listener: String) -> Self {
        let waiters = metrics::gauge!(crate::metrics::FEED_WAITERS, "listener" => listener);
        Self {
            store: app.store.clone(),
            reader: EventReader {
                store: app.store.clone(),
                keys: app.ingest.pipeline.keys.clone(),
                form: CursorForm::of(&app.store),
            },
            waits: FeedWaits {
                feed,
                waiters,
                ceiling: app
                    .settings
                    .api
                    .request_timeout
                    .saturating_sub(Duration::from_secs(1)),
                shutdown: app.shutdown.clone(),
            },
            subjects: app.ingest.pipeline.subjects.key.clone(),
        }
    }
}

impl FromRef<ApiState> for Store {
    fn from_ref(state: &ApiState) -> Self {
        state.store.clone()
    }
}

impl FromRef<ApiState> for EventReader {
    fn from_ref(state: &ApiState) -> Self {
        state.reader.clone()
    }
}

impl FromRef<ApiState> for FeedWaits {
    fn from_ref(state: &ApiState) -> Self {
        state.waits.clone()
    }
}

impl FromRef<ApiState> for SubjectKey {
    fn from_ref(state: &ApiState) -> Self {
        state.subjects.clone()
    }
}

/// The API router with its layers.
/// `app` serves the request pipeline (request id, client IP, access line);
/// handlers see only `state`.
pub fn router(app: AppState, state: ApiState) -> Router {
    Router::new()
        .route("/v1/events", get(events::list))
        .route("/v1/jobs/{job_id}", get(jobs::get).delete(jobs::delete))
        .route(
            "/v1/erasure",
            post(erasure::erase).layer(axum::extract::DefaultBodyLimit::max(
                erasure::MAX_BODY_BYTES,
            )),
        )
        // The routes above read the database (tokens too): 503 until it
        // is connected and migrated; the document below needs none.
        .route_layer(middleware::from_fn_with_state(
            app.schema.clone(),
            until_schema_ready,
        ))
        .route("/v1/openapi.json", get(openapi::document))
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        // The public listener's request pipeline: request id, client IP,
        // `api.request_timeout`, the access line and the API's metrics.
        .layer(middleware::from_fn_with_state(
            app,
            super::pipeline::api_layer,
        ))
        .with_state(state)
}

/// Answers `503 unavailable` while the server waits for the database it
/// started without (CONTRACT §8), before any token is looked up.
async fn until_schema_ready(
    axum::extract::State(schema): axum::extract::State<SchemaReady>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    if !schema.is_ready() {
        return axum::response::IntoResponse::into_response(AppError::StoreUnavailable);
    }
    next.run(req).await
}
