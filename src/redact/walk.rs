//! The walk over a payload: name rules on every object key at any depth,
//! value detection on every key, string and integer.

use crate::dedup::DedupKey;
use crate::json::{Json, JsonStr};

use super::detect::Scanner;
use super::luhn::mask_card_number;
use super::mask::{is_hash_hex, mask_last4};
use super::rules::normalize_into;
use super::{Action, Redactor};

/// What happens to the scalars of a subtree.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Value detection (when enabled); the normal case.
    Detect,
    /// Under a `hash` field whose value is an object or array.
    HashLeaves,
    /// Under a `mask_last4` field whose value is an object or array.
    MaskLeaves,
}

/// A pending change to an object's key set, applied after its iteration;
/// each names its entry by position.
enum KeyChange {
    Remove(usize),
    /// Remove the entry and insert `<key>_hash` with this hex digest.
    Hash(usize, String),
}

pub(crate) struct Walker<'r> {
    redactor: &'r Redactor,
    /// Reused for every key's normalised form.
    name: String,
    scanner: Scanner,
    /// Whether anything was rewritten, dropped or hashed.
    changed: bool,
}

impl<'r> Walker<'r> {
    pub(crate) fn new(redactor: &'r Redactor) -> Self {
        Self {
            redactor,
            name: String::new(),
            scanner: Scanner::default(),
            changed: false,
        }
    }

    /// Redacts `payload` in place; true when anything in it changed.
    pub(crate) fn payload(&mut self, payload: &mut Json<'_>) -> bool {
        match payload {
            Json::Object(entries) => self.object(entries, Mode::Detect, true),
            other => self.value(other, Mode::Detect),
        }
        self.changed
    }

    // Recursion depth equals the JSON nesting depth, which the parser caps
    // at 128 (`json::MAX_DEPTH`); a frame here is small.
    fn value(&mut self, value: &mut Json<'_>, mode: Mode) {
        match value {
            Json::Object(entries) => self.object(entries, mode, false),
            Json::Array(items) => {
                for item in items {
                    self.value(item, mode);
                }
            }
            Json::String(text) => {
                let replacement = match mode {
                    Mode::Detect if self.redactor.detect_values => self.scanner.redact_text(text),
                    Mode::Detect => None,
                    Mode::HashLeaves if !is_hash_hex(text) => Some(self.redactor.hash_value(text)),
                    Mode::MaskLeaves if !is_hash_hex(text) => mask_last4(text),
                    Mode::HashLeaves | Mode::MaskLeaves => None,
                };
                // A replaced string is new text: one that held a lone
                // surrogate keeps it as U+FFFD from here on (rare: a card
                // number or SSN beside an unpaired surrogate escape).
                if let Some(replacement) = replacement {
                    *text = JsonStr::from(replacement);
                    self.changed = true;
                }
            }
            Json::Number(number) => {
                let replacement = match mode {
                    Mode::Detect if self.redactor.detect_values => mask_card_number(number),
                    Mode::Detect => None,
                    Mode::HashLeaves => Some(self.redactor.hash_value(number)),
                    Mode::MaskLeaves => mask_last4(number),
                };
                if let Some(replacement) = replacement {
                    *value = Json::String(JsonStr::from(replacement));
                    self.changed = true;
                }
            }
            Json::Null | Json::Bool(_) => {}
        }
    }

