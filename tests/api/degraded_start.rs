//! A replica that starts while Postgres is down (CONTRACT §8): with a
//! spool it serves (one warning, `/readyz` 200 spooling, deliveries
//! acknowledged into the spool, the Results API 503), then migrates and
//! drains once Postgres answers. Without a spool, and for every other
//! command, start-up fails fast naming DATABASE_URL.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// A password trust auth ignores: it must never be printed.
const PASSWORD: &str = "hunter2pw_degraded";

/// `url` (no password) with [`PASSWORD`] in it.
fn with_password(url: &str) -> String {
    url.replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1)
}

/// Whether migrations have been applied to `db` (seen directly, not
/// through the proxy).
async fn migrated(db: &TestDb) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Runs `cmd args`, which must exit within `within`: a server that starts
/// where it should have stopped fails the test instead of hanging it.
fn run_within(
    mut cmd: std::process::Command,
    args: &[&str],
    within: Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{args:?} still running after {within:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_during_an_outage_serves_from_the_spool_then_migrates_and_drains() {
    let db = TestDb::unmigrated().await;
    let proxy = Proxy::start(upstream_addr()).await;
    proxy.set_up(false);
    let dir = tempfile::tempdir().unwrap();
    let (port, admin, api) = (free_port(), free_port(), free_port());
    let through_proxy = with_password(&via_proxy(&db.url, proxy.addr));
    let mut env: Vec<(String, String)> = secret_env(&through_proxy).into_iter().collect();
    env.extend([
        ("IMGGO__SERVER__BIND".into(), format!("127.0.0.1:{port}")),
        ("IMGGO__ADMIN__BIND".into(), format!("127.0.0.1:{admin}")),
        ("IMGGO__API__BIND".into(), format!("127.0.0.1:{api}")),
        (
            "IMGGO__SPOOL__PATH".into(),
            dir.path().join("spool.db").display().to_string(),
        ),
    ]);
    let started = Instant::now();
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "start-up waited {:?} for a database that is down",
        started.elapsed()
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let api_base = format!("http://127.0.0.1:{api}");

    let (status, ready) = json_of(client.get(format!("{base}/readyz")).send().await.unwrap()).await;
    assert_eq!(
        (status, &ready["spooling"]),
        (200, &Value::Bool(true)),
        "{ready}"
    );
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(!ready.to_string().contains(PASSWORD), "{ready}");

    // Acknowledged into the spool; the signature is still checked.
    let job = new_job_id();
    let body = prod_body(&job);
    let url = format!("{base}/webhooks/imggo");
    let res = post_from(&client, &url, body.clone(), Some(&prod_signature(&body))).await;
    let (status, answer) = json_of(res).await;
    assert_eq!((status, &answer["status"]), (200, &Value::from("received")));
    let forged = post_from(&client, &url, body.clone(), Some("sha256=00")).await;
    assert_eq!(forged.status(), 401);
    assert_eq!(
        spooled_rows(&dir.path().join("spool.db"), "spooled_events").await,
        1
    );

    // The Results API waits for the database, before any token is read.
    let res = client
        .get(format!("{api_base}/v1/jobs/{job}"))
        .bearer_auth("igr_not_looked_up")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    let text = res.text().await.unwrap();
    assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert!(answer["error"]["message"].is_string(), "{text}");
    assert_eq!(answer["error"]["code"], "unavailable", "{text}");
    assert!(!migrated(&db).await, "nothing reached Postgres yet");

    proxy.set_up(true);
    eventually("/readyz stops spooling", || async {
        let res = client.get(format!("{base}/readyz")).send().await.ok()?;
        let (status, body) = json_of(res).await;
        (status == 200 && body.get("spooling").is_none()).then_some(())
    })
    .await;
    assert!(migrated(&db).await);
    eventually("the spooled delivery is in Postgres", || async {
        (db.stored_job_ids().await == [job.clone()]).then_some(())
    })
    .await;

    // Served by the Results API, with a token made now that it can be.
    let direct: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "DATABASE_URL" => (k.clone(), db.url.clone()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let out = run_ok(
        command(dir.path(), &direct),
        &["token", "create", "reader", "--scope", "events:read"],
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let res = client
        .get(format!("{api_base}/v1/jobs/{job}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["job_id"], job.as_str(), "{body}");
    eventually("the spool emptied", || async {
        (spooled_rows(&dir.path().join("spool.db"), "spooled_events").await == 0).then_some(())
    })
    .await;

    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains(PASSWORD), "the password leaked: {logs}");
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("DATABASE_URL"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning about the database: {logs}");
    assert!(
        warnings[0].contains(&format!("{}/{}", proxy.addr, db.name)),
        "it names the host: {}",
        warnings[0]
    );
    let database_lines = logs
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| l.to_lowercase().contains("database") || l.contains("Postgres"))
        .count();
    assert_eq!(database_lines, 1, "nothing else warned about it: {logs}");
}

/// A database address that accepts connections and never answers (a
/// stalled network, a dropped route): start-up gives up its one attempt
/// after a bounded time and serves; a stop while degraded is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_does_not_hold_start_up_or_shutdown() {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("postgres://postgres:{PASSWORD}@{hole_addr}/imggo");
    let mut env: Vec<(String, String)> = secret_env(&url).into_iter().collect();
    env.extend([
        ("IMGGO__SERVER__BIND".into(), format!("127.0.0.1:{port}")),
        (
            "IMGGO__ADMIN__BIND".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "IMGGO__SPOOL__PATH".into(),
            dir.path().join("spool.db").display().to_string(),
        ),
    ]);
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    let client = reqwest::Client::new();
    let res = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    let (status, ready) = json_of(res).await;
    assert_eq!(
        (status, &ready["spooling"]),
        (200, &Value::Bool(true)),
        "{ready}"
    );
    let body = prod_body(&new_job_id());
    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let res = post_from(&client, &url, body.clone(), Some(&prod_signature(&body))).await;
    assert_eq!(res.status(), 200);

    let ended = server.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    let (status, logs) = ended.expect("still running 10 s after SIGTERM");
    assert!(status.success(), "{logs}");
    assert!(logs.contains("no answer within 3s"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spool_serve_and_every_other_command_fail_fast() {
    let db = TestDb::unmigrated().await;
    let proxy = Proxy::start(upstream_addr()).await;
    proxy.set_up(false);
    let dir = tempfile::tempdir().unwrap();
    let through_proxy = with_password(&via_proxy(&db.url, proxy.addr));
    let mut env: Vec<(String, String)> = secret_env(&through_proxy).into_iter().collect();
    env.extend([
        (
            "IMGGO__SERVER__BIND".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "IMGGO__ADMIN__BIND".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        ("IMGGO__DATABASE__CONNECT_TIMEOUT".into(), "2s".into()),
    ]);
    let no_spool = {
        let mut env = env.clone();
        env.push(("IMGGO__SPOOL__PATH".into(), String::new()));
        env
    };
    // `serve` without a spool, then the other commands with one: the spool
    // is the server's alone.
    let cases = [
        (&no_spool, &["serve"][..]),
        (&env, &["migrate"]),
        (&env, &["token", "list"]),
    ];
    for (env, args) in cases {
        let out = run_within(command(dir.path(), env), args, Duration::from_secs(15));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(err.contains("DATABASE_URL"), "{args:?}: {err}");
        assert!(
            !err.contains(PASSWORD),
            "{args:?} leaked the password: {err}"
        );
    }
    assert!(!migrated(&db).await);
}

/// A spool does not hide what waiting cannot fix: a database that does not
/// exist stops `serve` at once, as it always did.
#[test]
fn with_a_spool_a_missing_database_still_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let missing = with_database(
        &admin_url(),
        &format!("imggo_missing_{}", uuid::Uuid::new_v4().simple()),
    );
    let mut env: Vec<(String, String)> = secret_env(&missing).into_iter().collect();
    env.extend([
        (
            "IMGGO__SERVER__BIND".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "IMGGO__ADMIN__BIND".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "IMGGO__SPOOL__PATH".into(),
            dir.path().join("spool.db").display().to_string(),
        ),
    ]);
    let out = run_within(
        command(dir.path(), &env),
        &["serve"],
        Duration::from_secs(15),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("DATABASE_URL") && err.contains("does not exist"),
        "{err}"
    );
}
