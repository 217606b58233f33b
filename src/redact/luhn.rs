//! The Luhn checksum and card detection for JSON integers.

/// Luhn check over ASCII digits (`b'0'..=b'9'`), most significant first.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum % 10 == 0
}

/// Card numbers have 13 to 19 digits.
pub(crate) const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

/// A JSON number (its source text) whose mathematical value is an integer
/// of 13–19 digits that passes Luhn, masked: `4111111111111111`, and as well
/// `4111111111111111.0`, `4111111111111111e0`, `4.111111111111111E15`,
/// `-41111111111111110E-1`. Any other number is left as written.
pub(crate) fn mask_card_number(number: &str) -> Option<String> {
    let digits = integer_digits(number)?;
    if !CARD_DIGITS.contains(&digits.len()) || !luhn_valid(&digits) {
        return None;
    }
    Some(super::mask::mask_digits(&digits))
}

/// The decimal digits (no leading zero) of the integer a JSON number's text
/// stands for, when it stands for one of at most 19 digits other than 0;
/// `None` for a fraction, zero, or anything longer. Exact: the text's digits
/// are shifted by its exponent, never rounded through a float.
fn integer_digits(number: &str) -> Option<Vec<u8>> {
    let unsigned = number.strip_prefix('-').unwrap_or(number);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], &unsigned[at + 1..]),
        None => (unsigned, "0"),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let exponent_digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if exponent_digits.is_empty() || !all_digits(exponent_digits) {
        return None;
    }
    // Beyond this a 19-digit integer cannot come out: no need to read on.
    const LIMIT: i64 = 1 << 20;
    let magnitude = exponent_digits
        .trim_start_matches('0')
        .parse::<i64>()
        .unwrap_or(if exponent_digits.bytes().all(|b| b == b'0') {
            0
        } else {
            LIMIT
        })
        .min(LIMIT);
    let exponent = if exponent.starts_with('-') {
        -magnitude
    } else {
        magnitude
    };
    // value = significand × 10^(exponent − frac.len())
    let significand: Vec<u8> = int
        .bytes()
        .chain(frac.bytes())
        .skip_while(|&b| b == b'0')
        .collect();
    let trailing_zeros = significand.iter().rev().take_while(|&&b| b == b'0').count();
    let shift = exponent - i64::try_from(frac.len()).ok()?;
    if significand.is_empty() {
        return None;
    }
    if shift >= 0 {
        let len = i64::try_from(significand.len()).ok()? + shift;
        if len > 19 {
            return None;
        }
        let mut digits = significand;
        digits.resize(usize::try_from(len).ok()?, b'0');
        Some(digits)
    } else {
        let cut = usize::try_from(-shift).ok()?;
        if cut > trailing_zeros {
            return None; // a fraction
        }
        let mut digits = significand;
        digits.truncate(digits.len() - cut);
        (digits.len() <= 19).then_some(digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_values() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"79927398713"));
        assert!(luhn_valid(b"6011000000000000001"));
        assert!(!luhn_valid(b"6011000000000000004"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"411111111111111112"));
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"41x1"));
    }

    #[test]
    fn integers() {
        let num = |v: serde_json::Value| match v {
            serde_json::Value::Number(n) => n.to_string(),
            other => panic!("not a number: {other}"),
        };
        assert_eq!(
            mask_card_number(&num(serde_json::json!(4111111111111111u64))).as_deref(),
            Some("************1111")
        );
        assert_eq!(
            mask_card_number(&num(serde_json::json!(-4111111111111111i64))).as_deref(),
            Some("************1111")
        );
        assert_eq!(
            mask_card_number(&num(serde_json::json!(4222222222222u64))).as_deref(),
            Some("*********2222")
        );
        assert_eq!(
            mask_card_number(&num(serde_json::json!(4111111111111112u64))),
            None
        );
        assert_eq!(
            mask_card_number(&num(serde_json::json!(411111111111u64))),
            None
        );
        assert_eq!(mask_card_number(&num(serde_json::json!(u64::MAX))), None);
        // A float of a card's value is the card (CONTRACT §4, issue 21).
        assert_eq!(
            mask_card_number(&num(serde_json::json!(4.111111111111111e15))).as_deref(),
            Some("************1111")
        );
    }

    #[test]
    fn non_integer_spellings_of_a_card_are_masked() {
        for spelling in [
            "4111111111111111.0",
            "4111111111111111.000",
            "4111111111111111e0",
            "4111111111111111E+0",
            "4.111111111111111E15",
            "4.111111111111111e+15",
            "0.4111111111111111e16",
            "41111111111111110E-1",
            "411111111111111100000e-5",
            "-4111111111111111.0",
            "-4.111111111111111E15",
        ] {
            assert_eq!(
                mask_card_number(spelling).as_deref(),
                Some("************1111"),
                "{spelling}"
            );
        }
        for not_a_card in [
            "4111111111111111.5",
            "4.1111111111111115E15",
            "4111111111111111e1",
            "4.111111111111111E14",
            "411111111111111e1",
            "0",
            "0.0e99999999999999999999",
            "1e999999999999999999999",
            "4111111111111111e-99999999999999999999",
            "4111111111111112.0",
            "4.2e",
            "",
            "-",
        ] {
            assert_eq!(mask_card_number(not_a_card), None, "{not_a_card}");
        }
    }
}
