//! # logbook-wal
//!
//! The segmented, checksummed write-ahead log under logbook. It knows bytes and files only:
//! records are opaque payloads with a global, gapless-at-append `u64` position starting at 1.
//!
//! - **Segments** live in `<dir>/wal/`, named by their first position (`00000000000000000001.seg`),
//!   each with a checksummed header. Sealed segments are never modified by the writer.
//! - **Frames** carry length, CRC-32, position, the durable position known when written, batch
//!   flags and the payload (see `docs/format.md`).
//! - **Appends** are single records or batches that are atomic across crashes, acknowledged
//!   as the [`SyncPolicy`] says; concurrent appenders share one `fdatasync`, and the writer lock
//!   is never held while syncing.
//! - **Recovery** cuts an unsynced tail and refuses (or, with [`RecoveryMode::Salvage`], cuts at)
//!   corruption, naming the segment and offset. See [`RecoveryReport`]. A read-only open stops
//!   at corruption instead ([`Wal::damage`]): readers get every record before it, then the error.
//!   [`Wal::repair_keep_intact`] drops only damaged frames and keeps every intact one.
//! - **All I/O** goes through [`Storage`]: [`FileStorage`] for real, [`MemoryStorage`] for tests
//!   that crash, tear and fail writes on demand.
//!
//! ```
//! use logbook_wal::{MemoryStorage, SyncPolicy, Wal, WalOptions};
//! use std::{path::Path, sync::Arc};
//!
//! let storage = Arc::new(MemoryStorage::new());
//! let options = WalOptions { sync_policy: SyncPolicy::Always, ..WalOptions::default() };
//! let (wal, report) = Wal::open_with_storage(storage.clone(), Path::new("/log"), options.clone())?;
//! assert_eq!(report.last_position, 0);
//! assert_eq!(wal.append(b"hello")?, 1);
//! let batch = wal.append_batch(&[b"a".as_slice(), b"b"])?;
//! assert_eq!((batch.first, batch.last), (2, 3));
//! let records: Vec<_> = wal.read_from(2).collect::<Result<_, _>>()?;
//! assert_eq!(records[1].payload, b"b");
//! wal.close()?;
//!
//! let (wal, report) = Wal::open_with_storage(storage, Path::new("/log"), options)?;
//! assert_eq!((report.last_position, wal.durable_position()), (3, 3));
//! # Ok::<(), logbook_wal::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod creation;
mod cursor;
mod error;
pub mod frame;
pub mod manifest;
mod open;
mod options;
mod reader;
mod recovery;
mod rewrite;
mod salvage;
pub mod segment;
pub mod sidecar;
pub mod storage;
mod wal;

pub use creation::{create_dir_all_durable, creation_unfinished};
pub use error::{Error, Result};
pub use options::{RECORD_BYTES_LIMIT, RecoveryMode, SyncPolicy, WalOptions};
pub use reader::{Located, WalReader};
pub use recovery::{Damage, RecoveryReport, Salvage, TailCut};
pub use rewrite::RewriteReport;
pub use salvage::{DamagedRegion, KeepIntactReport};
pub use storage::{
    CrashMode, FaultKind, FaultOp, FileStorage, LOCK_HOLDER_BYTES_MAX, MemoryStorage, OpenMode,
    Storage, StorageFile, lock_holder,
};
pub use wal::{AppendReceipt, Durability, LOCK_FILE_NAME, Record, SegmentInfo, WAL_DIR_NAME, Wal};
