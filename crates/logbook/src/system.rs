//! The engine's own events, stored in the reserved stream `$logbook`.
//!
//! Owns: stream tombstones, soft-deletion markers and truncation markers, and the checkpoint
//! event of durable consumers (`$consumer/<name>` streams). Must never: be decoded as a user's
//! event type; readers of typed events skip every reserved (`$`) stream.

use crate::error::Result;
use logbook_projection::{EventData, StreamId, codec};
use serde::{Deserialize, Serialize};

/// The reserved stream of the engine's own events. Streams starting with `$` are reserved.
pub const SYSTEM_STREAM: &str = "$logbook";
/// Event type of a stream tombstone.
pub const STREAM_DELETED: &str = "logbook.stream_deleted";
/// Event type of a stream truncation.
pub const STREAM_TRUNCATED: &str = "logbook.stream_truncated";
/// Event type of a soft stream deletion (the stream's versions continue after it).
pub const STREAM_SOFT_DELETED: &str = "logbook.stream_soft_deleted";

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
    /// The stream was soft-deleted: every version below `before_version` (all it had) is
    /// hidden and its entity removed from the projections; the next append gets
    /// `before_version`. Added after the two above (enum variant 2), so logs written before
    /// it read the same.
    StreamSoftDeleted {
        /// The stream.
        stream: String,
        /// The version the next event of the stream gets (its last version + 1).
        before_version: u64,
    },
}

impl SystemEvent {
    pub(crate) fn event_type(&self) -> &'static str {
        match self {
            SystemEvent::StreamDeleted { .. } => STREAM_DELETED,
            SystemEvent::StreamTruncated { .. } => STREAM_TRUNCATED,
            SystemEvent::StreamSoftDeleted { .. } => STREAM_SOFT_DELETED,
        }
    }

    pub(crate) fn to_data(&self) -> Result<EventData> {
        Ok(EventData::new(self.event_type(), 1, codec::encode(self)?)?)
    }

    /// Decodes a system event payload.
    pub fn decode(payload: &[u8]) -> Result<SystemEvent> {
        Ok(codec::decode(payload, SYSTEM_PAYLOAD_BYTES_MAX)?)
    }

    /// Decodes the payload of a record of [`SYSTEM_STREAM`] and checks that its envelope's
    /// event type names the same event: the one reading of engine events that the catalog, the
    /// stream index, the projections and the read-only tools share. The error is the reason,
    /// for the caller to place (a position, a segment offset).
    pub(crate) fn decode_record(
        event_type: &str,
        payload: &[u8],
    ) -> std::result::Result<SystemEvent, String> {
        let event = SystemEvent::decode(payload)
            .map_err(|error| format!("engine event does not decode: {error}"))?;
        if event.event_type() != event_type {
            return Err(format!(
                "engine event type {event_type} does not match its payload"
            ));
        }
        Ok(event)
    }

    /// The stream the event ends or truncates.
    pub(crate) fn stream(&self) -> &str {
        match self {
            SystemEvent::StreamDeleted { stream }
            | SystemEvent::StreamTruncated { stream, .. }
            | SystemEvent::StreamSoftDeleted { stream, .. } => stream,
        }
    }

    /// Which of the stream's versions the event hides from reads (what the stream index drops
    /// and the tools count as garbage).
    pub(crate) fn hides(&self) -> Hidden {
        match self {
            SystemEvent::StreamDeleted { .. } => Hidden::All,
            // A soft delete hides every version before it like a truncation: the stream lives
            // on and its versions continue.
            SystemEvent::StreamTruncated { before_version, .. }
            | SystemEvent::StreamSoftDeleted { before_version, .. } => {
                Hidden::Below(*before_version)
            }
        }
    }

    /// True when the projections drop the stream's entity (`Projection::stream_deleted`): a
    /// hard or a soft delete (the entity starts over after a soft delete); a truncation keeps
    /// it (`Projection::stream_truncated`).
    pub(crate) fn drops_entity(&self) -> bool {
        !matches!(self, SystemEvent::StreamTruncated { .. })
    }
}

/// The largest system event payload decoded (a stream id and a version need far less).
pub(crate) const SYSTEM_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// The versions of a stream a system event hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hidden {
    /// Every version, for good (a tombstone).
    All,
    /// The versions below this one.
    Below(u64),
}

