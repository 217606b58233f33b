//! Key rotation reaches the spool: `reencrypt` re-seals spooled deliveries
//! and spooled quarantine rows under the current key, and `check-config`
//! and start-up count rows under keys missing from the ring. A command
//! opens this replica's spool file beside a running server (WAL lets both
//! in); it never creates one.

use sqlx::{Connection as _, Row as _, SqliteConnection};
use std::path::Path;

use super::schema::open_existing;

use crate::crypto::{Binding, DedupKey, KeyRing};

/// A row of the spool that re-encryption left under its old key.
#[derive(Debug, PartialEq, Eq)]
pub struct SkippedSpoolRow {
    /// `spooled_events` or `spooled_quarantine`.
    pub table: &'static str,
    pub seq: i64,
    pub key_id: String,
    pub reason: String,
}

/// Rows of the spool at `path` sealed under each key id (deliveries and
/// quarantine rows together); empty when there is no spool file.
pub async fn rows_by_key(path: &Path) -> Result<Vec<(String, u64)>, sqlx::Error> {
    let Some(mut conn) = open_existing(path).await? else {
        return Ok(Vec::new());
    };
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT key_id, count(*) FROM ( \
           SELECT key_id FROM spooled_events UNION ALL SELECT key_id FROM spooled_quarantine) \
         GROUP BY key_id ORDER BY key_id",
    )
    .fetch_all(&mut conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(k, n)| (k, n.unsigned_abs()))
        .collect())
}

/// Re-seals every row of the spool at `path` not under the current key, in
/// one transaction (the spool is bounded by `spool.max_bytes`). Each update
/// applies only if the row still holds the nonce it was read with: a row
/// the drainer moved meanwhile is simply gone. Returns the rows re-sealed.
pub async fn reseal(
    path: &Path,
    keys: &KeyRing,
) -> Result<(u64, Vec<SkippedSpoolRow>), sqlx::Error> {
    let Some(mut conn) = open_existing(path).await? else {
        return Ok((0, Vec::new()));
    };
    let current = keys.current().as_str();
    let mut tx = conn.begin().await?;
    let mut changed = 0;
    let mut skipped = Vec::new();
    let events = sqlx::query(
        "SELECT seq, job_id, event, key_id, nonce, ciphertext FROM spooled_events WHERE key_id <> ?",
    )
    .bind(current)
    .fetch_all(&mut *tx)
    .await?;
    for row in &events {
        let (seq, job_id, event): (i64, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let (key_id, nonce, ciphertext): (String, Vec<u8>, Vec<u8>) =
            (row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
        let binding = Binding::Event(DedupKey::new(&job_id, &event));
        let sealed = keys.reseal(binding, &key_id, &nonce, &ciphertext);
        match sealed {
            Ok(sealed) => {
                changed += update(&mut tx, "spooled_events", seq, &nonce, &sealed).await?;
            }
            Err(reason) => skipped.push(SkippedSpoolRow {
                table: "spooled_events",
                seq,
                key_id,
                reason,
            }),
        }
    }
    let quarantined = sqlx::query(
        "SELECT seq, seal_id, key_id, nonce, ciphertext FROM spooled_quarantine WHERE key_id <> ?",
    )
    .bind(current)
    .fetch_all(&mut *tx)
    .await?;
    for row in &quarantined {
        let (seq, seal_id): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let (key_id, nonce, ciphertext): (String, Vec<u8>, Vec<u8>) =
            (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
        let sealed = keys.reseal(
            Binding::Quarantined { seal_id: &seal_id },
            &key_id,
            &nonce,
            &ciphertext,
        );
        match sealed {
            Ok(sealed) => {
                changed += update(&mut tx, "spooled_quarantine", seq, &nonce, &sealed).await?;
            }
            Err(reason) => skipped.push(SkippedSpoolRow {
                table: "spooled_quarantine",
                seq,
                key_id,
                reason,
            }),
        }
    }
    tx.commit().await?;
    Ok((changed, skipped))
}

async fn update(
    conn: &mut SqliteConnection,
    table: &str,
    seq: i64,
    old_nonce: &[u8],
    sealed: &crate::crypto::Sealed,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(&format!(
        "UPDATE {table} SET key_id = ?, nonce = ?, ciphertext = ? WHERE seq = ? AND nonce = ?"
    ))
    .bind(sealed.key_id.as_str())
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(seq)
    .bind(old_nonce)
    .execute(conn)
    .await?
    .rows_affected())
}
