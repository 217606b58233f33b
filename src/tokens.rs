//! Results API bearer tokens: what they look like, their scopes, and how
//! they are hashed for storage and lookup.
//!
//! A token is `igr_` followed by 32 random bytes in unpadded base64url (256
//! bits; the prefix lets secret scanners recognise a leaked one). Only its
//! SHA-256 is stored. A random token of that size needs no slow KDF: nobody
//! can guess a preimage of its hash. A request's token is hashed and looked
//! up by that hash (an index lookup, `store/tokens.rs`), so the secret part
//! is never compared byte by byte with a stored value: how long the lookup
//! takes depends on the hash, which an attacker cannot steer towards a real
//! token without already knowing it.

use std::fmt;

use base64::Engine as _;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

/// What every token starts with.
pub const PREFIX: &str = "igr_";
/// Random bytes after the prefix.
const RANDOM_BYTES: usize = 32;
/// Length of the base64url text of [`RANDOM_BYTES`] (unpadded).
const ENCODED_LEN: usize = 43;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `GET /v1/events`, `GET /v1/jobs/{job_id}`.
    EventsRead,
    /// `DELETE /v1/jobs/{job_id}`, `POST /v1/erasure`.
    EventsDelete,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::EventsRead, Scope::EventsDelete];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsRead => "events:read",
            Self::EventsDelete => "events:delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses scopes given as repeated values and/or comma-separated lists;
/// the result is sorted and without repeats. Names the first unknown one.
pub fn parse_scopes<S: AsRef<str>>(items: &[S]) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for part in items.iter().flat_map(|i| i.as_ref().split(',')) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let scope = Scope::parse(part).ok_or_else(|| {
            format!(
                "unknown scope `{part}` (known: {})",
                Scope::ALL.map(Scope::as_str).join(", ")
            )
        })?;
        scopes.push(scope);
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// Scopes as stored: space-separated.
pub fn scopes_to_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Scopes from their stored text; unknown ones (from a newer version) are
/// skipped.
pub fn scopes_from_text(text: &str) -> Vec<Scope> {
    text.split_whitespace().filter_map(Scope::parse).collect()
}

/// The SHA-256 of a token: what is stored and looked up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// A fresh token (shown once) and its hash (stored).
pub fn generate() -> (SecretString, TokenHash) {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = TokenHash::of(&token);
    (SecretString::from(token), hash)
}

/// The token of an `Authorization` header value, when it is `Bearer`
/// (any case) followed by a well-formed token; anything else is `None`.
pub fn from_authorization(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    well_formed(token).then_some(token)
}

/// `igr_` + 43 base64url characters.
pub fn well_formed(token: &str) -> bool {
    token.len() == PREFIX.len() + ENCODED_LEN
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Token names: what `token create` accepts (they appear in audit records
/// as `token:NAME` and in logs).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A stored token, as `token list` prints it (never the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Unix microseconds.
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// The token's text, to print it once (`token create`) or send it.
pub fn expose(token: &SecretString) -> &str {
    token.expose_secret()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let (a, ha) = generate();
        let (b, hb) = generate();
        assert!(well_formed(expose(&a)), "{}", expose(&a).len());
        assert_ne!(expose(&a), expose(&b));
        assert_ne!(ha, hb);
        assert_eq!(TokenHash::of(expose(&a)), ha);
        assert_eq!(format!("{ha:?}"), "TokenHash(..)");
    }

    #[test]
    fn authorization_header_forms() {
        let (t, _) = generate();
        let t = expose(&t);
        assert_eq!(
            from_authorization(format!("Bearer {t}").as_bytes()),
            Some(t)
        );
        assert_eq!(
            from_authorization(format!("bearer {t}").as_bytes()),
            Some(t)
        );
        for bad in [
            String::new(),
            t.to_owned(),
            format!("Basic {t}"),
            format!("Bearer{t}"),
            format!("Bearer {t}x"),
            format!("Bearer {}", &t[..t.len() - 1]),
            "Bearer igr_".to_owned() + &"!".repeat(43),
            "Bearer xyz_".to_owned() + &"a".repeat(43),
        ] {
            assert_eq!(from_authorization(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(from_authorization(b"Bearer \xff\xfe"), None);
    }

    #[test]
    fn scopes_parse_from_repeats_and_lists() {
        let s = parse_scopes(&["events:read", "events:delete,events:read"]).unwrap();
        assert_eq!(s, vec![Scope::EventsRead, Scope::EventsDelete]);
        assert_eq!(scopes_from_text(&scopes_to_text(&s)), s);
        assert!(parse_scopes(&["events:write"])
            .unwrap_err()
            .contains("events:write"));
        assert!(parse_scopes::<&str>(&[]).unwrap().is_empty());
    }
}
