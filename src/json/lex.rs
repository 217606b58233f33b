//! A tolerant, streaming tokenizer for text that is meant to be JSON but
//! does not parse: truncated, nested deeper than [`super::MAX_DEPTH`], or
//! broken anywhere. It builds no tree, keeps no stack and never fails: it
//! reads every token it can and hands over the rest as [`Token::Unreadable`],
//! so the concatenated source texts of its tokens are the input itself.
//!
//! The redaction of quarantined bodies (`crate::redact`) and the subject
//! index (`crate::subjects`) walk the same tokens, so both see the same keys.

use std::borrow::Cow;

/// One token, with its source text.
#[derive(Clone, PartialEq, Eq)]
pub enum Token<'a> {
    /// `{` or `[`.
    Open(&'a str),
    /// `}` or `]`.
    Close(&'a str),
    /// `:`, `,` or a run of whitespace.
    Between(&'a str),
    Str(StrToken<'a>),
    /// A number by RFC 8259's grammar, followed by a delimiter (a number at
    /// the very end may have been cut short: it is [`Token::Unreadable`]).
    Number(&'a str),
    /// `true`, `false` or `null` (whole words: nothing personal, even cut).
    Literal(&'a str),
    /// Bytes that are none of the above, up to the next delimiter.
    Unreadable(&'a str),
}

impl<'a> Token<'a> {
    /// The token's source text.
    pub fn source(&self) -> &'a str {
        match self {
            Token::Open(s)
            | Token::Close(s)
            | Token::Between(s)
            | Token::Number(s)
            | Token::Literal(s)
            | Token::Unreadable(s) => s,
            Token::Str(s) => s.raw,
        }
    }
}

/// A string token. Its `Debug` shows its size only: it may be personal data.
#[derive(Clone, PartialEq, Eq)]
pub struct StrToken<'a> {
    /// The source, quotes included (the closing one when there is one).
    pub raw: &'a str,
    /// The decoded text: escapes resolved (a lone surrogate or a broken
    /// escape as U+FFFD or as written), borrowed when there was none.
    pub text: Cow<'a, str>,
    /// The closing quote was found (false: the text ended inside it).
    pub closed: bool,
    /// Followed, after whitespace, by `:`: an object key.
    pub key: bool,
}

impl std::fmt::Debug for StrToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "string({} bytes)", self.raw.len())
    }
}

impl std::fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Str(s) => s.fmt(f),
            other => write!(f, "token({} bytes)", other.source().len()),
        }
    }
}

/// The tokens of `text`, in order.
pub struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.text.as_bytes().get(at).copied()
    }

    /// The end of the run starting at `from` of bytes that are not
    /// delimiters. Delimiters are ASCII, so the end is a char boundary.
    fn run_end(&self, from: usize) -> usize {
        let bytes = self.text.as_bytes();
        let mut at = from;
        while at < bytes.len() && !is_delimiter(bytes[at]) {
            at += 1;
        }
        at
    }

    fn take(&mut self, end: usize) -> &'a str {
        let piece = &self.text[self.pos..end];
        self.pos = end;
        piece
    }

    /// After `"` at `self.pos`.
    fn string(&mut self) -> StrToken<'a> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut at = start + 1;
        let mut escaped = false;
        let closed = loop {
            match bytes.get(at) {
                None => break false,
                Some(b'"') => {
                    at += 1;
                    break true;
                }
                Some(b'\\') => {
                    escaped = true;
                    // Skip the escaped char whole (it may be non-ASCII).
                    at += 1;
                    if let Some(c) = self.text.get(at..).and_then(|rest| rest.chars().next()) {
                        at += c.len_utf8();
                    }
                }
                Some(_) => at += 1,
            }
        };
        let at = at.min(bytes.len());
        let inner_end = if closed { at - 1 } else { at };
        let inner = &self.text[start + 1..inner_end];
        let text = if escaped {
            Cow::Owned(unescape(inner))
        } else {
            Cow::Borrowed(inner)
        };
        let raw = self.take(at);
        let mut next = self.pos;
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.byte(next) {
            next += 1;
        }
        StrToken {
            raw,
            text,
            closed,
            key: closed && self.byte(next) == Some(b':'),
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let b = self.byte(self.pos)?;
        let token = match b {
            b'{' | b'[' => Token::Open(self.take(self.pos + 1)),
            b'}' | b']' => Token::Close(self.take(self.pos + 1)),
            b':' | b',' => Token::Between(self.take(self.pos + 1)),
            b' ' | b'\t' | b'\n' | b'\r' => {
                let mut end = self.pos;
                while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.byte(end) {
                    end += 1;
                }
                Token::Between(self.take(end))
            }
            b'"' => Token::Str(self.string()),
            _ => {
                let end = self.run_end(self.pos);
                let word = &self.text[self.pos..end];
                // Cut short by the end of the text, it may be part of more.
                let whole = end < self.text.len();
                let token = if whole && is_number(word) {
                    Token::Number(word)
                } else if matches!(word, "true" | "false" | "null") {
                    Token::Literal(word)
                } else {
                    Token::Unreadable(word)
                };
                self.pos = end;
                token
            }
        };
        Some(token)
    }
}

fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"' | b' ' | b'\t' | b'\n' | b'\r'
    )
}

/// RFC 8259: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_number(word: &str) -> bool {
    let b = word.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// The text between a string's quotes with its escapes resolved; an escape
/// that is broken or cut short stays as written, a lone surrogate is U+FFFD.
fn unescape(inner: &str) -> String {
    String::from_utf16_lossy(&unescape_units(inner))
}

/// The UTF-16 code units the text between a string's quotes stands for:
/// each escape resolved (a surrogate escape to its unit, paired or not), an
/// escape that is broken or cut short (`\x`, `\u12`) kept as written.
/// [`unescape`] and [`super::restringify`] both read strings through this.
pub(crate) fn unescape_units(inner: &str) -> Vec<u16> {
    let mut units = Vec::with_capacity(inner.len());
    let mut buf = [0u16; 2];
    let mut rest = inner;
    while let Some(at) = rest.find('\\') {
        units.extend(rest[..at].encode_utf16());
        let after = &rest[at + 1..];
        let (unit, len) = match after.as_bytes().first() {
            Some(b'b') => (Some(0x08), 1),
            Some(b'f') => (Some(0x0c), 1),
            Some(b'n') => (Some(0x0a), 1),
            Some(b'r') => (Some(0x0d), 1),
            Some(b't') => (Some(0x09), 1),
            Some(&e @ (b'"' | b'\\' | b'/')) => (Some(u16::from(e)), 1),
            Some(b'u') => (after.get(1..).and_then(hex4), 5),
            _ => (None, 0),
        };
        match unit {
            Some(unit) => {
                units.push(unit);
                rest = &after[len..];
            }
            None => {
                units.extend_from_slice('\\'.encode_utf16(&mut buf));
                rest = after;
            }
        }
    }
    units.extend(rest.encode_utf16());
    units
}

fn hex4(text: &str) -> Option<u16> {
    let digits = text.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<String> {
        Lexer::new(text)
            .map(|t| match t {
                Token::Open(s) | Token::Close(s) | Token::Between(s) => s.to_owned(),
                Token::Str(s) => format!(
                    "S({}{}{})",
                    s.text,
                    if s.closed { "" } else { ",open" },
                    if s.key { ",key" } else { "" }
                ),
                Token::Number(s) => format!("N({s})"),
                Token::Literal(s) => format!("L({s})"),
                Token::Unreadable(s) => format!("U({s})"),
            })
            .collect()
    }

    #[test]
    fn reads_what_it_can_and_keeps_every_byte() {
        let cases = [
            r#"{"a" : 1,"b":[true,null]}"#,
            r#"{"s":"\u0034\u00311\ud83d\ude00\ud800x\q","t":"cut"#,
            "[[[[[[1e5, -0.5E+3, 01, 1.,tru, 4111 111",
            "{\"é\":\"ß\\",
            "",
            "\"",
            "\\u12",
        ];
        for text in cases {
            let joined: String = Lexer::new(text).map(|t| t.source()).collect();
            assert_eq!(joined, text);
        }
        assert_eq!(
            kinds(r#"{"a" : 1,"b":[true,null]}"#),
            [
                "{", "S(a,key)", " ", ":", " ", "N(1)", ",", "S(b,key)", ":", "[", "L(true)", ",",
                "L(null)", "]", "}"
            ]
        );
        assert_eq!(
            kinds(r#"{"s":"\u0034\u00311\ud83d\ude00\ud800x\q","t":"cut"#),
            [
                "{",
                "S(s,key)",
                ":",
                "S(411😀\u{fffd}x\\q)",
                ",",
                "S(t,key)",
                ":",
                "S(cut,open)"
            ]
        );
        assert_eq!(
            kinds("[01, 1.,tru, 4111 111"),
            ["[", "U(01)", ",", " ", "U(1.)", ",", "U(tru)", ",", " ", "N(4111)", " ", "U(111)"]
        );
    }

    #[test]
    fn numbers_by_the_grammar() {
        for ok in ["0", "-0", "12", "1.5", "1e5", "1E+5", "-1.25e-3"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "1e+", "+1", "1.5.5", "0x1"] {
            assert!(!is_number(bad), "{bad}");
        }
    }
}
