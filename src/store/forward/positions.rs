//! Each destination's row: its position, last seq, pause and last error,
//! the lag measured from it, and the missed count retention adds.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{now_micros, seq_column, Advance, Advanced, DestinationState};
use crate::audit::AuditEntry;
use crate::store::feed::Position;
use crate::store::{Store, StoreError};

/// Up to this many events of lag are counted exactly.
pub const LAG_EXACT: i64 = 10_000;

/// The lag's queries (public so a test can ask Postgres for their plans).
pub const LAG_COUNT_PG: &str = "SELECT count(*) FROM (SELECT 1 FROM webhook_events \
     WHERE (tx, id) > ($1::bigint::text::xid8, $2) ORDER BY tx, id LIMIT $3) AS lag";
pub const LAG_OLDEST_PG: &str = "SELECT received_at FROM webhook_events \
     WHERE (tx, id) > ($1::bigint::text::xid8, $2) ORDER BY tx, id LIMIT 1";
const LAG_COUNT_SQLITE: &str = "SELECT count(*) FROM (SELECT 1 FROM webhook_events \
     WHERE id > $1 ORDER BY id LIMIT $2)";
const LAG_OLDEST_SQLITE: &str =
    "SELECT received_at FROM webhook_events WHERE id > $1 ORDER BY id LIMIT 1";
const LAG_NEWEST: &str = "SELECT max(id) FROM webhook_events";

/// A destination and its filters (`events`, `valid`), as registered.
pub struct Filters<'a> {
    pub name: &'a str,
    /// Event names forwarded; empty = all.
    pub events: &'a [String],
    /// `"any"`, `"true"` or `"false"`.
    pub valid: &'a str,
}

/// Binds `$1`..`$9` of an advance: the destination, the new position and
/// seq, the time, and the fence (the position it read from, the holder).
macro_rules! bind_step {
    ($query:expr, $name:expr, $step:expr) => {
        $query
            .bind($name)
            .bind($step.position.tx)
            .bind($step.position.id)
            .bind(seq_column($step.seq.0))
            .bind(seq_column($step.seq.1))
            .bind(now_micros())
            .bind($step.from.tx)
            .bind($step.from.id)
            .bind($step.holder)
    };
}

