//! What every request on the public listener goes through, however it is
//! served: a request id (the client's when usable, else a fresh UUID), the
//! client IP (resolved once), the request timeout, and at the end one
//! access line and the request's metrics.
//!
//! The webhook route calls these functions directly from its one handler
//! (see `webhook`: a stack of tower layers cost a tenth of the receiver's
//! CPU under a burst); every other route gets the same functions as one
//! router middleware, [`layer`].

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::access_log::AccessLine;
use super::AppState;
use crate::error::{AppError, Outcome};
use crate::event::Envelope;
use crate::security::ClientIp;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id kept from a client (a UUID is 36 bytes).
const MAX_REQUEST_ID_LEN: usize = 128;

/// Which listener and route family a request was served on: decides its
/// metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The webhook route (delivery metrics).
    Webhook,
    /// Any other route of the public listener.
    Public,
    /// The Results API listener.
    Api,
}

/// A request as first seen: who sent it, its id, and when it started.
pub struct Started {
    pub request_id: HeaderValue,
    pub client_ip: IpAddr,
    at: Instant,
}

impl Started {
    /// Takes the request's id and resolves its client IP from the TCP peer
    /// and (from trusted proxies only) `X-Forwarded-For`.
    pub fn new(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> Self {
        Self {
            request_id: client_request_id(headers)
                .cloned()
                .unwrap_or_else(new_request_id),
            client_ip: state.gate.client_ip.resolve(peer, headers),
            at: Instant::now(),
        }
    }

    /// Writes the access line, records the metrics, and sets the
    /// response's `x-request-id`. `envelope` is set once a delivery's
    /// envelope was read.
    pub fn finish(
        self,
        method: &Method,
        route: &str,
        served: Served,
        envelope: Option<&Envelope>,
        res: &mut Response,
    ) {
        let outcome = res
            .extensions()
            .get::<Outcome>()
            .copied()
            .unwrap_or(Outcome::Ok);
        let elapsed = self.at.elapsed();
        AccessLine {
            request_id: self.request_id.to_str().unwrap_or(""),
            method,
            route,
            client_ip: self.client_ip,
            envelope,
            outcome,
            status: res.status().as_u16(),
            elapsed,
        }
        .write();
        match served {
            Served::Api => crate::metrics::record_api_request(route, outcome),
            _ => crate::metrics::record_request(route, served == Served::Webhook, outcome, elapsed),
        }
        res.headers_mut().insert(REQUEST_ID_HEADER, self.request_id);
    }
}

/// Runs `work` within `timeout` (slow bodies included).
pub async fn within_timeout<T, E: From<AppError>>(
    timeout: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(AppError::Timeout.into()))
}

/// The pipeline as a router middleware, for the public listener's routes
/// but the webhook's.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let timeout = state.settings.server.request_timeout;
    around(&state, timeout, Served::Public, req, next).await
}

/// The pipeline as the Results API listener's middleware: its own timeout
/// (`api.request_timeout`, above the longest long-poll) and metrics.
pub async fn api_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let timeout = state.settings.api.request_timeout;
    around(&state, timeout, Served::Api, req, next).await
}

async fn around(
    state: &AppState,
    timeout: std::time::Duration,
    served: Served,
    mut req: Request,
    next: Next,
) -> Response {
    // Without ConnectInfo (in-process tests that forget it) the request is
    // treated as coming from an unspecified address, never trusted.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |ConnectInfo(a)| {
            a.ip()
        });
    let started = Started::new(state, peer, req.headers());
    req.extensions_mut().insert(ClientIp(started.client_ip));
    // Handlers that record the request id (the audit trail) read it here.
    req.headers_mut()
        .insert(REQUEST_ID_HEADER, started.request_id.clone());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let mut res = within_timeout(timeout, async { Ok::<_, AppError>(next.run(req).await) })
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let route = route.as_deref().unwrap_or("<unmatched>");
    started.finish(&method, route, served, None, &mut res);
    res
}

/// The request id the client (or its load balancer) sent, if it is one we
/// keep: 1 to 128 visible ASCII characters holding no card number or SSN
/// (§4's value detection). Anything else would be echoed into every log
/// line, response, audit record and quarantine row; such a request gets a
/// fresh id.
pub fn client_request_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(REQUEST_ID_HEADER).filter(|v| {
        let b = v.as_bytes();
        (1..=MAX_REQUEST_ID_LEN).contains(&b.len())
            && b.iter().all(|c| (0x21..=0x7e).contains(c))
            && !v.to_str().is_ok_and(crate::redact::holds_card_or_ssn)
    })
}

/// A request id for a request that came without one (a random UUID).
fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_holding_a_card_or_ssn_is_replaced() {
        let id = |text: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(text).unwrap());
            client_request_id(&headers).is_some()
        };
        assert!(id("lb-7f3a9c01"));
        assert!(id("3f1c9a8e-1111-4000-8000-000000000001"));
        for pii in [
            "4111111111111111",
            "card-4111-1111-1111-1111",
            "123-45-6789",
        ] {
            assert!(!id(pii), "{pii} kept");
        }
    }
}
