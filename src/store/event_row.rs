//! The events table's columns and its row codec, once for every query.
//!
//! - Every read of an event row selects its backend's [`EventColumns`]
//!   (the same names on both, and the feed position as `feed_tx`:
//!   Postgres' writing transaction, SQLite's 0) and decodes it with one
//!   [`sqlx::FromRow`] for [`StoredEvent`] and [`FeedEvent`], generic over
//!   the backend: feed pages, job listings, `show`, `export`, re-encryption
//!   and the relay all read through it.
//! - Every write of a [`NewEvent`] names [`EventColumns::new_event`]; on
//!   SQLite (the store and the spool file) [`bind_new_event`] binds them
//!   and [`new_event_sqlite`] reads them back (the spool); on Postgres
//!   [`PgEventArrays`] carries a batch of them as `UNNEST` arrays.
//! - Time is [`DbTime`] at the boundary, `DateTime<Utc>` everywhere else.
//!
//! A new column: a migration per backend (and the spool's schema), the
//! field, its entry in [`STORED`] and/or [`NEW_EVENT`], and its line in
//! each codec below.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{ColumnIndex, Decode, Postgres, Row, Sqlite, Type};

use super::db_time::DbTime;
use super::feed::{FeedEvent, Position};
use crate::crypto::{KeyId, Sealed};
use crate::event::{Envelope, NewEvent, StoredEvent};
use crate::validation::Verdict;

/// The columns of [`StoredEvent`], as both backends name them.
const STORED: &str = "id, job_id, event, pattern_id, status, received_at, \
     key_id, nonce, ciphertext, operator_supplied, valid, validation_errors";

/// The columns a [`NewEvent`] fills, in bind order, with their Postgres
/// type. `job_id` and `event` come first: SQLite's insert refers to them as
/// `?1` and `?2`.
const NEW_EVENT: [(&str, &str); 10] = [
    ("job_id", "text"),
    ("event", "text"),
    ("pattern_id", "text"),
    ("status", "text"),
    ("received_at", "timestamptz"),
    ("key_id", "text"),
    ("nonce", "bytea"),
    ("ciphertext", "bytea"),
    ("valid", "bool"),
    ("validation_errors", "text"),
];

/// The column lists of event rows, per backend, built once.
pub enum EventColumns {}

static PG_SELECT: LazyLock<String> =
    LazyLock::new(|| format!("tx::text::bigint AS feed_tx, {STORED}"));
static SQLITE_SELECT: LazyLock<String> = LazyLock::new(|| format!("0 AS feed_tx, {STORED}"));
static NEW_EVENT_NAMES: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = NEW_EVENT.iter().map(|(name, _)| *name).collect();
    names.join(", ")
});
static SQLITE_VALUES: LazyLock<String> = LazyLock::new(|| {
    let values: Vec<String> = (1..=NEW_EVENT.len()).map(|i| format!("?{i}")).collect();
    values.join(", ")
});
static PG_ARRAYS: LazyLock<String> = LazyLock::new(|| {
    let arrays: Vec<String> = (NEW_EVENT.iter().zip(1..))
        .map(|((_, ty), i)| format!("${i}::{ty}[]"))
        .collect();
    arrays.join(", ")
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

    /// The select list of `store`'s backend.
    pub fn of(store: &super::Store) -> &'static str {
        match store {
            super::Store::Postgres(_) => Self::pg(),
            super::Store::Sqlite(_) => Self::sqlite(),
        }
    }

    /// The columns a [`NewEvent`] fills, in bind order (both backends).
    pub fn new_event() -> &'static str {
        &NEW_EVENT_NAMES
    }

    /// How many columns a [`NewEvent`] fills: a statement's own parameters
    /// after them are numbered from one past it (`?N`, `$N`: sqlx counts
    /// a bare `?` from 1, whatever numbered ones came before).
    pub fn new_event_count() -> usize {
        NEW_EVENT.len()
    }

    /// SQLite's placeholders for [`Self::new_event`]: `?1, ?2, …`.
    pub fn sqlite_values() -> &'static str {
        &SQLITE_VALUES
    }

    /// Postgres' typed array parameters for [`Self::new_event`], in
    /// [`PgEventArrays::bind`]'s order: `$1::text[], …`.
    pub fn pg_arrays() -> &'static str {
        &PG_ARRAYS
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

/// Binds `event`'s [`EventColumns::new_event`], in their order.
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

/// A batch of [`NewEvent`]s as one Postgres array per
/// [`EventColumns::new_event`] column, for `UNNEST`.
#[derive(Default)]
pub(crate) struct PgEventArrays<'a> {
    job_id: Vec<&'a str>,
    event: Vec<&'a str>,
    pattern_id: Vec<Option<&'a str>>,
    status: Vec<Option<&'a str>>,
    received_at: Vec<DateTime<Utc>>,
    key_id: Vec<&'a str>,
    nonce: Vec<&'a [u8]>,
    ciphertext: Vec<&'a [u8]>,
    valid: Vec<Option<bool>>,
    validation_errors: Vec<Option<String>>,
}

impl<'a> PgEventArrays<'a> {
    pub(crate) fn push(&mut self, event: &'a NewEvent) {
        let (e, s) = (&event.envelope, &event.sealed);
        self.job_id.push(&e.job_id);
        self.event.push(&e.event);
        self.pattern_id.push(e.pattern_id.as_deref());
        self.status.push(e.status.as_deref());
        self.received_at.push(event.received_at);
        self.key_id.push(s.key_id.as_str());
        self.nonce.push(&s.nonce);
        self.ciphertext.push(&s.ciphertext);
        self.valid.push(event.verdict.valid);
        self.validation_errors.push(event.verdict.errors_json());
    }

    /// Binds the arrays as [`EventColumns::pg_arrays`] names them.
    pub(crate) fn bind<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(&self.job_id)
            .bind(&self.event)
            .bind(&self.pattern_id)
            .bind(&self.status)
            .bind(&self.received_at)
            .bind(&self.key_id)
            .bind(&self.nonce)
            .bind(&self.ciphertext)
            .bind(&self.valid)
            .bind(&self.validation_errors)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_dedup_key_is_bound_first() {
        assert!(EventColumns::new_event().starts_with("job_id, event,"));
        assert!(EventColumns::pg_arrays().starts_with("$1::text[], $2::text[], $3::text[]"));
        assert!(EventColumns::sqlite_values().starts_with("?1, ?2, ?3"));
        assert_eq!(
            EventColumns::sqlite_values().matches('?').count(),
            EventColumns::new_event_count()
        );
    }

    #[tokio::test]
    async fn a_new_event_reads_back_from_sqlite_as_it_was_bound() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query(&format!("CREATE TABLE t ({})", EventColumns::new_event()))
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
            "INSERT INTO t ({}) VALUES ({})",
            EventColumns::new_event(),
            EventColumns::sqlite_values()
        );
        bind_new_event(sqlx::query(&sql), &event)
            .execute(&pool)
            .await
            .unwrap();
        let row = sqlx::query(&format!("SELECT {} FROM t", EventColumns::new_event()))
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
