//! What an operator meets running the binary: `init` and the Compose file,
//! errors that name their fix, and what the service says it runs on. Each
//! command runs in an empty temporary directory with an empty environment
//! (no CARGO, NO_COLOR or IMGGO_* leaking in from the test runner), given
//! only what the test names.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection as _, PgConnection};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_imggo-receiver");

/// The binary in `dir` with nothing but `env` in its environment.
pub(crate) fn isolated(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    cmd
}

pub(crate) fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The secrets every command needs, without DATABASE_URL.
pub(crate) fn secrets() -> Vec<(&'static str, &'static str)> {
    vec![
        ("IMGGO_WEBHOOK_SECRETS", SECRET),
        ("IMGGO_ENCRYPTION_KEYS", KEY_A),
        ("IMGGO_HASH_KEY", HASH_KEY),
    ]
}

/// NAME=value lines of a dotenv file (comments and blanks skipped).
fn dotenv(path: &Path) -> Vec<(String, String)> {
    dotenvy::from_path_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Variables docker-compose.yml interpolates without a default: `${X}`,
/// `${X:?msg}` and `${X?msg}` (not `${X:-d}`, `${X-d}` or `$${X}`).
fn required_by_compose(text: &str) -> BTreeSet<String> {
    let mut required = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let escaped = rest[..i].ends_with('$');
        let after = &rest[i + 2..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let (name, modifier) = after.split_at(end);
        let has_default = modifier.starts_with(":-") || modifier.starts_with('-');
        if !escaped && !name.is_empty() && !has_default {
            required.insert(name.to_owned());
        }
        rest = after;
    }
    required
}

#[test]
fn init_writes_everything_docker_compose_needs() {
    let compose =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
            .unwrap();
    assert!(
        compose.contains("env_file: .env"),
        "the receiver reads the .env init writes"
    );
    let required = required_by_compose(&compose);
    assert!(required.contains("POSTGRES_PASSWORD"), "{required:?}");

    let dir = tempfile::tempdir().unwrap();
    let out = run(isolated(dir.path(), &[]), &["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written: HashMap<String, String> = dotenv(&dir.path().join(".env")).into_iter().collect();
    for name in &required {
        let value = written.get(name).map(String::as_str).unwrap_or_default();
        assert!(!value.is_empty(), "init does not write {name}");
    }
    // Random, and not the example's placeholder.
    let password = &written["POSTGRES_PASSWORD"];
    assert!(password.len() >= 32 && password.bytes().all(|b| b.is_ascii_hexdigit()));
    // A local run with that .env keeps the embedded store: compose builds
    // DATABASE_URL itself, so .env must not point at its `postgres` host.
    assert!(!written.contains_key("DATABASE_URL"));
    let checked = run(isolated(dir.path(), &[]), &["check-config"]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(stdout(&checked).contains("sqlite://data/imggo.db (default)"));

    // .env.example lists exactly what init writes.
    let example: BTreeSet<String> = dotenv(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.env.example"
    )))
    .into_iter()
    .map(|(k, _)| k)
    .collect();
    let names: BTreeSet<String> = written.keys().cloned().collect();
    assert_eq!(example, names, ".env.example and init disagree");
}

#[test]
fn init_values_copy_as_they_stand_and_its_last_line_is_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(isolated(dir.path(), &[]), &["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.split_once('=').unwrap();
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+/=:".contains(&b)),
            "{line:?} needs quoting"
        );
    }
    // The value as it stands in the file is the secret `sign` uses.
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("IMGGO_WEBHOOK_SECRETS="))
        .unwrap();
    let mut child = isolated(dir.path(), &[])
        .arg("sign")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    let signed = child.wait_with_output().unwrap();
    assert_eq!(
        stdout(&signed).trim(),
        format!("sha256={}", hmac_hex(secret, b"{}"))
    );

    // Run directly: the program as typed.
    let last = |out: &Output| stdout(out).lines().last().unwrap_or_default().to_owned();
    assert_eq!(last(&out), format!("next: {BIN}"));
    // Run by cargo (which sets CARGO): the cargo command for this profile.
    let again = tempfile::tempdir().unwrap();
    let out = run(
        isolated(again.path(), &[("CARGO", "/usr/bin/cargo")]),
        &["init"],
    );
    let expected = if BIN.contains("/release/") {
        "next: cargo run --release"
    } else {
        "next: cargo run"
    };
    assert_eq!(last(&out), expected);
}

