//! Deleting by job and by data subject, each with its audit record in the
//! same transaction. An event's subject hashes go with it: on Postgres they
//! are an array in its row (GIN-indexed), on SQLite rows of
//! `event_subjects` (`ON DELETE CASCADE`). [`Store::forget_subject`] is the
//! one place erasure deletes from; the spool and the quarantine extend it.

use super::{forward, DbTime, Store, StoreError};
use crate::audit::AuditEntry;
use crate::subjects::SubjectHash;

impl Store {
    /// Deletes every event of `job_id`; records `audit` with the count, and
    /// remembers each deleted (job_id, event) so that it is not stored again.
    pub async fn delete_job(&self, job_id: &str, audit: &AuditEntry) -> Result<u64, StoreError> {
        const REMEMBER: &str = "INSERT INTO erased_events (job_id, event, erased_at) \
             SELECT job_id, event, $2 FROM webhook_events WHERE job_id = $1 \
             ON CONFLICT (job_id, event) DO UPDATE SET erased_at = excluded.erased_at";
        const DELETE: &str = "DELETE FROM webhook_events WHERE job_id = $1 RETURNING {returning}";
        // Deliveries of the job received before the delete answered, stored
        // after it (in flight on another replica, spooled) are refused.
        const JOB: &str = "INSERT INTO erased_jobs (job_id, erased_at) VALUES ($1, $2) \
             ON CONFLICT (job_id) DO UPDATE SET erased_at = excluded.erased_at";
        macro_rules! delete {
            ($s:expr, $lock:expr, $notice:expr, $returning:expr) => {{
                let mut tx = $s.pool().begin().await?;
                $lock(&mut tx).await?;
                // Taken once the inserts in flight have committed: a
                // delivery received while the delete waited is barred too.
                let now = DbTime(chrono::Utc::now());
                sqlx::query(REMEMBER)
                    .bind(job_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(JOB)
                    .bind(job_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let rows: Vec<(i64, i64, String, Option<bool>)> =
                    sqlx::query_as(&DELETE.replace("{returning}", $returning))
                        .bind(job_id)
                        .fetch_all(&mut *tx)
                        .await?;
                let erased: Vec<forward::Erased> =
                    rows.into_iter().map(forward::Erased::from_row).collect();
                let n = erased.len() as u64;
                // Destinations hear of it in the same commit (CONTRACT §11).
                $notice(&mut tx, &erased).await?;
                super::audit::append(&mut *tx, &audit.clone().count(n)).await?;
                tx.commit().await?;
                Ok(n)
            }};
        }
        match self {
            Store::Postgres(s) => {
                delete!(s, lock_postgres, forward::notice_pg, forward::RETURNING_PG)
            }
            Store::Sqlite(s) => delete!(
                s,
                lock_sqlite,
                forward::notice_sqlite,
                forward::RETURNING_SQLITE
            ),
        }
    }

    /// Erasure: deletes every event and every quarantined delivery indexed
    /// under any of `subjects` (one value's hash under each kind of
    /// canonical form, `SubjectKey::lookups`), remembers each deleted event's (job_id, event) so it
    /// is never stored again, and leaves the subject's hash in
    /// `erased_subjects` (each of them): an insert of the subject's data received before
    /// now and committed after (a batch in flight, a spool draining on any
    /// replica) is refused. Records `audit` (whose target is the subject's
    /// hash, never its value) with the count, all in one transaction, after
    /// the inserts in flight have committed (Postgres: [`lock_out_inserts`];
    /// SQLite has one writer).
    ///
    /// [`lock_out_inserts`]: super::postgres::lock_out_inserts
    pub async fn forget_subject(
        &self,
        subjects: &[SubjectHash],
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        // The events indexed under $1, on each backend.
        const PG_INDEXED: &str = "subjects @> ARRAY[$1::bytea]";
        const SQLITE_INDEXED: &str =
            "id IN (SELECT event_id FROM event_subjects WHERE subject = $1)";
        const REMEMBER: &str = "INSERT INTO erased_events (job_id, event, erased_at) \
             SELECT job_id, event, $2 FROM webhook_events WHERE {indexed} \
             ON CONFLICT (job_id, event) DO UPDATE SET erased_at = excluded.erased_at";
        const EVENTS: &str = "DELETE FROM webhook_events WHERE {indexed} RETURNING {returning}";
        const QUARANTINED: &str = "DELETE FROM quarantined_deliveries WHERE id IN \
             (SELECT quarantine_id FROM quarantine_subjects WHERE subject = $1)";
        const TOMBSTONE: &str = "INSERT INTO erased_subjects (subject, erased_at) VALUES ($1, $2) \
             ON CONFLICT (subject) DO UPDATE SET erased_at = excluded.erased_at";
        macro_rules! forget {
            ($s:expr, $lock:expr, $notice:expr, $indexed:expr, $returning:expr) => {{
                let remember = REMEMBER.replace("{indexed}", $indexed);
                let events = EVENTS
                    .replace("{indexed}", $indexed)
                    .replace("{returning}", $returning);
                let mut tx = $s.pool().begin().await?;
                $lock(&mut tx).await?;
                // Taken once the inserts in flight have committed: a
                // delivery received while the erasure waited is barred too.
                let now = DbTime(chrono::Utc::now());
                let mut n = 0;
                let mut deleted: Vec<forward::Erased> = Vec::new();
                for subject in subjects {
                    sqlx::query(&remember)
                        .bind(subject.as_bytes())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    let ids: Vec<(i64, i64, String, Option<bool>)> = sqlx::query_as(&events)
                        .bind(subject.as_bytes())
                        .fetch_all(&mut *tx)
                        .await?;
                    n += ids.len() as u64;
                    deleted.extend(ids.into_iter().map(forward::Erased::from_row));
                    n += sqlx::query(QUARANTINED)
                        .bind(subject.as_bytes())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    sqlx::query(TOMBSTONE)
                        .bind(subject.as_bytes())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                // Destinations hear of it in the same commit (CONTRACT §11).
                $notice(&mut tx, &deleted).await?;
                super::audit::append(&mut *tx, &audit.clone().count(n)).await?;
                tx.commit().await?;
                Ok(n)
            }};
        }
        match self {
            Store::Postgres(s) => forget!(
                s,
                lock_postgres,
                forward::notice_pg,
                PG_INDEXED,
                forward::RETURNING_PG
            ),
            Store::Sqlite(s) => forget!(
                s,
                lock_sqlite,
                forward::notice_sqlite,
                SQLITE_INDEXED,
                forward::RETURNING_SQLITE
            ),
        }
    }

    /// How many events are indexed under `subject` (tests, tools).
    pub async fn count_subject(&self, subject: &SubjectHash) -> Result<u64, StoreError> {
        const PG: &str = "SELECT count(*) FROM webhook_events WHERE subjects @> ARRAY[$1::bytea]";
        const SQLITE: &str = "SELECT count(*) FROM event_subjects WHERE subject = $1";
        let n: i64 = match self {
            Store::Postgres(s) => {
                sqlx::query_scalar(PG)
                    .bind(subject.as_bytes())
                    .fetch_one(s.pool())
                    .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_scalar(SQLITE)
                    .bind(subject.as_bytes())
                    .fetch_one(s.pool())
                    .await?
            }
        };
        Ok(n.unsigned_abs())
    }
}

async fn lock_postgres(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    super::postgres::lock_out_inserts(tx).await
}

/// SQLite's one writer connection (and its file lock, for other processes)
/// already orders an erasure against inserts.
async fn lock_sqlite(_tx: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    Ok(())
}

/// Postgres: holds the erasure lock shared until the transaction ends (an
/// insert outside the batch statement, e.g. the quarantine's).
pub(crate) async fn hold_off_erasure(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    super::postgres::lock_shared(tx).await
}

/// SQLite's one writer needs no lock (see [`lock_sqlite`]).
pub(crate) async fn no_lock_sqlite(tx: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    lock_sqlite(tx).await
}

/// Postgres: whether any of `subjects` was erased at or after `received_at`.
pub(crate) async fn erased_since_pg(
    conn: &mut sqlx::PgConnection,
    subjects: &[SubjectHash],
    received_at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    if subjects.is_empty() {
        return Ok(false);
    }
    let wanted: Vec<&[u8]> = subjects.iter().map(SubjectHash::as_bytes).collect();
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM erased_subjects WHERE subject = ANY($1) AND erased_at >= $2)",
    )
    .bind(&wanted)
    .bind(received_at)
    .fetch_one(conn)
    .await?)
}

/// SQLite: whether any of `subjects` was erased at or after `received_at`.
pub(crate) async fn erased_since_sqlite(
    conn: &mut sqlx::SqliteConnection,
    subjects: &[SubjectHash],
    received_at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    for subject in subjects {
        let erased: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM erased_subjects WHERE subject = ? AND erased_at >= ?",
        )
        .bind(subject.as_bytes())
        .bind(DbTime(received_at))
        .fetch_optional(&mut *conn)
        .await?;
        if erased.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// SQLite: indexes a just-inserted event's subjects, in its transaction.
pub(crate) async fn insert_sqlite(
    conn: &mut sqlx::SqliteConnection,
    event_id: i64,
    subjects: &[SubjectHash],
) -> Result<(), StoreError> {
    for subject in subjects {
        sqlx::query("INSERT OR IGNORE INTO event_subjects (subject, event_id) VALUES (?1, ?2)")
            .bind(subject.as_bytes())
            .bind(event_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
