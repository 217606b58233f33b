//! Where events live. All SQL is in this module's backends; everything else
//! speaks [`Store`]: Postgres for production (replicas may share it), SQLite
//! embedded for a single instance with nothing to install.

pub mod batch;
mod db_time;
pub mod deferred;
mod event_row;
pub mod location;
pub mod partitions;
mod pg_connect;
pub mod postgres;
pub mod quarantine;
pub mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::config::DatabaseSettings;
use crate::crypto::Sealed;
pub use crate::event::{InsertOutcome, NewEvent, StoredEvent};

pub use batch::{BatchWriter, SubmitError};
pub use db_time::DbTime;
pub use deferred::SchemaReady;
pub use event_row::EventColumns;
pub(crate) use event_row::{bind_new_event, new_event_sqlite, PgEventArrays};
pub use postgres::{HeldConnection, PgStore};
pub use sqlite::SqliteStore;

/// Deletes in batches until a batch comes back short: each call of
/// `delete_batch` is one short transaction deleting at most `batch_size`.
async fn delete_in_batches<F, Fut>(batch_size: u32, mut delete_batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut deleted = 0u64;
    loop {
        let n = delete_batch().await?;
        deleted += n;
        if n < u64::from(batch_size) {
            return Ok(deleted);
        }
    }
}

/// The moment before which rows have expired.
fn retention_cutoff(max_age: Duration) -> DateTime<Utc> {
    let age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_sub_signed(age)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// What a retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// Rows deleted.
    Deleted(u64),
    /// Rows a real pass would delete (`--dry-run`).
    WouldDelete(u64),
    /// Another replica is purging; this pass did nothing.
    Skipped,
}

/// A row's payload sealed again under the current key.
#[derive(Debug, Clone)]
pub struct Resealed {
    pub id: i64,
    /// The nonce the row held when read: the update applies only if unchanged.
    pub old_nonce: Vec<u8>,
    pub sealed: Sealed,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot commit now; retry later.
    // The cause is part of the text, not a `source`: an error chain
    // printed whole (`{:#}`) would say it twice. Shown without the
    // server's text, which may quote the user.
    #[error("database unavailable: {}", pg_connect::describe(.0))]
    Unavailable(sqlx::Error),
    /// Migrations are missing or behind this binary.
    #[error(
        "the database has no schema for this version yet: run `imggo-receiver migrate` (or `serve`) first"
    )]
    NotMigrated,
    /// The database refused a connection for a reason waiting cannot fix
    /// (no such database, wrong credentials, unknown host, bad URL); the
    /// text says which, never the password.
    #[error("{0}")]
    Refused(String),
    /// No connection could be made within `database.connect_timeout`; the
    /// text says what happened (refused, no answer, TLS) and what to check.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else the database refused.
    #[error("database error: {0}")]
    Other(sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let transient = match &e {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::Protocol(_) => true,
            E::WorkerCrashed => true,
            // Postgres: connection exceptions, refused logins, shutdowns,
            // resource limits, conflicts. SQLite: busy, locked, I/O, full, cannot open, read-only.
            E::Database(db) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|n| matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14)),
            // A running server whose login is refused (credentials being
            // rotated, the role disabled) or whose database is gone is
            // unavailable too: 503, and deliveries go to the spool.
            E::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08")
                    || c.starts_with("28")
                    || c == "3D000"
                    || c.starts_with("53")
                    || c.starts_with("57P")
                    || c == "40001"
                    || c == "40P01"
            }),
            _ => false,
        };
        if transient {
            Self::Unavailable(e)
        } else {
            Self::Other(e)
        }
    }
}

/// The configured store.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Calls the same method on whichever backend `$store` is.
macro_rules! on_backend {
    ($store:expr, $s:ident => $call:expr) => {
        match $store {
            Store::Postgres($s) => $call,
            Store::Sqlite($s) => $call,
        }
    };
}
pub(crate) use on_backend;

// The Results API's SQL, each concern in its own file (`impl Store` blocks
// using `on_backend!`, so declared after it).
mod audit;
pub mod feed;
pub mod forward;
mod keys;
mod rejected;
mod subjects;
mod tokens;

pub use feed::{FeedEvent, FeedFilter};
pub use keys::SealedTable;
pub use tokens::LAST_USED_GRANULARITY_MICROS;

