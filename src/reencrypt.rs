//! Key rotation: re-seal every sealed row not under the current (first) key
//! of `IMGGO_ENCRYPTION_KEYS`: stored events, quarantined deliveries, and
//! this replica's spool (deliveries and quarantine rows waiting for
//! Postgres). Safe while `serve` writes: each update applies only if the
//! row still holds the nonce it was read with. Rows whose key is missing
//! from the ring, or that fail to authenticate, are reported and left
//! alone. [`missing_keys`] counts what an old key still guards, for the
//! warnings of start-up and `check-config`.

use std::path::Path;

use crate::crypto::{Binding, KeyRing};
use crate::store::{Resealed, SealedTable, Store, StoreError};

/// Rows read and re-sealed per transaction.
pub const BATCH: u32 = 500;

/// What a re-encryption run did, per kind of sealed row.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Stored events now sealed under the current key.
    pub events: u64,
    /// Quarantined deliveries now sealed under the current key.
    pub quarantine: u64,
    /// Spooled rows (deliveries and quarantine rows) now sealed under it.
    pub spool: u64,
    /// Rows left as they were, and why.
    pub skipped: Vec<SkippedRow>,
}

/// A row re-encryption left under its old key.
#[derive(Debug, PartialEq, Eq)]
pub struct SkippedRow {
    /// `events`, `quarantine`, or the spool table's name.
    pub kind: &'static str,
    pub id: i64,
    /// The key the row is still sealed under.
    pub key_id: String,
    pub reason: String,
}

impl Report {
    fn skip(&mut self, kind: &'static str, id: i64, key_id: String, reason: String) {
        tracing::warn!(kind, row = id, key_id = %key_id, error = %reason, "row skipped");
        self.skipped.push(SkippedRow {
            kind,
            id,
            key_id,
            reason,
        });
    }
}

/// Re-seals the spool at `spool` (when given and present), then the
/// quarantine, then the events: a spooled row drained meanwhile lands in
/// Postgres before its pass reads it.
pub async fn reencrypt(
    store: &Store,
    keys: &KeyRing,
    spool: Option<&Path>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    if let Some(path) = spool {
        let (n, skipped) = crate::spool::keys::reseal(path, keys).await?;
        report.spool = n;
        for row in skipped {
            report.skip(row.table, row.seq, row.key_id, row.reason);
        }
    }
    reseal_quarantine(store, keys, &mut report).await?;
    reseal_events(store, keys, &mut report).await?;
    Ok(report)
}

async fn reseal_events(
    store: &Store,
    keys: &KeyRing,
    report: &mut Report,
) -> Result<(), StoreError> {
    let current = keys.current().as_str().to_owned();
    let mut after = 0i64;
    loop {
        let rows = store
            .sealed_under_other_keys(&current, after, BATCH)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.id;
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            let binding = Binding::Event(row.key());
            match keys.reseal(binding, &row.key_id, &row.nonce, &row.ciphertext) {
                Ok(sealed) => batch.push(Resealed {
                    id: row.id,
                    sealed,
                    old_nonce: row.nonce,
                }),
                Err(e) => report.skip("events", row.id, row.key_id, e),
            }
        }
        report.events += store.reseal(SealedTable::Events, &batch).await?;
    }
}

async fn reseal_quarantine(
    store: &Store,
    keys: &KeyRing,
    report: &mut Report,
) -> Result<(), StoreError> {
    let current = keys.current().as_str().to_owned();
    let mut after = 0i64;
    loop {
        let rows = store
            .quarantined_under_other_keys(&current, after, BATCH)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.entry.id;
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            let binding = Binding::Quarantined {
                seal_id: &row.seal_id,
            };
            match keys.reseal(binding, &row.key_id, &row.nonce, &row.ciphertext) {
                Ok(sealed) => batch.push(Resealed {
                    id: row.entry.id,
                    sealed,
                    old_nonce: row.nonce,
                }),
                Err(e) => report.skip("quarantine", row.entry.id, row.key_id, e),
            }
        }
        report.quarantine += store.reseal(SealedTable::Quarantine, &batch).await?;
    }
}

/// Rows sealed under a key that is not in the ring, per kind: such a row
/// can no longer be read (`show`, the feed, `rejected show`) until its key
/// is back. Each entry: kind (`events`, `quarantine`, `spool`), key id,
/// rows.
pub async fn missing_keys(
    store: &Store,
    keys: &KeyRing,
    spool: Option<&Path>,
) -> anyhow::Result<Vec<(&'static str, String, u64)>> {
    let known = |k: &str| keys.ids().any(|id| id.as_str() == k);
    let mut missing = Vec::new();
    for (kind, table) in [
        ("events", SealedTable::Events),
        ("quarantine", SealedTable::Quarantine),
    ] {
        for (key, n) in store.rows_by_key(table).await? {
            if !known(&key) {
                missing.push((kind, key, n));
            }
        }
    }
    if let Some(path) = spool {
        for (key, n) in crate::spool::keys::rows_by_key(path).await? {
            if !known(&key) {
                missing.push(("spool", key, n));
            }
        }
    }
    Ok(missing)
}

/// Logs one warning per (kind, key) of [`missing_keys`].
pub fn warn_missing(missing: &[(&'static str, String, u64)]) {
    for (kind, key_id, rows) in missing {
        tracing::warn!(
            kind,
            key_id = %key_id,
            rows,
            "rows are sealed under a key missing from IMGGO_ENCRYPTION_KEYS: they cannot be read until it is back"
        );
    }
}
