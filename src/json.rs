//! A delivery body as a tree that borrows from the request's bytes.
//!
//! `serde_json::Value` copies every key and string into its own allocation
//! and hashes every key into an index; for a body that is parsed once,
//! redacted and written straight back out, that was half of the per-request
//! CPU. [`Json`] lets `serde_json` do the parsing and validation (the same
//! grammar, escapes, and nesting limit) but keeps unescaped strings as
//! slices of the body, objects as plain vectors in document order, and
//! numbers as their exact source text.
//!
//! An object with a repeated key keeps one entry for it, where the key
//! first appeared, holding the last value: what `serde_json::Map` with
//! `preserve_order` does, and what most readers of the stored JSON do.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The key `serde_json` (with `arbitrary_precision`) uses to hand over a
/// number's source text as a one-entry map.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// One JSON value, borrowing from the parsed bytes where it can. Its
/// `Debug` shows shape only (see below): bodies carry personal data.
#[derive(Clone, PartialEq, Eq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written.
    Number(Cow<'a, str>),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Entries in document order, each key once.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses one JSON document (surrounding whitespace allowed, nothing else).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = Json::deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// The value of `key` when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Appends the compact JSON text of this value to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::Number(text) => out.extend_from_slice(text.as_bytes()),
            Json::String(text) => write_string(text, out),
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_to(out);
                }
                out.push(b']');
            }
            Json::Object(entries) => {
                out.push(b'{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(key, out);
                    out.push(b':');
                    value.write_to(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The same value, owning all its text.
    pub fn into_owned(self) -> Json<'static> {
        let own = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(text) => Json::Number(own(text)),
            Json::String(text) => Json::String(own(text)),
            Json::Array(items) => Json::Array(items.into_iter().map(Json::into_owned).collect()),
            Json::Object(entries) => Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (own(k), v.into_owned()))
                    .collect(),
            ),
        }
    }

    /// The compact JSON text of this value.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// Shape, never content: object keys, and the type and size of every
/// value (`{"ssn": string(11 bytes), "items": [2 items]}`). One `?body` in a
/// log line must not write what the redaction exists to remove.
impl fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(_) => f.write_str("bool"),
            Json::Number(text) => write!(f, "number({} chars)", text.len()),
            Json::String(text) => write!(f, "string({} bytes)", text.len()),
            Json::Array(items) => write!(f, "[{} items]", items.len()),
            Json::Object(entries) => f
                .debug_map()
                .entries(entries.iter().map(|(k, v)| (k, v)))
                .finish(),
        }
    }
}

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_vec()))
    }
}

/// Writes `text` as a JSON string (see [`escape_str`]).
fn write_string(text: &str, out: &mut Vec<u8>) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    escape_str(text, |piece| out.extend_from_slice(piece.as_bytes()));
    out.push(b'"');
}

/// Hands `emit` the inside of `text` as a JSON string, in pieces, escaped
/// as `serde_json` escapes it: `"` and `\`, the short forms `\b \f \n \r
/// \t`, other control characters as `\u00XX`; everything else verbatim.
/// Stored payloads and log lines both escape through this.
pub(crate) fn escape_str(text: &str, mut emit: impl FnMut(&str)) {
    /// The escape of each control character.
    const CONTROL: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011",
        "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019",
        "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    ];
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x00..=0x1f => CONTROL[usize::from(b)],
            _ => continue,
        };
        // Escaped bytes are ASCII, so both ends are char boundaries.
        emit(&text[start..i]);
        emit(escape);
        start = i + 1;
    }
    emit(&text[start..]);
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }

    // Without `arbitrary_precision` numbers would arrive here; with it (as
    // this crate builds serde_json) they arrive as a one-entry map. These
    // keep the type correct either way.
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(Cow::Owned(v.to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(Cow::Owned(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Json::Number(Cow::Owned(n.to_string())))
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(first) = map.next_key_seed(KeySeed)? else {
            return Ok(Json::Object(Vec::new()));
        };
        if first == NUMBER_TOKEN {
            // A body can spell this key too; like `serde_json::Value`, take
            // its value only if it is a valid number, so the tree never
            // holds a "number" that would write out as invalid JSON.
            let text: String = map.next_value()?;
            text.parse::<serde_json::Number>()
                .map_err(|_| de::Error::custom("invalid number"))?;
            return Ok(Json::Number(Cow::Owned(text)));
        }
        let mut entries = Vec::with_capacity(8);
        entries.push((first, map.next_value()?));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            entries.push((key, map.next_value()?));
        }
        dedup_keys(&mut entries);
        Ok(Json::Object(entries))
    }
}

/// Reads an object key, borrowing it when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Objects this small are checked pairwise; larger ones through a map, so
/// a body with many keys costs linear time, not quadratic.
const PAIRWISE_MAX: usize = 16;

