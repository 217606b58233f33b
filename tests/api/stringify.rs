//! Bodies exactly as ImgGo's sender writes them with `JSON.stringify`
//! (tests/corpus, made by tests/corpus/generate.js): lone surrogates,
//! every control character, 128 levels of nesting, magic keys, JS number
//! spellings. Each is accepted, and the real `show` command prints it back
//! byte for byte (CONTRACT §1); 129 levels are refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use imggo_receiver::json::Json;
use serde_json::Value;

use crate::helpers::*;

/// The one corpus body that must be refused.
const TOO_DEEP: &str = "too_deep_129";

/// (name, body) of every corpus file, in name order.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let bodies: Vec<_> = files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    assert!(
        bodies.len() >= 12 && bodies.iter().any(|(n, _)| n == TOO_DEEP),
        "corpus missing: run `node tests/corpus/generate.js`"
    );
    bodies
}

/// Posts every corpus body to `app`, then runs `show` (with `env`, from
/// `cwd`) for each accepted one and checks the line it prints.
async fn corpus_comes_back_byte_for_byte(app: &TestApp, env: &[(String, String)], cwd: &Path) {
    let bodies = corpus();
    for (name, body) in &bodies {
        let res = app.post_signed(body.clone()).await;
        let status = res.status();
        let answer: Value = res.json().await.unwrap();
        if name == TOO_DEEP {
            assert_eq!(status, 400, "{name}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_json", "{name}");
            assert_eq!(
                answer["error"]["message"], "the body nests deeper than 128 levels",
                "{name}"
            );
            continue;
        }
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["status"], "received", "{name}");
    }
    assert_eq!(app.rows().await, bodies.len() as i64 - 1);

    for (name, body) in bodies.iter().filter(|(n, _)| n != TOO_DEEP) {
        let tree = Json::parse(body).unwrap();
        let Some(Json::String(job_id)) = tree.get("job_id") else {
            panic!("{name} has no job_id")
        };
        let shown = run_ok(command(cwd, env), &["show", job_id.as_str()]);
        let stdout = String::from_utf8(shown.stdout).unwrap();
        let line = stdout
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{name}: no line: {stdout:?}"));
        assert!(!line.contains('\n'), "{name}: more than one line");
        let body_text = std::str::from_utf8(body).unwrap();
        let tail = format!(r#","payload":{body_text}}}"#);
        assert!(
            line.ends_with(&tail),
            "{name}: payload differs from the body sent\n sent: {body_text}\nshown: {line}"
        );
        // What precedes the payload is the envelope, as an object. (The
        // whole line is one level deeper than the body: 129 for deep_128.)
        let envelope = format!("{}}}", &line[..line.len() - tail.len()]);
        let envelope: Value = serde_json::from_str(&envelope).unwrap();
        assert_eq!(envelope["job_id"], job_id.as_str(), "{name}");
        assert_eq!(
            envelope["event"],
            tree.get("event").unwrap().to_string().trim_matches('"')
        );
        assert!(
            envelope["received_at"].as_str().unwrap().ends_with('Z'),
            "{name}"
        );
    }
}

fn fixed_timestamps(o: &mut Options) {
    // The corpus is committed with fixed timestamps.
    o.settings.webhook.max_timestamp_age = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_stringify_bodies_round_trip_on_postgres() {
    let app = spawn_app_with(fixed_timestamps).await;
    let env: Vec<_> = secret_env(&app.db.url).into_iter().collect();
    let cwd = tempfile::tempdir().unwrap();
    corpus_comes_back_byte_for_byte(&app, &env, cwd.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_stringify_bodies_round_trip_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let app = spawn_app_with(|o| {
        fixed_timestamps(o);
        o.database_url = Some(url.clone());
    })
    .await;
    let env: Vec<_> = secret_env(&url).into_iter().collect();
    corpus_comes_back_byte_for_byte(&app, &env, dir.path()).await;
}
