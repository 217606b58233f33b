//! What an operator does with a quarantined delivery that can never pass
//! as it is: discard it, or store a corrected body in its place. Each is
//! one transaction with its audit record.

use super::{InsertOutcome, NewEvent, Store, StoreError};
use crate::audit::AuditEntry;

impl Store {
    /// Deletes quarantined delivery `id` and records `audit` (count 1) in
    /// the same transaction; false (nothing recorded) when it was gone.
    pub async fn discard_quarantined(
        &self,
        id: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM quarantined_deliveries WHERE id = $1";
        on_backend!(self, s => {
            let mut tx = s.pool().begin().await?;
            let n = sqlx::query(SQL).bind(id).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Ok(false);
            }
            super::audit::append(&mut *tx, &audit.clone().count(1)).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Stores `event`, built from a body an operator supplied for
    /// quarantined delivery `id`, marked `operator_supplied`; removes the
    /// quarantined delivery and records `audit` (count 1 when stored, 0 for
    /// a duplicate), all in one transaction.
    pub async fn store_operator_replay(
        &self,
        id: i64,
        event: &NewEvent,
        audit: &AuditEntry,
    ) -> Result<InsertOutcome, StoreError> {
        const INSERT: &str = "INSERT INTO webhook_events \
             (job_id, event, pattern_id, status, received_at, key_id, nonce, ciphertext, \
              operator_supplied) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (job_id, event) DO NOTHING RETURNING id";
        const SUBJECT: &str =
            "INSERT INTO event_subjects (subject, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        const RELEASE: &str = "DELETE FROM quarantined_deliveries WHERE id = $1";
        let (e, sealed) = (&event.envelope, &event.sealed);
        macro_rules! replay {
            ($pool:expr, $received_at:expr, $marked:expr) => {{
                let mut tx = $pool.begin().await?;
                let inserted: Option<i64> = sqlx::query_scalar(INSERT)
                    .bind(&e.job_id)
                    .bind(&e.event)
                    .bind(&e.pattern_id)
                    .bind(&e.status)
                    .bind($received_at)
                    .bind(sealed.key_id.as_str())
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind($marked)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(event_id) = inserted {
                    for subject in &event.subjects {
                        sqlx::query(SUBJECT)
                            .bind(subject.as_bytes())
                            .bind(event_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                sqlx::query(RELEASE).bind(id).execute(&mut *tx).await?;
                let count = u64::from(inserted.is_some());
                super::audit::append(&mut *tx, &audit.clone().count(count)).await?;
                tx.commit().await?;
                Ok(match inserted {
                    Some(_) => InsertOutcome::Inserted,
                    None => InsertOutcome::Duplicate,
                })
            }};
        }
        match self {
            Store::Postgres(s) => replay!(s.pool(), event.received_at, true),
            Store::Sqlite(s) => {
                let outcome = replay!(s.pool(), event.received_at.timestamp_micros(), 1_i64);
                // Long-polls on this process wait for its commits.
                s.commits().notify_waiters();
                outcome
            }
        }
    }
}
