//! Deleting by job and by data subject, each with its audit record in the
//! same transaction. Subject rows (`event_subjects`) go with their event
//! (`ON DELETE CASCADE`). [`Store::forget_subject`] is the one place
//! erasure deletes from; the spool and the quarantine extend it.

use super::{Store, StoreError};
use crate::audit::AuditEntry;
use crate::subjects::SubjectHash;

impl Store {
    /// Deletes every event of `job_id`; records `audit` with the count.
    pub async fn delete_job(&self, job_id: &str, audit: &AuditEntry) -> Result<u64, StoreError> {
        on_backend!(self, s => {
            let mut tx = s.pool().begin().await?;
            let n = sqlx::query("DELETE FROM webhook_events WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            super::audit::append(&mut *tx, &audit.clone().count(n)).await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    /// Erasure: deletes every event and every quarantined delivery indexed
    /// under `subject`, and leaves its hash in `erased_subjects` so that
    /// every replica's spool drops the subject's spooled deliveries as it
    /// drains (a spool is on its replica's own disk). Records `audit` (whose
    /// target is the subject's hash, never its value) with the count, all
    /// in one transaction.
    pub async fn forget_subject(
        &self,
        subject: &SubjectHash,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        const EVENTS: &str = "DELETE FROM webhook_events WHERE id IN \
             (SELECT event_id FROM event_subjects WHERE subject = $1)";
        const QUARANTINED: &str = "DELETE FROM quarantined_deliveries WHERE id IN \
             (SELECT quarantine_id FROM quarantine_subjects WHERE subject = $1)";
        const TOMBSTONE: &str = "INSERT INTO erased_subjects (subject, erased_at) VALUES ($1, $2) \
             ON CONFLICT (subject) DO UPDATE SET erased_at = excluded.erased_at";
        let now = chrono::Utc::now();
        macro_rules! forget {
            ($pool:expr, $now:expr) => {{
                let mut tx = $pool.begin().await?;
                let mut n = 0;
                for sql in [EVENTS, QUARANTINED] {
                    n += sqlx::query(sql)
                        .bind(subject.as_bytes())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                sqlx::query(TOMBSTONE)
                    .bind(subject.as_bytes())
                    .bind($now)
                    .execute(&mut *tx)
                    .await?;
                super::audit::append(&mut *tx, &audit.clone().count(n)).await?;
                tx.commit().await?;
                Ok(n)
            }};
        }
        match self {
            Store::Postgres(s) => forget!(s.pool(), now),
            Store::Sqlite(s) => forget!(s.pool(), now.timestamp_micros()),
        }
    }

    /// Of `subjects`, those erased at or after `since`, with when (Postgres):
    /// a draining spool drops what was received before its subject's erasure.
    pub async fn erased_since(
        &self,
        subjects: &[SubjectHash],
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::collections::HashMap<SubjectHash, chrono::DateTime<chrono::Utc>>, StoreError>
    {
        let Store::Postgres(s) = self else {
            return Ok(Default::default());
        };
        if subjects.is_empty() {
            return Ok(Default::default());
        }
        let wanted: Vec<&[u8]> = subjects.iter().map(SubjectHash::as_bytes).collect();
        let rows: Vec<(Vec<u8>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT subject, erased_at FROM erased_subjects \
             WHERE subject = ANY($1) AND erased_at >= $2",
        )
        .bind(&wanted)
        .bind(since)
        .fetch_all(s.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(b, at)| {
                <[u8; 32]>::try_from(b.as_slice())
                    .ok()
                    .map(|h| (SubjectHash(h), at))
            })
            .collect())
    }

    /// How many events are indexed under `subject` (tests, tools).
    pub async fn count_subject(&self, subject: &SubjectHash) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT count(*) FROM event_subjects WHERE subject = $1";
        let n: i64 = on_backend!(self, s => sqlx::query_scalar(SQL)
            .bind(subject.as_bytes())
            .fetch_one(s.pool())
            .await?);
        Ok(n.unsigned_abs())
    }
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
