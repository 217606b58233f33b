//! `spawn_app()` and friends: a real server on 127.0.0.1:0 over a fresh
//! database, and clients that sign the way ImgGo does.

#![allow(dead_code)]

mod databases;
mod fixtures;
mod process;

pub use databases::*;
pub use process::*;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use hmac::{Hmac, Mac};
use imggo_receiver::config::secrets::Secrets;
use imggo_receiver::config::Settings;
use imggo_receiver::crypto::KeyRing;
use imggo_receiver::startup::Application;
use imggo_receiver::store::{Store, StoredEvent};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "whsec_primary_test_secret_0001";
pub const ROTATED_SECRET: &str = "whsec_rotated_test_secret_0002";
pub const KEY_A: &str = "ka:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const KEY_B: &str = "kb:HxwdHh8AAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRo=";
pub const HASH_KEY: &str = "dGVzdC1oYXNoLWtleS10aGF0LWlzLWxvbmctZW5vdWdoISE=";

/// The Postgres server tests run against (a database is created per test).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database path replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{db}{query}", &base[..path_start])
}

pub fn secret_env(db_url: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            "IMGGO_WEBHOOK_SECRETS".to_owned(),
            format!("{SECRET},{ROTATED_SECRET}"),
        ),
        ("IMGGO_ENCRYPTION_KEYS".to_owned(), KEY_A.to_owned()),
        ("IMGGO_HASH_KEY".to_owned(), HASH_KEY.to_owned()),
        ("DATABASE_URL".to_owned(), db_url.to_owned()),
    ])
}

pub fn test_settings() -> Settings {
    let mut s = Settings::load_with_env(None, Vec::new()).unwrap();
    s.server.bind = "127.0.0.1:0".parse().unwrap();
    s.admin.bind = "127.0.0.1:0".parse().unwrap();
    // As TestDb's stores: an hour's retention drops what is two hours old.
    s.storage.partition_interval = databases::TEST_LAYOUT.interval;
    s.api.bind = "127.0.0.1:0".to_owned();
    s.database.acquire_timeout = std::time::Duration::from_secs(1);
    s.database.connect_timeout = std::time::Duration::from_secs(5);
    // Tests send bursts from one address; the limiter has its own tests.
    s.rate_limit.per_second = 100_000;
    s.rate_limit.burst = 100_000;
    s
}

pub struct TestApp {
    /// Holds the app's spool file.
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The Results API listener (on unless a test turns it off).
    pub api_addr: Option<SocketAddr>,
    pub db: TestDb,
    pub store: Store,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub client: reqwest::Client,
    pub path: String,
}

pub struct Options {
    pub settings: Settings,
    pub env: HashMap<String, String>,
    /// Point the app at this URL instead of the test database (e.g. a proxy).
    pub database_url: Option<String>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// An app whose Postgres is reached through a [`Proxy`] the test can cut;
/// `configure` as for [`spawn_app_with`].
pub async fn spawn_app_behind_proxy(configure: impl FnOnce(&mut Options)) -> (TestApp, Arc<Proxy>) {
    let proxy = Proxy::start(upstream_addr()).await;
    let proxy_addr = proxy.addr;
    let app = spawn_app_with(|o| {
        configure(o);
        o.database_url = Some(via_proxy(&o.env["DATABASE_URL"], proxy_addr));
    })
    .await;
    (app, proxy)
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Options)) -> TestApp {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings();
    settings.spool.path = dir.path().join("spool.db").display().to_string();
    let mut options = Options {
        settings,
        env: secret_env(&db.url),
        database_url: None,
    };
    configure(&mut options);
    if let Some(url) = &options.database_url {
        options.env.insert("DATABASE_URL".into(), url.clone());
    }
    let secrets = Secrets::load(&options.env).unwrap();
    let listener = tokio::net::TcpListener::bind(options.settings.server.bind)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let path = options.settings.webhook.path.clone();
    let app = Application::build(options.settings, secrets, Some(listener), shutdown.clone())
        .await
        .unwrap();
    let admin_addr = app.admin_addr().unwrap();
    let api_addr = app.api_addr();
    let store = app.store().clone();
    let server = tokio::spawn(app.run());
    TestApp {
        dir,
        addr,
        admin_addr,
        api_addr,
        db,
        store,
        shutdown,
        server,
        client: reqwest::Client::new(),
        path,
    }
}

/// HMAC-SHA256 hex computed here, independently of the service.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The production sender's header form.
pub fn prod_signature(body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(SECRET, body))
}

pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A production-dialect delivery, compact JSON as the real sender writes it.
pub fn prod_body(job_id: &str) -> Vec<u8> {
    let v = json!({
        "event": "job.succeeded",
        "job_id": job_id,
        "pattern_id": "5b7e2f6a-0d1c-4e2a-9b8f-3c4d5e6f7a8b",
        "manifest": {"invoice_number": "INV-1042", "total": 1234.5, "currency": "EUR",
                      "vendor": {"name": "ACME GmbH"}, "line_items": [{"sku": "A1", "qty": 2}]},
        "error": null,
        "timestamp": chrono::Utc::now().to_rfc3339(),
    });
    serde_json::to_vec(&v).unwrap()
}

