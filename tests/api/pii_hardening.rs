//! Issue 21, through the real server: personal data in signed bodies that do
//! not parse (quarantine, erasure), in envelope columns, and in numbers not
//! written as integers; erasure that never merges two people.

use serde_json::{json, Value};

use crate::api_support::*;
use crate::helpers::*;

/// A CLI command's standard output, run against the app's database.
fn cli(app: &TestApp, args: &[&str]) -> String {
    let mut env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
    env.push(("IMGGO__API__BIND".into(), String::new()));
    let dir = tempfile::tempdir().unwrap();
    String::from_utf8(run_ok(command(dir.path(), &env), args).stdout).unwrap()
}

/// The quarantined rows' ids, oldest first.
fn quarantined_ids(app: &TestApp) -> Vec<String> {
    cli(app, &["rejected", "list"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].to_string())
        .collect()
}

/// Every plaintext column of `table`, and its ciphertext, as text.
async fn dump(app: &TestApp, table: &str) -> String {
    let rows: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT row_to_json(t)::text FROM {table} t \
         UNION ALL SELECT encode(ciphertext, 'escape') FROM {table}"
    ))
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    rows.join("\n")
}

/// `\u00XX` for each character: what `JSON.stringify` may be given.
fn escaped(text: &str) -> String {
    text.chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect()
}

#[tokio::test]
async fn an_unparsable_signed_body_is_quarantined_without_its_personal_data() {
    let app = spawn_app().await;
    let deep = "[".repeat(129) + &"]".repeat(129);
    let body = format!(
        r#"{{"event":"job.succeeded","job_id":"{}","deep":{deep},"manifest":{{"ssn":"123456789","cvv":"987","passport":"X12345678","pin":"4321","iban":"DE89370400440532013000","n2":"{}"}}}}"#,
        new_job_id(),
        escaped("4111111111111111"),
    );
    let res = app.post_signed(body.into_bytes()).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );

    let ids = quarantined_ids(&app);
    assert_eq!(ids.len(), 1);
    let shown = cli(&app, &["rejected", "show", &ids[0]]);
    for secret in [
        "123456789",
        "\"cvv\"",
        "\"987\"",
        "X12345678",
        "\"pin\"",
        "4321",
        "DE89370400440532013000",
        "\\u0034\\u0031",
        "4111111111111111",
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    for kept in [
        "\"ssn_hash\":\"",
        "\"passport_hash\":\"",
        "\"iban\":\"****************3000\"",
        "\"n2\":\"************1111\"",
    ] {
        assert!(shown.contains(kept), "{kept} not in {shown}");
    }
    let stored = dump(&app, "quarantined_deliveries").await;
    for secret in [
        "123456789",
        "X12345678",
        "DE89370400440532013000",
        "\\u0034",
    ] {
        assert!(!stored.contains(secret), "{secret} stored");
    }
}

