//! Arbitrary bytes → JSON → redact: never panics, and a second pass
//! changes nothing.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use imggo_receiver::redact::{RedactSettings, Redactor};

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| Redactor::new(&RedactSettings::default(), &[0x42; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    redactor().redact(&mut value);
    let mut again = value.clone();
    redactor().redact(&mut again);
    assert_eq!(again, value, "redaction is not idempotent");
});