impl Hidden {
    /// The first version still visible (`u64::MAX`: none, ever).
    pub(crate) fn before_version(self) -> u64 {
        match self {
            Hidden::All => u64::MAX,
            Hidden::Below(version) => version,
        }
    }
}

pub(crate) fn system_stream() -> StreamId {
    StreamId::new(SYSTEM_STREAM).expect("the system stream name is valid")
}

/// True for names reserved for the engine.
pub fn is_reserved(stream: &str) -> bool {
    stream.starts_with(RESERVED_PREFIX)
}

/// What every reserved stream id starts with.
pub const RESERVED_PREFIX: &str = "$";

/// The prefix of a durable consumer's checkpoint stream: `$consumer/<name>` holds the
/// consumer's checkpoints, one [`ConsumerEvent`] per checkpoint (see `consumer.rs`).
pub const CONSUMER_STREAM_PREFIX: &str = "$consumer/";
/// Event type of a consumer checkpoint.
pub const CONSUMER_ACKED: &str = "logbook.consumer_acked";

/// True for a consumer's checkpoint stream.
pub fn is_consumer_stream(stream: &str) -> bool {
    stream.starts_with(CONSUMER_STREAM_PREFIX)
}

/// An event of a consumer's checkpoint stream (`$consumer/<name>`), written by the engine
/// only (a `Consumer`'s checkpoint, or an operator's reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerEvent {
    /// Every event up to and including `position` was handled by the consumer: it resumes at
    /// `position + 1`.
    Acked {
        /// The last position handled.
        position: u64,
    },
}

impl ConsumerEvent {
    /// The position the consumer resumes after.
    pub fn position(&self) -> u64 {
        match self {
            ConsumerEvent::Acked { position } => *position,
        }
    }

    pub(crate) fn to_data(self) -> Result<EventData> {
        Ok(EventData::new(CONSUMER_ACKED, 1, codec::encode(&self)?)?)
    }

    /// Decodes a checkpoint record's payload and checks its event type; the error is the
    /// reason, for the caller to place (a position).
    pub fn decode_record(
        event_type: &str,
        payload: &[u8],
    ) -> std::result::Result<ConsumerEvent, String> {
        if event_type != CONSUMER_ACKED {
            return Err(format!(
                "unknown event type {event_type} in a consumer checkpoint stream"
            ));
        }
        codec::decode(payload, SYSTEM_PAYLOAD_BYTES_MAX)
            .map_err(|error| format!("consumer checkpoint does not decode: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload bytes docs/format.md shows; variants 0 and 1 keep their encoding.
    #[test]
    fn payloads_match_the_format_document() {
        let soft = SystemEvent::StreamSoftDeleted {
            stream: "task-7".to_owned(),
            before_version: 5,
        };
        let bytes = codec::encode(&soft).expect("encode");
        assert_eq!(bytes, [2, 6, b't', b'a', b's', b'k', b'-', b'7', 5]);
        assert_eq!(SystemEvent::decode(&bytes).expect("decode"), soft);
        assert_eq!(
            soft.to_data().expect("data").event_type(),
            STREAM_SOFT_DELETED
        );
        let deleted = SystemEvent::StreamDeleted {
            stream: "a".to_owned(),
        };
        assert_eq!(codec::encode(&deleted).expect("encode"), [0, 1, b'a']);
        let truncated = SystemEvent::StreamTruncated {
            stream: "a".to_owned(),
            before_version: 3,
        };
        assert_eq!(codec::encode(&truncated).expect("encode"), [1, 1, b'a', 3]);
    }

    /// A consumer checkpoint's payload is the bytes docs/format.md shows, and it reads back
    /// only under its own event type.
    #[test]
    fn consumer_checkpoint_matches_the_format_document() {
        let acked = ConsumerEvent::Acked { position: 300 };
        let data = acked.to_data().expect("data");
        assert_eq!(data.event_type(), CONSUMER_ACKED);
        assert_eq!(data.payload(), [0, 251, 44, 1]);
        assert_eq!(
            ConsumerEvent::decode_record(CONSUMER_ACKED, data.payload()),
            Ok(acked)
        );
        assert!(ConsumerEvent::decode_record("room.created", data.payload()).is_err());
        assert!(ConsumerEvent::decode_record(CONSUMER_ACKED, &[7]).is_err());
    }
}
