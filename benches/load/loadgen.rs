//! Load generator for `benches/load/run.sh`.
//!
//! `loadgen gen COUNT FILE` — COUNT unique 1.5 KB production-dialect
//!   deliveries carrying PII (random UUID job ids, as the production sender
//!   uses), one `<signature>\t<body>` line each, signed with the first secret
//!   of IMGGO_WEBHOOK_SECRETS.
//! `loadgen open-loop URL FILE RATE SECONDS` — sends RATE requests/s on a
//!   fixed schedule whether or not earlier ones answered (as wrk2 does) and
//!   measures latency from each request's *scheduled* time, so a stall shows
//!   up as latency instead of silently lowering the offered load.
//! `loadgen lone URL FILE COUNT` — COUNT requests one at a time on an idle
//!   server, 20 ms apart: the latency of a delivery that has no batch to join.
//! `loadgen brokers setup|teardown NAME` — the forwarding phase's broker
//!   side on the local NATS, RabbitMQ and Redis: a JetStream stream NAME
//!   capturing `NAME.>` and a RabbitMQ exchange and queue NAME bound under
//!   `bench`, each capped at `KEEP` messages (oldest dropped) so a long run
//!   does not fill the machine; teardown deletes them and the Redis key NAME.
//! `loadgen sink LISTEN` — an HTTP destination that answers 200 to every
//!   POST (the http kind's receiving end for the forwarding phase).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("gen") => generate(args[1].parse().unwrap(), &args[2]),
        Some("open-loop") => rt.block_on(open_loop(
            &args[1],
            &args[2],
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        )),
        Some("lone") => rt.block_on(lone(&args[1], &args[2], args[3].parse().unwrap())),
        Some("proxy") => rt.block_on(proxy(&args[1], &args[2])),
        Some("brokers") => rt.block_on(brokers(&args[1], &args[2])),
        Some("sink") => rt.block_on(sink(&args[1])),
        _ => eprintln!(
            "usage: loadgen gen COUNT FILE | open-loop URL FILE RATE SECONDS | lone URL FILE COUNT | proxy LISTEN UPSTREAM | brokers setup|teardown NAME | sink LISTEN"
        ),
    }
}

fn body(n: usize) -> String {
    let job_id = uuid::Uuid::new_v4();
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let items: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{n:07}-{i}","description":"Office chair, ergonomic, black mesh, model {i}","quantity":{q},"unit_price":{p}.90,"tax_rate":0.19,"total":{t}.90}}"#,
                q = i + 1,
                p = 40 + i * 7,
                t = (40 + i * 7) * (i + 1)
            )
        })
        .collect();
    format!(
        r#"{{"event":"job.succeeded","job_id":"{job_id}","pattern_id":"5b7e2f6a-0d1c-4e2a-9b8f-3c4d5e6f7a8b","manifest":{{"invoice_number":"INV-{n:09}","issue_date":"2026-11-20","due_date":"2026-12-20","currency":"EUR","vendor":{{"name":"ACME Office Supplies GmbH","address":"Hauptstrasse 1, 10115 Berlin","vat":"DE123456789"}},"customer":{{"name":"Jane Roe","email":"jane.roe@example.com","ssn":"123-45-{s:04}","passport_number":"X{n:08}"}},"payment":{{"method":"card","credit_card":"4111 1111 1111 1111","cvv":"737","expiry":"12/26"}},"line_items":[{items}],"subtotal":1234.50,"tax":234.56,"total":1469.06,"notes":"Paid by card 4012 8888 8888 1881 on 2026-11-20; SSN 219-09-9999 on file. Deliver to loading dock B, ask for Mr. Smith."}},"error":null,"timestamp":"{ts}"}}"#,
        s = 1000 + n % 9000,
        items = items.join(",")
    )
}

fn generate(count: usize, path: &str) {
    let secrets = std::env::var("IMGGO_WEBHOOK_SECRETS").expect("IMGGO_WEBHOOK_SECRETS");
    let secret = secrets.split(',').next().unwrap().trim().to_owned();
    let key = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut size = 0;
    for n in 0..count {
        let b = body(n);
        size += b.len();
        let mut mac = key.clone();
        mac.update(b.as_bytes());
        writeln!(
            out,
            "sha256={}\t{b}",
            hex::encode(mac.finalize().into_bytes())
        )
        .unwrap();
    }
    out.flush().unwrap();
    eprintln!(
        "generated {count} deliveries, {} bytes each on average",
        size / count.max(1)
    );
}

