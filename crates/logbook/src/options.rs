//! Options of the engine and of one append.
//!
//! Owns: the engine's limits and tunables with their defaults. Must never: hold state.

use crate::clock::{Clock, SystemClock};
use logbook_compaction::{CompactionPolicy, SnapshotPolicy};
use logbook_wal::WalOptions;
use std::sync::Arc;
use std::time::Duration;

/// [`LogbookOptions::lone_appends_on_caller`]'s default: syncs of a local SSD or of this
/// repository's VM disk (80 to 150 µs) qualify; a network volume's (0.5 ms and more) do not.
pub const LONE_SYNC_MAX_DEFAULT: Duration = Duration::from_micros(500);

/// Options of [`Logbook::open`](crate::Logbook::open).
#[derive(Debug, Clone)]
pub struct LogbookOptions {
    /// The WAL's options; its `sync_policy` is the default durability of appends.
    pub wal: WalOptions,
    /// The most events in one append call. Default 10,000.
    pub append_events_max: usize,
    /// The most append requests queued for the writer; callers wait beyond. Default 1,024.
    pub queue_depth: usize,
    /// Batches of newly durable events kept for live subscribers; a subscriber further behind
    /// falls back to reading the log (it is never dropped). Default 1,024.
    pub subscription_buffer: usize,
    /// Relaxed appends are made durable (and visible to subscribers) at the latest this long
    /// after they were written, when no other append syncs them first. Default 10 ms.
    pub relaxed_sync_delay: Duration,
    /// Where timestamps come from.
    pub clock: Arc<dyn Clock>,
    /// When snapshots are taken (every N events, M bytes or T seconds) and how many are kept.
    pub snapshots: SnapshotPolicy,
    /// Event types whose older records compaction drops once a newer one of the same stream
    /// exists (default: `job.progress`, `job.heartbeat`).
    pub compaction: CompactionPolicy,
    /// A lone durable append (appends come one at a time: nothing queued for the writer, the
    /// syncer idle) is checked, written and synced on the caller's thread rather than handed to
    /// the writer thread and back: two thread hand-offs fewer, which with one appender is most
    /// of what logbook adds to the `fdatasync` itself. The caller's thread then blocks for that
    /// one sync, as a SQLite commit would. `Some(max)`: only while the recent syncs' smoothed
    /// duration is at most `max` (a slower disk goes through the writer thread, so a runtime
    /// worker is not held for long), and never on a current-thread tokio runtime (its other
    /// tasks would wait). `None`: every request goes through the writer thread, so a runtime
    /// worker never waits for the disk. Default `Some(500 µs)`.
    pub lone_appends_on_caller: Option<Duration>,
}

impl Default for LogbookOptions {
    fn default() -> Self {
        LogbookOptions {
            // Open cost independent of history: sealed segments are trusted through their
            // sidecars; frames are still checked whenever read, and by `logbook verify`.
            wal: WalOptions {
                verify_sealed_segments_on_open: false,
                ..WalOptions::default()
            },
            append_events_max: 10_000,
            queue_depth: 1024,
            subscription_buffer: 1024,
            relaxed_sync_delay: Duration::from_millis(10),
            clock: Arc::new(SystemClock),
            snapshots: SnapshotPolicy::default(),
            compaction: CompactionPolicy::default(),
            lone_appends_on_caller: Some(LONE_SYNC_MAX_DEFAULT),
        }
    }
}

/// How durable an append must be before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendDurability {
    /// As the log's sync policy says.
    #[default]
    Policy,
    /// Acknowledged once written; made durable by the next sync (high-frequency progress).
    Relaxed,
}
