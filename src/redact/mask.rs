//! Value transforms of the `hash` and `mask_last4` actions.

/// `"*"` × (digits − 4) then the last four digits; fewer than five digits:
/// one `*` per digit. `digits` are ASCII digits (bytes) or digits of any
/// script (chars).
pub(crate) fn mask_digits<D: Copy + Into<char>>(digits: &[D]) -> String {
    let keep = if digits.len() > 4 { 4 } else { 0 };
    let mut out = String::with_capacity(digits.len());
    out.extend(std::iter::repeat_n('*', digits.len() - keep));
    out.extend(digits[digits.len() - keep..].iter().map(|&d| d.into()));
    out
}

/// The `mask_last4` form of a string, or `None` when it stays as it is:
/// already masked (`*`… then at most four digits) or holding no digit.
/// Digits of any script count (`４１１１…`, as OCR reads some documents):
/// a field named for a card is masked whatever its digits look like.
pub(crate) fn mask_last4(value: &str) -> Option<String> {
    if is_masked(value) {
        return None;
    }
    if value.is_ascii() {
        let digits: Vec<u8> = value.bytes().filter(u8::is_ascii_digit).collect();
        return (!digits.is_empty()).then(|| mask_digits(&digits));
    }
    let digits: Vec<char> = value.chars().filter(|c| c.is_numeric()).collect();
    (!digits.is_empty()).then(|| mask_digits(&digits))
}

/// `*`… then at most four digits (of any script).
pub(crate) fn is_masked(value: &str) -> bool {
    let stars = value.bytes().take_while(|&b| b == b'*').count();
    let rest = &value[stars..];
    stars > 0 && rest.chars().count() <= 4 && rest.chars().all(char::is_numeric)
}

/// Exactly 64 lowercase hex digits: the output of the `hash` action, which a
/// second pass must leave alone.
pub(crate) fn is_hash_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Canonical text for hashing: letters and digits only, letters uppercased.
pub(crate) fn canonical(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    if value.is_ascii() {
        out.extend(
            value
                .bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| char::from(b.to_ascii_uppercase())),
        );
    } else {
        for c in value.chars().filter(|c| c.is_alphanumeric()) {
            out.extend(c.to_uppercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let cases: &[(&str, Option<&str>)] = &[
            ("4111 1111 1111 1111", Some("************1111")),
            ("4111-1111-1111-1111", Some("************1111")),
            ("DE89 3704 0044 0532 0130 00", Some("****************3000")),
            ("12345", Some("*2345")),
            ("1234", Some("****")),
            ("7", Some("*")),
            ("N/A", None),
            ("", None),
            ("************1111", None),
            ("****", None),
            ("*1", None),
            ("***-**-6789", Some("****")),
            ("**12345", Some("*2345")),
            ("x*1234", Some("****")),
            // Digits of other scripts are digits: full-width, Arabic-Indic.
            (
                "４１１１ １１１１ １１１１ １１１１",
                Some("************１１１１"),
            ),
            ("٤١١١١١١١١١١١١١١١", Some("************١١١١")),
            ("************１１１１", None),
            ("card ٣٤", Some("**")),
        ];
        for (input, want) in cases {
            assert_eq!(mask_last4(input).as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn masked_detection() {
        assert!(is_masked("*"));
        assert!(is_masked("************1111"));
        assert!(!is_masked("1111"));
        assert!(!is_masked("*12345"));
        assert!(!is_masked("**-1234"));
    }

    #[test]
    fn canonical_text() {
        assert_eq!(canonical("123-45-6789"), "123456789");
        assert_eq!(canonical(" x12 345-ab "), "X12345AB");
        assert_eq!(canonical("straße 5"), "STRASSE5");
        assert_eq!(canonical("--"), "");
    }

    #[test]
    fn hash_hex() {
        assert!(is_hash_hex(&"a1".repeat(32)));
        assert!(!is_hash_hex(&"A1".repeat(32)));
        assert!(!is_hash_hex(&"a1".repeat(31)));
        assert!(!is_hash_hex(&"g1".repeat(32)));
    }
}
