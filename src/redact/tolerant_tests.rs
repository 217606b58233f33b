//! The tolerant redaction of bodies that do not parse: the issue's repro,
//! the rules one by one, and a property: for random JSON with personal data
//! under rule names and in free text, cut at any point or nested deeper
//! than the parser takes, no personal value survives.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::super::{RedactSettings, Redactor};

fn redactor() -> Redactor {
    Redactor::new(&RedactSettings::default(), &[9; 32])
}

fn redact(text: &str) -> String {
    redactor().redact_unparsed(text)
}

/// `\u00XX` for each character.
fn escaped(text: &str) -> String {
    text.chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect()
}

#[test]
fn the_issue_repro_keeps_no_personal_value() {
    let deep = "[".repeat(129) + &"]".repeat(129);
    let body = format!(
        r#"{{"event":"job.succeeded","job_id":"j-1","deep":{deep},"manifest":{{"ssn":"123456789","cvv":"987","passport":"X12345678","pin":"4321","iban":"DE89370400440532013000","n2":"{}"}}}}"#,
        escaped("4111111111111111")
    );
    assert!(crate::json::Json::parse(body.as_bytes()).is_err());
    let out = redact(&body);
    let r = redactor();
    for gone in [
        "123456789",
        "\"cvv\"",
        "987\"",
        "X12345678",
        "\"pin\"",
        "4321",
        "DE89370400440532013000",
        "\\u0034",
        "4111111111111111",
    ] {
        assert!(!out.contains(gone), "{gone} in {out}");
    }
    for kept in [
        format!(r#""ssn_hash":"{}""#, r.hash_value("123456789")),
        format!(r#""passport_hash":"{}""#, r.hash_value("X12345678")),
        r#""iban":"****************3000""#.to_owned(),
        r#""n2":"************1111""#.to_owned(),
        format!(r#""deep":{deep}"#),
        r#"{"event":"job.succeeded","job_id":"j-1","#.to_owned(),
    ] {
        assert!(out.contains(&kept), "{kept} not in {out}");
    }
}

#[test]
fn text_with_nothing_to_redact_is_kept_byte_for_byte() {
    for text in [
        r#"{"event":"job.succeeded","#,
        r#"{"a":"\ud800 é","b":[1,2.5e3,true,null],"c":"#,
        "not json at all, order 12345678",
        "{\"x\":\"é ß 完了\"}}}",
        "",
    ] {
        assert_eq!(redact(text), text);
    }
}

#[test]
fn drop_removes_the_key_and_its_whole_value() {
    let out = redact(r#"{"a":1,"Track-Data":{"x":[1,{"y":"77"}],"z":"}"},"b":2,"cvv":"#);
    assert_eq!(out, r#"{"a":1, "b":2, "#);
    // A dropped container cut short: everything after it goes too.
    assert_eq!(redact(r#"{"a":1,"pin":[1,[2,"3"#), r#"{"a":1, "#);
    assert_eq!(redact(r#"{"keep":"x", "cvv" : 123 }"#), r#"{"keep":"x"  }"#);
    assert_eq!(redact(r#"[{"cvv":1, "n":7}]"#), r#"[{  "n":7}]"#);
    assert_eq!(redact(r#"[{"n":7, "cvv":[1] }, "#), r#"[{"n":7  }, "#);
}

#[test]
fn hash_and_mask_apply_to_scalars_and_to_every_leaf_of_a_container() {
    let r = redactor();
    let out = redact(
        r#"{"ssn":["123-45-6789",{"cvv":1,"n":7}],"pan":{"a":"4111 1111 1111 1111","b":5},"passport":"X1"#,
    );
    let want = format!(
        r#"{{"ssn":["{}",{{ "n":"{}"}}],"pan":{{"a":"************1111","b":"*"}},"passport_hash":"{}""#,
        r.hash_value("123-45-6789"),
        r.hash_value("7"),
        r.hash_value("X1"),
    );
    assert_eq!(out, want);
    // `null` and booleans carry nothing to hash; `keep` cancels a rule.
    let settings = RedactSettings {
        rules: vec![super::super::Rule {
            names: vec!["pan".into()],
            action: super::super::Action::Keep,
        }],
        ..RedactSettings::default()
    };
    let keeps = Redactor::new(&settings, &[9; 32]);
    assert_eq!(
        keeps.redact_unparsed(r#"{"ssn":null,"pan":"1234 5678","#),
        r#"{"ssn":null,"pan":"1234 5678","#
    );
}

#[test]
fn values_are_scanned_after_their_escapes_and_numbers_by_their_value() {
    let out = redact(&format!(
        r#"[{{"note":"card {} ok","ssn2":"\u0031\u0032\u0033-45-6789","n":4.111111111111111E15,"m":-4111111111111111.0 ,"k":12"#,
        escaped("4111 1111 1111 1111")
    ));
    assert_eq!(
        out,
        r#"[{"note":"card ************1111 ok","ssn2":"***-**-6789","n":"************1111","m":"************1111" ,"k":12"#
    );
}

#[test]
fn what_cannot_be_read_is_masked_conservatively() {
    for (text, want) in [
        // Cut inside a free-text card: nine digits or more are masked.
        (
            r#"{"note":"card 4111 1111 1111 11"#,
            r#"{"note":"card **********1111"#,
        ),
        (r#"{"note":"ref 4111 1111"#, r#"{"note":"ref 4111 1111"#),
        // Bare words, glued to letters, not Luhn-valid: masked all the same.
        (
            "{note: card4111111111111112x, id x123456789}",
            "{note: card************1112x, id x*****6789}",
        ),
        // A number cut by the end of the text may be longer than it looks.
        (r#"{"n":411111111111"#, r#"{"n":********1111"#),
        // Groups outside strings that no JSON value is written as.
        ("[4111 1111 1111 1111 12/26]", "[************1111 12/26]"),
        ("[1, 1732449600000, 2]", "[1, 1732449600000, 2]"),
    ] {
        assert_eq!(redact(text), want, "{text}");
    }
}

// ---------------------------------------------------------------- property

/// A JSON value written by the test itself, so that digits in strings can
/// be written as `\u` escapes.
#[derive(Clone, Debug)]
enum Node {
    Obj(Vec<(String, Node)>),
    Arr(Vec<Node>),
    Str(String),
    Num(String),
}

fn write(node: &Node, escape_digits: bool, out: &mut String) {
    let string = |s: &str, out: &mut String| {
        out.push('"');
        for c in s.chars() {
            match c {
                '0'..='9' if escape_digits => out.push_str(&escaped(&c.to_string())),
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    };
    match node {
        Node::Obj(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, out);
                out.push(':');
                write(v, escape_digits, out);
            }
            out.push('}');
        }
        Node::Arr(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, escape_digits, out);
            }
            out.push(']');
        }
        Node::Str(s) => string(s, out),
        Node::Num(n) => out.push_str(n),
    }
}

fn card() -> impl Strategy<Value = String> {
    (1u8..10, proptest::collection::vec(0u8..10, 14)).prop_map(|(first, rest)| {
        let mut digits: Vec<u8> = std::iter::once(first).chain(rest).collect();
        let check = (0..10u8)
            .find(|&c| {
                let mut all = digits.clone();
                all.push(c);
                let text: Vec<u8> = all.iter().map(|d| b'0' + d).collect();
                super::super::luhn::luhn_valid(&text)
            })
            .unwrap();
        digits.push(check);
        digits.iter().map(|d| char::from(b'0' + d)).collect()
    })
}

/// A personal value, where it goes, and the text that must not survive.
fn secret() -> impl Strategy<Value = (String, Node, String)> {
    let digits = |n: usize| {
        proptest::collection::vec(0u8..10, n)
            .prop_map(|d| d.iter().map(|d| char::from(b'0' + d)).collect::<String>())
    };
    prop_oneof![
        (1u32..900, 1u32..100, 1u32..10000)
            .prop_filter("area 666", |(a, _, _)| *a != 666)
            .prop_map(|(a, g, s)| {
                let v = format!("{a:03}-{g:02}-{s:04}");
                ("SSN".to_owned(), Node::Str(v.clone()), v.replace('-', ""))
            }),
        digits(8).prop_map(|d| (
            "passport_no".to_owned(),
            Node::Str(format!("X{d}")),
            format!("X{d}")
        )),
        digits(9).prop_map(|d| (
            "cvv".to_owned(),
            Node::Str(format!("Q{d}")),
            format!("Q{d}")
        )),
        digits(9).prop_map(|d| (
            "pin".to_owned(),
            Node::Num(format!("1{d}")),
            format!("1{d}")
        )),
        digits(20).prop_map(|d| ("IBAN".to_owned(), Node::Str(format!("DE{d}")), d)),
        card().prop_map(|c| (
            "card_number".to_owned(),
            Node::Arr(vec![Node::Str(c.clone())]),
            c
        )),
        card().prop_map(|c| ("note".to_owned(), Node::Str(format!("paid {} ok", c)), c)),
        card().prop_map(|c| (
            "amount".to_owned(),
            Node::Num(format!("{}.{}E15", &c[..1], &c[1..])),
            c
        )),
        card().prop_map(|c| ("total".to_owned(), Node::Num(c.clone()), c)),
    ]
}

fn filler() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        "[a-z ]{0,8}".prop_map(Node::Str),
        (0u32..1000).prop_map(|n| Node::Num(n.to_string())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Node::Arr),
            proptest::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(Node::Obj),
        ]
    })
}

/// A body: filler with secrets placed at random depths, written with or
/// without escaped digits, then cut, wrapped past 128 levels, or both.
fn body() -> impl Strategy<Value = (String, Vec<String>)> {
    (
        filler(),
        proptest::collection::vec((secret(), 0usize..4), 1..6),
        any::<bool>(),
        0usize..3,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(filler, secrets, escape_digits, shape, cut)| {
            let mut entries = vec![("filler".to_owned(), filler)];
            let mut plains = Vec::new();
            for ((key, value, plain), depth) in secrets {
                let mut node = Node::Obj(vec![(key, value)]);
                for _ in 0..depth {
                    node = Node::Arr(vec![Node::Num("1".into()), node]);
                }
                entries.push((format!("f{}", entries.len()), node));
                plains.push(plain);
            }
            let mut text = String::new();
            write(&Node::Obj(entries), escape_digits, &mut text);
            if shape >= 1 {
                text = "[".repeat(130) + &text + &"]".repeat(130);
            }
            if shape != 1 {
                // Every byte is ASCII: any index is a char boundary.
                text.truncate(cut.index(text.len() + 1));
            }
            (text, plains)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_personal_value_survives_in_a_body_that_does_not_parse((text, plains) in body()) {
        let out = redact(&text);
        // Digits as they stand in the output, separators dropped.
        let digits: String = out.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        for plain in &plains {
            prop_assert!(!out.contains(plain.as_str()), "{plain} in {out}");
            // No nine characters in a row of it, even across separators.
            for window in plain.as_bytes().windows(9) {
                let window = std::str::from_utf8(window).unwrap();
                prop_assert!(!digits.contains(window), "{window} of {plain} in {out}");
            }
        }
        prop_assert_eq!(redact(&out), out.clone(), "a second pass changes nothing");
    }
}

/// Text made of the tokens the tokenizer cares about, in any order.
fn json_ish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(
        &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "\\u00",
            "\\u0034",
            "\\ud800",
            " ",
            "-",
            ".",
            "/",
            "e",
            "E+",
            "0",
            "4111",
            "1111",
            "123",
            "45",
            "6789",
            "9",
            "\"ssn\":",
            "\"cvv\":",
            "\"pan\":",
            "\"pin\" : ",
            "\"note\":",
            "\"a\":",
            "true",
            "null",
            "x",
            "é",
            "*",
            "_hash",
        ][..],
    );
    proptest::collection::vec(pieces, 0..48).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any text: no panic, every byte in exactly one token, and no card
    /// number the pieces can spell (`4111` and three `1111`) left whole,
    /// keys included.
    #[test]
    fn any_text_is_tokenized_whole_and_redacted_without_panic(text in json_ish()) {
        let joined: String = crate::json::lex::Lexer::new(&text).map(|t| t.source()).collect();
        prop_assert_eq!(&joined, &text);
        let out = redact(&text);
        for run in card_shaped_runs(&out) {
            prop_assert!(!spells(&run, "4111111111111111"), "{} from {}", out, text);
        }
    }
}

/// One group of digits (or mask `*`s) and whether a letter touches it: §4
/// never matches digits glued to letters (an underscore does not protect a
/// number).
#[derive(Debug, Default)]
struct Group {
    digits: String,
    glued: bool,
}

/// The digit runs of `text` as §4 groups them: each run a list of groups,
/// a group ending at a single space or dash that joins it to the next.
/// Digits apart by anything else (`"41111111\"note\":11111111"`) are two
/// runs: no card.
fn card_shaped_runs(text: &str) -> Vec<Vec<Group>> {
    let chars: Vec<char> = text.chars().collect();
    let digit = |c: char| c.is_ascii_digit() || c == '*';
    let glue = |c: char| c.is_alphanumeric();
    let mut runs: Vec<Vec<Group>> = vec![vec![Group::default()]];
    for (i, &c) in chars.iter().enumerate() {
        let run = runs.last_mut().unwrap();
        let group = run.last_mut().unwrap();
        if digit(c) {
            if group.digits.is_empty() && i > 0 && glue(chars[i - 1]) {
                group.glued = true;
            }
            group.digits.push(c);
            continue;
        }
        if glue(c) && !group.digits.is_empty() {
            group.glued = true;
        }
        let joins = (c == ' ' || c == '-')
            && i > 0
            && digit(chars[i - 1])
            && chars.get(i + 1).copied().is_some_and(digit);
        if joins {
            run.push(Group::default());
        } else {
            runs.push(vec![Group::default()]);
        }
    }
    runs.retain(|r| r.iter().any(|g| !g.digits.is_empty()));
    runs
}

/// Whether consecutive whole groups of `run`, none glued to a letter,
/// spell `card`: §4 never cuts a group, so `41111111111111114` does not
/// hold `4111111111111111`, nor does `4111111111111111x`.
fn spells(run: &[Group], card: &str) -> bool {
    (0..run.len()).any(|from| {
        (from + 1..=run.len()).any(|to| {
            let window = &run[from..to];
            !window.iter().any(|g| g.glued)
                && window.iter().map(|g| g.digits.as_str()).collect::<String>() == card
        })
    })
}

#[test]
fn the_oracle_groups_digits_as_section_4_does() {
    let runs = |text| {
        card_shaped_runs(text)
            .into_iter()
            .map(|r| r.into_iter().map(|g| g.digits).collect::<String>())
            .collect::<Vec<_>>()
    };
    assert_eq!(runs("41111111\"note\":11111111"), ["41111111", "11111111"]);
    assert_eq!(runs("4111{111111111111{"), ["4111", "111111111111"]);
    assert_eq!(runs("4111 1111-1111 1111"), ["4111111111111111"]);
    assert_eq!(runs("4111  1111"), ["4111", "1111"]);
    let card = "4111111111111111";
    let holds = |text| card_shaped_runs(text).iter().any(|r| spells(r, card));
    assert!(holds("12 4111 1111-1111 1111 26"));
    assert!(holds("\"4111111111111111\\n\""));
    assert!(holds("4111111111111111\\u0034"));
    assert!(holds("x 4111111111111111 y"));
    assert!(!holds("41111111111111114"));
    assert!(!holds("4111111111111111x"));
    assert!(!holds("é4111111111111111"));
    assert!(holds("_4111 1111 1111 1111"));
    // A glued group is left out, the rest of the run still counts.
    assert!(holds("x12 4111 1111 1111 1111"));
}

/// A key is a string too: a card spelled as a key, with or without a
/// value, escaped or grouped, is masked in a body that does not parse; a
/// key with escapes is written from its decoded text.
#[test]
fn a_card_spelled_as_a_key_is_masked() {
    let cases = [
        (r#"{"4111111111111111":"x","#, r#"{"************1111":"x","#),
        (r#"{"4111111111111111":}"#, r#"{"************1111":}"#),
        (
            r#"{"a":1,"4111 1111 1111 1111" :"#,
            r#"{"a":1,"************1111" :"#,
        ),
        (
            r#"{"\u0034111111111111111":[1,"#,
            r#"{"************1111":[1,"#,
        ),
        (
            r#"["x",{"4111111111111111":,"#,
            r#"["x",{"************1111":,"#,
        ),
        // Seventeen digits are no card: written as a reader sees them.
        (
            r#"{"4111111111111111\u0034":1,"#,
            r#"{"41111111111111114":1,"#,
        ),
        (
            r#"{"n":"4111111111111111\u0034","#,
            r#"{"n":"41111111111111114","#,
        ),
        // Digits glued to a letter are no card, but not left looking like
        // one: every escape but a lone surrogate's is written out.
        (
            r#"{"n":"4111111111111111\u0041","\ud800\u00e9\/\n\u12":"#,
            r#"{"n":"4111111111111111A","\ud800é/\n\\u12":"#,
        ),
    ];
    for (body, want) in cases {
        assert!(crate::json::Json::parse(body.as_bytes()).is_err(), "{body}");
        assert_eq!(redact(body), want, "{body}");
    }
}
