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
//! - The drainer moves rows into Postgres oldest first, removing each only
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

use std::path::Path;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::crypto::{KeyId, Sealed};
use crate::event::{Envelope, InsertOutcome, NewEvent};
use crate::store::quarantine::NewQuarantined;
use crate::store::{Store, StoreError};
use crate::subjects::SubjectHash;

/// Most deliveries written to the spool per transaction.
const MAX_BATCH: usize = 512;
/// Deliveries waiting for the spool writer before new ones get 503.
const QUEUE_CAPACITY: usize = 8192;
/// Rows moved into Postgres per transaction by the drainer.
const DRAIN_BATCH: i64 = 2000;
/// Longest a drain batch may wait for Postgres' commit (a healthy one takes
/// a fraction of a second) before the pass is given up and retried.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the drainer looks again while Postgres is unreachable (and,
/// when idle, in case a row arrived without waking it).
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Bytes a row costs beyond its payload (columns, index entries, pages).
const ROW_OVERHEAD: u64 = 256;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spooled_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    pattern_id  TEXT,
    status      TEXT,
    received_at INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    -- The delivery's subject hashes (32 bytes each), for erasure.
    subjects    BLOB    NOT NULL DEFAULT x'',
    -- The validation verdict (CONTRACT §12): 1, 0 or NULL, and the errors
    -- as JSON. Schema version 1.
    valid             INTEGER,
    validation_errors TEXT,
    UNIQUE (job_id, event)
)";

/// The spool file's schema version (`PRAGMA user_version`). A spool left
/// by a crash of an older release is migrated when it is opened:
/// 0 → 1 adds the verdict columns to `spooled_events`.
const SCHEMA_VERSION: i64 = 1;