    fn object<'a>(
        &mut self,
        entries: &mut Vec<(JsonStr<'a>, Json<'a>)>,
        mode: Mode,
        top_level: bool,
    ) {
        let mut changes: Vec<KeyChange> = Vec::new();
        let mut masked_keys: Vec<usize> = Vec::new();
        for (at, (key, value)) in entries.iter_mut().enumerate() {
            normalize_into(key, &mut self.name);
            let action = self.redactor.names.get(&self.name);
            // A key is a string in the payload too (§4: "every string
            // anywhere"): a card or SSN spelled as a key is masked there.
            // Its rule comes from the name as sent.
            if self.redactor.detect_values {
                if let Some(masked) = self.scanner.redact_text(key) {
                    *key = JsonStr::from(masked);
                    self.changed = true;
                    masked_keys.push(at);
                }
            }
            let child_mode = match action {
                Some(Action::Drop) => {
                    changes.push(KeyChange::Remove(at));
                    continue;
                }
                Some(Action::Hash) => {
                    let digest = match value {
                        Json::String(text) => self.redactor.hash_value(text),
                        Json::Number(text) => self.redactor.hash_value(text),
                        // Null and booleans carry no PII: left as they are.
                        Json::Null | Json::Bool(_) => continue,
                        Json::Array(_) | Json::Object(_) => {
                            self.value(value, Mode::HashLeaves);
                            continue;
                        }
                    };
                    changes.push(KeyChange::Hash(at, digest));
                    continue;
                }
                Some(Action::MaskLast4) => Mode::MaskLeaves,
                Some(Action::Keep) => Mode::Detect,
                None => mode,
            };
            // The identifiers are stored beside the payload as they are; a
            // number (or anything else) under those names gets no pass, nor
            // does a string that is no identifier (a delivery refused and
            // quarantined for it keeps no card in it).
            let identifier = top_level && is_identifier(key, value);
            if child_mode == Mode::Detect && identifier {
                continue;
            }
            self.value(value, child_mode);
        }
        if !masked_keys.is_empty() {
            keep_apart(entries, &masked_keys);
        }
        if changes.is_empty() {
            return;
        }
        self.changed = true;
        // Every removal first (the other keys keep their order), so a
        // `<key>_hash` already present is replaced where it stands.
        let mut hashed = Vec::new();
        let mut removed = changes.into_iter().peekable();
        let mut at = 0;
        entries.retain_mut(|(key, _)| {
            let here = at;
            at += 1;
            let Some(change) = removed.next_if(
                |c| matches!(c, KeyChange::Remove(i) | KeyChange::Hash(i, _) if *i == here),
            ) else {
                return true;
            };
            if let KeyChange::Hash(_, digest) = change {
                // Built from the decoded key: a lone surrogate in it
                // becomes U+FFFD in `<key>_hash`.
                hashed.push((format!("{}_hash", key.as_str()), digest));
            }
            false
        });
        for (key, digest) in hashed {
            let digest = Json::String(JsonStr::from(digest));
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some((_, value)) => *value = digest,
                None => entries.push((JsonStr::from(key), digest)),
            }
        }
    }
}

/// Top-level fields that identify the delivery: `(job_id, event)` is the
/// idempotency key and the seal's associated data, each held to a strict
/// pattern (CONTRACT §2), stored beside the payload as they are. Value
/// detection leaves them alone, when they match their pattern, so that the
/// payload and its columns agree.
/// Every other envelope field (`pattern_id`, `status`, the timestamps) is
/// scanned like any string; its column is left empty when it holds a card
/// or SSN ([`super::holds_card_or_ssn`]).
fn is_identifier(key: &str, value: &Json<'_>) -> bool {
    match (key, value) {
        ("event", Json::String(v)) => DedupKey::is_event(v),
        ("job_id", Json::String(v)) => DedupKey::is_job_id(v),
        _ => false,
    }
}

/// Keeps the keys masked at `masked` (positions in `entries`) apart from
/// every other key of their object: one that now equals another gets the
/// first free suffix `#2`, `#3`, … (`{"4111111111111111":1,
/// "4111-1111-1111-1111":2}` becomes `{"************1111":1,
/// "************1111#2":2}`). Both values stay, and a second redaction
/// finds nothing to fold or mask.
fn keep_apart(entries: &mut [(JsonStr<'_>, Json<'_>)], masked: &[usize]) {
    let mut taken: std::collections::HashSet<String> = entries
        .iter()
        .enumerate()
        .filter(|(at, _)| !masked.contains(at))
        .map(|(_, (k, _))| k.as_str().to_owned())
        .collect();
    for &at in masked {
        let key = entries[at].0.as_str().to_owned();
        if taken.insert(key.clone()) {
            continue;
        }
        let free = (2..)
            .map(|n| format!("{key}#{n}"))
            .find(|k| !taken.contains(k))
            .unwrap_or_default();
        taken.insert(free.clone());
        entries[at].0 = JsonStr::from(free);
    }
}
