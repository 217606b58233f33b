//! The spool (CONTRACT §10): with Postgres as the store, a verified delivery
//! that cannot be committed there (database unreachable, commit failing,
//! writer queue full) is committed instead to a local SQLite file, and only
//! then answered `200 received`. ImgGo's sender tries once, so
//! acknowledging durably while Postgres is away is what keeps its results.
//!
//! - Durable: WAL with `synchronous = FULL`, one transaction per group of
//!   deliveries (group commit, as the batch writers do), fsynced before any
//!   of them is answered. Rows hold only sealed payloads.
//! - While the spool holds rows (or Postgres was just found unreachable),
//!   new deliveries go to it directly: they are not made to wait on a
//!   database that is down, and a redelivery of a spooled delivery finds
//!   it there and answers `duplicate`.
//! - The drainer (`ingest::drain`) moves rows into Postgres oldest first, removing each only
//!   after Postgres committed it (a crash in between re-sends it, and
//!   Postgres answers duplicate), keeping `received_at`. A spool left by a
//!   crash drains at the next start.
//! - `spool.max_bytes` bounds it: past it, deliveries get 503 as before.
//! - Quarantine rows (signed deliveries refused by validation) that
//!   Postgres cannot take are kept here too, and moved into the quarantine
//!   after the deliveries.
//!
//! What it does not protect against: the loss of this replica's disk (mount
//! a volume), or a replica that never starts again (its spool waits for it).

pub mod keys;

mod codec;
mod schema;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::sqlite::SqlitePool;
use sqlx::Row as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::event::{InsertOutcome, NewEvent};
use crate::group_commit::{self, Refused, Request, Submitter};
use crate::store::quarantine::NewQuarantined;
use crate::store::{DbTime, EventColumns};
use codec::{quarantined_size, row_size, subject_bytes};

/// Most deliveries written to the spool per transaction.
const MAX_BATCH: usize = 512;
/// Deliveries waiting for the spool writer before new ones get 503.
const QUEUE_CAPACITY: usize = 8192;
/// Rows read per drain transaction.
const DRAIN_BATCH: i64 = 2000;
/// Quarantine rows read per drain pass (each moved in its own transaction).
const QUARANTINE_DRAIN_BATCH: i64 = 100;
/// Bytes a row costs beyond its payload (columns, index entries, pages).
const ROW_OVERHEAD: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full (spool.max_bytes)")]
    Full,
    #[error("the spool cannot commit: {0}")]
    Failed(#[source] sqlx::Error),
    #[error("the spool writer has stopped")]
    Stopped,
}

/// This replica's spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    queue: Submitter<NewEvent, Result<InsertOutcome, SpoolError>>,
    shared: Arc<Shared>,
}

/// What the request side, the writer and the drainer all read.
struct Shared {
    pool: SqlitePool,
    /// Rows in the spool.
    depth: AtomicU64,
    /// Approximate bytes the rows take.
    bytes: AtomicU64,
    max_bytes: u64,
    /// A delivery was refused for want of room since the last drain.
    full: AtomicBool,
    /// Wakes the drainer when rows arrive.
    wake: Notify,
}

/// A delivery queued for the spool writer, and its answer.
type Job = Request<NewEvent, Result<InsertOutcome, SpoolError>>;

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

/// Spooled deliveries read for one drain transaction, oldest first.
pub struct SpooledBatch {
    seqs: Vec<i64>,
    pub events: Vec<NewEvent>,
}

impl SpooledBatch {
    /// The spool position of its newest row; `None` when it is empty.
    pub fn last_seq(&self) -> Option<i64> {
        self.seqs.last().copied()
    }
}

impl Spool {
    /// Opens (creating file and folder, mode 0600) the spool at `path` and
    /// starts its writer. The returned handle finishes once every `Spool`
    /// clone is gone and what was queued is committed.
    pub async fn open(path: &Path, max_bytes: u64) -> anyhow::Result<(Self, JoinHandle<()>)> {
        use anyhow::Context as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the spool's folder {}", dir.display()))?;
        }
        crate::store::sqlite::create_private(path)
            .with_context(|| format!("cannot create the spool file {}", path.display()))?;
        let pool = schema::open_pool(path)
            .await
            .with_context(|| format!("cannot open the spool {}", path.display()))?;
        let row = sqlx::query(
            "SELECT count(*), coalesce(sum(size), 0) FROM ( \
               SELECT length(ciphertext) + length(job_id) + length(event) AS size FROM spooled_events \
               UNION ALL \
               SELECT length(ciphertext) + length(request_id) + length(reason) FROM spooled_quarantine)",
        )
        .fetch_one(&pool)
        .await?;
        let (depth, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let depth = depth.unsigned_abs();
        let shared = Arc::new(Shared {
            pool,
            depth: AtomicU64::new(depth),
            bytes: AtomicU64::new(bytes.unsigned_abs() + depth * ROW_OVERHEAD),
            max_bytes,
            full: AtomicBool::new(false),
            wake: Notify::new(),
        });
        shared.publish_depth();
        if depth > 0 {
            tracing::warn!(
                rows = depth,
                "the spool holds deliveries from an earlier run; draining them into Postgres"
            );
        }
        let (queue, rx) = group_commit::queue(QUEUE_CAPACITY);
        let writer = tokio::spawn(writer::write_batches(shared.clone(), rx));
        Ok((Self { queue, shared }, writer))
    }