#[test]
fn migrate_gives_up_at_once_on_what_waiting_cannot_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = with_database(
        &admin_url(),
        &format!("imggo_missing_{}", uuid::Uuid::new_v4().simple()),
    );
    let no_role = "postgres://imggo_no_such_role:hunter2pw@127.0.0.1:5432/postgres";
    for (url, cause) in [
        (missing.as_str(), "does not exist"),
        (no_role, "check the user and password"),
    ] {
        let started = Instant::now();
        // The default connect_timeout (30s) stays: nothing may wait for it.
        let out = run(isolated(dir.path(), &[("DATABASE_URL", url)]), &["migrate"]);
        let elapsed = started.elapsed();
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        // The store it tried, then one error line: no retries.
        assert_eq!(lines.len(), 2, "one line, no retries: {err}");
        assert!(lines[0].starts_with("store: postgres "), "{err}");
        let lines = &lines[1..];
        assert!(lines[0].starts_with("error: "), "{err}");
        assert!(lines[0].contains("DATABASE_URL"), "{err}");
        assert!(lines[0].contains(cause), "{err}");
        assert!(!err.contains("hunter2pw"), "the password leaked: {err}");
    }
}

#[tokio::test]
async fn commands_before_any_migration_say_so_and_create_nothing() {
    let no_schema = |out: &Output| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("no schema"), "{err}");
        assert!(err.contains("imggo-receiver migrate"), "{err}");
        // The store it looked at, then the one error line.
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(err.starts_with("store: "), "{err}");
    };
    let commands: [&[&str]; 4] = [
        &["show", "job-1"],
        &["purge"],
        &["purge", "--dry-run"],
        &["reencrypt"],
    ];

    // The embedded store: no ./data/imggo.db appears.
    let dir = tempfile::tempdir().unwrap();
    for args in commands {
        no_schema(&run(isolated(dir.path(), &secrets()), args));
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "created {left:?}");

    // Postgres: an empty database stays empty.
    let name = test_db_name();
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = with_database(&admin_url(), &name);
    let mut env: Vec<(&str, &str)> = secrets();
    env.push(("DATABASE_URL", &url));
    for args in commands {
        no_schema(&run(isolated(dir.path(), &env), args));
    }
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(tables, 0);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[test]
fn a_real_secret_file_wins_over_dotenv_and_every_missing_secret_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "IMGGO_WEBHOOK_SECRETS=whsec_set_by_dotenv_0000000000\n",
    )
    .unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, "whsec_from_the_real_file_00000\n").unwrap();
    let sign = |env: &[(&str, &str)]| {
        let mut child = isolated(dir.path(), env)
            .arg("sign")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"{}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = sign(&[("IMGGO_WEBHOOK_SECRETS_FILE", secret_file.to_str().unwrap())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "sha256={}",
            hmac_hex("whsec_from_the_real_file_00000", b"{}")
        )
    );

    // Both forms in .env itself stay a mistake.
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "IMGGO_WEBHOOK_SECRETS=whsec_set_by_dotenv_0000000000\nIMGGO_WEBHOOK_SECRETS_FILE={}\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let out = sign(&[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("only one"), "{}", stderr(&out));

    // Nothing set: one message naming all three, at once.
    let empty = tempfile::tempdir().unwrap();
    let out = run(
        isolated(empty.path(), &[("IMGGO_HASH_KEY", "c2hvcnQ=")]),
        &["check-config"],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    for name in [
        "IMGGO_WEBHOOK_SECRETS",
        "IMGGO_ENCRYPTION_KEYS",
        "IMGGO_HASH_KEY",
    ] {
        assert!(err.contains(name), "{name}: {err}");
    }
    assert!(!err.contains("c2hvcnQ"), "a value leaked: {err}");
}

