//! The SQL of key rotation (`reencrypt`): which rows are sealed under which
//! key, and writing re-sealed payloads back. Events are bound to their
//! (job_id, event), quarantined bodies to their `seal_id`; both tables hold
//! `key_id`, `nonce` and `ciphertext` alike.

use super::{Resealed, Store, StoreError};

/// A table of sealed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedTable {
    Events,
    Quarantine,
}

impl SealedTable {
    fn name(self) -> &'static str {
        match self {
            Self::Events => "webhook_events",
            Self::Quarantine => "quarantined_deliveries",
        }
    }
}

impl Store {
    /// How many rows of `table` are sealed under each key id.
    ///
    /// One pass over the table: `reencrypt`, `check-config` and the
    /// start-up check (in the background) call it, never a request.
    pub async fn rows_by_key(&self, table: SealedTable) -> Result<Vec<(String, u64)>, StoreError> {
        let sql = format!(
            "SELECT key_id, count(*) FROM {} GROUP BY key_id ORDER BY key_id",
            table.name()
        );
        let rows: Vec<(String, i64)> =
            super::on_backend!(self, s => sqlx::query_as(&sql).fetch_all(s.pool()).await?);
        Ok(rows
            .into_iter()
            .map(|(k, n)| (k, n.unsigned_abs()))
            .collect())
    }

    /// Writes re-sealed payloads into `table` in one transaction; returns
    /// rows changed. Each update applies only if the row still holds the
    /// nonce it was read with.
    pub async fn reseal(&self, table: SealedTable, rows: &[Resealed]) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE {} SET key_id = $1, nonce = $2, ciphertext = $3 WHERE id = $4 AND nonce = $5",
            table.name()
        );
        super::on_backend!(self, s => {
            let mut tx = s.pool().begin().await?;
            let mut changed = 0;
            for row in rows {
                changed += sqlx::query(&sql)
                    .bind(row.sealed.key_id.as_str())
                    .bind(&row.sealed.nonce)
                    .bind(&row.sealed.ciphertext)
                    .bind(row.id)
                    .bind(&row.old_nonce)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(changed)
        })
    }
}
