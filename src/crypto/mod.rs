//! The encryption key ring and sealing of stored payloads.
//!
//! XChaCha20-Poly1305: a 192-bit nonce makes random nonces safe at any volume
//! (AES-GCM's 96-bit random nonces cap a key near 2^32 rows), and it is fast
//! in software on machines without AES instructions. Associated data binds a
//! ciphertext to its (job_id, event): moved to another row, it fails to open.

mod frame;

use std::fmt;

pub use crate::dedup::DedupKey;

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;

/// Poly1305 tag length, appended to every ciphertext.
const TAG_LEN: usize = 16;

/// Domain separation for the associated data, versioned with the format.
const AAD_CONTEXT: &[u8] = b"imggo-receiver/event/v1";
/// The same for quarantined deliveries.
const QUARANTINE_CONTEXT: &[u8] = b"imggo-receiver/quarantine/v1";

/// A key's public name, stored beside every row it sealed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Ids are short and printable: `[A-Za-z0-9_.-]{1,64}`.
    pub fn new(id: &str) -> Result<Self, String> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err("key id must match [A-Za-z0-9_.-]{1,64}".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// A payload sealed under one key of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: KeyId,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The cipher refused to seal a payload: nothing may be stored for it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the payload could not be encrypted")]
pub struct SealError;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("key `{0}` is not in IMGGO_ENCRYPTION_KEYS")]
    UnknownKey(String),
    #[error("ciphertext does not authenticate for this row (wrong key, moved or tampered)")]
    Corrupt,
}

/// The encryption keys: the first seals, every one opens.
pub struct KeyRing {
    keys: Vec<(KeyId, XChaCha20Poly1305)>,
    /// Fault injection for unit tests: sealing fails as the cipher would
    /// past its message limit.
    #[cfg(test)]
    refuse_to_seal: bool,
}

impl KeyRing {
    /// `None` when empty: a ring needs a current key.
    pub fn new(keys: Vec<(KeyId, [u8; 32])>) -> Option<Self> {
        if keys.is_empty() {
            return None;
        }
        let keys = keys
            .into_iter()
            .map(|(id, key)| (id, XChaCha20Poly1305::new(&key.into())))
            .collect();
        Some(Self {
            keys,
            #[cfg(test)]
            refuse_to_seal: false,
        })
    }

    /// A ring whose seal always fails (unit tests of the callers' handling).
    #[cfg(test)]
    pub(crate) fn refusing_to_seal() -> Self {
        let mut ring = Self::new(vec![(KeyId("t".into()), [7; 32])]).expect("one key");
        ring.refuse_to_seal = true;
        ring
    }

