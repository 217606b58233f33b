//! Arbitrary bytes → JSON → redact: never panics, a second pass changes
//! nothing, and the request path's parser (`Json`) accepts exactly what
//! `serde_json::Value` accepts and writes the same text back.
#![no_main]

use std::sync::OnceLock;

use imggo_receiver::json::Json;
use imggo_receiver::redact::{RedactSettings, Redactor};
use libfuzzer_sys::fuzz_target;

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| Redactor::new(&RedactSettings::default(), &[0x42; 32]))
}

fuzz_target!(|data: &[u8]| {
    let reference = serde_json::from_slice::<serde_json::Value>(data);
    let tree = Json::parse(data);
    assert_eq!(reference.is_ok(), tree.is_ok(), "parsers disagree on validity");
    let (Ok(mut value), Ok(mut tree)) = (reference, tree) else {
        return;
    };
    assert_eq!(tree.to_string(), value.to_string(), "written text differs");

    redactor().redact_json(&mut tree);
    redactor().redact(&mut value);
    assert_eq!(tree.to_string(), value.to_string());
    let mut again = value.clone();
    redactor().redact(&mut again);
    assert_eq!(again, value, "redaction is not idempotent");
});
