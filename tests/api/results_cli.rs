//! The Results API commands through the real binary, as an operator runs
//! them beside `serve`: token create/list/revoke, export, forget, show and
//! audit; and what the logs never contain (tokens, erased values).

use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::*;

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `cmd` with `input` on its stdin; its output, collected.
fn with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    use std::process::Stdio;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
    child.wait_with_output().unwrap()
}

async fn cli_round_trip(db_url: String, dir: &std::path::Path) {
    let (port, admin, api) = (free_port(), free_port(), free_port());
    let mut env: Vec<(String, String)> = secret_env(&db_url).into_iter().collect();
    env.extend([
        ("IMGGO__SERVER__BIND".into(), format!("127.0.0.1:{port}")),
        ("IMGGO__ADMIN__BIND".into(), format!("127.0.0.1:{admin}")),
        ("IMGGO__API__BIND".into(), format!("127.0.0.1:{api}")),
    ]);
    let cli = |args: &[&str]| -> Command {
        let mut cmd = command(dir, &env);
        cmd.args(args);
        cmd
    };
    let mut server = Server::start(command(dir, &env));
    server.wait_for("\"api\":\"127.0.0.1:");

    // token create prints the token alone; a second active NAME is refused.
    let out = run_ok(
        cli(&[]),
        &[
            "token",
            "create",
            "etl",
            "--scope",
            "events:read",
            "--scope",
            "events:delete",
        ],
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("igr_") && token.len() > 40, "{token}");
    let again = run(
        cli(&[]),
        &["token", "create", "etl", "--scope", "events:read"],
    );
    assert_eq!(again.status.code(), Some(1));
    let bad = run(
        cli(&[]),
        &["token", "create", "x", "--scope", "events:write"],
    );
    assert!(!bad.status.success());
    run_ok(
        cli(&[]),
        &[
            "token",
            "create",
            "reader",
            "--scope",
            "events:read,events:read",
        ],
    );
    let listed = run_ok(cli(&[]), &["token", "list"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&token));
    let listed = lines(&listed.stdout);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "etl");
    assert_eq!(listed[0]["scopes"], json!(["events:read", "events:delete"]));
    assert!(listed[0]["revoked_at"].is_null());
    assert_eq!(listed[1]["scopes"], json!(["events:read"]));

    // Deliveries, read through the API with the new token.
    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let client = reqwest::Client::new();
    let jobs = [new_job_id(), new_job_id()];
    for (j, email) in jobs.iter().zip(["carol@example.com", "dave@example.com"]) {
        let body = serde_json::to_vec(&json!({"event": "job.succeeded", "job_id": j,
            "manifest": {"customer_email": email}}))
        .unwrap();
        let sig = prod_signature(&body);
        assert_eq!(
            post_from(&client, &url, body, Some(&sig)).await.status(),
            200
        );
    }
    let api_url = format!("http://127.0.0.1:{api}/v1/events?wait=10&limit=1");
    let res = client
        .get(&api_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["events"][0]["job_id"], jobs[0].as_str());

    // export: the same event shape, in feed order, resumable by cursor.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let exported = loop {
        let out = run_ok(cli(&[]), &["export"]);
        let exported = lines(&out.stdout);
        if exported.len() == 2 || std::time::Instant::now() > deadline {
            break exported;
        }
    };
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0]["cursor"], page["events"][0]["cursor"]);
    assert_eq!(
        exported[1]["payload"]["manifest"]["customer_email"],
        "dave@example.com"
    );
    let cursor = exported[0]["cursor"].as_str().unwrap();
    let rest = lines(&run_ok(cli(&[]), &["export", "--after", cursor, "--limit", "5"]).stdout);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["job_id"], jobs[1].as_str());
    let bad = run(cli(&[]), &["export", "--after", "garbage"]);
    assert!(!bad.status.success());

    // show, then forget (the value from stdin for one of them).
    run_ok(cli(&[]), &["show", &jobs[0]]);
    let out = run_ok(cli(&[]), &["forget", "Carol@Example.com"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deleted 1 event(s)"
    );
    let out = with_stdin(cli(&["forget", "-"]), b"dave@example.com\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deleted 1 event(s)"
    );
    assert_eq!(run(cli(&[]), &["show", &jobs[0]]).status.code(), Some(1));
    // Two lines on stdin are two values, not one: refused, nothing erased.
    let out = with_stdin(cli(&["forget", "-"]), b"x@y.z\nsecond@line\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("one value"));

    // A reader that stops early (`| head -1`) ends the command quietly,
    // even with stderr on the same closed pipe, and what it read is audited.
    let mut early = cli(&["audit"]);
    early
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = early.spawn().unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    assert!(child.wait().unwrap().success(), "audit into a closed pipe");

    // Scopes as a list after one --scope.
    let out = run_ok(
        cli(&[]),
        &[
            "token",
            "create",
            "both",
            "--scope",
            "events:read",
            "events:delete",
        ],
    );
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("igr_"));
    let listed = lines(&run_ok(cli(&[]), &["token", "list"]).stdout);
    let both = listed.iter().find(|t| t["name"] == "both").unwrap();
    assert_eq!(both["scopes"], json!(["events:read", "events:delete"]));

    // revoke: the very next request is refused; unknown names exit 1.
    run_ok(cli(&[]), &["token", "revoke", "etl"]);
    let res = client
        .get(&api_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        run(cli(&[]), &["token", "revoke", "etl"]).status.code(),
        Some(1)
    );
    assert_eq!(
        run(cli(&[]), &["token", "revoke", "nobody"]).status.code(),
        Some(1)
    );

    // The audit trail, oldest first, with every audited action.
    let audit = lines(&run_ok(cli(&[]), &["audit", "--since", "1h"]).stdout);
    let actions: Vec<(String, String)> = audit
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().into(),
                r["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    for expected in [
        ("cli", "token.create"),
        ("token:etl", "feed.read"),
        ("cli", "feed.read"),
        ("cli", "job.read"),
        ("cli", "erasure"),
        ("cli", "token.revoke"),
    ] {
        assert!(
            actions.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {actions:?}"
        );
    }
    let all = serde_json::to_string(&audit).unwrap().to_lowercase();
    assert!(
        !all.contains("carol") && !all.contains("dave") && !all.contains(&token.to_lowercase())
    );
    for r in &audit {
        assert_eq!(r.as_object().unwrap().len(), 7, "{r}");
    }
    assert!(lines(&run_ok(cli(&[]), &["audit", "--since", "1ms"]).stdout).len() < audit.len());

    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains(&token), "token in logs");
    let lower = logs.to_lowercase();
    assert!(
        !lower.contains("carol@") && !lower.contains("dave@"),
        "personal data in logs"
    );
    assert!(logs.contains(r#""route":"/v1/events""#), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_beside_serve_on_postgres() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    cli_round_trip(db.url.clone(), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_beside_serve_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    cli_round_trip(sqlite_url(dir.path()), dir.path()).await;
}