impl Store {
    /// Connects by URL scheme (`postgres://`, `sqlite://`), waiting up to
    /// `database.connect_timeout` for a server.
    pub async fn connect(url: &SecretString, db: &DatabaseSettings) -> Result<Self, StoreError> {
        let url = url.expose_secret();
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::connect(url, db).await?))
        } else {
            Ok(Self::Postgres(PgStore::connect(url, db).await?))
        }
    }

    /// This store with `layout`'s partition interval and retention
    /// (Postgres; SQLite keeps one table and deletes by row).
    pub fn with_layout(self, layout: partitions::Layout) -> Self {
        match self {
            Self::Postgres(s) => Self::Postgres(s.with_layout(layout)),
            Self::Sqlite(s) => Self::Sqlite(s),
        }
    }

    /// Makes the time partitions ahead (Postgres; nothing on SQLite): run
    /// after the migrations, before the first insert is taken.
    pub async fn make_partitions(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.make_partitions().await,
            Self::Sqlite(_) => Ok(()),
        }
    }

    /// Makes the partitions (events and dedup keys) that rows received at
    /// `times` need (Postgres; nothing on SQLite): for rows about to be
    /// placed in the past.
    pub async fn make_partitions_for(&self, times: &[DateTime<Utc>]) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => partitions::cover_times(s.pool(), s.layout(), times).await,
            Self::Sqlite(_) => Ok(()),
        }
    }

    /// Writers that can commit at once: SQLite has a single writer
    /// connection, so more writer tasks would only queue for it (and time
    /// out under load).
    pub fn max_writers(&self) -> usize {
        match self {
            Self::Postgres(_) => usize::MAX,
            Self::Sqlite(_) => 1,
        }
    }

    /// Applies pending migrations, then (Postgres) makes the time
    /// partitions ahead.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.migrator().run(s.pool()).await?);
        self.make_partitions().await
    }

    /// Ready when the database answers and every migration is applied.
    pub async fn ready(&self) -> Result<(), StoreError> {
        const APPLIED: &str = "SELECT max(version) FROM _sqlx_migrations WHERE success";
        let (applied, migrator) = on_backend!(self, s => (
            sqlx::query_scalar::<_, Option<i64>>(APPLIED).fetch_one(s.pool()).await,
            s.migrator(),
        ));
        let applied = match applied {
            Ok(version) => version,
            // No migrations table yet: Postgres' 42P01, SQLite's message.
            Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("42P01")
                    || db.message().contains("no such table") =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        if applied.unwrap_or(0) < latest {
            return Err(StoreError::NotMigrated);
        }
        Ok(())
    }

    /// Stores an event once per (job_id, event); committed when it returns.
    pub async fn insert(&self, event: &NewEvent) -> Result<InsertOutcome, StoreError> {
        let outcomes = self.insert_batch(&[event]).await?;
        Ok(outcomes
            .first()
            .copied()
            .unwrap_or(InsertOutcome::Duplicate))
    }

    /// Stores a batch in one transaction; outcomes in the batch's order.
    /// Duplicates inside the batch count once: the first is inserted.
    pub async fn insert_batch(
        &self,
        events: &[&NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        on_backend!(self, s => s.insert_batch(events).await)
    }

    /// [`Self::insert_batch`] for a batch writer, which may keep a
    /// connection in `held` between back-to-back batches (Postgres only:
    /// the SQLite pool's one connection serves every other query too).
    pub async fn insert_batch_held(
        &self,
        held: &mut HeldConnection,
        events: &[&NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        match self {
            Self::Postgres(s) => s.insert_batch_held(held, events).await,
            Self::Sqlite(s) => s.insert_batch(events).await,
        }
    }

    /// Every stored event of a job, oldest first.
    pub async fn events_for_job(&self, job_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        on_backend!(self, s => s.events_for_job(job_id).await)
    }

    /// One retention pass: removes rows received more than `max_age` ago
    /// (or counts them, `dry_run`). Postgres drops whole partitions, those
    /// wholly past `max_age`, and only one replica purges at a time (the
    /// others skip); SQLite deletes in batches of `batch_size`, each its
    /// own short transaction.
    pub async fn purge(
        &self,
        max_age: Duration,
        batch_size: u32,
        dry_run: bool,
    ) -> Result<PurgeOutcome, StoreError> {
        Ok(self.purge_counted(max_age, batch_size, dry_run).await?.0)
    }

    /// [`Self::purge`], also saying how many quarantined deliveries were
    /// (or would be) deleted with the events.
    pub async fn purge_counted(
        &self,
        max_age: Duration,
        batch_size: u32,
        dry_run: bool,
    ) -> Result<(PurgeOutcome, u64), StoreError> {
        let cutoff = retention_cutoff(max_age);
        if dry_run {
            let n = on_backend!(self, s => s.count_expired(cutoff).await?);
            let quarantined = self.count_quarantined_before(cutoff).await?;
            return Ok((PurgeOutcome::WouldDelete(n), quarantined));
        }
        let outcome = match self {
            Self::Postgres(s) => s.purge(cutoff).await,
            Self::Sqlite(s) => s.purge(cutoff, batch_size).await,
        }?;
        // Quarantined deliveries age out with the events (after them: a
        // replica that skipped the events pass skips these too).
        let quarantined = if outcome == PurgeOutcome::Skipped {
            0
        } else {
            self.purge_quarantined(cutoff).await?
        };
        Ok((outcome, quarantined))
    }

    /// Rows after `after` (by id) not sealed under `current_key`, oldest first.
    pub async fn sealed_under_other_keys(
        &self,
        current_key: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        on_backend!(self, s => s.sealed_under_other_keys(current_key, after, limit).await)
    }

    /// Opens an existing, migrated store for commands that read it: creates
    /// nothing (no SQLite file, no schema) and answers
    /// [`StoreError::NotMigrated`] when there is nothing to read yet.
    pub async fn open_migrated(
        url: &SecretString,
        db: &DatabaseSettings,
    ) -> Result<Self, StoreError> {
        let url = url.expose_secret();
        let store = if url.starts_with("sqlite:") {
            Self::Sqlite(SqliteStore::open_existing(url, db).await?)
        } else {
            Self::Postgres(PgStore::connect(url, db).await?)
        };
        store.ready().await?;
        Ok(store)
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        on_backend!(self, s => s.pool().close().await)
    }
}
