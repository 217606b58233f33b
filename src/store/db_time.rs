//! Time in the database, converted in this one place. In code every moment
//! is a `DateTime<Utc>`; Postgres stores it as `timestamptz`, SQLite as
//! microseconds since the epoch (its `CURRENT_TIMESTAMP` text does not
//! compare with bound values: PITFALLS "sqlx"). Bind and read [`DbTime`]
//! and neither side needs a backend of its own for time.

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

/// A moment as a column of either backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbTime(pub DateTime<Utc>);

impl From<DbTime> for DateTime<Utc> {
    fn from(t: DbTime) -> Self {
        t.0
    }
}

impl DbTime {
    /// SQLite's representation: microseconds since the epoch.
    fn micros(self) -> i64 {
        self.0.timestamp_micros()
    }

    /// Back from SQLite's microseconds; the epoch for a value chrono cannot
    /// hold (an `i64` of microseconds spans more than it does).
    fn from_micros(micros: i64) -> Self {
        Self(DateTime::from_timestamp_micros(micros).unwrap_or_default())
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for DbTime {
    fn encode_by_ref(
        &self,
        args: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'q, Sqlite>>::encode(self.micros(), args)
    }
}

impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self::from_micros(<i64 as Decode<'r, Sqlite>>::decode(
            value,
        )?))
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<DateTime<Utc> as Decode<'r, Postgres>>::decode(
            value,
        )?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_keeps_microseconds_and_compares_them_in_order() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let (stored, back, later): (i64, DbTime, bool) = sqlx::query_as("SELECT ?1, ?1, ?1 < ?2")
            .bind(DbTime(t))
            .bind(DbTime(t + chrono::Duration::microseconds(1)))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, 1_700_000_000_123_456);
        assert_eq!(back, DbTime(t));
        assert!(later);
    }
}
