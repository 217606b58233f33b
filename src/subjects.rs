//! The subject index: who an event is about, without storing who.
//!
//! At ingest, **before** redaction, every field named in `subjects.fields`
//! (names normalised as the redaction rules normalise them, matched at any
//! depth, inside arrays too) yields the keyed hash of its canonical value:
//! HMAC-SHA256(hash key, canonical value), exactly what the `hash` action
//! stores as `X_hash` (CONTRACT §4). The hashes are stored with the event
//! (Postgres: an array in its row; SQLite: `event_subjects`), so erasure
//! (`POST /v1/erasure`, `forget VALUE`) finds every event of a person by
//! hashing the value it is given the same way.
//!
//! This module owns the field list, the hashing and the walk; the spool and
//! the quarantine index their rows through [`index`] too.

mod unparsed;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasherDefault;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::SubjectsSettings;
use crate::json::Json;
use crate::redact::{self, length_bit, normalize_name, Fnv1a, RedactSettings};

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

/// How a subject field's value is made canonical before it is hashed
/// (CONTRACT §9): so that one person's spellings meet, and two people never
/// do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKind {
    /// A `hash`-rule name (§4): letters and digits only, uppercased
    /// (`123-45-6789` and `123456789` are one). The digest is the one the
    /// `hash` action stores as `X_hash`, and the one every subject row was
    /// indexed under before kinds existed: it is not tagged.
    Hash,
    /// A name containing `email`: trimmed and lower-cased, nothing more
    /// (`jo.hn@ex-ample.com` is not `john@example.com`).
    Email,
    /// A name containing `phone`: its ASCII digits only.
    Phone,
    /// Any other field: trimmed.
    Identifier,
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 4] = [Self::Hash, Self::Email, Self::Phone, Self::Identifier];

    /// The kind of a normalised field name, `hash_rules` being the
    /// normalised `hash`-rule names.
    fn of(name: &str, hash_rules: &HashSet<String>) -> Self {
        if hash_rules.contains(name) {
            Self::Hash
        } else if name.contains("email") {
            Self::Email
        } else if name.contains("phone") {
            Self::Phone
        } else {
            Self::Identifier
        }
    }

    /// What goes into the HMAC: the canonical value, behind a tag naming the
    /// kind (none for `Hash`, whose digests predate kinds), so that an email
    /// and an identifier with the same text are two subjects. `None` when
    /// the canonical value is empty.
    fn hmac_input(self, value: &str) -> Option<Vec<u8>> {
        let (tag, canonical): (&[u8], String) = match self {
            Self::Hash => (b"", redact::canonical(value)),
            Self::Email => (b"email\0", value.trim().to_lowercase()),
            Self::Phone => (
                b"phone\0",
                value.chars().filter(char::is_ascii_digit).collect(),
            ),
            Self::Identifier => (b"id\0", value.trim().to_owned()),
        };
        if canonical.is_empty() {
            return None;
        }
        let mut input = Vec::with_capacity(tag.len() + canonical.len());
        input.extend_from_slice(tag);
        input.extend_from_slice(canonical.as_bytes());
        Some(input)
    }
}

/// The normalised names whose values identify a data subject, each with
/// its kind. Every object key of every delivery is looked up here, so as
/// the redaction rules' table does: FNV-1a instead of SipHash (the table is
/// built from config, a payload cannot grow it), and a filter on the
/// normalised length in front of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectFields {
    kinds: HashMap<String, SubjectKind, BuildHasherDefault<Fnv1a>>,
    /// Bit `n` set when some name has `n` bytes (names of 63+ set bit 63).
    lengths: u64,
}

