//! Events as the API writes them: `{"id","cursor","job_id","event",
//! "pattern_id","status","received_at","valid","validation_errors",
//! "payload"}` with `payload` the stored (redacted)
//! body, decrypted, embedded as the JSON text it is. It is checked to be
//! one JSON value first, but never re-parsed into `serde_json::Value`:
//! stored bodies may hold escaped lone surrogates or keys that serde_json
//! treats as magic, and must come out exactly as they went in.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::ToSchema;

use crate::crypto::KeyRing;
use crate::error::AppError;
use crate::feed::{self, CursorForm, Position};
use crate::json::{escape_str, Json};
use crate::store::StoredEvent;
use crate::validation::Verdict;

/// One stored event: the schema of what [`write_event`] writes.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ApiEvent {
    /// Unique per stored event; never changes (a consumer's dedup key).
    pub id: String,
    /// Pass as `after` to continue the feed from just after this event.
    pub cursor: String,
    pub job_id: String,
    pub event: String,
    /// Always present; `null` when the delivery had none.
    #[schema(required = true)]
    pub pattern_id: Option<String>,
    /// Always present; `null` when the delivery had none.
    #[schema(required = true)]
    pub status: Option<String>,
    /// RFC 3339, UTC, microseconds.
    pub received_at: String,
    /// Present (`true`) only when the body was supplied by an operator
    /// (`rejected replay ID --body FILE`) instead of the one ImgGo signed.
    pub operator_supplied: Option<bool>,
    /// The verdict of the pattern's JSON Schema on the extracted data:
    /// `null` when the pattern has no schema.
    #[schema(required = true)]
    pub valid: Option<bool>,
    /// Why it is not valid (at most 20); empty otherwise.
    pub validation_errors: Vec<ApiValidationError>,
    /// The delivery body as stored (after redaction), decrypted.
    #[schema(value_type = Object)]
    pub payload: (),
}

/// One failed check of the schema; never a value from the delivery.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ApiValidationError {
    /// JSON Pointer into the extracted data; keys the schema does not
    /// declare are written `*`.
    pub path: String,
    /// The schema keyword that failed (`type`, `required`, `format`, ...).
    pub keyword: String,
}

/// Appends the JSON of one event to `out`, decrypting its payload.
pub fn write_event(
    out: &mut Vec<u8>,
    keys: &KeyRing,
    form: CursorForm,
    position: Position,
    row: &StoredEvent,
) -> Result<(), AppError> {
    let payload = keys
        .open(
            &row.job_id,
            &row.event,
            &row.key_id,
            &row.nonce,
            &row.ciphertext,
        )
        .map_err(|e| {
            tracing::error!(row = row.id, error = %e, "stored event cannot be decrypted");
            AppError::Internal
        })?;
    if Json::parse(&payload).is_err() {
        tracing::error!(row = row.id, "stored event is not one JSON value");
        return Err(AppError::Internal);
    }
    let received_at = row
        .received_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    out.extend_from_slice(b"{\"id\":");
    string(out, &row.id.to_string());
    out.extend_from_slice(b",\"cursor\":");
    string(out, &feed::encode(form, position));
    out.extend_from_slice(b",\"job_id\":");
    string(out, &row.job_id);
    out.extend_from_slice(b",\"event\":");
    string(out, &row.event);
    out.extend_from_slice(b",\"pattern_id\":");
    optional(out, row.pattern_id.as_deref());
    out.extend_from_slice(b",\"status\":");
    optional(out, row.status.as_deref());
    out.extend_from_slice(b",\"received_at\":");
    string(out, &received_at);
    if row.operator_supplied {
        out.extend_from_slice(b",\"operator_supplied\":true");
    }
    write_verdict(out, row);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload.trim_ascii());
    out.push(b'}');
    Ok(())
}

/// Appends `[event,...]` for `rows`.
pub fn write_events<'a>(
    out: &mut Vec<u8>,
    keys: &KeyRing,
    form: CursorForm,
    rows: impl IntoIterator<Item = (Position, &'a StoredEvent)>,
) -> Result<(), AppError> {
    out.push(b'[');
    for (i, (position, row)) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(out, keys, form, position, row)?;
    }
    out.push(b']');
    Ok(())
}

/// `,"valid":...,"validation_errors":[...]`, written from the parsed
/// columns (never their text as stored).
pub fn write_verdict(out: &mut Vec<u8>, row: &StoredEvent) {
    let verdict = Verdict::from_columns(row.valid, row.validation_errors.as_deref());
    out.extend_from_slice(b",\"valid\":");
    out.extend_from_slice(match verdict.valid {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
    out.extend_from_slice(b",\"validation_errors\":[");
    for (i, issue) in verdict.errors.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"path\":");
        string(out, &issue.path);
        out.extend_from_slice(b",\"keyword\":");
        string(out, &issue.keyword);
        out.push(b'}');
    }
    out.push(b']');
}

pub fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape_str(text, |piece| out.extend_from_slice(piece.as_bytes()));
    out.push(b'"');
}

fn optional(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(t) => string(out, t),
        None => out.extend_from_slice(b"null"),
    }
}

/// A `200 application/json` response of `body`.
pub fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
