//! The webhook route (`webhook.path`): the pipeline a delivery walks
//! through, cheapest check first — client IP, allowlist, rate limit, body
//! size, signature, JSON, payload fields, timestamp, then redact, seal and
//! store. Unauthenticated bytes are never parsed as JSON.
//!
//! The route is one function, not a stack of tower layers: the accept loop
//! hands it every request for the path ([`super::PublicService`]), and it
//! does what the router's layers do for the other routes (request id, client
//! IP, timeout, access line) inline. Under a burst of deliveries the layers'
//! per-request boxing and state clones were a tenth of the receiver's CPU.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::access_log::AccessLine;
use super::{client_request_id, AppState, REQUEST_ID_HEADER};
use crate::delivery::{check_freshness, Delivery};
use crate::error::{AppError, Outcome};
use crate::security::rate_limit::Admitted;
use crate::security::{SignatureError, SIGNATURE_HEADER};
use crate::store::{InsertOutcome, SubmitError};

/// Serves one request for the webhook path, whatever its method.
pub async fn handle<B>(state: AppState, peer: SocketAddr, req: Request<B>) -> Response
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let request_id = client_request_id(&parts.headers)
        .cloned()
        .unwrap_or_else(new_request_id);
    let client_ip = state.client_ip.resolve(peer.ip(), &parts.headers);

    let mut ids = None;
    let mut res = match admit(&state, client_ip) {
        Err(e) => e.into_response(),
        Ok(_) if parts.method != Method::POST => {
            let mut res = AppError::MethodNotAllowed.into_response();
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            res
        }
        Ok(quota) => {
            let deadline = state.settings.server.request_timeout;
            let processed =
                tokio::time::timeout(deadline, process(&state, &parts.headers, body, &mut ids))
                    .await
                    .unwrap_or(Err(AppError::Timeout));
            let mut res = match processed {
                Ok(outcome) => stored(outcome),
                Err(e) => e.into_response(),
            };
            let headers = res.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
            res
        }
    };

    AccessLine {
        request_id: request_id.to_str().unwrap_or(""),
        method: &parts.method,
        route: &state.settings.webhook.path,
        client_ip: Some(client_ip),
        ids: ids
            .as_ref()
            .map(|(j, e): &(String, String)| (j.as_str(), e.as_str())),
        outcome: res.extensions().get::<Outcome>().map_or("ok", |o| o.0),
        status: res.status().as_u16(),
        elapsed: start.elapsed(),
        webhook: true,
    }
    .emit();
    res.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    res
}

/// Allowlist, then rate limit: who may send at all, before any body is read.
fn admit(state: &AppState, client_ip: std::net::IpAddr) -> Result<Admitted, AppError> {
    if !state.allowlist.allows(client_ip) {
        return Err(AppError::Forbidden);
    }
    state.rate_limit.check(client_ip)
}

/// The 200 answer; its body is a constant.
fn stored(outcome: InsertOutcome) -> Response {
    let (label, body) = match outcome {
        InsertOutcome::Inserted => ("received", r#"{"status":"received"}"#),
        InsertOutcome::Duplicate => ("duplicate", r#"{"status":"duplicate"}"#),
    };
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.extensions_mut().insert(Outcome(label));
    res
}

/// A request id for a request that came without one (a random UUID).
fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn process<B>(
    state: &AppState,
    headers: &HeaderMap,
    body: B,
    ids: &mut Option<(String, String)>,
) -> Result<InsertOutcome, AppError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body = read_body(headers, body, state.settings.server.max_body_bytes).await?;

    let mut signatures = headers.get_all(SIGNATURE_HEADER).iter();
    let signature = signatures.next().map(|v| v.as_bytes());
    if signatures.next().is_some() {
        // One delivery has one signature; two headers are someone's experiment.
        return Err(AppError::InvalidSignature);
    }
    state
        .verifier
        .verify(signature, &body)
        .map_err(|e| match e {
            SignatureError::Missing => AppError::MissingSignature,
            SignatureError::Invalid => AppError::InvalidSignature,
        })?;

    let delivery = Delivery::parse(&body)?;
    *ids = Some((
        delivery.envelope.job_id.clone(),
        delivery.envelope.event.clone(),
    ));
    check_freshness(
        &delivery.body,
        state.settings.webhook.max_timestamp_age,
        chrono::Utc::now(),
    )?;
    let row = delivery.seal(&state.subjects, &state.redactor, &state.keys);
    drop(body);

    state.writer.submit(row).await.map_err(|e| {
        // The access line records the 503 with its job_id; the writer
        // logs the cause once per batch. A full queue has only its metric:
        // a line per refusal would double the log exactly under overload.
        if e == SubmitError::QueueFull {
            metrics::counter!(crate::metrics::QUEUE_FULL).increment(1);
        }
        AppError::Unavailable
    })
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
