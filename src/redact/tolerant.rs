//! Redaction of a body that does not parse as JSON (a quarantined delivery
//! refused with `invalid_json`: cut short, nested deeper than 128 levels,
//! or broken anywhere), over the tokens of [`crate::json::lex`]: no tree,
//! no recursion, no depth limit.
//!
//! * Every key it can read gets the §4 name rules, as the tree walk applies
//!   them: `drop` removes the key and its value (a container value up to
//!   its closing bracket, or to the end of the text) and one comma beside
//!   it, leaving a space so that its neighbours do not run together; `hash`
//!   turns
//!   `"X":"v"` into `"X_hash":"<digest>"`; `mask_last4` masks; `keep`
//!   cancels. Under a hashed or masked container every leaf is hashed or
//!   masked, and nested rules still apply.
//! * Every string, keys included, is scanned once its escapes are decoded
//!   (`\u0034\u0031…` is a card), every number by its value, as in a body
//!   that parses. A string with escapes is written from its decoded text,
//!   so the stored text shows the digits a JSON reader sees.
//! * What it cannot read (bytes that are no token, a string or number cut
//!   off by the end of the text) is masked conservatively: every run of
//!   digits holding 9 or more in all (a card cut short, an SSN without
//!   dashes), in groups joined by one space, `-`, `.` or `/`, glued to
//!   letters or not, Luhn-valid or not, keeps only its last four; SSNs are
//!   masked as everywhere.
//! * Between tokens (outside strings), value detection runs over the text
//!   as written, and digit groups joined by spaces or dashes into 13 or more
//!   digits are masked like unreadable bytes: no JSON value is written so.

use crate::json::lex::{Lexer, StrToken, Token};
use crate::json::{escape_str, restringify};

use super::detect::Scanner;
use super::luhn::mask_card_number;
use super::mask::{is_hash_hex, mask_digits, mask_last4};
use super::rules::normalize_into;
use super::{Action, Redactor};

/// Fewest digits a run must hold to be masked where it cannot be read.
const UNREADABLE_MIN_DIGITS: usize = 9;
/// Fewest digits of bare groups (`4111 1111 …` outside strings) masked.
const CARD_MIN_DIGITS: usize = 13;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Detect,
    HashLeaves,
    MaskLeaves,
}

/// A key read, waiting for its value.
struct Pending<'a> {
    key: StrToken<'a>,
    action: Option<Action>,
    /// Whitespace and `:` between the key and its value.
    between: String,
}

pub(super) fn redact(redactor: &Redactor, text: &str) -> String {
    let mut walk = Walk {
        redactor,
        out: String::with_capacity(text.len()),
        bare: String::new(),
        stack: Vec::new(),
        dropping: None,
        pending: None,
        after_drop: None,
        scanner: Scanner::default(),
        name: String::new(),
    };
    for token in Lexer::new(text) {
        walk.token(token);
    }
    walk.finish()
}

struct Walk<'r, 'a> {
    redactor: &'r Redactor,
    out: String,
    /// Text outside strings not yet written: scanned as a whole when a
    /// string comes (a card may be written as bare groups `4111 1111 …`).
    bare: String,
    /// The mode of each open container (heap, not recursion: no depth limit).
    stack: Vec<Mode>,
    /// Inside a dropped container opened at this depth: nothing is written.
    dropping: Option<usize>,
    pending: Option<Pending<'a>>,
    /// Just after a dropped field: the position in `bare` of the comma
    /// before it, if any (see [`Walk::after_drop`]).
    after_drop: Option<Option<usize>>,
    scanner: Scanner,
    name: String,
}

