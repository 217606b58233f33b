//! One listener cannot starve the others of file descriptors: with a small
//! `RLIMIT_NOFILE`, a flood of half-sent requests to the Results API leaves
//! the webhook listener (and `/healthz`) answering.

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::*;

/// Soft and hard limit of the server process.
const NOFILE: u32 = 256;
/// More than the whole limit.
const FLOOD: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_flood_leaves_the_webhook_listener_its_descriptors() {
    // This test process holds the flood's sockets itself.
    imggo_receiver::limits::raise_file_limit();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin, api) = (free_port(), free_port(), free_port());
    let mut env = serve_env(&db, port, admin);
    env.push(("IMGGO__API__BIND".into(), format!("127.0.0.1:{api}")));
    let mut server = Server::start(command_with_nofile(dir.path(), &env, NOFILE));
    server.wait_for("listening");

    // Half a request each, never finished: each holds its connection until
    // the API's header timeout (35 s), far beyond this test.
    // Connects past the listener's cap complete in the kernel's accept
    // queue (1024 deep), so FLOOD fits. A connect that does not complete
    // in time is a busy machine (the suite runs in parallel) and is tried
    // again; three in a row mean the queue is full, and the flood is as
    // big as it gets.
    let mut flood = Vec::with_capacity(FLOOD);
    let mut misses = 0;
    while flood.len() < FLOOD && misses < 3 {
        let connect = TcpStream::connect(("127.0.0.1", api));
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(3), connect).await else {
            misses += 1;
            continue;
        };
        misses = 0;
        let _ = conn
            .write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Half: ")
            .await;
        flood.push(conn);
    }
    assert!(
        flood.len() > NOFILE as usize,
        "only {} connected",
        flood.len()
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("/healthz answers while the API is flooded");
    assert_eq!(health.status(), 200);
    let job = new_job_id();
    let body = prod_body(&job);
    let sig = prod_signature(&body);
    let res = post_from(
        &client,
        &format!("http://127.0.0.1:{port}/webhooks/imggo"),
        body,
        Some(&sig),
    )
    .await;
    assert_eq!(
        res.status(),
        200,
        "a delivery is stored while the API is flooded"
    );
    drop(flood);

    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    // Start-up said what it found and what it set.
    let line = logs
        .lines()
        .find(|l| l.contains("\"file descriptors\""))
        .unwrap_or_else(|| panic!("no file descriptors line:\n{logs}"));
    assert!(
        line.contains(&format!("\"nofile_hard\":{NOFILE}")),
        "{line}"
    );
    assert!(
        line.contains(&format!("\"nofile_soft\":{NOFILE}")),
        "{line}"
    );
    assert!(!logs.contains("Too many open files"), "{logs}");
}