    /// Rows waiting to be drained (deliveries and quarantine rows).
    pub fn depth(&self) -> u64 {
        self.shared.depth.load(Ordering::Relaxed)
    }

    /// Whether a delivery can still be acknowledged here (`/readyz`).
    pub fn has_room(&self) -> bool {
        !self.shared.full.load(Ordering::Relaxed)
            && self.shared.bytes.load(Ordering::Relaxed) < self.shared.max_bytes
    }

    /// Commits `event` to the spool (durably, before returning). A
    /// delivery already spooled is a duplicate, even when the spool is full.
    pub async fn submit(&self, event: NewEvent) -> Result<InsertOutcome, SpoolError> {
        match self.queue.submit(event).await {
            Ok(outcome) => outcome,
            Err(Refused::Full) => Err(SpoolError::Full),
            Err(Refused::Stopped) => Err(SpoolError::Stopped),
        }
    }

    /// Keeps a refused delivery's quarantine row (CONTRACT §10) until
    /// Postgres can take it, committed durably before returning. Refused
    /// when the spool is full.
    pub async fn keep_quarantined(&self, row: &NewQuarantined) -> Result<(), SpoolError> {
        let size = quarantined_size(row);
        if self.shared.bytes.load(Ordering::Relaxed) + size > self.shared.max_bytes {
            self.shared.full.store(true, Ordering::Relaxed);
            return Err(SpoolError::Full);
        }
        sqlx::query(
            "INSERT INTO spooled_quarantine \
               (received_at, reason, request_id, bytes, seal_id, key_id, nonce, ciphertext, subjects) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(DbTime(row.received_at))
        .bind(row.reason)
        .bind(&row.request_id)
        .bind(i64::try_from(row.bytes).unwrap_or(i64::MAX))
        .bind(&row.seal_id)
        .bind(row.sealed.key_id.as_str())
        .bind(&row.sealed.nonce)
        .bind(&row.sealed.ciphertext)
        .bind(subject_bytes(&row.subjects))
        .execute(&self.shared.pool)
        .await
        .map_err(SpoolError::Failed)?;
        self.shared.added(1, size);
        Ok(())
    }

    /// Resolves when rows have arrived since the last call (a wake-up, not
    /// a count: the drainer reads the spool to know).
    pub async fn arrivals(&self) {
        self.shared.wake.notified().await;
    }

    /// Up to a batch of spooled deliveries after `seq`, oldest first.
    pub async fn read_after(&self, seq: i64) -> Result<SpooledBatch, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT seq, subjects, {} FROM spooled_events WHERE seq > ? ORDER BY seq LIMIT ?",
            EventColumns::new_event()
        ))
        .bind(seq)
        .bind(DRAIN_BATCH)
        .fetch_all(&self.shared.pool)
        .await?;
        let mut batch = SpooledBatch {
            seqs: Vec::with_capacity(rows.len()),
            events: Vec::with_capacity(rows.len()),
        };
        for row in &rows {
            batch.seqs.push(row.try_get::<i64, _>("seq")?);
            batch.events.push(codec::spooled_event(row)?);
        }
        Ok(batch)
    }

    /// Deletes a batch Postgres has committed.
    pub async fn forget(&self, done: SpooledBatch) -> Result<(), sqlx::Error> {
        let Some(last) = done.last_seq() else {
            return Ok(());
        };
        sqlx::query("DELETE FROM spooled_events WHERE seq <= ?")
            .bind(last)
            .execute(&self.shared.pool)
            .await?;
        let n = done.events.len() as u64;
        let freed: u64 = done.events.iter().map(row_size).sum();
        self.shared.removed(n, freed);
        tracing::info!(
            rows = n,
            left = self.depth(),
            "spooled deliveries moved into Postgres"
        );
        Ok(())
    }

    /// The oldest spooled quarantine rows (up to a pass), with their spool
    /// positions.
    pub async fn read_quarantined(&self) -> Result<Vec<(i64, NewQuarantined)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT seq, received_at, reason, request_id, bytes, seal_id, key_id, nonce, ciphertext, subjects \
             FROM spooled_quarantine ORDER BY seq LIMIT ?",
        )
        .bind(QUARANTINE_DRAIN_BATCH)
        .fetch_all(&self.shared.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, codec::spooled_quarantined(r)?)))
            .collect()
    }

    /// Deletes a quarantine row Postgres has committed.
    pub async fn forget_quarantined(
        &self,
        seq: i64,
        row: &NewQuarantined,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM spooled_quarantine WHERE seq = ?")
            .bind(seq)
            .execute(&self.shared.pool)
            .await?;
        self.shared.removed(1, quarantined_size(row));
        Ok(())
    }
}

impl Shared {
    /// Counts `rows` (of `bytes`) committed to the spool and wakes the
    /// drainer.
    fn added(&self, rows: u64, bytes: u64) {
        self.depth.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.publish_depth();
        metrics::counter!(crate::metrics::SPOOLED).increment(rows);
        self.wake.notify_one();
    }

    /// Counts `rows` (of `bytes`) moved out of the spool: there is room again.
    fn removed(&self, rows: u64, bytes: u64) {
        self.depth.fetch_sub(rows, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.full.store(false, Ordering::Relaxed);
        self.publish_depth();
        metrics::counter!(crate::metrics::SPOOL_DRAINED).increment(rows);
    }

    fn publish_depth(&self) {
        metrics::gauge!(crate::metrics::SPOOL_DEPTH).set(self.depth.load(Ordering::Relaxed) as f64);
    }
}
