//! The extracted data as the validator reads it: our parse tree (which
//! keeps number text and escapes exactly) turned into a `serde_json::Value`
//! for validation only. Nothing here is stored or written back.

use serde_json::{Map, Number, Value};

use crate::json::Json;

/// `json` as a `serde_json::Value`: numbers keep their text (serde_json's
/// `arbitrary_precision`), strings their decoded text (a lone surrogate is
/// U+FFFD), objects their order. Built directly, never parsed, so keys
/// serde_json treats as magic when deserialising are plain keys here.
pub fn to_serde(json: &Json<'_>) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(text) => text
            .parse::<Number>()
            .map_or_else(|_| Value::String(text.to_string()), Value::Number),
        Json::String(s) => Value::String(s.as_str().to_owned()),
        Json::Array(items) => Value::Array(items.iter().map(to_serde).collect()),
        Json::Object(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (key, value) in entries {
                map.insert(key.as_str().to_owned(), to_serde(value));
            }
            Value::Object(map)
        }
    }
}
