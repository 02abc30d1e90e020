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
