//! The README walked a second time (issue 26): which store a command
//! works on, Ctrl-C while the server waits for its database, what an
//! unreachable database is reported as, and durations as the docs write
//! them. Each runs the binary as a user would.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::helpers::*;
use crate::operator::{isolated, run, secrets, stderr, stdout};

/// The `store:` lines of a command's stderr.
fn store_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("store:")).collect()
}

/// Commands that read or write the store, runnable on an empty one.
const STORE_COMMANDS: &[&[&str]] = &[
    &["migrate"],
    &["show", "no-such-job"],
    &["purge", "--dry-run"],
    &["reencrypt"],
    &["rejected", "list"],
    &["token", "list"],
    &["export"],
    &["forget", "nobody@example.com"],
    &["audit"],
];

#[tokio::test]
async fn every_command_on_the_store_names_it_once_on_stderr_and_nothing_secret() {
    let dir = tempfile::tempdir().unwrap();
    for args in STORE_COMMANDS {
        let out = run(isolated(dir.path(), &secrets()), args);
        let err = stderr(&out);
        assert_eq!(
            store_lines(&err),
            ["store: sqlite ./data/imggo.db"],
            "{args:?}: {err}"
        );
    }

    let db = TestDb::new().await;
    let url = format!(
        "postgres://postgres:hunter2pw@127.0.0.1:5432/{}?application_name=walk",
        db.name
    );
    let mut env = secrets();
    env.push(("DATABASE_URL", &url));
    let expected = format!("store: postgres 127.0.0.1:5432/{}", db.name);
    for args in STORE_COMMANDS {
        let out = run(isolated(dir.path(), &env), args);
        let err = stderr(&out);
        assert_eq!(store_lines(&err), [expected.as_str()], "{args:?}: {err}");
        for secret in ["hunter2pw", "postgres@", "postgres://", "application_name"] {
            assert!(!err.contains(secret), "{args:?} showed {secret}: {err}");
        }
        assert!(!stdout(&out).contains("hunter2pw"), "{args:?}");
    }

    // `serve` says it in its log before it waits for the database.
    let mut server_env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    server_env.extend([
        ("IMGGO__SERVER__BIND".into(), "127.0.0.1:0".into()),
        ("IMGGO__ADMIN__BIND".into(), "127.0.0.1:0".into()),
    ]);
    let mut server = Server::start(command(dir.path(), &server_env));
    server.wait_for("listening");
    let (_, log) = server.terminate();
    let line = log
        .lines()
        .find(|l| l.contains("connecting to the store"))
        .unwrap_or_else(|| panic!("no store line: {log}"));
    assert!(
        line.contains(&format!(
            "\"store\":\"postgres 127.0.0.1:5432/{}\"",
            db.name
        )),
        "{line}"
    );
    assert!(!log.contains("hunter2pw"));
}

/// `serve` against a port nothing listens on, waiting up to a minute (no
/// spool: with one it would serve from it at once).
fn waiting_server(dir: &std::path::Path) -> Server {
    let url = format!("postgres://postgres@127.0.0.1:{}/imggo", free_port());
    let mut env: Vec<(String, String)> = secret_env(&url).into_iter().collect();
    env.extend([
        ("IMGGO__SPOOL__PATH".into(), String::new()),
        ("IMGGO__DATABASE__CONNECT_TIMEOUT".into(), "60s".into()),
        ("IMGGO__SERVER__BIND".into(), "127.0.0.1:0".into()),
        ("IMGGO__ADMIN__BIND".into(), "127.0.0.1:0".into()),
    ]);
    let mut server = Server::start(command(dir, &env));
    server.wait_for("database not reachable yet");
    server
}

#[test]
fn a_signal_ends_the_wait_for_the_database_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let mut server = waiting_server(dir.path());
        let sent = Instant::now();
        let ended = server.signal_and_wait(signal, Duration::from_secs(2));
        let (status, log) =
            ended.unwrap_or_else(|| panic!("{signal}: still waiting 2 s after the signal"));
        assert!(sent.elapsed() < Duration::from_secs(2), "{signal}");
        assert!(!status.success(), "{signal}: {log}");
        assert!(
            log.contains("stopped by a signal while waiting for the database"),
            "{signal}: {log}"
        );
    }
}

