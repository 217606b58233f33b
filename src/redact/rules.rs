//! Field-name rules: the defaults of CONTRACT §4, name normalisation and the
//! lookup table the walker consults once per object key.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{Action, RedactSettings, Rule};

/// Names whose value is replaced by a keyed hash under `<name>_hash`.
const HASH_NAMES: &[&str] = &[
    "ssn",
    "social_security_number",
    "social_security_no",
    "ss_number",
    "us_ssn",
    "itin",
    "passport",
    "passport_number",
    "passport_no",
    "drivers_license",
    "driver_license",
    "drivers_license_number",
    "dl_number",
];

/// Names whose digits are masked but for the last four.
const MASK_NAMES: &[&str] = &[
    "credit_card",
    "card_number",
    "credit_card_number",
    "cc_number",
    "cc_num",
    "cc_no",
    "card_no",
    "card_pan",
    "pan",
    "primary_account_number",
    "debit_card_number",
    "payment_card_number",
    "iban",
    "bank_account",
    "bank_account_number",
];

/// Names removed outright: data that must never be stored, even masked.
const DROP_NAMES: &[&str] = &[
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "csc",
    "cvd",
    "cvn",
    "cav2",
    "security_code",
    "card_security_code",
    "card_verification_value",
    "card_verification_code",
    "card_code",
    "pin",
    "pin_block",
    "track_data",
    "track1",
    "track2",
    "magstripe",
    "mrz",
    "mrz_line1",
    "mrz_line2",
    "pdf417",
    "barcode_data",
];

/// The built-in rules, in snake_case as documented.
pub fn default_rules() -> Vec<Rule> {
    [
        (HASH_NAMES, Action::Hash),
        (MASK_NAMES, Action::MaskLast4),
        (DROP_NAMES, Action::Drop),
    ]
    .into_iter()
    .map(|(names, action)| Rule {
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        action,
    })
    .collect()
}

/// Normalise a field name: drop every char that is not a letter or digit
/// (ASCII or Unicode), lowercase the rest.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    normalize_into(name, &mut out);
    out
}

/// [`normalize_name`] into a caller-owned buffer, so the walker normalises
/// every key without allocating.
pub(crate) fn normalize_into(name: &str, out: &mut String) {
    out.clear();
    if name.is_ascii() {
        out.extend(
            name.bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| char::from(b.to_ascii_lowercase())),
        );
    } else {
        for c in name.chars().filter(|c| c.is_alphanumeric()) {
            out.extend(c.to_lowercase());
        }
    }
}

/// FNV-1a: the table is built once from config and only read afterwards, so
/// a hostile payload cannot grow it; its keys are short and SipHash costs
/// more than the rest of a lookup.
#[derive(Default)]
pub(crate) struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// Normalised name → action, with a cheap length filter in front of the map.
pub(crate) struct NameTable {
    actions: HashMap<String, Action, BuildHasherDefault<Fnv1a>>,
    /// Bit `n` set when some rule name has `n` bytes (names of 64+ bytes set bit 63).
    lengths: u64,
}

impl NameTable {
    pub(crate) fn new(settings: &RedactSettings) -> Self {
        let mut actions = HashMap::default();
        let defaults = if settings.default_rules {
            default_rules()
        } else {
            Vec::new()
        };
        // Later rules override earlier ones (and the defaults) for one name.
        for rule in defaults.iter().chain(settings.rules.iter()) {
            for name in &rule.names {
                let normalised = normalize_name(name);
                if !normalised.is_empty() {
                    actions.insert(normalised, rule.action);
                }
            }
        }
        let lengths = actions
            .keys()
            .fold(0u64, |acc, k| acc | length_bit(k.len()));
        Self { actions, lengths }
    }

    /// The action for an already normalised name.
    pub(crate) fn get(&self, normalised: &str) -> Option<Action> {
        if normalised.is_empty() || self.lengths & length_bit(normalised.len()) == 0 {
            return None;
        }
        self.actions.get(normalised).copied()
    }

    /// Every normalised name whose action is `action`, sorted.
    pub(crate) fn names_with(&self, action: Action) -> Vec<String> {
        let mut names: Vec<String> = self
            .actions
            .iter()
            .filter(|(_, a)| **a == action)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    pub(crate) fn len(&self) -> usize {
        self.actions.len()
    }
}

pub(crate) fn length_bit(len: usize) -> u64 {
    1u64 << len.min(63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_spellings_to_one_name() {
        for spelling in [
            "credit_card",
            "creditCard",
            "Credit-Card",
            "CREDIT CARD",
            "credit.card",
            " credit__card ",
        ] {
            assert_eq!(normalize_name(spelling), "creditcard", "{spelling:?}");
        }
        assert_eq!(normalize_name("Straße_Nr"), "straßenr");
        assert_eq!(normalize_name("ÜBER-Name"), "übername");
        assert_eq!(normalize_name("__--"), "");
        assert_eq!(normalize_name("mrz_line1"), "mrzline1");
    }

    #[test]
    fn default_rules_cover_the_contract_lists() {
        let rules = default_rules();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].names.len(), 13);
        assert_eq!(rules[1].names.len(), 15);
        assert_eq!(rules[2].names.len(), 24);
        let table = NameTable::new(&RedactSettings::default());
        assert_eq!(table.len(), 13 + 15 + 24);
        for not_default in [
            "cid",
            "accountnumber",
            "documentnumber",
            "taxid",
            "vat",
            "email",
            "phone",
            "dob",
        ] {
            assert_eq!(table.get(not_default), None, "{not_default}");
        }
    }

    #[test]
    fn later_rules_override_defaults() {
        let settings = RedactSettings {
            rules: vec![
                Rule {
                    names: vec!["PIN".into()],
                    action: Action::Hash,
                },
                Rule {
                    names: vec!["p-i-n".into(), "email".into()],
                    action: Action::Keep,
                },
            ],
            ..RedactSettings::default()
        };
        let table = NameTable::new(&settings);
        assert_eq!(table.get("pin"), Some(Action::Keep));
        assert_eq!(table.get("email"), Some(Action::Keep));
        assert_eq!(table.get("cvv"), Some(Action::Drop));
    }

    #[test]
    fn defaults_can_be_switched_off() {
        let settings = RedactSettings {
            default_rules: false,
            ..RedactSettings::default()
        };
        let table = NameTable::new(&settings);
        assert_eq!(table.len(), 0);
        assert_eq!(table.get("ssn"), None);
    }
}
