//! Helpers shared by the workspace-level tests in `tests/tests/`.
//!
//! Owns: deterministic payloads (so a test can tell any two records apart, and a crashed child
//! process and its parent agree on what position `p` holds), a tiny seeded random generator,
//! building a [`MemoryStorage`] with chosen file contents, parsing the frames of a segment, and
//! snapshots of a directory. The WAL helpers here use only `logbook-wal` and `std`, so the WAL
//! tests (and the `wal_crash_child` binary) never depend on the layers above it.

/// Throwaway PostgreSQL clusters: one per test binary, one fresh database per test.
pub use logbook_pgtest as pg;

pub mod backends;
pub mod child;
pub mod sync_hook;

use logbook_wal::frame::{self, FRAME_HEADER_BYTES, FrameHeader};
use logbook_wal::segment::SEGMENT_HEADER_BYTES;
use logbook_wal::{MemoryStorage, OpenMode, Record, Storage, SyncPolicy, Wal, WalOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The log directory tests use on a [`MemoryStorage`].
pub const MEMORY_DIR: &str = "/log";

/// A small deterministic generator (SplitMix64), so tests need no `rand` dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            low
        } else {
            low + self.next_u64() % (high - low)
        }
    }
}

/// A seed from the environment variable `name` (decimal), else from the clock. Printed, so a
/// failing run can be repeated.
pub fn seed_from_env(name: &str) -> u64 {
    let seed = std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64
        });
    eprintln!("{name}={seed}");
    seed
}

/// A payload of `len` bytes unique to `serial`: tests give every append its own serial, so a
/// record found at the wrong position, or a stale one, never compares equal.
pub fn payload(serial: u64, len: usize) -> Vec<u8> {
    let mut random = SplitMix(serial.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ len as u64);
    let mut bytes = Vec::with_capacity(len);
    let prefix = serial.to_le_bytes();
    for index in 0..len {
        bytes.push(match prefix.get(index) {
            Some(&byte) => byte,
            None => random.next_u64() as u8,
        });
    }
    bytes
}

/// The payload the crash child writes at `position`: derivable from the position alone, with a
/// length that varies from one position to the next (so frames straddle sectors differently).
pub fn crash_payload(position: u64) -> Vec<u8> {
    let filler_len = (position.wrapping_mul(7919) % 300) as usize;
    let mut bytes = format!("record-{position}-").into_bytes();
    bytes.extend((0..filler_len).map(|index| b'a' + ((position as usize + index) % 26) as u8));
    bytes
}

/// FNV-1a of `bytes`: the digest the crash child prints beside each acknowledged position.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The options of the crash child: `Always`, and small segments so kills also land in rolls.
pub fn crash_child_options() -> WalOptions {
    options(SyncPolicy::Always, 16 << 10)
}

/// Options with a policy and a segment size, everything else default.
pub fn options(sync_policy: SyncPolicy, segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        sync_policy,
        segment_bytes_max,
        ..WalOptions::default()
    }
}

/// Every durable record from `from` on; panics on a read error.
pub fn read_all(wal: &Wal, from: u64) -> Vec<Record> {
    wal.read_from(from)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|error| panic!("reading from {from}: {error}"))
}

/// The positions of `records`.
pub fn positions(records: &[Record]) -> Vec<u64> {
    records.iter().map(|record| record.position).collect()
}

/// A fresh [`MemoryStorage`] holding exactly `files` (durable, directory entries synced).
pub fn memory_storage_with(files: &[(PathBuf, Vec<u8>)]) -> MemoryStorage {
    let storage = MemoryStorage::new();
    for (path, bytes) in files {
        let parent = path.parent().expect("file paths have a parent");
        storage.create_dir_all(parent).expect("memory mkdir");
        let file = storage
            .open_file(path, OpenMode::CreateNew)
            .expect("memory create");
        file.write_all_at(0, bytes).expect("memory write");
        file.sync_data().expect("memory sync");
        // Every entry up to the root: the file's, then each directory's in its parent.
        for dir in parent.ancestors() {
            storage.sync_dir(dir).expect("memory sync dir");
        }
    }
    storage
}

/// Every file of a [`MemoryStorage`] with its contents, sorted by path.
pub fn memory_files(storage: &MemoryStorage) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = storage
        .files()
        .into_iter()
        .map(|path| {
            let bytes = storage.file_contents(&path).expect("listed file exists");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// The segment files of a [`MemoryStorage`] log in [`MEMORY_DIR`], oldest first.
pub fn memory_segments(storage: &MemoryStorage) -> Vec<PathBuf> {
    let wal_dir = Path::new(MEMORY_DIR).join(logbook_wal::WAL_DIR_NAME);
    let mut segments: Vec<_> = storage
        .files()
        .into_iter()
        .filter(|path| {
            path.parent() == Some(wal_dir.as_path())
                && path.extension().is_some_and(|extension| extension == "seg")
        })
        .collect();
    segments.sort();
    segments
}

/// One frame found in a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundFrame {
    /// Byte offset of the frame in the file.
    pub offset: u64,
    /// Its header.
    pub header: FrameHeader,
}

impl FoundFrame {
    /// The offset just past the frame.
    pub fn end(&self) -> u64 {
        self.offset + self.header.frame_len()
    }
}

/// The valid frames of a segment file, walking from the header to the first invalid bytes.
pub fn segment_frames(bytes: &[u8]) -> Vec<FoundFrame> {
    let mut frames = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + FRAME_HEADER_BYTES <= bytes.len() {
        let Ok((header, _)) = frame::decode_frame(&bytes[offset..], u32::MAX) else {
            break;
        };
        frames.push(FoundFrame {
            offset: offset as u64,
            header,
        });
        offset += header.frame_len() as usize;
    }
    frames
}

/// One file of a directory snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSnapshot {
    /// Unix mode bits (permissions and type).
    pub mode: u32,
    /// Contents (empty for directories).
    pub bytes: Vec<u8>,
    /// Modification time, nanoseconds since the epoch.
    pub modified_nanos: u128,
}

/// Every file and directory under `root` with its mode, contents and modification time.
pub fn snapshot_dir(root: &Path) -> BTreeMap<PathBuf, FileSnapshot> {
    use std::os::unix::fs::MetadataExt;
    let mut snapshot = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let metadata = std::fs::symlink_metadata(&path).expect("metadata");
            let bytes = if metadata.is_dir() {
                pending.push(path.clone());
                Vec::new()
            } else {
                std::fs::read(&path).expect("read file")
            };
            let modified_nanos = metadata
                .modified()
                .expect("mtime")
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            snapshot.insert(
                path,
                FileSnapshot {
                    mode: metadata.mode(),
                    bytes,
                    modified_nanos,
                },
            );
        }
    }
    snapshot
}

mod engine_support;
pub use engine_support::{CounterEvent, added, newest_versions, test_options, versions_forward};
pub mod issue5_support;
pub mod projection_support;
