//! The parser and writer against serde_json as an oracle, JSON.stringify
//! as a model, and the cases RFC 8259 rejects.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

/// What serde_json's own `Value` (preserve_order, arbitrary_precision)
/// writes for the same input: the reference for bodies it can read
/// (no lone surrogates, no magic keys, exponents spelled `e+`/`e-`,
/// which it would respell).
fn reference(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .unwrap()
        .to_string()
}

fn ours(text: &str) -> String {
    String::from_utf8(Json::parse(text.as_bytes()).unwrap().to_vec()).unwrap()
}

fn nested(levels: usize) -> String {
    "[".repeat(levels) + &"]".repeat(levels)
}

#[test]
fn round_trips_like_serde_json_value() {
    let cases = [
        r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
        r#" { "spaced" : [ 1 , 2 ] } "#,
        "\t[\r\n1\n]\n",
        r#"[1.0, -0, 1e+5, 1e-7, 123456789012345678901234567890, -1.50, 0.1, 5e-324]"#,
        r#""esc \" \\ \/ \b \f \n \r \t \u0001 \u001f \u00e9 \ud83d\ude00""#,
        r#"{"dup":1,"x":2,"dup":3}"#,
        r#"{"k\u0041y":"v","kAy":"w"}"#,
        r#"{}"#,
        r#"[]"#,
        r#""""#,
        "\"\u{2028}\u{7f}é😀\"",
    ];
    for case in cases {
        assert_eq!(ours(case), reference(case), "{case}");
    }
}

#[test]
fn numbers_keep_their_source_text() {
    for case in [
        "[1E2,1e2,1e+2,1E-2,-0,-0.0,0e0,1.5E+300,1e400,123456789012345678901234567890]",
        "9007199254740994",
        "-1.000000000000000000001",
    ] {
        assert_eq!(ours(case), case);
    }
    let Json::Number(text) = Json::parse(b" 1E+21 ").unwrap() else {
        panic!("not a number")
    };
    assert!(matches!(text, Cow::Borrowed("1E+21")));
}