#[tokio::test]
async fn erasure_reaches_a_quarantined_body_that_does_not_parse() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "dpo", "events:delete").await;
    let bob = br#"{"event":"job.succeeded","job_id":"j-bob","manifest":{"customer_email":"bob@example.com","lines":[{"sku":"A1","qty":"#;
    let alice = br#"{"event":"job.succeeded","job_id":"j-alice","manifest":{"customer_email":"alice@example.com","lines":[{"#;
    for body in [&bob[..], &alice[..]] {
        assert_eq!(app.post_signed(body.to_vec()).await.status(), 400);
    }
    assert_eq!(quarantined_ids(&app).len(), 2);

    let res = app
        .client
        .post(app.api("/v1/erasure"))
        .bearer_auth(&token)
        .json(&json!({"value": "Bob@Example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"deleted": 1}));
    let left = quarantined_ids(&app);
    assert_eq!(left.len(), 1);
    let shown = cli(&app, &["rejected", "show", &left[0]]);
    assert!(shown.contains("alice@example.com"), "{shown}");
    // The CLI reaches it the same way.
    assert_eq!(
        cli(&app, &["forget", "alice@example.com"]).trim(),
        "deleted 1 event(s)"
    );
    assert!(quarantined_ids(&app).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_one_person_never_erases_another_whose_value_looks_alike() {
    let app = spawn_app_with(|o| {
        o.settings.subjects.fields = ["email", "customer_email", "customer_id", "phone"]
            .map(String::from)
            .to_vec();
    })
    .await;
    let token = make_token(&app.store, "dpo", "events:delete").await;
    let people: Vec<(String, Value)> = [
        json!({"email": "john@example.com"}),
        json!({"email": "jo.hn@ex-ample.com"}),
        json!({"email": "JOHNEXAMPLE.COM"}),
        json!({"customer_id": "C-42"}),
        json!({"customer_id": "c42"}),
        json!({"phone": "+1 555 0100"}),
        json!({"phone": "+1 555 0101"}),
        json!({"customer": {"phone": "1-555-0100"}}),
        json!({"ssn": "123-45-6789"}),
        json!({"ssn": "123456780"}),
    ]
    .into_iter()
    .map(|manifest| (new_job_id(), manifest))
    .collect();
    for (job, manifest) in &people {
        app.deliver(body_with(job, "job.succeeded", manifest.clone()))
            .await;
    }
    let erase = |value: &'static str| {
        let req = app
            .client
            .post(app.api("/v1/erasure"))
            .bearer_auth(&token)
            .json(&json!({ "value": value }));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // Each erasure takes exactly its own person's events.
    assert_eq!(erase(" John@Example.com ").await, json!({"deleted": 1}));
    assert_eq!(erase("C-42").await, json!({"deleted": 1}));
    assert_eq!(erase("+15550100").await, json!({"deleted": 2}));
    assert_eq!(erase("123456789").await, json!({"deleted": 1}));
    let survivors: Vec<usize> = {
        let mut left = Vec::new();
        for (i, (job, _)) in people.iter().enumerate() {
            if !app.events(job).await.is_empty() {
                left.push(i);
            }
        }
        left
    };
    assert_eq!(survivors, [1, 2, 4, 6, 9], "{people:?}");
}

#[tokio::test]
async fn a_card_or_ssn_in_an_envelope_field_never_reaches_a_plaintext_column() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "reader", "events:read").await;
    let job = new_job_id();
    let bodies = [
        json!({"event": "job.completed", "job_id": job, "status": "4111 1111 1111 1111",
               "pattern_id": "123-45-6789", "result": {"a": 1}}),
        json!({"event": "job.failed", "job_id": job, "status": "held 219-09-9999",
               "pattern_id": "4012-8888-8888-1881", "result": {"a": 2}}),
        json!({"event": "job.succeeded", "job_id": job, "status": "completed",
               "pattern_id": "pat_x", "result": {"a": 3}}),
    ];
    for body in &bodies {
        app.deliver(serde_json::to_vec(body).unwrap()).await;
    }
    let secrets = [
        "4111 1111 1111 1111",
        "4111111111111111",
        "123-45-6789",
        "219-09-9999",
        "4012-8888-8888-1881",
    ];
    assert_eq!(
        app.db.envelopes_of(&job).await,
        [
            ("job.completed".to_owned(), None, None),
            ("job.failed".to_owned(), None, None),
            (
                "job.succeeded".to_owned(),
                Some("pat_x".to_owned()),
                Some("completed".to_owned())
            ),
        ]
    );
    let stored = dump(&app, "webhook_events").await;
    let api = app
        .api_get(&format!("/v1/jobs/{job}"), &token)
        .await
        .text()
        .await
        .unwrap();
    let shown = cli(&app, &["show", &job]);
    for text in [&stored, &api, &shown] {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    // The payload holds them masked.
    let payload = app.stored_payload(&job, "job.completed").await;
    assert_eq!(payload["status"], "************1111");
    assert_eq!(payload["pattern_id"], "***-**-6789");
    let payload = app.stored_payload(&job, "job.failed").await;
    assert_eq!(payload["status"], "held ***-**-9999");
    assert_eq!(payload["pattern_id"], "************1881");
}

/// Luhn-valid card numbers of 13 to 19 digits, from a fixed seed.
fn cards(n: usize) -> Vec<String> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    (0..n)
        .map(|_| {
            let len = 13 + next(7) as usize;
            let mut digits: Vec<u64> = (0..len - 1).map(|_| next(10)).collect();
            digits[0] = 1 + next(9);
            let sum: u64 = digits
                .iter()
                .rev()
                .enumerate()
                .map(|(i, &d)| {
                    if i % 2 == 0 {
                        [0, 2, 4, 6, 8, 1, 3, 5, 7, 9][d as usize]
                    } else {
                        d
                    }
                })
                .sum();
            digits.push((10 - sum % 10) % 10);
            digits.iter().map(|d| d.to_string()).collect()
        })
        .collect()
}

#[tokio::test]
async fn a_card_written_as_a_non_integer_number_is_masked() {
    let app = spawn_app().await;
    let mut fields = vec![
        (
            "a".to_owned(),
            "4111111111111111.0".to_owned(),
            Some("1111"),
        ),
        ("b".into(), "4111111111111111e0".into(), Some("1111")),
        ("c".into(), "4.111111111111111E15".into(), Some("1111")),
        ("d".into(), "-4.111111111111111E+15".into(), Some("1111")),
        ("e".into(), "41111111111111110E-1".into(), Some("1111")),
        ("f".into(), "-4111111111111111.000".into(), Some("1111")),
        // Not an integer, or not a card: stored as sent.
        ("g".into(), "4111111111111111.5".into(), None),
        ("h".into(), "4.111111111111112E15".into(), None),
    ];
    for (i, card) in cards(40).into_iter().enumerate() {
        let last4 = &card[card.len() - 4..];
        let spelled = match i % 4 {
            0 => format!("{card}.0"),
            1 => format!("{card}E+0"),
            2 => format!("-{}.{}e{}", &card[..1], &card[1..], card.len() - 1),
            _ => format!("{card}000e-3"),
        };
        let last4: &'static str = Box::leak(last4.to_owned().into_boxed_str());
        fields.push((format!("p{i}"), spelled, Some(last4)));
    }
    let manifest: Vec<String> = fields
        .iter()
        .map(|(k, v, _)| format!(r#""{k}":{v}"#))
        .collect();
    let job = new_job_id();
    let body = format!(
        r#"{{"event":"job.succeeded","job_id":"{job}","manifest":{{{}}}}}"#,
        manifest.join(",")
    );
    app.deliver(body.into_bytes()).await;
    let stored = app.stored_payload(&job, "job.succeeded").await;
    for (key, sent, masked) in &fields {
        let value = &stored["manifest"][key];
        match masked {
            Some(last4) => {
                let text = value.as_str().unwrap_or_else(|| panic!("{key}: {value}"));
                assert!(
                    text.ends_with(last4) && text.trim_end_matches(last4).chars().all(|c| c == '*'),
                    "{key}: {sent} stored as {value}"
                );
            }
            None => assert_eq!(value.as_f64(), sent.parse::<f64>().ok(), "{key}"),
        }
    }
}
