//! Property tests: injected card numbers and SSNs never survive, no
//! Luhn-valid card or valid SSN is left anywhere (an independent oracle
//! written from the spec), redaction is idempotent and never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imggo_receiver::redact::{RedactSettings, Redactor};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

const KEY: &[u8] = b"prop-hash-key-0123456789abcdefghij";

/// The top-level identifiers value detection leaves alone (CONTRACT §4).
const ENVELOPE: &[&str] = &["event", "job_id"];

// ---------------------------------------------------------------- oracle

fn luhn(digits: &[u32]) -> bool {
    let total: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                [0, 2, 4, 6, 8, 1, 3, 5, 7, 9][d as usize]
            } else {
                d
            }
        })
        .sum();
    total % 10 == 0
}

fn glue(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// Describes the first card or SSN the spec says should have been masked.
fn leftover_in_text(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let mut i = 0;
    while i < n {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // (start, end, separator before)
        let mut groups: Vec<(usize, usize, char)> = Vec::new();
        let mut sep = '^';
        loop {
            let start = i;
            while i < n && chars[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((start, i, sep));
            if i + 1 < n && (chars[i] == ' ' || chars[i] == '-') && chars[i + 1].is_ascii_digit() {
                sep = chars[i];
                i += 1;
            } else {
                break;
            }
        }
        let first = groups[0];
        let prefix: String = chars[..first.0].iter().collect();
        let stars = prefix.chars().rev().take_while(|&c| c == '*').count();
        let tail = first.1 - first.0 == 4 && (stars >= 9 || prefix.ends_with("***-**-"));
        let count = groups.len();
        let mut usable = vec![true; count];
        usable[0] &= !tail && !glue(first.0.checked_sub(1).map(|p| chars[p]));
        usable[count - 1] &= !glue(chars.get(groups[count - 1].1).copied());
        let digits = |g: (usize, usize, char)| -> Vec<u32> {
            chars[g.0..g.1]
                .iter()
                .map(|c| c.to_digit(10).unwrap())
                .collect()
        };
        for a in 0..count {
            for b in a..count {
                if !usable[a..=b].iter().all(|&u| u) {
                    break;
                }
                let window: Vec<u32> = groups[a..=b].iter().flat_map(|&g| digits(g)).collect();
                if (13..=19).contains(&window.len()) && luhn(&window) {
                    return Some(format!(
                        "card {:?} in {text:?}",
                        &chars[groups[a].0..groups[b].1]
                    ));
                }
            }
        }
        for a in 0..count.saturating_sub(2) {
            let g = &groups[a..a + 3];
            let lens: Vec<usize> = g.iter().map(|g| g.1 - g.0).collect();
            let dashed = g[1].2 == '-' && g[2].2 == '-';
            let joined_left = g[0].2 == '-' && !(a == 1 && tail);
            let joined_right = groups.get(a + 3).is_some_and(|g| g.2 == '-');
            if lens == [3, 2, 4]
                && dashed
                && !joined_left
                && !joined_right
                && usable[a..a + 3].iter().all(|&u| u)
            {
                let area: String = chars[g[0].0..g[0].1].iter().collect();
                let group: String = chars[g[1].0..g[1].1].iter().collect();
                let serial: String = chars[g[2].0..g[2].1].iter().collect();
                if area != "000"
                    && area != "666"
                    && !area.starts_with('9')
                    && group != "00"
                    && serial != "0000"
                {
                    return Some(format!("ssn {area}-{group}-{serial} in {text:?}"));
                }
            }
        }
    }
    None
}

fn leftover_in_number(n: &serde_json::Number) -> Option<String> {
    // The number's value, read from its text (kept by `arbitrary_precision`)
    // by moving the decimal point: `4.111111111111111E15` is a card too.
    let text = n.to_string();
    let text = text.trim_start_matches('-');
    let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let exponent: i64 = exponent.trim_start_matches('+').parse().ok()?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    let point = i64::try_from(int.len()).unwrap() + exponent;
    if !(0..=40).contains(&point) {
        return None;
    }
    let point = point as usize;
    let mut integer: String = all.chars().take(point).collect();
    while integer.len() < point {
        integer.push('0');
    }
    if all.chars().skip(point).any(|c| c != '0') {
        return None;
    }
    let integer = integer.trim_start_matches('0');
    let digits: Vec<u32> = integer.chars().map(|c| c.to_digit(10).unwrap()).collect();
    ((13..=19).contains(&digits.len()) && luhn(&digits)).then(|| format!("card number {n}"))
}

fn leftover(value: &Value, top_level_key: Option<&str>) -> Option<String> {
    let envelope = top_level_key.is_some_and(|k| ENVELOPE.contains(&k));
    match value {
        Value::String(s) if !envelope => leftover_in_text(s),
        Value::Number(n) if !envelope => leftover_in_number(n),
        Value::Array(items) => items.iter().find_map(|v| leftover(v, None)),
        Value::Object(map) => map.values().find_map(|v| leftover(v, None)),
        _ => None,
    }
}

fn leftover_in_payload(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| leftover(v, Some(k))),
        other => leftover(other, None),
    }
}

