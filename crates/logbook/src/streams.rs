//! The stream table: per stream, its next version, tombstone, truncation point, and the
//! position of each version.
//!
//! Owns: optimistic-concurrency checks and the version -> position map. Must never: be updated
//! by anyone but the writer (in append order) or the replay at open.

use crate::error::{Error, Result};
use logbook_projection::StreamId;
use std::collections::HashMap;

/// What an append expects of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has at least one event.
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

#[derive(Debug, Default, Clone)]
pub(crate) struct StreamState {
    /// Positions of versions `0..positions.len()`.
    positions: Vec<u64>,
    pub(crate) deleted: bool,
    /// Versions below this are hidden (and purged by compaction).
    pub(crate) truncated_before: u64,
}

impl StreamState {
    pub(crate) fn next_version(&self) -> u64 {
        self.positions.len() as u64
    }

    pub(crate) fn last_version(&self) -> Option<u64> {
        self.next_version().checked_sub(1)
    }

    pub(crate) fn last_position(&self) -> Option<u64> {
        self.positions.last().copied()
    }
}

/// Every stream's state.
#[derive(Debug, Default)]
pub(crate) struct StreamTable {
    streams: HashMap<StreamId, StreamState>,
}

impl StreamTable {
    pub(crate) fn get(&self, stream: &StreamId) -> Option<&StreamState> {
        self.streams.get(stream)
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
        let matches = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
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
            state.next_version(),
            first_version,
            "stream versions are gapless"
        );
        for position in positions {
            assert!(
                state.positions.last().is_none_or(|&last| last < position),
                "positions ascend"
            );
            state.positions.push(position);
        }
    }

    /// Replays one event read from the log at open.
    pub(crate) fn replay(&mut self, stream: &str, version: u64, position: u64) -> Result<()> {
        let key = StreamId::new(stream)?;
        let state = self.streams.entry(key).or_default();
        if version != state.next_version() {
            return Err(Error::Corrupted {
                position,
                reason: format!(
                    "stream {stream} has version {version} where {} was expected",
                    state.next_version()
                ),
            });
        }
        state.positions.push(position);
        Ok(())
    }

    pub(crate) fn delete(&mut self, stream: &StreamId) {
        self.streams.entry(stream.clone()).or_default().deleted = true;
    }

    pub(crate) fn truncate(&mut self, stream: &StreamId, before_version: u64) {
        let state = self.streams.entry(stream.clone()).or_default();
        state.truncated_before = state.truncated_before.max(before_version);
    }

    /// The (version, position) pairs of a read, visible versions only.
    pub(crate) fn select(
        &self,
        stream: &StreamId,
        from_version: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<(u64, u64)>> {
        let Some(state) = self.streams.get(stream) else {
            return Ok(Vec::new());
        };
        if state.deleted {
            return Err(Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        let visible = state.truncated_before..state.next_version();
        let pair = |version: u64| (version, state.positions[version as usize]);
        let selected = match direction {
            Direction::Forward => {
                let start = from_version.max(visible.start);
                (start..visible.end).take(max).map(pair).collect()
            }
            Direction::Backward => {
                if visible.is_empty() || from_version < visible.start {
                    return Ok(Vec::new());
                }
                let end = from_version.min(visible.end - 1);
                (visible.start..=end).rev().take(max).map(pair).collect()
            }
        };
        Ok(selected)
    }
}
