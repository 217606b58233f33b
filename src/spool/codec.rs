//! Spooled rows in and out of their SQLite columns (a delivery's own
//! columns through the store's event codec, time as [`DbTime`]), subject
//! hashes back to back, and what each row counts against `spool.max_bytes`.

use sqlx::Row as _;

use super::ROW_OVERHEAD;
use crate::crypto::{KeyId, Sealed};
use crate::event::NewEvent;
use crate::store::quarantine::NewQuarantined;
use crate::store::DbTime;
use crate::subjects::SubjectHash;

pub(super) fn spooled_event(row: &sqlx::sqlite::SqliteRow) -> Result<NewEvent, sqlx::Error> {
    let mut event = crate::store::new_event_sqlite(row)?;
    event.subjects = subjects_of(row)?;
    Ok(event)
}

pub(super) fn spooled_quarantined(
    row: &sqlx::sqlite::SqliteRow,
) -> Result<NewQuarantined, sqlx::Error> {
    let key_id: String = row.try_get("key_id")?;
    let reason: String = row.try_get("reason")?;
    Ok(NewQuarantined {
        received_at: row.try_get::<DbTime, _>("received_at")?.0,
        reason: crate::quarantine::known_reason(&reason).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown quarantine reason {reason:?}").into())
        })?,
        request_id: row.try_get("request_id")?,
        bytes: row.try_get::<i64, _>("bytes")?.unsigned_abs(),
        seal_id: row.try_get("seal_id")?,
        sealed: Sealed {
            key_id: KeyId::new(&key_id).map_err(|e| sqlx::Error::Decode(e.into()))?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        },
        subjects: subjects_of(row)?,
    })
}

/// Subject hashes as stored: 32 bytes each, back to back.
pub(super) fn subject_bytes(subjects: &[SubjectHash]) -> Vec<u8> {
    subjects.iter().flat_map(|h| h.0).collect()
}

fn subjects_of(row: &sqlx::sqlite::SqliteRow) -> Result<Vec<SubjectHash>, sqlx::Error> {
    Ok(row
        .try_get::<Vec<u8>, _>("subjects")?
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(SubjectHash))
        .collect())
}

/// What a quarantine row is counted as against `spool.max_bytes`.
pub(crate) fn quarantined_size(row: &NewQuarantined) -> u64 {
    (row.sealed.ciphertext.len() + row.request_id.len() + row.reason.len()) as u64 + ROW_OVERHEAD
}

/// What a row is counted as against `spool.max_bytes`.
pub(crate) fn row_size(event: &NewEvent) -> u64 {
    let e = &event.envelope;
    (event.sealed.ciphertext.len() + e.job_id.len() + e.event.len()) as u64 + ROW_OVERHEAD
}
