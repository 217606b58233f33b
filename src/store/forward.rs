//! Forwarding's SQL (CONTRACT §11): each destination's position and state,
//! its dead letters, the erasure notices, the lag, and the Postgres lease
//! connection's advisory locks. The relay itself lives in `crate::forward`.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::feed::Position;
use super::{FeedEvent, Store, StoreError, EVENT_COLUMNS};
use crate::audit::AuditEntry;

/// A destination's row.
#[derive(Clone, Debug, Default)]
pub struct DestinationState {
    /// Every message up to here was confirmed or dead-lettered.
    pub position: Position,
    /// The last seq sent (a replay takes the next one).
    pub seq: (u64, u64),
    /// Why it is paused (HTTP 410), or `None`.
    pub paused: Option<String>,
    pub last_error: Option<String>,
    /// Events purged by retention before it forwarded them.
    pub missed: u64,
}

/// An erasure notice and its place in the feed.
#[derive(Clone, Debug)]
pub struct Notice {
    pub position: Position,
    /// The deleted events' ids, comma-separated.
    pub event_ids: String,
}

/// A message a destination refused for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub notice: bool,
    /// Where it is in the feed (to read it again for a replay).
    pub position: Position,
    pub reason: String,
    /// Unix microseconds.
    pub dead_at: i64,
}

