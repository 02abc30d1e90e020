//! The one error type of this crate.
//!
//! Owns: every way building, encoding or decoding an event, an envelope, a stream id or a
//! projection state can fail, as a typed value a caller can match on.
//! Never: carries I/O errors (this crate does no I/O) or panics on bad input; a broken invariant
//! of this crate's own code is an `assert!`, not an `Error`.

use std::fmt;

/// Every error of `logbook-projection`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stream id broke a rule; `stream` is an escaped, shortened copy of the input.
    #[error("invalid stream id {stream:?}: {reason}")]
    InvalidStreamId {
        /// Escaped (control characters shown as escapes) and shortened input.
        stream: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// An event type name broke a rule (ASCII `[a-z0-9_.]`, 1 to 128 bytes).
    #[error("invalid event type {event_type:?}: {reason}")]
    InvalidEventType {
        /// Escaped and shortened input.
        event_type: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A correlation or causation id broke a rule (1 to 128 bytes, no control characters).
    #[error("invalid {what} {id:?}: {reason}")]
    InvalidId {
        /// Which id, e.g. "correlation id".
        what: &'static str,
        /// Escaped and shortened input.
        id: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// No decoder knows this event type.
    #[error("unknown event type {event_type:?}{}", schema_version.map_or(String::new(), |version| format!(" (schema version {version})")))]
    UnknownEventType {
        /// The event type read from the envelope or given by the caller.
        event_type: String,
        /// Its schema version: `None` when the caller gave none (JSON input without one).
        schema_version: Option<u16>,
    },
    /// The event type is known but not at this schema version (too new, or no upcaster).
    #[error("event type {event_type:?} has no decoder for schema version {schema_version}")]
    UnsupportedSchemaVersion {
        /// The event type.
        event_type: String,
        /// The schema version that cannot be read.
        schema_version: u16,
    },
    /// A projection snapshot was written at a state version this code does not read; the
    /// engine should drop it and replay the log instead.
    #[error("projection {projection} cannot restore state version {state_version}")]
    UnsupportedStateVersion {
        /// The projection id.
        projection: &'static str,
        /// The state version of the snapshot.
        state_version: u16,
    },
    /// The payload was written with a codec this reader does not speak.
    #[error("unsupported codec id {codec}")]
    UnsupportedCodec {
        /// The codec id found in the envelope.
        codec: u8,
    },
    /// Bytes could not be decoded: truncated, garbage, trailing bytes or invalid values.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded, e.g. "envelope" or "payload".
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// An event encodes to a payload its own type's `decode_payload` cannot read back, or reads
    /// back as another value: appending it would acknowledge an event no read could return, so
    /// it is refused and nothing of its batch is written. `feature` names the serde feature
    /// most likely at fault (see the rules on [`crate::Event`]).
    #[error(
        "event type {event_type:?} (schema version {schema_version}) is refused: its payload would not read back ({cause}); likely cause: {feature}"
    )]
    Unreadable {
        /// The event type.
        event_type: String,
        /// The schema version it was encoded at.
        schema_version: u16,
        /// The serde feature most likely at fault, one of the `FEATURE_*` constants of
        /// [`crate::readback`].
        feature: &'static str,
        /// What failed: the decode error, or how the value read back differs.
        cause: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A named limit was exceeded.
    #[error("{what} is {actual} bytes, the limit is {limit}")]
    LimitExceeded {
        /// What is too large, e.g. "payload".
        what: &'static str,
        /// The limit (a named const of this crate).
        limit: usize,
        /// The size found.
        actual: usize,
    },
    /// A field of an event holds a value its event type does not allow.
    #[error("invalid {event_type} event: field {field} {reason}")]
    InvalidField {
        /// The event type.
        event_type: &'static str,
        /// The field name.
        field: &'static str,
        /// Why the value is refused.
        reason: String,
    },
    /// An event was addressed to a stream of the wrong kind, e.g. `room.created` to `job/1`.
    #[error("event type {event_type} cannot be appended to stream {stream:?}: {reason}")]
    StreamMismatch {
        /// The event type.
        event_type: String,
        /// The stream id.
        stream: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The JSON bridge could not convert an event.
    #[error("invalid JSON for event type {event_type:?}: {reason}")]
    Json {
        /// The event type given with the JSON data.
        event_type: String,
        /// The serde_json message.
        reason: String,
    },
    /// A command was refused by the current projected state; nothing must be written.
    #[error("{entity} {id:?}: {reason}")]
    Rejected {
        /// The kind of entity, e.g. "run", "room", "job".
        entity: &'static str,
        /// The entity id.
        id: String,
        /// Why the command is refused.
        reason: RejectReason,
    },
}

/// Why a command was refused by a built-in projection's validation functions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The entity does not exist.
    NotFound,
    /// The entity already exists.
    AlreadyExists,
    /// The entity already reached a terminal state.
    AlreadyEnded,
    /// The room is archived.
    Archived,
    /// A job is claimed by a worker whose lease is still live.
    LeaseLive {
        /// The worker that holds the lease.
        worker: String,
        /// When the lease expires.
        lease_expires_at_ms: u64,
    },
    /// The job is not claimed by this worker (heartbeat or completion by a stranger).
    NotClaimedBy {
        /// The worker that tried.
        worker: String,
    },
    /// The transition is not allowed from the current status.
    InvalidTransition {
        /// The current status.
        from: &'static str,
        /// The requested status.
        to: &'static str,
    },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::NotFound => write!(f, "not found"),
            RejectReason::AlreadyExists => write!(f, "already exists"),
            RejectReason::AlreadyEnded => write!(f, "already ended"),
            RejectReason::Archived => write!(f, "archived"),
            RejectReason::LeaseLive {
                worker,
                lease_expires_at_ms,
            } => {
                write!(f, "claimed by {worker:?} until {lease_expires_at_ms} ms")
            }
            RejectReason::NotClaimedBy { worker } => write!(f, "not claimed by {worker:?}"),
            RejectReason::InvalidTransition { from, to } => {
                write!(f, "cannot go from {from} to {to}")
            }
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// How many characters of a refused input an error message keeps.
const ESCAPED_CHARS_MAX: usize = 64;

/// An escaped, shortened copy of untrusted input, safe to print in an error message.
pub(crate) fn escape_lossy(input: &str) -> String {
    let mut out = String::new();
    for (index, c) in input.chars().enumerate() {
        if index == ESCAPED_CHARS_MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// Like [`escape_lossy`] for bytes that may not be UTF-8.
pub(crate) fn escape_bytes_lossy(input: &[u8]) -> String {
    escape_lossy(&String::from_utf8_lossy(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_shortens_and_escapes() {
        assert_eq!(escape_lossy("a\nb"), "a\\nb");
        let long = "x".repeat(1000);
        assert_eq!(escape_lossy(&long).chars().count(), ESCAPED_CHARS_MAX + 1);
        assert_eq!(escape_bytes_lossy(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn errors_display_their_reason() {
        let error = Error::LimitExceeded {
            what: "payload",
            limit: 3,
            actual: 4,
        };
        assert_eq!(error.to_string(), "payload is 4 bytes, the limit is 3");
        let error = Error::Rejected {
            entity: "job",
            id: "j1".into(),
            reason: RejectReason::LeaseLive {
                worker: "w".into(),
                lease_expires_at_ms: 9,
            },
        };
        assert_eq!(error.to_string(), "job \"j1\": claimed by \"w\" until 9 ms");
    }
}
