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

    /// Erasure: deletes every event indexed under `subject`; records `audit`
    /// (whose target is the subject's hash, never its value) with the count.
    pub async fn forget_subject(
        &self,
        subject: &SubjectHash,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        on_backend!(self, s => {
            let mut tx = s.pool().begin().await?;
            let n = sqlx::query(
                "DELETE FROM webhook_events WHERE id IN \
                   (SELECT event_id FROM event_subjects WHERE subject = $1)",
            )
            .bind(subject.as_bytes())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            super::audit::append(&mut *tx, &audit.clone().count(n)).await?;
            tx.commit().await?;
            Ok(n)
        })
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
