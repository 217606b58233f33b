//! The Postgres store: several replicas may share it.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection as _;
use tracing::instrument;

use chrono::{DateTime, Utc};

use super::pg_connect::{connect_options, describe, refused, unreachable, worth_retrying};
use super::{
    EventColumns, InsertOutcome, NewEvent, PgEventArrays, PurgeOutcome, StoreError, StoredEvent,
};
use crate::config::DatabaseSettings;
use crate::dedup::DedupKey;

/// Advisory lock id held by the replica that is purging ("imggo-pu").
const PURGE_LOCK_KEY: i64 = 0x696d_6767_6f2d_7075;

/// Advisory lock id that orders erasure against inserts ("imggo-er"):
/// every insert transaction holds it shared, an erasure (or a job delete)
/// holds it exclusively. See [`lock_out_inserts`].
const ERASURE_LOCK_KEY: i64 = 0x696d_6767_6f2d_6572;

pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The shared pool's options. The batch writers open their `writers`
/// connections from their own thread (`own_pool`), and the feed watcher one
/// for LISTEN (`store::feed`): the rest of the budget is this pool's.
fn pool_options(db: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(db.max_connections.saturating_sub(db.writers + 1).max(1))
        .acquire_timeout(db.acquire_timeout)
}

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects, retrying with backoff until `db.connect_timeout` runs out
    /// while waiting can help (see [`worth_retrying`]); a refusal that
    /// waiting cannot fix ends it at once with [`StoreError::Refused`].
    pub async fn connect(url: &str, db: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        let deadline = tokio::time::Instant::now() + db.connect_timeout;
        let mut backoff = Duration::from_millis(200);
        loop {
            // One plain connection first: its error says why (refused, no
            // such host, TLS), where a pool's says only that it timed out.
            let attempt = tokio::time::timeout_at(deadline, PgConnection::connect_with(&options));
            let Ok(attempt) = attempt.await else {
                return Err(unreachable(None, db.connect_timeout));
            };
            match attempt {
                Ok(conn) => {
                    let _ = conn.close().await;
                    let pool = pool_options(db).connect_lazy_with(options);
                    return Ok(Self { pool });
                }
                Err(e) if !worth_retrying(&e) => return Err(refused(&e)),
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(error = %describe(&e), "database not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(unreachable(Some(&e), db.connect_timeout)),
            }
        }
    }

    /// A store whose pool connects on first use, without waiting for the
    /// server: for a start that must not depend on Postgres answering
    /// (`store::deferred`). Fails only on a URL that cannot be used.
    pub fn lazy(url: &str, db: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        Ok(Self {
            pool: pool_options(db).connect_lazy_with(options),
        })
    }

    /// Wraps an existing pool (tests, tools).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A store over a pool of its own, `connections` large, with this one's
    /// connect options and acquire timeout; it connects lazily. Must be
    /// called inside the runtime that will use it: each connection's socket
    /// belongs to the runtime that opened it (see `store::batch`).
    ///
    /// These sessions write every delivery. With `backend_flush_after` they
    /// ask the kernel to start writing back the table pages they evict from
    /// Postgres' buffers every 256 kB, instead of leaving a burst's worth of
    /// dirty page cache to be flushed at once 30 s later, which stalled
    /// commits (and so every waiting delivery) for up to 250 ms. Postgres
    /// documents the setting for exactly this; it is per session, so the
    /// server's configuration is untouched.
    pub fn own_pool(&self, connections: u32) -> Self {
        let options = (*self.pool.connect_options())
            .clone()
            .options([("backend_flush_after", "256kB")]);
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(self.pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn migrator(&self) -> &'static Migrator {
        &MIGRATOR
    }

    /// Inserts a batch in one statement (one transaction, one commit) and
    /// reports each event's outcome in order. Duplicates inside the batch
    /// count once: the first is inserted, the rest are duplicates.
    pub async fn insert_batch(
        &self,
        events: &[&NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_rows(&mut conn, events).await
    }

    /// [`Self::insert_batch`] on the connection in `held`, checking one out
    /// of the pool first if it is empty. A batch writer keeps its connection
    /// between batches, which spares it the pool's checkout and liveness
    /// ping (a round trip) per batch. A kept connection may have died in
    /// the meantime (server restart, backend terminated): if the batch fails
    /// for that kind of reason, it is written once more on a connection the
    /// pool has just checked. The statement is idempotent (`ON CONFLICT DO
    /// NOTHING`), so if the first attempt did commit, its rows come back as
    /// duplicates: stored either way. After any other error the connection
    /// goes back to the pool, which checks it before lending it again.
    pub async fn insert_batch_held(
        &self,
        held: &mut HeldConnection,
        events: &[&NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let held = &mut held.0;
        if let Some(conn) = held {
            match insert_rows(conn, events).await {
                Ok(outcomes) => return Ok(outcomes),
                Err(StoreError::Unavailable(e)) => {
                    tracing::debug!(error = %e, "kept connection failed; retrying on a fresh one");
                    *held = None;
                }
                Err(e) => {
                    *held = None;
                    return Err(e);
                }
            }
        }
        let mut conn = self.pool.acquire().await?;
        let outcomes = insert_rows(&mut conn, events).await?;
        *held = Some(conn);
        Ok(outcomes)
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    pub async fn events_for_job(&self, job_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as::<_, StoredEvent>(&format!(
            "SELECT {} FROM webhook_events WHERE job_id = $1 ORDER BY received_at, id",
            EventColumns::pg()
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Rows received before `cutoff`.
    pub async fn count_expired(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE received_at < $1")
                .bind(cutoff)
                .fetch_one(&self.pool)
                .await?;
        Ok(n.unsigned_abs())
    }

    /// Deletes rows received before `cutoff`, in batches. Only one replica
    /// purges at a time (a session advisory lock); the others skip.
    #[instrument(skip_all)]
    pub async fn purge(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
    ) -> Result<PurgeOutcome, StoreError> {
        // The lock lives on one connection: take, use and release it there.
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PURGE_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(PurgeOutcome::Skipped);
        }
        // Counted under the lock, so only the purging replica counts.
        let missed = super::forward::count_missed_pg(&self.pool, cutoff).await;
        if let Err(e) = super::forward::purge_pg(&self.pool, cutoff).await {
            tracing::warn!(error = %e, "cannot purge old forwarding notices and dead letters");
        }
        crate::metrics::forward_missed(missed);
        // The lock guards the pass; its batches may run on any connection.
        let result = super::delete_in_batches(batch_size, || async {
            Ok(sqlx::query(
                // ANY(ARRAY(...)) keeps the outer delete on the primary
                // key; `IN (subquery)` plans a hash join over the table.
                "DELETE FROM webhook_events WHERE id = ANY(ARRAY( \
                   SELECT id FROM webhook_events WHERE received_at < $1 \
                   ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
            )
            .bind(cutoff)
            .bind(i64::from(batch_size))
            .execute(&self.pool)
            .await?
            .rows_affected())
        })
        .await;
        // If the unlock fails the connection is broken, and the lock went with it.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PURGE_LOCK_KEY)
            .execute(&mut *conn)
            .await;
        Ok(PurgeOutcome::Deleted(result?))
    }

    /// Up to `limit` rows with `id > after` not sealed under `current_key`.
    pub async fn sealed_under_other_keys(
        &self,
        current_key: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as::<_, StoredEvent>(&format!(
            "SELECT {} FROM webhook_events \
             WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3",
            EventColumns::pg()
        ))
        .bind(current_key)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
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

/// Maps the (job_id, event) pairs a batch insert returned back onto the
/// batch: the first event holding a returned pair was inserted, every other
/// one (stored before, or repeated inside the batch) is a duplicate.
fn claim_outcomes(events: &[&NewEvent], inserted: Vec<(String, String)>) -> Vec<InsertOutcome> {
    let mut fresh: std::collections::HashSet<DedupKey<'_>> =
        inserted.iter().map(|(j, e)| DedupKey::new(j, e)).collect();
    events
        .iter()
        .map(|e| {
            if fresh.remove(&e.envelope.key()) {
                InsertOutcome::Inserted
            } else {
                InsertOutcome::Duplicate
            }
        })
        .collect()
}

/// Holds every insert off until the calling transaction ends, after
/// waiting for the inserts in flight to commit: an erasure that deletes
/// after this sees every event committed before it, and every insert that
/// commits after it sees its tombstones (PITFALLS "Erasure").
pub(crate) async fn lock_out_inserts(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ERASURE_LOCK_KEY)
        .execute(conn)
        .await?;
    Ok(())
}

/// `BEGIN` and [`lock_shared`] in one simple-protocol round trip: the
/// batch insert's transaction start (its key is [`ERASURE_LOCK_KEY`]).
const BEGIN_HOLDING_ERASURE_LOCK: &str =
    "BEGIN; SELECT pg_advisory_xact_lock_shared(7596841840388433266)";

/// Holds the erasure lock shared until the calling transaction ends: an
/// erasure waits for this transaction, and this transaction's next
/// statement sees every erasure that committed before.
pub(crate) async fn lock_shared(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(ERASURE_LOCK_KEY)
        .execute(conn)
        .await?;
    Ok(())
}

/// The batch statement. An event is *barred*, stored nowhere and answered
/// as a duplicate, when its (job_id, event) was erased or deleted before,
/// or when one of its subjects was erased, or its job deleted, at or after
/// its receipt (it was received before the erasure answered, and commits
/// after it). A barred key is remembered like an erased one. The rest are
/// inserted once per (job_id, event), each with its subject hashes in the
/// row: `$9` holds every subject hash of the batch, `$10` the 1-based
/// position of its event in the batch.
///
/// The subject and job tombstones are looked at per event only when one
/// was written at or after the batch's oldest receipt (one probe of their
/// `erased_at` index per batch): erasures are rare, deliveries are not.
static INSERT_BATCH: LazyLock<String> = LazyLock::new(|| {
    let (columns, arrays) = (EventColumns::new_event(), EventColumns::pg_arrays());
    let (subject, subject_of) = (
        EventColumns::new_event_count() + 1,
        EventColumns::new_event_count() + 2,
    );
    format!(
        "\
    WITH batch AS ( \
      SELECT * FROM UNNEST({arrays}) WITH ORDINALITY AS b({columns}, n)), \
    subj AS ( \
      SELECT n, array_agg(subject) AS subjects \
      FROM UNNEST(${subject}::bytea[], ${subject_of}::int8[]) AS s(subject, n) GROUP BY n), \
    rows AS ( \
      SELECT b.*, s.subjects FROM batch b LEFT JOIN subj s USING (n)), \
    since AS ( \
      SELECT EXISTS (SELECT 1 FROM erased_subjects WHERE erased_at >= t.oldest) AS subjects, \
             EXISTS (SELECT 1 FROM erased_jobs WHERE erased_at >= t.oldest) AS jobs \
      FROM (SELECT min(received_at) AS oldest FROM batch) t), \
    barred AS ( \
      SELECT b.job_id, b.event FROM rows b \
      WHERE EXISTS (SELECT 1 FROM erased_events x \
                    WHERE x.job_id = b.job_id AND x.event = b.event) \
         OR ((SELECT subjects FROM since) AND b.subjects IS NOT NULL \
             AND EXISTS (SELECT 1 FROM erased_subjects es \
                         WHERE es.subject = ANY (b.subjects) AND es.erased_at >= b.received_at)) \
         OR ((SELECT jobs FROM since) \
             AND EXISTS (SELECT 1 FROM erased_jobs j \
                         WHERE j.job_id = b.job_id AND j.erased_at >= b.received_at))), \
    ins AS ( \
      INSERT INTO webhook_events ({columns}, subjects) \
      SELECT {columns}, subjects FROM rows b \
      WHERE NOT EXISTS (SELECT 1 FROM barred x WHERE x.job_id = b.job_id AND x.event = b.event) \
      ON CONFLICT (job_id, event) DO NOTHING \
      RETURNING job_id, event), \
    remembered AS ( \
      INSERT INTO erased_events (job_id, event, erased_at) \
      SELECT DISTINCT job_id, event, now() FROM barred \
      ON CONFLICT (job_id, event) DO NOTHING) \
    SELECT job_id, event FROM ins"
    )
});

/// One statement for the whole batch, in one transaction that holds the
/// erasure lock shared (see [`lock_out_inserts`]): one commit.
#[instrument(skip_all, fields(rows = events.len()))]
pub(super) async fn insert_rows(
    conn: &mut sqlx::PgConnection,
    events: &[&NewEvent],
) -> Result<Vec<InsertOutcome>, StoreError> {
    use sqlx::Connection as _;
    let mut columns = PgEventArrays::default();
    // Subject hashes, each with its event's 1-based position in the batch.
    let (mut subjects, mut subject_of) = (Vec::new(), Vec::new());
    for (e, n) in events.iter().zip(1_i64..) {
        for s in &e.subjects {
            subjects.push(s.as_bytes());
            subject_of.push(n);
        }
        columns.push(e);
    }
    // The transaction opens with the erasure lock held shared, in one round
    // trip: inserts never wait for each other, only for an erasure, and
    // the statement's snapshot is newer than any erasure that held it.
    // Inside a caller's transaction (`rejected replay --body`), a savepoint
    // and the lock as a statement of its own.
    let mut tx = if conn.is_in_transaction() {
        let mut tx = conn.begin().await?;
        lock_shared(&mut tx).await?;
        tx
    } else {
        conn.begin_with(BEGIN_HOLDING_ERASURE_LOCK).await?
    };
    let inserted: Vec<(String, String)> = columns
        .bind(sqlx::query(&INSERT_BATCH))
        .bind(&subjects)
        .bind(&subject_of)
        .try_map(|row: sqlx::postgres::PgRow| sqlx::FromRow::from_row(&row))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(claim_outcomes(events, inserted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_names_the_event_columns_once_and_numbers_the_subjects_after_them() {
        let sql = &*INSERT_BATCH;
        assert!(sql.contains(
            "UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
             $6::text[], $7::bytea[], $8::bytea[], $9::bool[], $10::text[]) WITH ORDINALITY"
        ));
        assert!(sql.contains("UNNEST($11::bytea[], $12::int8[])"));
        assert!(sql.contains(&format!(
            "INSERT INTO webhook_events ({}, subjects)",
            EventColumns::new_event()
        )));
    }

    #[test]
    fn the_batch_transaction_takes_the_erasure_lock() {
        assert!(BEGIN_HOLDING_ERASURE_LOCK
            .ends_with(&format!("pg_advisory_xact_lock_shared({ERASURE_LOCK_KEY})")));
    }
}
