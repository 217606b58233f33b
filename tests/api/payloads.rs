//! Signed bodies against CONTRACT §2: JSON, envelope fields, timestamps,
//! size limits, and what is stored of a body.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn signed_bodies_that_are_not_json_objects_are_400() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    for body in [
        &b""[..],
        b"   ",
        b"{not json",
        b"[1,2]",
        b"\"job\"",
        b"42",
        b"null",
        b"\xff\xfe",
        deep.as_bytes(),
    ] {
        let res = app.post_signed(body.to_vec()).await;
        assert_eq!(res.status(), 400, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(error_code(res).await, "invalid_json");
    }
    assert_eq!(app.rows().await, 0);
}

#[tokio::test]
async fn bad_envelope_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"job_id": "j1", "manifest": {}}), "event"),
        (json!({"event": "job succeeded", "job_id": "j1"}), "event"),
        (json!({"event": 7, "job_id": "j1"}), "event"),
        (json!({"event": "job.succeeded"}), "job_id"),
        (
            json!({"event": "job.succeeded", "job_id": "../etc/passwd"}),
            "job_id",
        ),
        (
            json!({"event": "job.succeeded", "job_id": "x".repeat(129)}),
            "job_id",
        ),
        (
            json!({"event": "job.succeeded", "job_id": "j1", "pattern_id": "p".repeat(129)}),
            "pattern_id",
        ),
        (
            json!({"event": "job.succeeded", "job_id": "j1", "pattern_id": {"x": 1}}),
            "pattern_id",
        ),
    ];
    for (body, field) in cases {
        let res = app.post_signed(serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(res.status(), 422, "{body}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_payload");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
    assert_eq!(app.rows().await, 0);
}

#[tokio::test]
async fn unknown_events_and_extra_fields_are_kept() {
    let app = spawn_app().await;
    let body = json!({"event": "job.queued", "job_id": "job_q1", "future_field": {"a": [1, 2]}});
    assert_eq!(
        app.post_signed(serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(app.stored_payload("job_q1", "job.queued").await, body);
}

/// Rules the contract does not have refuse nothing: the sender tries once,
/// so a control character in `pattern_id` (a NUL included, which no text
/// column takes) or a timestamp that cannot be read is stored as sent.
#[tokio::test]
async fn odd_pattern_ids_and_unreadable_timestamps_are_stored() {
    let app =
        spawn_app_with(|o| o.settings.webhook.max_timestamp_age = Duration::from_secs(3600)).await;
    let token = crate::api_support::make_token(&app.store, "r", "events:read").await;
    let cases = [
        (
            json!({"event": "job.succeeded", "job_id": "odd-1", "pattern_id": "a\nb\t\u{7f}\u{85}"}),
            json!("a\nb\t\u{7f}\u{85}"),
        ),
        (
            json!({"event": "job.succeeded", "job_id": "odd-2", "pattern_id": "a\u{0}b"}),
            Value::Null,
        ),
        (
            json!({"event": "job.succeeded", "job_id": "odd-3", "timestamp": "last tuesday"}),
            Value::Null,
        ),
        (
            json!({"event": "job.succeeded", "job_id": "odd-4", "timestamp": 1733040000}),
            Value::Null,
        ),
    ];
    for (body, column) in cases {
        let bytes = serde_json::to_vec(&body).unwrap();
        let res = app.post_signed(bytes).await;
        assert_eq!(res.status(), 200, "{body}");
        let job = body["job_id"].as_str().unwrap();
        assert_eq!(app.stored_payload(job, "job.succeeded").await, body);
        let res = app.api_get(&format!("/v1/jobs/{job}"), &token).await;
        let page: Value = res.json().await.unwrap();
        assert_eq!(page["events"][0]["pattern_id"], column, "{body}");
        assert_eq!(page["events"][0]["payload"], body);
    }
}

#[tokio::test]
async fn signed_timestamps_outside_the_window_are_stale() {
    let app =
        spawn_app_with(|o| o.settings.webhook.max_timestamp_age = Duration::from_secs(3600)).await;
    let now = chrono::Utc::now();
    let cases = [
        (now - chrono::Duration::minutes(61), 400),
        (now + chrono::Duration::minutes(6), 400),
        (now - chrono::Duration::minutes(59), 200),
        (now + chrono::Duration::minutes(4), 200),
    ];
    for (i, (ts, status)) in cases.into_iter().enumerate() {
        let body = json!({"event": "job.succeeded", "job_id": format!("ts-{i}"), "timestamp": ts.to_rfc3339()});
        let res = app.post_signed(serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(res.status(), status, "{ts}");
        if status == 400 {
            assert_eq!(error_code(res).await, "stale_timestamp");
        }
    }
    assert_eq!(app.rows().await, 2);

    let off = spawn_app_with(|o| o.settings.webhook.max_timestamp_age = Duration::ZERO).await;
    let body =
        json!({"event": "job.succeeded", "job_id": "old", "timestamp": "2001-01-01T00:00:00Z"});
    assert_eq!(
        off.post_signed(serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_content_length() {
    let app = spawn_app_with(|o| o.settings.server.max_body_bytes = 4096).await;
    let big = vec![b'x'; 4097];
    let res = app.post_raw(big.clone(), Some(&prod_signature(&big))).await;
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "payload_too_large");

    // Chunked: no Content-Length to trust, the limit applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'y'; 1024])).collect();
    let res = app
        .client
        .post(app.webhook_url())
        .header("x-imggo-signature", prod_signature(b"whatever"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // Exactly at the limit is fine.
    let job = new_job_id();
    let mut body =
        serde_json::to_vec(&json!({"event": "job.succeeded", "job_id": job, "pad": ""})).unwrap();
    let pad = 4096 - body.len();
    body = serde_json::to_vec(
        &json!({"event": "job.succeeded", "job_id": job, "pad": "p".repeat(pad)}),
    )
    .unwrap();
    assert_eq!(body.len(), 4096);
    assert_eq!(app.post_signed(body).await.status(), 200);
    assert_eq!(app.get_status("/healthz").await, 200);
}

#[tokio::test]
async fn the_stored_payload_is_the_body_as_received() {
    let app = spawn_app().await;
    // Key order, number literals beyond f64 and exponents survive untouched.
    let body = br#"{"job_id":"fidelity","event":"job.succeeded","z":1,"a":{"n":123456789012345678901234567890,"f":1.000000000000000000001,"p":12.50,"e":1E2,"big":1e400,"neg":-0},"m":null}"#;
    assert_eq!(app.post_signed(body.to_vec()).await.status(), 200);
    let stored = app.stored_payload("fidelity", "job.succeeded").await;
    // Only an exponent's spelling is normalised (`1E2` -> `1e+2`), not its value.
    let expected = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("1E2", "1e+2")
        .replace("1e400", "1e+400");
    assert_eq!(serde_json::to_string(&stored).unwrap(), expected);
}

/// The plaintext stored for a job's one event, as bytes.
async fn stored_text(app: &TestApp, job_id: &str) -> Vec<u8> {
    let row = app.events(job_id).await.remove(0);
    test_ring(KEY_A)
        .open(row.key(), &row.key_id, &row.nonce, &row.ciphertext)
        .unwrap()
}

/// `JSON.stringify(body, null, 2)` and `(body, null, "\t")` are bodies the
/// sender can write: with nothing to redact the text is stored and read
/// back as sent, indentation included. A repeated key is never stored as
/// sent (redaction saw only its last value).
#[tokio::test]
async fn a_body_with_nothing_to_redact_is_stored_as_sent() {
    let app = spawn_app().await;
    let token = crate::api_support::make_token(&app.store, "r", "events:read").await;
    let two = "{\n  \"event\": \"job.succeeded\",\n  \"job_id\": \"indent-2\",\n  \"manifest\": {\n    \"total\": 12.50,\n    \"items\": [\n      1,\n      \"a\"\n    ]\n  }\n}";
    let tab =
        "{\n\t\"event\": \"job.succeeded\",\n\t\"job_id\": \"indent-tab\",\n\t\"manifest\": {}\n}";
    for (job, body) in [("indent-2", two), ("indent-tab", tab)] {
        assert_eq!(
            app.post_signed(body.as_bytes().to_vec()).await.status(),
            200
        );
        assert_eq!(stored_text(&app, job).await, body.as_bytes(), "{job}");
        let text = app
            .api_get(&format!("/v1/jobs/{job}"), &token)
            .await
            .text()
            .await
            .unwrap();
        assert!(text.contains(body), "{job}: {text}");
        let page: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            page["events"][0]["payload"],
            serde_json::from_str::<Value>(body).unwrap()
        );
    }
    // Redacted: written out anew (compact), the card masked.
    let card = "{\n  \"event\": \"job.succeeded\",\n  \"job_id\": \"indent-card\",\n  \"card\": \"4111111111111111\"\n}";
    assert_eq!(
        app.post_signed(card.as_bytes().to_vec()).await.status(),
        200
    );
    let stored = String::from_utf8(stored_text(&app, "indent-card").await).unwrap();
    assert!(
        !stored.contains("4111111111111111") && !stored.contains('\n'),
        "{stored}"
    );
    // A repeated key hides a card number behind a harmless last value.
    let hidden =
        br#"{"event":"job.succeeded","job_id":"dup-keys","note":"4111 1111 1111 1111","note":"x"}"#;
    assert_eq!(app.post_signed(hidden.to_vec()).await.status(), 200);
    let stored = String::from_utf8(stored_text(&app, "dup-keys").await).unwrap();
    assert!(!stored.contains("4111"), "{stored}");
}
