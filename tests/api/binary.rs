//! The compiled binary, run as a user would: config file + env secrets,
//! `serve`, a signed delivery, `show`, SIGTERM.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_imggo-receiver");

pub fn command(dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).env("RUST_LOG", "info");
    for (k, _) in std::env::vars() {
        if k.starts_with("IMGGO") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    // Tests run side by side: the Results API's fixed default port is off
    // unless a test gives it one (`env` wins).
    cmd.env("IMGGO__API__BIND", "");
    cmd.envs(env.iter().cloned());
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `serve` whose stderr is collected line by line.
pub struct Server {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .arg("serve")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` (the server says when it listens).
    pub fn wait_for(&mut self, needle: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no `{needle}` in server output ({e}):\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.try_iter());
        (status, self.seen.join("\n"))
    }
}

/// Runs a command that must succeed; its stderr is the failure message.
pub fn run_ok(cmd: Command, args: &[&str]) -> Output {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A test that fails mid-way must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).output().unwrap()
}

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

#[tokio::test]
async fn check_config_hides_secrets_and_keygen_makes_keys() {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = secret_env("postgres://u:hunter2pw@localhost/db")
        .into_iter()
        .collect();
    let out = run_ok(command(dir.path(), &env), &["check-config"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("per_second = 50"));
    assert!(text.contains("<redacted>"));
    for needle in [SECRET, ROTATED_SECRET, HASH_KEY, &KEY_A[3..], "hunter2pw"] {
        assert!(!text.contains(needle), "check-config prints {needle}");
    }

    let out = run(command(dir.path(), &[]), &["keygen"]);
    let key = String::from_utf8(out.stdout).unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    let again = run(command(dir.path(), &[]), &["keygen"]);
    assert_ne!(key, String::from_utf8(again.stdout).unwrap());

    // A missing secret stops start-up naming the variable.
    let partial: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "IMGGO_HASH_KEY")
        .cloned()
        .collect();
    let out = run(command(dir.path(), &partial), &["serve"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("IMGGO_HASH_KEY") && err.contains("init"),
        "{err}"
    );

    // A bad setting names its key.
    let mut bad = command(dir.path(), &env);
    bad.env("IMGGO__RATE_LIMIT__PER_SECOND", "0");
    let out = run(bad, &["check-config"]);
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("rate_limit.per_second"));
}

#[tokio::test]
async fn init_writes_a_private_env_once_and_commands_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(command(dir.path(), &[]), &["init"]);
    let env_file = dir.path().join(".env");
    let contents = std::fs::read_to_string(&env_file).unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    for line in contents.lines().filter(|l| !l.starts_with('#')) {
        let value = line.split_once('=').unwrap().1.trim_matches('\'');
        assert!(!printed.contains(value), "init printed key material");
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let again = run(command(dir.path(), &[]), &["init"]);
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        contents,
        "not overwritten"
    );

    // `sign` picks the secret up from ./.env.
    let mut child = command(dir.path(), &[])
        .arg("sign")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let secret = contents
        .lines()
        .find_map(|l| l.strip_prefix("IMGGO_WEBHOOK_SECRETS="))
        .unwrap()
        .trim_matches('\'');
    let expected = format!("sha256={}", hmac_hex(secret, b"{}"));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), expected);
}

/// The value of one sample in Prometheus text output (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

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
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE job_id = $1")
        .bind(&job)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn dotenv_is_read_first_literally_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    // IMGGO_CONFIG in .env names the settings file, and `$` stays literal
    // inside single quotes.
    std::fs::write(
        dir.path().join("imggo.toml"),
        "[rate_limit]\nper_second = 7\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "IMGGO_CONFIG=imggo.toml\nIMGGO_WEBHOOK_SECRETS='whsec_abc$HOME_1234567890'\n",
    )
    .unwrap();
    let others: Vec<(String, String)> = secret_env("postgres://localhost/x")
        .into_iter()
        .filter(|(k, _)| k != "IMGGO_WEBHOOK_SECRETS")
        .collect();
    let out = run(command(dir.path(), &others), &["check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("per_second = 7"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sign = command(dir.path(), &[]);
    sign.arg("sign")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = sign.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    let signed = child.wait_with_output().unwrap();
    let expected = format!("sha256={}", hmac_hex("whsec_abc$HOME_1234567890", b"{}"));
    assert_eq!(String::from_utf8(signed.stdout).unwrap().trim(), expected);

    // A malformed line stops every command, names the line, quotes nothing.
    std::fs::write(
        dir.path().join(".env"),
        "# comment\nIMGGO_HASH_KEY=abc\nIMGGO_WEBHOOK_SECRETS=whsec_TOPSECRET_1234 extra\n",
    )
    .unwrap();
    let out = run(command(dir.path(), &[]), &["keygen"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "the command must not run");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 3"), "{err}");
    assert!(!err.contains("TOPSECRET"), "{err}");
}

#[test]
fn start_up_gives_up_on_an_unreachable_database_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let url = format!(
        "postgres://postgres:hunter2pw@127.0.0.1:{}/imggo",
        free_port()
    );
    let mut env: Vec<(String, String)> = secret_env(&url).into_iter().collect();
    env.push(("IMGGO__DATABASE__CONNECT_TIMEOUT".into(), "1s".into()));
    env.push((
        "IMGGO__SERVER__BIND".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    env.push((
        "IMGGO__ADMIN__BIND".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    let start = std::time::Instant::now();
    let out = run(command(dir.path(), &env), &["serve"]);
    assert!(!out.status.success());
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("hunter2pw"), "the password leaked: {err}");
}
