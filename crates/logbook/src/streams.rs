//! The stream table: per stream, its next version, tombstone, truncation point, and the
//! position of each version.
//!
//! Owns: optimistic-concurrency checks and the version -> position map. Must never: be updated
//! by anyone but the writer (in append order) or the replay at open.

use crate::error::{Error, Result};
use hashbrown::HashMap;
use logbook_compaction::CompactionPolicy;
use logbook_projection::StreamId;

/// A stream looked up by its name: hashes as the [`StreamId`] it finds, and compares with it in
/// line (`StreamId == str`, a word at a time) rather than through a `memcmp` call as `&str`
/// lookups do; a replay looks a stream up once per record.
struct Name<'a>(&'a str);

impl std::hash::Hash for Name<'_> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `StreamId` hashes (its name's hash alone).
        self.0.hash(state);
    }
}

impl hashbrown::Equivalent<StreamId> for Name<'_> {
    #[inline]
    fn equivalent(&self, key: &StreamId) -> bool {
        *key == *self.0
    }
}

/// What an append expects of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no visible events: it never had one, or every version it had is
    /// hidden (a soft delete, or a truncation past its last version). Its next event then
    /// continues its versions.
    NoStream,
    /// The stream has at least one visible event.
    StreamExists,
    /// The stream's last event has this version (0-based).
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => formatter.write_str("any"),
            ExpectedVersion::NoStream => formatter.write_str("no stream"),
            ExpectedVersion::StreamExists => formatter.write_str("stream exists"),
            ExpectedVersion::Exact(version) => write!(formatter, "{version}"),
        }
    }
}

/// Direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, from `from_version` up.
    Forward,
    /// Newest first, from `from_version` down.
    Backward,
}

/// What the engine keeps in memory per stream: a few numbers, never per-event data (the
/// version -> position map lives in the persistent stream index).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StreamState {
    /// The version the next event gets.
    next_version: u64,
    /// The position of the last event (0 when none).
    last_position: u64,
    pub(crate) deleted: bool,
    /// Versions below this are hidden (and purged by compaction).
    pub(crate) truncated_before: u64,
    /// The position of the stream's first event (0 when none): where its records start.
    first_position: u64,
    /// The position of the latest event that made records of this stream dead (its deletion,
    /// a truncation, a finishing event that supersedes latest-only records); 0 when none.
    /// Compaction compares it with each segment's mark to know which segments to read.
    dead_position: u64,
    /// The last position that event may have made dead: records of the stream that died lie
    /// in `first_position..=dead_through`.
    dead_through: u64,
}

impl StreamState {
    pub(crate) fn last_version(&self) -> Option<u64> {
        self.next_version.checked_sub(1)
    }

    /// True when the stream has an event no deletion or truncation hides.
    fn has_visible_events(&self) -> bool {
        !self.deleted && self.next_version > self.truncated_before
    }

    /// True when the stream ever had an event, or was deleted: what `delete_stream` and
    /// `soft_delete_stream` accept.
    pub(crate) fn existed(&self) -> bool {
        self.deleted || self.next_version > 0
    }

    pub(crate) fn last_position(&self) -> Option<u64> {
        (self.last_position > 0).then_some(self.last_position)
    }

    /// When records of the stream died, the event that killed them and the range they lie in:
    /// `(dead_position, first_position..=dead_through)`.
    pub(crate) fn dead_range(&self) -> Option<(u64, std::ops::RangeInclusive<u64>)> {
        (self.dead_position > 0)
            .then_some((self.dead_position, self.first_position..=self.dead_through))
    }

    fn died_at(&mut self, position: u64, through: u64) {
        self.dead_position = self.dead_position.max(position);
        self.dead_through = self.dead_through.max(through);
    }
}

/// The stream of the records a replay applied last, and its version and position after them
/// ([`StreamTable::replay_in_run`]): what the table holds for it once the run ends.
#[derive(Debug, Default)]
pub(crate) struct ReplayRun {
    /// The stream's name (a buffer reused from run to run).
    stream: String,
    next_version: u64,
    last_position: u64,
    /// Whether `stream` is the run's (else the run is empty).
    active: bool,
    /// The run's stream id as the table holds it (the table key's `Arc`, shared): the
    /// projections' events take it rather than a copy of the name allocated per record.
    id: Option<StreamId>,
    /// Whether records past the run's first are kept here and not yet in the table.
    pending: bool,
    /// The event type a compaction policy was asked about last, and its answer
    /// ([`ReplayRun::is_finished`]).
    event_type: String,
    finished: bool,
}