#[test]
fn what_json_stringify_writes_comes_back_byte_for_byte() {
    // Every control character, as JSON.stringify escapes them.
    let controls: String = (0u8..0x20)
        .map(|b| match b {
            0x08 => "\\b".to_owned(),
            0x09 => "\\t".to_owned(),
            0x0a => "\\n".to_owned(),
            0x0c => "\\f".to_owned(),
            0x0d => "\\r".to_owned(),
            _ => format!("\\u{b:04x}"),
        })
        .collect();
    let cases = [
        format!(r#"{{"c":"{controls}"}}"#),
        r#"{"q":"\"quoted\" \\ back\\slash","\"k\\\n":1}"#.to_owned(),
        "{\"ls\":\"\u{2028}\u{2029}\",\"del\":\"\u{7f}\",\"rtl\":\"\u{5e9}\u{5dc}\u{5d5}\u{5dd}\",\"comb\":\"e\u{301}\"}".to_owned(),
        r#"{"hi":"\ud800","lo":"\udc00","rev":"\udc00\ud800","mid":"a\ud83dx","\udbff":"\ud800A"}"#.to_owned(),
        r#"{"pair":"😀","":"","__proto__":{},"$serde_json::private::Number":"1","$serde_json::private::RawValue":2}"#.to_owned(),
        r#"[-0,0,1e+21,5e-324,9007199254740994,0.1,1e-7,null,true,false]"#.to_owned(),
        "\"\\ud800\"".to_owned(),
    ];
    for case in &cases {
        assert_eq!(&ours(case), case);
    }
}

#[test]
fn lone_surrogates_read_as_replacement_characters_and_write_back_as_json_stringify_writes_them() {
    let body = r#"{"k\ud800ey":"a\udc00b","x":"😀","y":"\uD800\u0041","z":"\ud800\ud800\udc00"}"#
        .as_bytes();
    // Every escape but the lone surrogate's written as JSON.stringify
    // writes it: `\uD800\u0041` is `\ud800A`, the pair is the character.
    let written = r#"{"k\ud800ey":"a\udc00b","x":"😀","y":"\ud800A","z":"\ud800𐀀"}"#.as_bytes();
    let tree = Json::parse(body).unwrap();
    let Json::Object(entries) = &tree else {
        panic!("not an object")
    };
    assert_eq!(entries[0].0, "k\u{FFFD}ey");
    assert_eq!(entries[0].0.raw(), Some(r"k\ud800ey"));
    assert_eq!(tree.get("k\u{FFFD}ey"), Some(&entries[0].1));
    let Json::String(value) = &entries[0].1 else {
        panic!("not a string")
    };
    assert_eq!(value, "a\u{FFFD}b");
    // A whole pair is one character, not a lone surrogate (written
    // back as the character, as JSON.stringify writes it).
    assert_eq!(ours(r#""\ud83d\ude00""#), "\"😀\"");
    assert_eq!(
        tree.get("x")
            .map(|v| matches!(v, Json::String(s) if s.raw().is_none() && s == "😀")),
        Some(true)
    );
    let Some(Json::String(y)) = tree.get("y") else {
        panic!("no y")
    };
    assert_eq!((y.as_str(), y.raw()), ("\u{FFFD}A", Some(r"\uD800\u0041")));
    let Some(Json::String(z)) = tree.get("z") else {
        panic!("no z")
    };
    assert_eq!(z.as_str(), "\u{FFFD}\u{10000}");
    assert_eq!(tree.to_vec(), written);
    // The owned copy keeps the source text too.
    assert_eq!(tree.clone().into_owned().to_vec(), written);
}

/// A stored text shows the digits a JSON reader sees: an escaped digit
/// beside a lone surrogate is written as the digit, so a card-shaped run in
/// the text is never part of a longer number in the decoded value.
#[test]
fn escaped_digits_beside_a_lone_surrogate_are_written_as_digits() {
    assert_eq!(
        ours(r#"{"n":"4111111111111111\u0034\ud800","\u0031\uDC00\n\/":1}"#),
        r#"{"n":"41111111111111114\ud800","1\udc00\n/":1}"#
    );
}

#[test]
fn keys_are_the_same_when_their_utf16_is() {
    // Different lone surrogates decode alike but are different keys.
    assert_eq!(
        ours(r#"{"\ud800":1,"\udc00":2}"#),
        r#"{"\ud800":1,"\udc00":2}"#
    );
    // The same one spelled twice is one key (first place, last value).
    assert_eq!(
        ours(r#"{"\ud800":1,"x":0,"\uD800":2}"#),
        r#"{"\ud800":2,"x":0}"#
    );
    // A key with a lone surrogate is not the key with U+FFFD itself.
    assert_eq!(
        ours("{\"\\ud800\":1,\"\u{FFFD}\":2}"),
        "{\"\\ud800\":1,\"\u{FFFD}\":2}"
    );
    // Same over the map path for large objects.
    let many: String = (0..20).map(|i| format!(r#""k{i}":{i},"#)).collect();
    let text = format!(r#"{{{many}"\udc00":1,"\ud800":2,"\udc00":3}}"#);
    let expected = format!(r#"{{{many}"\udc00":3,"\ud800":2}}"#);
    assert_eq!(ours(&text), expected);
}

#[test]
fn magic_keys_are_plain_keys() {
    for case in [
        r#"{"$serde_json::private::Number":"12 OR 1=1"}"#,
        r#"{"$serde_json::private::Number":7}"#,
        r#"{"$serde_json::private::Number":"1.5"}"#,
        r#"{"$serde_json::private::RawValue":"{\"a\":1}"}"#,
    ] {
        let tree = Json::parse(case.as_bytes()).unwrap();
        assert!(
            matches!(tree, Json::Object(ref e) if e.len() == 1),
            "{case}"
        );
        assert_eq!(ours(case), case);
    }
}

#[test]
fn nesting_stops_at_128_levels() {
    assert_eq!(ours(&nested(MAX_DEPTH)), nested(MAX_DEPTH));
    assert_eq!(Json::parse(nested(129).as_bytes()), Err(JsonError::TooDeep));
    let objects = |n: usize| r#"{"a":"#.repeat(n - 1) + "{}" + &"}".repeat(n - 1);
    assert!(Json::parse(objects(128).as_bytes()).is_ok());
    assert_eq!(
        Json::parse(objects(129).as_bytes()),
        Err(JsonError::TooDeep)
    );
    // Unclosed and huge: refused at level 129 without reading on.
    let opened = "[".repeat(1_000_000);
    assert_eq!(Json::parse(opened.as_bytes()), Err(JsonError::TooDeep));
    let opened = "{\"a\":".repeat(1_000_000);
    assert_eq!(Json::parse(opened.as_bytes()), Err(JsonError::TooDeep));
    // Broken before the limit is a syntax error.
    assert!(matches!(
        Json::parse(b"[[[}"),
        Err(JsonError::Syntax { at: 3 })
    ));
}

#[test]
fn rejects_what_rfc_8259_rejects() {
    for bad in [
        &b""[..],
        b" ",
        b"{",
        b"[",
        b"\"",
        br#"{"a":}"#,
        br#"{"a":1,}"#,
        br#"{"a" 1}"#,
        br#"{"a":1 "b":2}"#,
        br#"{1:2}"#,
        b"[1,]",
        b"[,1]",
        b"[1 2]",
        b"01",
        b"-01",
        b"1.",
        b"1.e5",
        b".5",
        b"+1",
        b"-",
        b"1e",
        b"1e+",
        b"0x10",
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"nul",
        b"True",
        b"\"tab\there\"",
        b"\"nul\x00\"",
        b"\"\x1f\"",
        b"{} {}",
        b"[1] x",
        br#"{'a':1}"#,
        b"'a'",
        br#""\x41""#,
        br#""\u""#,
        br#""\u12""#,
        br#""\u12G4""#,
        br#""\ud800\u""#,
        br#""\ud800\u12""#,
        b"\"\\",
        b"\"\\u",
        b"\"\\ud800",
        br#""\a""#,
        br#""\U0041""#,
        b"\"\xff\"",
        b"\"\xed\xa0\x80\"",
        b"\xef\xbb\xbf{}",
        b"\"abc",
        b"[\"a\"",
    ] {
        let shown = String::from_utf8_lossy(bad);
        assert!(
            matches!(Json::parse(bad), Err(JsonError::Syntax { .. })),
            "{shown:?} accepted"
        );
        assert!(
            serde_json::from_slice::<serde_json::Value>(bad).is_err(),
            "{shown:?}: the oracle disagrees"
        );
    }
}

#[test]
fn huge_numbers_and_long_strings_are_fine() {
    let digits = "9".repeat(100_000);
    assert_eq!(ours(&digits), digits);
    let long = format!("\"{}\"", "\\u00e9".repeat(50_000));
    assert_eq!(ours(&long), long.replace("\\u00e9", "é"));
}

#[test]
fn debug_shows_shape_never_content() {
    let body = br#"{"ssn":"123-45-6789","card":4111111111111111,"ok":true,
        "items":[{"email":"alice@example.com"}],"nested":{"pin":"0000"},"lone":"\ud800secret"}"#;
    let tree = Json::parse(body).unwrap();
    let shown = format!("{tree:?}");
    for secret in [
        "123-45-6789",
        "4111111111111111",
        "alice@example.com",
        "0000",
        "true",
        "secret",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    for shape in [
        "\"ssn\": string(11 bytes)",
        "number(16 chars)",
        "[1 items]",
        "\"pin\"",
    ] {
        assert!(shown.contains(shape), "{shape} not in {shown}");
    }
    let Some(Json::String(lone)) = tree.get("lone") else {
        panic!("no lone")
    };
    assert_eq!(format!("{lone:?}"), "string(9 bytes)");
}

#[test]
fn strings_without_escapes_borrow_from_the_body() {
    let body = br#"{"plain":"text","escaped":"a\nb"}"#;
    let Json::Object(entries) = Json::parse(body).unwrap() else {
        panic!("not an object")
    };
    assert!(entries[0].0.is_borrowed());
    assert!(matches!(&entries[0].1, Json::String(s) if s.is_borrowed() && s == "text"));
    assert!(matches!(&entries[1].1, Json::String(s) if !s.is_borrowed() && s == "a\nb"));
}

#[test]
fn repeated_keys_keep_the_first_place_and_the_last_value() {
    let many: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
    let text = format!(r#"{{{many}"k3":"last","k39":"end"}}"#);
    let parsed = Json::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.get("k3"), Some(&Json::String(JsonStr::from("last"))));
    assert_eq!(ours(&text), reference(&text));
    let Json::Object(entries) = parsed else {
        panic!("not an object")
    };
    assert_eq!(entries.len(), 40);
    assert_eq!(entries[3].0, "k3");
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\\x00-\\x1f\"\\\\a-c\u{2028}\u{7f}é😀]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-c\"\\\\\\x01]{0,3}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A string's JSON text with `JSON.stringify`'s escapes, lone
/// surrogates as lowercase `\udXXX`: a model written independently of
/// [`escape_str`].
fn stringify(units: &[u16]) -> String {
    let mut out = String::from("\"");
    for c in char::decode_utf16(units.iter().copied()) {
        match c {
            Ok('"') => out.push_str("\\\""),
            Ok('\\') => out.push_str("\\\\"),
            Ok('\u{8}') => out.push_str("\\b"),
            Ok('\u{c}') => out.push_str("\\f"),
            Ok('\n') => out.push_str("\\n"),
            Ok('\r') => out.push_str("\\r"),
            Ok('\t') => out.push_str("\\t"),
            Ok(c) if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            Ok(c) => out.push(c),
            Err(e) => out.push_str(&format!("\\u{:04x}", e.unpaired_surrogate())),
        }
    }
    out.push('"');
    out
}

proptest! {
    #[test]
    fn writes_what_serde_json_writes(value in arb_json()) {
        let text = value.to_string();
        prop_assert_eq!(ours(&text), text.clone());
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        prop_assert_eq!(ours(&pretty), text);
    }

    #[test]
    fn any_utf16_string_round_trips_as_json_stringify_writes_it(
        units in prop::collection::vec(
            prop_oneof![any::<u16>(), 0xD800u16..0xE000, 0u16..0x80],
            0..24,
        ),
    ) {
        let text = stringify(&units);
        let body = format!("{{{text}:[{text}]}}");
        let tree = Json::parse(body.as_bytes()).unwrap();
        prop_assert_eq!(&String::from_utf8(tree.to_vec()).unwrap(), &body);
        let Json::Object(entries) = &tree else { panic!("not an object") };
        let lossy = String::from_utf16_lossy(&units);
        prop_assert_eq!(entries[0].0.as_str(), lossy.as_str());
        let has_lone = char::decode_utf16(units.iter().copied()).any(|c| c.is_err());
        prop_assert_eq!(entries[0].0.raw().is_some(), has_lone);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(
        prop_oneof![any::<u8>(), prop::sample::select(b"[]{}\":,\\u0123456789dD8eE+-.ntf ".to_vec())],
        0..64,
    )) {
        if let Ok(tree) = Json::parse(&bytes) {
            // Whatever is accepted writes out as something accepted again, unchanged.
            let written = tree.to_vec();
            prop_assert_eq!(Json::parse(&written).unwrap().to_vec(), written);
        }
    }
}

/// The text may stand for the value only when no escape spells a letter or
/// digit: `\u0034` would show a reader of the text other digits than the
/// value holds. Escapes `JSON.stringify` writes keep it whole.
#[test]
fn an_escape_that_spells_a_letter_or_digit_makes_the_text_not_whole() {
    for spelled in [
        r#"{"n":"4111111111111111\u0034"}"#,
        r#"{"n":"4111111111111111\u0041"}"#,
        r#"{"\u00e9":1}"#,
        r#"["\ud835\udfd2"]"#,
    ] {
        let (_, whole) = Json::parse_whole(spelled.as_bytes()).unwrap();
        assert!(!whole, "{spelled}");
    }
    for kept in [
        r#"{"n":"4111111111111111\n\u0001\ud800\"\\\t"}"#,
        r#"{"n":"\u0020\u002d"}"#,
        "{\"n\":\"é 4111\"}",
    ] {
        let (_, whole) = Json::parse_whole(kept.as_bytes()).unwrap();
        assert!(whole, "{kept}");
    }
}