impl SubjectFields {
    /// `subjects.fields`, plus every `hash`-rule name of the redaction
    /// settings when `subjects.hash_rule_fields` is on. A listed name that
    /// is a `hash`-rule name is of the `Hash` kind either way.
    pub fn new(settings: &SubjectsSettings, redact: &RedactSettings) -> Self {
        let hash_rules: HashSet<String> = redact::hash_rule_names(redact).into_iter().collect();
        let mut kinds: HashMap<String, SubjectKind, BuildHasherDefault<Fnv1a>> = settings
            .fields
            .iter()
            .map(|n| normalize_name(n))
            .filter(|n| !n.is_empty())
            .map(|n| {
                let kind = SubjectKind::of(&n, &hash_rules);
                (n, kind)
            })
            .collect();
        if settings.hash_rule_fields {
            kinds.extend(hash_rules.into_iter().map(|n| (n, SubjectKind::Hash)));
        }
        let lengths = kinds.keys().fold(0, |acc, n| acc | length_bit(n.len()));
        Self { kinds, lengths }
    }

    fn kind(&self, normalised: &str) -> Option<SubjectKind> {
        if self.lengths & length_bit(normalised.len()) == 0 {
            return None;
        }
        self.kinds.get(normalised).copied()
    }

    /// The kind of the field an object key names, normalising it into
    /// `name` only when its normalised length is some field's: an ASCII
    /// key's is counted without writing it, and most keys are ruled out so.
    fn kind_of_key(&self, key: &str, name: &mut String) -> Option<SubjectKind> {
        if key.is_ascii() {
            let len = key.bytes().filter(u8::is_ascii_alphanumeric).count();
            if self.lengths & length_bit(len) == 0 {
                return None;
            }
        }
        redact::normalize_into(key, name);
        self.kind(name)
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
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

    /// The subject hash of `value` as a `hash`-rule field's (§4's canonical
    /// value), or `None` when that is empty (no letter or digit). An
    /// erasure's audit target: the same digest as before kinds existed.
    pub fn hash(&self, value: &str) -> Option<SubjectHash> {
        self.hash_as(SubjectKind::Hash, value)
    }

    /// The subject hash of `value` in a field of `kind`, or `None` when its
    /// canonical form is empty (nothing to identify anyone by).
    pub fn hash_as(&self, kind: SubjectKind, value: &str) -> Option<SubjectHash> {
        let input = kind.hmac_input(value)?;
        let mut mac = self.0.clone();
        mac.update(&input);
        Some(SubjectHash(mac.finalize().into_bytes().into()))
    }

    /// Every hash an erasure of `value` looks up: one per kind, distinct.
    pub fn lookups(&self, value: &str) -> Vec<SubjectHash> {
        let mut found: Vec<SubjectHash> = SubjectKind::ALL
            .into_iter()
            .filter_map(|kind| self.hash_as(kind, value))
            .collect();
        found.sort_unstable();
        found.dedup();
        found
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

    /// [`index`] for a body that does not parse: every field it can read.
    pub fn index_unparsed(&self, text: &str) -> Vec<SubjectHash> {
        unparsed::index(text, &self.fields, &self.key)
    }
}

/// The distinct subject hashes of an unredacted body: for every field named
/// in `fields`, at any depth, every string and number inside its value,
/// canonicalised by the kind of the nearest named field around it.
pub fn index(body: &Json<'_>, fields: &SubjectFields, key: &SubjectKey) -> Vec<SubjectHash> {
    let mut found = Vec::new();
    if !fields.is_empty() {
        let mut name = String::new();
        walk(body, fields, key, None, &mut name, &mut found);
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
    kind: Option<SubjectKind>,
    name: &mut String,
    found: &mut Vec<SubjectHash>,
) {
    match (value, kind) {
        (Json::String(text), Some(kind)) => found.extend(key.hash_as(kind, text)),
        (Json::Number(text), Some(kind)) => found.extend(key.hash_as(kind, text)),
        (Json::Array(items), _) => {
            for item in items {
                walk(item, fields, key, kind, name, found);
            }
        }
        (Json::Object(entries), _) => {
            for (k, v) in entries {
                let inner = fields.kind_of_key(k, name).or(kind);
                walk(v, fields, key, inner, name, found);
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
        let alice = key
            .hash_as(SubjectKind::Email, "alice@example.com")
            .unwrap();
        let id = key.hash_as(SubjectKind::Identifier, "c 42").unwrap();
        let body = r#"{"manifest":{"Customer":{"E-Mail":" Alice@Example.com"},
            "rows":[{"customerId":"c 42"},{"other":"alice@example.com"}]}}"#;
        let mut expected = vec![alice, id];
        expected.sort();
        assert_eq!(hashes(body, &fields, &key), expected);
        assert_eq!(key.hash("--"), None);
    }

    #[test]
    fn each_kind_has_its_own_canonical_form_and_two_people_stay_two() {
        use SubjectKind::*;
        let (_, key) = indexer(&[], false);
        let same = |kind, a: &str, b: &str| key.hash_as(kind, a) == key.hash_as(kind, b);
        // An email: trimmed and lower-cased, nothing more.
        assert!(same(Email, " John@Example.COM ", "john@example.com"));
        assert!(!same(Email, "john@example.com", "jo.hn@ex-ample.com"));
        assert!(!same(Email, "john@example.com", "JOHNEXAMPLE.COM"));
        // A phone keeps its digits.
        assert!(same(Phone, "+1 (555) 010-0199", "15550100199"));
        assert!(!same(Phone, "555-0100", "555-0101"));
        // An identifier is trimmed.
        assert!(same(Identifier, " C-42 ", "C-42"));
        assert!(!same(Identifier, "C-42", "c42"));
        // A hash-rule value: §4's canonical form, as before.
        assert!(same(Hash, "123-45-6789", "123456789"));
        // One text under two kinds is two subjects.
        assert_ne!(
            key.hash_as(Email, "a@b.c"),
            key.hash_as(Identifier, "a@b.c")
        );
        assert_eq!(key.hash_as(Phone, "no digits"), None);
        // An erasure looks the value up under every kind.
        let lookups = key.lookups("John@Example.com");
        let kinds = SubjectKind::ALL.map(|kind| key.hash_as(kind, "John@Example.com"));
        assert_eq!(kinds.iter().flatten().count(), 3, "no digit: no phone");
        assert!(kinds.iter().flatten().all(|h| lookups.contains(h)));
        assert!(!lookups.contains(&key.hash_as(Email, "jo.hn@ex-ample.com").unwrap()));
    }

    #[test]
    fn names_get_their_kind() {
        let (fields, _) = indexer(
            &["Contact-Email", "mobile_phone", "member-no", "SSN"],
            false,
        );
        assert_eq!(fields.kind("contactemail"), Some(SubjectKind::Email));
        assert_eq!(fields.kind("mobilephone"), Some(SubjectKind::Phone));
        assert_eq!(fields.kind("memberno"), Some(SubjectKind::Identifier));
        assert_eq!(fields.kind("ssn"), Some(SubjectKind::Hash));
        assert_eq!(fields.kind("passport"), None);
    }

    #[test]
    fn a_body_that_does_not_parse_is_indexed_as_far_as_it_can_be_read() {
        let (fields, key) = indexer(&["customer_email", "customer_id"], true);
        let deep = "[".repeat(200);
        let body = format!(
            r#"{{"x":{deep}{{"customer_email":"Bob@Example.com","ssn":"123-45-6789","rows":{{"customer_id":["C-1", 7]}},"customer_email":"cut@exa"#
        );
        let mut expected = vec![
            key.hash_as(SubjectKind::Email, "bob@example.com").unwrap(),
            key.hash("123456789").unwrap(),
            key.hash_as(SubjectKind::Identifier, "C-1").unwrap(),
            key.hash_as(SubjectKind::Identifier, "7").unwrap(),
        ];
        expected.sort();
        assert_eq!(unparsed::index(&body, &fields, &key), expected);
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
