//! `POST /webhooks/imggo`: the pipeline a delivery walks through, cheapest
//! check first. Unauthenticated bytes are never parsed as JSON.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{guards, AppState, DeliveryIds};
use crate::delivery::{check_freshness, Delivery};
use crate::error::{AppError, Outcome};
use crate::security::{SignatureError, SIGNATURE_HEADER};
use crate::store::{InsertOutcome, SubmitError};

pub fn router(state: &AppState) -> Router<AppState> {
    // Layers run outermost-last: allowlist, then rate limit, then the handler.
    Router::new().route(
        &state.settings.webhook.path,
        post(receive)
            .layer(state.rate_limit.layer())
            .layer(middleware::from_fn_with_state(
                state.clone(),
                guards::allowlist,
            )),
    )
}

async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let mut ids = None;
    let mut res = match process(&state, &headers, body, &mut ids).await {
        Ok(outcome) => {
            let (label, body) = match outcome {
                InsertOutcome::Inserted => ("received", r#"{"status":"received"}"#),
                InsertOutcome::Duplicate => ("duplicate", r#"{"status":"duplicate"}"#),
            };
            let mut res = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            res.extensions_mut().insert(Outcome(label));
            res
        }
        Err(e) => e.into_response(),
    };
    if let Some(ids) = ids {
        res.extensions_mut().insert(ids);
    }
    res
}

async fn process(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    ids: &mut Option<DeliveryIds>,
) -> Result<InsertOutcome, AppError> {
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
    *ids = Some(DeliveryIds {
        job_id: delivery.envelope.job_id.clone(),
        event: delivery.envelope.event.clone(),
    });
    check_freshness(
        &delivery.body,
        state.settings.webhook.max_timestamp_age,
        chrono::Utc::now(),
    )?;
    let row = delivery.seal(&state.redactor, &state.keys);
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
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, AppError> {
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