/// A docs-dialect delivery.
pub fn docs_body(job_id: &str) -> Vec<u8> {
    let v = json!({
        "event": "job.completed",
        "job_id": job_id,
        "pattern_id": "pat_invoices_v2",
        "status": "completed",
        "result": {"merchant": "Corner Shop", "total": 9.99, "items": ["tea", "milk"]},
        "confidence": 0.97,
        "processing_time_ms": 3420,
        "created_at": "2026-11-24T10:00:00Z",
        "completed_at": "2026-11-24T10:00:03Z",
    });
    serde_json::to_vec_pretty(&v).unwrap()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Status of a GET to `path` on the public port.
    pub async fn get_status(&self, path: &str) -> u16 {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub fn webhook_url(&self) -> String {
        self.url(&self.path)
    }

    pub async fn post_raw(&self, body: Vec<u8>, signature: Option<&str>) -> reqwest::Response {
        post_from(&self.client, &self.webhook_url(), body, signature).await
    }

    pub async fn post_signed(&self, body: Vec<u8>) -> reqwest::Response {
        let sig = prod_signature(&body);
        self.post_raw(body, Some(&sig)).await
    }

    pub async fn rows(&self) -> i64 {
        count_rows(&self.store).await
    }

    pub async fn events(&self, job_id: &str) -> Vec<StoredEvent> {
        self.store.events_for_job(job_id).await.unwrap()
    }

    /// The stored payload of (job_id, event), decrypted with the test ring.
    pub async fn stored_payload(&self, job_id: &str, event: &str) -> Value {
        let ring = test_ring(KEY_A);
        let row = self
            .events(job_id)
            .await
            .into_iter()
            .find(|e| e.event == event)
            .expect("row stored");
        let pt = ring
            .open(row.key(), &row.key_id, &row.nonce, &row.ciphertext)
            .unwrap();
        serde_json::from_slice(&pt).unwrap()
    }
}

pub async fn post_from(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    signature: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "ImgGo-Webhook/1.0")
        .body(body);
    if let Some(sig) = signature {
        req = req.header("x-imggo-signature", sig);
    }
    req.send().await.unwrap()
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address).
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

pub fn test_ring(spec: &str) -> KeyRing {
    imggo_receiver::config::secrets::parse_key_ring(spec).unwrap()
}

/// Asserts the contract's error shape and returns the code.
pub async fn error_code(res: reqwest::Response) -> String {
    let v: Value = res.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["code"].as_str().unwrap().to_owned()
}

/// Rows in the table, whichever backend holds them.
pub async fn count_rows(store: &Store) -> i64 {
    const SQL: &str = "SELECT count(*) FROM webhook_events";
    match store {
        Store::Postgres(s) => sqlx::query_scalar(SQL).fetch_one(s.pool()).await.unwrap(),
        Store::Sqlite(s) => sqlx::query_scalar(SQL).fetch_one(s.pool()).await.unwrap(),
    }
}

/// Runs one statement with no result on either backend (test setup only).
pub async fn exec(store: &Store, postgres: &str, sqlite: &str) {
    match store {
        Store::Postgres(s) => {
            sqlx::query(postgres).execute(s.pool()).await.unwrap();
        }
        Store::Sqlite(s) => {
            sqlx::query(sqlite).execute(s.pool()).await.unwrap();
        }
    }
}

