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

/// A JSON integer (its source text) that is a Luhn-valid 13–19 digit card
/// number, masked. Floats and exponent forms are left alone.
pub(crate) fn mask_card_number(number: &str) -> Option<String> {
    let magnitude = match (number.parse::<u64>(), number.parse::<i64>()) {
        (Ok(u), _) => u,
        (Err(_), Ok(i)) => i.unsigned_abs(),
        (Err(_), Err(_)) => return None,
    };
    // 13..=19 digits: 10^12 <= magnitude < 10^19.
    if !(1_000_000_000_000..10_000_000_000_000_000_000).contains(&magnitude) {
        return None;
    }
    let mut buf = [0u8; 20];
    let mut len = 0;
    let mut rest = magnitude;
    while rest > 0 {
        // Least significant first; reversed below.
        buf[len] = b'0' + (rest % 10) as u8;
        rest /= 10;
        len += 1;
    }
    let digits = &mut buf[..len];
    digits.reverse();
    if !luhn_valid(digits) {
        return None;
    }
    Some(super::mask::mask_digits(digits))
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
        assert_eq!(
            mask_card_number(&num(serde_json::json!(4.111111111111111e15))),
            None
        );
        // Exponent and fraction forms of a card-sized value stay as written.
        assert_eq!(mask_card_number("4111111111111111.0"), None);
        assert_eq!(mask_card_number("4111111111111111e0"), None);
    }
}
