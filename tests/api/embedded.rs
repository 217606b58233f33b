//! The embedded SQLite store end to end: HTTP, zero-setup start, crashes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection as _, SqliteConnection};

use crate::helpers::*;

async fn sqlite_app(dir: &std::path::Path) -> TestApp {
    let url = sqlite_url(dir);
    spawn_app_with(|o| o.database_url = Some(url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_duplicate_and_concurrent_deliveries_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(dir.path()).await;
    assert_eq!(crate::helpers::backend_name(&app.store), "sqlite");
    let job = new_job_id();
    let body = prod_body(&job);
    let res = app.post_signed(body.clone()).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "received"})
    );
    let res = app.post_signed(body.clone()).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "duplicate"})
    );
    assert_eq!(
        app.stored_payload(&job, "job.succeeded").await,
        serde_json::from_slice::<Value>(&body).unwrap()
    );

    let other = new_job_id();
    let body = prod_body(&other);
    let sig = prod_signature(&body);
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let (url, body, sig) = (app.webhook_url(), body.clone(), sig.clone());
            tokio::spawn(async move {
                post_from(&reqwest::Client::new(), &url, body, Some(&sig))
                    .await
                    .status()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(app.rows().await, 2);
    assert_eq!(app.get_status("/readyz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_gives_503_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(dir.path()).await;
    assert_eq!(app.post_signed(prod_body("before")).await.status(), 200);

    // Another process (a backup tool, a stray sqlite3 shell) takes the write lock.
    let mut intruder = SqliteConnection::connect(&sqlite_url(dir.path()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut intruder)
        .await
        .unwrap();
    let res = app.post_signed(prod_body("during")).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(error_code(res).await, "unavailable");

    sqlx::query("ROLLBACK")
        .execute(&mut intruder)
        .await
        .unwrap();
    assert_eq!(app.post_signed(prod_body("during")).await.status(), 200);
    assert_eq!(app.rows().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_then_serve_from_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(command(dir.path(), &[]), &["init"]);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains(".env") && printed.contains("ImgGo"),
        "{printed}"
    );

    let port = free_port();
    let env = vec![
        (
            "IMGGO__SERVER__BIND".to_owned(),
            format!("127.0.0.1:{port}"),
        ),
        (
            "IMGGO__ADMIN__BIND".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        ),
    ];
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    assert!(
        dir.path().join("data/imggo.db").exists(),
        "the default embedded database"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("data/imggo.db"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the database is readable by its owner only");

    let job = new_job_id();
    let body_file = dir.path().join("delivery.json");
    std::fs::write(&body_file, prod_body(&job)).unwrap();
    let signed = run(command(dir.path(), &[]), &["sign", "delivery.json"]);
    let sig = String::from_utf8(signed.stdout).unwrap().trim().to_owned();
    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let res = post_from(
        &reqwest::Client::new(),
        &url,
        std::fs::read(&body_file).unwrap(),
        Some(&sig),
    )
    .await;
    assert_eq!(res.status(), 200);

    let shown = run_ok(command(dir.path(), &[]), &["show", &job]);
    let line: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(line["payload"]["job_id"], job.as_str());

    let again = run(command(dir.path(), &[]), &["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env: Vec<(String, String)> = secret_env(&sqlite_url(dir.path())).into_iter().collect();
    env.push(("IMGGO__SERVER__BIND".into(), format!("127.0.0.1:{port}")));
    env.push((
        "IMGGO__ADMIN__BIND".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");

    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..6)
        .map(|w| {
            let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let job = format!("crash-{w}-{n}");
                    n += 1;
                    let body = prod_body(&job);
                    let sig = prod_signature(&body);
                    let sent = client
                        .post(&url)
                        .header("x-imggo-signature", sig)
                        .body(body)
                        .send()
                        .await;
                    match sent {
                        Ok(res) if res.status() == 200 => acked.lock().unwrap().push(job),
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Let a few hundred deliveries through, then kill without warning.
    tokio::time::timeout(Duration::from_secs(30), async {
        while acked.lock().unwrap().len() < 300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("deliveries were acknowledged");
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let mut restarted = Server::start(command(dir.path(), &env));
    restarted.wait_for("listening");
    let settings = test_settings();
    let store = imggo_receiver::store::Store::connect(
        &secrecy::SecretString::from(sqlite_url(dir.path())),
        &settings.database,
    )
    .await
    .unwrap();
    let ring = test_ring(KEY_A);
    for job in &acked {
        let rows = store.events_for_job(job).await.unwrap();
        assert_eq!(rows.len(), 1, "acknowledged {job} was lost");
        let r = &rows[0];
        ring.open(r.key(), &r.key_id, &r.nonce, &r.ciphertext)
            .unwrap();
    }
    assert!(acked.len() >= 300);
    let (status, _) = restarted.terminate();
    assert!(status.success());
}