/// Creates the spool's tables, or migrates those of an older release.
pub(crate) async fn ensure_schema(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(SCHEMA).execute(&mut *conn).await?;
    sqlx::query(QUARANTINE_SCHEMA).execute(&mut *conn).await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('spooled_events')")
            .fetch_all(&mut *conn)
            .await?;
    for (column, ty) in [("valid", "INTEGER"), ("validation_errors", "TEXT")] {
        if !columns.iter().any(|c| c == column) {
            sqlx::query(&format!(
                "ALTER TABLE spooled_events ADD COLUMN {column} {ty}"
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    sqlx::query(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Quarantine rows (refused signed deliveries) that Postgres could not
/// take: kept here as the deliveries are, and moved after them.
const QUARANTINE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spooled_quarantine (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    bytes       INTEGER NOT NULL,
    seal_id     TEXT    NOT NULL UNIQUE,
    key_id      TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    subjects    BLOB    NOT NULL DEFAULT x''
)";
/// Quarantine rows moved into Postgres per pass (each its own transaction).
const QUARANTINE_DRAIN_BATCH: i64 = 100;

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
    queue: mpsc::Sender<Job>,
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
    /// Postgres was found unable to commit and has not been seen to
    /// recover: deliveries go straight to the spool.
    database_down: AtomicBool,
    /// A delivery was refused for want of room since the last drain.
    full: AtomicBool,
    /// Wakes the drainer when rows arrive.
    wake: Notify,
}

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<InsertOutcome, SpoolError>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("depth", &self.depth())
            .finish_non_exhaustive()
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
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit survives power loss (NORMAL in WAL may lose
            // the last transactions), and the 200 waits for it.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the spool {}", path.display()))?;
        ensure_schema(&mut *pool.acquire().await?)
            .await
            .with_context(|| format!("cannot migrate the spool {}", path.display()))?;
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
            database_down: AtomicBool::new(false),
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
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = tokio::spawn(write_batches(shared.clone(), rx));
        Ok((Self { queue, shared }, writer))
    }

    /// Whether new deliveries should come here rather than to Postgres:
    /// Postgres was just found unable to commit, or spooled rows are still
    /// waiting (a redelivery of one of them must find it).
    pub fn is_active(&self) -> bool {
        self.shared.database_down.load(Ordering::Relaxed)
            || self.shared.depth.load(Ordering::Relaxed) > 0
    }

    /// Records that Postgres could not commit: until the drainer sees it
    /// answer again, deliveries come here first.
    pub fn database_failed(&self) {
        self.shared.database_down.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
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
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job { event, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SpoolError::Full,
                mpsc::error::TrySendError::Closed(_) => SpoolError::Stopped,
            })?;
        answer.await.unwrap_or(Err(SpoolError::Stopped))
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
        .bind(row.received_at.timestamp_micros())
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

    /// Moves spooled rows into `store` until `shutdown`: whenever rows
    /// arrive, and every [`RETRY_INTERVAL`] while Postgres is unreachable.
    /// Quarantine rows go in capped at `quarantine_max_rows`.
    pub async fn drain_into(
        self,
        store: Store,
        quarantine_max_rows: u32,
        shutdown: CancellationToken,
    ) {
        loop {
            let drained = async {
                self.drain_once(&store).await?;
                self.drain_quarantined(&store, quarantine_max_rows).await
            };
            match drained.await {
                Ok(()) => {
                    self.shared.database_down.store(false, Ordering::Relaxed);
                    // Wait for rows (or a missed wake-up) before looking again.
                    tokio::select! {
                        () = self.shared.wake.notified() => {}
                        () = tokio::time::sleep(RETRY_INTERVAL * 4) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                Err(e) => {
                    self.shared.database_down.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, rows = self.depth(), "spool cannot drain yet; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_INTERVAL) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Moves every spooled row into `store`, oldest first, each batch in two
    /// concurrent Postgres transactions. The spool's work for the next batch
    /// (read it, forget the last one) runs while Postgres commits this one,
    /// so a backlog drains at the pace of Postgres' commits.
    async fn drain_once(&self, store: &Store) -> Result<(), DrainError> {
        let mut batch = self.read_after(0).await?;
        // Committed in Postgres, not yet deleted from the spool.
        let mut committed: Option<Batch> = None;
        loop {
            let Some(last) = batch.last_seq() else {
                return match committed {
                    Some(done) => self.forget(done).await,
                    None => Ok(()),
                };
            };
            // A delivery whose subject was erased (on any replica) after it
            // was spooled is refused by the insert itself, which remembers
            // its key: checked here, a racing erasure could slip between.
            let refs: Vec<&NewEvent> = batch.events.iter().collect();
            let spool_side = async {
                if let Some(done) = committed.take() {
                    self.forget(done).await?;
                }
                self.read_after(last).await
            };
            // Two transactions at once, on two connections: one commits
            // while Postgres works on the other. Both must commit before the
            // spool forgets either half (a crash between re-sends them;
            // Postgres answers duplicate).
            let (older, newer) = refs.split_at(refs.len() / 2);
            // A database that hangs (a stalled network sends no reset)
            // must not hold the drainer: the pass fails and is retried.
            let postgres_side = tokio::time::timeout(DRAIN_TIMEOUT, async {
                let (first, second) =
                    tokio::join!(store.insert_batch(older), store.insert_batch(newer));
                first.and(second)
            });
            let (committed_both, next) = tokio::join!(postgres_side, spool_side);
            committed_both
                .map_err(|_| DrainError::Timeout)?
                .map_err(DrainError::Database)?;
            // Only once Postgres committed it may the spool forget it.
            committed = Some(batch);
            batch = next?;
        }
    }

    /// Moves every spooled quarantine row into `store`, oldest first, each
    /// in its own transaction and forgotten only once committed (a crash
    /// in between moves it again; its `seal_id` keeps it once). A row whose
    /// subject was erased after it arrived is dropped.
    async fn drain_quarantined(&self, store: &Store, max_rows: u32) -> Result<(), DrainError> {
        loop {
            let rows = sqlx::query(
                "SELECT seq, received_at, reason, request_id, bytes, seal_id, key_id, nonce, ciphertext, subjects \
                 FROM spooled_quarantine ORDER BY seq LIMIT ?",
            )
            .bind(QUARANTINE_DRAIN_BATCH)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(DrainError::Spool)?;
            if rows.is_empty() {
                return Ok(());
            }
            let rows = rows
                .iter()
                .map(|r| Ok((r.try_get::<i64, _>("seq")?, spooled_quarantined(r)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(DrainError::Spool)?;
            for (seq, row) in &rows {
                // A row whose subject was erased after it arrived is
                // refused by the insert itself (checked in its transaction:
                // checked here first, an erasure could slip between).
                tokio::time::timeout(DRAIN_TIMEOUT, store.quarantine(row, max_rows))
                    .await
                    .map_err(|_| DrainError::Timeout)?
                    .map_err(DrainError::Database)?;
                sqlx::query("DELETE FROM spooled_quarantine WHERE seq = ?")
                    .bind(seq)
                    .execute(&self.shared.pool)
                    .await
                    .map_err(DrainError::Spool)?;
                self.shared.removed(1, quarantined_size(row));
            }
            tracing::info!(
                rows = rows.len(),
                left = self.depth(),
                "spooled quarantine rows moved into Postgres"
            );
        }
    }

    /// Up to [`DRAIN_BATCH`] spooled rows after `seq`, oldest first.
    async fn read_after(&self, seq: i64) -> Result<Batch, DrainError> {
        let rows = sqlx::query(
            "SELECT seq, job_id, event, pattern_id, status, received_at, key_id, nonce, ciphertext, \
               subjects, valid, validation_errors \
             FROM spooled_events WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(seq)
        .bind(DRAIN_BATCH)
        .fetch_all(&self.shared.pool)
        .await
        .map_err(DrainError::Spool)?;
        let mut batch = Batch {
            seqs: Vec::with_capacity(rows.len()),
            events: Vec::with_capacity(rows.len()),
        };
        for row in &rows {
            batch
                .seqs
                .push(row.try_get::<i64, _>("seq").map_err(DrainError::Spool)?);
            batch
                .events
                .push(spooled_event(row).map_err(DrainError::Spool)?);
        }
        Ok(batch)
    }

    /// Deletes a batch Postgres has committed.
    async fn forget(&self, done: Batch) -> Result<(), DrainError> {
        let Some(last) = done.last_seq() else {
            return Ok(());
        };
        sqlx::query("DELETE FROM spooled_events WHERE seq <= ?")
            .bind(last)
            .execute(&self.shared.pool)
            .await
            .map_err(DrainError::Spool)?;
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
}

/// Spooled rows read for one drain transaction.
struct Batch {
    seqs: Vec<i64>,
    events: Vec<NewEvent>,
}

impl Batch {
    fn last_seq(&self) -> Option<i64> {
        self.seqs.last().copied()
    }
}

#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error("Postgres did not commit within {DRAIN_TIMEOUT:?}")]
    Timeout,
    #[error("the spool could not be read or trimmed: {0}")]
    Spool(#[source] sqlx::Error),
    #[error("Postgres did not commit: {0}")]
    Database(#[source] StoreError),
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

/// The spool writer: everything queued is committed in one transaction, then
/// each requester gets its own outcome (a failed commit fails them all).
async fn write_batches(shared: Arc<Shared>, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let room = shared
            .max_bytes
            .saturating_sub(shared.bytes.load(Ordering::Relaxed));
        match insert(&shared.pool, &jobs, room).await {
            Ok(outcomes) => {
                let (mut added, mut bytes) = (0u64, 0u64);
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    match outcome {
                        Ok(InsertOutcome::Inserted) => {
                            added += 1;
                            bytes += row_size(&job.event);
                        }
                        Err(SpoolError::Full) => shared.full.store(true, Ordering::Relaxed),
                        _ => {}
                    }
                    let _ = job.reply.send(outcome);
                }
                shared.added(added, bytes);
            }
            Err(e) => {
                tracing::error!(error = %e, rows = jobs.len(), "the spool could not commit");
                for job in jobs.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(SpoolError::Failed(sqlx::Error::WorkerCrashed)));
                }
            }
        }
    }
}

/// Writes `jobs` in one transaction, adding at most `room` bytes: a row
/// past it is a duplicate if already spooled, else refused as full.
async fn insert(
    pool: &SqlitePool,
    jobs: &[Job],
    mut room: u64,
) -> Result<Vec<Result<InsertOutcome, SpoolError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (e, s) = (&job.event.envelope, &job.event.sealed);
        let size = row_size(&job.event);
        if size > room {
            let spooled: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM spooled_events WHERE job_id = ? AND event = ?)",
            )
            .bind(&e.job_id)
            .bind(&e.event)
            .fetch_one(&mut *tx)
            .await?;
            outcomes.push(if spooled {
                Ok(InsertOutcome::Duplicate)
            } else {
                Err(SpoolError::Full)
            });
            continue;
        }
        let affected = sqlx::query(
            "INSERT INTO spooled_events \
               (job_id, event, pattern_id, status, received_at, key_id, nonce, ciphertext, subjects, \
                valid, validation_errors) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, event) DO NOTHING",
        )
        .bind(&e.job_id)
        .bind(&e.event)
        .bind(&e.pattern_id)
        .bind(&e.status)
        .bind(job.event.received_at.timestamp_micros())
        .bind(s.key_id.as_str())
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(subject_bytes(&job.event.subjects))
        .bind(job.event.verdict.valid)
        .bind(job.event.verdict.errors_json())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        outcomes.push(Ok(if affected == 1 {
            room -= size;
            InsertOutcome::Inserted
        } else {
            InsertOutcome::Duplicate
        }));
    }
    tx.commit().await?;
    Ok(outcomes)
}

fn spooled_event(row: &sqlx::sqlite::SqliteRow) -> Result<NewEvent, sqlx::Error> {
    let key_id: String = row.try_get("key_id")?;
    let micros: i64 = row.try_get("received_at")?;
    Ok(NewEvent {
        envelope: Envelope {
            job_id: row.try_get("job_id")?,
            event: row.try_get("event")?,
            pattern_id: row.try_get("pattern_id")?,
            status: row.try_get("status")?,
        },
        sealed: Sealed {
            key_id: KeyId::new(&key_id).map_err(|e| sqlx::Error::Decode(e.into()))?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        },
        received_at: DateTime::from_timestamp_micros(micros).unwrap_or_default(),
        subjects: subjects_of(row)?,
        verdict: crate::validation::Verdict::from_columns(
            row.try_get("valid")?,
            row.try_get::<Option<String>, _>("validation_errors")?
                .as_deref(),
        ),
    })
}

fn spooled_quarantined(row: &sqlx::sqlite::SqliteRow) -> Result<NewQuarantined, sqlx::Error> {
    let key_id: String = row.try_get("key_id")?;
    let reason: String = row.try_get("reason")?;
    let micros: i64 = row.try_get("received_at")?;
    Ok(NewQuarantined {
        received_at: DateTime::from_timestamp_micros(micros).unwrap_or_default(),
        reason: crate::quarantine::known_reason(&reason).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown quarantine reason {reason:?}").into())
        })?,
        request_id: row.try_get("request_id")?,
        bytes: row.try_get::<i64, _>("bytes")?.unsigned_abs(),
        seal_id: row.try_get("seal_id")?,
        sealed: Sealed {
            key_id: KeyId::new(&key_id).map_err(|e| sqlx::Error::Decode(e.into()))?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        },
        subjects: subjects_of(row)?,
    })
}

/// Subject hashes as stored: 32 bytes each, back to back.
fn subject_bytes(subjects: &[SubjectHash]) -> Vec<u8> {
    subjects.iter().flat_map(|h| h.0).collect()
}

fn subjects_of(row: &sqlx::sqlite::SqliteRow) -> Result<Vec<SubjectHash>, sqlx::Error> {
    Ok(row
        .try_get::<Vec<u8>, _>("subjects")?
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(SubjectHash))
        .collect())
}

/// What a quarantine row is counted as against `spool.max_bytes`.
fn quarantined_size(row: &NewQuarantined) -> u64 {
    (row.sealed.ciphertext.len() + row.request_id.len() + row.reason.len()) as u64 + ROW_OVERHEAD
}

/// What a row is counted as against `spool.max_bytes`.
fn row_size(event: &NewEvent) -> u64 {
    let e = &event.envelope;
    (event.sealed.ciphertext.len() + e.job_id.len() + e.event.len()) as u64 + ROW_OVERHEAD
}
