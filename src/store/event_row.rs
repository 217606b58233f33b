//! The events table's columns and its row codec, once for every query.
//!
//! - Every read of an event row selects [`EventColumns::select`] of its
//!   backend (the same names on both, and the feed position as `feed_tx`:
//!   Postgres' writing transaction, SQLite's 0) and decodes it with one
//!   [`sqlx::FromRow`] for [`StoredEvent`] and [`FeedEvent`], generic over
//!   the backend: feed pages, job listings, `show`, `export`, re-encryption
//!   and the relay all read through it.
//! - Every write of a [`NewEvent`] names [`NEW_EVENT_COLUMNS`]; on SQLite
//!   (the store and the spool file) [`bind_new_event`] binds them and
//!   [`new_event_sqlite`] reads them back (the spool).
//! - Time is [`DbTime`] at the boundary, `DateTime<Utc>` everywhere else.
//!
//! A new column: a migration per backend, the field, its name here, its
//! bind and its decode below (and in Postgres' batch arrays).

use std::sync::LazyLock;

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{ColumnIndex, Decode, Row, Sqlite, Type};

use super::db_time::DbTime;
use super::feed::{FeedEvent, Position};
use crate::crypto::{KeyId, Sealed};
use crate::event::{Envelope, NewEvent, StoredEvent};
use crate::validation::Verdict;

/// The columns of [`StoredEvent`], as both backends name them. Selected
/// bare only by the queries not yet moved to [`EventColumns`] (the feed's
/// and Postgres' own, which a change in flight also edits).
pub const STORED_COLUMNS: &str = "id, job_id, event, pattern_id, status, received_at, \
     key_id, nonce, ciphertext, operator_supplied, valid, validation_errors";

/// The columns a [`NewEvent`] fills, in bind order. `job_id` and `event`
/// come first: SQLite's insert refers to them as `?1` and `?2`.
pub const NEW_EVENT_COLUMNS: &str = "job_id, event, pattern_id, status, received_at, \
     key_id, nonce, ciphertext, valid, validation_errors";

/// What a SELECT of event rows lists, per backend.
pub enum EventColumns {}

static PG_SELECT: LazyLock<String> =
    LazyLock::new(|| format!("tx::text::bigint AS feed_tx, {STORED_COLUMNS}"));
static SQLITE_SELECT: LazyLock<String> =
    LazyLock::new(|| format!("0 AS feed_tx, {STORED_COLUMNS}"));
static SQLITE_VALUES: LazyLock<String> = LazyLock::new(|| {
    (1..=EventColumns::new_event_count())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
});

impl EventColumns {
    /// Postgres' select list. The xid8 leaves as `feed_tx` (bigint): an
    /// output column named `tx` would be what ORDER BY sorts by, a sort of
    /// every remaining row instead of a walk of the (tx, id) index.
    pub fn pg() -> &'static str {
        &PG_SELECT
    }

    /// SQLite's select list: ids are commit order there (one writer), so
    /// every row's `feed_tx` is 0.
    pub fn sqlite() -> &'static str {
        &SQLITE_SELECT
    }

    /// How many [`NEW_EVENT_COLUMNS`] there are: a statement's own
    /// parameters after them are numbered from one past it (`?N`: sqlx
    /// counts a bare `?` from 1, whatever numbered ones came before).
    pub fn new_event_count() -> usize {
        NEW_EVENT_COLUMNS.split(',').count()
    }

    /// SQLite's placeholders for [`NEW_EVENT_COLUMNS`]: `?1, ?2, …`.
    pub fn sqlite_values() -> &'static str {
        &SQLITE_VALUES
    }
}

/// A column type both backends decode.
trait Column<'r, DB: sqlx::Database>: Decode<'r, DB> + Type<DB> {}
impl<'r, DB: sqlx::Database, T: Decode<'r, DB> + Type<DB>> Column<'r, DB> for T {}

