//! The engine's own events, stored in the reserved stream `$logbook`.
//!
//! Owns: stream tombstones and truncation markers. Must never: be decoded as a user's event
//! type; readers of typed events skip the system stream.

use crate::error::Result;
use logbook_projection::{EventData, StreamId, codec};
use serde::{Deserialize, Serialize};

/// The reserved stream of the engine's own events. Streams starting with `$` are reserved.
pub const SYSTEM_STREAM: &str = "$logbook";
/// Event type of a stream tombstone.
pub const STREAM_DELETED: &str = "logbook.stream_deleted";
/// Event type of a stream truncation.
pub const STREAM_TRUNCATED: &str = "logbook.stream_truncated";

/// An engine event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemEvent {
    /// The stream was deleted.
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// Versions of the stream below `before_version` are hidden.
    StreamTruncated {
        /// The stream.
        stream: String,
        /// The first version still visible.
        before_version: u64,
    },
}

impl SystemEvent {
    pub(crate) fn event_type(&self) -> &'static str {
        match self {
            SystemEvent::StreamDeleted { .. } => STREAM_DELETED,
            SystemEvent::StreamTruncated { .. } => STREAM_TRUNCATED,
        }
    }

    pub(crate) fn to_data(&self) -> Result<EventData> {
        Ok(EventData::new(self.event_type(), 1, codec::encode(self)?)?)
    }

    /// Decodes a system event payload.
    pub fn decode(payload: &[u8]) -> Result<SystemEvent> {
        Ok(codec::decode(payload, 64 * 1024)?)
    }
}

pub(crate) fn system_stream() -> StreamId {
    StreamId::new(SYSTEM_STREAM).expect("the system stream name is valid")
}

/// True for names reserved for the engine.
pub fn is_reserved(stream: &str) -> bool {
    stream.starts_with('$')
}