    /// The id new rows are sealed under.
    pub fn current(&self) -> &KeyId {
        &self.keys[0].0
    }

    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|(id, _)| id)
    }

    /// Seals `plaintext` for the row of `key` with a fresh nonce,
    /// compressed first when that makes it smaller (see [`frame`]).
    pub fn seal(&self, key: DedupKey<'_>, plaintext: &[u8]) -> Result<Sealed, SealError> {
        self.seal_bound(&associated_data(key), plaintext)
    }

    /// Seals a quarantined body, bound to its row's `seal_id` (and kept
    /// apart from events by its own associated-data context).
    pub fn seal_quarantined(&self, seal_id: &str, plaintext: &[u8]) -> Result<Sealed, SealError> {
        self.seal_bound(&quarantine_data(seal_id), plaintext)
    }

    /// Opens what [`Self::seal_quarantined`] sealed.
    pub fn open_quarantined(
        &self,
        seal_id: &str,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        self.open_bound(&quarantine_data(seal_id), key_id, nonce, ciphertext)
    }

    /// Opens a payload and seals it again under the current key, bound as
    /// it was (key rotation: `reencrypt`, for every kind of sealed row).
    /// The error says why, never what the payload holds.
    pub fn reseal(
        &self,
        binding: Binding<'_>,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Sealed, String> {
        let aad = match binding {
            Binding::Event(key) => associated_data(key),
            Binding::Quarantined { seal_id } => quarantine_data(seal_id),
        };
        let plaintext = self
            .open_bound(&aad, key_id, nonce, ciphertext)
            .map_err(|e| e.to_string())?;
        self.seal_bound(&aad, &plaintext).map_err(|e| e.to_string())
    }

    fn seal_bound(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, SealError> {
        let (id, cipher) = &self.keys[0];
        // A 192-bit nonce from the thread's CSPRNG (ChaCha, seeded and
        // periodically reseeded from the OS): random nonces of this size never
        // repeat in practice, and no system call is made per row.
        let nonce = XChaCha20Poly1305::generate_nonce(&mut rand::thread_rng());
        let mut ciphertext = frame::pack(plaintext, TAG_LEN);
        #[cfg(test)]
        if self.refuse_to_seal {
            return Err(SealError);
        }
        // The cipher refuses only a message past its ~256 GiB limit; should
        // it ever refuse, nothing half-sealed may be stored.
        cipher
            .encrypt_in_place(&nonce, aad, &mut ciphertext)
            .map_err(|_| SealError)?;
        Ok(Sealed {
            key_id: id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a row's payload; fails when the key is missing or the row was
    /// altered or moved.
    pub fn open(
        &self,
        key: DedupKey<'_>,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        self.open_bound(&associated_data(key), key_id, nonce, ciphertext)
    }

    fn open_bound(
        &self,
        aad: &[u8],
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| k.as_str() == key_id)
            .map(|(_, c)| c)
            .ok_or_else(|| OpenError::UnknownKey(key_id.to_owned()))?;
        if nonce.len() != NONCE_LEN {
            return Err(OpenError::Corrupt);
        }
        let mut framed = ciphertext.to_vec();
        cipher
            .decrypt_in_place(XNonce::from_slice(nonce), aad, &mut framed)
            .map_err(|_| OpenError::Corrupt)?;
        frame::unpack(framed)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.ids().map(KeyId::as_str).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Associated data of a quarantined body: its own context, so a ciphertext
/// can move neither between quarantine rows nor into an event row.
/// What a sealed payload is bound to (its associated data).
#[derive(Clone, Copy, Debug)]
pub enum Binding<'a> {
    /// A stored or spooled event: its dedup key.
    Event(DedupKey<'a>),
    /// A quarantined delivery: its `seal_id`.
    Quarantined { seal_id: &'a str },
}

fn quarantine_data(seal_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(QUARANTINE_CONTEXT.len() + seal_id.len());
    aad.extend_from_slice(QUARANTINE_CONTEXT);
    aad.extend_from_slice(seal_id.as_bytes());
    aad
}

/// Length-prefixed so that no two (job_id, event) pairs share an encoding.
/// These bytes are part of every stored ciphertext: they never change.
fn associated_data(key: DedupKey<'_>) -> Vec<u8> {
    let DedupKey { job_id, event } = key;
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + 8 + job_id.len() + event.len());
    aad.extend_from_slice(AAD_CONTEXT);
    for part in [job_id, event] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// A fresh random 32-byte key (for `keygen` and `init`).
pub fn generate_key() -> [u8; 32] {
    XChaCha20Poly1305::generate_key(&mut OsRng).into()
}

#[cfg(test)]
mod tests {
    use chacha20poly1305::aead::Aead as _;

    use super::*;

    fn ring(ids: &[(&str, u8)]) -> KeyRing {
        KeyRing::new(
            ids.iter()
                .map(|(id, b)| (KeyId::new(id).unwrap(), [*b; 32]))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn seal_then_open_round_trips_under_the_first_key() {
        let r = ring(&[("a", 1), ("b", 2)]);
        let s = r
            .seal(DedupKey::new("job-1", "job.succeeded"), b"{\"x\":1}")
            .unwrap();
        assert_eq!(s.key_id.as_str(), "a");
        assert_eq!(s.nonce.len(), NONCE_LEN);
        assert!(!s.ciphertext.windows(7).any(|w| w == b"{\"x\":1}"));
        let pt = r
            .open(
                DedupKey::new("job-1", "job.succeeded"),
                "a",
                &s.nonce,
                &s.ciphertext,
            )
            .unwrap();
        assert_eq!(pt, b"{\"x\":1}");
    }

    #[test]
    fn nonces_are_fresh_per_seal() {
        let r = ring(&[("a", 1)]);
        let a = r.seal(DedupKey::new("j", "e"), b"same").unwrap();
        let b = r.seal(DedupKey::new("j", "e"), b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_open() {
        let r = ring(&[("a", 1)]);
        let s = r
            .seal(DedupKey::new("job-1", "job.succeeded"), b"payload")
            .unwrap();
        for (job, event) in [
            ("job-2", "job.succeeded"),
            ("job-1", "job.failed"),
            // Same concatenation, different split: length prefixes tell them apart.
            ("job-1j", "ob.succeeded"),
        ] {
            assert_eq!(
                r.open(DedupKey::new(job, event), "a", &s.nonce, &s.ciphertext),
                Err(OpenError::Corrupt),
                "{job}/{event}"
            );
        }
    }

    #[test]
    fn tampering_and_unknown_keys_are_reported() {
        let r = ring(&[("a", 1)]);
        let mut s = r.seal(DedupKey::new("j", "e"), b"payload").unwrap();
        s.ciphertext[0] ^= 1;
        assert_eq!(
            r.open(DedupKey::new("j", "e"), "a", &s.nonce, &s.ciphertext),
            Err(OpenError::Corrupt)
        );
        assert_eq!(
            r.open(DedupKey::new("j", "e"), "zz", &s.nonce, &s.ciphertext),
            Err(OpenError::UnknownKey("zz".into()))
        );
        assert_eq!(
            r.open(DedupKey::new("j", "e"), "a", &s.nonce[..10], &s.ciphertext),
            Err(OpenError::Corrupt)
        );
    }

    #[test]
    fn rotated_ring_still_opens_rows_of_the_old_key() {
        let old = ring(&[("a", 1)]);
        let s = old.seal(DedupKey::new("j", "e"), b"old row").unwrap();
        let rotated = ring(&[("b", 2), ("a", 1)]);
        assert_eq!(rotated.current().as_str(), "b");
        assert_eq!(
            rotated
                .open(DedupKey::new("j", "e"), "a", &s.nonce, &s.ciphertext)
                .unwrap(),
            b"old row"
        );
        // And the same key under a different id does not stand in for it.
        let renamed = ring(&[("c", 1)]);
        assert!(renamed
            .open(DedupKey::new("j", "e"), "a", &s.nonce, &s.ciphertext)
            .is_err());
    }

    #[test]
    fn rows_sealed_before_compression_still_open() {
        // What `seal` wrote before payloads were framed: the JSON, encrypted.
        let r = ring(&[("a", 1)]);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let cipher = XChaCha20Poly1305::new(&[1u8; 32].into());
        let legacy = cipher
            .encrypt(
                &nonce,
                chacha20poly1305::aead::Payload {
                    msg: br#"{"event":"job.succeeded"}"#,
                    aad: &associated_data(DedupKey::new("j", "e")),
                },
            )
            .unwrap();
        assert_eq!(
            r.open(DedupKey::new("j", "e"), "a", &nonce, &legacy)
                .unwrap(),
            br#"{"event":"job.succeeded"}"#
        );
    }

    #[test]
    fn large_json_is_stored_smaller_than_it_came() {
        let r = ring(&[("a", 1)]);
        let json = format!(
            "{{\"items\":[{}]}}",
            vec![r#"{"sku":"SKU-1","description":"Office chair, black mesh"}"#; 20].join(",")
        );
        let s = r.seal(DedupKey::new("j", "e"), json.as_bytes()).unwrap();
        assert!(
            s.ciphertext.len() < json.len() / 2,
            "{} bytes",
            s.ciphertext.len()
        );
        assert_eq!(
            r.open(DedupKey::new("j", "e"), "a", &s.nonce, &s.ciphertext)
                .unwrap(),
            json.as_bytes()
        );
    }

    #[test]
    fn debug_shows_ids_only() {
        let r = ring(&[("a", 7)]);
        let dbg = format!("{r:?}");
        assert!(dbg.contains("\"a\""));
        assert!(!dbg.contains('7'));
    }

    /// The associated data of an event is part of every stored ciphertext:
    /// its bytes are pinned, so a change of how the key is carried cannot
    /// leave stored rows unreadable.
    #[test]
    fn the_event_associated_data_never_changes() {
        let mut expected = b"imggo-receiver/event/v1".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 5]);
        expected.extend_from_slice(b"job-1");
        expected.extend_from_slice(&[0, 0, 0, 13]);
        expected.extend_from_slice(b"job.succeeded");
        assert_eq!(
            associated_data(DedupKey::new("job-1", "job.succeeded")),
            expected
        );
    }
}
