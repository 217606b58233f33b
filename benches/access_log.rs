#![allow(clippy::unwrap_used)]

//! One access line through the service's JSON subscriber, against
//! tracing-subscriber's own `json()` formatter (the baseline it replaced)
//! in the same run. Lines go to `io::sink`: this is formatting cost only.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imggo_receiver::config::LogFormat;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::EnvFilter;

fn access_line() {
    let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    tracing::info!(
        target: "imggo_receiver::access",
        request_id = "5f0c6a1e-8d2b-4c4f-9a57-3b1e0c9d7a21",
        method = "POST",
        route = "/webhooks/imggo",
        client_ip = %ip,
        job_id = Some("3f1c9a8e-0000-4000-8000-000000000001"),
        event = Some("job.succeeded"),
        outcome = "received",
        status = 200u16,
        latency_ms = 1.734,
        "request finished"
    );
}

fn formatters(c: &mut Criterion) {
    let ours = imggo_receiver::telemetry::subscriber(
        LogFormat::Json,
        EnvFilter::new("info"),
        std::io::sink,
        false,
    );
    let baseline = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::sink),
        );

    let mut group = c.benchmark_group("access_line");
    group.throughput(Throughput::Elements(1));
    tracing::subscriber::with_default(ours, || {
        group.bench_function("json_lines", |b| b.iter(access_line));
    });
    tracing::subscriber::with_default(baseline, || {
        group.bench_function("tracing_subscriber_json", |b| b.iter(access_line));
    });
    group.finish();
}

criterion_group!(benches, formatters);
criterion_main!(benches);
