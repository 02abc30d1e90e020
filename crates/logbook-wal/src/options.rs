//! Options of a WAL: the sync policy, the limits, and the recovery mode.
//!
//! Owns: every tunable number of the WAL, its default and its documented meaning. Must never:
//! hold state; the WAL reads options once at open.

use crate::error::{Error, Result};
use crate::frame::FRAME_HEADER_BYTES;
use crate::segment::SEGMENT_HEADER_BYTES;
use std::time::Duration;

/// When an append is acknowledged, relative to `fdatasync`.
///
/// Whatever the policy, a sync covers every record written before it, so concurrent appenders
/// always share syncs; the policies differ in when a sync is started and whether `append`
/// waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `append` returns only after its records are durable. A sync starts as soon as one is
    /// needed; appends that arrive during a sync share the next one.
    Always,
    /// Like `Always`, but the appender that leads a sync first waits up to `delay` for
    /// `records_max` records to gather, so one `fdatasync` covers many appenders.
    GroupCommit {
        /// The longest a record waits for companions before its sync starts.
        delay: Duration,
        /// A sync starts at once when this many records are waiting.
        records_max: usize,
    },
    /// `append` returns once the records are buffered; a background thread makes them durable
    /// every interval. A power loss can lose up to one interval of acknowledged appends.
    Interval(Duration),
    /// `append` returns once the records are buffered; they become durable only on
    /// [`Wal::sync`](crate::Wal::sync), a segment roll, or close. For bulk loads and tests.
    Never,
}

/// What open does when it finds a bad frame that was provably durable (corruption).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Fail open with [`Error::Corrupted`] naming the segment, offset and reason.
    #[default]
    Strict,
    /// Cut the log at the first corruption (truncating that segment and removing every later
    /// one) and report exactly what was dropped. An explicit operator decision, never a default.
    Salvage,
}

/// Options of [`Wal::open`](crate::Wal::open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// When appends are acknowledged. Default: group commit, 1 ms delay, 256 records.
    pub sync_policy: SyncPolicy,
    /// A new segment starts when the active one would pass this size. Default 64 MiB.
    pub segment_bytes_max: u64,
    /// The largest record payload. Default 16 MiB.
    pub record_bytes_max: u32,
    /// The most records in one batch. Default 65,536.
    pub batch_records_max: usize,
    /// The most bytes (frames included) in one batch. Default 32 MiB.
    pub batch_bytes_max: u64,
    /// Unsynced bytes buffered in memory before they are written to the OS. Default 1 MiB.
    pub buffer_bytes_max: usize,
    /// One sparse-index entry per this many segment bytes. Default 4 KiB.
    pub index_interval_bytes: u64,
    /// What to do about corruption at open.
    pub recovery_mode: RecoveryMode,
    /// Scan every frame of every sealed segment at open (true, the default), or trust a sealed
    /// segment's sidecar when it matches the file (false): open then costs the same however
    /// long the history, and a damaged sealed frame is reported when it is read (readers check
    /// every frame) or by `logbook verify`, not at open. With false, the last segment's
    /// checkpoint (written at a clean close) is trusted too: only what follows it is scanned.
    /// `RecoveryMode::Salvage` always scans everything.
    pub verify_sealed_segments_on_open: bool,
    /// The pace of segment rewrites (compaction), in bytes per second; 0: as fast as the disk
    /// goes. Default 64 MiB/s: a rewrite then never holds the disk long enough for appenders'
    /// fsyncs to queue behind it.
    pub rewrite_bytes_per_second: u64,
    /// Zero bytes written ahead of the active segment's data, at most this many at a time
    /// (never past `segment_bytes_max`); 0 turns it off. Default 1 MiB. A write of at least
    /// half this many bytes (a bulk load's buffer) is not followed by zeros: it grows the file
    /// by itself. An append into space
    /// already written (with zeros) does not change the file's size, so its `fdatasync` need
    /// not commit a size change to the file system's journal: on ext4 that made a lone durable
    /// append about 1.5x faster (`docs/benchmarks.md`). The zeros are trimmed when the segment
    /// is sealed and at a clean close; after a crash, open reads the zero tail of the last
    /// segment as the end of its data (`docs/format.md`).
    pub preallocate_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            sync_policy: SyncPolicy::GroupCommit {
                delay: Duration::from_millis(1),
                records_max: 256,
            },
            segment_bytes_max: 64 << 20,
            record_bytes_max: 16 << 20,
            batch_records_max: 65_536,
            batch_bytes_max: 32 << 20,
            buffer_bytes_max: 1 << 20,
            index_interval_bytes: 4096,
            recovery_mode: RecoveryMode::Strict,
            verify_sealed_segments_on_open: true,
            rewrite_bytes_per_second: 64 << 20,
            preallocate_bytes: 1 << 20,
        }
    }
}

/// The largest `record_bytes_max` accepted: frames store lengths as `u32`.
pub const RECORD_BYTES_LIMIT: u32 = u32::MAX - FRAME_HEADER_BYTES as u32;

impl WalOptions {
    /// Checks that the options make sense together.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidArgument(message));
        let smallest_segment = (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) as u64 + 1;
        if self.segment_bytes_max < smallest_segment {
            return invalid(format!(
                "segment_bytes_max must be at least {smallest_segment}"
            ));
        }
        if self.record_bytes_max > RECORD_BYTES_LIMIT {
            return invalid(format!(
                "record_bytes_max must be at most {RECORD_BYTES_LIMIT}"
            ));
        }
        if self.batch_records_max == 0 {
            return invalid("batch_records_max must be at least 1".into());
        }
        if self.batch_bytes_max < FRAME_HEADER_BYTES as u64 {
            return invalid("batch_bytes_max is smaller than one frame header".into());
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes must be at least 1".into());
        }
        match self.sync_policy {
            SyncPolicy::GroupCommit { records_max: 0, .. } => {
                invalid("group commit records_max must be at least 1".into())
            }
            SyncPolicy::Interval(interval) if interval.is_zero() => {
                invalid("sync interval must be above zero".into())
            }
            _ => Ok(()),
        }
    }
}
