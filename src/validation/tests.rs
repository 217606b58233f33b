use super::*;

fn schemas(pattern: &str, schema: serde_json::Value) -> Schemas {
    let compiled = load::compile(&schema).unwrap();
    Schemas {
        by_pattern: HashMap::from([(pattern.to_owned(), compiled)]),
    }
}

fn body(text: &str) -> Json<'_> {
    Json::parse(text.as_bytes()).unwrap()
}

fn invoice() -> serde_json::Value {
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["total_amount", "email"],
        "properties": {
            "total_amount": {"type": "number"},
            "email": {"type": "string", "format": "email"},
            "card": {"type": "string", "pattern": "^[0-9]{16}$"},
            "lines": {"type": "array", "items": {"type": "object",
                "properties": {"qty": {"type": "integer"}}}},
            "contacts": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    })
}

#[test]
fn errors_name_the_path_and_keyword_never_the_value() {
    let s = schemas("p1", invoice());
    let text = r#"{"pattern_id":"p1","manifest":{"total_amount":"12,40","email":"bob at example","card":"4111-1111-1111-1111","lines":[{"qty":1},{"qty":"two"}],"contacts":{"bob@example.com":7,"4111111":8}}}"#;
    let verdict = s.check(Some("p1"), &body(text));
    assert_eq!(verdict.valid, Some(false));
    let pairs: Vec<(&str, &str)> = verdict
        .errors
        .iter()
        .map(|i| (i.path.as_str(), i.keyword.as_str()))
        .collect();
    for expected in [
        ("/total_amount", "type"),
        ("/email", "format"),
        ("/card", "pattern"),
        ("/lines/1/qty", "type"),
        // A key the data chose is not shown: it may be personal data.
        ("/contacts/*", "type"),
    ] {
        assert!(pairs.contains(&expected), "{expected:?} in {pairs:?}");
    }
    // A key made of digits is data too, not an array index.
    assert_eq!(
        pairs.iter().filter(|(p, _)| *p == "/contacts/*").count(),
        2,
        "{pairs:?}"
    );
    let stored = verdict.errors_json().unwrap();
    for value in ["12,40", "bob", "4111", "two", "example"] {
        assert!(!stored.contains(value), "{value} in {stored}");
    }
}

#[test]
fn verdicts_valid_unchecked_and_not_an_object() {
    let s = schemas("p1", invoice());
    let ok = r#"{"manifest":{"total_amount":12.4,"email":"a@b.co"}}"#;
    assert_eq!(
        s.check(Some("p1"), &body(ok)),
        Verdict {
            valid: Some(true),
            errors: vec![]
        }
    );
    // The documented dialect's `result` is the extracted data too.
    let docs = r#"{"result":{"total_amount":1,"email":"a@b.co"}}"#;
    assert_eq!(s.check(Some("p1"), &body(docs)).valid, Some(true));
    // No schema for the pattern, or no pattern: null.
    assert_eq!(s.check(Some("other"), &body(ok)).valid, None);
    assert_eq!(s.check(None, &body(ok)).valid, None);
    // A manifest that is not an object is validated as what it is.
    let v = s.check(Some("p1"), &body(r#"{"manifest":"text"}"#));
    assert_eq!(v.valid, Some(false));
    assert_eq!(v.errors[0].path, "");
    assert_eq!(v.errors[0].keyword, "type");
    let v = s.check(Some("p1"), &body(r#"{"manifest":null}"#));
    assert_eq!(v.valid, Some(false));
}

#[test]
fn at_most_twenty_errors() {
    let s = schemas(
        "p",
        serde_json::json!({"type":"array","items":{"type":"string"}}),
    );
    let many = format!(r#"{{"manifest":[{}]}}"#, vec!["1"; 50].join(","));
    let v = s.check(Some("p"), &body(&many));
    assert_eq!(v.errors.len(), MAX_ERRORS);
}

#[test]
fn numbers_keep_their_precision_and_odd_keys_are_plain_keys() {
    let s = schemas(
        "p",
        serde_json::json!({"properties":{"n":{"type":"integer","maximum":9007199254740993_u64}},
            "required":["$serde_json::private::Number"]}),
    );
    let v = s.check(
        Some("p"),
        &body(r#"{"manifest":{"n":9007199254740993,"$serde_json::private::Number":"x"}}"#),
    );
    assert_eq!(v.valid, Some(true), "{v:?}");
    let v = s.check(
        Some("p"),
        &body(r#"{"manifest":{"n":9007199254740994,"$serde_json::private::Number":1}}"#),
    );
    assert_eq!(v.valid, Some(false), "{v:?}");
}

#[test]
fn hostile_schemas_are_refused_at_load_or_bounded() {
    for (schema, why) in [
        (
            serde_json::json!({"$ref": "https://example.com/s.json"}),
            "remote",
        ),
        (serde_json::json!({"$ref": "file:///etc/passwd"}), "file"),
        (serde_json::json!({"$ref": "other.json"}), "another file"),
        (serde_json::json!({"type": "nonsense"}), "not a schema"),
        (serde_json::json!({"pattern": "(a+)+(?=b)"}), "look-around"),
        (serde_json::json!([1, 2]), "not an object"),
    ] {
        assert!(load::compile(&schema).is_err(), "{why}");
    }
    // Recursion through the document terminates; a reference cycle too.
    let s = schemas(
        "p",
        serde_json::json!({"$defs":{"n":{"type":"object","properties":{"c":{"$ref":"#/$defs/n"}}}},
            "$ref":"#/$defs/n"}),
    );
    let deep = format!(
        r#"{{"manifest":{}1{}}}"#,
        r#"{"c":"#.repeat(100),
        "}".repeat(100)
    );
    assert_eq!(s.check(Some("p"), &body(&deep)).valid, Some(false));
    let cycle = schemas(
        "p",
        serde_json::json!({"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}),
    );
    assert_eq!(
        cycle.check(Some("p"), &body(r#"{"manifest":{}}"#)).valid,
        Some(true)
    );
    // A pattern that backtracks exponentially elsewhere is linear here.
    let redos = schemas(
        "p",
        serde_json::json!({"properties":{"s":{"pattern":"^(a+)+$"}}}),
    );
    let evil = format!(r#"{{"manifest":{{"s":"{}!"}}}}"#, "a".repeat(5000));
    assert_eq!(redos.check(Some("p"), &body(&evil)).valid, Some(false));
}
