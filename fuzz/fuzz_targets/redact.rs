//! Arbitrary bytes → JSON → redact (or, for bytes that do not parse, the
//! tolerant redaction of quarantined bodies, which must not panic): never
//! panics, a second pass changes nothing, and the request path's parser (`Json`) accepts what
//! `serde_json::Value` accepts and writes the same text back.
//!
//! Where the two may differ on purpose, the oracle allows for it: `Json`
//! also accepts escaped lone surrogates and exactly 128 levels of nesting
//! (serde_json stops at 127), keeps `$serde_json::private::*` keys as plain
//! keys (serde_json treats them as magic), and keeps a number's exponent as
//! written (serde_json respells `1E5` as `1e+5`).
#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use imggo_receiver::json::Json;
use imggo_receiver::redact::{RedactSettings, Redactor};
use libfuzzer_sys::fuzz_target;

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| Redactor::new(&RedactSettings::default(), &[0x42; 32]))
}

/// What in a tree serde_json reads differently.
#[derive(Default)]
struct Beyond {
    lone_surrogate: bool,
    magic_key: bool,
    depth: usize,
}

fn survey(value: &Json<'_>, depth: usize, found: &mut Beyond) {
    match value {
        Json::String(s) => found.lone_surrogate |= s.raw().is_some(),
        Json::Array(items) => {
            found.depth = found.depth.max(depth + 1);
            for item in items {
                survey(item, depth + 1, found);
            }
        }
        Json::Object(entries) => {
            found.depth = found.depth.max(depth + 1);
            for (key, item) in entries {
                found.lone_surrogate |= key.raw().is_some();
                found.magic_key |= key.starts_with("$serde_json::private::");
                survey(item, depth + 1, found);
            }
        }
        Json::Null | Json::Bool(_) | Json::Number(_) => {}
    }
}

/// Exponents as serde_json (arbitrary_precision) writes them: `e`, signed.
fn respell_exponents(value: &mut Json<'_>) {
    match value {
        Json::Number(text) => {
            if let Some(at) = text.find(['e', 'E']) {
                let (mantissa, exponent) = text.split_at(at);
                let exponent = &exponent[1..];
                let sign = if exponent.starts_with(['+', '-']) { "" } else { "+" };
                *text = Cow::Owned(format!("{mantissa}e{sign}{exponent}"));
            }
        }
        Json::Array(items) => items.iter_mut().for_each(respell_exponents),
        Json::Object(entries) => entries.iter_mut().for_each(|(_, v)| respell_exponents(v)),
        Json::Null | Json::Bool(_) | Json::String(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let reference = serde_json::from_slice::<serde_json::Value>(data);
    let tree = Json::parse(data);
    let mut beyond = Beyond::default();
    if let Ok(tree) = &tree {
        survey(tree, 0, &mut beyond);
    }
    match (&reference, &tree) {
        (Ok(_), Err(e)) if !beyond.magic_key => panic!("serde_json accepts, Json refuses: {e}"),
        (Err(_), Ok(_)) => assert!(
            beyond.lone_surrogate || beyond.magic_key || beyond.depth == 128,
            "Json accepts what serde_json refuses"
        ),
        _ => {}
    }
    let Ok(mut tree) = tree else {
        // A body that does not parse is quarantined through the tolerant
        // tokenizer, which must never panic.
        let _ = redactor().redact_unparsed(&String::from_utf8_lossy(data));
        return;
    };
    // Whatever is accepted writes out as text read back unchanged.
    let written = tree.to_vec();
    assert_eq!(
        Json::parse(&written).map(|t| t.to_vec()).as_deref(),
        Ok(&written[..]),
        "written text does not read back"
    );
    let changed = redactor().redact_json(&mut tree);
    let redacted = tree.to_vec();
    // "Unchanged" is what lets a delivery be stored as sent: it must be true.
    if !changed {
        assert_eq!(redacted, written, "redaction said unchanged but changed the tree");
    }
    let mut again = Json::parse(&redacted).expect("redacted text reads back");
    let _changed = redactor().redact_json(&mut again);
    assert_eq!(again.to_vec(), redacted, "redaction is not idempotent");

    let Ok(mut value) = reference else {
        return;
    };
    if beyond.magic_key {
        return;
    }
    let mut ours = Json::parse(data).expect("accepted above");
    respell_exponents(&mut ours);
    assert_eq!(ours.to_string(), value.to_string(), "written text differs");
    redactor().redact(&mut value);
    let mut ours = Json::parse(&redacted).expect("accepted above");
    respell_exponents(&mut ours);
    assert_eq!(ours.to_string(), value.to_string(), "redacted text differs");
});
