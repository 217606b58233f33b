//! PII redaction of delivery bodies before they are encrypted (CONTRACT §4).
//!
//! Two mechanisms, applied in one walk over the payload:
//!
//! * **Name rules** — every object key, at any depth, is normalised
//!   ([`normalize_name`]) and looked up: `hash` replaces `X` by `X_hash` (a
//!   keyed HMAC of the canonical value), `mask_last4` keeps only the last
//!   four digits, `drop` removes the field, `keep` cancels a default.
//! * **Value detection** — every key, every other string (and every number
//!   whose value is an integer, however written) is scanned for Luhn-valid
//!   card numbers and US SSNs, which are masked in place (a key's name rule
//!   is chosen from the key as sent). Only the top-level identifiers
//!   `event` and `job_id` are not rewritten when they match their strict
//!   patterns: they are the idempotency key, stored beside the payload as
//!   they are (a delivery refused for either is quarantined scanned).
//!   `pattern_id` and `status` are scanned like any string, and their
//!   plaintext columns are left empty when they hold a card or SSN.
//!
//! Choices the contract leaves open:
//!
//! * `hash` of `null` or a boolean leaves `X` as it is (no PII to hide).
//! * `hash` or `mask_last4` of an object/array keeps the key `X` and applies
//!   to every string/number leaf inside; nested name rules still apply
//!   there (a `cvv` inside a masked `credit_card` is dropped). Leaves that
//!   are already a 64-hex-digit digest are left alone, so a second pass
//!   changes nothing.
//! * `mask_last4` of a string with no digit leaves it unchanged.
//! * Value detection uses ASCII digits only; `mask_last4` masks digits of
//!   any script.
//! * A string whose escapes hold a lone surrogate (`"\ud800"`) is read as
//!   U+FFFD there and written back with that escape (every other escape
//!   written as `JSON.stringify` writes it, so the text shows the digits a
//!   reader sees); if value detection masks something in it, the new string
//!   keeps U+FFFD instead.
//!
//! Redaction is idempotent: `redact(redact(x)) == redact(x)`.

mod detect;
mod luhn;
mod mask;
mod rules;
mod tolerant;
mod walk;

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use rules::{default_rules, normalize_name};
// The subject index (`crate::subjects`) hashes exactly as the `hash` action.
pub(crate) use mask::canonical;
pub(crate) use rules::{length_bit, normalize_into, Fnv1a};

use crate::json::Json;

/// What a rule does to a field it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Action {
    /// Replace `X` by `X_hash` = HMAC-SHA256(hash key, canonical value).
    Hash,
    /// Keep only the last four digits: `************1111`.
    MaskLast4,
    /// Remove the field.
    Drop,
    /// Override a default so the field is left alone (value detection still
    /// applies to it).
    Keep,
}

impl TryFrom<String> for Action {
    type Error = String;

    /// The config loader's own message for an unknown variant names
    /// neither the valid ones nor the key well: this one lists them.
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "hash" => Ok(Self::Hash),
            "mask_last4" => Ok(Self::MaskLast4),
            "drop" => Ok(Self::Drop),
            "keep" => Ok(Self::Keep),
            _ => Err(format!(
                "unknown action `{s}`; valid values: hash, mask_last4, drop, keep"
            )),
        }
    }
}

/// One `[[redact.rules]]` entry from config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Field names, matched after [`normalize_name`].
    pub names: Vec<String>,
    /// What happens to a field with one of these names.
    pub action: Action,
}

/// The `[redact]` config section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactSettings {
    /// Apply the built-in rules of CONTRACT §4 (default true).
    #[serde(default = "default_true")]
    pub default_rules: bool,
    /// Detect card numbers and SSNs by value in free text (default true).
    #[serde(default = "default_true")]
    pub detect_values: bool,
    /// Extra rules; later rules override earlier ones and the defaults for
    /// the same normalised name.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn default_true() -> bool {
    true
}

impl Default for RedactSettings {
    fn default() -> Self {
        Self {
            default_rules: true,
            detect_values: true,
            rules: Vec::new(),
        }
    }
}

impl RedactSettings {
    /// Rejects a rule with no names, or a name with no letter or digit.
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.names.is_empty() {
                return Err(format!("redact.rules[{i}].names must not be empty"));
            }
            if let Some(name) = rule.names.iter().find(|n| normalize_name(n).is_empty()) {
                return Err(format!(
                    "redact.rules[{i}].names: {name:?} has no letter or digit"
                ));
            }
        }
        Ok(())
    }
}