fn load(path: &str, limit: usize) -> Vec<(String, String)> {
    std::io::BufReader::new(std::fs::File::open(path).unwrap())
        .lines()
        .take(limit)
        .map(|l| {
            let l = l.unwrap();
            let (sig, body) = l.split_once('\t').unwrap();
            (sig.to_owned(), body.to_owned())
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn report(label: &str, mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) {
    latencies.sort();
    let n = latencies.len();
    println!(
        "{label}: {n} answered in {:.1}s ({:.0}/s), non-2xx/errors {errors}, latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 0.999).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn send(client: &reqwest::Client, url: &str, sig: &str, body: &str) -> bool {
    match client
        .post(url)
        .header("content-type", "application/json")
        .header("x-imggo-signature", sig)
        .body(body.to_owned())
        .send()
        .await
    {
        Ok(res) => {
            let ok = res.status().is_success();
            let _ = res.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

async fn open_loop(url: &str, path: &str, rate: u64, seconds: u64) {
    let total = (rate * seconds) as usize;
    let deliveries = Arc::new(load(path, total));
    assert!(
        deliveries.len() >= total,
        "need {total} deliveries in {path}"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .unwrap();
    let url: Arc<str> = url.into();
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, deliveries) = (client.clone(), url.clone(), deliveries.clone());
        tasks.push(tokio::spawn(async move {
            let (sig, body) = &deliveries[i];
            let ok = send(&client, &url, sig, body).await;
            (ok, scheduled.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        let (ok, latency) = t.await.unwrap();
        if !ok {
            errors += 1;
        }
        latencies.push(latency);
    }
    report(
        &format!("open-loop {rate}/s"),
        latencies,
        errors,
        start.elapsed(),
    );
}

async fn lone(url: &str, path: &str, count: usize) {
    let deliveries = load(path, count);
    let client = reqwest::Client::new();
    // Warm the connection so connect time is not counted.
    let _ = client
        .get(url.replace("/webhooks/imggo", "/healthz"))
        .send()
        .await;
    let mut latencies = Vec::with_capacity(count);
    let mut errors = 0;
    let start = Instant::now();
    for (sig, body) in &deliveries {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        if !send(&client, url, sig, body).await {
            errors += 1;
        }
        latencies.push(t.elapsed());
    }
    report(
        "lone deliveries on an idle server",
        latencies,
        errors,
        start.elapsed(),
    );
}

/// A TCP forwarder from LISTEN to UPSTREAM: the spool phases put it between
/// the receiver and Postgres and kill it to make Postgres unreachable.
async fn proxy(listen: &str, upstream: &str) {
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Messages each bench destination keeps (the oldest go first).
const KEEP: i64 = 20_000;

async fn brokers(action: &str, name: &str) {
    use lapin::options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};

    let js =
        async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.unwrap());
    let properties = lapin::ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    let amqp = lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", properties)
        .await
        .unwrap();
    let ch = amqp.create_channel().await.unwrap();
    match action {
        "setup" => {
            js.create_stream(async_nats::jetstream::stream::Config {
                name: name.to_owned(),
                subjects: vec![format!("{name}.>")],
                max_messages: KEEP,
                ..Default::default()
            })
            .await
            .unwrap();
            ch.exchange_declare(
                name,
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            let mut args = FieldTable::default();
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(KEEP));
            ch.queue_declare(name, QueueDeclareOptions::default(), args)
                .await
                .unwrap();
            ch.queue_bind(
                name,
                name,
                "bench",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        "teardown" => {
            let _ = js.delete_stream(name).await;
            let _ = ch.queue_delete(name, QueueDeleteOptions::default()).await;
            let _ = ch
                .exchange_delete(name, ExchangeDeleteOptions::default())
                .await;
            let mut redis = redis::Client::open("redis://127.0.0.1:6379")
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let _: i64 = redis::cmd("DEL")
                .arg(name)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
        other => panic!("brokers {other}: setup or teardown"),
    }
    let _ = amqp.close(200, "done").await;
}

async fn sink(listen: &str) {
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
