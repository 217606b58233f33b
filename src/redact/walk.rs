//! The walk over a payload: name rules on every object key at any depth,
//! value detection on every other string and integer.

use serde_json::{Map, Value};

use super::detect::Scanner;
use super::luhn::mask_card_number;
use super::mask::{is_hash_hex, mask_last4};
use super::rules::normalize_into;
use super::{Action, Redactor};

/// Top-level fields that identify the delivery and are stored in plaintext
/// beside the payload: value detection must not rewrite them.
const ENVELOPE: &[&str] = &[
    "event",
    "job_id",
    "pattern_id",
    "status",
    "timestamp",
    "created_at",
    "completed_at",
];

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

/// A pending change to an object's key set, applied after its iteration.
enum KeyChange {
    Remove(String),
    /// Remove the key and insert `<key>_hash` with this hex digest.
    Hash(String, String),
}

pub(crate) struct Walker<'r> {
    redactor: &'r Redactor,
    /// Reused for every key's normalised form.
    name: String,
    scanner: Scanner,
}

impl<'r> Walker<'r> {
    pub(crate) fn new(redactor: &'r Redactor) -> Self {
        Self {
            redactor,
            name: String::new(),
            scanner: Scanner::default(),
        }
    }

    pub(crate) fn payload(&mut self, payload: &mut Value) {
        match payload {
            Value::Object(map) => self.object(map, Mode::Detect, true),
            other => self.value(other, Mode::Detect),
        }
    }

    // Recursion depth equals the JSON nesting depth, which serde_json's
    // parser caps at 128; a frame here is small.
    fn value(&mut self, value: &mut Value, mode: Mode) {
        match value {
            Value::Object(map) => self.object(map, mode, false),
            Value::Array(items) => {
                for item in items {
                    self.value(item, mode);
                }
            }
            Value::String(text) => match mode {
                Mode::Detect => {
                    if self.redactor.detect_values {
                        if let Some(redacted) = self.scanner.redact_text(text) {
                            *text = redacted;
                        }
                    }
                }
                Mode::HashLeaves => {
                    if !is_hash_hex(text) {
                        *text = self.redactor.hash_value(text);
                    }
                }
                Mode::MaskLeaves => {
                    if !is_hash_hex(text) {
                        if let Some(masked) = mask_last4(text) {
                            *text = masked;
                        }
                    }
                }
            },
            Value::Number(number) => {
                let replacement = match mode {
                    Mode::Detect if self.redactor.detect_values => mask_card_number(number),
                    Mode::Detect => None,
                    Mode::HashLeaves => Some(self.redactor.hash_value(&number.to_string())),
                    Mode::MaskLeaves => mask_last4(&number.to_string()),
                };
                if let Some(replacement) = replacement {
                    *value = Value::String(replacement);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn object(&mut self, map: &mut Map<String, Value>, mode: Mode, top_level: bool) {
        let mut changes: Vec<KeyChange> = Vec::new();
        for (key, value) in map.iter_mut() {
            normalize_into(key, &mut self.name);
            let action = self.redactor.names.get(&self.name);
            let child_mode = match action {
                Some(Action::Drop) => {
                    changes.push(KeyChange::Remove(key.clone()));
                    continue;
                }
                Some(Action::Hash) => {
                    let digest = match value {
                        Value::String(text) => self.redactor.hash_value(text),
                        Value::Number(number) => self.redactor.hash_value(&number.to_string()),
                        // Null and booleans carry no PII: left as they are.
                        Value::Null | Value::Bool(_) => continue,
                        Value::Array(_) | Value::Object(_) => {
                            self.value(value, Mode::HashLeaves);
                            continue;
                        }
                    };
                    changes.push(KeyChange::Hash(key.clone(), digest));
                    continue;
                }
                Some(Action::MaskLast4) => Mode::MaskLeaves,
                Some(Action::Keep) => Mode::Detect,
                None => mode,
            };
            // Envelope strings are stored beside the payload as they are; a
            // number (or anything else) under those names gets no pass.
            let envelope_scalar =
                top_level && matches!(value, Value::String(_)) && ENVELOPE.contains(&key.as_str());
            if child_mode == Mode::Detect && envelope_scalar {
                continue;
            }
            self.value(value, child_mode);
        }
        if changes.is_empty() {
            return;
        }
        // Every removal first, so a `<key>_hash` already present is replaced.
        for change in &changes {
            let (KeyChange::Remove(key) | KeyChange::Hash(key, _)) = change;
            // shift_remove: the other keys keep the order they came in.
            map.shift_remove(key);
        }
        for change in changes {
            if let KeyChange::Hash(mut key, digest) = change {
                key.push_str("_hash");
                map.insert(key, Value::String(digest));
            }
        }
    }
}
