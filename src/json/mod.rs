//! A delivery body as a tree that borrows from the request's bytes.
//!
//! ImgGo's sender writes bodies with `JSON.stringify`, which can write
//! things `serde_json` refuses: escaped lone surrogates (`"\ud800"`,
//! RFC 8259 allows them) and nesting of exactly 128 levels (serde_json
//! stops at 127). Its `arbitrary_precision` feature also treats the key
//! `$serde_json::private::Number` as magic. So this module has its own
//! recursive-descent parser over the body: the bytes are checked as UTF-8
//! once, then strings without escapes, and every number, are slices of the
//! body; objects are plain vectors in document order.
//!
//! A string (value or key) whose escapes hold a lone surrogate keeps its
//! source text for writing back, so the stored body has the same escapes;
//! everything that reads it (redaction, matching, validation) sees a text
//! in which each lone surrogate is U+FFFD. Written back, every body
//! `JSON.stringify` can produce comes out byte for byte as it came in,
//! unless redaction changed it.
//!
//! An object with a repeated key keeps one entry for it, where the key
//! first appeared, holding the last value: what `serde_json::Map` with
//! `preserve_order` does, and what most readers of the stored JSON do.

mod keys;
pub mod lex;
mod parse;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

/// The deepest nesting accepted: the top-level container is level 1.
pub const MAX_DEPTH: usize = 128;

/// One JSON value, borrowing from the parsed bytes where it can. Its
/// `Debug` shows shape only (see below): bodies carry personal data.
#[derive(Clone, PartialEq, Eq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written.
    Number(Cow<'a, str>),
    String(JsonStr<'a>),
    Array(Vec<Json<'a>>),
    /// Entries in document order, each key once.
    Object(Vec<(JsonStr<'a>, Json<'a>)>),
}

/// Why a body is not accepted as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON (RFC 8259), or not UTF-8; `at` is the byte offset where
    /// reading stopped.
    Syntax { at: usize },
    /// Valid so far, but a container opens deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax { at } => write!(f, "invalid JSON at byte {at}"),
            JsonError::TooDeep => write!(f, "JSON nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

impl std::error::Error for JsonError {}

/// A JSON string (a value or an object key): its decoded text, which is
/// what it dereferences to, and, when its escapes hold a lone surrogate,
/// its source text for writing back.
///
/// Its `Debug` shows the length only, like [`Json`]'s.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonStr<'a>(Repr<'a>);

#[derive(Clone, PartialEq, Eq)]
enum Repr<'a> {
    /// The common case: decoded text, borrowed when the source had no
    /// escapes.
    Text(Cow<'a, str>),
    /// Rare, so boxed to keep every other string small.
    LoneSurrogates(Box<LoneSurrogates>),
}

#[derive(Clone, PartialEq, Eq)]
struct LoneSurrogates {
    /// Each lone surrogate replaced by U+FFFD.
    text: String,
    /// The source between the quotes, escapes as they were.
    raw: String,
}

impl<'a> JsonStr<'a> {
    /// The decoded text (lone surrogates as U+FFFD).
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Text(text) => text,
            Repr::LoneSurrogates(lone) => &lone.text,
        }
    }

    /// The source text between the quotes, when the string holds a lone
    /// surrogate (and so cannot be written from its decoded text).
    pub fn raw(&self) -> Option<&str> {
        match &self.0 {
            Repr::Text(_) => None,
            Repr::LoneSurrogates(lone) => Some(&lone.raw),
        }
    }

    /// Whether the text is a slice of the parsed bytes (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.0, Repr::Text(Cow::Borrowed(_)))
    }

    /// The same string, owning its text.
    pub fn into_owned(self) -> JsonStr<'static> {
        JsonStr(match self.0 {
            Repr::Text(text) => Repr::Text(Cow::Owned(text.into_owned())),
            Repr::LoneSurrogates(lone) => Repr::LoneSurrogates(lone),
        })
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        match &self.0 {
            Repr::Text(text) => write_string(text, out),
            Repr::LoneSurrogates(lone) => write_lone_surrogates(&lone.raw, out),
        }
    }
}

/// Writes a string that holds a lone surrogate from its source text `raw`
/// (between the quotes) as `JSON.stringify` writes it ([`restringify`]):
/// not as it came, since an escape such as `\u0034` would show a reader of
/// the stored text other digits than a JSON reader sees
/// (`"4111111111111111\u0034"` is seventeen digits, not a card).
fn write_lone_surrogates(raw: &str, out: &mut Vec<u8>) {
    out.reserve(raw.len() + 2);
    out.push(b'"');
    restringify(raw, |piece| out.extend_from_slice(piece.as_bytes()));
    out.push(b'"');
}

/// Hands `emit` the inside of a JSON string whose source between the
/// quotes is `raw`, written again as `JSON.stringify` writes it: each lone
/// surrogate as a lowercase `\udXXX`, every other character as
/// [`escape_str`] writes it, whether it came escaped or not. A broken
/// escape (`\x`, `\u12` cut short) is text: its backslash is escaped.
pub(crate) fn restringify(raw: &str, mut emit: impl FnMut(&str)) {
    let units = lex::unescape_units(raw);
    let mut utf8 = [0u8; 4];
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => escape_str(c.encode_utf8(&mut utf8), &mut emit),
            Err(lone) => emit(&format!("\\u{:04x}", lone.unpaired_surrogate())),
        }
    }
}

impl Deref for JsonStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<'a> From<&'a str> for JsonStr<'a> {
    fn from(text: &'a str) -> Self {
        JsonStr(Repr::Text(Cow::Borrowed(text)))
    }
}

/// A new string (e.g. one redaction wrote): it has no lone surrogates.
impl From<String> for JsonStr<'_> {
    fn from(text: String) -> Self {
        JsonStr(Repr::Text(Cow::Owned(text)))
    }
}

impl PartialEq<str> for JsonStr<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for JsonStr<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for JsonStr<'_> {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl fmt::Debug for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "string({} bytes)", self.len())
    }
}

impl<'a> Json<'a> {
    /// Parses one JSON document (surrounding whitespace allowed, nothing
    /// else), nested at most [`MAX_DEPTH`] levels.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, JsonError> {
        parse::document(bytes).map(|(value, _)| value)
    }

    /// [`Self::parse`], and whether the text may stand in for the value:
    /// false when repeated keys were folded (the last value kept), or when
    /// an escape spells a letter or digit (`\u0034`, which `JSON.stringify`
    /// never writes: the text would show a reader digits or a card-shaped
    /// run other than the value holds).
    pub fn parse_whole(bytes: &'a [u8]) -> Result<(Self, bool), JsonError> {
        parse::document(bytes)
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
            Json::String(text) => text.write_to(out),
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
                    key.write_to(out);
                    out.push(b':');
                    value.write_to(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The same value, owning all its text.
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(text) => Json::Number(Cow::Owned(text.into_owned())),
            Json::String(text) => Json::String(text.into_owned()),
            Json::Array(items) => Json::Array(items.into_iter().map(Json::into_owned).collect()),
            Json::Object(entries) => Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
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
                .entries(entries.iter().map(|(k, v)| (k.as_str(), v)))
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
/// as `JSON.stringify` (and `serde_json`) escape it: `"` and `\`, the short
/// forms `\b \f \n \r \t`, other control characters as `\u00XX` (lowercase
/// hex); everything else verbatim, U+2028 and U+2029 included. Stored
/// payloads and log lines both escape through this.
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
