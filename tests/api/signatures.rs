//! Signatures (CONTRACT §1, §2): both header forms and hex cases, rotated
//! secrets, and adversarial cases; unauthenticated bytes are never parsed.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn production_dialect_with_prefixed_signature_is_stored() {
    let app = spawn_app().await;
    let job = new_job_id();
    let body = prod_body(&job);
    let res = app.post_signed(body.clone()).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "received"})
    );

    let rows = app.events(&job).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event, "job.succeeded");
    assert_eq!(
        rows[0].pattern_id.as_deref(),
        Some("5b7e2f6a-0d1c-4e2a-9b8f-3c4d5e6f7a8b")
    );
    assert_eq!(rows[0].key_id, "ka");
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(app.stored_payload(&job, "job.succeeded").await, sent);
}

#[tokio::test]
async fn docs_dialect_with_bare_hex_in_either_case_is_stored() {
    let app = spawn_app().await;
    for (i, upper) in [false, true].into_iter().enumerate() {
        let job = format!("job_docs_{i}");
        let body = docs_body(&job);
        let mut sig = hmac_hex(SECRET, &body);
        if upper {
            sig = sig.to_uppercase();
        }
        let res = app.post_raw(body.clone(), Some(&sig)).await;
        assert_eq!(res.status(), 200, "upper={upper}");
        let rows = app.events(&job).await;
        assert_eq!(rows[0].status.as_deref(), Some("completed"));
        assert_eq!(rows[0].pattern_id.as_deref(), Some("pat_invoices_v2"));
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(app.stored_payload(&job, "job.completed").await, sent);
    }
}

#[tokio::test]
async fn the_production_dialect_also_verifies_with_bare_hex_and_docs_with_prefix() {
    let app = spawn_app().await;
    let a = prod_body("job-a");
    let sig = hmac_hex(SECRET, &a);
    assert_eq!(app.post_raw(a, Some(&sig)).await.status(), 200);
    let b = docs_body("job-b");
    let sig = format!("sha256={}", hmac_hex(SECRET, &b));
    assert_eq!(app.post_raw(b, Some(&sig)).await.status(), 200);
    assert_eq!(app.rows().await, 2);
}

#[tokio::test]
async fn a_rotated_second_secret_verifies() {
    let app = spawn_app().await;
    let body = prod_body(&new_job_id());
    let sig = format!("sha256={}", hmac_hex(ROTATED_SECRET, &body));
    assert_eq!(app.post_raw(body, Some(&sig)).await.status(), 200);
    assert_eq!(app.rows().await, 1);
}

#[tokio::test]
async fn bad_signatures_are_401_and_store_nothing() {
    let app = spawn_app().await;
    let body = prod_body(&new_job_id());
    let good = hmac_hex(SECRET, &body);
    let flip = |i: usize| {
        let mut b = good.clone().into_bytes();
        b[i] = if b[i] == b'a' { b'b' } else { b'a' };
        format!("sha256={}", String::from_utf8(b).unwrap())
    };
    let cases = vec![
        (Some(flip(0)), "invalid_signature"),
        (Some(flip(32)), "invalid_signature"),
        (Some(flip(63)), "invalid_signature"),
        (Some(format!("sha256={}", &good[..40])), "invalid_signature"),
        (Some(format!("sha256={good}ff")), "invalid_signature"),
        (
            Some(format!("sha256={}xyz!", &good[..60])),
            "invalid_signature",
        ),
        (Some(format!("sha512={good}")), "invalid_signature"),
        (
            Some(hmac_hex("whsec_someone_else_entirely", &body)),
            "invalid_signature",
        ),
        (Some(String::new()), "missing_signature"),
        (None, "missing_signature"),
    ];
    for (sig, code) in cases {
        let res = app.post_raw(body.clone(), sig.as_deref()).await;
        assert_eq!(res.status(), 401, "{sig:?}");
        let text = res.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], code, "{sig:?}");
        assert!(
            !text.contains(&good[..16]),
            "error body echoes the signature"
        );
        assert!(!text.contains("INV-1042"), "error body echoes the payload");
    }
    assert_eq!(app.rows().await, 0);
}

#[tokio::test]
async fn two_signature_headers_are_refused() {
    let app = spawn_app().await;
    let body = prod_body(&new_job_id());
    let res = app
        .client
        .post(app.webhook_url())
        .header("x-imggo-signature", prod_signature(&body))
        .header("x-imggo-signature", prod_signature(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn unauthenticated_bytes_are_never_parsed() {
    let app = spawn_app().await;
    // Garbage with a wrong signature is a signature failure, not a JSON one.
    let res = app
        .post_raw(b"{not json".to_vec(), Some(&"0".repeat(64)))
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_signature");
}
