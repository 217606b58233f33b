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
    /// quarantined delivery `id`, through the same insert as a delivery
    /// (an erased key or subject is refused, answered as a duplicate), and
    /// marks it `operator_supplied`; removes the quarantined delivery and
    /// records `audit` (count 1 when stored, 0 for a duplicate), all in one
    /// transaction.
    pub async fn store_operator_replay(
        &self,
        id: i64,
        event: &NewEvent,
        audit: &AuditEntry,
    ) -> Result<InsertOutcome, StoreError> {
        const MARK: &str =
            "UPDATE webhook_events SET operator_supplied = $1 WHERE job_id = $2 AND event = $3";
        const RELEASE: &str = "DELETE FROM quarantined_deliveries WHERE id = $1";
        let key = event.envelope.key();
        macro_rules! replay {
            ($pool:expr, |$tx:ident| $insert:expr, $marked:expr) => {{
                let mut $tx = $pool.begin().await?;
                // On Postgres the insert's own transaction is a savepoint
                // inside this one; its erasure lock is held to our commit.
                let outcome = $insert
                    .await?
                    .first()
                    .copied()
                    .unwrap_or(InsertOutcome::Duplicate);
                if outcome == InsertOutcome::Inserted {
                    sqlx::query(MARK)
                        .bind($marked)
                        .bind(key.job_id)
                        .bind(key.event)
                        .execute(&mut *$tx)
                        .await?;
                }
                sqlx::query(RELEASE).bind(id).execute(&mut *$tx).await?;
                let count = u64::from(outcome == InsertOutcome::Inserted);
                super::audit::append(&mut *$tx, &audit.clone().count(count)).await?;
                $tx.commit().await?;
                outcome
            }};
        }
        Ok(match self {
            // Through the store: a body received long ago gets its
            // partition made on demand.
            Store::Postgres(s) => replay!(s.pool(), |tx| s.insert_rows(&mut tx, &[event]), true),
            Store::Sqlite(s) => {
                let outcome = replay!(
                    s.pool(),
                    |tx| super::SqliteStore::insert_rows(&mut tx, &[event]),
                    1_i64
                );
                s.committed();
                outcome
            }
        })
    }
}
