//! Segment files: their names, their header, and the in-memory handle readers share.
//!
//! Owns: the 32-byte segment header (see `docs/format.md`), the file-name scheme
//! (`<first position, 20 digits>.seg`), and [`Segment`], the shared handle with a sparse
//! position index and the durable length readers may read up to. Must never: write frames
//! (that is `wal.rs`) or decide what a bad frame means (that is `recovery.rs`).
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::storage::StorageFile;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// The magic bytes at offset 0 of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LOGBKWAL";
/// The segment format version this code writes and reads.
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Checksum algorithm id 1: CRC-32 (ISO-HDLC polynomial, as computed by crc32fast).
pub const CHECKSUM_CRC32: u8 = 1;
/// The file-name extension of segments.
pub const SEGMENT_EXTENSION: &str = "seg";

/// Encodes the header of a segment whose first position is `base`.
pub fn encode_header(base: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    assert!(base >= 1, "positions start at 1");
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(slot) = header.get_mut(at..at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
    };
    put(0, &SEGMENT_MAGIC);
    put(8, &SEGMENT_FORMAT_VERSION.to_le_bytes());
    put(10, &[CHECKSUM_CRC32]);
    put(16, &base.to_le_bytes());
    let crc = crc32fast::hash(header.get(..28).unwrap_or(&[]));
    if let Some(slot) = header.get_mut(28..32) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    header
}

/// Decodes a segment header and returns its base position, or why it is invalid.
pub fn decode_header(bytes: &[u8]) -> Result<u64, &'static str> {
    let header = bytes
        .get(..SEGMENT_HEADER_BYTES)
        .ok_or("segment header truncated")?;
    let field = |range: std::ops::Range<usize>| header.get(range).unwrap_or(&[]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(field(28..32));
    if crc32fast::hash(field(0..28)) != u32::from_le_bytes(crc) {
        return Err("segment header checksum mismatch");
    }
    if field(0..8) != SEGMENT_MAGIC {
        return Err("not a logbook segment (bad magic)");
    }
    let mut version = [0u8; 2];
    version.copy_from_slice(field(8..10));
    if u16::from_le_bytes(version) != SEGMENT_FORMAT_VERSION {
        return Err("unsupported segment format version");
    }
    if field(10..11) != [CHECKSUM_CRC32] {
        return Err("unsupported checksum algorithm");
    }
    if field(11..16)
        .iter()
        .chain(field(24..28))
        .any(|&byte| byte != 0)
    {
        return Err("segment header reserved bytes are not zero");
    }
    let mut base = [0u8; 8];
    base.copy_from_slice(field(16..24));
    let base = u64::from_le_bytes(base);
    if base == 0 {
        return Err("segment base position is zero");
    }
    Ok(base)
}

/// The file name of the segment whose first position is `base`.
pub fn file_name(base: u64) -> String {
    format!("{base:020}.{SEGMENT_EXTENSION}")
}

/// The base position encoded in a segment file name, if the name is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&base| base >= 1)
}

/// One entry of the sparse index: a frame boundary and the position of the frame there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Position of the frame.
    pub position: u64,
    /// Byte offset of the frame in its segment.
    pub offset: u64,
}

/// A segment as the WAL and its readers share it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn StorageFile>,
    /// Every `index_interval_bytes`, one frame boundary; sorted by position and offset.
    index: RwLock<Vec<IndexEntry>>,
    /// Bytes readers may read: everything below is durable (or, read-only, verified).
    durable_len: AtomicU64,
    /// The last position stored in the readable part (0 when there is none).
    last_position: AtomicU64,
}

impl Segment {
    pub(crate) fn new(base: u64, path: PathBuf, file: Arc<dyn StorageFile>) -> Self {
        Segment {
            base,
            path,
            file,
            index: RwLock::new(Vec::new()),
            durable_len: AtomicU64::new(SEGMENT_HEADER_BYTES as u64),
            last_position: AtomicU64::new(0),
        }
    }

    pub(crate) fn durable_len(&self) -> u64 {
        self.durable_len.load(Ordering::Acquire)
    }

    pub(crate) fn last_position(&self) -> u64 {
        self.last_position.load(Ordering::Acquire)
    }

    /// Publishes a new readable end. Both only ever grow.
    pub(crate) fn set_durable(&self, len: u64, last_position: u64) {
        debug_assert!(len >= self.durable_len());
        self.durable_len.store(len, Ordering::Release);
        if last_position > 0 {
            self.last_position.store(last_position, Ordering::Release);
        }
    }

    pub(crate) fn push_index(&self, entry: IndexEntry) {
        let mut index = self
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(last) = index.last() {
            assert!(entry.position > last.position && entry.offset > last.offset);
        }
        index.push(entry);
    }

    pub(crate) fn replace_index(&self, entries: Vec<IndexEntry>) {
        *self
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = entries;
    }

    /// The offset to start scanning from for `position`: the last indexed frame at or before it.
    pub(crate) fn seek_offset(&self, position: u64) -> u64 {
        let index = self
            .index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let after = index.partition_point(|entry| entry.position <= position);
        match after.checked_sub(1).and_then(|at| index.get(at)) {
            Some(entry) => entry.offset,
            None => SEGMENT_HEADER_BYTES as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_every_bit_flip_detected() {
        let header = encode_header(42);
        assert_eq!(decode_header(&header), Ok(42));
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut bad = header;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&bad).is_err(), "bit {bit}");
        }
        assert!(decode_header(&header[..31]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_file_name("00000000000000000001.seg"), Some(1));
        assert_eq!(parse_file_name("00000000000000000000.seg"), None);
        assert_eq!(parse_file_name("0000000000000000001.seg"), None);
        assert_eq!(parse_file_name("00000000000000000001.tmp"), None);
        assert_eq!(parse_file_name("+0000000000000000001.seg"), None);
    }
}
