//! Key rotation: re-seal every row not under the current (first) key of
//! `IMGGO_ENCRYPTION_KEYS`, in batches. Safe while `serve` writes: the
//! service only inserts, and each update applies only if the row still
//! holds the nonce it was read with. Rows whose key is missing from the
//! ring, or that fail to authenticate, are reported and left alone.

use crate::crypto::KeyRing;
use crate::store::{Resealed, Store, StoreError};

/// Rows read and re-sealed per transaction.
pub const BATCH: u32 = 500;

/// What a re-encryption run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Rows now sealed under the current key.
    pub reencrypted: u64,
    /// (row id, key id, why) of rows left as they were.
    pub skipped: Vec<(i64, String, String)>,
}

pub async fn reencrypt(store: &Store, keys: &KeyRing) -> Result<Report, StoreError> {
    let current = keys.current().as_str().to_owned();
    let mut report = Report::default();
    let mut after = 0i64;
    loop {
        let rows = store
            .sealed_under_other_keys(&current, after, BATCH)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            match keys.open(
                &row.job_id,
                &row.event,
                &row.key_id,
                &row.nonce,
                &row.ciphertext,
            ) {
                Ok(plaintext) => batch.push(Resealed {
                    id: row.id,
                    sealed: keys.seal(&row.job_id, &row.event, &plaintext),
                    old_nonce: row.nonce,
                }),
                Err(e) => {
                    tracing::warn!(row = row.id, key_id = %row.key_id, error = %e, "row skipped");
                    report.skipped.push((row.id, row.key_id, e.to_string()));
                }
            }
        }
        report.reencrypted += store.reseal(&batch).await?;
    }
    Ok(report)
}
