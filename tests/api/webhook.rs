//! The webhook route against CONTRACT §2, over real HTTP and Postgres.

use std::time::Duration;

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
async fn redelivery_is_a_duplicate_and_writes_nothing() {
    let app = spawn_app().await;
    let job = new_job_id();
    let body = prod_body(&job);
    assert_eq!(app.post_signed(body.clone()).await.status(), 200);
    let before = app.events(&job).await;
    // A retry may carry a different body (e.g. a new timestamp): still a duplicate.
    for body in [body, prod_body(&job)] {
        let res = app.post_signed(body).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({"status": "duplicate"})
        );
    }
    let after = app.events(&job).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].ciphertext, before[0].ciphertext,
        "the first row is untouched"
    );
    // Another event of the same job is a new row.
    let mut other: Value = serde_json::from_slice(&prod_body(&job)).unwrap();
    other["event"] = json!("job.failed");
    let res = app.post_signed(serde_json::to_vec(&other).unwrap()).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "received"})
    );
    assert_eq!(app.rows().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deliveries_of_one_event_store_one_row() {
    let app = spawn_app().await;
    let job = new_job_id();
    let body = prod_body(&job);
    let sig = prod_signature(&body);
    let url = app.webhook_url();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, body, sig) = (
                reqwest::Client::new(),
                url.clone(),
                body.clone(),
                sig.clone(),
            );
            tokio::spawn(async move {
                let res = post_from(&client, &url, body, Some(&sig)).await;
                (
                    res.status().as_u16(),
                    res.json::<Value>().await.unwrap()["status"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
        })
        .collect();
    let mut received = 0;
    for t in tasks {
        let (status, label) = t.await.unwrap();
        assert_eq!(status, 200);
        match label.as_str() {
            "received" => received += 1,
            "duplicate" => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(received, 1);
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
        (
            json!({"event": "job.succeeded", "job_id": "j1", "pattern_id": "a\u{0}b"}),
            "pattern_id",
        ),
        (
            json!({"event": "job.succeeded", "job_id": "j1", "timestamp": "last tuesday"}),
            "timestamp",
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
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");
    let res = app.client.get(app.webhook_url()).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(error_code(res).await, "method_not_allowed");
    let res = app.client.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test]
async fn a_request_id_is_kept_when_sent_and_made_when_not() {
    let app = spawn_app().await;
    let body = prod_body(&new_job_id());
    let res = app
        .client
        .post(app.webhook_url())
        .header("x-imggo-signature", prod_signature(&body))
        .header("x-request-id", "lb-trace-7f3a")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "lb-trace-7f3a");
    // Ids that would bloat or garble every log line are replaced, on the
    // webhook route and the others alike.
    for bad in [
        "x".repeat(129),
        "has space".to_owned(),
        "tab\tid".to_owned(),
    ] {
        for url in [app.webhook_url(), app.url("/healthz")] {
            let res = app
                .client
                .post(&url)
                .header("x-request-id", &bad)
                .send()
                .await
                .unwrap();
            let id = res.headers()["x-request-id"].to_str().unwrap();
            assert_ne!(id, bad);
            assert_eq!(id.len(), 36, "{url}: a fresh UUID, not {id}");
        }
    }
    // Refusals carry one too, fresh per request.
    let ids: Vec<String> = futures_util::future::join_all((0..2).map(|_| async {
        let res = app
            .client
            .post(app.webhook_url())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        res.headers()["x-request-id"].to_str().unwrap().to_owned()
    }))
    .await;
    assert_eq!(ids[0].len(), 36, "a UUID: {}", ids[0]);
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn other_methods_on_the_webhook_path_pass_the_guards_first() {
    let app =
        spawn_app_with(|o| o.settings.network.allowed_ips = vec!["127.0.0.2/32".parse().unwrap()])
            .await;
    let res = client_from("127.0.0.3")
        .get(app.webhook_url())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = client_from("127.0.0.2")
        .put(app.webhook_url())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(app.rows().await, 0);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.get_status("/healthz").await, 200);
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
    // A database whose migrations were rolled back is not ready.
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap()["reason"],
        "migrations_pending"
    );
}

#[tokio::test]
async fn the_allowlist_admits_listed_sources_only() {
    let app =
        spawn_app_with(|o| o.settings.network.allowed_ips = vec!["127.0.0.2/32".parse().unwrap()])
            .await;
    let body = prod_body(&new_job_id());
    let sig = prod_signature(&body);
    let denied = post_from(
        &client_from("127.0.0.3"),
        &app.webhook_url(),
        body.clone(),
        Some(&sig),
    )
    .await;
    assert_eq!(denied.status(), 403);
    assert_eq!(error_code(denied).await, "forbidden");
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = client_from("127.0.0.3")
        .post(app.webhook_url())
        .header("x-forwarded-for", "127.0.0.2")
        .header("x-imggo-signature", &sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 403);
    let allowed = post_from(
        &client_from("127.0.0.2"),
        &app.webhook_url(),
        body,
        Some(&sig),
    )
    .await;
    assert_eq!(allowed.status(), 200);
    // Probes are never allowlisted.
    let probe = client_from("127.0.0.3")
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
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