/// Folds repeated keys into the first entry, keeping the last value.
fn dedup_keys<'a>(entries: &mut Vec<(Cow<'a, str>, Json<'a>)>) {
    let has_duplicates = if entries.len() <= PAIRWISE_MAX {
        (1..entries.len()).any(|i| entries[..i].iter().any(|(k, _)| *k == entries[i].0))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        !entries.iter().all(|(k, _)| seen.insert(k.as_ref()))
    };
    if !has_duplicates {
        return;
    }
    let mut first_at: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    let mut kept: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(entries.len());
    for (key, value) in entries.drain(..) {
        match first_at.get(key.as_ref()) {
            Some(&at) => kept[at].1 = value,
            None => {
                first_at.insert(key.to_string(), kept.len());
                kept.push((key, value));
            }
        }
    }
    *entries = kept;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json's own `Value` (preserve_order, arbitrary_precision)
    /// writes for the same input: the reference this type must match.
    fn reference(text: &str) -> String {
        serde_json::from_str::<serde_json::Value>(text)
            .unwrap()
            .to_string()
    }

    fn ours(text: &str) -> String {
        String::from_utf8(Json::parse(text.as_bytes()).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn round_trips_like_serde_json_value() {
        let cases = [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            r#" { "spaced" : [ 1 , 2 ] } "#,
            r#"[1.0, -0, 1e5, 1E-7, 123456789012345678901234567890, -1.50]"#,
            r#""esc \" \\ \/ \b \f \n \r \t \u0001 \u001f \u00e9 \ud83d\ude00""#,
            r#"{"dup":1,"x":2,"dup":3}"#,
            r#"{"k\u0041y":"v","kAy":"w"}"#,
            r#"{}"#,
            r#"[]"#,
            r#""""#,
            r#"{"$serde_json::private::Number":"12.50"}"#,
            "\"\u{2028}\u{7f}é😀\"",
        ];
        for case in cases {
            assert_eq!(ours(case), reference(case), "{case}");
        }
    }

    #[test]
    fn rejects_what_serde_json_rejects() {
        for bad in [
            "",
            "{",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            "[1,]",
            "01",
            "1.",
            "NaN",
            r#""\ud800""#,
            "\"tab\there\"",
            "{} {}",
            "[1] x",
            r#"{'a':1}"#,
        ] {
            assert!(Json::parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
            assert!(serde_json::from_str::<serde_json::Value>(bad).is_err());
        }
        // The number token spelled out by a body, holding something else.
        for bad in [
            r#"{"$serde_json::private::Number":"12 OR 1=1"}"#,
            r#"{"$serde_json::private::Number":"\"}"}"#,
            r#"{"$serde_json::private::Number":7}"#,
        ] {
            assert!(Json::parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(Json::parse(deep.as_bytes()).is_err(), "nesting limit");
    }

    #[test]
    fn debug_shows_shape_never_content() {
        let body = br#"{"ssn":"123-45-6789","card":4111111111111111,"ok":true,
            "items":[{"email":"alice@example.com"}],"nested":{"pin":"0000"}}"#;
        let shown = format!("{:?}", Json::parse(body).unwrap());
        for secret in [
            "123-45-6789",
            "4111111111111111",
            "alice@example.com",
            "0000",
            "true",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for shape in [
            "\"ssn\": string(11 bytes)",
            "number(16 chars)",
            "[1 items]",
            "\"pin\"",
        ] {
            assert!(shown.contains(shape), "{shape} not in {shown}");
        }
    }

    #[test]
    fn strings_without_escapes_borrow_from_the_body() {
        let body = br#"{"plain":"text","escaped":"a\nb"}"#;
        let Json::Object(entries) = Json::parse(body).unwrap() else {
            panic!("not an object")
        };
        assert!(matches!(entries[0].0, Cow::Borrowed("plain")));
        assert!(matches!(entries[0].1, Json::String(Cow::Borrowed("text"))));
        assert!(matches!(entries[1].1, Json::String(Cow::Owned(_))));
    }

    #[test]
    fn repeated_keys_keep_the_first_place_and_the_last_value() {
        let many: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
        let text = format!(r#"{{{many}"k3":"last","k39":"end"}}"#);
        let parsed = Json::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.get("k3"), Some(&Json::String(Cow::Borrowed("last"))));
        assert_eq!(ours(&text), reference(&text));
        let Json::Object(entries) = parsed else {
            panic!("not an object")
        };
        assert_eq!(entries.len(), 40);
        assert_eq!(entries[3].0, "k3");
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\a-c]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-c\"\\\\\\x01]{0,3}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn writes_what_serde_json_writes(value in arb_json()) {
            let text = value.to_string();
            prop_assert_eq!(ours(&text), text.clone());
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(ours(&pretty), text);
        }
    }
}