/// Moves rows of `job_ids` back in time by `secs`.
pub async fn backdate_rows(store: &Store, job_ids: &[&str], secs: i64) {
    let list = job_ids
        .iter()
        .map(|j| format!("'{j}'"))
        .collect::<Vec<_>>()
        .join(",");
    let update = format!(
        "UPDATE webhook_events SET received_at = received_at - make_interval(secs => {secs}) \
         WHERE job_id IN ({list})"
    );
    let Store::Postgres(s) = store else {
        return exec(
            store,
            &update,
            &format!("UPDATE webhook_events SET received_at = received_at - {secs} * 1000000 WHERE job_id IN ({list})"),
        )
        .await;
    };
    // The partitions the rows move into. A server's retention pass may
    // drop one that is already past max_age before the rows move: made
    // again, a few times at most.
    for _ in 0..20 {
        let times: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(&format!(
            "SELECT received_at - make_interval(secs => {secs}) FROM webhook_events \
             WHERE job_id IN ({list})"
        ))
        .fetch_all(s.pool())
        .await
        .unwrap();
        store.make_partitions_for(&times).await.unwrap();
        match sqlx::query(&update).execute(s.pool()).await {
            Ok(_) => return,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the rows' partitions kept being dropped");
}

/// Moves every erasure tombstone (erased keys and subjects) back in time by
/// `secs`, and on Postgres every dedup key with them, claimed or sealed (as
/// if the events had been received then: the keys age out with them).
pub async fn backdate_tombstones(store: &Store, secs: i64) {
    if let Store::Postgres(s) = store {
        let times: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(&format!(
            "SELECT since - make_interval(secs => {secs}) FROM event_keys \
             UNION SELECT day - make_interval(secs => {secs}) FROM event_claims"
        ))
        .fetch_all(s.pool())
        .await
        .unwrap();
        store.make_partitions_for(&times).await.unwrap();
        let partitions = |expr: &str| {
            use imggo_receiver::store::partitions::{claim_day_sql, key_window_sql};
            let back = format!("{expr} - make_interval(secs => {secs})");
            (key_window_sql(&back), claim_day_sql(&back))
        };
        let (since, _) = partitions("since");
        let (_, day) = partitions("day");
        sqlx::raw_sql(&format!(
            "UPDATE event_keys SET since = {since}; UPDATE event_claims SET day = {day}"
        ))
        .execute(s.pool())
        .await
        .unwrap();
    }
    for table in ["erased_events", "erased_subjects"] {
        exec(
            store,
            &format!("UPDATE {table} SET erased_at = erased_at - make_interval(secs => {secs})"),
            &format!("UPDATE {table} SET erased_at = erased_at - {secs} * 1000000"),
        )
        .await;
    }
}

/// A fresh, migrated store of each backend, with what keeps it alive.
pub enum Backing {
    Postgres(TestDb),
    Sqlite(tempfile::TempDir),
}

pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}/imggo.db", dir.display())
}

pub async fn each_store() -> Vec<(Store, Backing)> {
    let mut settings = test_settings();
    // The tests' 1 s acquire timeout is for outages; opening and migrating
    // a fresh SQLite file while the whole suite runs on two cores took
    // longer once (PoolTimedOut in CI), and no store test here times out
    // on purpose.
    settings.database.acquire_timeout = std::time::Duration::from_secs(10);
    let db = TestDb::new().await;
    let pg = db.store();
    let dir = tempfile::tempdir().unwrap();
    let url = secrecy::SecretString::from(sqlite_url(dir.path()));
    let lite = Store::connect(&url, &settings.database).await.unwrap();
    lite.migrate().await.unwrap();
    vec![(pg, Backing::Postgres(db)), (lite, Backing::Sqlite(dir))]
}

/// How many of `tasks` inserted (the rest found a duplicate).
pub async fn count_inserted(
    tasks: Vec<tokio::task::JoinHandle<imggo_receiver::store::InsertOutcome>>,
) -> usize {
    let mut inserted = 0;
    for t in tasks {
        if t.await.unwrap() == imggo_receiver::store::InsertOutcome::Inserted {
            inserted += 1;
        }
    }
    inserted
}

/// Which backend a store is, for assertion messages.
pub fn backend_name(store: &Store) -> &'static str {
    match store {
        Store::Postgres(_) => "postgres",
        Store::Sqlite(_) => "sqlite",
    }
}

/// A row as the webhook would store it: `payload` sealed under `ring` for
/// (job, event).
pub fn sealed_event_with(
    ring: &KeyRing,
    job: &str,
    event: &str,
    payload: &[u8],
) -> imggo_receiver::event::NewEvent {
    imggo_receiver::event::NewEvent {
        envelope: imggo_receiver::event::Envelope {
            job_id: job.into(),
            event: event.into(),
            pattern_id: None,
            status: None,
        },
        sealed: ring
            .seal(imggo_receiver::dedup::DedupKey::new(job, event), payload)
            .unwrap(),
        received_at: chrono::Utc::now(),
        subjects: Vec::new(),
        verdict: Default::default(),
    }
}

/// A `job.succeeded` row for `job` with an empty payload, under `KEY_A`.
pub fn sealed_event(job: &str) -> imggo_receiver::event::NewEvent {
    sealed_event_with(&test_ring(KEY_A), job, "job.succeeded", b"{}")
}

/// A TCP forwarder in front of Postgres that can be cut and restored.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let proxy = Arc::new(Self { addr, up });
        let p = proxy.clone();
        tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                if !*p.up.borrow() {
                    continue; // dropped: the client sees a reset/EOF
                }
                let mut down = p.up.subscribe();
                conns.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        proxy
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// host:port of a postgres:// URL.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

pub fn upstream_addr() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs as _;
    host_port(&admin_url())
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

/// `url` with its host:port replaced by the proxy's.
pub fn via_proxy(url: &str, proxy: std::net::SocketAddr) -> String {
    url.replacen(host_port(url), &proxy.to_string(), 1)
}

/// Sessions of the pool's database waiting for a lock right now.
pub async fn sessions_waiting_for_a_lock(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Polls `probe` until it yields a value (at most 30 s, then fails naming
/// `what`): the one bounded wait for conditions that happen on their own.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Rows of `table` in the spool file at `path`, straight from the file.
pub async fn spooled_rows(path: &std::path::Path, table: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let n = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}
