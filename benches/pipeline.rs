#![allow(clippy::unwrap_used)]

//! The per-delivery CPU path without the database or HTTP: verify the
//! signature, parse, read the envelope, redact, serialise, seal. Reported as
//! deliveries/s on one core (criterion's elements/s).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hmac::{Hmac, Mac};
use imggo_receiver::config::secrets::{parse_key_ring, WebhookSecrets};
use imggo_receiver::delivery::Delivery;
use imggo_receiver::json::Json;
use imggo_receiver::redact::{RedactSettings, Redactor};
use imggo_receiver::security::SignatureVerifier;
use sha2::Sha256;

const SECRET: &str = "whsec_bench_secret_0123456789";

/// A 1.5 KB production-dialect delivery carrying PII.
fn delivery() -> Vec<u8> {
    let items: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"sku":"SKU-{i}","description":"Office chair, ergonomic, black mesh, model {i}","quantity":{q},"unit_price":49.90,"tax_rate":0.19}}"#, q = i + 1))
        .collect();
    format!(
        r#"{{"event":"job.succeeded","job_id":"3f1c9a8e-0000-4000-8000-000000000001","pattern_id":"5b7e2f6a-0d1c-4e2a-9b8f-3c4d5e6f7a8b","manifest":{{"invoice_number":"INV-1042","currency":"EUR","vendor":{{"name":"ACME Office Supplies GmbH","address":"Hauptstrasse 1, 10115 Berlin"}},"customer":{{"name":"Jane Roe","email":"jane.roe@example.com","ssn":"123-45-6789","passport_number":"X12345678"}},"payment":{{"method":"card","credit_card":"4111 1111 1111 1111","cvv":"737"}},"line_items":[{}],"total":1469.06,"notes":"Paid by card 4012 8888 8888 1881; SSN 219-09-9999 on file."}},"error":null,"timestamp":"2026-11-24T10:00:00Z"}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn pipeline(c: &mut Criterion) {
    let body = delivery();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let verifier = SignatureVerifier::new(&WebhookSecrets::parse(SECRET).unwrap());
    let redactor = Redactor::new(&RedactSettings::default(), &[7u8; 32]);
    let subjects = imggo_receiver::subjects::SubjectIndexer::new(
        imggo_receiver::subjects::SubjectFields::new(
            &imggo_receiver::config::Settings::load_with_env(None, Vec::new())
                .unwrap()
                .subjects,
            &RedactSettings::default(),
        ),
        imggo_receiver::subjects::SubjectKey::new(&[7u8; 32]),
    );
    let keys = parse_key_ring("kb:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();

    let mut group = c.benchmark_group("delivery");
    group.throughput(Throughput::Elements(1));
    group.bench_function(
        format!("verify+parse+redact+seal ({} B)", body.len()),
        |b| {
            b.iter(|| {
                verifier.verify(Some(header.as_bytes()), &body).unwrap();
                Delivery::parse(&body)
                    .unwrap()
                    .seal(&subjects, &redactor, &keys)
            })
        },
    );
    // The request path's parse, beside serde_json's own Value (the one it
    // replaced) as the baseline measured in the same run.
    group.bench_function("parse only", |b| b.iter(|| Json::parse(&body).unwrap()));
    group.bench_function("parse only, serde_json::Value (baseline)", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(&body).unwrap())
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
