//! `POST /v1/erasure` `{"value":"..."}`: deletes every event (and, through
//! `Store::forget_subject`, every spooled and quarantined delivery) indexed
//! under that data subject. The value is hashed at once (the subject index
//! holds keyed hashes only) and never logged, echoed or audited: the audit
//! record's target is the hash.

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use bytes::Bytes;
use utoipa::ToSchema;

use super::auth::{store_error, Caller};
use super::schema::Deleted;
use crate::audit::Action;
use crate::error::AppError;
use crate::json::Json;
use crate::store::Store;
use crate::subjects::SubjectKey;
use crate::tokens::Scope;

/// Largest erasure body accepted.
pub const MAX_BODY_BYTES: usize = 4096;

/// Longest `value`, in characters: even written as `\uXXXX` escapes it
/// fits in [`MAX_BODY_BYTES`], so a value the document allows is never
/// refused as too large.
pub const MAX_VALUE_CHARS: usize = 512;

/// Whom to erase.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErasureRequest {
    /// A value of one of `subjects.fields` (e.g. an email address), as it
    /// appeared in deliveries; looked up under each kind's canonical form
    /// (a `hash`-rule field's letters and digits uppercased, an email
    /// trimmed and lower-cased, a phone's digits, any other field trimmed).
    /// It must hold at least one letter or digit. Always a JSON string: a
    /// numeric `customer_id` is written as its text (`"1042"`).
    #[schema(min_length = 1, max_length = 512, pattern = r"[\p{L}\p{N}]")]
    pub value: String,
}

/// Erasure by data subject.
#[utoipa::path(
    post,
    path = "/v1/erasure",
    tag = "erasure",
    request_body = ErasureRequest,
    responses(
        (status = 200, description = "How many events were deleted", body = Deleted),
        (status = 400, description = "`invalid_json` (not a JSON object) or `invalid_parameter` (`value` missing, not a string, empty, longer than 512 characters, or without a letter or digit)", body = super::schema::ErrorBody),
        (status = 401, description = "`unauthorized`: no token, or a malformed, unknown or revoked one", body = super::schema::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the token lacks `events:delete`", body = super::schema::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = super::schema::ErrorBody),
        (status = 503, description = "`unavailable`: the database cannot answer; retry after `Retry-After`", body = super::schema::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = ["events:delete"]))
)]
pub async fn erase(
    State(store): State<Store>,
    State(key): State<SubjectKey>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Deleted>, AppError> {
    caller.require(Scope::EventsDelete)?;
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status().as_u16() == 413 => {
            AppError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
        }
        _ => AppError::BadBody,
    })?;
    let value = erasure_value(&body)?;
    // The audit target: the value's §4 digest, as before kinds existed.
    let target = key
        .hash(&value)
        .ok_or_else(|| AppError::InvalidParameter("value has no letter or digit".into()))?;
    let entry = caller.audit(Action::Erasure, Some(target.to_hex()));
    let deleted = store
        .forget_subject(&key.lookups(&value), &entry)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(Deleted { deleted }))
}

/// The `value` of `{"value": "..."}`: a string, never a number (the
/// document says so, and `1042` and `"1042"` must not both be meant).
fn erasure_value(body: &[u8]) -> Result<String, AppError> {
    let parsed =
        Json::parse(body).map_err(|_| AppError::InvalidJson("the body is not valid JSON"))?;
    if !matches!(parsed, Json::Object(_)) {
        return Err(AppError::InvalidJson("the body must be a JSON object"));
    }
    match parsed.get("value") {
        Some(Json::String(s)) if !s.is_empty() && s.chars().count() <= MAX_VALUE_CHARS => {
            Ok(s.to_string())
        }
        _ => Err(AppError::InvalidParameter(format!(
            "value must be a string of 1 to {MAX_VALUE_CHARS} characters"
        ))),
    }
}
