//! The event types every stage shares: the plaintext envelope of a
//! delivery, a sealed event ready to be stored, what storing it did, and a
//! stored event as it is read back. `delivery` produces them, `store`
//! writes and reads them, [`wire`] renders them; none imports another.

pub mod wire;

use chrono::{DateTime, Utc};

use crate::crypto::Sealed;
use crate::dedup::DedupKey;
use crate::subjects::SubjectHash;
use crate::validation::Verdict;

/// The plaintext columns of a stored event (validated by `delivery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub job_id: String,
    pub event: String,
    pub pattern_id: Option<String>,
    pub status: Option<String>,
}

impl Envelope {
    /// Its dedup key: `(job_id, event)`.
    pub fn key(&self) -> DedupKey<'_> {
        DedupKey::new(&self.job_id, &self.event)
    }
}

/// A sealed event ready to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub envelope: Envelope,
    pub sealed: Sealed,
    /// When the delivery was received: kept through the spool, so a late
    /// commit does not make an event younger than it is.
    pub received_at: DateTime<Utc>,
    /// Keyed hashes of the data subjects it names (taken before redaction),
    /// stored beside it for erasure.
    pub subjects: Vec<SubjectHash>,
    /// What its pattern's schema said of the extracted data (taken before
    /// redaction); stored beside it (CONTRACT §12).
    pub verdict: Verdict,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new row was committed.
    Inserted,
    /// (job_id, event) was already stored; nothing was written.
    Duplicate,
}

/// A stored row, payload still sealed (read by `store`'s one row codec).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub job_id: String,
    pub event: String,
    pub pattern_id: Option<String>,
    pub status: Option<String>,
    pub received_at: DateTime<Utc>,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// Stored from a body an operator supplied (`rejected replay --body`),
    /// not the one ImgGo signed. Shown by `show`, the Results API and
    /// `export`.
    pub operator_supplied: bool,
    /// The validation verdict (CONTRACT §12): `None` when unchecked.
    pub valid: Option<bool>,
    /// Its errors as a JSON array, `None` when there are none.
    pub validation_errors: Option<String>,
}

#[cfg(test)]
impl NewEvent {
    /// A row as a delivery of `job_id` would make (its payload sealed by no
    /// key: what is stored, not what it opens to, is under test).
    pub fn for_tests(job_id: &str) -> Self {
        Self {
            envelope: Envelope {
                job_id: job_id.into(),
                event: "job.completed".into(),
                pattern_id: Some("p-1".into()),
                status: None,
            },
            sealed: Sealed {
                key_id: crate::crypto::KeyId::new("k1").expect("a valid key id"),
                nonce: vec![7; 24],
                ciphertext: vec![9; 64],
            },
            received_at: DateTime::from_timestamp_micros(1_700_000_000_000_001)
                .expect("a valid time"),
            subjects: Vec::new(),
            verdict: Verdict::default(),
        }
    }
}

impl StoredEvent {
    /// Its dedup key: `(job_id, event)`.
    pub fn key(&self) -> DedupKey<'_> {
        DedupKey::new(&self.job_id, &self.event)
    }
}
