//! Test databases on a Postgres that other runs may share: each test gets
//! a fresh one named after its run, dropped when it is; leftovers of
//! interrupted runs are swept once they are a day old.

use imggo_receiver::store::partitions::Layout;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use imggo_receiver::store::{PgStore, Store};

use super::{admin_url, with_database};

/// How old a test database must be before any run may drop it: no test
/// run lasts a day, so its run is gone.
pub const STALE_AFTER_SECS: i64 = 86_400;

/// This test process's prefix for the databases it creates:
/// `imggo_test_<unix seconds at its start>_<8 hex>_`. Runs share a Postgres
/// (a colleague's, CI's): the time in the name is what lets any of them
/// tell a leftover of an interrupted run (older than a day) from a
/// database another run is using now, which nobody else touches.
pub fn run_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let started = chrono::Utc::now().timestamp();
        let run = uuid::Uuid::new_v4().simple().to_string();
        format!("imggo_test_{started}_{}_", &run[..8])
    })
}

/// A name for a new test database of this run (62 characters: Postgres
/// keeps 63).
pub fn test_db_name() -> String {
    format!("{}{}", run_prefix(), uuid::Uuid::new_v4().simple())
}

/// Test databases whose name says they were created more than a day ago
/// (see [`run_prefix`]); the same rule as `.ci/test-databases.sh`.
pub const STALE_TEST_DATABASES: &str = "SELECT datname::text FROM pg_database \
     WHERE datname ~ '^imggo_test_[0-9]{10}_' \
       AND substring(datname from '^imggo_test_([0-9]{10})_')::bigint \
           < extract(epoch from now())::bigint - $1";

/// Drops the leftovers of interrupted runs (older than a day); returns
/// their names. Databases of runs still going are never touched.
pub async fn drop_stale_test_databases(admin: &mut PgConnection) -> Vec<String> {
    let stale: Vec<String> = sqlx::query_scalar(STALE_TEST_DATABASES)
        .bind(STALE_AFTER_SECS)
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    for name in &stale {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut *admin)
            .await;
    }
    stale
}

/// A fresh database, dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

/// The tests' layout: hourly partitions (so that an hour's retention
/// drops what a test moved two hours back), every stored row served.
pub const TEST_LAYOUT: Layout = Layout {
    interval: std::time::Duration::from_secs(3600),
    max_age: None,
};

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::unmigrated().await;
        db.store().migrate().await.unwrap();
        db
    }

    /// A store on this database, with [`TEST_LAYOUT`].
    pub fn store(&self) -> Store {
        Store::Postgres(PgStore::from_pool(self.pool.clone()).with_layout(TEST_LAYOUT))
    }

    /// A store opened as the server opens it (its session settings: no
    /// JIT, no sequential scans), with [`TEST_LAYOUT`]; [`Self::store`]
    /// shares the test pool, whose sessions keep Postgres' defaults.
    pub async fn server_store(&self) -> Store {
        match Store::connect(
            &secrecy::SecretString::from(self.url.clone()),
            &super::test_settings().database,
        )
        .await
        .unwrap()
        {
            Store::Postgres(pg) => Store::Postgres(pg.with_layout(TEST_LAYOUT)),
            Store::Sqlite(_) => unreachable!("a Postgres URL"),
        }
    }

    /// A fresh database no migration has touched (what a first start sees).
    pub async fn unmigrated() -> Self {
        let name = test_db_name();
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("Postgres must be running (see README)");
        // Once per test process: what interrupted runs left behind.
        static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
            drop_stale_test_databases(&mut conn).await;
        }
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let url = with_database(&admin, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        Self { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context: use a short-lived runtime on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
