//! The built-in model: runs, workflows, rooms and jobs, as one [`Event`] implementor,
//! [`BuiltinEvent`].
//!
//! Owns: the built-in payload types, their event type names and schema versions, their value
//! rules, their upcasters ([`BUILTIN_UPCASTERS`]) and the JSON bridge the CLI uses
//! ([`BuiltinEvent::from_json`], [`BuiltinEvent::to_json`]).
//! Never: gets special treatment from the engine; a service's own event enum goes through the
//! same [`Event`] trait. Never uses serde attributes that need a self-describing format on a
//! payload (bincode writes every field, in declaration order, without names): a payload's field
//! order and types ARE its format; change them only with a new schema version and an upcaster.
//! Enum variants are encoded by index: only ever add variants at the end.

mod job;
mod room;
mod run;
pub mod validate;
mod workflow;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use job::{
    JobCancelled, JobClaimed, JobFailed, JobHeartbeat, JobLeaseExpired, JobProgress, JobQueued,
    JobSucceeded,
};
pub use room::{
    RoomArchived, RoomCreated, RoomMemberJoined, RoomMemberLeft, RoomMessageDeleted,
    RoomMessageEdited, RoomMessagePosted,
};
pub use run::{
    CHECKPOINT_BYTES_MAX, CheckpointReason, RunCancelled, RunCheckpointed, RunCompleted, RunEvent,
    RunFailed, RunKind, RunStarted, RunStatus, RunStatusChanged, RunTelemetry,
};
pub use workflow::{
    WorkflowCancelled, WorkflowCompleted, WorkflowFailed, WorkflowPhaseCompleted,
    WorkflowPhaseFailed, WorkflowPhaseStarted, WorkflowStarted,
};

use crate::codec;
use crate::envelope::PAYLOAD_BYTES_MAX;
use crate::error::{Error, Result, escape_lossy};
use crate::event::Event;
use crate::stream::{StreamId, StreamKind};
use crate::upcast::{Upcaster, upcast};

/// A built-in payload: one struct per event type.
pub trait EventPayload: Serialize + DeserializeOwned + Clone + PartialEq {
    /// The event type name, e.g. `"room.message_posted"`.
    const EVENT_TYPE: &'static str;
    /// The current schema version.
    const SCHEMA_VERSION: u16;
    /// The kind of stream this event belongs to.
    const STREAM_KIND: StreamKind;

    /// Checks the value rules (non-empty ids, limits, percent at most 100...).
    fn validate(&self) -> Result<()>;

    /// Decodes `bytes`, a payload of the current schema version, into `self`: the same value
    /// and the same errors as [`codec::decode`], without checking the value rules. A payload
    /// decoded on every replay of a busy log (a posted message) overrides it to copy its
    /// strings into the buffers `self` holds, so a replay does not allocate them per event.
    /// On an error `self` may hold part of the new value.
    fn decode_into(&mut self, bytes: &[u8]) -> Result<()> {
        *self = codec::decode(bytes, PAYLOAD_BYTES_MAX)?;
        Ok(())
    }
}

/// Every upcaster of the built-in model.
pub const BUILTIN_UPCASTERS: &[Upcaster] = &[job::PROGRESS_V1_TO_V2];

fn encode_typed<P: EventPayload>(payload: &P) -> Result<Vec<u8>> {
    payload.validate()?;
    let bytes = codec::encode(payload)?;
    if bytes.len() > PAYLOAD_BYTES_MAX {
        return Err(Error::LimitExceeded {
            what: "payload",
            limit: PAYLOAD_BYTES_MAX,
            actual: bytes.len(),
        });
    }
    Ok(bytes)
}

fn decode_typed<P: EventPayload>(schema_version: u16, bytes: &[u8]) -> Result<P> {
    let current = upcast(
        BUILTIN_UPCASTERS,
        P::EVENT_TYPE,
        schema_version,
        P::SCHEMA_VERSION,
        bytes,
    )?;
    let payload: P = codec::decode(&current, PAYLOAD_BYTES_MAX)
        .map_err(|error| payload_error::<P>(schema_version, error))?;
    payload.validate()?;
    Ok(payload)
}

/// [`decode_typed`] into `held`, the payload of the event decoded before: in place when the
/// payload is of the current schema version (nothing to upcast), with the same errors.
fn decode_typed_into<P: EventPayload>(
    held: &mut P,
    schema_version: u16,
    bytes: &[u8],
) -> Result<()> {
    if schema_version != P::SCHEMA_VERSION {
        *held = decode_typed(schema_version, bytes)?;
        return Ok(());
    }
    held.decode_into(bytes)
        .map_err(|error| payload_error::<P>(schema_version, error))?;
    held.validate()
}

/// A codec error of a `P` payload of `schema_version`, named after its event type.
fn payload_error<P: EventPayload>(schema_version: u16, error: Error) -> Error {
    match error {
        Error::Decode { reason, .. } => Error::Decode {
            what: "payload",
            reason: format!("{} v{schema_version}: {reason}", P::EVENT_TYPE),
        },
        other => other,
    }
}

fn from_json_typed<P: EventPayload>(data: serde_json::Value) -> Result<P> {
    // `null` stands for "no fields", so `room.archived` needs no data.
    let data = match data {
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        other => other,
    };
    let payload: P = serde_json::from_value(data).map_err(|error| Error::Json {
        event_type: P::EVENT_TYPE.to_owned(),
        reason: error.to_string(),
    })?;
    payload.validate()?;
    Ok(payload)
}

