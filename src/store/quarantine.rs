//! The SQL of the quarantine (CONTRACT §10): signed deliveries refused by
//! validation, stored sealed with their reason and request id, capped at
//! `quarantine.max_rows` (oldest go first) and purged by retention.

use chrono::{DateTime, Utc};

use super::{DbTime, Store, StoreError};
use crate::crypto::Sealed;
use crate::subjects::SubjectHash;

/// A refused delivery, redacted and sealed, ready to be kept.
#[derive(Debug, Clone)]
pub struct NewQuarantined {
    pub received_at: DateTime<Utc>,
    /// The §2 error code it was refused with.
    pub reason: &'static str,
    pub request_id: String,
    /// Size of the body as received.
    pub bytes: u64,
    /// Bound into the ciphertext's associated data.
    pub seal_id: String,
    pub sealed: Sealed,
    /// Subject hashes of the body (when it parsed), for erasure.
    pub subjects: Vec<SubjectHash>,
}

/// A quarantined delivery as listed (`rejected list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub reason: String,
    pub request_id: String,
    pub bytes: u64,
}

/// A quarantined delivery with its sealed body.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub entry: QuarantineEntry,
    pub seal_id: String,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

const COLUMNS: &str =
    "id, received_at, reason, request_id, bytes, seal_id, key_id, nonce, ciphertext";

impl Store {
    /// Keeps a refused delivery, then drops the oldest beyond `max_rows`,
    /// in one transaction. Returns its id. A row already kept under the
    /// same `seal_id` (moved from the spool twice) is kept once. `None`:
    /// one of its subjects was erased at or after it was received (an
    /// erasure that ran while this insert was in flight, or while it waited
    /// in the spool), so it is not kept. On Postgres the insert holds the
    /// erasure lock shared, as event inserts do.
    pub async fn quarantine(
        &self,
        row: &NewQuarantined,
        max_rows: u32,
    ) -> Result<Option<i64>, StoreError> {
        const INSERT: &str = "INSERT INTO quarantined_deliveries \
             (received_at, reason, request_id, bytes, seal_id, key_id, nonce, ciphertext) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (seal_id) DO NOTHING RETURNING id";
        const KEPT: &str = "SELECT id FROM quarantined_deliveries WHERE seal_id = $1";
        const SUBJECT: &str = "INSERT INTO quarantine_subjects (subject, quarantine_id) \
             VALUES ($1, $2) ON CONFLICT DO NOTHING";
        const TRIM: &str = "DELETE FROM quarantined_deliveries WHERE id <= \
             (SELECT id FROM quarantined_deliveries ORDER BY id DESC LIMIT 1 OFFSET $1)";
        const FORGET: &str = "DELETE FROM quarantined_deliveries WHERE id = $1";
        let bytes = i64::try_from(row.bytes).unwrap_or(i64::MAX);
        macro_rules! insert {
            ($pool:expr, $lock:expr, $erased:expr) => {{
                let mut tx = $pool.begin().await?;
                $lock(&mut tx).await?;
                // The first statement writes (SQLite: the write lock is
                // held, and every other process's erasure is visible).
                let inserted: Option<i64> = sqlx::query_scalar(INSERT)
                    .bind(DbTime(row.received_at))
                    .bind(row.reason)
                    .bind(&row.request_id)
                    .bind(bytes)
                    .bind(&row.seal_id)
                    .bind(row.sealed.key_id.as_str())
                    .bind(&row.sealed.nonce)
                    .bind(&row.sealed.ciphertext)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(id) = inserted else {
                    let id: i64 = sqlx::query_scalar(KEPT)
                        .bind(&row.seal_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(Some(id));
                };
                if $erased(&mut tx, &row.subjects, row.received_at).await? {
                    sqlx::query(FORGET).bind(id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    return Ok(None);
                }
                for subject in &row.subjects {
                    sqlx::query(SUBJECT)
                        .bind(subject.as_bytes())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(TRIM)
                    .bind(i64::from(max_rows))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(id))
            }};
        }
        match self {
            Store::Postgres(s) => insert!(
                s.pool(),
                super::subjects::hold_off_erasure,
                super::subjects::erased_since_pg
            ),
            Store::Sqlite(s) => insert!(
                s.pool(),
                super::subjects::no_lock_sqlite,
                super::subjects::erased_since_sqlite
            ),
        }
    }

    /// Every quarantined delivery, oldest first.
    pub async fn quarantined(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM quarantined_deliveries ORDER BY id");
        super::on_backend!(self, s => {
            let rows = sqlx::query(&sql).fetch_all(s.pool()).await?;
            rows.iter().map(entry).collect()
        })
    }

    /// One quarantined delivery with its sealed body.
    pub async fn quarantined_one(&self, id: i64) -> Result<Option<Quarantined>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM quarantined_deliveries WHERE id = $1");
        super::on_backend!(self, s => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(s.pool()).await?;
            row.map(|r| sealed(&r)).transpose()
        })
    }