impl ReplayRun {
    /// The id of the stream of the record applied last, while the run holds it (an `Arc`
    /// shared with the table's key).
    #[inline]
    pub(crate) fn stream_id(&self) -> Option<&StreamId> {
        self.id.as_ref().filter(|_| self.active)
    }

    /// [`CompactionPolicy::is_finished`] of `event_type`, asked once per run of one type
    /// (the policy's answer for a type never changes during a replay).
    #[inline]
    pub(crate) fn is_finished(&mut self, compaction: &CompactionPolicy, event_type: &str) -> bool {
        if self.event_type.is_empty()
            || !logbook_projection::same_text(&self.event_type, event_type)
        {
            self.ask(compaction, event_type);
        }
        self.finished
    }

    /// Asks `compaction` about `event_type` and keeps the answer.
    fn ask(&mut self, compaction: &CompactionPolicy, event_type: &str) {
        self.finished = compaction.is_finished(event_type);
        event_type.clone_into(&mut self.event_type);
    }
}

/// Every stream's state.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StreamTable {
    /// foldhash (seeded per process): a replay looks a stream up once per record, and std's
    /// SipHash cost a tenth of that thread's instructions.
    /// hashbrown's map, so the replay's lookup by name compares in line ([`Name`]).
    streams: HashMap<StreamId, StreamState, foldhash::fast::RandomState>,
}

impl StreamTable {
    pub(crate) fn get(&self, stream: &StreamId) -> Option<&StreamState> {
        self.streams.get(stream)
    }

