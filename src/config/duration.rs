//! Durations printed back the way `config/default.toml` writes them (`24h`,
//! `30d`, `25s`). humantime's own formatter writes `1day` or `30days`, which
//! reads unlike the file an operator is comparing against. Parsing stays
//! humantime's, so anything printed here reads back to the same value.

use std::time::Duration;

use serde::{Deserializer, Serializer};

/// Units from the largest down, in nanoseconds.
const UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// `d` in the largest unit that holds it exactly: `30d`, `1h`, `90s`,
/// `1500ms`, `0s`. A single day prints as `24h`, as `default.toml` writes
/// `webhook.max_timestamp_age`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in UNITS {
        if nanos % size == 0 && !(unit == "d" && nanos == size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    unreachable!("every duration is a whole number of nanoseconds")
}

/// `#[serde(with = "duration")]`: humantime text in, [`format`] out.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// See [`serialize`]. A bare number (`30`, from `IMGGO__RETENTION__MAX_AGE=30`
/// or `max_age = 30` in a file) has no unit to guess: the error shows the
/// same number with one.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(Visitor)
}

struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration with a unit, e.g. 30d, 1h, 90s or 500ms")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
        Err(E::custom(no_unit(&n.to_string())))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
        Err(E::custom(no_unit(&n.to_string())))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
        Err(E::custom(no_unit(&n.to_string())))
    }
}

/// humantime's parse, with messages that show what to write instead.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(no_unit(trimmed));
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 30d, 1h, 90s or 500ms"))
}

fn no_unit(number: &str) -> String {
    format!(
        "`{number}` has no unit; write a duration with one, e.g. {number}d \
         (units: ms, s, m, h, d)"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_largest_exact_unit() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(25), "25s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(2 * 86_400), "2d"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(36 * 3600), "36h"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(7), "7us"),
            (Duration::from_nanos(1_000_000_001), "1000000001ns"),
        ];
        for (d, text) in cases {
            assert_eq!(format(d), text);
        }
    }

    #[test]
    fn a_bare_number_is_refused_with_an_example() {
        let e = parse("30").unwrap_err();
        assert!(e.contains("e.g. 30d"), "{e}");
        assert!(parse("abc").unwrap_err().contains("e.g. 30d"));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn what_it_prints_parses_back_to_the_same_value() {
        for secs in [
            0, 1, 59, 60, 61, 3599, 3600, 86_399, 86_400, 86_401, 2_592_000,
        ] {
            for nanos in [0, 1, 1_000, 1_000_000, 999_999_999] {
                let d = Duration::new(secs, nanos);
                assert_eq!(humantime::parse_duration(&format(d)).unwrap(), d, "{d:?}");
            }
        }
    }
}
