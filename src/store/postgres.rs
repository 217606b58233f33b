//! The Postgres store: several replicas may share it.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection as _;
use tokio::sync::Notify;
use tracing::instrument;

use chrono::{DateTime, Utc};

use super::partitions::{self, Layout};
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
/// connections from their own thread (`own_pool`): the rest of the budget
/// is this pool's.
fn pool_options(db: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(db.max_connections.saturating_sub(db.writers).max(1))
        .acquire_timeout(db.acquire_timeout)
}

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    layout: Layout,
    /// Pinged after each commit of events by this process (every store
    /// made from this one shares it): what the feed watcher wakes on.
    commits: Arc<Notify>,
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
                    return Ok(Self::from_pool(pool));
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
        Ok(Self::from_pool(pool_options(db).connect_lazy_with(options)))
    }

    /// Wraps an existing pool (tests, tools).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            layout: Layout::default(),
            commits: Arc::new(Notify::new()),
        }
    }

    /// What the feed watcher waits on for this process's commits of events.
    pub fn commits(&self) -> Arc<Notify> {
        self.commits.clone()
    }

    /// This store with the partition interval and retention of `layout`
    /// (the default: daily partitions, every stored row served).
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Makes the partitions from now to two intervals ahead
    /// (`store::partitions`): start-up runs it after the migrations, each
    /// purge pass again.
    pub async fn make_partitions(&self) -> Result<(), StoreError> {
        partitions::warn_if_locks_run_short(&self.pool, &self.layout).await;
        partitions::make_ahead(&self.pool, &self.layout, Utc::now()).await
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
        Self {
            pool,
            layout: self.layout,
            commits: self.commits.clone(),
        }
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
        self.insert_rows(&mut conn, events).await
    }

    /// [`insert_rows`], making first the partitions the batch needs if no
    /// partition holds one of its rows (Postgres says so with 23514, and
    /// the statement changed nothing).
    pub(super) async fn insert_rows(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let kept = partitions::key_window(self.layout.served_since());
        let first = insert_rows(conn, events, kept).await;
        if !first.as_ref().is_err_and(no_partition) {
            return self.committed(first);
        }
        // Neither a partition that cannot be made now (its ATTACH timed out
        // behind a retention pass's detach) nor one dropped again meanwhile
        // is the batch's fault: Unavailable, so the batch goes to the spool
        // whole instead of being retried row by row, each waiting as long.
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
        partitions::cover_times(&self.pool, &self.layout, &times)
            .await
            .map_err(retry_later)?;
        let second = insert_rows(conn, events, kept).await.map_err(|e| {
            if no_partition(&e) {
                retry_later(e)
            } else {
                e
            }
        });
        self.committed(second)
    }

    /// Wakes this process's feed watcher after a batch committed. Inside a
    /// caller's transaction (`rejected replay`, a process of its own with
    /// no watcher) the ping reaches nobody: a server learns of that commit
    /// on its own rechecks (`feed::FeedWatcher`).
    fn committed<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        if outcome.is_ok() {
            self.commits.notify_one();
        }
        outcome
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
            match self.insert_rows(conn, events).await {
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
        let outcomes = self.insert_rows(&mut conn, events).await?;
        *held = Some(conn);
        Ok(outcomes)
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    pub async fn events_for_job(&self, job_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as::<_, StoredEvent>(&format!(
            "SELECT {} FROM webhook_events WHERE job_id = $1 \
             AND received_at >= $2 ORDER BY received_at, id",
            EventColumns::pg()
        ))
        .bind(job_id)
        .bind(self.layout.served_since())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Rows that a purge at `cutoff` removes: those of the partitions
    /// wholly before it.
    pub async fn count_expired(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let parts = partitions::list(&mut conn, partitions::EVENTS).await?;
        let mut n = 0;
        for part in partitions::expired(&parts, cutoff) {
            n += partitions::rows_in(&mut conn, part).await?;
        }
        Ok(n)
    }

    /// One retention pass: makes the partitions ahead, then detaches and
    /// drops every partition (events and dedup keys) whose upper bound is
    /// at or before `cutoff`: two statements per partition, whatever it
    /// holds. Only one replica purges at a time (a session advisory lock);
    /// the others skip. Returns the events removed.
    #[instrument(skip_all)]
    pub async fn purge(&self, cutoff: DateTime<Utc>) -> Result<PurgeOutcome, StoreError> {
        // The lock lives on one connection: take, use and release it there.
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PURGE_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(PurgeOutcome::Skipped);
        }
        let result = self.purge_locked(&mut conn, cutoff).await;
        // If the unlock fails the connection is broken, and the lock went with it.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PURGE_LOCK_KEY)
            .execute(&mut *conn)
            .await;
        Ok(PurgeOutcome::Deleted(result?))
    }

    async fn purge_locked(
        &self,
        conn: &mut sqlx::PgConnection,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if let Err(e) = partitions::make_ahead(&self.pool, &self.layout, Utc::now()).await {
            // Inserts make what they need on demand: retention goes on.
            tracing::warn!(error = %e, "cannot make the time partitions ahead");
        }
        partitions::drop_leftovers(conn).await?;
        let parts = partitions::list(conn, partitions::EVENTS).await?;
        let expired = partitions::expired(&parts, cutoff);
        // Counted under the lock, so only the purging replica counts.
        let missed = super::forward::count_missed_pg(&self.pool, cutoff).await;
        if let Err(e) = super::forward::purge_pg(&self.pool, cutoff).await {
            tracing::warn!(error = %e, "cannot purge old forwarding notices and dead letters");
        }
        crate::metrics::forward_missed(missed);
        let mut deleted = 0;
        for part in expired {
            let rows = partitions::rows_in(conn, part).await?;
            partitions::drop_partition(conn, partitions::EVENTS, part).await?;
            tracing::info!(partition = %part.name, rows, "dropped an expired partition");
            deleted += rows;
        }
        // Sealed first: a day's keys go to their window, which may be past
        // max_age already (rows received long ago) and go with it now.
        if let Err(e) = partitions::seal(&self.pool, conn, Utc::now()).await {
            // The days wait (inserts probe them as they are); retention of
            // the key windows goes on.
            tracing::warn!(error = %e, "cannot seal the claim days; next pass");
        }
        let keys = partitions::list(conn, partitions::KEYS).await?;
        for part in partitions::expired(&keys, cutoff) {
            partitions::drop_partition(conn, partitions::KEYS, part).await?;
        }
        Ok(deleted)
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

/// Postgres found no partition for a row (23514, and the statement
/// changed nothing).
fn no_partition(e: &StoreError) -> bool {
    matches!(e, StoreError::Other(sqlx::Error::Database(db))
        if db.code().as_deref() == Some("23514") && db.message().contains("no partition"))
}

/// `e` as a failure waiting can fix ([`StoreError::Unavailable`]).
fn retry_later(e: StoreError) -> StoreError {
    match e {
        StoreError::Other(e) => StoreError::Unavailable(e),
        e => e,
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

/// Lock class of the per-key advisory locks ("imky"); see [`Guard`].
const KEY_LOCK_CLASS: i32 = 0x696d_6b79;

/// How near a claim day's edge a row must be for its key to be locked,
/// and how old a row must be for its batch to be serialized; see [`Guard`].
/// A row is stored within milliseconds of its receipt unless Postgres was
/// away (a spool draining) or an operator replays it: ten minutes apart
/// from now is already one of those. Two replicas' receipts of one key in
/// flight at once differ by less than `OLD` plus their clocks' skew, so
/// the key locks hold for clocks up to 50 minutes apart.
const NEAR_EDGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);
const OLD: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Whether a row received `at` is [`OLD`] at `now`: it claims on today
/// ([`claim_days`]) and its batch runs alone ([`Guard::for_batch`]), one
/// rule for both.
fn is_old(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    at < now - OLD
}

/// What keeps two deliveries of one (job_id, event) claimed on different
/// days (`event_claims`, [`claim_days`]) from both being stored. On one day ON
/// CONFLICT decides: the second waits for the first's commit and finds its
/// key. Across days, and against the sealed windows (`event_keys`), each
/// statement checks with NOT EXISTS, which sees only what committed before
/// it began, so two such batches in flight at once must not run side by
/// side:
/// - a batch with a row received over [`OLD`] ago (a spool drained after an
///   outage, `rejected replay`) takes the erasure lock exclusively, as an
///   erasure does: it runs alone, and every other insert holds that lock
///   shared (such a row claims on today, [`claim_days`]);
/// - otherwise both batches are recent and in flight together, so rows of
///   one key on two days lie within [`OLD`] of the midnight between them:
///   every row within [`NEAR_EDGE`] of one takes a lock on its key (in
///   sorted order: no deadlock), and the second waits for the first.
///
/// Most batches need neither: one shared lock, as before. The locks are
/// taken in statements before the insert, so that its snapshot is taken
/// after them and sees what the batch it waited for committed.
#[derive(Debug, PartialEq, Eq)]
enum Guard {
    Shared,
    Keys(Vec<i32>),
    Exclusive,
}

impl Guard {
    fn for_batch(events: &[&NewEvent], now: DateTime<Utc>) -> Self {
        if events.iter().any(|e| is_old(e.received_at, now)) {
            return Self::Exclusive;
        }
        let day =
            chrono::Duration::from_std(partitions::CLAIM_DAY).unwrap_or(chrono::TimeDelta::MAX);
        let mut keys: Vec<i32> = events
            .iter()
            .filter(|e| {
                let start = partitions::claim_day(e.received_at);
                e.received_at - start < NEAR_EDGE || start + day - e.received_at <= NEAR_EDGE
            })
            .map(|e| key_lock(&e.envelope.key()))
            .collect();
        if keys.is_empty() {
            return Self::Shared;
        }
        keys.sort_unstable();
        keys.dedup();
        Self::Keys(keys)
    }

    /// The statements that take the guard, after `BEGIN` or a savepoint.
    fn sql(&self) -> String {
        match self {
            Self::Shared => format!("SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK_KEY})"),
            Self::Exclusive => format!("SELECT pg_advisory_xact_lock({ERASURE_LOCK_KEY})"),
            Self::Keys(keys) => {
                let list: Vec<String> = keys.iter().map(i32::to_string).collect();
                format!(
                    "SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK_KEY}); \
                     SELECT pg_advisory_xact_lock({KEY_LOCK_CLASS}, k) \
                     FROM unnest('{{{}}}'::int4[]) AS k",
                    list.join(",")
                )
            }
        }
    }
}

/// A key's lock: FNV-1a of its two parts. Two keys that share one only
/// wait for each other.
fn key_lock(key: &DedupKey<'_>) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.job_id.bytes().chain([0xff]).chain(key.event.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

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
/// stored once per (job_id, event): the batch holds each key once (the
/// first delivery of it, [`insert_rows`]), which claims its key (`$13`,
/// [`DedupKey::digest`]) in `event_claims` on its claim day (`$14`,
/// [`claim_days`]; ON CONFLICT on that day, NOT EXISTS on the other days
/// and in the sealed windows of `event_keys`: see [`Guard`]), and only a
/// claimed key's event is inserted, with its subject hashes in the row (`$11`, each row's list
/// as text: [`subject_list`]). `$12` is the start of the oldest key window
/// retention keeps: older windows (past max_age, waiting to be dropped)
/// are not probed.
///
/// `$15` is [`MAX_GUARD_WAIT`]: a batch that waited longer for its guard
/// fails (IG001, `imggo_guard_fresh`) and [`insert_rows`] decides again.
///
/// The subject and job tombstones are looked at per event only when one
/// was written at or after the batch's oldest receipt (one probe of their
/// `erased_at` index per batch): erasures are rare, deliveries are not.
static INSERT_BATCH: LazyLock<String> = LazyLock::new(|| {
    let (columns, arrays) = (EventColumns::new_event(), EventColumns::pg_arrays());
    let (subjects, kept, key, day, max_wait) = (
        EventColumns::new_event_count() + 1,
        EventColumns::new_event_count() + 2,
        EventColumns::new_event_count() + 3,
        EventColumns::new_event_count() + 4,
        EventColumns::new_event_count() + 5,
    );
    format!(
        "\
    WITH batch AS ( \
      SELECT * FROM UNNEST({arrays}, ${subjects}::text[], ${key}::uuid[], \
                           ${day}::timestamptz[]) \
        AS b({columns}, subject_list, key, claim_day) \
      WHERE (SELECT imggo_guard_fresh(make_interval(secs => ${max_wait})))), \
    since AS ( \
      SELECT EXISTS (SELECT 1 FROM erased_subjects WHERE erased_at >= t.oldest) AS subjects, \
             EXISTS (SELECT 1 FROM erased_jobs WHERE erased_at >= t.oldest) AS jobs \
      FROM (SELECT min(received_at) AS oldest FROM batch) t), \
    firsts AS ( \
      SELECT b.*, b.subject_list::bytea[] AS subjects \
      FROM batch b), \
    barred AS ( \
      SELECT b.job_id, b.event FROM firsts b \
      WHERE EXISTS (SELECT 1 FROM erased_events x \
                    WHERE x.job_id = b.job_id AND x.event = b.event) \
         OR ((SELECT subjects FROM since) AND b.subjects IS NOT NULL \
             AND EXISTS (SELECT 1 FROM erased_subjects es \
                         WHERE es.subject = ANY (b.subjects) AND es.erased_at >= b.received_at)) \
         OR ((SELECT jobs FROM since) \
             AND EXISTS (SELECT 1 FROM erased_jobs j \
                         WHERE j.job_id = b.job_id AND j.erased_at >= b.received_at))), \
    claimed AS ( \
      INSERT INTO event_claims (key, day) \
      SELECT key, claim_day FROM firsts b \
      WHERE NOT EXISTS (SELECT 1 FROM barred x WHERE x.job_id = b.job_id AND x.event = b.event) \
        AND NOT EXISTS (SELECT 1 FROM event_keys k WHERE k.key = b.key AND k.since >= ${kept}) \
        AND NOT EXISTS (SELECT 1 FROM event_claims c \
                        WHERE c.key = b.key AND c.day <> b.claim_day) \
      ORDER BY b.job_id, b.event \
      ON CONFLICT DO NOTHING \
      RETURNING key), \
    ins AS ( \
      INSERT INTO webhook_events ({columns}, subjects) \
      SELECT {columns}, subjects FROM firsts JOIN claimed USING (key) \
      RETURNING job_id, event), \
    remembered AS ( \
      INSERT INTO erased_events (job_id, event, erased_at) \
      SELECT job_id, event, now() FROM barred \
      ON CONFLICT (job_id, event) DO NOTHING) \
    SELECT job_id, event FROM ins"
    )
});

/// The rows a batch sends, with their keys' digests: each key once, as its
/// first delivery in the batch (the others are duplicates of it:
/// [`claim_outcomes`]). The statement claims them in `(job_id, event)`
/// order (its `ORDER BY`, as the release before it did through `DISTINCT
/// ON`): two batches in flight at once claim the keys they share in the
/// same order, so neither holds one the other waits for while waiting for
/// one the other holds (ON CONFLICT waits for an uncommitted claim of the
/// same key), whatever join the planner picks and whichever release's
/// replica sent the other batch.
fn claim_order<'a>(events: &[&'a NewEvent]) -> Vec<(&'a NewEvent, [u8; 16])> {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    events
        .iter()
        .filter(|e| seen.insert(e.envelope.key()))
        .map(|e| (*e, e.envelope.key().digest()))
        .collect()
}

/// The day each row claims its key on (`event_claims`): the day of its
/// receipt, or today for a row received over [`OLD`] ago (a spool
/// draining, a replay; its batch runs alone, see [`Guard`]). So no batch
/// claims into a day more than [`OLD`] after it ended, and the seal
/// (`partitions::seal`) can copy a day's keys in pieces with no lock,
/// however many there are.
fn claim_days(
    received: impl Iterator<Item = DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    received
        .map(|at| partitions::claim_day(if is_old(at, now) { now } else { at }))
        .collect()
}

/// An event's subject hashes as the text of a Postgres `bytea[]`
/// (`{"\\x…","\\x…"}`), `None` (NULL) for none: the statement casts each
/// row's own list, where a separate array of every hash with its row's
/// position cost an aggregate and a join per batch.
fn subject_list(hashes: &[crate::subjects::SubjectHash]) -> Option<String> {
    if hashes.is_empty() {
        return None;
    }
    let mut text = String::with_capacity(2 + hashes.len() * 70);
    text.push('{');
    for (i, h) in hashes.iter().enumerate() {
        text.push_str(if i == 0 { "\"\\\\x" } else { ",\"\\\\x" });
        text.push_str(&h.to_hex());
        text.push('"');
    }
    text.push('}');
    Some(text)
}

/// One statement for the whole batch, in one transaction that holds the
/// erasure lock (see [`lock_out_inserts`]) and whatever else its [`Guard`]
/// needs: one commit.
#[instrument(skip_all, fields(rows = events.len()))]
pub(super) async fn insert_rows(
    conn: &mut sqlx::PgConnection,
    events: &[&NewEvent],
    kept: DateTime<Utc>,
) -> Result<Vec<InsertOutcome>, StoreError> {
    let mut attempt = 1;
    loop {
        match insert_rows_now(conn, events, kept, Utc::now()).await {
            Err(StoreError::Other(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some(GUARD_STALE) && attempt < 3 =>
            {
                tracing::info!(
                    attempt,
                    "a batch waited too long for its locks; deciding again"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The longest a batch may wait for its guard before its decisions (claim
/// days, which keys to lock: all taken from `now` before the wait) are
/// taken again: well under [`OLD`], so a row's age as the batch saw it is
/// its age when it claims, give or take this.
const MAX_GUARD_WAIT: chrono::TimeDelta = chrono::TimeDelta::minutes(2);
/// The SQLSTATE of a batch that waited longer (`imggo_guard_fresh`).
const GUARD_STALE: &str = "IG001";
/// Marks when a batch begins to wait for its guard (the clock, not the
/// transaction's start: `BEGIN` and the guard arrive in one message).
const GUARD_FROM: &str = "SELECT set_config('imggo.guard_from', clock_timestamp()::text, true)";

/// [`insert_rows`], once, deciding from `now`.
async fn insert_rows_now(
    conn: &mut sqlx::PgConnection,
    events: &[&NewEvent],
    kept: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<InsertOutcome>, StoreError> {
    use sqlx::Connection as _;
    let mut columns = PgEventArrays::default();
    let rows = claim_order(events);
    let mut keys = Vec::with_capacity(rows.len());
    let mut subjects = Vec::with_capacity(rows.len());
    for (e, digest) in &rows {
        columns.push(e);
        keys.push(uuid::Uuid::from_bytes(*digest));
        subjects.push(subject_list(&e.subjects));
    }
    let days = claim_days(rows.iter().map(|(e, _)| e.received_at), now);
    // The transaction opens with its guard held, in one round trip:
    // inserts never wait for each other (but for a key both write near a
    // window's edge), only for an erasure, and the statement's snapshot is
    // newer than any erasure that held the lock. Inside a caller's
    // transaction (`rejected replay --body`), a savepoint and the guard as
    // statements of their own.
    let guard = format!("{GUARD_FROM}; {}", Guard::for_batch(events, now).sql());
    let mut tx = if conn.is_in_transaction() {
        let mut tx = conn.begin().await?;
        sqlx::Executor::execute(&mut *tx, guard.as_str()).await?;
        tx
    } else {
        conn.begin_with(format!("BEGIN; {guard}")).await?
    };
    let inserted: Vec<(String, String)> = columns
        .bind(sqlx::query(&INSERT_BATCH))
        .bind(&subjects)
        .bind(kept)
        .bind(&keys)
        .bind(&days)
        .bind(MAX_GUARD_WAIT.as_seconds_f64())
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
             $6::text[], $7::bytea[], $8::bytea[], $9::bool[], $10::text[], $11::text[], \
             $13::uuid[], $14::timestamptz[]) AS b("
        ));
        assert!(sql.contains("k.since >= $12"));
        assert!(sql.contains(&format!(
            "INSERT INTO webhook_events ({}, subjects)",
            EventColumns::new_event()
        )));
    }

    #[test]
    fn a_batch_sends_each_key_once_as_its_first_delivery() {
        let mut events: Vec<NewEvent> = ["a", "b", "c"]
            .iter()
            .map(|job| crate::event::NewEvent::for_tests(job))
            .collect();
        // A second delivery of "c" first, told apart by its status.
        let mut again = crate::event::NewEvent::for_tests("c");
        again.envelope.status = Some("first".into());
        events.insert(1, again);
        let refs: Vec<&NewEvent> = events.iter().collect();
        let sent: Vec<(&str, Option<&str>)> = claim_order(&refs)
            .iter()
            .map(|(e, _)| (e.envelope.job_id.as_str(), e.envelope.status.as_deref()))
            .collect();
        assert_eq!(sent, [("a", None), ("c", Some("first")), ("b", None)]);
    }

    #[test]
    fn the_batch_claims_keys_in_job_and_event_order() {
        assert!(INSERT_BATCH.contains("ORDER BY b.job_id, b.event ON CONFLICT DO NOTHING"));
    }

    #[test]
    fn subject_lists_are_bytea_array_literals_with_hex_escapes() {
        use crate::subjects::SubjectHash;
        assert_eq!(subject_list(&[]), None);
        let (a, b) = (SubjectHash([0xab; 32]), SubjectHash([0x01; 32]));
        assert_eq!(
            subject_list(&[a, b]).unwrap(),
            format!(
                "{{\"\\\\x{}\",\"\\\\x{}\"}}",
                "ab".repeat(32),
                "01".repeat(32)
            )
        );
    }

    fn event_at(job: &str, received_at: &str) -> NewEvent {
        let mut e = crate::event::NewEvent::for_tests(job);
        e.received_at = received_at.parse().unwrap();
        e
    }

    #[test]
    fn a_batch_far_from_a_window_edge_holds_the_erasure_lock_shared_only() {
        let now: DateTime<Utc> = "2026-12-10T12:00:00Z".parse().unwrap();
        let e = event_at("a", "2026-12-10T11:59:00Z");
        assert_eq!(Guard::for_batch(&[&e], now), Guard::Shared);
        assert_eq!(
            Guard::Shared.sql(),
            format!("SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK_KEY})")
        );
    }

    #[test]
    fn rows_near_a_claim_days_edge_lock_their_keys_in_order() {
        // A claim day starts at every midnight UTC.
        let (a, b) = (
            event_at("b", "2026-12-09T23:58:00Z"),
            event_at("a", "2026-12-10T00:05:00Z"),
        );
        let now: DateTime<Utc> = "2026-12-10T00:06:00Z".parse().unwrap();
        let Guard::Keys(keys) = Guard::for_batch(&[&a, &b, &a], now) else {
            panic!("no key locks");
        };
        assert_eq!(keys.len(), 2, "one lock per key");
        assert!(keys[0] < keys[1], "sorted: {keys:?}");
        assert_eq!(
            keys[0],
            key_lock(&a.envelope.key()).min(key_lock(&b.envelope.key()))
        );
        // Over an hour from either midnight: no lock.
        let (late, early) = (
            event_at("c", "2026-12-10T22:58:00Z"),
            event_at("d", "2026-12-10T01:01:00Z"),
        );
        let now: DateTime<Utc> = "2026-12-10T22:59:00Z".parse().unwrap();
        assert_eq!(Guard::for_batch(&[&late], now), Guard::Shared);
        let now: DateTime<Utc> = "2026-12-10T01:02:00Z".parse().unwrap();
        assert_eq!(Guard::for_batch(&[&early], now), Guard::Shared);
    }

    #[test]
    fn a_row_claims_on_its_receipts_day_unless_it_is_old() {
        let now: DateTime<Utc> = "2026-12-10T00:05:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            claim_days(
                [
                    at("2026-12-09T23:58:00Z"),
                    at("2026-12-10T00:04:00Z"),
                    at("2026-12-09T23:50:00Z"),
                    at("2026-11-30T12:00:00Z"),
                ]
                .into_iter(),
                now
            ),
            [
                at("2026-12-09T00:00:00Z"),
                at("2026-12-10T00:00:00Z"),
                at("2026-12-10T00:00:00Z"),
                at("2026-12-10T00:00:00Z"),
            ]
        );
    }

    /// Rows of one key on two days, in flight at once, are each younger
    /// than OLD, so each lies within OLD of the midnight between them:
    /// NEAR_EDGE must cover that with room for clocks that disagree, and
    /// a day must be sealed only when no such row may still claim into it.
    #[test]
    fn the_guards_margins_cover_the_rows_that_may_race() {
        let skew = NEAR_EDGE - OLD;
        assert!(skew >= chrono::TimeDelta::minutes(30), "{skew}");
        let seal_after = chrono::Duration::from_std(partitions::SEAL_AFTER).unwrap();
        assert!(
            seal_after > OLD + skew,
            "{seal_after} against {OLD} and {skew}"
        );
        assert!(
            MAX_GUARD_WAIT < OLD,
            "a batch's now stays within OLD of its statement"
        );
    }

    #[test]
    fn a_batch_with_an_old_row_runs_alone() {
        let now: DateTime<Utc> = "2026-12-10T12:00:00Z".parse().unwrap();
        let (fresh, old) = (
            event_at("a", "2026-12-10T11:59:00Z"),
            event_at("b", "2026-12-10T11:49:00Z"),
        );
        assert_eq!(Guard::for_batch(&[&fresh, &old], now), Guard::Exclusive);
        assert_eq!(
            Guard::Exclusive.sql(),
            format!("SELECT pg_advisory_xact_lock({ERASURE_LOCK_KEY})")
        );
    }
}
