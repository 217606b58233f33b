//! The public HTTP surface. Requests for the webhook path go straight to
//! [`webhook::handle`]; every other route is served by [`router`], behind
//! the same request pipeline ([`pipeline`]).

mod access_log;
pub mod admin;
pub mod api;
pub mod health;
pub mod pipeline;
pub mod server;
pub mod webhook;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::middleware;
use axum::response::Response;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::Settings;
use crate::error::AppError;
use crate::security::rate_limit::RateLimit;
use crate::security::{Allowlist, ClientIpResolver, SignatureVerifier};
use crate::store::{SchemaReady, Store};

pub use pipeline::REQUEST_ID_HEADER;

/// What request handlers share. Cloned per request: one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Settings, the store, and the two halves of the webhook route.
pub struct Shared {
    pub settings: Settings,
    pub store: Store,
    /// Who may deliver: the checks before a body is trusted.
    pub gate: DeliveryGate,
    /// What becomes of a verified delivery.
    pub ingest: crate::ingest::Ingest,
    /// Cancelled when the process starts shutting down (`/readyz` → 503).
    pub shutdown: CancellationToken,
    /// Set once the database is connected and migrated: a server that
    /// started while Postgres was unreachable serves from the spool until
    /// then (`/readyz`, the Results API).
    pub schema: SchemaReady,
}

/// The checks a delivery passes before its body is trusted, cheapest first.
pub struct DeliveryGate {
    pub client_ip: ClientIpResolver,
    pub allowlist: Allowlist,
    pub rate_limit: RateLimit,
    pub verifier: SignatureVerifier,
}

/// The public application router: every route but the webhook's, which
/// [`PublicService`] serves before routing.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            pipeline::layer,
        ))
        .with_state(state)
}

/// What one public connection is served by: requests for the webhook path go
/// straight to [`webhook::handle`], the rest through [`router`].
#[derive(Clone)]
pub struct PublicService {
    state: AppState,
    router: Router,
    peer: SocketAddr,
}

impl PublicService {
    /// A factory for the accept loop: one service per connection, knowing its
    /// TCP peer.
    pub fn per_connection(state: AppState) -> impl Fn(SocketAddr) -> Self + Send + 'static {
        let router = router(state.clone());
        move |peer| Self {
            state: state.clone(),
            router: router.clone(),
            peer,
        }
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for PublicService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if req.uri().path() == self.state.settings.webhook.path {
            let (state, peer) = (self.state.clone(), self.peer);
            return Box::pin(async move { Ok(webhook::handle(state, peer, req).await) });
        }
        let req = server::for_router(req, self.peer);
        Box::pin(self.router.clone().oneshot(req))
    }
}
