//! The recursive-descent parser behind [`Json::parse`].

use std::borrow::Cow;

use super::keys::dedup_keys;
use super::{Json, JsonError, JsonStr, LoneSurrogates, Repr, MAX_DEPTH};

/// One JSON document (surrounding whitespace allowed, nothing else).
/// The document, and whether its text may stand for it as it came: false
/// when repeated keys were folded (the text holds more), or when an escape
/// spells a letter or digit (`"4111111111111111\u0034"`: the text shows a
/// reader other digits, or digits unglued, where the value has them glued).
pub(super) fn document(bytes: &[u8]) -> Result<(Json<'_>, bool), JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|e| JsonError::Syntax {
        at: e.valid_up_to(),
    })?;
    let mut parser = Parser {
        text,
        bytes,
        pos: 0,
        folded: false,
        spelled: false,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != bytes.len() {
        return Err(parser.error());
    }
    Ok((value, !parser.folded && !parser.spelled))
}

/// A recursive-descent reader over text already checked as UTF-8. Every
/// token it stops at is ASCII, so each slice it takes is on char
/// boundaries.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Repeated keys were folded somewhere.
    folded: bool,
    /// A `\u` escape somewhere stands for a letter or digit.
    spelled: bool,
}

impl<'a> Parser<'a> {
    fn error(&self) -> JsonError {
        JsonError::Syntax { at: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` after optional whitespace, or fails.
    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn literal(&mut self, word: &[u8], value: Json<'a>) -> Result<Json<'a>, JsonError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error())
        }
    }

    /// One value at `self.pos` (no leading whitespace); `depth` containers
    /// are open around it. The limit is checked before descending, so no
    /// input can recurse deeper than [`MAX_DEPTH`] frames.
    fn value(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        match self.peek() {
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
                self.pos += 1;
                self.object(depth + 1)
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
                self.pos += 1;
                self.array(depth + 1)
            }
            Some(b'"') => {
                self.pos += 1;
                self.string().map(Json::String)
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            _ => Err(self.error()),
        }
    }

    /// After `[`.
    fn array(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error()),
            }
        }
    }

    /// After `{`.
    fn object(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        let mut entries = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(entries));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error());
            }
            self.pos += 1;
            let key = self.string()?;
            self.expect(b':')?;
            self.skip_whitespace();
            entries.push((key, self.value(depth)?));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some(b'}') => {
                    self.pos += 1;
                    self.folded |= dedup_keys(&mut entries);
                    return Ok(Json::Object(entries));
                }
                _ => return Err(self.error()),
            }
        }
    }

    /// After the opening quote: borrows when there is no escape.
    fn string(&mut self) -> Result<JsonStr<'a>, JsonError> {
        let start = self.pos;
        loop {
            self.pos = skip_plain(self.bytes, self.pos);
            match self.peek() {
                Some(b'"') => {
                    let text = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(JsonStr::from(text));
                }
                Some(b'\\') => return self.escaped_string(start),
                Some(0x00..=0x1f) | None => return Err(self.error()),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// The rest of a string that has escapes, `start` being just after its
    /// opening quote and `self.pos` at its first backslash.
    fn escaped_string(&mut self, start: usize) -> Result<JsonStr<'a>, JsonError> {
        let mut text = String::with_capacity(self.pos - start + 16);
        text.push_str(&self.text[start..self.pos]);
        let mut lone_surrogate = false;
        let mut run = self.pos;
        loop {
            self.pos = skip_plain(self.bytes, self.pos);
            match self.peek() {
                Some(b'"') => {
                    text.push_str(&self.text[run..self.pos]);
                    let raw = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(if lone_surrogate {
                        JsonStr(Repr::LoneSurrogates(Box::new(LoneSurrogates {
                            text,
                            raw: raw.to_owned(),
                        })))
                    } else {
                        JsonStr::from(text)
                    });
                }
                Some(b'\\') => {
                    text.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    let decoded = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let (c, lone) = self.unicode_escape()?;
                            lone_surrogate |= lone;
                            self.spelled |= c.is_alphanumeric();
                            text.push(c);
                            run = self.pos;
                            continue;
                        }
                        _ => return Err(self.error()),
                    };
                    self.pos += 1;
                    text.push(decoded);
                    run = self.pos;
                }
                Some(0x00..=0x1f) | None => return Err(self.error()),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// After `\u`: the character, and whether it is a lone surrogate
    /// (given as U+FFFD). A high surrogate followed by `\u` and a low one
    /// is one character; anything else after it leaves it lone.
    fn unicode_escape(&mut self) -> Result<(char, bool), JsonError> {
        let unit = self.hex4()?;
        let code = match unit {
            0xD800..=0xDBFF => {
                let next = self.bytes.get(self.pos..self.pos + 2) == Some(b"\\u");
                let low = if next {
                    let saved = self.pos;
                    self.pos += 2;
                    match self.hex4()? {
                        low @ 0xDC00..=0xDFFF => Some(low),
                        _ => {
                            // Read again as an escape of its own.
                            self.pos = saved;
                            None
                        }
                    }
                } else {
                    None
                };
                match low {
                    Some(low) => {
                        0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    None => return Ok((char::REPLACEMENT_CHARACTER, true)),
                }
            }
            0xDC00..=0xDFFF => return Ok((char::REPLACEMENT_CHARACTER, true)),
            _ => u32::from(unit),
        };
        char::from_u32(code)
            .map(|c| (c, false))
            .ok_or_else(|| self.error())
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error())?;
        let mut unit = 0u16;
        for &d in digits {
            let nibble = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.error()),
            };
            unit = unit << 4 | u16::from(nibble);
        }
        self.pos += 4;
        Ok(unit)
    }

    /// RFC 8259's number grammar, kept as its source text:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<Json<'a>, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        Ok(Json::Number(Cow::Borrowed(&self.text[start..self.pos])))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), JsonError> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.error());
        }
        self.digits();
        Ok(())
    }
}

/// The index of the first byte at or after `at` that ends a run of plain
/// string content (`"`, `\\` or a control character), or the length.
/// Eight bytes at a time: strings are most of a body.
fn skip_plain(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Whether any byte of `word` is below `n` (n <= 0x80), exactly.
    fn any_below(word: u64, n: u8) -> bool {
        word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0
    }
    while let Some(chunk) = bytes.get(at..at + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_ne_bytes(chunk);
        if any_below(word, 0x20)
            || any_below(word ^ (ONES * u64::from(b'"')), 1)
            || any_below(word ^ (ONES * u64::from(b'\\')), 1)
        {
            break;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        at += 1;
    }
    at
}
