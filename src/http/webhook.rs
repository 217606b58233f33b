//! The webhook route (`webhook.path`): the pipeline a delivery walks
//! through, cheapest check first — client IP, allowlist, rate limit, body
//! size, signature, JSON, payload fields, timestamp, then redact, seal and
//! store. Unauthenticated bytes are never parsed as JSON.
//!
//! The route is one function, not a stack of tower layers: the accept loop
//! hands it every request for the path ([`super::PublicService`]), and it
//! calls the request pipeline's functions (request id, client IP, timeout,
//! access line: [`super::pipeline`]) itself. Under a burst of deliveries the
//! layers' per-request boxing and state clones were a tenth of the
//! receiver's CPU.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::pipeline::{within_timeout, Served, Started};
use super::AppState;
use crate::error::{AppError, Outcome};
use crate::event::{Envelope, InsertOutcome};
use crate::ingest::{Accepted, Meta, Reason, Refusal};
use crate::security::rate_limit::Admitted;
use crate::security::{SignatureError, SIGNATURE_HEADER};

/// Serves one request for the webhook path, whatever its method.
pub async fn handle<B>(state: AppState, peer: SocketAddr, req: Request<B>) -> Response
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let started = Started::new(&state, peer.ip(), &parts.headers);
    let (mut res, envelope) = match admit(&state, started.client_ip, &parts) {
        Err(AppError::MethodNotAllowed) => {
            let mut res = AppError::MethodNotAllowed.into_response();
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            (res, None)
        }
        Err(e) => (e.into_response(), None),
        Ok(quota) => {
            let request_id = started.request_id.to_str().unwrap_or("");
            let processed = within_timeout(
                state.settings.server.request_timeout,
                process(&state, &parts.headers, body, request_id),
            )
            .await;
            let (mut res, envelope) = match processed {
                Ok((outcome, envelope)) => (stored(outcome), Some(envelope)),
                Err(Refused { error, envelope }) => (error.into_response(), envelope),
            };
            let headers = res.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
            (res, envelope)
        }
    };
    let route = &state.settings.webhook.path;
    started.finish(
        &parts.method,
        route,
        Served::Webhook,
        envelope.as_ref(),
        &mut res,
    );
    res
}

/// Who may send at all, before any body is read: the allowlist for every
/// method; then only a POST, which can carry a delivery, draws on the
/// client's rate limit (a scanner's GETs must not spend a sender's allowance).
fn admit(state: &AppState, client_ip: IpAddr, parts: &Parts) -> Result<Admitted, AppError> {
    if !state.gate.allowlist.allows(client_ip) {
        return Err(AppError::Forbidden);
    }
    if parts.method != Method::POST {
        return Err(AppError::MethodNotAllowed);
    }
    state.gate.rate_limit.check(client_ip)
}

/// The 200 answer; its body is a constant.
fn stored(outcome: InsertOutcome) -> Response {
    let (label, body) = match outcome {
        InsertOutcome::Inserted => (Outcome::Received, r#"{"status":"received"}"#),
        InsertOutcome::Duplicate => (Outcome::Duplicate, r#"{"status":"duplicate"}"#),
    };
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.extensions_mut().insert(label);
    res
}

/// A delivery refused, with its envelope when it was read that far.
struct Refused {
    error: AppError,
    envelope: Option<Envelope>,
}

impl From<AppError> for Refused {
    fn from(error: AppError) -> Self {
        Self {
            error,
            envelope: None,
        }
    }
}

/// Body → signature, then ingest (JSON → envelope → timestamp → redact,
/// seal → store).
/// Returns what storing did and the delivery's envelope.
async fn process<B>(
    state: &AppState,
    headers: &HeaderMap,
    body: B,
    request_id: &str,
) -> Result<(InsertOutcome, Envelope), Refused>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body = read_body(headers, body, state.settings.server.max_body_bytes).await?;

    let mut signatures = headers.get_all(SIGNATURE_HEADER).iter();
    let signature = signatures.next().map(|v| v.as_bytes());
    if signatures.next().is_some() {
        // One delivery has one signature; two headers are someone's experiment.
        return Err(AppError::InvalidSignature.into());
    }
    state
        .gate
        .verifier
        .verify(signature, &body)
        .map_err(|e| match e {
            SignatureError::Missing => AppError::MissingSignature,
            SignatureError::Invalid => AppError::InvalidSignature,
        })?;

    // From here the body is genuine: ingest stores it, or keeps it in
    // quarantine when validation refuses it.
    let meta = Meta { request_id };
    match state.ingest.accept(body, &meta).await {
        Ok(Accepted { outcome, envelope }) => Ok((outcome, envelope)),
        Err(Refusal { reason, envelope }) => Err(Refused {
            error: match reason {
                Reason::Invalid(error) => error,
                Reason::Unsealable => AppError::Internal,
                Reason::Unavailable => AppError::Unavailable,
            },
            envelope: envelope.map(|e| *e),
        }),
    }
}

/// Reads the body once, refusing it as soon as it passes `limit` (declared
/// or actual: a chunked body has no Content-Length to trust).
async fn read_body<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, AppError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AppError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(AppError::PayloadTooLarge { limit })
        }
        Err(e) => {
            tracing::debug!(error = %e, "request body could not be read");
            Err(AppError::BadBody)
        }
    }
}
