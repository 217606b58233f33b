//! Name rules (`hash`, `mask_last4`, `drop`, `keep`), settings and the HMAC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hmac::{Hmac, Mac};
use imggo_receiver::json::Json;
use imggo_receiver::redact::{
    default_rules, normalize_name, Action, RedactSettings, Redactor, Rule,
};
use serde_json::{json, Value};
use sha2::Sha256;

const KEY: &[u8] = b"test-hash-key-0123456789-abcdefgh";

fn redactor() -> Redactor {
    Redactor::new(&RedactSettings::default(), KEY)
}

/// HMAC computed here, independently of the code under test, over canonical
/// text written by hand.
fn hmac_hex(canonical: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Redacts and checks that a second pass changes nothing.
fn redacted(mut payload: Value) -> Value {
    let r = redactor();
    r.redact(&mut payload);
    let mut again = payload.clone();
    r.redact(&mut again);
    assert_eq!(again, payload, "second pass changed the payload");
    payload
}

/// snake, camel, kebab, upper and spaced spellings of a snake_case name.
fn spellings(snake: &str) -> Vec<String> {
    let camel: String = snake
        .split('_')
        .enumerate()
        .map(|(i, part)| {
            let mut chars = part.chars();
            match (i, chars.next()) {
                (0, Some(c)) => c.to_string() + chars.as_str(),
                (_, Some(c)) => c.to_ascii_uppercase().to_string() + chars.as_str(),
                (_, None) => String::new(),
            }
        })
        .collect();
    vec![
        snake.to_owned(),
        camel,
        snake.replace('_', "-"),
        snake.to_uppercase(),
        snake.replace('_', " ").to_uppercase(),
    ]
}

#[test]
fn hash_matches_an_independent_hmac() {
    let r = redactor();
    // Literal computed outside Rust (Python hmac) for the same key.
    let literal = "e36a2791f2b8bc50544b24f1efefc9af6ca66f5fc265c998795b781bf932ac71";
    assert_eq!(hmac_hex("123456789"), literal);
    assert_eq!(r.hash_value("123-45-6789"), literal);
    assert_eq!(r.hash_value(" 123 45 6789 "), literal);
    assert_eq!(r.hash_value("x1234567"), hmac_hex("X1234567"));
    assert_eq!(r.hash_value("ab-123.456"), hmac_hex("AB123456"));
    assert_eq!(r.hash_value(""), hmac_hex(""));
    assert_ne!(
        Redactor::new(&RedactSettings::default(), &[7u8; 32]).hash_value("123456789"),
        literal
    );
}

#[test]
fn every_hash_name_in_every_spelling() {
    let names = &default_rules()[0];
    assert_eq!(names.action, Action::Hash);
    for name in &names.names {
        for key in spellings(name) {
            let out = redacted(json!({"manifest": {"holder": {&key: "123-45-6789"}}}));
            let want =
                json!({"manifest": {"holder": {format!("{key}_hash"): hmac_hex("123456789")}}});
            assert_eq!(out, want, "{key}");
            // Top level too.
            let out = redacted(json!({&key: "X123-4567"}));
            assert_eq!(
                out,
                json!({format!("{key}_hash"): hmac_hex("X1234567")}),
                "{key}"
            );
        }
    }
}

#[test]
fn every_mask_name_in_every_spelling() {
    let names = &default_rules()[1];
    assert_eq!(names.action, Action::MaskLast4);
    for name in &names.names {
        for key in spellings(name) {
            let out = redacted(json!({"items": [{&key: "4111 1111 1111 1111"}, {&key: "12"}]}));
            assert_eq!(
                out,
                json!({"items": [{&key: "************1111"}, {&key: "**"}]}),
                "{key}"
            );
        }
    }
}

#[test]
fn every_drop_name_in_every_spelling() {
    let names = &default_rules()[2];
    assert_eq!(names.action, Action::Drop);
    for name in &names.names {
        for key in spellings(name) {
            let out = redacted(json!({&key: "123", "manifest": [{&key: {"a": 1}, "b": 2}]}));
            assert_eq!(out, json!({"manifest": [{"b": 2}]}), "{key}");
        }
    }
}

#[test]
fn names_that_are_not_defaults_are_kept() {
    let payload = json!({
        "cid": "123", "account_number": "ACC-0001", "document_number": "INV-2026-0001",
        "tax_id": "DE123456789", "vat": "19", "email": "a@b.example", "phone": "+1 555 0100",
        "dob": "1990-01-01", "card": "visa", "ssnhash": "x", "ssn_hash": "y"
    });
    assert_eq!(redacted(payload.clone()), payload);
}

#[test]
fn iban_masks_its_digits() {
    let out = redacted(json!({"IBAN": "DE89 3704 0044 0532 0130 00", "bankAccount": "N/A"}));
    assert_eq!(
        out,
        json!({"IBAN": "****************3000", "bankAccount": "N/A"})
    );
}

#[test]
fn number_values() {
    let out = redacted(json!({
        "ssn": 123456789, "card_number": 4111111111111111u64, "pan": 1234,
        "cvv": 123, "passport": 1.5
    }));
    assert_eq!(
        out,
        json!({
            "ssn_hash": hmac_hex("123456789"), "card_number": "************1111",
            "pan": "****", "passport_hash": hmac_hex("15")
        })
    );
}

#[test]
fn existing_hash_field_is_overwritten() {
    let out = redacted(
        json!({"ssn": "123-45-6789", "ssn_hash": "attacker-chosen", "a": {"SSN_hash": 1, "SSN": "123456789"}}),
    );
    assert_eq!(
        out,
        json!({"ssn_hash": hmac_hex("123456789"), "a": {"SSN_hash": hmac_hex("123456789")}})
    );
}

/// On the request path's tree, checked as stored text: one `ssn_hash`, in
/// the place the body gave it, holding our digest.
#[test]
fn existing_hash_field_is_replaced_where_it_stands() {
    let body = br#"{"ssn":"123-45-6789","x":0,"ssn_hash":"attacker-chosen","z":1}"#;
    let mut tree = Json::parse(body).unwrap();
    let _changed = redactor().redact_json(&mut tree);
    let expected = format!(r#"{{"x":0,"ssn_hash":"{}","z":1}}"#, hmac_hex("123456789"));
    assert_eq!(String::from_utf8(tree.to_vec()).unwrap(), expected);
}

/// A body that repeats a PII key (and hides the first copy behind the
/// second) stores one `_hash` of the last value, appended as every
/// `_hash` is, and neither plaintext.
#[test]
fn repeated_pii_keys_leave_no_plaintext() {
    let body = br#"{"ssn":"123-45-6789","card_number":"4111111111111111","ssn":"219-09-9999","card_number":"4012888888881881"}"#;
    let mut tree = Json::parse(body).unwrap();
    let _changed = redactor().redact_json(&mut tree);
    let stored = String::from_utf8(tree.to_vec()).unwrap();
    let expected = format!(
        r#"{{"card_number":"************1881","ssn_hash":"{}"}}"#,
        hmac_hex("219099999")
    );
    assert_eq!(stored, expected);
}

#[test]
fn empty_strings_null_and_booleans() {
    let out = redacted(json!({
        "ssn": "", "card_number": "", "cvv": "",
        "passport": null, "iban": null, "pin": null,
        "itin": true, "pan": false, "mrz": false
    }));
    assert_eq!(
        out,
        json!({
            "ssn_hash": hmac_hex(""), "card_number": "",
            "passport": null, "iban": null,
            "itin": true, "pan": false
        })
    );
}

#[test]
fn object_and_array_values_are_redacted_leaf_by_leaf() {
    let out = redacted(json!({
        "passport": {"number": "x123-4567", "country": "DE", "issued": 2019, "valid": true,
                     "ssn": "123-45-6789", "cvv": "1", "pan": "4111111111111111"},
        "credit_card": {"number": "4111 1111 1111 1111", "cvv": "123", "holder": "Jane Roe",
                        "exp": "12/26", "ids": [4111111111111111u64, null]},
        "ssn": ["123-45-6789", ["234567890"]]
    }));
    assert_eq!(
        out,
        json!({
            "passport": {"number": hmac_hex("X1234567"), "country": hmac_hex("DE"),
                         "issued": hmac_hex("2019"), "valid": true,
                         "ssn_hash": hmac_hex("123456789"), "pan": "************1111"},
            "credit_card": {"number": "************1111", "holder": "Jane Roe",
                            "exp": "****", "ids": ["************1111", null]},
            "ssn": [hmac_hex("123456789"), [hmac_hex("234567890")]]
        })
    );
}

#[test]
fn already_masked_values_are_unchanged() {
    let payload = json!({"card_number": "************1111", "pan": "****", "iban": "*1"});
    assert_eq!(redacted(payload.clone()), payload);
}

#[test]
fn deep_nesting_in_arrays_and_objects() {
    let out = redacted(
        json!({"a": [{"b": [[{"c": {"creditCardNumber": "5555555555554444", "CVV2": 1}}]]}]}),
    );
    assert_eq!(
        out,
        json!({"a": [{"b": [[{"c": {"creditCardNumber": "************4444"}}]]}]})
    );
    // As deep as serde_json parses.
    let deep = format!(
        "{}{}{}",
        "[".repeat(127),
        "\"4111111111111111\"",
        "]".repeat(127)
    );
    let mut value: Value = serde_json::from_str(&deep).unwrap();
    redactor().redact(&mut value);
    assert!(value.to_string().contains("************1111"));
}

#[test]
fn keep_overrides_a_default_but_detection_still_applies() {
    let settings = RedactSettings {
        rules: vec![Rule {
            names: vec!["CVV".into(), "pan".into()],
            action: Action::Keep,
        }],
        ..RedactSettings::default()
    };
    let mut payload = json!({"cvv": "123", "pan": "4111 1111 1111 1111", "cvc": "1"});
    Redactor::new(&settings, KEY).redact(&mut payload);
    assert_eq!(payload, json!({"cvv": "123", "pan": "************1111"}));
}

#[test]
fn custom_rules_add_and_later_rules_win() {
    let settings = RedactSettings {
        rules: vec![
            Rule {
                names: vec!["email".into(), "date_of_birth".into()],
                action: Action::Hash,
            },
            Rule {
                names: vec!["Email".into()],
                action: Action::Drop,
            },
            Rule {
                names: vec!["ssn".into()],
                action: Action::MaskLast4,
            },
        ],
        ..RedactSettings::default()
    };
    let mut payload =
        json!({"email": "a@b.example", "dateOfBirth": "1990-01-31", "ssn": "123-45-6789"});
    Redactor::new(&settings, KEY).redact(&mut payload);
    assert_eq!(
        payload,
        json!({"dateOfBirth_hash": hmac_hex("19900131"), "ssn": "*****6789"})
    );
}

#[test]
fn default_rules_can_be_switched_off() {
    let settings = RedactSettings {
        default_rules: false,
        ..RedactSettings::default()
    };
    let mut payload = json!({"cvv": "123", "ssn": "123-45-6789", "pan": "4111111111111111"});
    Redactor::new(&settings, KEY).redact(&mut payload);
    assert_eq!(
        payload,
        json!({"cvv": "123", "ssn": "***-**-6789", "pan": "************1111"})
    );
}

#[test]
fn settings_deserialize_with_defaults_and_reject_unknown_fields() {
    let s: RedactSettings = serde_json::from_value(json!({})).unwrap();
    assert_eq!(s, RedactSettings::default());
    assert!(s.default_rules && s.detect_values && s.rules.is_empty());
    let s: RedactSettings = serde_json::from_value(json!({
        "detect_values": false,
        "rules": [{"names": ["email"], "action": "hash"}, {"names": ["x"], "action": "mask_last4"}]
    }))
    .unwrap();
    assert!(!s.detect_values);
    assert_eq!(s.rules[1].action, Action::MaskLast4);
    assert!(serde_json::from_value::<RedactSettings>(json!({"detect": true})).is_err());
    assert!(serde_json::from_value::<Rule>(json!({"names": [], "action": "scramble"})).is_err());
    assert!(
        serde_json::from_value::<Rule>(json!({"names": ["a"], "action": "drop", "x": 1})).is_err()
    );
}

#[test]
fn validate_rejects_empty_names() {
    let mut s = RedactSettings::default();
    s.rules.push(Rule {
        names: vec!["ok".into()],
        action: Action::Drop,
    });
    s.rules.push(Rule {
        names: vec![],
        action: Action::Drop,
    });
    assert!(s.validate().unwrap_err().contains("redact.rules[1].names"));
    s.rules[1].names.push("--".into());
    assert!(s.validate().unwrap_err().contains("redact.rules[1].names"));
    s.rules[1].names = vec!["a".into()];
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn normalize_name_examples() {
    assert_eq!(normalize_name("card_no"), "cardno");
    assert_eq!(normalize_name("cardNo"), "cardno");
    assert_eq!(normalize_name("CARD-NO"), "cardno");
    assert_eq!(normalize_name("Card No."), "cardno");
}

#[test]
fn debug_does_not_show_the_key() {
    let r = Redactor::new(
        &RedactSettings::default(),
        b"super-secret-key-material-0123456789",
    );
    let shown = format!("{r:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("rules: 52"), "{shown}");
}

#[test]
fn production_dialect_example() {
    let out = redacted(json!({
        "event": "job.succeeded", "job_id": "0b6f2c1e-3d4a-4e5f-8a9b-1c2d3e4f5a6b",
        "pattern_id": "7c8d9e0f-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
        "manifest": {
            "customer": {"name": "Jane Roe", "SSN": "123-45-6789"},
            "payment": {"cardNumber": "4111-1111-1111-1111", "cvv": "737", "exp": "12/26"},
            "note": "Refund to 5555 5555 5555 4444 please"
        },
        "error": null, "timestamp": "2026-11-24T10:00:00Z"
    }));
    assert_eq!(
        out,
        json!({
            "event": "job.succeeded", "job_id": "0b6f2c1e-3d4a-4e5f-8a9b-1c2d3e4f5a6b",
            "pattern_id": "7c8d9e0f-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
            "manifest": {
                "customer": {"name": "Jane Roe", "SSN_hash": hmac_hex("123456789")},
                "payment": {"cardNumber": "************1111", "exp": "12/26"},
                "note": "Refund to ************4444 please"
            },
            "error": null, "timestamp": "2026-11-24T10:00:00Z"
        })
    );
}

#[test]
fn untouched_keys_keep_their_order() {
    let r = Redactor::new(&RedactSettings::default(), &[7u8; 32]);
    let mut payload: Value =
        serde_json::from_str(r#"{"z":1,"cvv":"123","a":2,"ssn":"123-45-6789","m":3}"#).unwrap();
    r.redact(&mut payload);
    let keys: Vec<&str> = payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["z", "a", "m", "ssn_hash"]);
}

/// Lone surrogates (as JSON.stringify writes them) are read as U+FFFD by
/// the rules and written back with their escapes, unless the string that
/// holds them is rewritten: then it is new text, with U+FFFD.
#[test]
fn lone_surrogates_survive_unless_their_string_is_rewritten() {
    let body = br#"{"note\ud800":"x\udc00y","card":"\ud800 4111 1111 1111 1111","ssn\udfff":"123-45-6789","pin":"\ud800"}"#;
    let mut tree = Json::parse(body).unwrap();
    let _changed = redactor().redact_json(&mut tree);
    let expected = format!(
        "{{\"note\\ud800\":\"x\\udc00y\",\"card\":\"\u{FFFD} ************1111\",\"ssn\u{FFFD}_hash\":\"{}\"}}",
        hmac_hex("123456789")
    );
    assert_eq!(String::from_utf8(tree.to_vec()).unwrap(), expected);
}
