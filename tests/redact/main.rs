//! The PII redaction engine: name rules, value detection, properties.

mod detect;
mod names;
mod props;
