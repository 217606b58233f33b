//! What is sealed: the payload, compressed when that makes it smaller.
//!
//! A sealed payload cannot be compressed by the database (ciphertext looks
//! random, so Postgres' TOAST compression gains nothing), yet JSON from
//! extracted documents shrinks to under half with zstd. Compressing before
//! sealing keeps the stored rows, the write-ahead log and the retention
//! window's disk at that size: at a burst of deliveries the WAL volume is
//! what drives Postgres' checkpoints.
//!
//! Framing (inside the AEAD, so authenticated like the rest):
//! - `0x00` then one zstd frame (with its content size);
//! - `0x01` then the payload as is (compression would not have helped);
//! - anything else: a row sealed before framing existed, which is the JSON
//!   payload itself (it starts with `{`).

use std::cell::RefCell;

use super::OpenError;

const ZSTD: u8 = 0x00;
const RAW: u8 = 0x01;

/// One of zstd's fast levels: 1.7 KB of delivery JSON shrinks to ~55% in
/// ~2.7 us. Level 1 reaches ~42% but takes ~5 us, which under a burst cost
/// more receiver CPU than it saved Postgres (measured in bench/run.sh).
const LEVEL: i32 = -1;

/// Largest payload a frame may claim to expand to. Frames are authenticated
/// (only this service writes them), so this only bounds a bug's damage.
const MAX_PLAINTEXT: u64 = 256 << 20;

thread_local! {
    /// A compression context per thread: creating one costs more than
    /// compressing a delivery.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
}

/// Frames `payload`, leaving `spare` bytes of capacity after it (the AEAD
/// tag is appended in place).
pub fn pack(payload: &[u8], spare: usize) -> Vec<u8> {
    let bound = zstd::zstd_safe::compress_bound(payload.len());
    let mut out = vec![0u8; 1 + bound];
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        cell.as_mut()?
            .compress_to_buffer(payload, &mut out[1..])
            .ok()
    });
    match compressed {
        Some(n) if n < payload.len() => {
            out[0] = ZSTD;
            out.truncate(1 + n);
            out.reserve_exact(spare);
            out
        }
        // Incompressible (or no context could be made): store as is.
        _ => {
            let mut out = Vec::with_capacity(1 + payload.len() + spare);
            out.push(RAW);
            out.extend_from_slice(payload);
            out
        }
    }
}

/// The payload a frame holds.
pub fn unpack(framed: Vec<u8>) -> Result<Vec<u8>, OpenError> {
    match framed.first() {
        Some(&ZSTD) => {
            let frame = &framed[1..];
            let size = zstd::zstd_safe::get_frame_content_size(frame)
                .ok()
                .flatten()
                .filter(|n| *n <= MAX_PLAINTEXT)
                .ok_or(OpenError::Corrupt)?;
            let payload =
                zstd::bulk::decompress(frame, size as usize).map_err(|_| OpenError::Corrupt)?;
            if payload.len() as u64 != size {
                return Err(OpenError::Corrupt);
            }
            Ok(payload)
        }
        Some(&RAW) => {
            let mut payload = framed;
            payload.remove(0);
            Ok(payload)
        }
        // Sealed before framing: the payload itself.
        _ => Ok(framed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_stored_compressed_and_comes_back_exactly() {
        let json = br#"{"event":"job.succeeded","items":[{"sku":"A-1","description":"Office chair"},{"sku":"A-2","description":"Office chair"},{"sku":"A-3","description":"Office chair"}]}"#;
        let framed = pack(json, 16);
        assert_eq!(framed[0], ZSTD);
        assert!(framed.len() < json.len(), "{} bytes", framed.len());
        assert!(framed.capacity() >= framed.len() + 16);
        assert_eq!(unpack(framed).unwrap(), json);
    }

    #[test]
    fn incompressible_payloads_are_stored_as_is() {
        let noise: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for payload in [&b"{}"[..], &noise[..], &b""[..]] {
            let framed = pack(payload, 0);
            assert_eq!(framed[0], RAW);
            assert_eq!(&framed[1..], payload);
            assert_eq!(unpack(framed).unwrap(), payload);
        }
    }

    #[test]
    fn rows_sealed_before_framing_open_as_they_are() {
        let legacy = br#"{"event":"job.succeeded"}"#.to_vec();
        assert_eq!(unpack(legacy.clone()).unwrap(), legacy);
    }

    #[test]
    fn a_damaged_frame_is_corrupt_not_a_panic() {
        let json = br#"{"a":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
        let framed = pack(json, 0);
        assert_eq!(framed[0], ZSTD);
        for cut in [1, 2, framed.len() / 2, framed.len() - 1] {
            assert_eq!(
                unpack(framed[..cut].to_vec()),
                Err(OpenError::Corrupt),
                "cut at {cut}"
            );
        }
        let mut flipped = framed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(unpack(flipped).map_or(true, |p| p != json));
    }
}
