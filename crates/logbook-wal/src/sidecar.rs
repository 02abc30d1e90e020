//! Segment sidecars: `<base>.idx`, the sparse index and summary of a segment prefix.
//!
//! Owns: the sidecar format and its checked decoding, so open need not scan sealed segments
//! (open cost is independent of history: it reads only the 64-byte header, with its own
//! checksum) and their sparse index is loaded only when a reader first seeks into them. The
//! active segment gets one at a clean close (a *checkpoint*: open scans only what follows it).
//! Must never: be trusted when it disagrees with its segment (base or length differ, checksum
//! fails): then the segment is scanned and the sidecar rewritten. A sidecar is derived data:
//! losing one costs a scan, never a record.
//!
//! ```text
//! offset size field
//!      0    8 magic "LOGBKIDX"
//!      8    2 format version u16 LE (2)
//!     10    6 reserved, zero
//!     16    8 segment base position u64 LE
//!     24    8 segment length in bytes u64 LE (the length the sidecar describes)
//!     32    8 last position u64 LE (0: no record)
//!     40    8 records u64 LE
//!     48    8 index entries n u64 LE
//!     56    4 CRC-32 of bytes 0..56 (the header alone)
//!     60    4 reserved, zero
//!     64 16*n entries: position u64 LE, byte offset u64 LE
//!  64+16n   4 CRC-32 of every byte before it
//! ```
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::segment::IndexEntry;

/// The magic bytes of a sidecar.
pub const SIDECAR_MAGIC: [u8; 8] = *b"LOGBKIDX";
/// The sidecar format version.
pub const SIDECAR_FORMAT_VERSION: u16 = 2;
/// The file-name extension of sidecars.
pub const SIDECAR_EXTENSION: &str = "idx";
/// Bytes of the header (with its own checksum): all open reads of a sealed segment's sidecar.
pub const SIDECAR_HEADER_BYTES: usize = 64;
const HEADER_BYTES: usize = SIDECAR_HEADER_BYTES;
const HEADER_CRC_AT: usize = 56;

/// A decoded sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// The segment's base position.
    pub base: u64,
    /// The sealed segment's length.
    pub segment_len: u64,
    /// Its last position (0 when it has no record).
    pub last_position: u64,
    /// Records in it.
    pub records: u64,
    /// Its sparse index.
    pub entries: Vec<IndexEntry>,
}

/// The sidecar file name of the segment with `base`.
pub fn file_name(base: u64) -> String {
    format!("{base:020}.{SIDECAR_EXTENSION}")
}

/// Encodes a sidecar.
pub fn encode(sidecar: &Sidecar) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + 16 * sidecar.entries.len() + 4);
    out.extend_from_slice(&SIDECAR_MAGIC);
    out.extend_from_slice(&SIDECAR_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 6]);
    for value in [
        sidecar.base,
        sidecar.segment_len,
        sidecar.last_position,
        sidecar.records,
        sidecar.entries.len() as u64,
    ] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    let header_crc = crc32fast::hash(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    debug_assert_eq!(out.len(), HEADER_BYTES);
    for entry in &sidecar.entries {
        out.extend_from_slice(&entry.position.to_le_bytes());
        out.extend_from_slice(&entry.offset.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The summary in a sidecar's header (its `entries` empty), checking the header's checksum;
/// `entries` is the index entry count. Reads nothing past [`SIDECAR_HEADER_BYTES`].
pub fn decode_header(bytes: &[u8]) -> Result<(Sidecar, u64), &'static str> {
    let header = bytes.get(..HEADER_BYTES).ok_or("sidecar truncated")?;
    let (summed, rest) = header.split_at(HEADER_CRC_AT);
    let crc = u32::from_le_bytes(
        rest.get(..4)
            .ok_or("sidecar truncated")?
            .try_into()
            .map_err(|_| "sidecar truncated")?,
    );
    if crc32fast::hash(summed) != crc {
        return Err("sidecar header checksum mismatch");
    }
    if rest.get(4..) != Some([0u8; 4].as_slice()) {
        return Err("sidecar header reserved bytes are not zero");
    }
    if header.get(..8) != Some(SIDECAR_MAGIC.as_slice()) {
        return Err("not a sidecar (bad magic)");
    }
    if header.get(8..10) != Some(SIDECAR_FORMAT_VERSION.to_le_bytes().as_slice()) {
        return Err("unsupported sidecar version");
    }
    let field = |at| u64_at(header, at).ok_or("sidecar truncated");
    let summary = Sidecar {
        base: field(16)?,
        segment_len: field(24)?,
        last_position: field(32)?,
        records: field(40)?,
        entries: Vec::new(),
    };
    Ok((summary, field(48)?))
}

/// Decodes a sidecar, checking its checksums and structure.
pub fn decode(bytes: &[u8]) -> Result<Sidecar, &'static str> {
    let body_len = bytes.len().checked_sub(4).ok_or("sidecar truncated")?;
    let (body, crc) = bytes
        .split_at_checked(body_len)
        .ok_or("sidecar truncated")?;
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| "sidecar truncated")?);
    if crc32fast::hash(body) != crc {
        return Err("sidecar checksum mismatch");
    }
    let (summary, count) = decode_header(body)?;
    let field = |at| u64_at(body, at).ok_or("sidecar truncated");
    let expected = (HEADER_BYTES as u64).checked_add(count.checked_mul(16).ok_or("bad count")?);
    if expected != Some(body.len() as u64) {
        return Err("sidecar length does not match its entry count");
    }
    let mut entries = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let at = HEADER_BYTES + 16 * index;
        let entry = IndexEntry {
            position: field(at)?,
            offset: field(at + 8)?,
        };
        if entries.last().is_some_and(|last: &IndexEntry| {
            last.position >= entry.position || last.offset >= entry.offset
        }) {
            return Err("sidecar entries out of order");
        }
        entries.push(entry);
    }
    Ok(Sidecar { entries, ..summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let sidecar = Sidecar {
            base: 7,
            segment_len: 9000,
            last_position: 70,
            records: 64,
            entries: vec![
                IndexEntry {
                    position: 7,
                    offset: 32,
                },
                IndexEntry {
                    position: 40,
                    offset: 4200,
                },
            ],
        };
        let bytes = encode(&sidecar);
        assert_eq!(decode(&bytes), Ok(sidecar.clone()));
        let summary = Sidecar {
            entries: Vec::new(),
            ..sidecar
        };
        assert_eq!(
            decode_header(&bytes[..SIDECAR_HEADER_BYTES]),
            Ok((summary, 2))
        );
        for bit in 0..HEADER_BYTES * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&bad).is_err(), "header bit {bit}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "bit {bit}");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err());
        }
    }
}