/// A confirmed step of the relay: the new position, the last seq sent, and
/// the messages dead-lettered on the way (written in one transaction).
pub struct Advance<'a> {
    /// Where the relay read from: the step applies only if the position is
    /// still there (a `forward reset` meanwhile wins).
    pub from: Position,
    pub position: Position,
    pub seq: (u64, u64),
    pub dead: &'a [DeadLetter],
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn seq_column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Creates the rows of destinations seen for the first time (at the
    /// oldest position: every stored event goes).
    pub async fn forward_register(&self, names: &[&str]) -> Result<(), StoreError> {
        const SQL: &str =
            "INSERT INTO forward_positions (destination, updated_at) VALUES ($1, $2) \
             ON CONFLICT (destination) DO NOTHING";
        for name in names {
            on_backend!(self, s => sqlx::query(SQL)
                .bind(*name)
                .bind(now_micros())
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
    ) -> Result<bool, StoreError> {
        const POSITION: &str = "UPDATE forward_positions SET tx = $2, id = $3, seq_hi = $4, \
             seq_lo = $5, last_error = NULL, updated_at = $6 \
             WHERE destination = $1 AND tx = $7 AND id = $8";
        const DEAD: &str = "INSERT INTO forward_dead \
             (destination, message_id, notice, tx, row_id, reason, dead_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (destination, message_id) DO UPDATE SET reason = excluded.reason, \
             dead_at = excluded.dead_at, replay = false";
        on_backend!(self, s => {
            let mut tx = s.pool().begin().await?;
            let moved = sqlx::query(POSITION)
                .bind(name)
                .bind(step.position.tx)
                .bind(step.position.id)
                .bind(seq_column(step.seq.0))
                .bind(seq_column(step.seq.1))
                .bind(now_micros())
                .bind(step.from.tx)
                .bind(step.from.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if moved == 0 {
                return Ok(false);
            }
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
        });
        Ok(true)
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
            super::audit::append(&mut *tx, audit).await?;
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

    /// Notices after `after` (at most `limit`), and the bound below which
    /// both notices and events are complete at this moment: items at or
    /// above it may still commit behind it, so the relay stops before it.
    pub async fn forward_notices(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<(Position, Vec<Notice>), StoreError> {
        match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                // One snapshot for the horizon and the notices.
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *tx)
                    .await?;
                let horizon: i64 = sqlx::query_scalar(
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                )
                .fetch_one(&mut *tx)
                .await?;
                let rows: Vec<(i64, i64, String)> = sqlx::query_as(
                    "SELECT tx::text::bigint, id, event_ids FROM forward_notices \
                     WHERE (tx, id) > ($1::bigint::text::xid8, $2) \
                       AND tx < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY tx, id LIMIT $3",
                )
                .bind(after.tx)
                .bind(after.id)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let notices = rows
                    .into_iter()
                    .map(|(tx, id, event_ids)| Notice {
                        position: Position { tx, id },
                        event_ids,
                    })
                    .collect();
                Ok((Position { tx: horizon, id: 0 }, notices))
            }
            Store::Sqlite(s) => {
                let mut tx = s.pool().begin().await?;
                let seq: Option<i64> = sqlx::query_scalar(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'webhook_events'",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, event_ids FROM forward_notices WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after.id)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let notices = rows
                    .into_iter()
                    .map(|(id, event_ids)| Notice {
                        position: Position { tx: 0, id },
                        event_ids,
                    })
                    .collect();
                // Every id up to the sequence is committed (one writer).
                let bound = Position {
                    tx: 0,
                    id: seq.unwrap_or(0).saturating_add(1),
                };
                Ok((bound, notices))
            }
        }
    }

    /// One event by its row id, with its feed position.
    pub async fn forward_event(&self, row_id: i64) -> Result<Option<FeedEvent>, StoreError> {
        match self {
            Store::Postgres(s) => {
                let sql = format!(
                    "SELECT tx::text::bigint AS feed_tx, {EVENT_COLUMNS} FROM webhook_events WHERE id = $1"
                );
                let row = sqlx::query(&sql)
                    .bind(row_id)
                    .fetch_optional(s.pool())
                    .await?;
                row.map(|r| {
                    Ok(FeedEvent {
                        position: Position {
                            tx: r.try_get("feed_tx")?,
                            id: r.try_get("id")?,
                        },
                        row: <super::StoredEvent as sqlx::FromRow<_>>::from_row(&r)?,
                    })
                })
                .transpose()
            }
            Store::Sqlite(s) => {
                let sql = format!("SELECT {EVENT_COLUMNS} FROM webhook_events WHERE id = $1");
                let row = sqlx::query(&sql)
                    .bind(row_id)
                    .fetch_optional(s.pool())
                    .await?;
                row.map(|r| {
                    let row = super::sqlite::stored_event(&r)?;
                    Ok(FeedEvent {
                        position: Position { tx: 0, id: row.id },
                        row,
                    })
                })
                .transpose()
            }
        }
    }

    /// One notice by id.
    pub async fn forward_notice(&self, id: i64) -> Result<Option<Notice>, StoreError> {
        let notice = match self {
            Store::Postgres(s) => {
                sqlx::query_as::<_, (i64, i64, String)>(
                    "SELECT tx::text::bigint, id, event_ids FROM forward_notices WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(s.pool())
                .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_as::<_, (i64, i64, String)>(
                    "SELECT 0, id, event_ids FROM forward_notices WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(s.pool())
                .await?
            }
        };
        Ok(notice.map(|(tx, id, event_ids)| Notice {
            position: Position { tx, id },
            event_ids,
        }))
    }

    /// Events after `position` and the oldest one's receipt: the lag.
    pub async fn forward_lag(
        &self,
        position: Position,
    ) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        match self {
            Store::Postgres(s) => {
                let (n, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
                    "SELECT count(*), min(received_at) FROM webhook_events \
                     WHERE (tx, id) > ($1::bigint::text::xid8, $2)",
                )
                .bind(position.tx)
                .bind(position.id)
                .fetch_one(s.pool())
                .await?;
                Ok((n.unsigned_abs(), oldest))
            }
            Store::Sqlite(s) => {
                let (n, oldest): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT count(*), min(received_at) FROM webhook_events WHERE id > $1",
                )
                .bind(position.id)
                .fetch_one(s.pool())
                .await?;
                Ok((
                    n.unsigned_abs(),
                    oldest.and_then(DateTime::from_timestamp_micros),
                ))
            }
        }
    }

    /// Dead letters, of one destination or all, oldest first.
    pub async fn forward_dead(
        &self,
        name: Option<&str>,
        only_replays: bool,
    ) -> Result<Vec<(String, DeadLetter)>, StoreError> {
        const SQL: &str = "SELECT destination, message_id, notice, tx, row_id, reason, dead_at \
             FROM forward_dead WHERE ($1 IS NULL OR destination = $1) AND (NOT $2 OR replay) \
             ORDER BY id";
        let rows: Vec<(String, String, bool, i64, i64, String, i64)> = on_backend!(self, s => sqlx::query_as(SQL)
                .bind(name)
                .bind(only_replays)
                .fetch_all(s.pool())
                .await?);
        Ok(rows
            .into_iter()
            .map(|(dest, message_id, notice, tx, id, reason, dead_at)| {
                (
                    dest,
                    DeadLetter {
                        message_id,
                        notice,
                        position: Position { tx, id },
                        reason,
                        dead_at,
                    },
                )
            })
            .collect())
    }

    /// Marks dead letters of `name` (one, or all) to be sent again; how many.
    pub async fn forward_request_replay(
        &self,
        name: &str,
        message_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE forward_dead SET replay = true \
             WHERE destination = $1 AND ($2 IS NULL OR message_id = $2)";
        Ok(on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(message_id)
            .execute(s.pool())
            .await?
            .rows_affected()))
    }

    /// A replayed dead letter was confirmed (or is gone): forgets it.
    pub async fn forward_dead_done(&self, name: &str, message_id: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM forward_dead WHERE destination = $1 AND message_id = $2";
        on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(message_id)
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(())
    }

    /// A replayed dead letter was refused again: stays dead, with `reason`.
    pub async fn forward_dead_again(
        &self,
        name: &str,
        message_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE forward_dead SET replay = false, reason = $3, dead_at = $4 \
             WHERE destination = $1 AND message_id = $2";
        on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(message_id)
            .bind(reason)
            .bind(now_micros())
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(())
    }

    /// SQLite: takes or renews the lease of `name` for `holder` until
    /// `until` (Unix microseconds) unless another holder's lease runs.
    pub async fn forward_lease(
        &self,
        name: &str,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE forward_positions SET lease_holder = $2, lease_until = $3 \
             WHERE destination = $1 AND (lease_holder IS NULL OR lease_holder = $2 \
               OR lease_until < $4)";
        let n = on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(holder)
            .bind(until)
            .bind(now_micros())
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(n > 0)
    }

    /// SQLite: gives a lease up (at shutdown), so a restart takes it at once.
    pub async fn forward_release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE forward_positions SET lease_holder = NULL, lease_until = NULL \
             WHERE destination = $1 AND lease_holder = $2";
        on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(holder)
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(())
    }
}

/// Postgres: tries the advisory lock `key` on the lease connection.
pub async fn try_lock(conn: &mut sqlx::PgConnection, key: i64) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await?)
}

