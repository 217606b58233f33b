//! The subject index: who an event is about, without storing who.
//!
//! At ingest, **before** redaction, every field named in `subjects.fields`
//! (names normalised as the redaction rules normalise them, matched at any
//! depth, inside arrays too) yields the keyed hash of its canonical value:
//! HMAC-SHA256(hash key, canonical value), exactly what the `hash` action
//! stores as `X_hash` (CONTRACT §4). The hashes are stored beside the event
//! (`event_subjects`), so erasure (`POST /v1/erasure`, `forget VALUE`) finds
//! every event of a person by hashing the value it is given the same way.
//!
//! This module owns the field list, the hashing and the walk; the spool and
//! the quarantine index their rows through [`index`] too.

use std::collections::HashSet;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::SubjectsSettings;
use crate::json::Json;
use crate::redact::{self, normalize_name, RedactSettings};

/// The keyed hash of one subject value; stored, never the value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectHash(pub [u8; 32]);

impl SubjectHash {
    /// Lowercase hex: what the audit trail records as an erasure's target.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SubjectHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectHash({})", self.to_hex())
    }
}

/// The normalised names whose values identify a data subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectFields(HashSet<String>);

impl SubjectFields {
    /// `subjects.fields`, plus every `hash`-rule name of the redaction
    /// settings when `subjects.hash_rule_fields` is on.
    pub fn new(settings: &SubjectsSettings, redact: &RedactSettings) -> Self {
        let mut names: HashSet<String> = settings
            .fields
            .iter()
            .map(|n| normalize_name(n))
            .filter(|n| !n.is_empty())
            .collect();
        if settings.hash_rule_fields {
            names.extend(redact::hash_rule_names(redact));
        }
        Self(names)
    }

    fn contains(&self, normalised: &str) -> bool {
        self.0.contains(normalised)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The hash key, keyed once; hashes subject values.
#[derive(Clone)]
pub struct SubjectKey(Hmac<Sha256>);

// Written by hand so the key state can never reach a log.
impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(<redacted>)")
    }
}

impl SubjectKey {
    /// `hash_key`: the decoded `IMGGO_HASH_KEY` bytes.
    pub fn new(hash_key: &[u8]) -> Self {
        Self(redact::keyed_hmac(hash_key))
    }

    /// The subject hash of `value` (canonicalised first), or `None` when its
    /// canonical form is empty (nothing to identify anyone by).
    pub fn hash(&self, value: &str) -> Option<SubjectHash> {
        let canonical = redact::canonical(value);
        if canonical.is_empty() {
            return None;
        }
        let mut mac = self.0.clone();
        mac.update(canonical.as_bytes());
        Some(SubjectHash(mac.finalize().into_bytes().into()))
    }
}

/// What ingest needs to index a body: the field names and the key.
#[derive(Clone, Debug)]
pub struct SubjectIndexer {
    pub fields: SubjectFields,
    pub key: SubjectKey,
}

impl SubjectIndexer {
    pub fn new(fields: SubjectFields, key: SubjectKey) -> Self {
        Self { fields, key }
    }

    pub fn index(&self, body: &Json<'_>) -> Vec<SubjectHash> {
        index(body, &self.fields, &self.key)
    }
}

/// The distinct subject hashes of an unredacted body: for every field named
/// in `fields`, at any depth, every string and number inside its value.
pub fn index(body: &Json<'_>, fields: &SubjectFields, key: &SubjectKey) -> Vec<SubjectHash> {
    let mut found = Vec::new();
    if !fields.is_empty() {
        let mut name = String::new();
        walk(body, fields, key, false, &mut name, &mut found);
        found.sort_unstable();
        found.dedup();
    }
    found
}

// Recursion depth is the JSON nesting depth, which the parser caps at 128.
fn walk(
    value: &Json<'_>,
    fields: &SubjectFields,
    key: &SubjectKey,
    named: bool,
    name: &mut String,
    found: &mut Vec<SubjectHash>,
) {
    match value {
        Json::String(text) if named => found.extend(key.hash(text)),
        Json::Number(text) if named => found.extend(key.hash(text)),
        Json::Array(items) => {
            for item in items {
                walk(item, fields, key, named, name, found);
            }
        }
        Json::Object(entries) => {
            for (k, v) in entries {
                redact::normalize_into(k, name);
                let is_field = fields.contains(name);
                walk(v, fields, key, named || is_field, name, found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn indexer(fields: &[&str], hash_rules: bool) -> (SubjectFields, SubjectKey) {
        let settings = SubjectsSettings {
            fields: fields.iter().map(|s| (*s).to_owned()).collect(),
            hash_rule_fields: hash_rules,
        };
        (
            SubjectFields::new(&settings, &RedactSettings::default()),
            SubjectKey::new(&[7u8; 32]),
        )
    }

    fn hashes(body: &str, fields: &SubjectFields, key: &SubjectKey) -> Vec<SubjectHash> {
        index(&Json::parse(body.as_bytes()).unwrap(), fields, key)
    }

    #[test]
    fn finds_fields_at_any_depth_and_spelling() {
        let (fields, key) = indexer(&["email", "customer_id"], false);
        let alice = key.hash("alice@example.com").unwrap();
        let id = key.hash("C-42").unwrap();
        let body = r#"{"manifest":{"Customer":{"E-Mail":"Alice@Example.com"},
            "rows":[{"customerId":"c 42"},{"other":"alice@example.com"}]}}"#;
        let mut expected = vec![alice, id];
        expected.sort();
        assert_eq!(hashes(body, &fields, &key), expected);
        // Canonical value: letters and digits only, uppercased.
        assert_eq!(key.hash("ALICEEXAMPLECOM"), Some(alice));
        assert_eq!(key.hash("--"), None);
    }

    #[test]
    fn hash_rule_names_are_subjects_and_match_the_redaction_digest() {
        let (fields, key) = indexer(&[], true);
        let body = r#"{"ssn":"123-45-6789","list":{"passport_no":["X1", 5]}}"#;
        let found = hashes(body, &fields, &key);
        assert_eq!(found.len(), 3);
        let redactor = crate::redact::Redactor::new(&RedactSettings::default(), &[7u8; 32]);
        assert!(found
            .iter()
            .any(|h| h.to_hex() == redactor.hash_value("123456789")));
        let (none, _) = indexer(&[], false);
        assert!(hashes(body, &none, &key).is_empty());
    }

    #[test]
    fn duplicates_count_once_and_debug_hides_the_key() {
        let (fields, key) = indexer(&["email"], false);
        let body = r#"{"email":"a@b.c","x":{"email":"A@B.C"}}"#;
        assert_eq!(hashes(body, &fields, &key).len(), 1);
        assert_eq!(format!("{key:?}"), "SubjectKey(<redacted>)");
    }
}
