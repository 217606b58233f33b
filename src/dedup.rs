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

    /// The key as Postgres stores it (`event_keys.key`, docs/storage.md):
    /// the first 16 bytes of SHA-256 over the event name, a line feed and
    /// the job id, which the migrations' `imggo_event_key(job_id, event)`
    /// computes alike. The batch statement takes it from here: a digest
    /// per row costs the receiver a fraction of what the SQL function
    /// costs Postgres, whose CPU every replica shares.
    pub fn digest(&self) -> [u8; 16] {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(self.event.as_bytes());
        hash.update(b"\n");
        hash.update(self.job_id.as_bytes());
        let mut out = [0; 16];
        out.copy_from_slice(&hash.finalize()[..16]);
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha256_of_event_line_feed_job_cut_to_16_bytes() {
        // printf 'job.succeeded\n0f6e3c1a-…' | sha256sum, first 32 digits.
        let key = DedupKey::new("0f6e3c1a-8d2b-4c57-9a10-5e7f2b9c4d31", "job.succeeded");
        let hex: String = key.digest().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "0869842e1ea923ff2a6ae3e891df0231");
    }
}
