//! What a delivery is once authenticated: its envelope fields, validated per
//! CONTRACT §2, and the freshness of its signed `timestamp`.
//!
//! Both payload dialects share `event`, `job_id` and an optional
//! `pattern_id`; `status` exists only in the documented dialect, `timestamp`
//! only in the production one. Everything else is kept as it came.

use std::time::Duration;

use crate::crypto::{KeyRing, SealError};
use crate::dedup::DedupKey;
use crate::event::{Envelope, NewEvent};
use crate::json::{Json, JsonError};
use crate::redact::{holds_card_or_ssn, Redactor};
use crate::subjects::SubjectIndexer;
use crate::validation::{Schemas, Verdict};
use chrono::{DateTime, Utc};

use crate::error::AppError;

/// How far in the future a signed timestamp may be (clock skew).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

impl Envelope {
    pub const EVENT_RULE: &'static str = "event must match ^[A-Za-z0-9_.-]{1,64}$";
    pub const JOB_ID_RULE: &'static str = "job_id must match ^[A-Za-z0-9_.:-]{1,128}$";

    /// Whether `text` can be a stored `event` (CONTRACT §2).
    pub fn is_event(text: &str) -> bool {
        DedupKey::is_event(text)
    }

    /// Whether `text` can be a stored `job_id` (CONTRACT §2).
    pub fn is_job_id(text: &str) -> bool {
        DedupKey::is_job_id(text)
    }

    /// Whether `text` can be a stored `pattern_id` column: at most 128
    /// characters and no NUL (Postgres refuses it in text).
    pub fn is_pattern_id(text: &str) -> bool {
        text.chars().count() <= 128 && !text.contains('\0')
    }

    /// Reads and validates the envelope of a parsed body (an object).
    pub fn from_object(body: &Json<'_>) -> Result<Self, AppError> {
        let event = required_str(body, "event")?;
        if !Self::is_event(event) {
            return Err(invalid(Self::EVENT_RULE));
        }
        let job_id = required_str(body, "job_id")?;
        if !Self::is_job_id(job_id) {
            return Err(invalid(Self::JOB_ID_RULE));
        }
        let pattern_id = match body.get("pattern_id") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) if s.chars().count() > 128 => {
                return Err(invalid("pattern_id must be at most 128 characters"))
            }
            // A NUL cannot be a text column, nor may a card or SSN be in
            // plaintext; the payload keeps it (masked, for the latter).
            Some(Json::String(s)) if !Self::is_pattern_id(s) || holds_card_or_ssn(s) => None,
            Some(Json::String(s)) => Some(s.to_string()),
            Some(_) => return Err(invalid("pattern_id must be a string")),
        };
        // `status` is informational; a plaintext column only takes a short
        // (1-64 characters), printable value in any script that holds no
        // card or SSN; anything else leaves the column empty (the payload
        // keeps it, masked by value detection).
        let status = match body.get("status") {
            Some(Json::String(s))
                if (1..=64).contains(&s.chars().count())
                    && !s
                        .chars()
                        .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
                    && !holds_card_or_ssn(s) =>
            {
                Some(s.to_string())
            }
            _ => None,
        };
        Ok(Self {
            job_id: job_id.to_owned(),
            event: event.to_owned(),
            pattern_id,
            status,
        })
    }
}

/// An authenticated body, parsed: the tree (borrowing from the body's
/// bytes) and its validated envelope. `Debug` shows the envelope and the
/// body's shape, never its content.
pub struct Delivery<'a> {
    pub body: Json<'a>,
    pub envelope: Envelope,
    /// The body as received: stored as it is when redaction changes
    /// nothing (its whitespace and key order included, CONTRACT §1).
    raw: &'a [u8],
    /// Whether `raw` may stand for `body` ([`Json::parse_whole`]: no
    /// repeated key was folded away, which redaction never saw, and no
    /// escape spells a letter or digit, which would show other digits).
    whole: bool,
}

