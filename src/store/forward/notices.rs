//! Erasure notices: written in the erasure's transaction (see
//! [`super::erased`]), read by each destination's relay in feed order
//! beside the events; and one event or notice read
//! again by its place (a dead letter's replay).

use chrono::{DateTime, Utc};

use super::Notice;
use crate::store::feed::Position;
use crate::store::{EventColumns, FeedEvent, Store, StoreError};

/// The horizon, the erasure epoch, and a notice (all `None` when there is
/// none): one row of the Postgres read in [`Store::forward_notices`].
type HorizonAndNotice = (i64, i64, Option<i64>, Option<i64>, Option<String>);

/// What a relay's step reads before the events: see
/// [`Store::forward_notices`].
#[derive(Debug)]
pub struct NoticeRead {
    /// Items below it are complete: anything at or above it may still
    /// commit behind it.
    pub bound: Position,
    /// How many statements have deleted events so far (Postgres; `None`
    /// on SQLite, whose relays do not share reads): what a relay read
    /// under another epoch may hold an event deleted since.
    pub epoch: Option<i64>,
    pub notices: Vec<Notice>,
}

impl Store {
    /// `destination`'s notices after `after` (at most `limit`; a notice
    /// that names nothing of its own is not among them), and the bound below which
    /// both notices and events are complete at this moment: items at or
    /// above it may still commit behind it, so the relay stops before it.
    pub async fn forward_notices(
        &self,
        destination: &str,
        after: Position,
        limit: u32,
    ) -> Result<NoticeRead, StoreError> {
        match self {
            Store::Postgres(s) => {
                // One statement, so one snapshot for the horizon and the
                // notices (and one round trip per relay step).
                let rows: Vec<HorizonAndNotice> = sqlx::query_as(
                    "SELECT h.x::text::bigint, h.epoch, n.tx::text::bigint, n.id, n.event_ids \
                     FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x, \
                             (SELECT epoch FROM forward_erasure_epoch) AS epoch) h \
                     LEFT JOIN LATERAL ( \
                       SELECT n.tx, n.id, i.event_ids FROM forward_notices n \
                       JOIN forward_notice_ids i ON i.notice = n.id AND i.destination = $4 \
                       WHERE (n.tx, n.id) > ($1::bigint::text::xid8, $2) AND n.tx < h.x \
                       ORDER BY n.tx, n.id LIMIT $3) n ON true \
                     ORDER BY n.tx, n.id",
                )
                .bind(after.tx)
                .bind(after.id)
                .bind(i64::from(limit))
                .bind(destination)
                .fetch_all(s.pool())
                .await?;
                let (horizon, epoch) = rows.first().map_or((0, 0), |r| (r.0, r.1));
                let notices = rows
                    .into_iter()
                    .filter_map(|(_, _, tx, id, event_ids)| {
                        Some(Notice {
                            position: Position { tx: tx?, id: id? },
                            event_ids: event_ids?,
                        })
                    })
                    .collect();
                Ok(NoticeRead {
                    bound: Position { tx: horizon, id: 0 },
                    epoch: Some(epoch),
                    notices,
                })
            }
            Store::Sqlite(s) => {
                let mut tx = s.pool().begin().await?;
                let seq: Option<i64> = sqlx::query_scalar(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'webhook_events'",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT n.id, i.event_ids FROM forward_notices n \
                     JOIN forward_notice_ids i ON i.notice = n.id AND i.destination = $3 \
                     WHERE n.id > $1 ORDER BY n.id LIMIT $2",
                )
                .bind(after.id)
                .bind(i64::from(limit))
                .bind(destination)
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
                Ok(NoticeRead {
                    bound,
                    epoch: None,
                    notices,
                })
            }
        }
    }

    /// One event by its row id, with its feed position.
    pub async fn forward_event(&self, row_id: i64) -> Result<Option<FeedEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM webhook_events WHERE id = $1 {}",
            EventColumns::of(self),
            crate::store::feed::served(self, 2),
        );
        Ok(match self {
            Store::Postgres(s) => {
                sqlx::query_as(&sql)
                    .bind(row_id)
                    .bind(s.layout().served_since())
                    .fetch_optional(s.pool())
                    .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_as(&sql)
                    .bind(row_id)
                    .fetch_optional(s.pool())
                    .await?
            }
        })
    }

    /// One notice by id, as `destination` is sent it (`None` if it names
    /// nothing of that destination's, or is gone).
    pub async fn forward_notice(
        &self,
        destination: &str,
        id: i64,
    ) -> Result<Option<Notice>, StoreError> {
        let notice = match self {
            Store::Postgres(s) => {
                sqlx::query_as::<_, (i64, i64, String)>(
                    "SELECT n.tx::text::bigint, n.id, i.event_ids FROM forward_notices n \
                     JOIN forward_notice_ids i ON i.notice = n.id AND i.destination = $2 \
                     WHERE n.id = $1",
                )
                .bind(id)
                .bind(destination)
                .fetch_optional(s.pool())
                .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_as::<_, (i64, i64, String)>(
                    "SELECT 0, n.id, i.event_ids FROM forward_notices n \
                     JOIN forward_notice_ids i ON i.notice = n.id AND i.destination = $2 \
                     WHERE n.id = $1",
                )
                .bind(id)
                .bind(destination)
                .fetch_optional(s.pool())
                .await?
            }
        };
        Ok(notice.map(|(tx, id, event_ids)| Notice {
            position: Position { tx, id },
            event_ids,
        }))
    }
}

/// Postgres, at each retention pass: dead letters older than `cutoff` go
/// (like the events they name), and so do notices older than `cutoff` and
/// notices every destination has passed (unless a dead letter still names
/// one, to be replayed), so neither grows forever.
pub(crate) async fn purge_pg(pool: &sqlx::PgPool, cutoff: DateTime<Utc>) -> Result<(), StoreError> {
    let at = cutoff.timestamp_micros();
    sqlx::query("DELETE FROM forward_dead WHERE dead_at < $1")
        .bind(at)
        .execute(pool)
        .await?;
    sqlx::query(
        "DELETE FROM forward_notices n WHERE n.created_at < $1 OR ( \
           NOT EXISTS (SELECT 1 FROM forward_positions d \
                       WHERE (n.tx, n.id) > (d.tx::text::xid8, d.id)) \
           AND NOT EXISTS (SELECT 1 FROM forward_dead f WHERE f.notice AND f.row_id = n.id))",
    )
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// [`purge_pg`] for SQLite.
pub(crate) async fn purge_sqlite(
    pool: &sqlx::SqlitePool,
    cutoff: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = cutoff.timestamp_micros();
    sqlx::query("DELETE FROM forward_dead WHERE dead_at < $1")
        .bind(at)
        .execute(pool)
        .await?;
    sqlx::query(
        "DELETE FROM forward_notices WHERE created_at < $1 OR ( \
           NOT EXISTS (SELECT 1 FROM forward_positions d WHERE forward_notices.id > d.id) \
           AND NOT EXISTS (SELECT 1 FROM forward_dead f \
                           WHERE f.notice AND f.row_id = forward_notices.id))",
    )
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}
