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
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::pipeline::{within_timeout, Served, Started};
use super::AppState;
use crate::delivery::{check_freshness, Delivery};
use crate::error::{AppError, Outcome};
use crate::event::NewEvent;
use crate::event::{Envelope, InsertOutcome};
use crate::security::rate_limit::Admitted;
use crate::security::{SignatureError, SIGNATURE_HEADER};
use crate::spool::{Spool, SpoolError};
use crate::store::quarantine::NewQuarantined;
use crate::store::SubmitError;

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

/// Body → signature → JSON → envelope → timestamp → redact, seal → store.
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

    // From here the body is genuine: a refusal keeps it in quarantine.
    let delivery = match Delivery::parse(&body) {
        Ok(delivery) => delivery,
        Err(error) => {
            quarantine(state, &body, &error, request_id).await;
            return Err(error.into());
        }
    };
    let envelope = delivery.envelope.clone();
    let refused = |error| Refused {
        error,
        envelope: Some(envelope.clone()),
    };
    let age = state.settings.webhook.max_timestamp_age;
    if let Err(error) = check_freshness(&delivery.body, age, chrono::Utc::now()) {
        drop(delivery);
        quarantine(state, &body, &error, request_id).await;
        return Err(refused(error));
    }
    let ingest = &state.ingest;
    // Before redaction: the schema describes the data as extracted.
    let verdict = delivery.verdict(&ingest.schemas);
    let mut row = delivery.seal(&ingest.subjects, &ingest.redactor, &ingest.keys).map_err(|e| {
        tracing::error!(error = %e, job_id = %envelope.job_id, "the payload could not be sealed");
        metrics::counter!(crate::metrics::SEAL_FAILURES).increment(1);
        refused(AppError::Internal)
    })?;
    drop(body);
    let outcome_label = crate::validation::outcome(&verdict);
    row.verdict = verdict;

    let outcome = ingest.commit(row).await.map_err(refused)?;
    metrics::counter!(crate::metrics::VALIDATION, "outcome" => outcome_label).increment(1);
    Ok((outcome, envelope))
}

impl super::Ingest {
    /// How long a write waits for Postgres: `commit_deadline` with a spool
    /// to go to instead, else as long as the request may take.
    fn commit_wait(&self) -> Duration {
        match self.spool {
            Some(_) => self.commit_deadline,
            None => Duration::MAX,
        }
    }

    /// Commits a sealed delivery: to Postgres through the batch writers, or
    /// to the spool while it is active, when the writers could not commit
    /// it, or when Postgres has not answered within `commit_deadline`.
    /// 503 only when neither can.
    async fn commit(&self, row: NewEvent) -> Result<InsertOutcome, AppError> {
        let spool = match &self.spool {
            Some(spool) if spool.is_active() => return to_spool(spool, row).await,
            spool => spool.as_ref(),
        };
        // Shared with the writer, not copied: the spool may need it back.
        let row = Arc::new(row);
        let answer = self.writer.submit(Arc::clone(&row));
        let refused = match tokio::time::timeout(self.commit_wait(), answer).await {
            Ok(Ok(outcome)) => return Ok(outcome),
            Ok(Err(reason)) => Some(reason),
            Err(_) => None, // no answer in time: a database that hangs
        };
        // The writer logs a failed batch once; a full queue has only its
        // metric: a line per refusal would double the log under overload.
        if refused == Some(SubmitError::QueueFull) {
            metrics::counter!(crate::metrics::QUEUE_FULL).increment(1);
        }
        let Some(spool) = spool else {
            return Err(AppError::Unavailable);
        };
        match refused {
            Some(SubmitError::QueueFull) => {}
            Some(_) => spool.database_failed(),
            None => {
                if !spool.is_active() {
                    tracing::warn!(
                        deadline = ?self.commit_deadline,
                        "Postgres did not commit in time; deliveries go to the spool"
                    );
                }
                spool.database_failed();
            }
        }
        // Should a hung batch commit after all, the drainer finds the row
        // in Postgres and it answers duplicate.
        let row = Arc::try_unwrap(row).unwrap_or_else(|shared| NewEvent::clone(&shared));
        to_spool(spool, row).await
    }
}

