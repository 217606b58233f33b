//! Value detection: card numbers and SSNs in free text and JSON integers.
//! Every expected output is written out by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imggo_receiver::redact::{RedactSettings, Redactor};
use serde_json::{json, Value};

const KEY: &[u8] = b"test-hash-key-0123456789-abcdefgh";

fn redactor() -> Redactor {
    Redactor::new(&RedactSettings::default(), KEY)
}

/// Redacts `text` as a nested free-text field and returns the result.
fn detect(text: &str) -> String {
    let mut payload = json!({"manifest": {"notes": [{"text": text}]}});
    redactor().redact(&mut payload);
    match &payload["manifest"]["notes"][0]["text"] {
        Value::String(s) => s.clone(),
        other => panic!("not a string: {other}"),
    }
}

/// Every case must come back exactly as it went in.
fn check_unchanged(cases: &[&str]) {
    let pairs: Vec<(&str, &str)> = cases.iter().map(|c| (*c, *c)).collect();
    check(&pairs);
}

fn check(cases: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (input, want) in cases {
        let got = detect(input);
        if got != *want {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
        // Idempotent on every case.
        assert_eq!(detect(&got), got, "second pass changed {input:?}");
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn cards_are_masked() {
    check(&[
        ("4111111111111111", "************1111"),
        ("4012888888881881", "************1881"),
        ("4222222222222", "*********2222"),
        ("5555 5555 5555 4444", "************4444"),
        ("5105-1051-0510-5100", "************5100"),
        ("Paid with 2223003122003222.", "Paid with ************3222."),
        (
            "Amex 3782 822463 10005 on file",
            "Amex ***********0005 on file",
        ),
        ("371449635398431", "***********8431"),
        ("card:6011111111111117;", "card:************1117;"),
        ("(6011 0009 9013 9424)", "(************9424)"),
        ("30569309025904", "**********5904"),
        ("Diners 3852 0000 0232 37", "Diners **********3237"),
        (
            "JCB 3530111333300000, exp 12/27",
            "JCB ************0000, exp 12/27",
        ),
        ("3566-0020-2036-0505", "************0505"),
        ("UnionPay: 6200000000000005", "UnionPay: ************0005"),
        ("Maestro 6759 6498 2643 8453", "Maestro ************8453"),
        ("6011000000000000001", "***************0001"),
        ("4000 0000 0000 0000 006", "***************0006"),
        (
            "mixed 4111-1111 1111-1111 separators",
            "mixed ************1111 separators",
        ),
        ("\"4111111111111111\"", "\"************1111\""),
        (
            "line1\n4111111111111111\nline3",
            "line1\n************1111\nline3",
        ),
        ("é 4111111111111111 ü", "é ************1111 ü"),
    ]);
}

#[test]
fn windows_of_whole_groups() {
    check(&[
        // The expiry's `12` joins the run; the 16-digit window passes.
        ("4111 1111 1111 1111 12/26", "************1111 12/26"),
        (
            "Card 4111 1111 1111 1111 12/26 CVV",
            "Card ************1111 12/26 CVV",
        ),
        // A leading group joins the run; the longest passing window wins.
        (
            "order 123 4111 1111 1111 1111",
            "order 123 ************1111",
        ),
        // Two cards in one run, and a second card after a masked one.
        (
            "4111111111111111 5555555555554444",
            "************1111 ************4444",
        ),
        (
            "4111-1111-1111-1111-5555-5555-5555-4444",
            "************1111-************4444",
        ),
        (
            "cards 4111111111111111, 5555555555554444 and 378282246310005",
            "cards ************1111, ************4444 and ***********0005",
        ),
        // A glued group at either end is left out, the rest is still judged.
        ("INV7 4111 1111 1111 1111", "INV7 ************1111"),
        ("4111 1111 1111 1111 7kg", "************1111 7kg"),
    ]);
}

#[test]
fn non_cards_are_left_alone() {
    let cases = [
        "4111111111111112",
        "411111111111",
        "41111111111111110000",
        "INV4111111111111111",
        "4111111111111111X",
        "0004111111111111111000",
        "4111  1111  1111  1111",
        "4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "4111_1111_1111_1111",
        "call +1 555-123-4567 or +44 20 7946 0958",
        "tel 0049 30 1234 5678",
        "2026-11-24T10:00:00Z, 2026-11-25",
        "DE89 3704 0044 0532 0130 00",
        "1234567890123",
        "1234 5678 9012 3456",
        "id 3f2a1b4c-9d8e-4f70-a1b2-c3d4e5f60718",
        "*********1111 1111 1111 1111",
        "A4111 1111 1111 1111",
        "4111 1111 1111 1111B",
    ];
    check_unchanged(&cases);
}

#[test]
fn ssns_are_masked() {
    check(&[
        ("123-45-6789", "***-**-6789"),
        ("SSN: 123-45-6789.", "SSN: ***-**-6789."),
        ("(078-05-1120)", "(***-**-1120)"),
        ("001-01-0001", "***-**-0001"),
        ("665-12-3456", "***-**-3456"),
        ("667-12-3456", "***-**-3456"),
        ("899-99-9999", "***-**-9999"),
        ("x-123-45-6789", "x-***-**-6789"),
        ("123-45-6789 and 234-56-7890", "***-**-6789 and ***-**-7890"),
        ("123-45-6789 234-56-7890", "***-**-6789 ***-**-7890"),
        (
            "SSN 123-45-6789 card 4111 1111 1111 1111",
            "SSN ***-**-6789 card ************1111",
        ),
        (
            "123-45-6789 4111 1111 1111 1111",
            "***-**-6789 ************1111",
        ),
    ]);
}

#[test]
fn non_ssns_are_left_alone() {
    let cases = [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "12-345-6789",
        "123456789",
        "A123-45-6789",
        "123-45-6789B",
        "123-45-67890",
        "1123-45-6789",
        "123-45-6789-1",
        "1-123-45-6789",
        "123 45 6789",
        "123--45-6789",
    ];
    check_unchanged(&cases);
}

#[test]
fn integers_that_are_cards() {
    let mut payload = json!({
        "manifest": {
            "a": 4111111111111111u64,
            "b": [4222222222222u64, 6011000000000000001u64, -4111111111111111i64],
            "c": 4111111111111112u64,
            "d": 411111111111u64,
            "e": 4111111111111111.0,
            "f": 123456789,
            "g": 41111111111111110000.0
        }
    });
    redactor().redact(&mut payload);
    assert_eq!(
        payload,
        json!({
            "manifest": {
                "a": "************1111",
                "b": ["*********2222", "***************0001", "************1111"],
                "c": 4111111111111112u64,
                "d": 411111111111u64,
                "e": "************1111",
                "f": 123456789,
                "g": 41111111111111110000.0
            }
        })
    );
}

#[test]
fn only_the_identifiers_are_not_scanned_and_at_the_top_level_only() {
    let mut payload = json!({
        "event": "job.succeeded 4111111111111111",
        "job_id": "4111-1111-1111-1111",
        "pattern_id": 4111111111111111u64,
        "status": "123-45-6789",
        "timestamp": "4111111111111111",
        "created_at": "4111111111111111",
        "completed_at": "4111111111111111",
        "error": "card 4111111111111111 declined",
        "manifest": {"job_id": "4111111111111111", "status": "123-45-6789"}
    });
    let mut want = payload.clone();
    want["error"] = json!("card ************1111 declined");
    // An identifier is exempt only when it matches its pattern (§2): an
    // event with a space is refused and quarantined, scanned.
    want["event"] = json!("job.succeeded ************1111");
    // `status`, `pattern_id` and the timestamps are scanned (issue 21).
    want["status"] = json!("***-**-6789");
    for ts in ["timestamp", "created_at", "completed_at"] {
        want[ts] = json!("************1111");
    }
    // Only identifier *strings* are exempt: a number there is scanned like any other.
    want["pattern_id"] = json!("************1111");
    want["manifest"] = json!({"job_id": "************1111", "status": "***-**-6789"});
    redactor().redact(&mut payload);
    assert_eq!(payload, want);
}

#[test]
fn strings_in_arrays_and_non_object_payloads() {
    let r = redactor();
    let mut payload = json!(["4111111111111111", ["x 123-45-6789"], {"k": ["5555555555554444"]}]);
    r.redact(&mut payload);
    assert_eq!(
        payload,
        json!(["************1111", ["x ***-**-6789"], {"k": ["************4444"]}])
    );
    let mut bare = json!("4111111111111111");
    r.redact(&mut bare);
    assert_eq!(bare, json!("************1111"));
}

/// A key is a string in the payload too: a card or SSN spelled as one is
/// masked like a value, at any depth, and its name rule still applies.
#[test]
fn keys_are_scanned_like_values() {
    let mut payload = json!({
        "4111111111111111": "4111111111111111",
        "manifest": {"notes": [{"card 4111 1111 1111 1111": 1, "123-45-6789": "x"}]},
        "cvv": "123",
        "order 41111111111111114": "kept: seventeen digits are no card"
    });
    redactor().redact(&mut payload);
    assert_eq!(
        payload,
        json!({
            "************1111": "************1111",
            "manifest": {"notes": [{"card ************1111": 1, "***-**-6789": "x"}]},
            "order 41111111111111114": "kept: seventeen digits are no card"
        })
    );
    let off = RedactSettings {
        detect_values: false,
        ..RedactSettings::default()
    };
    let mut payload = json!({"4111111111111111": 1});
    Redactor::new(&off, KEY).redact(&mut payload);
    assert_eq!(payload, json!({"4111111111111111": 1}));
}

#[test]
fn detection_can_be_switched_off() {
    let settings = RedactSettings {
        detect_values: false,
        ..RedactSettings::default()
    };
    let mut payload =
        json!({"note": "4111111111111111 123-45-6789", "n": 4111111111111111u64, "cvv": "1"});
    Redactor::new(&settings, KEY).redact(&mut payload);
    assert_eq!(
        payload,
        json!({"note": "4111111111111111 123-45-6789", "n": 4111111111111111u64})
    );
}

#[test]
fn an_underscore_is_not_a_letter_and_does_not_hide_a_number() {
    // CONTRACT §4: only digits glued to letters (or to more digits) are spared.
    check(&[
        ("card_4111111111111111", "card_************1111"),
        ("4111111111111111_exp", "************1111_exp"),
        ("x_4111 1111 1111 1111_y", "x_************1111_y"),
        ("id_123-45-6789", "id_***-**-6789"),
        ("123-45-6789_ssn", "***-**-6789_ssn"),
    ]);
}

/// Stars before a card do not hide it: four digits after nine `*` (or after
/// `***-**-`) look like the tail of an earlier mask, but joined to more
/// groups they are the start of a card.
#[test]
fn stars_before_a_card_do_not_hide_it() {
    let stars = |n: usize| "*".repeat(n);
    check(&[
        (
            "*********4111-1111-1111-1111",
            &format!("{}1111", stars(21)),
        ),
        (
            "ref*********4111 1111 1111 1111 ok",
            &format!("ref{}1111 ok", stars(21)),
        ),
        (
            "***-**-4111 1111 1111 1111",
            &format!("***-**-{}1111", stars(12)),
        ),
        // A mask's last four and the groups after it can make a card too
        // (`1111 4111 1111 1111` passes Luhn): masked in the same redaction,
        // so a second one finds nothing new.
        (
            "4111111111111111 4111 1111 1111",
            &format!("{}1111", stars(24)),
        ),
        // Left alone: a mask's last four with too few digits after them.
        ("************1111 12/26", "************1111 12/26"),
        ("***-**-6789", "***-**-6789"),
    ]);
}

/// Two keys masked alike (or one masked like a key already there) stay two
/// keys: the later gets a suffix, both values stay, and a second redaction
/// changes nothing.
#[test]
fn keys_masked_alike_stay_apart() {
    let mut payload = json!({
        "a": {"4111111111111111": 1, "4111-1111-1111-1111": 2},
        "b": {"************1111": "x", "4111 1111 1111 1111": "y", "************1111#2": "z"}
    });
    redactor().redact(&mut payload);
    let want = json!({
        "a": {"************1111": 1, "************1111#2": 2},
        "b": {"************1111": "x", "************1111#3": "y", "************1111#2": "z"}
    });
    assert_eq!(payload, want);
    redactor().redact(&mut payload);
    assert_eq!(payload, want);
}
