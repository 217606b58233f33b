//! The subject index of a body that does not parse (a quarantined delivery
//! refused with `invalid_json`), over the tolerant tokens of
//! [`crate::json::lex`]: the same fields as in a parsed body, at any depth
//! (no limit), so that erasure reaches the quarantine row. A string cut off
//! by the end of the text is not indexed: it is nobody's whole value.

use crate::json::lex::{Lexer, Token};
use crate::redact;

use super::{SubjectFields, SubjectHash, SubjectKey, SubjectKind};

pub(super) fn index(text: &str, fields: &SubjectFields, key: &SubjectKey) -> Vec<SubjectHash> {
    let mut found = Vec::new();
    if fields.is_empty() {
        return found;
    }
    // The kind of the nearest named field around each open container.
    let mut stack: Vec<Option<SubjectKind>> = Vec::new();
    // Set by a key, for the value after it.
    let mut next: Option<Option<SubjectKind>> = None;
    let mut name = String::new();
    for token in Lexer::new(text) {
        let around = stack.last().copied().flatten();
        let kind = match token {
            Token::Between(s) if s != "," => continue,
            _ => next.take().unwrap_or(around),
        };
        match token {
            Token::Str(s) if s.key => {
                redact::normalize_into(&s.text, &mut name);
                next = Some(fields.kind(&name).or(around));
            }
            Token::Open(_) => stack.push(kind),
            Token::Close(_) => {
                stack.pop();
            }
            Token::Str(s) if s.closed => {
                if let Some(kind) = kind {
                    found.extend(key.hash_as(kind, &s.text));
                }
            }
            Token::Number(n) | Token::Unreadable(n) => {
                if let Some(kind) = kind {
                    found.extend(key.hash_as(kind, n));
                }
            }
            _ => {}
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}
