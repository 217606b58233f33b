//! `serve` as a user runs it and as the image runs it: config file and env
//! secrets, a signed delivery, `show`, SIGTERM with a delivery in flight.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_then_show_as_a_user_would() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("imggo.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[admin]\nbind = \"127.0.0.1:{}\"\n[log]\nformat = \"json\"\n",
            free_port()
        ),
    )
    .unwrap();
    let env: Vec<(String, String)> = secret_env(&db.url).into_iter().collect();
    let with_config = |args: &[&str]| {
        let mut cmd = command(dir.path(), &env);
        cmd.arg("--config").arg(&config).args(args);
        cmd
    };

    let mut server = Server::start(with_config(&[]));
    server.wait_for("listening");

    let job = new_job_id();
    let body = prod_body(&job);
    // The `sign` command makes the header a user would paste into curl.
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &body).unwrap();
    let signed = run(with_config(&[]), &["sign", body_file.to_str().unwrap()]);
    assert!(signed.status.success());
    let header = String::from_utf8(signed.stdout).unwrap().trim().to_owned();
    assert_eq!(
        header,
        prod_signature(&body),
        "sign agrees with an independent HMAC"
    );

    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let res = post_from(&reqwest::Client::new(), &url, body.clone(), Some(&header)).await;
    assert_eq!(res.status(), 200);

    let shown = run_ok(with_config(&[]), &["show", &job]);
    let stdout = String::from_utf8(shown.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["job_id"], job.as_str());
    assert_eq!(lines[0]["event"], "job.succeeded");
    assert!(lines[0]["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        lines[0]["payload"],
        serde_json::from_slice::<Value>(&body).unwrap()
    );

    let missing = run(with_config(&[]), &["show", "no-such-job"]);
    assert_eq!(missing.status.code(), Some(1));

    run_ok(with_config(&[]), &["healthcheck"]);

    // A refused delivery, for the log.
    let wrong = format!("sha256={}", "0".repeat(64));
    let res = post_from(&reqwest::Client::new(), &url, body.clone(), Some(&wrong)).await;
    assert_eq!(res.status(), 401);

    let (status, logs) = server.terminate();
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{logs}");
    // One structured line per webhook request, with the allow-listed fields.
    let finished: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "request finished" && l["route"] == "/webhooks/imggo")
        .collect();
    assert_eq!(finished.len(), 2, "{logs}");
    let ok = &finished[0];
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["outcome"], "received");
    assert_eq!(ok["job_id"], job.as_str());
    assert_eq!(ok["event"], "job.succeeded");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["method"], "POST");
    assert!(ok["request_id"].as_str().unwrap().len() >= 32);
    assert!(ok["latency_ms"].is_number());
    assert_eq!(finished[1]["outcome"], "invalid_signature");
    assert_eq!(finished[1]["level"], "WARN");
    for needle in [
        SECRET,
        ROTATED_SECRET,
        &header[7..],
        "INV-1042",
        HASH_KEY,
        &KEY_A[3..20],
    ] {
        assert!(!logs.contains(needle), "server log leaks {needle}");
    }
    assert!(logs.contains(&job), "the access log names the job");
}

/// As the container runs it: working directory with only the defaults file,
/// secrets as `*_FILE`, bind from the image's env, `healthcheck` as the
/// HEALTHCHECK, and SIGTERM while a delivery is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_the_image_does_and_drains_on_sigterm() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let db = TestDb::new().await;
    let app_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(app_dir.path().join("config")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"),
        app_dir.path().join("config/default.toml"),
    )
    .unwrap();
    let secrets_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = vec![
        (
            "IMGGO__SERVER__BIND".to_owned(),
            format!("127.0.0.1:{port}"),
        ),
        (
            "IMGGO__ADMIN__BIND".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        ),
    ];
    for (name, value) in secret_env(&db.url) {
        let path = secrets_dir.path().join(&name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        env.push((format!("{name}_FILE"), path.to_str().unwrap().to_owned()));
    }
    let mut server = Server::start(command(app_dir.path(), &env));
    server.wait_for("listening");

    let health = command(app_dir.path(), &env)
        .arg("healthcheck")
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );

    // Start a delivery: with `Expect: 100-continue` the server answers
    // "100 Continue" once the handler reads the body, so after that the
    // request is provably in flight inside the server.
    let job = new_job_id();
    let body = prod_body(&job);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nX-ImgGo-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        prod_signature(&body),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first).await.unwrap();
    stream.flush().await.unwrap();

    // ...SIGTERM arrives; the server says it is draining...
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    server.wait_for("draining");

    // ...and the in-flight delivery still completes and is committed.
    stream.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the in-flight request was answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"received\""));
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let rows = db.events_of(&job).await;
    assert_eq!(rows, 1);
}
