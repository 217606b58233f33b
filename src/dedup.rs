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

    /// Whether `text` can be a stored `event` (CONTRACT §2:
    /// `^[A-Za-z0-9_.-]{1,64}$`).
    pub fn is_event(text: &str) -> bool {
        valid_token(text, 64, b"_.-")
    }

    /// Whether `text` can be a stored `job_id` (CONTRACT §2:
    /// `^[A-Za-z0-9_.:-]{1,128}$`).
    pub fn is_job_id(text: &str) -> bool {
        valid_token(text, 128, b"_.:-")
    }
}

/// 1 to `max_len` bytes, each an ASCII letter or digit or one of `extra`.
fn valid_token(s: &str, max_len: usize, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= max_len
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

// Both parts are validated tokens (CONTRACT §2), safe in logs.
impl fmt::Debug for DedupKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.job_id, self.event)
    }
}