impl<'a> Walk<'_, 'a> {
    fn mode(&self) -> Mode {
        self.stack.last().copied().unwrap_or(Mode::Detect)
    }

    fn token(&mut self, token: Token<'a>) {
        if let Some(depth) = self.dropping {
            match token {
                Token::Open(_) => self.stack.push(Mode::Detect),
                Token::Close(_) => {
                    self.stack.pop();
                    if self.stack.len() <= depth {
                        self.dropping = None;
                        self.after_drop = Some(self.comma_before());
                    }
                }
                _ => {}
            }
            return;
        }
        if let Some(comma) = self.after_drop {
            if !self.after_drop(comma, &token) {
                return;
            }
        }
        if let Some(mut pending) = self.pending.take() {
            match token {
                Token::Between(s) if s != "," => {
                    pending.between.push_str(s);
                    self.pending = Some(pending);
                    return;
                }
                // No value after all: the key stays as it is.
                Token::Between(_) | Token::Close(_) => self.unchanged_key(&pending),
                value => return self.value_after(pending, value),
            }
        }
        match token {
            Token::Str(s) if s.key => {
                normalize_into(&s.text, &mut self.name);
                let action = self.redactor.names.get(&self.name);
                self.pending = Some(Pending {
                    key: s,
                    action,
                    between: String::new(),
                });
            }
            Token::Open(s) => {
                self.stack.push(self.mode());
                self.bare.push_str(s);
            }
            Token::Close(s) => {
                self.stack.pop();
                self.bare.push_str(s);
            }
            Token::Between(s) => self.bare.push_str(s),
            leaf => self.leaf(leaf, self.mode()),
        }
    }

    /// Where in `bare` the comma before a field just dropped is, if any.
    fn comma_before(&self) -> Option<usize> {
        let before = self.bare.trim_end_matches([' ', '\t', '\n', '\r']);
        before.ends_with(',').then(|| before.len() - 1)
    }

    /// A dropped field takes one comma with it: the one after it, or when it
    /// was last in its container, the one before it (at the end of the text,
    /// neither: a number left last would read as cut short next time).
    /// Whether `token` is still to be handled.
    fn after_drop(&mut self, comma: Option<usize>, token: &Token<'_>) -> bool {
        match token {
            Token::Between(",") => {
                // A space stands for the field and its comma: the tokens on
                // either side must not read as one word next time.
                self.bare.push(' ');
                self.after_drop = None;
                return false;
            }
            Token::Between(s) if s.trim().is_empty() => return true,
            Token::Close(_) => {
                if let Some(at) = comma {
                    self.bare.remove(at);
                }
            }
            // Not valid JSON here: kept apart from what came before the
            // dropped field, so the two do not read as one word next time.
            _ => self.bare.push(' '),
        }
        self.after_drop = None;
        true
    }

    /// A key kept: its name rule did not remove or rename it, but value
    /// detection still applies to it (a card spelled as a key is masked).
    fn unchanged_key(&mut self, pending: &Pending<'_>) {
        let key = &pending.key;
        match self.detected(&key.text) {
            Some(masked) => self.quoted(&masked),
            None => self.as_written(key),
        }
        self.bare.push_str(&pending.between);
    }

    /// `text` with value detection applied, when it is on and found anything.
    fn detected(&mut self, text: &str) -> Option<String> {
        self.redactor
            .detect_values
            .then(|| self.scanner.redact_text(text))
            .flatten()
    }

    /// The value right after a key, under the key's rule.
    fn value_after(&mut self, pending: Pending<'a>, value: Token<'a>) {
        let action = pending.action;
        if action == Some(Action::Drop) {
            if let Token::Open(_) = value {
                self.stack.push(Mode::Detect);
                self.dropping = Some(self.stack.len() - 1);
            } else {
                self.after_drop = Some(self.comma_before());
            }
            return;
        }
        if action == Some(Action::Hash) {
            let digest = match &value {
                Token::Str(s) => Some(self.redactor.hash_value(&s.text)),
                Token::Number(n) | Token::Unreadable(n) => Some(self.redactor.hash_value(n)),
                _ => None,
            };
            if let Some(digest) = digest {
                let key = self.detected(&pending.key.text);
                let key = key.as_deref().unwrap_or(&pending.key.text);
                self.quoted(&format!("{key}_hash"));
                self.bare.push_str(&pending.between);
                return self.quoted(&digest);
            }
        }
        self.unchanged_key(&pending);
        let mode = match action {
            Some(Action::Hash) => Mode::HashLeaves,
            Some(Action::MaskLast4) => Mode::MaskLeaves,
            Some(Action::Keep) => Mode::Detect,
            _ => self.mode(),
        };
        match value {
            Token::Open(s) => {
                self.stack.push(mode);
                self.bare.push_str(s);
            }
            leaf => self.leaf(leaf, mode),
        }
    }

    /// A string, number, literal or unreadable run in `mode`.
    fn leaf(&mut self, leaf: Token<'a>, mode: Mode) {
        let detect = self.redactor.detect_values;
        match (leaf, mode) {
            (Token::Str(s), _) if !s.closed => {
                let text = match mode {
                    Mode::HashLeaves if is_hash_hex(&s.text) => None,
                    Mode::HashLeaves => Some(self.redactor.hash_value(&s.text)),
                    Mode::MaskLeaves => mask_last4(&s.text),
                    Mode::Detect => unreadable(&mut self.scanner, &s.text),
                };
                match text {
                    Some(text) => self.unclosed(&text),
                    None => self.as_written(&s),
                }
            }
            (Token::Str(s), Mode::Detect) => match self.detected(&s.text) {
                Some(masked) => self.quoted(&masked),
                None => self.as_written(&s),
            },
            (Token::Str(s), Mode::HashLeaves) if !is_hash_hex(&s.text) => {
                let digest = self.redactor.hash_value(&s.text);
                self.quoted(&digest);
            }
            (Token::Str(s), Mode::MaskLeaves) if !is_hash_hex(&s.text) => {
                match mask_last4(&s.text) {
                    Some(masked) => self.quoted(&masked),
                    None => self.as_written(&s),
                }
            }
            (Token::Str(s), _) => self.as_written(&s),
            (Token::Number(n), Mode::Detect) => match detect.then(|| mask_card_number(n)).flatten()
            {
                Some(masked) => self.quoted(&masked),
                None => self.bare.push_str(n),
            },
            (Token::Number(n) | Token::Unreadable(n), Mode::HashLeaves) => {
                let digest = self.redactor.hash_value(n);
                self.quoted(&digest);
            }
            (Token::Number(n), Mode::MaskLeaves) => match mask_last4(n) {
                Some(masked) => self.quoted(&masked),
                None => self.bare.push_str(n),
            },
            (Token::Unreadable(u), Mode::MaskLeaves) => {
                let masked = mask_last4(u).or_else(|| unreadable(&mut self.scanner, u));
                self.bare.push_str(masked.as_deref().unwrap_or(u));
            }
            (Token::Unreadable(u), Mode::Detect) => {
                let masked = unreadable(&mut self.scanner, u);
                self.bare.push_str(masked.as_deref().unwrap_or(u));
            }
            (other, _) => self.bare.push_str(other.source()),
        }
    }

    /// A string left as it is: its source text when it has no escape,
    /// else written again as `JSON.stringify` writes it (lone surrogates
    /// kept as escapes), so that the stored text shows the characters a
    /// JSON reader sees: `"4111111111111111\u0034"` holds seventeen digits
    /// and `"4111111111111111\u0041"` digits glued to a letter, no card,
    /// and neither is written with a card-shaped run in it.
    fn as_written(&mut self, s: &StrToken<'_>) {
        self.flush();
        if !s.raw.contains('\\') {
            self.out.push_str(s.raw);
            return;
        }
        let inside = &s.raw[1..];
        let inside = match s.closed {
            true => &inside[..inside.len() - 1],
            false => inside,
        };
        self.out.push('"');
        restringify(inside, |piece| self.out.push_str(piece));
        if s.closed {
            self.out.push('"');
        }
    }

    /// `text` written as a JSON string cut off by the end of the text.
    fn unclosed(&mut self, text: &str) {
        self.flush();
        self.out.push('"');
        escape_str(text, |piece| self.out.push_str(piece));
    }

    /// `text` written as a JSON string.
    fn quoted(&mut self, text: &str) {
        self.flush();
        self.out.push('"');
        escape_str(text, |piece| self.out.push_str(piece));
        self.out.push('"');
    }

    /// Writes the text gathered outside strings, scanned.
    fn flush(&mut self) {
        if self.bare.is_empty() {
            return;
        }
        let scanned = self.scanner.redact_text(&self.bare);
        let text = scanned.as_deref().unwrap_or(&self.bare);
        match mask_digit_runs(text, b" -", 2, CARD_MIN_DIGITS) {
            Some(masked) => self.out.push_str(&masked),
            None => self.out.push_str(text),
        }
        self.bare.clear();
    }

    fn finish(mut self) -> String {
        let mut dropped_last = self.dropping.is_some() || self.after_drop.is_some();
        if let Some(pending) = self.pending.take() {
            // A dropped name with its value cut off goes too.
            if pending.action == Some(Action::Drop) {
                dropped_last = true;
            } else {
                self.unchanged_key(&pending);
            }
        }
        if dropped_last {
            // What came before the dropped field was not cut short: a space
            // keeps it from reading so next time (a number last in the text
            // is taken for part of a longer one).
            self.bare.push(' ');
        }
        self.flush();
        self.out
    }
}