    /// The subject hashes a quarantined delivery was indexed under when it
    /// arrived, taken from its body before redaction: a replay stores its
    /// event under them (the redacted body no longer holds the values).
    pub async fn quarantined_subjects(&self, id: i64) -> Result<Vec<SubjectHash>, StoreError> {
        const SQL: &str =
            "SELECT subject FROM quarantine_subjects WHERE quarantine_id = $1 ORDER BY subject";
        let rows: Vec<Vec<u8>> = super::on_backend!(self, s => sqlx::query_scalar(SQL)
            .bind(id)
            .fetch_all(s.pool())
            .await?);
        Ok(rows
            .iter()
            .filter_map(|b| <[u8; 32]>::try_from(b.as_slice()).ok().map(SubjectHash))
            .collect())
    }

    /// Up to `limit` quarantined deliveries with `id > after` not sealed
    /// under `current_key`, oldest first (`reencrypt`).
    pub async fn quarantined_under_other_keys(
        &self,
        current_key: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM quarantined_deliveries \
             WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        super::on_backend!(self, s => {
            let rows = sqlx::query(&sql)
                .bind(current_key)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(s.pool())
                .await?;
            rows.iter().map(sealed).collect()
        })
    }

    /// Removes a quarantined delivery (replayed); false when it was gone.
    pub async fn release_quarantined(&self, id: i64) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM quarantined_deliveries WHERE id = $1";
        let n = super::on_backend!(self, s => sqlx::query(SQL).bind(id).execute(s.pool()).await?.rows_affected());
        Ok(n == 1)
    }

    /// Quarantined deliveries received before `cutoff` (a dry run's count).
    pub(super) async fn count_quarantined_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT count(*) FROM quarantined_deliveries WHERE received_at < $1";
        let n: i64 = super::on_backend!(self, s => sqlx::query_scalar(SQL)
            .bind(DbTime(cutoff))
            .fetch_one(s.pool())
            .await?);
        Ok(n.unsigned_abs())
    }

    /// Deletes quarantined deliveries received before `cutoff` (retention;
    /// the table is capped, so one statement).
    pub(super) async fn purge_quarantined(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        // Erasure tombstones only matter for deliveries still spooled, which
        // are younger than the retention window: they age out alike.
        // An erased event's key is remembered as long as the event itself
        // could have been kept.
        for tombstones in [
            "DELETE FROM erased_subjects WHERE erased_at < $1",
            "DELETE FROM erased_events WHERE erased_at < $1",
            "DELETE FROM erased_jobs WHERE erased_at < $1",
        ] {
            super::on_backend!(self, s => sqlx::query(tombstones)
                .bind(DbTime(cutoff))
                .execute(s.pool())
                .await
                .map(|_| ()))?;
        }
        const SQL: &str = "DELETE FROM quarantined_deliveries WHERE received_at < $1";
        Ok(super::on_backend!(self, s => sqlx::query(SQL)
            .bind(DbTime(cutoff))
            .execute(s.pool())
            .await?
            .rows_affected()))
    }
}

fn entry<R: sqlx::Row>(row: &R) -> Result<QuarantineEntry, StoreError>
where
    for<'r> DbTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    Ok(QuarantineEntry {
        id: row.try_get("id")?,
        received_at: row.try_get::<DbTime, _>("received_at")?.0,
        reason: row.try_get("reason")?,
        request_id: row.try_get("request_id")?,
        bytes: row.try_get::<i64, _>("bytes")?.unsigned_abs(),
    })
}

fn sealed<R: sqlx::Row>(row: &R) -> Result<Quarantined, StoreError>
where
    for<'r> DbTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    Ok(Quarantined {
        entry: entry(row)?,
        seal_id: row.try_get("seal_id")?,
        key_id: row.try_get("key_id")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
    })
}
