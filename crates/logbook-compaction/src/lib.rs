//! Snapshots of logbook's state, and the policies for snapshots and compaction.
//!
//! Opening a log costs the newest snapshot plus the tail of the WAL after it, not the whole
//! history. This crate owns the snapshot files; the engine (`logbook`) decides what goes in them
//! and when, and replays the tail.
//!
//! - [`Snapshot`]: the state at one WAL position, as opaque sections ([`SnapshotSection`]: an
//!   id, the version of the section's encoding, the bytes). Each projection, and the engine
//!   itself, owns one section; this crate never looks inside.
//! - [`SnapshotStore`]: `<log dir>/snapshots/<20-digit position>.snap`. [`SnapshotStore::write`]
//!   is crash-safe (temp file, fsync, rename, directory fsync); [`SnapshotStore::load_newest`]
//!   skips a damaged, truncated or unknown-version file, reports it, and falls back to an older
//!   one or to none (a full replay); it never fails because of a bad file.
//! - [`encode_snapshot`] / [`decode_snapshot`]: the file format (checksummed header, section
//!   table with one CRC-32 per section, trailer CRC-32), in `FORMAT-SNAPSHOT.md`.
//! - [`SnapshotPolicy`]: when a snapshot is due and how many to keep; [`CompactionPolicy`]: the
//!   event types declared "latest only".
//!
//! All I/O goes through `logbook_wal`'s [`Storage`](logbook_wal::Storage) seam, so tests run on
//! [`MemoryStorage`](logbook_wal::MemoryStorage) and crash it at will.
//!
//! **Invariant:** a snapshot is derived data. The WAL stays the only source of truth: losing or
//! rejecting every snapshot costs time at open, never an event.
//!
//! ```
//! use logbook_compaction::{Snapshot, SnapshotSection, SnapshotStore};
//! use logbook_wal::MemoryStorage;
//! use std::{path::Path, sync::Arc};
//!
//! let storage = Arc::new(MemoryStorage::new());
//! let store = SnapshotStore::new(storage, Path::new("/log"));
//! let snapshot = Snapshot {
//!     position: 42,
//!     sections: vec![SnapshotSection { id: "rooms".into(), version: 1, bytes: b"state".to_vec() }],
//! };
//! let info = store.write(&snapshot)?;
//! assert_eq!(info.path, Path::new("/log/snapshots/00000000000000000042.snap"));
//!
//! let outcome = store.load_newest()?;
//! assert!(outcome.rejected.is_empty());
//! let (loaded_info, loaded) = outcome.snapshot.expect("a valid snapshot");
//! assert_eq!(loaded_info, info);
//! assert_eq!(loaded, snapshot);
//! assert_eq!(loaded.section("rooms").map(|section| section.version), Some(1));
//! # Ok::<(), logbook_compaction::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod policy;
pub mod snapshot;

pub use error::{Corruption, Error, Result};
pub use policy::{CompactionPolicy, SnapshotPolicy};
pub use snapshot::{
    CHECKSUM_CRC32, LoadOutcome, SECTION_ID_BYTES_MAX, SECTIONS_MAX, SNAPSHOT_BYTES_MAX,
    SNAPSHOT_DIR_NAME, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC, Snapshot, SnapshotInfo,
    SnapshotSection, SnapshotStore, decode_snapshot, encode_snapshot, snapshot_file_name,
};