#[test]
fn check_config_and_purge_say_what_they_run_on_as_default_toml_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(isolated(dir.path(), &secrets()), &["check-config"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("sqlite://data/imggo.db (default)"), "{text}");
    for line in [
        "max_timestamp_age = \"24h\"",
        "max_age = \"30d\"",
        "shutdown_timeout = \"25s\"",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }

    let mut env = secrets();
    env.push(("DATABASE_URL", "postgres://imggo:hunter2pw@db:5432/imggo"));
    let text = stdout(&run(isolated(dir.path(), &env), &["check-config"]));
    // Host, port and database only: not the user either (issue 21).
    assert!(text.contains("postgres://db:5432/imggo"), "{text}");
    assert!(!text.contains("hunter2pw"));
    assert!(
        !text.contains("imggo@") && !text.contains("imggo:<"),
        "{text}"
    );
    assert!(!text.contains("sqlite://"), "{text}");

    let migrated = run(isolated(dir.path(), &secrets()), &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let out = run(isolated(dir.path(), &secrets()), &["purge", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        "would delete 0 event(s) older than 30d (dry run)\n\
         would delete 0 quarantined delivery(ies) older than 30d (dry run)\n\
         would delete 0 audit record(s) older than 400d (dry run)\n"
    );
}

#[test]
fn the_start_up_line_names_version_store_and_listeners_and_each_drain_its_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let public = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin}");
    let mut env: Vec<(&str, &str)> = secrets();
    env.extend([
        ("IMGGO__SERVER__BIND", public.as_str()),
        ("IMGGO__ADMIN__BIND", admin.as_str()),
        ("IMGGO__API__BIND", ""),
    ]);
    let mut server = Server::start(isolated(dir.path(), &env));
    server.wait_for("listening");
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let listening = lines.iter().find(|l| l["message"] == "listening").unwrap();
    assert_eq!(listening["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(listening["store"], "sqlite://data/imggo.db (default)");
    assert_eq!(listening["public"], public.as_str());
    assert_eq!(listening["admin"], admin.as_str());
    let mut drained: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("draining"))
        })
        .map(|l| l["span"]["listener"].as_str().unwrap_or("?"))
        .collect();
    drained.sort_unstable();
    assert_eq!(drained, ["admin", "public"], "{logs}");
}

/// Runs `purge --dry-run` (which logs one line) with pretty logs, its
/// stderr a terminal when `tty`; returns what it wrote there.
fn pretty_stderr(dir: &Path, tty: bool, no_color: bool) -> String {
    let mut env = secrets();
    env.push(("IMGGO__LOG__FORMAT", "pretty"));
    if no_color {
        env.push(("NO_COLOR", "1"));
    }
    let mut cmd = isolated(dir, &env);
    cmd.args(["purge", "--dry-run"]).stdout(Stdio::null());
    if !tty {
        return stderr(&cmd.output().unwrap());
    }
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut child = cmd.stderr(Stdio::from(pty.slave)).spawn().unwrap();
    // Dropping the Command closes our copy of the terminal's far end, so
    // the read below ends when the child has exited.
    drop(cmd);
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut master = std::fs::File::from(pty.master);
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    // A terminal whose far end is closed reads as EIO once drained.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn pretty_logs_are_coloured_only_on_a_terminal_without_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = run(isolated(dir.path(), &secrets()), &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));

    let piped = pretty_stderr(dir.path(), false, false);
    assert!(piped.contains("retention dry run"), "{piped}");
    assert!(
        !piped.contains('\u{1b}'),
        "colour codes in a pipe: {piped:?}"
    );

    let terminal = pretty_stderr(dir.path(), true, false);
    assert!(terminal.contains("retention dry run"), "{terminal:?}");
    assert!(terminal.contains("\u{1b}["), "no colour on a terminal");

    let no_color = pretty_stderr(dir.path(), true, true);
    assert!(no_color.contains("retention dry run"), "{no_color:?}");
    assert!(
        !no_color.contains('\u{1b}'),
        "NO_COLOR ignored: {no_color:?}"
    );
}
