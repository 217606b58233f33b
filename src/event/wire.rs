//! The event on the wire: the one JSON shape in which a stored event leaves
//! the service (CONTRACT §9 EVENT). The Results API, `export`, `show` and
//! the relay all render through here, so the shape cannot drift between
//! them:
//!
//! `{"id","cursor","job_id","event","pattern_id","status","received_at",
//! ["operator_supplied",]"valid","validation_errors","payload"}`
//!
//! with `payload` the stored (redacted) body, decrypted, embedded as the
//! JSON text it is. It is checked to be one JSON value first, but never
//! re-parsed into `serde_json::Value`: stored bodies may hold escaped lone
//! surrogates or keys that serde_json treats as magic, and must come out
//! exactly as they went in. `show` prints events without `id` and
//! `cursor` (it reads one job, not the feed).

use utoipa::ToSchema;

use super::StoredEvent;
use crate::crypto::{KeyRing, OpenError};
use crate::json::{escape_str, Json};
use crate::validation::Verdict;

/// One stored event: the schema of what [`write`] writes (named
/// `ApiEvent` in the OpenAPI document).
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

/// Why a stored event cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error(transparent)]
    Sealed(#[from] OpenError),
    #[error("decrypted to something that is not JSON")]
    NotJson,
}

/// The decrypted payload of `row`, checked to be one JSON value.
pub fn open(keys: &KeyRing, row: &StoredEvent) -> Result<Vec<u8>, Unreadable> {
    let payload = keys.open(row.key(), &row.key_id, &row.nonce, &row.ciphertext)?;
    if Json::parse(&payload).is_err() {
        return Err(Unreadable::NotJson);
    }
    Ok(payload)
}

/// Appends the JSON of one event to `out`: `payload` is what [`open`]
/// returned for `row`; `cursor` places it in the feed (with its `id`), or
/// is `None` where events are shown by job (`show`).
pub fn write(out: &mut Vec<u8>, row: &StoredEvent, cursor: Option<&str>, payload: &[u8]) {
    out.push(b'{');
    if let Some(cursor) = cursor {
        out.extend_from_slice(b"\"id\":");
        string(out, &row.id.to_string());
        out.extend_from_slice(b",\"cursor\":");
        string(out, cursor);
        out.push(b',');
    }
    out.extend_from_slice(b"\"job_id\":");
    string(out, &row.job_id);
    out.extend_from_slice(b",\"event\":");
    string(out, &row.event);
    out.extend_from_slice(b",\"pattern_id\":");
    optional(out, row.pattern_id.as_deref());
    out.extend_from_slice(b",\"status\":");
    optional(out, row.status.as_deref());
    out.extend_from_slice(b",\"received_at\":");
    string(
        out,
        &row.received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    if row.operator_supplied {
        out.extend_from_slice(b",\"operator_supplied\":true");
    }
    write_verdict(out, row);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload.trim_ascii());
    out.push(b'}');
}

/// [`write`] on one line (`export`, `show`): a payload stored as it was
/// sent may have line breaks between its tokens (strings escape theirs),
/// so such a payload is written compactly.
pub fn write_line(out: &mut Vec<u8>, row: &StoredEvent, cursor: Option<&str>, payload: &[u8]) {
    if payload.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        let compact = Json::parse(payload).map_or_else(|_| payload.to_vec(), |t| t.to_vec());
        write(out, row, cursor, &compact);
    } else {
        write(out, row, cursor, payload);
    }
}

/// `,"valid":...,"validation_errors":[...]`, written from the parsed
/// columns (never their text as stored).
fn write_verdict(out: &mut Vec<u8>, row: &StoredEvent) {
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

/// A JSON string of `text`.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row() -> StoredEvent {
        StoredEvent {
            id: 7,
            job_id: "job-1".into(),
            event: "job.completed".into(),
            pattern_id: None,
            status: Some("done \"ok\"".into()),
            received_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            key_id: "k1".into(),
            nonce: Vec::new(),
            ciphertext: Vec::new(),
            operator_supplied: false,
            valid: None,
            validation_errors: None,
        }
    }

    #[test]
    fn the_feed_shape_leads_with_id_and_cursor() {
        let mut out = Vec::new();
        write(&mut out, &row(), Some("Y3Vy"), b" {\"a\":1}\n");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":"7","cursor":"Y3Vy","job_id":"job-1","event":"job.completed","pattern_id":null,"status":"done \"ok\"","received_at":"2023-11-14T22:13:20.123456Z","valid":null,"validation_errors":[],"payload":{"a":1}}"#
        );
    }

    #[test]
    fn a_line_is_one_line_and_show_has_no_place() {
        let mut r = row();
        r.operator_supplied = true;
        let mut out = Vec::new();
        write_line(&mut out, &r, None, b"{\n\"a\" :\r\n [1, 2]}");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        assert!(text.starts_with(r#"{"job_id":"job-1""#), "{text}");
        assert!(
            text.ends_with(r#""operator_supplied":true,"valid":null,"validation_errors":[],"payload":{"a":[1,2]}}"#),
            "{text}"
        );
    }
}