/// The one decoder of a stored event, for either backend.
impl<'r, R> sqlx::FromRow<'r, R> for StoredEvent
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R::Database>,
    i64: Column<'r, R::Database>,
    bool: Column<'r, R::Database>,
    Vec<u8>: Column<'r, R::Database>,
    DbTime: Column<'r, R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            job_id: row.try_get("job_id")?,
            event: row.try_get("event")?,
            pattern_id: row.try_get("pattern_id")?,
            status: row.try_get("status")?,
            received_at: row.try_get::<DbTime, _>("received_at")?.0,
            key_id: row.try_get("key_id")?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
            operator_supplied: row.try_get("operator_supplied")?,
            valid: row.try_get("valid")?,
            validation_errors: row.try_get("validation_errors")?,
        })
    }
}

/// A stored event with its feed position.
impl<'r, R> sqlx::FromRow<'r, R> for FeedEvent
where
    R: Row,
    &'r str: ColumnIndex<R>,
    StoredEvent: sqlx::FromRow<'r, R>,
    i64: Column<'r, R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let row_event = StoredEvent::from_row(row)?;
        Ok(Self {
            position: Position {
                tx: row.try_get("feed_tx")?,
                id: row_event.id,
            },
            row: row_event,
        })
    }
}

/// A query's arguments on SQLite.
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// Binds `event`'s [`NEW_EVENT_COLUMNS`], in their order.
pub(crate) fn bind_new_event<'q>(query: SqliteQuery<'q>, event: &'q NewEvent) -> SqliteQuery<'q> {
    let (e, s) = (&event.envelope, &event.sealed);
    query
        .bind(&e.job_id)
        .bind(&e.event)
        .bind(&e.pattern_id)
        .bind(&e.status)
        .bind(DbTime(event.received_at))
        .bind(s.key_id.as_str())
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(event.verdict.valid)
        .bind(event.verdict.errors_json())
}

/// A [`NewEvent`] back from its SQLite columns (the spool); its subjects
/// are stored apart and left empty here.
pub(crate) fn new_event_sqlite(row: &SqliteRow) -> Result<NewEvent, sqlx::Error> {
    let key_id: String = row.try_get("key_id")?;
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
        received_at: row.try_get::<DbTime, _>("received_at")?.0,
        subjects: Vec::new(),
        verdict: Verdict::from_columns(
            row.try_get("valid")?,
            row.try_get::<Option<String>, _>("validation_errors")?
                .as_deref(),
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_dedup_key_is_bound_first() {
        assert!(NEW_EVENT_COLUMNS.starts_with("job_id, event,"));
        assert!(EventColumns::sqlite_values().starts_with("?1, ?2, ?3"));
        assert_eq!(
            EventColumns::sqlite_values().matches('?').count(),
            EventColumns::new_event_count()
        );
    }

    #[tokio::test]
    async fn a_new_event_reads_back_from_sqlite_as_it_was_bound() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query(&format!("CREATE TABLE t ({NEW_EVENT_COLUMNS})"))
            .execute(&pool)
            .await
            .unwrap();
        let mut event = NewEvent::for_tests("job-1");
        event.verdict = Verdict {
            valid: Some(false),
            errors: vec![crate::validation::Issue {
                path: "/a".into(),
                keyword: "type".into(),
            }],
        };
        let sql = format!(
            "INSERT INTO t ({NEW_EVENT_COLUMNS}) VALUES ({})",
            EventColumns::sqlite_values()
        );
        bind_new_event(sqlx::query(&sql), &event)
            .execute(&pool)
            .await
            .unwrap();
        let row = sqlx::query(&format!("SELECT {NEW_EVENT_COLUMNS} FROM t"))
            .fetch_one(&pool)
            .await
            .unwrap();
        let back = new_event_sqlite(&row).unwrap();
        assert_eq!(back.envelope, event.envelope);
        assert_eq!(back.sealed, event.sealed);
        assert_eq!(back.received_at, event.received_at);
        assert_eq!(back.verdict, event.verdict);
    }
}
