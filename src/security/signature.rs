//! `X-ImgGo-Signature` verification: HMAC-SHA256 over the raw body, lowercase
//! hex, with or without the production sender's `sha256=` prefix.
//!
//! Every configured secret is tried and the results are OR-ed as
//! `subtle::Choice`, so the time taken says neither which secret matched nor
//! where the first differing byte is.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::config::secrets::WebhookSecrets;

type HmacSha256 = Hmac<Sha256>;

/// Header ImgGo signs deliveries with.
pub const SIGNATURE_HEADER: &str = "x-imggo-signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-ImgGo-Signature header is missing")]
    Missing,
    #[error("the X-ImgGo-Signature header does not match the body")]
    Invalid,
}

/// Verifies and makes signatures with the configured secrets.
pub struct SignatureVerifier {
    /// Keyed MAC states, cloned per request so the key schedule runs once.
    macs: Vec<HmacSha256>,
}

impl SignatureVerifier {
    pub fn new(secrets: &WebhookSecrets) -> Self {
        let macs = secrets
            .iter()
            .map(|s| {
                // HMAC accepts keys of any length; this cannot fail.
                HmacSha256::new_from_slice(s).unwrap_or_else(|_| unreachable!())
            })
            .collect();
        Self { macs }
    }

    /// Checks `header` (the raw header value, if any) against `body`.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let header = header.trim_ascii();
        if header.is_empty() {
            return Err(SignatureError::Missing);
        }
        let expected = parse_signature(header).ok_or(SignatureError::Invalid)?;
        let mut matched = Choice::from(0);
        for mac in &self.macs {
            let mut mac = mac.clone();
            mac.update(body);
            matched |= mac.finalize().into_bytes().as_slice().ct_eq(&expected);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }

    /// `sha256=<hex>` of `body` under the current (first) secret.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.macs[0].clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignatureVerifier(<{} secrets>)", self.macs.len())
    }
}

/// `sha256=<64 hex>` or `<64 hex>`, hex in any case, prefix in any case.
fn parse_signature(value: &[u8]) -> Option<[u8; 32]> {
    const PREFIX: &[u8] = b"sha256=";
    let hex_part =
        if value.len() >= PREFIX.len() && value[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
            &value[PREFIX.len()..]
        } else {
            value
        };
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret_0123456789";
    const OTHER: &str = "whsec_rotated_secret_abcdefgh";
    const BODY: &[u8] = br#"{"event":"job.succeeded","job_id":"j1"}"#;

    fn verifier(secrets: &str) -> SignatureVerifier {
        SignatureVerifier::new(&WebhookSecrets::parse(secrets).unwrap())
    }

    /// The oracle: HMAC computed here, independent of the code under test.
    fn reference_hex(secret: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn known_answer() {
        // RFC 4231 test case 2 ("Jefe"), as a sanity check of the primitive.
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn accepts_every_form_the_sender_uses() {
        let v = verifier(SECRET);
        let hex = reference_hex(SECRET, BODY);
        for header in [
            format!("sha256={hex}"),
            hex.clone(),
            hex.to_uppercase(),
            format!("sha256={}", hex.to_uppercase()),
            format!("SHA256={hex}"),
            format!("  sha256={hex} "),
        ] {
            assert_eq!(v.verify(Some(header.as_bytes()), BODY), Ok(()), "{header}");
        }
    }

    #[test]
    fn any_configured_secret_verifies() {
        let v = verifier(&format!("{SECRET},{OTHER}"));
        for secret in [SECRET, OTHER] {
            let header = format!("sha256={}", reference_hex(secret, BODY));
            assert_eq!(v.verify(Some(header.as_bytes()), BODY), Ok(()));
        }
        let unknown = format!("sha256={}", reference_hex("whsec_not_configured_xx", BODY));
        assert_eq!(
            v.verify(Some(unknown.as_bytes()), BODY),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn rejects_adversarial_headers() {
        let v = verifier(SECRET);
        let hex = reference_hex(SECRET, BODY);
        let flip = |i: usize| {
            let mut b = hex.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap()
        };
        let cases: Vec<(String, SignatureError)> = vec![
            (String::new(), SignatureError::Missing),
            ("   ".into(), SignatureError::Missing),
            ("sha256=".into(), SignatureError::Invalid),
            (flip(0), SignatureError::Invalid),
            (flip(31), SignatureError::Invalid),
            (flip(63), SignatureError::Invalid),
            (hex[..63].to_string(), SignatureError::Invalid),
            (hex[..32].to_string(), SignatureError::Invalid),
            (format!("{hex}00"), SignatureError::Invalid),
            (format!("{hex}{hex}"), SignatureError::Invalid),
            (format!("sha256={}zz", &hex[..62]), SignatureError::Invalid),
            (format!("sha1={hex}"), SignatureError::Invalid),
            (format!("sha256:{hex}"), SignatureError::Invalid),
            (format!("sha256= {hex}"), SignatureError::Invalid),
            (format!("v1,{hex}"), SignatureError::Invalid),
            ("g".repeat(64), SignatureError::Invalid),
            (
                reference_hex(SECRET, b"other body"),
                SignatureError::Invalid,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(
                v.verify(Some(header.as_bytes()), BODY),
                Err(want),
                "{header:?}"
            );
        }
        assert_eq!(v.verify(None, BODY), Err(SignatureError::Missing));
        // Non-UTF-8 header bytes are just invalid.
        assert_eq!(
            v.verify(Some(&[0xff, 0xfe, 0x00]), BODY),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn a_signature_covers_every_body_byte() {
        let v = verifier(SECRET);
        let header = format!("sha256={}", reference_hex(SECRET, BODY));
        let mut tampered = BODY.to_vec();
        tampered.push(b' ');
        assert_eq!(
            v.verify(Some(header.as_bytes()), &tampered),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            v.verify(Some(header.as_bytes()), b""),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn sign_uses_the_first_secret_with_the_production_prefix() {
        let v = verifier(&format!("{SECRET},{OTHER}"));
        assert_eq!(
            v.sign(BODY),
            format!("sha256={}", reference_hex(SECRET, BODY))
        );
    }
}