impl<'a> Delivery<'a> {
    /// Parses a body whose signature has been verified.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, AppError> {
        let (body, whole) = Json::parse_whole(bytes).map_err(|e| match e {
            JsonError::TooDeep => AppError::InvalidJson("the body nests deeper than 128 levels"),
            JsonError::Syntax { .. } => AppError::InvalidJson("the body is not valid JSON"),
        })?;
        if !matches!(body, Json::Object(_)) {
            return Err(AppError::InvalidJson("the body must be a JSON object"));
        }
        let envelope = Envelope::from_object(&body)?;
        Ok(Self {
            body,
            envelope,
            raw: bytes,
            whole,
        })
    }

    /// The verdict of its pattern's schema on its extracted data. Taken
    /// before [`Self::seal`], which redacts: a masked card or a keyed hash
    /// would fail the schema that describes the original.
    pub fn verdict(&self, schemas: &Schemas) -> Verdict {
        schemas.check(self.envelope.pattern_id.as_deref(), &self.body)
    }

    /// Indexes the body's data subjects (before redaction: the values are
    /// about to be hashed or masked), redacts it, writes it out once and
    /// seals it under the envelope's (job_id, event): the row to store. A
    /// seal that fails yields no row: nothing unencrypted or empty is ever
    /// stored.
    pub fn seal(
        mut self,
        subjects: &SubjectIndexer,
        redactor: &Redactor,
        keys: &KeyRing,
    ) -> Result<NewEvent, SealError> {
        let subjects = subjects.index(&self.body);
        let written;
        let changed = redactor.redact_json(&mut self.body);
        let plaintext: &[u8] = if changed || !self.whole {
            // Redaction changes the size little: room for it up front.
            let mut out = Vec::with_capacity(self.raw.len() + self.raw.len() / 8 + 64);
            self.body.write_to(&mut out);
            written = out;
            &written
        } else {
            self.raw
        };
        let sealed = keys.seal(self.envelope.key(), plaintext)?;
        Ok(NewEvent {
            envelope: self.envelope,
            sealed,
            received_at: Utc::now(),
            subjects,
            verdict: Verdict::default(),
        })
    }
}

impl std::fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("bytes", &self.raw.len())
            .field("body", &self.body)
            .finish()
    }
}

/// Checks the signed `timestamp`, when present, against `max_age` (zero = off).
pub fn check_freshness(
    body: &Json<'_>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    if max_age.is_zero() {
        return Ok(());
    }
    // A timestamp that is not an RFC 3339 string cannot be judged, as one
    // that is absent: the body is signed, so it is the sender's quirk, and a
    // refusal would lose the result (the sender tries once). Replays of it
    // are still duplicates by (job_id, event).
    let Some(ts) = (match body.get("timestamp") {
        Some(Json::String(s)) => DateTime::parse_from_rfc3339(s).ok(),
        _ => None,
    }) else {
        return Ok(());
    };
    let ts = ts.with_timezone(&Utc);
    let age = now.signed_duration_since(ts);
    let too_old = age.to_std().is_ok_and(|a| a > max_age);
    let too_new = (-age).to_std().is_ok_and(|a| a > MAX_CLOCK_SKEW);
    if too_old || too_new {
        return Err(AppError::StaleTimestamp);
    }
    Ok(())
}

fn required_str<'a>(body: &'a Json<'_>, field: &str) -> Result<&'a str, AppError> {
    match body.get(field) {
        Some(Json::String(s)) => Ok(s.as_str()),
        None | Some(Json::Null) => Err(invalid(&format!("{field} is required"))),
        Some(_) => Err(invalid(&format!("{field} must be a string"))),
    }
}