impl Store {
    /// Creates the rows of destinations seen for the first time (at the
    /// oldest position: every stored event goes).
    /// Each start-up records the destinations' filters (see [`Filters`]).
    pub async fn forward_register(&self, destinations: &[Filters<'_>]) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO forward_positions \
             (destination, updated_at, events, valid_filter) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (destination) DO UPDATE SET events = excluded.events, \
             valid_filter = excluded.valid_filter";
        for d in destinations {
            let events = (!d.events.is_empty()).then(|| d.events.join("\n"));
            on_backend!(self, s => sqlx::query(SQL)
                .bind(d.name)
                .bind(now_micros())
                .bind(&events)
                .bind(d.valid)
                .execute(s.pool())
                .await?
                .rows_affected());
        }
        Ok(())
    }

    /// A destination's row, `None` before it was ever registered.
    pub async fn forward_state(&self, name: &str) -> Result<Option<DestinationState>, StoreError> {
        const SQL: &str = "SELECT tx, id, seq_hi, seq_lo, paused, last_error, missed \
             FROM forward_positions WHERE destination = $1";
        let row = on_backend!(self, s => {
            let row = sqlx::query(SQL).bind(name).fetch_optional(s.pool()).await?;
            row.map(|r| -> Result<DestinationState, sqlx::Error> {
                Ok(DestinationState {
                    position: Position { tx: r.try_get("tx")?, id: r.try_get("id")? },
                    seq: (
                        r.try_get::<i64, _>("seq_hi")?.unsigned_abs(),
                        r.try_get::<i64, _>("seq_lo")?.unsigned_abs(),
                    ),
                    paused: r.try_get("paused")?,
                    last_error: r.try_get("last_error")?,
                    missed: r.try_get::<i64, _>("missed")?.unsigned_abs(),
                })
            }).transpose()?
        });
        Ok(row)
    }

    /// Moves a destination's position forward past confirmed (and
    /// dead-lettered) messages, recording the dead letters, in one
    /// transaction; clears its last error. False (and nothing written)
    /// when the position is no longer `step.from`.
    pub async fn forward_advance(
        &self,
        name: &str,
        step: &Advance<'_>,
    ) -> Result<Advanced, StoreError> {
        // Fenced: only the lease's holder moves the position, so a replica
        // that lost its lease (and does not know yet) cannot move it after
        // another took over.
        const POSITION: &str = "UPDATE forward_positions SET tx = $2, id = $3, seq_hi = $4, \
             seq_lo = $5, last_error = NULL, updated_at = $6 \
             WHERE destination = $1 AND tx = $7 AND id = $8 AND lease_holder = $9";
        const HOLDER: &str = "SELECT lease_holder FROM forward_positions WHERE destination = $1";
        const DEAD: &str = "INSERT INTO forward_dead \
             (destination, message_id, notice, tx, row_id, reason, dead_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (destination, message_id) DO UPDATE SET reason = excluded.reason, \
             dead_at = excluded.dead_at, replay = false";
        // On Postgres one statement; SQLite's relays share the server's
        // threads, so a short transaction there holds nothing up.
        let s = match self {
            Store::Postgres(s) => return advance_pg(s.pool(), name, step).await,
            Store::Sqlite(s) => s,
        };
        // Without dead letters the step is one statement (its own
        // transaction): the common case costs one round trip.
        let mut tx = match step.dead {
            [] => None,
            _ => Some(s.pool().begin().await?),
        };
        let position = bind_step!(sqlx::query(POSITION), name, step);
        let moved = match tx.as_mut() {
            Some(tx) => position.execute(&mut **tx).await?,
            None => position.execute(s.pool()).await?,
        }
        .rows_affected();
        if moved == 0 {
            // Nothing written: give the connection back first (SQLite
            // has only the one).
            drop(tx);
            let holder: Option<Option<String>> = sqlx::query_scalar(HOLDER)
                .bind(name)
                .fetch_optional(s.pool())
                .await?;
            return Ok(if holder.flatten().as_deref() == Some(step.holder) {
                Advanced::Reset
            } else {
                Advanced::Fenced
            });
        }
        if let Some(mut tx) = tx {
            for d in step.dead {
                sqlx::query(DEAD)
                    .bind(name)
                    .bind(&d.message_id)
                    .bind(d.notice)
                    .bind(d.position.tx)
                    .bind(d.position.id)
                    .bind(&d.reason)
                    .bind(d.dead_at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(Advanced::Moved)
    }

    /// Records the last seq sent without moving the position (a replay).
    pub async fn forward_set_seq(&self, name: &str, seq: (u64, u64)) -> Result<(), StoreError> {
        const SQL: &str =
            "UPDATE forward_positions SET seq_hi = $2, seq_lo = $3 WHERE destination = $1";
        on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(seq_column(seq.0))
            .bind(seq_column(seq.1))
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(())
    }

    /// Sets (or clears) a destination's last error; `paused` pauses it.
    pub async fn forward_set_error(
        &self,
        name: &str,
        error: Option<&str>,
        pause: bool,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE forward_positions SET last_error = $2, \
             paused = CASE WHEN $3 THEN $2 ELSE paused END, updated_at = $4 WHERE destination = $1";
        on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(error)
            .bind(pause)
            .bind(now_micros())
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(())
    }

    /// Unpauses a destination; whether it was paused.
    pub async fn forward_resume(&self, name: &str) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE forward_positions SET paused = NULL, last_error = NULL \
             WHERE destination = $1 AND paused IS NOT NULL";
        let n = on_backend!(self, s => sqlx::query(SQL).bind(name).execute(s.pool()).await?
            .rows_affected());
        Ok(n > 0)
    }

    /// Moves a destination to `position` (forward or back) and records
    /// `audit`, in one transaction.
    pub async fn forward_reset(
        &self,
        name: &str,
        position: Position,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO forward_positions (destination, tx, id, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (destination) DO UPDATE SET tx = excluded.tx, \
             id = excluded.id, updated_at = excluded.updated_at";
        on_backend!(self, s => {
            let mut tx = s.pool().begin().await?;
            sqlx::query(SQL)
                .bind(name)
                .bind(position.tx)
                .bind(position.id)
                .bind(now_micros())
                .execute(&mut *tx)
                .await?;
            crate::store::audit::append(&mut *tx, audit).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The newest position anything (event or notice) has now.
    pub async fn forward_latest(&self) -> Result<Position, StoreError> {
        let head = self.feed_head().await?.position;
        let notice = match self {
            Store::Postgres(s) => sqlx::query_as::<_, (i64, i64)>(
                "SELECT tx::text::bigint, id FROM forward_notices ORDER BY tx DESC, id DESC LIMIT 1",
            )
            .fetch_optional(s.pool())
            .await?
            .map(|(tx, id)| Position { tx, id }),
            Store::Sqlite(s) => sqlx::query_scalar::<_, i64>("SELECT max(id) FROM forward_notices")
                .fetch_optional(s.pool())
                .await?
                .map(|id| Position { tx: 0, id }),
        };
        Ok(notice.map_or(head, |n| n.max(head)))
    }

    /// Events after `position` and the oldest one's receipt: the lag.
    /// Measured every few seconds per destination while ingest runs, so it
    /// is index probes only: the count walks the feed index no further
    /// than [`LAG_EXACT`] entries (past that it is estimated from the
    /// newest id), and the oldest is the first entry after `position`.
    pub async fn forward_lag(
        &self,
        position: Position,
    ) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let (counted, oldest, newest) = match self {
            Store::Postgres(s) => {
                let mut conn = s.pool().acquire().await?;
                let counted: i64 = sqlx::query_scalar(LAG_COUNT_PG)
                    .bind(position.tx)
                    .bind(position.id)
                    .bind(LAG_EXACT)
                    .fetch_one(&mut *conn)
                    .await?;
                let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(LAG_OLDEST_PG)
                    .bind(position.tx)
                    .bind(position.id)
                    .fetch_optional(&mut *conn)
                    .await?;
                let newest: Option<i64> =
                    sqlx::query_scalar(LAG_NEWEST).fetch_one(&mut *conn).await?;
                (counted, oldest, newest)
            }
            Store::Sqlite(s) => {
                let counted: i64 = sqlx::query_scalar(LAG_COUNT_SQLITE)
                    .bind(position.id)
                    .bind(LAG_EXACT)
                    .fetch_one(s.pool())
                    .await?;
                let oldest: Option<i64> = sqlx::query_scalar(LAG_OLDEST_SQLITE)
                    .bind(position.id)
                    .fetch_optional(s.pool())
                    .await?;
                let newest: Option<i64> =
                    sqlx::query_scalar(LAG_NEWEST).fetch_one(s.pool()).await?;
                (
                    counted,
                    oldest.and_then(DateTime::from_timestamp_micros),
                    newest,
                )
            }
        };
        let events = if counted < LAG_EXACT {
            counted
        } else {
            // Ids rise with the feed only roughly (Postgres commit order),
            // and erased ids leave gaps: an estimate, never under the count.
            newest.unwrap_or(0).saturating_sub(position.id).max(counted)
        };
        Ok((events.unsigned_abs(), oldest))
    }
}

/// [`Store::forward_advance`] on Postgres: one statement, dead letters
/// and all. The relays run below the server's CPU priority, and an erasure
/// waits (holding ingest off) for the destinations' rows: a transaction of
/// several round trips holding a destination's row from a thread the CPU
/// is slow to come back to would stall ingest that long.
async fn advance_pg(
    pool: &sqlx::PgPool,
    name: &str,
    step: &Advance<'_>,
) -> Result<Advanced, StoreError> {
    const SQL: &str = "WITH moved AS ( \
           UPDATE forward_positions SET tx = $2, id = $3, seq_hi = $4, seq_lo = $5, \
             last_error = NULL, updated_at = $6 \
           WHERE destination = $1 AND tx = $7 AND id = $8 AND lease_holder = $9 \
           RETURNING 1), \
         dead AS ( \
           INSERT INTO forward_dead \
             (destination, message_id, notice, tx, row_id, reason, dead_at) \
           SELECT $1, u.message_id, u.notice, u.tx, u.row_id, u.reason, u.dead_at \
           FROM UNNEST($10::text[], $11::bool[], $12::int8[], $13::int8[], $14::text[], \
                       $15::int8[]) AS u(message_id, notice, tx, row_id, reason, dead_at) \
           WHERE EXISTS (SELECT 1 FROM moved) \
           ON CONFLICT (destination, message_id) DO UPDATE SET reason = excluded.reason, \
             dead_at = excluded.dead_at, replay = false) \
         SELECT (SELECT count(*) FROM moved), \
           (SELECT lease_holder FROM forward_positions WHERE destination = $1)";
    // One row per message id: an upsert may not touch a row twice.
    let mut dead: Vec<&super::DeadLetter> = Vec::with_capacity(step.dead.len());
    for d in step.dead {
        dead.retain(|k| k.message_id != d.message_id);
        dead.push(d);
    }
    let (moved, holder): (i64, Option<String>) = bind_step!(sqlx::query_as(SQL), name, step)
        .bind(
            dead.iter()
                .map(|d| d.message_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(dead.iter().map(|d| d.notice).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.position.tx).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.position.id).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.dead_at).collect::<Vec<_>>())
        .fetch_one(pool)
        .await?;
    Ok(if moved > 0 {
        Advanced::Moved
    } else if holder.as_deref() == Some(step.holder) {
        Advanced::Reset
    } else {
        Advanced::Fenced
    })
}

/// Retention: per destination, the events that crossed `cutoff`
/// (`retention.max_age`) since its last count and lie beyond its position,
/// which it would have forwarded (its filters admit them): no read returns
/// them any more, so they will never be sent. Adds them to its `missed`
/// count, and moves its `missed_through` to `cutoff`, so that each is
/// counted once, when it is lost, whether or not the relay moves past it
/// before its partition is dropped. One purge interval's receipts are read
/// per destination (the BRIN index on `received_at`).
pub(crate) async fn count_missed_pg(
    pool: &sqlx::PgPool,
    cutoff: DateTime<Utc>,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "WITH m AS ( \
           SELECT d.destination, (SELECT count(*) FROM webhook_events w \
             WHERE w.received_at < $1 \
               AND w.received_at >= coalesce(d.missed_through, '-infinity') \
               AND (w.tx, w.id) > (d.tx::text::xid8, d.id) \
               AND (d.events IS NULL OR w.event = ANY(string_to_array(d.events, E'\\n'))) \
               AND (d.valid_filter = 'any' OR w.valid = (d.valid_filter = 'true'))) AS n \
           FROM forward_positions d \
           WHERE d.missed_through IS NULL OR d.missed_through < $1), \
         counted AS ( \
           UPDATE forward_positions p SET missed = missed + m.n, missed_through = $1 \
           FROM m WHERE p.destination = m.destination RETURNING p.destination, m.n) \
         SELECT destination, n FROM counted WHERE n > 0",
    )
    .bind(cutoff)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(d, n)| (d, n.unsigned_abs()))
        .collect())
}

/// [`count_missed_pg`] for SQLite.
pub(crate) async fn count_missed_sqlite(
    pool: &sqlx::SqlitePool,
    cutoff: DateTime<Utc>,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.destination, (SELECT count(*) FROM webhook_events w \
           WHERE w.received_at < $1 AND w.id > d.id \
             AND (d.events IS NULL OR instr(char(10) || d.events || char(10), \
                  char(10) || w.event || char(10)) > 0) \
             AND (d.valid_filter = 'any' \
                  OR w.valid = CASE d.valid_filter WHEN 'true' THEN 1 ELSE 0 END)) \
         FROM forward_positions d",
    )
    .bind(cutoff.timestamp_micros())
    .fetch_all(pool)
    .await?;
    let mut missed = Vec::new();
    for (d, n) in rows.into_iter().filter(|(_, n)| *n > 0) {
        sqlx::query("UPDATE forward_positions SET missed = missed + $2 WHERE destination = $1")
            .bind(&d)
            .bind(n)
            .execute(pool)
            .await?;
        missed.push((d, n.unsigned_abs()));
    }
    Ok(missed)
}
