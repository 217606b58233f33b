//! The embedded SQLite store: one instance, no database server to run.
//! WAL journal, `synchronous=FULL` (an acknowledged event survives a power
//! cut), and a single connection so writers never race ("database is
//! locked").

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row as _;
use tracing::instrument;

use super::{DbTime, EventColumns, InsertOutcome, NewEvent, PurgeOutcome, StoreError, StoredEvent};
use crate::config::DatabaseSettings;

pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// One event, unless its key was erased before (`?1`, `?2`: its job_id and
/// event); its id when it was inserted.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO webhook_events ({}) SELECT {} \
         WHERE NOT EXISTS (SELECT 1 FROM erased_events WHERE job_id = ?1 AND event = ?2) \
         ON CONFLICT (job_id, event) DO NOTHING RETURNING id",
        EventColumns::new_event(),
        EventColumns::sqlite_values()
    )
});

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Pinged after each committed insert: wakes the feed watcher.
    commits: Arc<tokio::sync::Notify>,
}

impl SqliteStore {
    /// Opens (creating file and folder when missing) the database at `url`.
    pub async fn connect(url: &str, db: &DatabaseSettings) -> Result<Self, StoreError> {
        Self::open(url, db, true).await
    }

    /// Opens the database at `url` only if its file exists: commands that
    /// read the store must not leave an empty database behind.
    pub async fn open_existing(url: &str, db: &DatabaseSettings) -> Result<Self, StoreError> {
        Self::open(url, db, false).await
    }

    async fn open(url: &str, db: &DatabaseSettings, create: bool) -> Result<Self, StoreError> {
        // sqlx's refusal quotes the parameter (and its value): not shown.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| {
                StoreError::Refused(
                    "DATABASE_URL is not a valid SQLite URL (sqlite://path/to/file.db)".into(),
                )
            })?
            .create_if_missing(create)
            .foreign_keys(true);
        let options = durable(options, db.acquire_timeout);
        let path = options.get_filename();
        let in_memory = path.as_os_str() == ":memory:";
        if create {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_dir(dir)?;
            }
            create_private(path)?;
        } else if !in_memory && !path.exists() {
            // No file: nothing was ever migrated into it.
            return Err(StoreError::NotMigrated);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(db.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            commits: Arc::default(),
        })
    }

    /// What the feed watcher waits on for this process's commits.
    pub fn commits(&self) -> Arc<tokio::sync::Notify> {
        self.commits.clone()
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn migrator(&self) -> &'static Migrator {
        &MIGRATOR
    }

    /// Inserts a batch in one transaction: one fsync for all of it. An
    /// event is barred (stored nowhere, answered as a duplicate, its key
    /// remembered) when its (job_id, event) was erased or deleted before,
    /// or when one of its subjects was erased at or after its receipt. The
    /// first statement writes, so the transaction holds SQLite's write lock
    /// (and reads the latest commits, a `forget` from another process
    /// included) before it checks any tombstone.
    #[instrument(skip_all, fields(rows = events.len()))]
    pub async fn insert_batch(
        &self,
        events: &[&NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcomes = Self::insert_rows(&mut tx, events).await?;
        tx.commit().await?;
        self.commits.notify_one();
        Ok(outcomes)
    }

    /// Pinged after a commit that inserted events (wakes the feed watcher).
    pub(super) fn committed(&self) {
        self.commits.notify_one();
    }

    /// The batch insert on `tx`, a transaction the caller commits: a key
    /// erased before, or a subject erased since its receipt, is answered as
    /// a duplicate and stored nowhere.
    pub(super) async fn insert_rows(
        tx: &mut sqlx::SqliteConnection,
        events: &[&NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let e = &event.envelope;
            let inserted: Option<i64> = super::bind_new_event(sqlx::query(&INSERT), event)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
            let Some(id) = inserted else {
                outcomes.push(InsertOutcome::Duplicate);
                continue;
            };
            let barred =
                super::subjects::erased_since_sqlite(&mut *tx, &event.subjects, event.received_at)
                    .await?
                    || job_deleted_since(&mut *tx, &e.job_id, event.received_at).await?;
            if barred {
                sqlx::query("DELETE FROM webhook_events WHERE id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO erased_events (job_id, event, erased_at) VALUES (?, ?, ?) \
                     ON CONFLICT (job_id, event) DO NOTHING",
                )
                .bind(&e.job_id)
                .bind(&e.event)
                .bind(DbTime(Utc::now()))
                .execute(&mut *tx)
                .await?;
                outcomes.push(InsertOutcome::Duplicate);
                continue;
            }
            super::subjects::insert_sqlite(&mut *tx, id, &event.subjects).await?;
            outcomes.push(InsertOutcome::Inserted);
        }
        Ok(outcomes)
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    pub async fn events_for_job(&self, job_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM webhook_events WHERE job_id = ? ORDER BY received_at, id",
            EventColumns::sqlite()
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Rows received before `cutoff`.
    pub async fn count_expired(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE received_at < ?")
                .bind(DbTime(cutoff))
                .fetch_one(&self.pool)
                .await?;
        Ok(n.unsigned_abs())
    }

    /// Deletes rows received before `cutoff`, in batches; a single instance
    /// needs no lock.
    pub async fn purge(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
    ) -> Result<PurgeOutcome, StoreError> {
        let missed = super::forward::count_missed_sqlite(&self.pool, cutoff).await;
        if let Err(e) = super::forward::purge_sqlite(&self.pool, cutoff).await {
            tracing::warn!(error = %e, "cannot purge old forwarding notices and dead letters");
        }
        crate::metrics::forward_missed(missed);
        let deleted = super::delete_in_batches(batch_size, || async {
            Ok(sqlx::query(
                "DELETE FROM webhook_events WHERE id IN ( \
                   SELECT id FROM webhook_events WHERE received_at < ? \
                   ORDER BY received_at LIMIT ?)",
            )
            .bind(DbTime(cutoff))
            .bind(i64::from(batch_size))
            .execute(&self.pool)
            .await?
            .rows_affected())
        })
        .await?;
        Ok(PurgeOutcome::Deleted(deleted))
    }

    pub async fn sealed_under_other_keys(
        &self,
        current_key: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM webhook_events WHERE key_id <> ? AND id > ? ORDER BY id LIMIT ?",
            EventColumns::sqlite()
        ))
        .bind(current_key)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Whether `job_id` was deleted (`DELETE /v1/jobs`) at or after `received_at`.
async fn job_deleted_since(
    conn: &mut sqlx::SqliteConnection,
    job_id: &str,
    received_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let deleted: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM erased_jobs WHERE job_id = ? AND erased_at >= ?")
            .bind(job_id)
            .bind(DbTime(received_at))
            .fetch_optional(conn)
            .await?;
    Ok(deleted.is_some())
}

/// Creates the database file readable by its owner only (SQLite gives the
/// -wal and -shm files the same mode); an existing file is left as it is.
/// How every SQLite file of ours is opened (the embedded store and the
/// spool): WAL, and `synchronous = FULL` so a commit survives power loss
/// (NORMAL in WAL may lose the last transactions) before anything is
/// acknowledged; statements wait `busy_timeout` for the file's lock.
pub(crate) fn durable(
    options: SqliteConnectOptions,
    busy_timeout: Duration,
) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
}

pub(crate) fn create_private(path: &Path) -> Result<(), StoreError> {
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Other(sqlx::Error::Io(e))),
    }
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Other(sqlx::Error::Io(e)))
}