/// Postgres: proves the lease connection (and so every lock on it) alive.
pub async fn ping(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(conn).await?;
    Ok(())
}

/// Postgres: the server closes a lease connection whose peer vanished
/// (a replica's host died without closing it) within about 10 s, which
/// frees its locks for another replica.
pub async fn keepalive(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    for sql in [
        "SET tcp_keepalives_idle = 4",
        "SET tcp_keepalives_interval = 2",
        "SET tcp_keepalives_count = 3",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Erasure (inside its transaction): a notice naming the deleted events,
/// with an id from the events' own sequence (Postgres).
pub(crate) async fn notice_pg(
    conn: &mut sqlx::PgConnection,
    ids: &[i64],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO forward_notices (id, event_ids, created_at) \
         VALUES (nextval(pg_get_serial_sequence('webhook_events', 'id')), $1, $2)",
    )
    .bind(join_ids(ids))
    .bind(now_micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// [`notice_pg`] for SQLite: the id is the events' next AUTOINCREMENT value,
/// taken from `sqlite_sequence` so no event ever gets it.
pub(crate) async fn notice_sqlite(
    conn: &mut sqlx::SqliteConnection,
    ids: &[i64],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let id: i64 = sqlx::query_scalar(
        "UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'webhook_events' RETURNING seq",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO forward_notices (id, event_ids, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(join_ids(ids))
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// Retention (before it deletes): per destination, the events older than
/// `cutoff` it has not forwarded yet; adds them to its `missed` count.
pub(crate) async fn count_missed_pg(
    pool: &sqlx::PgPool,
    cutoff: DateTime<Utc>,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "UPDATE forward_positions p SET missed = missed + m.n FROM ( \
           SELECT d.destination, (SELECT count(*) FROM webhook_events w \
             WHERE w.received_at < $1 AND (w.tx, w.id) > (d.tx::text::xid8, d.id)) AS n \
           FROM forward_positions d) m \
         WHERE p.destination = m.destination AND m.n > 0 RETURNING p.destination, m.n",
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
           WHERE w.received_at < $1 AND w.id > d.id) FROM forward_positions d",
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
