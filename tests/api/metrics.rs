//! `/metrics` of a running binary: outcomes on the admin port only,
//! retention passes, and log lines dropped when the log pipe stalls.

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_on_the_admin_port_only() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut env: Vec<(String, String)> = secret_env(&db.url).into_iter().collect();
    env.extend([
        (
            "IMGGO__SERVER__BIND".to_owned(),
            format!("127.0.0.1:{port}"),
        ),
        (
            "IMGGO__ADMIN__BIND".to_owned(),
            format!("127.0.0.1:{admin}"),
        ),
        (
            "IMGGO__NETWORK__ALLOWED_IPS".to_owned(),
            "127.0.0.1".to_owned(),
        ),
    ]);
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");

    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let local = reqwest::Client::new();
    let body = prod_body(&new_job_id());
    let sig = prod_signature(&body);
    assert_eq!(
        post_from(&local, &url, body.clone(), Some(&sig))
            .await
            .status(),
        200
    );
    assert_eq!(
        post_from(&local, &url, body.clone(), Some(&sig))
            .await
            .status(),
        200
    );
    let wrong = format!("sha256={}", "0".repeat(64));
    assert_eq!(
        post_from(&local, &url, body.clone(), Some(&wrong))
            .await
            .status(),
        401
    );
    assert_eq!(
        post_from(&local, &url, body.clone(), None).await.status(),
        401
    );
    assert_eq!(
        post_from(&client_from("127.0.0.3"), &url, body, Some(&sig))
            .await
            .status(),
        403
    );

    let public = local
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        public.status(),
        404,
        "metrics must not be on the public port"
    );
    let res = local
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert_eq!(sample(&text, "imggo_events_stored_total"), 1.0, "{text}");
    assert_eq!(sample(&text, "imggo_duplicates_total"), 1.0);
    assert_eq!(
        sample(&text, "imggo_signature_failures_total{reason=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "imggo_signature_failures_total{reason=\"missing\"}"),
        1.0
    );
    assert_eq!(sample(&text, "imggo_allowlist_denials_total"), 1.0);
    assert_eq!(
        sample(
            &text,
            "imggo_webhook_duration_seconds_count{outcome=\"received\"}"
        ),
        1.0
    );
    assert!(text.contains("imggo_build_info{version="));
    // No unbounded labels.
    assert!(!text.contains("127.0.0.3") && !text.contains("job_id=") && !text.contains("ip="));

    let (status, _) = server.terminate();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_retention_passes_are_counted_in_metrics() {
    let db = TestDb::new().await;
    let store = db.store();
    let jobs: Vec<String> = (0..5).map(|i| format!("expired-{i}")).collect();
    for job in &jobs {
        store.insert(&sealed_event(job)).await.unwrap();
    }
    let ids: Vec<&str> = jobs.iter().map(String::as_str).collect();
    backdate_rows(&store, &ids, 3 * 3600).await;

    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut env = serve_env(&db, port, admin);
    env.extend([
        ("IMGGO__RETENTION__MAX_AGE".into(), "1h".into()),
        ("IMGGO__RETENTION__PURGE_INTERVAL".into(), "300ms".into()),
    ]);
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");

    let completed = "imggo_purge_runs_total{result=\"completed\"}";
    let text = metrics_until(admin, "a completed pass", |t| sample(t, completed) >= 1.0).await;
    assert_eq!(sample(&text, "imggo_purge_rows_total"), 5.0, "{text}");
    assert!(
        sample(&text, "imggo_purge_duration_seconds_count") >= 1.0,
        "{text}"
    );
    assert_eq!(count_rows(&store).await, 0);

    // A pass that fails (the table refuses deletes) is counted as such.
    db.refuse_event_deletes().await;
    store.insert(&sealed_event("expired-late")).await.unwrap();
    backdate_rows(&store, &["expired-late"], 3 * 3600).await;
    let failed = "imggo_purge_runs_total{result=\"failed\"}";
    let text = metrics_until(admin, "a failed pass", |t| sample(t, failed) >= 1.0).await;
    assert!(
        sample(&text, "imggo_database_errors_total{operation=\"purge\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "imggo_purge_rows_total"), 5.0, "{text}");
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// The server's log output goes to a pipe nobody reads: once the pipe and
/// the log buffer are full, lines are dropped and counted, and deliveries
/// keep being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_pipe_never_stalls_deliveries() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut env = serve_env(&db, port, admin);
    env.extend([
        ("IMGGO__RATE_LIMIT__PER_SECOND".into(), "1000000".into()),
        ("IMGGO__RATE_LIMIT__BURST".into(), "1000000".into()),
    ]);
    let child = command(dir.path(), &env)
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Killed when the test ends, passed or failed.
    let mut child = KillOnDrop(child);
    // Held, never read.
    let _stderr = child.0.stderr.take().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let up = tokio::time::timeout(Duration::from_secs(30), async {
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(up.is_ok(), "the server never answered");

    // Long request and job ids make long access lines (~600 bytes): 20,000
    // of them are well past the pipe's 64 KiB and the 8 MiB buffer.
    let request_id = "r".repeat(128);
    let url = format!("{base}/webhooks/imggo");
    let total = 20_000;
    let started = std::time::Instant::now();
    let answered = futures_util::stream::iter(0..total)
        .map(|i| {
            let (client, url, request_id) = (client.clone(), url.clone(), request_id.clone());
            async move {
                let body = prod_body(&format!("{i:0>128}"));
                let sig = prod_signature(&body);
                client
                    .post(&url)
                    .header("x-imggo-signature", sig)
                    .header("x-request-id", request_id)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for r in answered.iter().filter(|r| !matches!(r, Ok(200))) {
        let key = match r {
            Ok(status) => status.to_string(),
            Err(e) => format!("{e:?}").chars().take(120).collect(),
        };
        *failures.entry(key).or_default() += 1;
    }
    assert!(failures.is_empty(), "not answered 200: {failures:?}");
    eprintln!("{total} deliveries in {:?}", started.elapsed());
    let text = scrape(admin).await;
    assert!(
        sample(&text, "imggo_log_lines_dropped_total") > 0.0,
        "no line was dropped: {text}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(route, outcome)` of every sample of `metric` in Prometheus text.
fn route_outcomes(text: &str, metric: &str) -> Vec<(String, String)> {
    let label = |labels: &str, name: &str| {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        let end = labels[start..].find('"')? + start;
        Some(labels[start..end].to_owned())
    };
    text.lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|labels| Some((label(labels, "route")?, label(labels, "outcome")?)))
        .collect()
}

/// Each route's request series, declared at start-up, carry only the
/// outcomes that route can answer with: the Results API's codes are not
/// the webhook's.
#[tokio::test]
async fn each_route_declares_only_the_outcomes_it_can_produce() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut env = serve_env(&db, port, admin);
    env.push((
        "IMGGO__API__BIND".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    let text = scrape(admin).await;

    let webhook: std::collections::BTreeSet<String> =
        route_outcomes(&text, "imggo_http_requests_total")
            .into_iter()
            .map(|(route, outcome)| {
                assert_eq!(route, "/webhooks/imggo", "{outcome}");
                outcome
            })
            .collect();
    let expected: std::collections::BTreeSet<String> = [
        "received",
        "duplicate",
        "forbidden",
        "rate_limited",
        "payload_too_large",
        "missing_signature",
        "invalid_signature",
        "invalid_json",
        "invalid_payload",
        "stale_timestamp",
        "bad_request",
        "request_timeout",
        "method_not_allowed",
        "unavailable",
        "internal_error",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(webhook, expected);

    let api = route_outcomes(&text, "imggo_api_requests_total");
    assert!(!api.is_empty(), "{text}");
    for (route, outcome) in api {
        assert!(route.starts_with("/v1/"), "{route}");
        assert_eq!(outcome, "ok", "{route}");
    }
    server.terminate();
}
