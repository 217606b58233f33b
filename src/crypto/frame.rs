//! What is sealed: the payload, compressed when that makes it smaller.
//!
//! A sealed payload cannot be compressed by the database (ciphertext looks
//! random, so Postgres' TOAST compression gains nothing), yet JSON from
//! extracted documents shrinks to little over half with LZ4. Compressing
//! before sealing keeps the stored rows, the write-ahead log and the
//! retention window's disk at that size: at a burst of deliveries the WAL
//! volume is what drives Postgres' checkpoints.
//!
//! LZ4 (the block format, `lz4_flex`, no unsafe code): 1.7 KB of delivery
//! JSON becomes ~980 B in ~1.6 us. zstd's fast level -1 reaches ~920 B but
//! took ~2.7 us, and more than twice that inside the busy server.
//!
//! Framing (inside the AEAD, so authenticated like the rest). The first byte
//! is a tag from the control bytes, which never start JSON text:
//! - `0x02`, the payload's length (u32, little endian), one LZ4 block;
//! - `0x01`, then the payload as is (compression would not have helped);
//! - any other control byte but JSON's whitespace: not a frame this version
//!   knows (`0x00` was a development build's zstd frame), so `Corrupt`;
//! - anything else: a row sealed before framing existed, which is the JSON
//!   payload itself.

use super::OpenError;

const RAW: u8 = 0x01;
const LZ4: u8 = 0x02;

/// Tag and length prefix of an LZ4 frame.
const LZ4_HEADER: usize = 1 + 4;

/// Largest payload a frame may claim to expand to. Frames are authenticated
/// (only this service writes them), so this only bounds a bug's damage.
const MAX_PLAINTEXT: usize = 256 << 20;

/// LZ4 cannot expand a block by more than this (one token byte plus a run
/// of 255-length bytes encodes at most 255 bytes per input byte, roughly).
const MAX_RATIO: usize = 255;

/// Frames `payload`, leaving `spare` bytes of capacity after it (the AEAD
/// tag is appended in place).
pub fn pack(payload: &[u8], spare: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(len) = u32::try_from(payload.len()) {
        let bound = lz4_flex::block::get_maximum_output_size(payload.len());
        out.resize(LZ4_HEADER + bound, 0);
        out[0] = LZ4;
        out[1..LZ4_HEADER].copy_from_slice(&len.to_le_bytes());
        if let Ok(n) = lz4_flex::block::compress_into(payload, &mut out[LZ4_HEADER..]) {
            if LZ4_HEADER + n < 1 + payload.len() {
                out.truncate(LZ4_HEADER + n);
                out.reserve_exact(spare);
                return out;
            }
        }
    }
    // Incompressible: store as is.
    out.clear();
    out.reserve_exact(1 + payload.len() + spare);
    out.push(RAW);
    out.extend_from_slice(payload);
    out
}

/// The payload a frame holds.
pub fn unpack(framed: Vec<u8>) -> Result<Vec<u8>, OpenError> {
    match framed.first() {
        Some(&LZ4) => {
            let len = framed
                .get(1..LZ4_HEADER)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_le_bytes(b) as usize)
                .filter(|n| *n <= MAX_PLAINTEXT)
                .filter(|n| *n <= (framed.len() - LZ4_HEADER).saturating_mul(MAX_RATIO))
                .ok_or(OpenError::Corrupt)?;
            let mut payload = vec![0u8; len];
            match lz4_flex::block::decompress_into(&framed[LZ4_HEADER..], &mut payload) {
                Ok(n) if n == len => Ok(payload),
                _ => Err(OpenError::Corrupt),
            }
        }
        Some(&RAW) => {
            let mut payload = framed;
            payload.remove(0);
            Ok(payload)
        }
        Some(&tag) if tag < 0x20 && !matches!(tag, b' ' | b'\t' | b'\n' | b'\r') => {
            Err(OpenError::Corrupt)
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
        assert_eq!(framed[0], LZ4);
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
        for legacy in [&br#"{"event":"job.succeeded"}"#[..], b" \n{}"] {
            assert_eq!(unpack(legacy.to_vec()).unwrap(), legacy);
        }
    }

    #[test]
    fn unknown_tags_and_impossible_lengths_are_corrupt() {
        for tag in [0x00u8, 0x03, 0x1f] {
            assert_eq!(
                unpack(vec![tag, b'{', b'}']),
                Err(OpenError::Corrupt),
                "{tag:#x}"
            );
        }
        // A block of 10 bytes cannot hold 1 MiB, whatever the prefix says.
        let mut framed = vec![LZ4];
        framed.extend_from_slice(&(1u32 << 20).to_le_bytes());
        framed.extend_from_slice(&[0u8; 10]);
        assert_eq!(unpack(framed), Err(OpenError::Corrupt));
    }

    #[test]
    fn a_damaged_frame_is_corrupt_not_a_panic() {
        let json = br#"{"a":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
        let framed = pack(json, 0);
        assert_eq!(framed[0], LZ4);
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
