//! The feed's SQL: pages in commit order and the feed head.
//!
//! Postgres pages are read in `(tx, id)` order and only below
//! `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still
//! in flight: every row below it is committed (or gone), and every row
//! committed later belongs to a transaction at or above it, so it sorts in
//! front of any cursor handed out now. A long transaction anywhere in the
//! cluster holds rows back (delays them, never loses them); the watcher
//! reports how long as `imggo_feed_lag_seconds`. SQLite commits one writer
//! at a time, so its ids are commit order already.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::{EventColumns, Store, StoreError, StoredEvent};

/// A place in the feed: rows strictly after it come next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Postgres: the writing transaction's xid8; SQLite: 0.
    pub tx: i64,
    pub id: i64,
}

/// What the watcher last saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FeedHead {
    /// The newest position a page may return now (zero when empty).
    pub position: Position,
    /// Seconds the first committed row not yet readable (in feed order)
    /// has waited (0 when none is held back).
    pub lag_seconds: f64,
}

/// Exact-match filters of `GET /v1/events`.
#[derive(Clone, Debug, Default)]
pub struct FeedFilter {
    pub event: Option<String>,
    pub pattern_id: Option<String>,
    /// The validation verdict (CONTRACT §12): `Some(false)` never matches
    /// an unchecked event.
    pub valid: Option<bool>,
}

/// A stored row and its place in the feed.
#[derive(Clone, Debug)]
pub struct FeedEvent {
    pub position: Position,
    pub row: StoredEvent,
}

/// A page of the feed on Postgres: in `(tx, id)` order, below the horizon.
static PG_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM webhook_events \
         WHERE (tx, id) > ($1::bigint::text::xid8, $2) \
           AND tx < pg_snapshot_xmin(pg_current_snapshot()) \
           AND ($3::text IS NULL OR event = $3) \
           AND ($4::text IS NULL OR pattern_id = $4) \
           AND ($6::bool IS NULL OR valid = $6) \
           AND received_at >= $7 \
         ORDER BY tx, id LIMIT $5",
        EventColumns::pg()
    )
});

/// A page of the feed on SQLite: ids are commit order.
static SQLITE_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM webhook_events \
         WHERE id > ?1 AND (?2 IS NULL OR event = ?2) AND (?3 IS NULL OR pattern_id = ?3) \
           AND (?5 IS NULL OR valid = ?5) \
         ORDER BY id LIMIT ?4",
        EventColumns::sqlite()
    )
});

/// The newest readable position, and the age of the first row held back
/// (in feed order). Both are one probe of the `(tx, id)` index from the
/// horizon, however many rows a long transaction holds back: a `min` of
/// `received_at` over them read them all, on every commit while anyone
/// waited.
const PG_HEAD: &str = "\
    SELECT head.feed_tx, head.id, \
      (SELECT EXTRACT(EPOCH FROM clock_timestamp() - w.received_at)::float8 \
       FROM webhook_events w WHERE w.tx >= h.horizon ORDER BY w.tx, w.id LIMIT 1) AS lag \
    FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon) h \
    LEFT JOIN LATERAL ( \
      SELECT w.tx::text::bigint AS feed_tx, w.id FROM webhook_events w \
      WHERE w.tx < h.horizon ORDER BY w.tx DESC, w.id DESC LIMIT 1) head ON true";

/// The condition that keeps rows past `retention.max_age` out of a read
/// on Postgres, with the served-since time as parameter `$n` (none on
/// SQLite, whose purge deletes them by row).
pub(super) fn served(store: &Store, n: usize) -> String {
    match store {
        Store::Postgres(_) => format!("AND received_at >= ${n}"),
        Store::Sqlite(_) => String::new(),
    }
}

impl Store {
    /// The oldest receipt a read may return now: `Some` on Postgres, whose
    /// partitions wait past `retention.max_age` to be dropped (reads
    /// filter on it); `None` on SQLite, whose purge deletes the rows.
    pub fn served_since(&self) -> Option<DateTime<Utc>> {
        match self {
            Store::Postgres(s) => Some(s.layout().served_since()),
            Store::Sqlite(_) => None,
        }
    }

    /// Up to `limit` events after `after`, in feed order. On Postgres none
    /// received longer ago than `retention.max_age`.
    pub async fn feed_page(
        &self,
        after: Position,
        limit: u32,
        filter: &FeedFilter,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        match self {
            Store::Postgres(s) => Ok(sqlx::query_as(&PG_PAGE)
                .bind(after.tx)
                .bind(after.id)
                .bind(filter.event.as_deref())
                .bind(filter.pattern_id.as_deref())
                .bind(i64::from(limit))
                .bind(filter.valid)
                .bind(s.layout().served_since())
                .fetch_all(s.pool())
                .await?),
            Store::Sqlite(s) => Ok(sqlx::query_as(&SQLITE_PAGE)
                .bind(after.id)
                .bind(filter.event.as_deref())
                .bind(filter.pattern_id.as_deref())
                .bind(i64::from(limit))
                .bind(filter.valid)
                .fetch_all(s.pool())
                .await?),
        }
    }

    /// Every event of a job with its feed position, oldest first.
    /// On Postgres none received longer ago than `retention.max_age`,
    /// even while its partition waits to be dropped.
    pub async fn job_events(&self, job_id: &str) -> Result<Vec<FeedEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM webhook_events WHERE job_id = $1 {} ORDER BY received_at, id",
            EventColumns::of(self),
            served(self, 2),
        );
        Ok(match self {
            Store::Postgres(s) => {
                sqlx::query_as(&sql)
                    .bind(job_id)
                    .bind(s.layout().served_since())
                    .fetch_all(s.pool())
                    .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_as(&sql)
                    .bind(job_id)
                    .fetch_all(s.pool())
                    .await?
            }
        })
    }

    /// Where the feed ends now, and how long rows have been held back.
    pub async fn feed_head(&self) -> Result<FeedHead, StoreError> {
        match self {
            Store::Postgres(s) => {
                let (tx, id, lag): (Option<i64>, Option<i64>, Option<f64>) =
                    sqlx::query_as(PG_HEAD).fetch_one(s.pool()).await?;
                Ok(FeedHead {
                    position: Position {
                        tx: tx.unwrap_or(0),
                        id: id.unwrap_or(0),
                    },
                    lag_seconds: lag.unwrap_or(0.0).max(0.0),
                })
            }
            Store::Sqlite(s) => {
                let id: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM webhook_events")
                    .fetch_one(s.pool())
                    .await?;
                Ok(FeedHead {
                    position: Position {
                        tx: 0,
                        id: id.unwrap_or(0),
                    },
                    lag_seconds: 0.0,
                })
            }
        }
    }
}
