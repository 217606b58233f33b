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
    /// Rows left as they were, and why.
    pub skipped: Vec<SkippedRow>,
}

/// A row re-encryption left under its old key.
#[derive(Debug, PartialEq, Eq)]
pub struct SkippedRow {
    pub id: i64,
    /// The key the row is still sealed under.
    pub key_id: String,
    pub reason: String,
}

impl Report {
    fn skip(&mut self, id: i64, key_id: String, reason: String) {
        tracing::warn!(row = id, key_id = %key_id, error = %reason, "row skipped");
        self.skipped.push(SkippedRow { id, key_id, reason });
    }
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
                Ok(plaintext) => match keys.seal(&row.job_id, &row.event, &plaintext) {
                    Ok(sealed) => batch.push(Resealed {
                        id: row.id,
                        sealed,
                        old_nonce: row.nonce,
                    }),
                    Err(e) => report.skip(row.id, row.key_id, e.to_string()),
                },
                Err(e) => report.skip(row.id, row.key_id, e.to_string()),
            }
        }
        report.reencrypted += store.reseal(&batch).await?;
    }
    Ok(report)
}