// ------------------------------------------------------------ generators

fn card_digits() -> impl Strategy<Value = String> {
    (1u32..10, prop::collection::vec(0u32..10, 11..=17)).prop_map(|(first, rest)| {
        let mut digits: Vec<u32> = std::iter::once(first).chain(rest).collect();
        digits.push(0);
        let check = (0..10).find(|&c| {
            *digits.last_mut().unwrap() = c;
            luhn(&digits)
        });
        *digits.last_mut().unwrap() = check.unwrap();
        digits
            .iter()
            .map(|d| char::from_digit(*d, 10).unwrap())
            .collect()
    })
}

fn formatted_card() -> impl Strategy<Value = (String, String)> {
    (card_digits(), 0..3usize).prop_map(|(digits, style)| {
        let sep = [None, Some(' '), Some('-')][style];
        let text = match sep {
            None => digits.clone(),
            Some(sep) => {
                let groups: Vec<String> = digits
                    .as_bytes()
                    .chunks(4)
                    .map(|c| String::from_utf8(c.to_vec()).unwrap())
                    .collect();
                groups.join(&sep.to_string())
            }
        };
        (digits, text)
    })
}

fn ssn() -> impl Strategy<Value = String> {
    (1u32..900, 1u32..100, 1u32..10000)
        .prop_filter("area 666", |(a, _, _)| *a != 666)
        .prop_map(|(a, g, s)| format!("{a:03}-{g:02}-{s:04}"))
}

const ALPHABET: &[char] = &[
    'a', 'Z', 'é', 'ß', '0', '1', '4', '7', '9', ' ', ' ', '-', '_', '/', '.', '*', '\n', ':', '(',
    '"',
];

fn filler() -> impl Strategy<Value = String> {
    prop::collection::vec(select(ALPHABET), 0..16).prop_map(|c| c.into_iter().collect())
}

/// A card or SSN as free text, set off by a space or bracket.
fn secret_text() -> impl Strategy<Value = (String, String)> {
    let secret = prop_oneof![formatted_card(), ssn().prop_map(|s| (s.clone(), s))];
    (secret, filler(), filler(), 0..4usize).prop_map(|((plain, shown), before, after, style)| {
        let text = match style {
            0 => shown,
            1 => format!("{before} {shown} {after}"),
            2 => format!("({shown}), {after}"),
            _ => format!("{before} {shown}."),
        };
        (plain, text)
    })
}

const KEYS: &[&str] = &[
    "ssn",
    "SSN",
    "socialSecurityNumber",
    "passport",
    "card_number",
    "creditCard",
    "PAN",
    "iban",
    "cvv",
    "CVC2",
    "pin",
    "mrz",
    "ssn_hash",
    "note",
    "items",
    "status",
    "job_id",
    "event",
    "description",
    "amount",
    "timestamp",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(KEYS).prop_map(String::from), 1 => filler()]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        filler().prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        secret_text().prop_map(|(_, t)| Value::String(t)),
        card_digits().prop_map(|d| json!(d.parse::<u64>().unwrap())),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A card number written as a JSON number that is not a plain integer:
/// `D.0`, `De0`, `d.dddE+15`, `D0E-1`, negative or not.
fn spelled_card() -> impl Strategy<Value = (String, Value)> {
    (card_digits(), 0..5usize, any::<bool>()).prop_map(|(d, style, negative)| {
        let sign = if negative { "-" } else { "" };
        let text = match style {
            0 => format!("{sign}{d}.0"),
            1 => format!("{sign}{d}e0"),
            2 => format!("{sign}{}.{}E{}", &d[..1], &d[1..], d.len() - 1),
            3 => format!("{sign}{}.{}e+{}", &d[..1], &d[1..], d.len() - 1),
            _ => format!("{sign}{d}00E-2"),
        };
        (d, serde_json::from_str(&text).unwrap())
    })
}

/// One secret to place in the tree: its plain digits (or SSN text) and the value holding it.
fn injected() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        spelled_card(),
        secret_text().prop_map(|(plain, text)| (plain, Value::String(text))),
        card_digits().prop_map(|d| {
            let n = d.parse::<u64>().unwrap();
            (d, json!(n))
        }),
    ]
}