fn invalid(message: &str) -> AppError {
    AppError::InvalidPayload(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn obj(v: Value) -> Json<'static> {
        Json::parse(v.to_string().as_bytes()).unwrap().into_owned()
    }

    fn err_message(v: Value) -> String {
        match Envelope::from_object(&obj(v)) {
            Err(AppError::InvalidPayload(m)) => m,
            other => panic!("expected invalid_payload, got {other:?}"),
        }
    }

    #[test]
    fn debug_never_shows_the_body() {
        let body = json!({"event":"job.succeeded","job_id":"j-1","manifest":{
            "customer":{"ssn":"123-45-6789","email":"alice@example.com"},
            "note":"paid with 4111 1111 1111 1111"}})
        .to_string();
        let shown = format!("{:?}", Delivery::parse(body.as_bytes()).unwrap());
        for secret in ["123-45-6789", "alice@example.com", "4111"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("j-1") && shown.contains("\"ssn\""),
            "{shown}"
        );
    }

    #[test]
    fn a_failed_seal_yields_no_row() {
        let body = br#"{"event":"job.succeeded","job_id":"j-1","manifest":{"a":1}}"#;
        let redactor = Redactor::new(&crate::redact::RedactSettings::default(), &[1; 32]);
        let sealed = Delivery::parse(body).unwrap().seal(
            &crate::subjects::SubjectIndexer::new(
                crate::subjects::SubjectFields::new(
                    &crate::config::SubjectsSettings {
                        fields: vec!["email".into()],
                        hash_rule_fields: true,
                    },
                    &crate::redact::RedactSettings::default(),
                ),
                crate::subjects::SubjectKey::new(&[1; 32]),
            ),
            &redactor,
            &KeyRing::refusing_to_seal(),
        );
        assert!(matches!(sealed, Err(SealError)), "{sealed:?}");
    }

    #[test]
    fn nesting_deeper_than_128_levels_is_named() {
        let body = |levels: usize| {
            let inner = "[".repeat(levels - 1) + &"]".repeat(levels - 1);
            format!(r#"{{"event":"e","job_id":"j","x":{inner}}}"#)
        };
        assert!(Delivery::parse(body(128).as_bytes()).is_ok());
        let message = |bytes: &[u8]| match Delivery::parse(bytes) {
            Err(AppError::InvalidJson(m)) => m,
            other => panic!("expected invalid_json, got {other:?}"),
        };
        assert_eq!(
            message(body(129).as_bytes()),
            "the body nests deeper than 128 levels"
        );
        assert_eq!(
            message("[".repeat(1_000_000).as_bytes()),
            "the body nests deeper than 128 levels"
        );
        assert_eq!(message(b"{\"a\":[1,]}"), "the body is not valid JSON");
        assert_eq!(message(b"[]"), "the body must be a JSON object");
    }

    #[test]
    fn reads_both_dialects() {
        let prod = json!({"event":"job.succeeded","job_id":"3f1c9a8e-0000-4000-8000-000000000001",
            "pattern_id":"5b7e0000-0000-4000-8000-000000000002","manifest":{"a":1},"error":null,
            "timestamp":"2026-11-24T10:00:00Z"});
        let e = Envelope::from_object(&obj(prod)).unwrap();
        assert_eq!(e.event, "job.succeeded");
        assert_eq!(
            e.pattern_id.as_deref(),
            Some("5b7e0000-0000-4000-8000-000000000002")
        );
        assert_eq!(e.status, None);

        let docs = json!({"event":"job.completed","job_id":"job_abc:123","pattern_id":"pat_x",
            "status":"completed","result":{"a":1},"confidence":0.97});
        let e = Envelope::from_object(&obj(docs)).unwrap();
        assert_eq!(e.job_id, "job_abc:123");
        assert_eq!(e.status.as_deref(), Some("completed"));
        let status = |v: Value| {
            Envelope::from_object(&obj(json!({"event":"e","job_id":"j","status":v})))
                .unwrap()
                .status
        };
        assert_eq!(status(json!("réussi")).as_deref(), Some("réussi"));
        assert_eq!(status(json!("完了")).as_deref(), Some("完了"));
        assert_eq!(status(json!("s".repeat(64))), Some("s".repeat(64)));
        assert_eq!(status(json!("s".repeat(65))), None);
        assert_eq!(status(json!("a\nb")), None);
        assert_eq!(status(json!("")), None);
        assert_eq!(status(json!(7)), None);
        // A card or SSN never reaches a plaintext column (issue 21).
        assert_eq!(status(json!("4111 1111 1111 1111")), None);
        assert_eq!(status(json!("held: 123-45-6789")), None);
        assert_eq!(
            status(json!("batch 2026-11-24 #12")).as_deref(),
            Some("batch 2026-11-24 #12")
        );
        let pattern = |v: Value| {
            Envelope::from_object(&obj(json!({"event":"e","job_id":"j","pattern_id":v})))
                .unwrap()
                .pattern_id
        };
        assert_eq!(pattern(json!("123-45-6789")), None);
        assert_eq!(pattern(json!("4111-1111-1111-1111")), None);
        assert_eq!(pattern(json!("pat_x")).as_deref(), Some("pat_x"));
    }

    #[test]
    fn names_the_bad_field() {
        let long = "x".repeat(129);
        let cases = [
            (json!({"job_id":"j"}), "event"),
            (json!({"event":null,"job_id":"j"}), "event"),
            (json!({"event":1,"job_id":"j"}), "event"),
            (json!({"event":"","job_id":"j"}), "event"),
            (json!({"event":"job succeeded","job_id":"j"}), "event"),
            (json!({"event":"x".repeat(65),"job_id":"j"}), "event"),
            (json!({"event":"job.succeeded"}), "job_id"),
            (json!({"event":"e","job_id":""}), "job_id"),
            (json!({"event":"e","job_id":"a/b"}), "job_id"),
            (json!({"event":"e","job_id":"é"}), "job_id"),
            (json!({"event":"e","job_id":"x".repeat(129)}), "job_id"),
            (json!({"event":"e","job_id":["j"]}), "job_id"),
            (
                json!({"event":"e","job_id":"j","pattern_id":long}),
                "pattern_id",
            ),
            (
                json!({"event":"e","job_id":"j","pattern_id":5}),
                "pattern_id",
            ),
        ];
        for (body, field) in cases {
            let m = err_message(body.clone());
            assert!(m.starts_with(field), "{body} -> {m}");
        }
    }

    #[test]
    fn accepts_the_edges_of_the_patterns() {
        let ok =
            json!({"event":"x".repeat(64),"job_id":"a".repeat(128),"pattern_id":"é".repeat(128)});
        assert!(Envelope::from_object(&obj(ok)).is_ok());
        let unknown = json!({"event":"job.unknown_future-thing","job_id":"J:1.2_3-4"});
        assert!(Envelope::from_object(&obj(unknown)).is_ok());
    }

    #[test]
    fn freshness_window() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = Duration::from_secs(86_400);
        let check =
            |ts: Value, max: Duration| check_freshness(&obj(json!({"timestamp": ts})), max, now);
        assert!(check(json!("2026-11-24T11:59:00Z"), day).is_ok());
        assert!(check(json!("2026-11-23T12:00:01Z"), day).is_ok());
        assert!(check(json!("2026-11-24T12:04:00+00:00"), day).is_ok());
        assert!(matches!(
            check(json!("2026-11-23T11:59:59Z"), day),
            Err(AppError::StaleTimestamp)
        ));
        assert!(matches!(
            check(json!("2026-11-24T12:05:01Z"), day),
            Err(AppError::StaleTimestamp)
        ));
        // Unreadable: judged as absent.
        assert!(check(json!("yesterday"), day).is_ok());
        assert!(check(json!(1732449600), day).is_ok());
        assert!(check(json!("2020-01-01 00:00:00"), day).is_ok());
        assert!(check(Value::Null, day).is_ok());
        assert!(check_freshness(&obj(json!({})), day, now).is_ok());
        // 0s turns the check off entirely.
        assert!(check(json!("1999-01-01T00:00:00Z"), Duration::ZERO).is_ok());
    }
}
