//! The public HTTP surface: one router per concern, merged here, with the
//! layers applied in the contract's order.

mod access_log;
pub mod admin;
pub mod api;
pub mod health;
pub mod server;
pub mod webhook;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::config::Settings;
use crate::crypto::KeyRing;
use crate::error::AppError;
use crate::redact::Redactor;
use crate::security::rate_limit::RateLimit;
use crate::security::{Allowlist, ClientIp, ClientIpResolver, SignatureVerifier, SIGNATURE_HEADER};
use crate::store::{BatchWriter, Store};
use crate::subjects::SubjectIndexer;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id kept from a client (a UUID is 36 bytes).
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id the client (or its load balancer) sent, if it is one we
/// keep: 1 to 128 visible ASCII characters. Anything else would be echoed
/// into every log line and response; such a request gets a fresh id.
pub fn client_request_id(headers: &axum::http::HeaderMap) -> Option<&axum::http::HeaderValue> {
    headers.get(REQUEST_ID_HEADER).filter(|v| {
        let b = v.as_bytes();
        (1..=MAX_REQUEST_ID_LEN).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c))
    })
}

/// Everything a request handler may need. Every stateful layer clones the
/// state per request, so it is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub settings: Settings,
    pub store: Store,
    /// Group-commit queue in front of `store` for deliveries.
    pub writer: BatchWriter,
    pub verifier: SignatureVerifier,
    pub keys: KeyRing,
    pub redactor: Redactor,
    /// Indexes each delivery's data subjects (before redaction).
    pub subjects: SubjectIndexer,
    pub client_ip: ClientIpResolver,
    pub allowlist: Allowlist,
    pub rate_limit: RateLimit,
    /// Cancelled when the process starts shutting down (`/readyz` → 503).
    pub shutdown: CancellationToken,
}

/// The public application router: every route but the webhook's, which
/// [`PublicService`] serves before routing.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    Router::new()
        .merge(health::router())
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        .layer(middleware::from_fn(access_log::log_request))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            resolve_client_ip,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn(drop_unusable_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([
            HeaderName::from_static(SIGNATURE_HEADER),
            axum::http::header::AUTHORIZATION,
        ]))
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

/// Removes a client's request id that [`client_request_id`] would not keep,
/// so the next layer makes a fresh one.
pub(crate) async fn drop_unusable_request_id(mut req: Request, next: Next) -> Response {
    if req.headers().contains_key(REQUEST_ID_HEADER) && client_request_id(req.headers()).is_none() {
        req.headers_mut().remove(REQUEST_ID_HEADER);
    }
    next.run(req).await
}

/// Resolves the client IP once; everything downstream reads [`ClientIp`].
async fn resolve_client_ip(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    // Without ConnectInfo (in-process tests that forget it) the request is
    // treated as coming from an unspecified address, never trusted.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let ip = state.client_ip.resolve(peer, req.headers());
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// Cuts off requests (slow bodies included) after `server.request_timeout`.
async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.settings.server.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => AppError::Timeout.into_response(),
    }
}
