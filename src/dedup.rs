//! The dedup key of a delivery: `(job_id, event)`. It names one stored
//! event everywhere the pair travels: idempotency (`ON CONFLICT (job_id,
//! event)` in the store and the spool), erasure's record of erased keys,
//! and the associated data every event payload is sealed under (so a
//! ciphertext cannot move to another row). A borrowed view: the strings
//! stay where the envelope or the row keeps them.

use std::fmt;

/// `(job_id, event)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey<'a> {
    pub job_id: &'a str,
    pub event: &'a str,
}

impl<'a> DedupKey<'a> {
    pub fn new(job_id: &'a str, event: &'a str) -> Self {
        Self { job_id, event }
    }
}

// Both parts are validated tokens (CONTRACT §2), safe in logs.
impl fmt::Debug for DedupKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.job_id, self.event)
    }
}