/// Text that could not be read, masked conservatively (see the module
/// comment), or `None` when nothing in it had to be.
fn unreadable(scanner: &mut Scanner, text: &str) -> Option<String> {
    let scanned = scanner.redact_text(text);
    let text_now = scanned.as_deref().unwrap_or(text);
    mask_digit_runs(text_now, b" -./", 1, UNREADABLE_MIN_DIGITS).or(scanned)
}

/// `text` with every run of at least `min_groups` digit groups, joined by
/// one of `joiners`, holding `min_digits` or more digits in all, replaced
/// by its `mask_last4` form; `None` when there was none.
fn mask_digit_runs(
    text: &str,
    joiners: &[u8],
    min_groups: usize,
    min_digits: usize,
) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let mut digits = Vec::new();
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut groups = 0;
        digits.clear();
        loop {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                digits.push(bytes[i]);
                i += 1;
            }
            groups += 1;
            let joined = bytes.get(i).is_some_and(|b| joiners.contains(b))
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !joined {
                break;
            }
            i += 1;
        }
        if digits.len() >= min_digits && groups >= min_groups {
            // Digits and joiners are ASCII: both ends are char boundaries.
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..start]);
            out.push_str(&mask_digits(&digits));
            copied = i;
        }
    }
    let mut out = out?;
    out.push_str(&text[copied..]);
    Some(out)
}

#[cfg(test)]
#[path = "tolerant_tests.rs"]
mod tests;
