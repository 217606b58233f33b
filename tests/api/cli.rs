//! The other commands through the binary: `check-config`, `keygen`,
//! `init`, `.env` handling, and start-up against an unreachable database.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::*;

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
    // With a spool it would serve from it instead (tests/api/degraded_start.rs).
    env.push(("IMGGO__SPOOL__PATH".into(), String::new()));
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
