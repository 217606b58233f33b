//! Quarantine (CONTRACT §10): a delivery whose signature verified but that
//! validation refused (`invalid_json`, `invalid_payload`,
//! `stale_timestamp`) keeps its 4xx and is also kept, so that no genuine
//! result is lost to a validation rule: redacted (by the §4 rules when it
//! parses as JSON, else by the tolerant tokenizer of `redact`, which needs
//! no tree and has no depth limit), indexed for erasure the same two ways,
//! sealed, and stored with its reason and request id, for `rejected
//! list/show/replay`.
//! Unsigned and badly signed requests never get here.

use chrono::Utc;

use crate::crypto::{KeyRing, SealError};
use crate::error::{AppError, ErrorCode};
use crate::json::Json;
use crate::redact::Redactor;
use crate::store::quarantine::NewQuarantined;
use crate::subjects::SubjectIndexer;

/// The reason a refusal is quarantined under, when it is one that is.
pub fn reason(error: &AppError) -> Option<&'static str> {
    match error {
        AppError::InvalidJson(_) | AppError::InvalidPayload(_) | AppError::StaleTimestamp => {
            Some(error.code())
        }
        _ => None,
    }
}

/// A reason as read back (from the spool), when it is one of ours.
pub fn known_reason(text: &str) -> Option<&'static str> {
    [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidPayload,
        ErrorCode::StaleTimestamp,
    ]
    .into_iter()
    .map(ErrorCode::as_str)
    .find(|reason| *reason == text)
}

/// Indexes (for erasure, before redaction), redacts and seals a refused
/// body as a quarantine row.
pub fn seal(
    body: &[u8],
    reason: &'static str,
    request_id: &str,
    subjects: &SubjectIndexer,
    redactor: &Redactor,
    keys: &KeyRing,
) -> Result<NewQuarantined, SealError> {
    let (redacted, subjects) = match Json::parse_whole(body) {
        Ok((mut tree, whole)) => {
            let found = subjects.index(&tree);
            (redacted_text(body, (&mut tree, whole), redactor), found)
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let found = subjects.index_unparsed(&text);
            (redactor.redact_unparsed(&text).into_bytes(), found)
        }
    };
    let seal_id = uuid::Uuid::new_v4().simple().to_string();
    let sealed = keys.seal_quarantined(&seal_id, &redacted)?;
    Ok(NewQuarantined {
        received_at: Utc::now(),
        reason,
        request_id: request_id.to_owned(),
        bytes: body.len() as u64,
        seal_id,
        sealed,
        subjects,
    })
}

/// The body as it may be stored: a JSON document redacted as a delivery
/// would be; anything else by the tolerant tokenizer (name rules on every
/// key it can read, value detection, unreadable digit runs masked).
pub fn redact(body: &[u8], redactor: &Redactor) -> Vec<u8> {
    match Json::parse_whole(body) {
        Ok((mut tree, whole)) => redacted_text(body, (&mut tree, whole), redactor),
        Err(_) => redactor
            .redact_unparsed(&String::from_utf8_lossy(body))
            .into_bytes(),
    }
}

/// `tree` (parsed from `body`; `whole` when `body` may stand for it, see
/// [`Json::parse_whole`])
/// redacted and written out, or `body` itself when redaction changed
/// nothing in a whole tree: its text stays as the sender wrote it.
fn redacted_text(
    body: &[u8],
    (tree, whole): (&mut Json<'_>, bool),
    redactor: &Redactor,
) -> Vec<u8> {
    if redactor.redact_json(tree) || !whole {
        tree.to_vec()
    } else {
        body.to_vec()
    }
}