fn to_json_typed<P: EventPayload>(payload: &P) -> serde_json::Value {
    // Built-in payloads hold strings, integers, booleans, options, lists and maps with string
    // keys: serde_json cannot fail on them, so a failure is a bug in this module.
    match serde_json::to_value(payload) {
        Ok(value) => value,
        Err(error) => unreachable!("{} payload to JSON: {error}", P::EVENT_TYPE),
    }
}

macro_rules! builtin_events {
    ($($variant:ident),* $(,)?) => {
        /// Every built-in event, one variant per event type; each variant holds the payload
        /// struct of the same name.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum BuiltinEvent {
            $(
                #[doc = concat!("See [`", stringify!($variant), "`].")]
                $variant($variant),
            )*
        }

        $(
            impl From<$variant> for BuiltinEvent {
                fn from(payload: $variant) -> Self {
                    BuiltinEvent::$variant(payload)
                }
            }
        )*

        impl BuiltinEvent {
            /// Every built-in event type name.
            pub const EVENT_TYPES: &'static [&'static str] =
                &[$(<$variant as EventPayload>::EVENT_TYPE),*];

            /// The current schema version of a built-in event type, `None` if unknown.
            pub fn current_schema_version(event_type: &str) -> Option<u16> {
                $(
                    if event_type == <$variant as EventPayload>::EVENT_TYPE {
                        return Some(<$variant as EventPayload>::SCHEMA_VERSION);
                    }
                )*
                None
            }

            /// The stream kind the event belongs to (`run.*` to `run/<id>`...).
            pub fn stream_kind(&self) -> StreamKind {
                match self {
                    $(BuiltinEvent::$variant(_) => <$variant as EventPayload>::STREAM_KIND,)*
                }
            }

            /// Checks the value rules of the payload.
            pub fn validate(&self) -> Result<()> {
                match self {
                    $(BuiltinEvent::$variant(payload) => payload.validate(),)*
                }
            }

            /// Builds an event from its type name and its JSON data (the CLI's input), checking
            /// every value rule. `null` data means an empty object.
            pub fn from_json(event_type: &str, data: serde_json::Value) -> Result<BuiltinEvent> {
                $(
                    if event_type == <$variant as EventPayload>::EVENT_TYPE {
                        return from_json_typed::<$variant>(data).map(BuiltinEvent::$variant);
                    }
                )*
                Err(unknown(event_type, None))
            }

            /// The JSON data of the event, without its type: `from_json(e.event_type(),
            /// e.to_json())` gives `e` back. Absent optional fields are `null`.
            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(BuiltinEvent::$variant(payload) => to_json_typed(payload),)*
                }
            }
        }

        impl Event for BuiltinEvent {
            fn event_type(&self) -> &'static str {
                match self {
                    $(BuiltinEvent::$variant(_) => <$variant as EventPayload>::EVENT_TYPE,)*
                }
            }

            fn schema_version(&self) -> u16 {
                match self {
                    $(BuiltinEvent::$variant(_) => <$variant as EventPayload>::SCHEMA_VERSION,)*
                }
            }

            fn encode_payload(&self) -> Result<Vec<u8>> {
                match self {
                    $(BuiltinEvent::$variant(payload) => encode_typed(payload),)*
                }
            }

            fn decode_payload(
                event_type: &str,
                schema_version: u16,
                payload: &[u8],
            ) -> Result<BuiltinEvent> {
                $(
                    if event_type == <$variant as EventPayload>::EVENT_TYPE {
                        return decode_typed::<$variant>(schema_version, payload)
                            .map(BuiltinEvent::$variant);
                    }
                )*
                Err(unknown(event_type, Some(schema_version)))
            }

            fn decode_payload_into(
                &mut self,
                event_type: &str,
                schema_version: u16,
                payload: &[u8],
            ) -> Result<()> {
                match self {
                    $(
                        BuiltinEvent::$variant(held)
                            if event_type == <$variant as EventPayload>::EVENT_TYPE =>
                        {
                            decode_typed_into(held, schema_version, payload)
                        }
                    )*
                    _ => {
                        *self = Self::decode_payload(event_type, schema_version, payload)?;
                        Ok(())
                    }
                }
            }
        }
    };
}

builtin_events!(
    RunStarted,
    RunStatusChanged,
    RunEvent,
    RunTelemetry,
    RunCheckpointed,
    RunCompleted,
    RunFailed,
    RunCancelled,
    WorkflowStarted,
    WorkflowPhaseStarted,
    WorkflowPhaseCompleted,
    WorkflowPhaseFailed,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    RoomCreated,
    RoomMemberJoined,
    RoomMemberLeft,
    RoomMessagePosted,
    RoomMessageEdited,
    RoomMessageDeleted,
    RoomArchived,
    JobQueued,
    JobClaimed,
    JobHeartbeat,
    JobProgress,
    JobSucceeded,
    JobFailed,
    JobCancelled,
    JobLeaseExpired,
);

fn unknown(event_type: &str, schema_version: Option<u16>) -> Error {
    Error::UnknownEventType {
        event_type: escape_lossy(event_type),
        schema_version,
    }
}

impl BuiltinEvent {
    /// Refuses to place the event in a stream of another kind (`room.created` in `job/1`).
    pub fn check_stream(&self, stream: &StreamId) -> Result<()> {
        let expected = self.stream_kind();
        if stream.kind() != expected {
            return Err(Error::StreamMismatch {
                event_type: self.event_type().to_owned(),
                stream: escape_lossy(stream.as_str()),
                reason: match expected {
                    StreamKind::Run => "run events go to run/<id> streams",
                    StreamKind::Workflow => "workflow events go to workflow/<id> streams",
                    StreamKind::Room => "room events go to room/<id> streams",
                    StreamKind::Job => "job events go to job/<id> streams",
                    StreamKind::Custom => "built-in events go to built-in streams",
                },
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
