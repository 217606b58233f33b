#![allow(clippy::unwrap_used)]

//! Throughput of redaction (`Redactor::redact_json`, the request path) on production-dialect deliveries:
//! a ~2 KB invoice/KYC manifest and a ~500 KB one with many line items.
//!
//! `cargo bench --bench redact -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use imggo_receiver::json::Json;
use imggo_receiver::redact::{RedactSettings, Redactor};
use serde_json::{json, Value};

fn line_item(i: usize) -> Value {
    json!({
        "line": i + 1,
        "sku": format!("SKU-{:06}", 100_000 + i * 7),
        "description": format!("Professional services, phase {} (on-site, 2026-11-{:02})", i % 9 + 1, i % 28 + 1),
        "quantity": (i % 5) + 1,
        "unit_price": 129.5 + (i % 13) as f64,
        "tax_rate": 0.19,
        "amount": format!("{:.2}", 129.5 * ((i % 5) + 1) as f64),
        "cost_center": format!("CC-{}", 4000 + i % 50),
        "notes": if i % 25 == 0 {
            "Customer asked to charge card 4111 1111 1111 1111 exp 12/26 for the balance".to_owned()
        } else {
            format!("Delivered by courier, tracking 1Z999AA1{:08}, signed by reception", i)
        }
    })
}

fn delivery(items: usize) -> Value {
    let line_items: Vec<Value> = (0..items).map(line_item).collect();
    json!({
        "event": "job.succeeded",
        "job_id": "0b6f2c1e-3d4a-4e5f-8a9b-1c2d3e4f5a6b",
        "pattern_id": "7c8d9e0f-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
        "manifest": {
            "document_type": "invoice",
            "invoice_number": "INV-2026-004711",
            "issue_date": "2026-11-20",
            "due_date": "2026-12-20",
            "currency": "EUR",
            "vendor": {
                "name": "Muster Consulting GmbH",
                "vat": "DE123456789",
                "address": {"street": "Hauptstraße 12", "postal_code": "10115", "city": "Berlin", "country": "DE"},
                "iban": "DE89 3704 0044 0532 0130 00",
                "bic": "COBADEFFXXX"
            },
            "customer": {
                "name": "Jane Q. Roe",
                "email": "jane.roe@example.com",
                "phone": "+1 555-010-0199",
                "ssn": "123-45-6789",
                "date_of_birth": "1984-07-14",
                "address": {"street": "742 Evergreen Terrace", "postal_code": "97403", "city": "Springfield", "country": "US"},
                "drivers_license": "D1234-56789-01234"
            },
            "payment": {
                "method": "card",
                "cardNumber": "5555-5555-5555-4444",
                "cvv": "737",
                "expiry": "12/26",
                "authorization_code": "A1B2C3"
            },
            "line_items": line_items,
            "subtotal": "12345.00",
            "tax": "2345.55",
            "total": "14690.55",
            "remarks": "Please reference the invoice number on your transfer. Questions: billing@example.com"
        },
        "error": null,
        "timestamp": "2026-11-24T10:00:00Z"
    })
}

/// Smallest delivery whose serialised form reaches `bytes`.
fn delivery_of_size(bytes: usize) -> Value {
    let mut items = 1;
    loop {
        let value = delivery(items);
        if serde_json::to_vec(&value).map_or(0, |v| v.len()) >= bytes {
            return value;
        }
        items += if bytes > 10_000 { 50 } else { 1 };
    }
}

fn bench(c: &mut Criterion) {
    let redactor = Redactor::new(&RedactSettings::default(), &[0x42; 32]);
    for (label, target) in [("2KB", 2_000usize), ("500KB", 500_000)] {
        let payload = delivery_of_size(target);
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let mut group = c.benchmark_group(format!("redact/{label}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        let batch = if body.len() > 100_000 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        // The request path: the borrowed `Json` tree. (`Redactor::redact` on
        // a `Value` goes through text and would measure that instead.)
        group.bench_function("redact", |b| {
            b.iter_batched(
                || Json::parse(&body).unwrap(),
                |mut tree| {
                    let _changed = redactor.redact_json(&mut tree);
                    tree
                },
                batch,
            )
        });
        group.bench_function("parse+redact+serialize", |b| {
            b.iter(|| {
                let mut tree = Json::parse(&body).unwrap();
                let _changed = redactor.redact_json(&mut tree);
                tree.to_vec()
            })
        });
        group.bench_function("parse+serialize (baseline)", |b| {
            b.iter(|| Json::parse(&body).unwrap().to_vec())
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