#[test]
fn an_unreachable_database_is_reported_once_with_its_cause_and_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres:hunter2pw@127.0.0.1:{}/imggo",
        free_port()
    );
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("IMGGO__DATABASE__CONNECT_TIMEOUT", "1s"),
    ];
    let out = run(isolated(dir.path(), &env), &["migrate"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    let line = errors[0];
    assert_eq!(line.matches("connection refused").count(), 1, "{line}");
    assert!(line.contains("check that Postgres is running"), "{line}");
    assert!(line.contains("DATABASE_URL"), "{line}");
    assert!(!line.contains("pool timed out"), "{line}");
    assert!(!err.contains("hunter2pw"), "{err}");
}

#[test]
fn check_config_prints_every_duration_in_its_largest_whole_unit() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(isolated(dir.path(), &secrets()), &["check-config"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    // audit.max_age and api.request_timeout, as default.toml writes them.
    assert!(text.contains("max_age = \"400d\""), "{text}");
    assert!(text.contains("request_timeout = \"35s\""), "{text}");
    for unit in ["year", "month", "days", "1day"] {
        assert!(!text.contains(unit), "{unit}: {text}");
    }
    let mut env = secrets();
    env.extend([
        ("IMGGO__AUDIT__MAX_AGE", "36h"),
        ("IMGGO__API__REQUEST_TIMEOUT", "2500ms"),
        ("IMGGO__SERVER__REQUEST_TIMEOUT", "1500ms"),
        ("IMGGO__RETENTION__MAX_AGE", "90s"),
        ("IMGGO__RETENTION__PURGE_INTERVAL", "60m"),
    ]);
    let text = stdout(&run(isolated(dir.path(), &env), &["check-config"]));
    for line in [
        "max_age = \"36h\"",
        "request_timeout = \"2500ms\"",
        "request_timeout = \"1500ms\"",
        "max_age = \"90s\"",
        "purge_interval = \"1h\"",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

#[test]
fn a_bare_number_for_a_duration_is_refused_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = secrets();
    env.push(("IMGGO__RETENTION__MAX_AGE", "30"));
    let out = run(isolated(dir.path(), &env), &["check-config"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    for part in ["retention.max_age", "IMGGO__RETENTION__MAX_AGE", "e.g. 30d"] {
        assert!(err.contains(part), "{part}: {err}");
    }

    // The same in a settings file, where TOML makes it an integer.
    let file = dir.path().join("imggo.toml");
    std::fs::write(&file, "[audit]\nmax_age = 400\n").unwrap();
    let out = run(
        isolated(dir.path(), &secrets()),
        &["--config", file.to_str().unwrap(), "check-config"],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    for part in ["audit.max_age", "e.g. 400d", "imggo.toml"] {
        assert!(err.contains(part), "{part}: {err}");
    }
}

async fn database_exists(admin: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await
        .unwrap()
}

/// Runs share a Postgres: a run drops the databases it made and, of the
/// others, only leftovers whose name says they are over a day old.
#[tokio::test]
async fn only_day_old_test_databases_of_any_run_are_swept() {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let id = || uuid::Uuid::new_v4().simple().to_string();
    let another_runs = format!("imggo_test_{now}_0abc0def_{}", id());
    let stale = format!(
        "imggo_test_{}_0abc0def_{}",
        now - 2 * STALE_AFTER_SECS,
        id()
    );
    let unlike_ours = format!("imggo_test_{}", id());
    assert!(test_db_name().starts_with(run_prefix()));
    assert!(test_db_name().len() <= 63);
    for name in [&another_runs, &stale, &unlike_ours] {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    drop_stale_test_databases(&mut admin).await;
    assert!(!database_exists(&mut admin, &stale).await);
    assert!(database_exists(&mut admin, &another_runs).await);
    assert!(database_exists(&mut admin, &unlike_ours).await);
    for name in [&another_runs, &unlike_ours] {
        sqlx::query(&format!("DROP DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}
