//! Where events live. All SQL is in this module's backends; everything else
//! speaks [`Store`]: Postgres for production (replicas may share it), SQLite
//! embedded for a single instance with nothing to install.

pub mod batch;
pub mod postgres;
pub mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::config::DatabaseSettings;
use crate::crypto::Sealed;
use crate::delivery::Envelope;

pub use batch::{BatchWriter, SubmitError};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A sealed event ready to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub envelope: Envelope,
    pub sealed: Sealed,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new row was committed.
    Inserted,
    /// (job_id, event) was already stored; nothing was written.
    Duplicate,
}

/// Ready means every migration this binary embeds has been applied.
/// `applied` is the highest applied version, `None` when nothing (or no
/// migrations table) is there.
fn require_migrated(
    applied: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    if applied.unwrap_or(0) < latest {
        return Err(StoreError::NotMigrated);
    }
    Ok(())
}

/// Maps the (job_id, event) pairs a batch insert returned back onto the
/// batch: the first event holding a returned pair was inserted, every other
/// one (stored before, or repeated inside the batch) is a duplicate.
fn claim_outcomes(events: &[&NewEvent], inserted: Vec<(String, String)>) -> Vec<InsertOutcome> {
    let mut fresh: std::collections::HashSet<(&str, &str)> = inserted
        .iter()
        .map(|(j, e)| (j.as_str(), e.as_str()))
        .collect();
    events
        .iter()
        .map(|e| {
            if fresh.remove(&(e.envelope.job_id.as_str(), e.envelope.event.as_str())) {
                InsertOutcome::Inserted
            } else {
                InsertOutcome::Duplicate
            }
        })
        .collect()
}

/// A stored row, payload still sealed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: i64,
    pub job_id: String,
    pub event: String,
    pub pattern_id: Option<String>,
    pub status: Option<String>,
    pub received_at: DateTime<Utc>,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
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

/// A database connection a batch writer keeps between batches; empty when
/// it has none. Dropping it returns the connection to the pool.
#[derive(Debug, Default)]
pub struct HeldConnection(Option<sqlx::pool::PoolConnection<sqlx::Postgres>>);

impl HeldConnection {
    /// Gives the connection back to the pool.
    pub fn release(&mut self) {
        self.0 = None;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot commit now; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
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
    /// Anything else the database refused.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let transient = match &e {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::Protocol(_) => true,
            E::WorkerCrashed => true,
            // Postgres: connection exceptions, shutdowns, resource limits,
            // conflicts. SQLite: busy, locked, I/O, full, cannot open, read-only.
            E::Database(db) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|n| matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14)),
            E::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08")
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

    /// Writers that can commit at once: SQLite has a single writer
    /// connection, so more writer tasks would only queue for it (and time
    /// out under load).
    pub fn max_writers(&self) -> usize {
        match self {
            Self::Postgres(_) => usize::MAX,
            Self::Sqlite(_) => 1,
        }
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.migrate().await,
            Self::Sqlite(s) => s.migrate().await,
        }
    }

    /// Ready when the database answers and every migration is applied.
    pub async fn ready(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.ready().await,
            Self::Sqlite(s) => s.ready().await,
        }
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
    pub async fn insert_batch(
        &self,
        events: &[&NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        match self {
            Self::Postgres(s) => s.insert_batch(events).await,
            Self::Sqlite(s) => s.insert_batch(events).await,
        }
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
            Self::Postgres(s) => s.insert_batch_held(&mut held.0, events).await,
            Self::Sqlite(s) => s.insert_batch(events).await,
        }
    }

    /// Every stored event of a job, oldest first.
    pub async fn events_for_job(&self, job_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        match self {
            Self::Postgres(s) => s.events_for_job(job_id).await,
            Self::Sqlite(s) => s.events_for_job(job_id).await,
        }
    }

    /// One retention pass (see [`PgStore::purge`]).
    pub async fn purge(
        &self,
        max_age: Duration,
        batch_size: u32,
        dry_run: bool,
    ) -> Result<PurgeOutcome, StoreError> {
        match self {
            Self::Postgres(s) => s.purge(max_age, batch_size, dry_run).await,
            Self::Sqlite(s) => s.purge(max_age, batch_size, dry_run).await,
        }
    }

    /// Rows after `after` (by id) not sealed under `current_key`, oldest first.
    pub async fn sealed_under_other_keys(
        &self,
        current_key: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match self {
            Self::Postgres(s) => s.sealed_under_other_keys(current_key, after, limit).await,
            Self::Sqlite(s) => s.sealed_under_other_keys(current_key, after, limit).await,
        }
    }

    /// Writes re-sealed payloads in one transaction; returns rows changed.
    pub async fn reseal(&self, rows: &[Resealed]) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.reseal(rows).await,
            Self::Sqlite(s) => s.reseal(rows).await,
        }
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
        match self {
            Self::Postgres(s) => s.close().await,
            Self::Sqlite(s) => s.close().await,
        }
    }
}
