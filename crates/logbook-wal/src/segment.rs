//! Segment files: their names, their header, and the in-memory handle readers share.
//!
//! Owns: the 32-byte segment header (see `docs/format.md`), the file-name scheme
//! (`<first position, 20 digits>.seg`), and `Segment`, the shared handle with a sparse
//! position index and the durable length readers may read up to. Must never: write frames
//! (that is `wal.rs`) or decide what a bad frame means (that is `recovery.rs`).
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::storage::{Storage, StorageFile};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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
    /// Records in the readable part.
    records: AtomicU64,
    /// True once a sidecar matching this (sealed) segment is on disk.
    has_sidecar: std::sync::atomic::AtomicBool,
    /// Where the sparse index comes from when it is not loaded yet (sealed segments opened
    /// from a sidecar: loaded at the first seek).
    lazy: Mutex<Option<LazyIndex>>,
}

/// How to load a sealed segment's sparse index on first use.
#[derive(Debug)]
pub(crate) struct LazyIndex {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) sidecar: PathBuf,
    pub(crate) record_bytes_max: u32,
    pub(crate) index_interval_bytes: u64,
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
            records: AtomicU64::new(0),
            has_sidecar: std::sync::atomic::AtomicBool::new(false),
            lazy: Mutex::new(None),
        }
    }

    /// A sealed segment whose sparse index is loaded at the first seek.
    pub(crate) fn with_lazy_index(self, lazy: LazyIndex) -> Self {
        *self
            .lazy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(lazy);
        self.set_has_sidecar();
        self
    }

    pub(crate) fn has_sidecar(&self) -> bool {
        self.has_sidecar.load(Ordering::Acquire)
    }

    pub(crate) fn set_has_sidecar(&self) {
        self.has_sidecar.store(true, Ordering::Release);
    }

    pub(crate) fn records(&self) -> u64 {
        self.records.load(Ordering::Acquire)
    }

    pub(crate) fn add_records(&self, count: u64) {
        self.records.fetch_add(count, Ordering::AcqRel);
    }

    /// The sparse index entries (loading them if needed).
    pub(crate) fn index_entries(&self) -> Vec<IndexEntry> {
        self.ensure_index();
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Loads the sparse index of a lazily opened segment: from its sidecar when that matches,
    /// else by scanning the segment.
    fn ensure_index(&self) {
        let mut lazy = self
            .lazy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(source) = lazy.take() else { return };
        let len = self.durable_len();
        let from_sidecar = read_all(source.storage.as_ref(), &source.sidecar)
            .ok()
            .and_then(|bytes| crate::sidecar::decode(&bytes).ok())
            .filter(|sidecar| sidecar.base == self.base && sidecar.segment_len == len);
        let entries = match from_sidecar {
            Some(sidecar) => sidecar.entries,
            None => {
                tracing::debug!(segment = %self.path.display(), "sidecar unusable; scanning");
                let start = crate::recovery::ScanStart::fresh(self.base);
                match crate::recovery::scan_segment(
                    self.file.as_ref(),
                    len,
                    start,
                    source.record_bytes_max,
                    source.index_interval_bytes,
                ) {
                    Ok(scan) => scan.index,
                    // Without an index a reader scans from the segment's start: slower, correct.
                    Err(_) => Vec::new(),
                }
            }
        };
        self.replace_index(entries);
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
        self.ensure_index();
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

/// Reads a whole (small) file.
pub(crate) fn read_all(storage: &dyn Storage, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    /// A sidecar of a 64 MiB segment indexed every 4 KiB is 256 KiB; refuse absurd sizes.
    const SMALL_FILE_BYTES_MAX: u64 = 64 << 20;
    let file = storage.open_file(path, crate::storage::OpenMode::Read)?;
    let len = file.len()?;
    if len > SMALL_FILE_BYTES_MAX {
        return Err(std::io::Error::other("file too large for a sidecar"));
    }
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(0, &mut bytes)?;
    Ok(bytes)
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