/// Puts `value` into the `pick`-th container of `tree` (depth first).
fn place(tree: &mut Value, pick: usize, slot: usize, value: Value) {
    fn containers(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(containers).sum::<usize>(),
            Value::Object(m) => 1 + m.values().map(containers).sum::<usize>(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, target: &mut usize, slot: usize, value: &mut Option<Value>) {
        let here = *target == 0;
        *target = target.wrapping_sub(1);
        match v {
            Value::Array(a) if here => a.push(value.take().unwrap()),
            Value::Object(m) if here => {
                m.insert(format!("free_text_{slot}"), value.take().unwrap());
            }
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, target, slot, value)),
            Value::Object(m) => m.values_mut().for_each(|c| walk(c, target, slot, value)),
            _ => {}
        }
    }
    if containers(tree) == 0 {
        *tree = json!([tree.take()]);
    }
    let mut target = pick % containers(tree);
    walk(tree, &mut target, slot, &mut Some(value));
}

fn payload() -> impl Strategy<Value = (Value, Vec<String>)> {
    (
        tree(),
        prop::collection::vec((injected(), any::<usize>()), 1..6),
    )
        .prop_map(|(manifest, secrets)| {
            let mut manifest = manifest;
            let mut plains = Vec::new();
            for (slot, ((plain, value), pick)) in secrets.into_iter().enumerate() {
                place(&mut manifest, pick, slot, value);
                plains.push(plain);
            }
            let payload = json!({
                "event": "job.succeeded",
                "job_id": "0b6f2c1e-3d4a-4e5f-8a9b-1c2d3e4f5a6b",
                "manifest": manifest,
                "error": null,
                "timestamp": "2026-11-24T10:00:00Z"
            });
            (payload, plains)
        })
}

/// Text built from tokens that sit on the scanner's edges.
fn tricky_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        select(
            &[
                "4111",
                "1111",
                "12",
                "123",
                "45",
                "6789",
                "0",
                "7",
                " ",
                "-",
                "  ",
                "*",
                "*********",
                "***-**-",
                "a",
                "_",
                "/",
                "é"
            ][..]
        )
        .prop_map(String::from),
        formatted_card().prop_map(|(_, t)| t),
        ssn(),
        prop::collection::vec(select(&['0', '1', '5', '9'][..]), 1..6)
            .prop_map(|d| d.into_iter().collect()),
    ];
    prop::collection::vec(token, 0..20).prop_map(|t| t.concat())
}

fn redactor() -> Redactor {
    Redactor::new(&RedactSettings::default(), KEY)
}

fn assert_clean_and_stable(r: &Redactor, original: &Value) -> Result<Value, TestCaseError> {
    let mut once = original.clone();
    r.redact(&mut once);
    if let Some(found) = leftover_in_payload(&once) {
        return Err(TestCaseError::fail(format!(
            "{found}\ninput: {original}\noutput: {once}"
        )));
    }
    let mut twice = once.clone();
    r.redact(&mut twice);
    prop_assert_eq!(&twice, &once, "not idempotent; input: {}", original);
    Ok(once)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=100000 for a long run.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1024),
        ..ProptestConfig::default()
    })]

    #[test]
    fn injected_secrets_never_survive((input, plains) in payload()) {
        let r = redactor();
        let out = assert_clean_and_stable(&r, &input)?;
        let text: String = out.to_string().chars().filter(|c| *c != ' ' && *c != '-').collect();
        for plain in &plains {
            let needle: String = plain.chars().filter(|c| *c != '-').collect();
            prop_assert!(!text.contains(&needle), "{} survived in {}", plain, out);
            if plain.contains('-') {
                prop_assert!(!out.to_string().contains(plain.as_str()), "ssn {} survived in {}", plain, out);
            }
        }
    }

    #[test]
    fn arbitrary_json_is_clean_stable_and_never_panics(input in tree()) {
        assert_clean_and_stable(&redactor(), &input)?;
    }

    #[test]
    fn tricky_text_is_clean_and_stable(text in tricky_text()) {
        assert_clean_and_stable(&redactor(), &json!({"note": text, "list": [text]}))?;
    }
}

#[test]
fn oracle_sanity() {
    assert!(leftover_in_text("4111 1111 1111 1111 12/26").is_some());
    assert!(leftover_in_text("************1111 12/26").is_none());
    assert!(leftover_in_text("x 123-45-6789").is_some());
    assert!(leftover_in_text("***-**-6789").is_none());
    assert!(leftover_in_text("A123-45-6789").is_none());
    assert!(leftover_in_text("INV4111111111111111").is_none());
}
