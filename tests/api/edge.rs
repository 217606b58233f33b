//! Edge guards over real sockets: distinct loopback addresses are distinct
//! clients; 127.0.0.4 plays the load balancer.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

const PROXY: &str = "127.0.0.4";

async fn post_as(app: &TestApp, from: &str, xff: Option<&str>) -> reqwest::Response {
    let body = prod_body(&new_job_id());
    let mut req = client_from(from)
        .post(app.webhook_url())
        .header("x-imggo-signature", prod_signature(&body))
        .body(body);
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

async fn limited_app(burst: u32) -> TestApp {
    spawn_app_with(|o| {
        o.settings.rate_limit.per_second = 1;
        o.settings.rate_limit.burst = burst;
        o.settings.network.trusted_proxies = vec![format!("{PROXY}/32").parse().unwrap()];
    })
    .await
}

#[tokio::test]
async fn the_rate_limit_hits_one_source_and_not_another() {
    let app = limited_app(3).await;
    for _ in 0..3 {
        let res = post_as(&app, "127.0.0.2", None).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-ratelimit-limit"], "3");
    }
    let res = post_as(&app, "127.0.0.2", None).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(error_code(res).await, "rate_limited");

    assert_eq!(post_as(&app, "127.0.0.3", None).await.status(), 200);
    // Probes are never rate limited.
    for _ in 0..10 {
        let res = client_from("127.0.0.2")
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(app.rows().await, 4);
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_reset_the_limit() {
    let app = limited_app(2).await;
    for _ in 0..2 {
        assert_eq!(post_as(&app, "127.0.0.2", None).await.status(), 200);
    }
    for fake in ["9.9.9.9", "127.0.0.3", "10.0.0.1, 127.0.0.9"] {
        assert_eq!(
            post_as(&app, "127.0.0.2", Some(fake)).await.status(),
            429,
            "{fake}"
        );
    }
}

#[tokio::test]
async fn through_a_trusted_proxy_the_forwarded_client_counts() {
    let app = limited_app(2).await;
    for _ in 0..2 {
        assert_eq!(
            post_as(&app, PROXY, Some("198.51.100.7")).await.status(),
            200
        );
    }
    assert_eq!(
        post_as(&app, PROXY, Some("198.51.100.7")).await.status(),
        429
    );
    // Another client behind the same balancer has its own bucket...
    assert_eq!(
        post_as(&app, PROXY, Some("198.51.100.8")).await.status(),
        200
    );
    // ...and one cannot claim another's by prepending entries.
    assert_eq!(
        post_as(&app, PROXY, Some("198.51.100.9, 198.51.100.7"))
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn the_allowlist_judges_the_forwarded_client_behind_a_trusted_proxy() {
    let app = spawn_app_with(|o| {
        o.settings.network.trusted_proxies = vec![format!("{PROXY}/32").parse().unwrap()];
        o.settings.network.allowed_ips = vec!["198.51.100.0/24".parse().unwrap()];
    })
    .await;
    assert_eq!(
        post_as(&app, PROXY, Some("198.51.100.7")).await.status(),
        200
    );
    assert_eq!(
        post_as(&app, PROXY, Some("[::ffff:198.51.100.8]:443"))
            .await
            .status(),
        200
    );
    assert_eq!(
        post_as(&app, PROXY, Some("203.0.113.9")).await.status(),
        403
    );
    // The attacker's own entry on the left does not help.
    assert_eq!(
        post_as(&app, PROXY, Some("198.51.100.7, 203.0.113.9"))
            .await
            .status(),
        403
    );
    // Talking to us directly with a forged header does not help either.
    assert_eq!(
        post_as(&app, "127.0.0.5", Some("198.51.100.7"))
            .await
            .status(),
        403
    );
    // The proxy itself is not an allowed client.
    assert_eq!(post_as(&app, PROXY, None).await.status(), 403);
    assert_eq!(app.rows().await, 2);
}

/// Sends `head` then stalls; returns what the server said and how long it took.
async fn stall(app: &TestApp, head: &str) -> (String, Duration) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    // Bounded: the server must close well before this.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server held a stalled connection open");
    (String::from_utf8_lossy(&buf).into_owned(), start.elapsed())
}

#[tokio::test]
async fn a_sender_stalling_mid_body_is_cut_off() {
    let app =
        spawn_app_with(|o| o.settings.server.request_timeout = Duration::from_millis(500)).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-ImgGo-Signature: sha256={}\r\nContent-Length: 1000\r\n\r\n{{\"event\":",
        app.path,
        "0".repeat(64)
    );
    let (answer, took) = stall(&app, &head).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(app.get_status("/healthz").await, 200);
}

#[tokio::test]
async fn a_sender_stalling_in_its_headers_is_cut_off() {
    let app =
        spawn_app_with(|o| o.settings.server.request_timeout = Duration::from_millis(500)).await;
    let head = format!("POST {} HTTP/1.1\r\nHost: x\r\nX-Slow: ", app.path);
    let (_, took) = stall(&app, &head).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_declared_oversize_is_refused_before_the_body_is_sent() {
    let app = spawn_app_with(|o| o.settings.server.max_body_bytes = 1024).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\nX-ImgGo-Signature: {}\r\nConnection: close\r\n\r\n",
        app.path,
        "0".repeat(64)
    );
    let (answer, _) = stall(&app, &head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"));
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let app =
        spawn_app_with(|o| o.settings.server.request_timeout = Duration::from_millis(500)).await;
    for head in ["", "P", "POST /webhooks/imggo HTT"] {
        let (answer, took) = stall(&app, head).await;
        assert!(took < Duration::from_secs(5), "{head:?}: {took:?} {answer}");
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_on_accept() {
    let app = spawn_app_with(|o| {
        o.settings.server.max_connections = 2;
        o.settings.server.request_timeout = Duration::from_secs(30);
    })
    .await;
    let held: Vec<TcpStream> =
        futures_util::future::join_all((0..2).map(|_| TcpStream::connect(app.addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    // The third is accepted and closed at once, long before any timeout.
    let (answer, took) = stall(&app, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        answer.is_empty() && took < Duration::from_secs(5),
        "{answer} {took:?}"
    );
    drop(held);
    let ok = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(res) = app.client.get(app.url("/healthz")).send().await {
                break res.status();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ok, 200, "slots are given back when connections close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_period_even_with_a_stalled_request() {
    let app = spawn_app_with(|o| {
        o.settings.server.request_timeout = Duration::from_secs(60);
        o.settings.server.shutdown_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nX-ImgGo-Signature: {}\r\nContent-Length: 100\r\n\r\n",
        app.path,
        "0".repeat(64)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap(); // the handler is reading the body
    let start = Instant::now();
    app.shutdown.cancel();
    let server = app.server;
    let finished = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(finished.is_ok(), "the server outlived its grace period");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn other_methods_do_not_spend_a_senders_rate_limit() {
    let app = limited_app(2).await;
    // A scanner (or a stray GET) from the sender's address...
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::HEAD,
    ] {
        for _ in 0..3 {
            let res = client_from("127.0.0.2")
                .request(method.clone(), app.webhook_url())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 405, "{method}");
        }
    }
    // ...leaves its whole burst for deliveries.
    for _ in 0..2 {
        assert_eq!(post_as(&app, "127.0.0.2", None).await.status(), 200);
    }
    assert_eq!(post_as(&app, "127.0.0.2", None).await.status(), 429);
}
