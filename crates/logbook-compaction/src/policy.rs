//! When to take a snapshot, how many to keep, and which event types compaction may thin out.
//!
//! Owns: the declared thresholds and lists, and the one decision that needs nothing but numbers
//! ([`SnapshotPolicy::due`]). Must never: read a clock, do I/O, or decide on its own which
//! records to drop (the engine does that, knowing streams, deletes and truncations).

use std::time::Duration;

/// When the engine takes a snapshot on its own, and how many it keeps.
///
/// A snapshot is due when at least one event was appended since the last one and any trigger is
/// reached. A threshold of zero turns its trigger off. Snapshots on demand ignore the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Events appended since the last snapshot (default 100,000).
    pub every_events: u64,
    /// Bytes appended to the WAL since the last snapshot (default 64 MiB).
    pub every_bytes: u64,
    /// Time since the last snapshot, or since open when there is none (default 5 minutes).
    pub every: Duration,
    /// Snapshots kept after a new one is written (default 2); older ones are removed.
    pub keep: usize,
    /// A clean close (`Logbook::close`) of an embedded log writes a snapshot when at least
    /// this many positions were appended since the newest one (default 10,000; 0: never), so
    /// the next open replays nothing instead of up to `every_events` events. Appends
    /// acknowledged before they were durable (`SyncPolicy::Never`, `Interval`) count: the close
    /// makes them durable first, and its snapshot covers them. Not applied on PostgreSQL, whose
    /// replicas keep their snapshots on their own schedule.
    pub on_close_events: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every_events: 100_000,
            every_bytes: 64 << 20,
            every: Duration::from_secs(5 * 60),
            keep: 2,
            on_close_events: 10_000,
        }
    }
}

impl SnapshotPolicy {
    /// True when a snapshot should be taken, given what happened since the last one.
    pub fn due(&self, events_since: u64, bytes_since: u64, elapsed: Duration) -> bool {
        if events_since == 0 {
            // Nothing changed: a new snapshot would repeat the last one.
            return false;
        }
        let reached = |threshold: u64, value: u64| threshold != 0 && value >= threshold;
        reached(self.every_events, events_since)
            || reached(self.every_bytes, bytes_since)
            || (!self.every.is_zero() && elapsed >= self.every)
    }
}

/// Which records compaction may thin out beyond those of deleted and truncated streams.
///
/// `latest_only_types` lists event types whose older records are superseded by the newest of
/// the same type in the same stream (progress reports, heartbeats), once the entity has
/// finished: a record of one of `finished_types` follows them in their stream. This crate only
/// carries the declared lists: the engine decides what to drop, and nothing else is ever
/// dropped because of them.
///
/// Why "finished": a heartbeat is not latest-wins while its claim lives (the lease is the
/// maximum of the heartbeats), so dropping an older one with a later lease changed the lease a
/// full replay rebuilds. A finishing record ends the claim, so what came before it no longer
/// counts. (Found by tests/snapshot_replay_property.rs.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Event types declared "latest only" (default `job.progress` and `job.heartbeat`).
    pub latest_only_types: Vec<String>,
    /// Event types that finish an entity (default `job.succeeded`, `job.failed` and
    /// `job.cancelled`): latest-only records before one of them may be dropped.
    pub finished_types: Vec<String>,
    /// How often the engine compacts in the background (default 10 minutes; zero: only on
    /// demand). A compaction with nothing new to drop reads and writes nothing.
    pub every: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        let names = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
        CompactionPolicy {
            latest_only_types: names(&["job.progress", "job.heartbeat"]),
            finished_types: names(&["job.succeeded", "job.failed", "job.cancelled"]),
            every: Duration::from_secs(10 * 60),
        }
    }
}

impl CompactionPolicy {
    /// True when `event_type` is declared "latest only".
    pub fn is_latest_only(&self, event_type: &str) -> bool {
        self.latest_only_types
            .iter()
            .any(|declared| declared == event_type)
    }

    /// True when `event_type` finishes an entity.
    pub fn is_finished(&self, event_type: &str) -> bool {
        self.finished_types
            .iter()
            .any(|declared| declared == event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let policy = SnapshotPolicy::default();
        assert_eq!(policy.every_events, 100_000);
        assert_eq!(policy.every_bytes, 64 * 1024 * 1024);
        assert_eq!(policy.every, Duration::from_secs(300));
        assert_eq!(policy.keep, 2);
        let compaction = CompactionPolicy::default();
        assert_eq!(
            compaction.latest_only_types,
            ["job.progress", "job.heartbeat"]
        );
        assert!(compaction.is_latest_only("job.heartbeat"));
        assert!(compaction.is_finished("job.cancelled"));
        assert!(!compaction.is_finished("job.lease_expired"));
        assert!(!compaction.is_latest_only("room.message_posted"));
    }

    #[test]
    fn any_trigger_makes_a_snapshot_due() {
        let policy = SnapshotPolicy::default();
        let minute = Duration::from_secs(60);
        assert!(!policy.due(99_999, 0, minute));
        assert!(policy.due(100_000, 0, minute));
        assert!(policy.due(1, 64 << 20, minute));
        assert!(policy.due(1, 0, Duration::from_secs(300)));
        assert!(!policy.due(1, (64 << 20) - 1, Duration::from_secs(299)));
    }

    #[test]
    fn nothing_new_is_never_due() {
        let policy = SnapshotPolicy::default();
        assert!(!policy.due(0, u64::MAX, Duration::MAX));
    }

    #[test]
    fn zero_turns_a_trigger_off() {
        let policy = SnapshotPolicy {
            every_events: 0,
            every_bytes: 0,
            every: Duration::ZERO,
            keep: 1,
            on_close_events: 0,
        };
        assert!(!policy.due(u64::MAX, u64::MAX, Duration::MAX));
        let only_events = SnapshotPolicy {
            every_events: 10,
            ..policy
        };
        assert!(only_events.due(10, 0, Duration::ZERO));
    }
}
