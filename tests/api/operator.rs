//! What an operator meets running the binary: `init` and the Compose file,
//! errors that name their fix, and what the service says it runs on. Each
//! command runs in an empty temporary directory with an empty environment
//! (no CARGO, NO_COLOR or IMGGO_* leaking in from the test runner), given
//! only what the test names.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_imggo-receiver");

/// The binary in `dir` with nothing but `env` in its environment.
fn isolated(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    cmd
}

fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
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