/// The normalised names the `hash` action applies to under `settings`
/// (defaults included, overrides applied).
pub fn hash_rule_names(settings: &RedactSettings) -> Vec<String> {
    rules::NameTable::new(settings).names_with(Action::Hash)
}

/// Applies the redaction rules; built once at start-up, shared by requests.
pub struct Redactor {
    names: rules::NameTable,
    detect_values: bool,
    /// HMAC state after absorbing the key, cloned for every digest.
    hmac: Hmac<Sha256>,
}

// Written by hand so the key state can never reach a log.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &self.names.len())
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// `hash_key`: the decoded `IMGGO_HASH_KEY` bytes (at least 32, checked
    /// where the secret is loaded).
    pub fn new(settings: &RedactSettings, hash_key: &[u8]) -> Self {
        Self {
            names: rules::NameTable::new(settings),
            detect_values: settings.detect_values,
            hmac: keyed_hmac(hash_key),
        }
    }

    /// Redacts a whole delivery body in place; true when anything in it
    /// changed (when not, the body's own text may be stored as it came).
    #[must_use = "an unchanged body is stored as its own text"]
    pub fn redact_json(&self, payload: &mut Json<'_>) -> bool {
        walk::Walker::new(self).payload(payload)
    }

    /// [`Self::redact_json`] for a `serde_json::Value` (tools and tests;
    /// the request path never builds one). Goes through the JSON text, so
    /// the result is exactly what a delivery with that body would store.
    pub fn redact(&self, payload: &mut serde_json::Value) {
        let text = payload.to_string();
        // Text a Value wrote always parses back, both ways.
        if let Ok(mut tree) = Json::parse(text.as_bytes()) {
            let _changed = self.redact_json(&mut tree);
            if let Ok(redacted) = serde_json::from_slice(&tree.to_vec()) {
                *payload = redacted;
            }
        }
    }

    /// Raw text that does not parse as JSON, redacted by the tolerant
    /// tokenizer ([`tolerant`]): name rules on every key it can read, value
    /// detection on every string and number, and every digit run that could
    /// be a card masked in what it cannot read.
    pub fn redact_unparsed(&self, text: &str) -> String {
        tolerant::redact(self, text)
    }

    /// Lowercase hex HMAC-SHA256(hash key, canonical(value)), as stored by
    /// the `hash` action; canonical = letters and digits only, uppercased.
    pub fn hash_value(&self, value: &str) -> String {
        let mut mac = self.hmac.clone();
        mac.update(mask::canonical(value).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Whether value detection finds a card number or a US SSN in `text`: such
/// a text never goes to a plaintext column (whatever `detect_values` says:
/// a column is not sealed).
pub fn holds_card_or_ssn(text: &str) -> bool {
    detect::Scanner::default().redact_text(text).is_some() || luhn::mask_card_number(text).is_some()
}

/// HMAC-SHA256 keyed with `key` exactly as RFC 2104 does it (a key longer
/// than the 64-byte block is hashed first, a shorter one zero-padded); done
/// here because `Hmac::new` over a full block cannot fail, whereas
/// `new_from_slice` returns a `Result` we would have to unwrap.
pub(crate) fn keyed_hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (longer ones are hashed first).
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_key() {
        let r = Redactor::new(&RedactSettings::default(), &[0xAB; 32]);
        let shown = format!("{r:?}");
        assert_eq!(shown, "Redactor { rules: 52, .. }");
    }

    #[test]
    fn redactor_is_shared_between_requests() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Redactor>();
    }

    #[test]
    fn validate_names_the_rule() {
        let mut s = RedactSettings::default();
        assert_eq!(s.validate(), Ok(()));
        s.rules.push(Rule {
            names: vec!["email".into()],
            action: Action::Hash,
        });
        s.rules.push(Rule {
            names: vec![],
            action: Action::Drop,
        });
        let err = s.validate().unwrap_err();
        assert!(err.contains("redact.rules[1].names"), "{err}");
        s.rules[1].names = vec!["ok".into(), "_-_".into()];
        let err = s.validate().unwrap_err();
        assert!(err.contains("redact.rules[1].names"), "{err}");
    }
}
