//! Nothing of `DATABASE_URL` but its host, port and database name reaches
//! a log line or a message: not the user, not the password, no query
//! parameter (known to sqlx or not), on Postgres and SQLite, when start-up
//! works and when it is refused.

use crate::helpers::*;

/// Values that must never be printed, each in its own parameter.
const SENTINELS: &[&str] = &[
    "pw_sentinel_a1",
    "leak_sslpassword_b2",
    "leak_password_c3",
    "leak_appname_d4",
    "leak_options_e5",
    "leak_unknown_f6",
    "leak_unknown_key_g7",
    "leak_bracket_h8",
];

/// `base` (a Postgres URL) with a password and secret-bearing parameters.
fn with_secrets(base: &str, user: Option<&str>) -> String {
    let mut url = url::Url::parse(base).unwrap();
    if let Some(user) = user {
        url.set_username(user).unwrap();
    }
    url.set_password(Some("pw_sentinel_a1")).unwrap();
    url.query_pairs_mut()
        .append_pair("sslmode", "disable")
        .append_pair("sslpassword", "leak_sslpassword_b2")
        .append_pair("password", "leak_password_c3")
        .append_pair("application_name", "leak_appname_d4")
        .append_pair("options", "-c search_path=public,leak_options_e5")
        .append_pair("frobnicate", "leak_unknown_f6")
        .append_pair("leak_unknown_key_g7", "1")
        .append_pair("options[statement_timeout]", "0")
        .append_pair("sslkey_passphrase", "leak_bracket_h8");
    url.into()
}

fn assert_clean(what: &str, text: &str, also: &[&str]) {
    for s in SENTINELS.iter().chain(also) {
        assert!(!text.contains(s), "{what} shows `{s}`:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shows_only_host_port_and_database_of_a_postgres_url() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut env = serve_env(&db, port, admin);
    let url = with_secrets(&db.url, None);
    env.retain(|(k, _)| k != "DATABASE_URL");
    env.push(("DATABASE_URL".into(), url));

    let checked = run(command(dir.path(), &env), &["check-config"]);
    assert!(checked.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_clean("check-config", &printed, &[]);
    assert!(printed.contains(&format!("/{}", db.name)), "{printed}");

    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    // Start-up works: the parameters sqlx reads are used, the others ignored.
    let job = new_job_id();
    let body = prod_body(&job);
    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let sig = prod_signature(&body);
    let res = post_from(&reqwest::Client::new(), &url, body, Some(&sig)).await;
    assert_eq!(res.status(), 200);
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert_clean("serve", &logs, &[]);
    // Where it runs is still said: host, port and database.
    assert!(
        logs.contains(&format!("127.0.0.1:5432/{}", db.name)),
        "{logs}"
    );
    assert!(
        logs.contains("ignored"),
        "the ignored parameters are counted: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_names_neither_user_nor_parameters() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env: Vec<(String, String)> = secret_env(&db.url).into_iter().collect();
    env.retain(|(k, _)| k != "DATABASE_URL");
    // No such role: Postgres answers `role "…" does not exist`.
    let url = with_secrets(&db.url, Some("ghost_user_z9"));
    env.push(("DATABASE_URL".into(), url));
    let started = std::time::Instant::now();
    let out = run(command(dir.path(), &env), &["migrate"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert_clean("migrate", &stderr, &["ghost_user_z9"]);
    assert_clean(
        "migrate stdout",
        &String::from_utf8_lossy(&out.stdout),
        &["ghost_user_z9"],
    );
    // Still a useful message, and no wait for what waiting cannot fix.
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("28000"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn sqlite_urls_show_their_file_and_no_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let mut env: Vec<(String, String)> = secret_env("").into_iter().collect();
    env.retain(|(k, _)| k != "DATABASE_URL");
    let file = dir.path().join("x.db");
    // A parameter sqlx-sqlite refuses, value and all.
    let refused = format!(
        "sqlite://{}?mode=leak_sqlite_mode_j1&leak_unknown_key_g7=leak_unknown_f6",
        file.display()
    );
    let mut bad = env.clone();
    bad.push(("DATABASE_URL".into(), refused));
    let out = run(command(dir.path(), &bad), &["migrate"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert_clean("migrate", &stderr, &["leak_sqlite_mode_j1"]);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    // A good one works, and its parameters are not shown.
    let good = format!("sqlite://{}?mode=rwc", file.display());
    env.push(("DATABASE_URL".into(), good));
    let out = run(command(dir.path(), &env), &["check-config"]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains("mode=rwc"), "{printed}");
    assert!(printed.contains(&file.display().to_string()), "{printed}");
}