async fn to_spool(spool: &Spool, row: NewEvent) -> Result<InsertOutcome, AppError> {
    spool.submit(row).await.map_err(|e| {
        if !matches!(e, SpoolError::Full) {
            tracing::error!(error = %e, "a delivery could not be spooled");
        }
        AppError::Unavailable
    })
}

/// Keeps a genuine delivery refused by validation in quarantine
/// (CONTRACT §10): in the database, or in the spool while it is active or
/// when the database cannot take it. It keeps its 4xx either way: a
/// quarantine row that neither can keep is logged with the request id
/// (never silently dropped).
async fn quarantine(state: &AppState, body: &[u8], error: &AppError, request_id: &str) {
    let Some(reason) = crate::quarantine::reason(error) else {
        return;
    };
    let ingest = &state.ingest;
    let row = match crate::quarantine::seal(
        body,
        reason,
        request_id,
        &ingest.subjects,
        &ingest.redactor,
        &ingest.keys,
    ) {
        Ok(row) => row,
        Err(error) => {
            metrics::counter!(crate::metrics::SEAL_FAILURES).increment(1);
            return tracing::error!(
                %error, reason, request_id,
                "a genuine delivery was refused and could not be sealed for quarantine"
            );
        }
    };
    let spool = ingest.spool.as_ref();
    let kept = match spool.filter(|s| s.is_active()) {
        // A database found down is not waited on again.
        Some(spool) => spool_quarantined(spool, &row).await,
        None => match quarantine_within(state, &row).await {
            Ok(Some(id)) => Ok(Kept::Quarantined(id)),
            Ok(None) => Ok(Kept::Erased),
            Err(error) => match spool {
                Some(spool) => {
                    tracing::warn!(%error, request_id, "quarantine row goes to the spool");
                    spool.database_failed();
                    spool_quarantined(spool, &row).await
                }
                None => Err(error.to_string()),
            },
        },
    };
    match kept {
        Ok(Kept::Quarantined(id)) => {
            metrics::counter!(crate::metrics::QUARANTINED, "reason" => reason).increment(1);
            tracing::info!(
                id,
                reason,
                request_id,
                "refused delivery kept in quarantine"
            );
        }
        Ok(Kept::Spooled) => {
            metrics::counter!(crate::metrics::QUARANTINED, "reason" => reason).increment(1);
            tracing::info!(
                reason,
                request_id,
                "refused delivery kept in the spool, for quarantine once Postgres answers"
            );
        }
        Ok(Kept::Erased) => tracing::info!(
            reason,
            request_id,
            "refused delivery not kept: its data subject was erased while it was stored"
        ),
        Err(error) => tracing::error!(
            %error, reason, request_id,
            "a genuine delivery was refused and could not be kept in quarantine"
        ),
    }
}

/// Where a refused delivery went.
enum Kept {
    Quarantined(i64),
    /// In the spool, for the quarantine once Postgres answers.
    Spooled,
    /// Nowhere: an erasure of its subject ran while it was being stored.
    Erased,
}

/// The quarantine insert; with a spool, bounded by `commit_deadline` as a
/// delivery's commit is: a database that hangs must not turn the refusal
/// into a timeout (and the row into nothing).
async fn quarantine_within(state: &AppState, row: &NewQuarantined) -> Result<Option<i64>, String> {
    let insert = state
        .store
        .quarantine(row, state.settings.quarantine.max_rows);
    let deadline = state.ingest.commit_wait();
    match tokio::time::timeout(deadline, insert).await {
        Ok(kept) => kept.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no commit within {deadline:?}")),
    }
}

/// A quarantine row kept in the spool until Postgres takes it (no id yet).
async fn spool_quarantined(spool: &Spool, row: &NewQuarantined) -> Result<Kept, String> {
    spool
        .keep_quarantined(row)
        .await
        .map(|()| Kept::Spooled)
        .map_err(|e| e.to_string())
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