    /// Every stream and its state, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&StreamId, &StreamState)> {
        self.streams.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    /// Checks `expected` and returns the version the next event gets.
    pub(crate) fn check(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<u64> {
        let state = self.streams.get(stream);
        if state.is_some_and(|state| state.deleted) {
            return Err(Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        let actual = state.and_then(StreamState::last_version);
        let visible = state.is_some_and(StreamState::has_visible_events);
        let matches = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => !visible,
            ExpectedVersion::StreamExists => visible,
            ExpectedVersion::Exact(version) => actual == Some(version),
        };
        if !matches {
            return Err(Error::WrongExpectedVersion {
                stream: stream.to_string(),
                expected,
                actual,
            });
        }
        Ok(actual.map_or(0, |version| version + 1))
    }

    /// Records that `stream` got versions `first_version..` at `positions`.
    pub(crate) fn record(
        &mut self,
        stream: &StreamId,
        first_version: u64,
        positions: impl Iterator<Item = u64>,
    ) {
        let state = self.streams.entry(stream.clone()).or_default();
        assert_eq!(
            state.next_version, first_version,
            "stream versions are gapless at append"
        );
        for position in positions {
            assert!(state.last_position < position, "positions ascend");
            if state.first_position == 0 {
                state.first_position = position;
            }
            state.last_position = position;
            state.next_version += 1;
        }
    }

    /// Replays one event read from the log at open.
    pub(crate) fn replay(&mut self, stream: &str, version: u64, position: u64) -> Result<()> {
        self.replay_with_key(stream, version, position, |_| ())
    }

    /// [`StreamTable::replay`], handing the table's key for the stream to `key` (a replay run
    /// keeps a clone of it; a plain replay takes nothing).
    fn replay_with_key<T>(
        &mut self,
        stream: &str,
        version: u64,
        position: u64,
        key: impl FnOnce(&StreamId) -> T,
    ) -> Result<T> {
        // Looked up by `&str` first: a stream seen before costs no allocation and no second
        // validation (the envelope's decode validated the name).
        let (kept, state) =
            if let Some((found, state)) = self.streams.get_key_value_mut(&Name(stream)) {
                (key(found), state)
            } else {
                let found = StreamId::new(stream)?;
                (key(&found), self.streams.entry(found).or_default())
            };
        // Compaction may have dropped versions (gaps are fine); going backwards is not.
        if version < state.next_version || position <= state.last_position {
            return Err(Error::Corrupted {
                position,
                reason: format!(
                    "stream {stream} has version {version} where {} or above was expected",
                    state.next_version
                ),
            });
        }
        if state.first_position == 0 {
            state.first_position = position;
        }
        state.next_version = version + 1;
        state.last_position = position;
        Ok(kept)
    }

    /// [`StreamTable::replay`] of the next record of a replay, through `run`: a record of the
    /// stream `run` holds is checked against it (the same check, the same error) and kept
    /// there, with no lookup; any other ends the run ([`StreamTable::end_run`]) and starts one.
    /// A replay reads runs of one stream's records (a batch, a busy room), and the lookup was
    /// a tenth of a replayed record's catalog and projections' work. The run must be ended
    /// before anything else reads or changes the table.
    #[inline]
    pub(crate) fn replay_in_run(
        &mut self,
        run: &mut ReplayRun,
        stream: &str,
        version: u64,
        position: u64,
    ) -> Result<()> {
        if run.active
            && logbook_projection::same_text(&run.stream, stream)
            && version >= run.next_version
            && position > run.last_position
        {
            run.next_version = version + 1;
            run.last_position = position;
            run.pending = true;
            return Ok(());
        }
        self.replay_in_run_slow(run, stream, version, position)
    }

    /// [`StreamTable::replay_in_run`] of a record that starts a run, or is refused.
    fn replay_in_run_slow(
        &mut self,
        run: &mut ReplayRun,
        stream: &str,
        version: u64,
        position: u64,
    ) -> Result<()> {
        if run.active && logbook_projection::same_text(&run.stream, stream) {
            return Err(Error::Corrupted {
                position,
                reason: format!(
                    "stream {stream} has version {version} where {} or above was expected",
                    run.next_version
                ),
            });
        }
        self.end_run(run);
        run.id = Some(self.replay_with_key(stream, version, position, StreamId::clone)?);
        stream.clone_into(&mut run.stream);
        run.next_version = version + 1;
        run.last_position = position;
        run.active = true;
        Ok(())
    }

    /// Writes what `run` kept back into its stream's state, and empties it.
    pub(crate) fn end_run(&mut self, run: &mut ReplayRun) {
        if run.pending
            && let Some(state) = self.streams.get_mut(&Name(&run.stream))
        {
            debug_assert!(run.next_version > state.next_version);
            debug_assert!(run.last_position > state.last_position);
            state.next_version = run.next_version;
            state.last_position = run.last_position;
        }
        run.active = false;
        run.pending = false;
    }

    /// Marks `stream` deleted by the tombstone at `position`: all its records are dead.
    pub(crate) fn delete(&mut self, stream: &StreamId, position: u64) {
        let state = self.streams.entry(stream.clone()).or_default();
        state.deleted = true;
        let through = state.last_position;
        state.died_at(position, through);
    }

    /// Records that the event at `position` finished the entity of `stream`: the latest-only
    /// records it superseded before it are dead.
    pub(crate) fn finished(&mut self, stream: &str, position: u64) {
        let Ok(stream) = StreamId::new(stream) else {
            return;
        };
        if let Some(state) = self.streams.get_mut(&stream) {
            state.died_at(position, position);
        }
    }

    /// Every stream's dead range (see [`StreamState::dead_range`]) whose death is after
    /// `after`.
    pub(crate) fn deaths_after(
        &self,
        after: u64,
    ) -> impl Iterator<Item = (u64, std::ops::RangeInclusive<u64>)> + '_ {
        self.streams
            .values()
            .filter_map(StreamState::dead_range)
            .filter(move |(position, _)| *position > after)
    }

    /// Hides the versions of `stream` below `before_version`; `position` is the truncation
    /// record's.
    pub(crate) fn truncate(&mut self, stream: &StreamId, before_version: u64, position: u64) {
        let state = self.streams.entry(stream.clone()).or_default();
        state.truncated_before = state.truncated_before.max(before_version);
        let through = state.last_position;
        state.died_at(position, through);
        // A replay after compaction purged every event of the stream meets the truncation
        // with none of them: those versions were used all the same, so the next append must
        // not reuse version 0 (it would be hidden and break expected versions). (Found by
        // tests/snapshot_replay_property.rs.)
        if state.next_version < before_version {
            state.next_version = before_version;
            state.last_position = state.last_position.max(position);
        }
    }

    /// Soft-deletes `stream` at `position`: every version below `before_version` (the next
    /// version when it was written) is hidden and dead, like a truncation there, and the
    /// stream's versions continue from `before_version`.
    pub(crate) fn soft_delete(&mut self, stream: &StreamId, before_version: u64, position: u64) {
        self.truncate(stream, before_version, position);
    }

    /// Where a read of `stream` may start: the first visible version. `None` when the stream
    /// has no events.
    pub(crate) fn visible_from(&self, stream: &StreamId) -> Result<Option<u64>> {
        match self.streams.get(stream) {
            Some(state) if state.deleted => Err(Error::StreamDeleted {
                stream: stream.to_string(),
            }),
            Some(state) => Ok(Some(state.truncated_before)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replay finds a stream by its name ([`Name`] hashes and compares as the `StreamId`):
    /// the records of one stream update one entry, whatever other streams come between.
    #[test]
    fn a_replay_finds_a_stream_by_its_name() {
        let mut table = StreamTable::default();
        let names = [
            "room/a",
            "room/ab",
            "job/a",
            "a-custom-stream-with-a-long-name",
        ];
        let mut position = 0;
        for version in 0..3 {
            for name in names {
                position += 1;
                table.replay(name, version, position).unwrap();
            }
        }
        assert_eq!(table.len(), names.len());
        for (index, name) in names.iter().enumerate() {
            let state = table.get(&StreamId::new(*name).unwrap()).unwrap();
            assert_eq!(state.last_version(), Some(2), "{name}");
            assert_eq!(state.first_position, index as u64 + 1, "{name}");
            assert_eq!(state.last_position(), Some(position - 3 + index as u64));
        }
        // A version that goes back is refused for the stream it belongs to.
        let error = table.replay("room/ab", 1, position + 1).unwrap_err();
        assert!(error.to_string().contains("room/ab"), "{error}");
    }

    proptest::proptest! {
        /// Replaying through a run gives the table and the errors of replaying each record
        /// alone: runs of one stream, interleaved streams, versions that go back, positions
        /// that repeat, deletions and runs ended anywhere between.
        #[test]
        fn a_replay_through_runs_is_a_replay_of_each_record(
            steps in proptest::collection::vec((0usize..4, 0u64..3, 0u64..3, 0u8..12), 1..60),
        ) {
            let names = ["room/a", "room/b", "job/a", "room/ab"];
            let mut alone = StreamTable::default();
            let mut runs = StreamTable::default();
            let mut run = ReplayRun::default();
            let mut versions = [0u64; 4];
            let mut position = 0u64;
            for (stream, version_step, position_step, action) in steps {
                let name = names[stream];
                match action {
                    0 => {
                        // A deletion: the run ends before anything else changes the table.
                        position += 1;
                        let id = StreamId::new(name).unwrap();
                        alone.delete(&id, position);
                        runs.end_run(&mut run);
                        runs.delete(&id, position);
                    }
                    1 => runs.end_run(&mut run),
                    _ => {
                        // Mostly the next version at a later position; sometimes a version
                        // that goes back (step 0 after a record) or a repeated position.
                        versions[stream] = (versions[stream] + version_step).saturating_sub(1);
                        position += position_step.min(1) + u64::from(action == 2);
                        let expected = alone.replay(name, versions[stream], position);
                        let got = runs.replay_in_run(&mut run, name, versions[stream], position);
                        proptest::prop_assert_eq!(
                            expected.as_ref().map_err(ToString::to_string),
                            got.as_ref().map_err(ToString::to_string)
                        );
                        if expected.is_err() {
                            break;
                        }
                        versions[stream] += 1;
                    }
                }
            }
            runs.end_run(&mut run);
            proptest::prop_assert_eq!(alone, runs);
        }
    }
}
