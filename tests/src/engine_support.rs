//! Helpers for the engine tests: a service-defined event type and test options.

use logbook::{Event, LogbookOptions, SyncPolicy};
use logbook_projection::codec;
use serde::{Deserialize, Serialize};

/// A service's own event type, as an embedding service would define it: proves the engine is
/// not tied to the built-in model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterEvent {
    /// Adds to a counter.
    Added {
        /// How much.
        amount: u64,
        /// Free text, to make payloads of chosen sizes.
        note: String,
    },
    /// Resets a counter.
    Reset,
}

impl Event for CounterEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CounterEvent::Added { .. } => "counter.added",
            CounterEvent::Reset => "counter.reset",
        }
    }

    fn schema_version(&self) -> u16 {
        1
    }

    fn encode_payload(&self) -> logbook_projection::Result<Vec<u8>> {
        codec::encode(self)
    }

    fn decode_payload(
        _event_type: &str,
        _schema_version: u16,
        payload: &[u8],
    ) -> logbook_projection::Result<Self> {
        codec::decode(payload, 1 << 20)
    }
}

/// An `Added` event with a note.
pub fn added(amount: u64, note: &str) -> logbook::NewEvent<CounterEvent> {
    logbook::NewEvent::new(CounterEvent::Added {
        amount,
        note: note.to_owned(),
    })
}

/// Engine options for tests: fsync on every append, small segments so rolls happen.
pub fn test_options() -> LogbookOptions {
    let mut options = LogbookOptions::default();
    options.wal.sync_policy = SyncPolicy::Always;
    options.wal.segment_bytes_max = 64 * 1024;
    options
}

/// The versions of the newest `max` events of `stream`, newest first (`read_stream` backward
/// from the end).
pub async fn newest_versions(
    log: &logbook::Logbook<CounterEvent>,
    stream: &logbook::StreamId,
    max: usize,
) -> Vec<u64> {
    log.read_stream(stream, u64::MAX, logbook::Direction::Backward, max)
        .await
        .expect("read the newest events")
        .iter()
        .map(|event| event.version)
        .collect()
}

/// Every version of `stream`, read forward from version 0 in pages of `page`.
pub async fn versions_forward(
    log: &logbook::Logbook<CounterEvent>,
    stream: &logbook::StreamId,
    page: usize,
) -> Vec<u64> {
    let mut versions: Vec<u64> = Vec::new();
    loop {
        let from = versions.last().map_or(0, |last| last + 1);
        let events = log
            .read_stream(stream, from, logbook::Direction::Forward, page)
            .await
            .expect("read a page forward");
        let done = events.len() < page;
        versions.extend(events.iter().map(|event| event.version));
        if done {
            return versions;
        }
    }
}
