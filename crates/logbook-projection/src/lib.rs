//! Typed events for logbook: stream ids, the envelope, the codec, the built-in model.
//!
//! This crate turns events into the bytes of one WAL record and back. It does no I/O and knows
//! nothing of the WAL: the engine (`logbook`) asks it for bytes and hands it bytes.
//!
//! - [`StreamId`]: a stream name that can only exist valid (`run/<id>`, `room/<id>`, or a
//!   service's own name).
//! - [`Event`]: the trait a service implements for its own event enum. [`BuiltinEvent`] (runs,
//!   workflows, rooms, jobs) is one implementor, with a JSON bridge for the CLI.
//! - [`Envelope`]: stream, stream version, event type, schema version, timestamp, trace ids,
//!   codec id and payload; its header decodes without knowing the payload's Rust type.
//! - [`codec`]: the only place bincode is used; [`upcast`]: reading old schema versions.
//! - [`Projection`]: state rebuilt from events; [`projections`] holds the built-in ones (run
//!   ledger, rooms, jobs) with their queries, command validation and restart queries.
//!
//! ```
//! use logbook_projection::model::RoomMessagePosted;
//! use logbook_projection::{BuiltinEvent, Envelope, NewEvent, RawEvent, StreamId};
//!
//! // What a caller appends: an event and optional trace ids.
//! let posted = BuiltinEvent::from(RoomMessagePosted {
//!     message_id: "m1".into(),
//!     author: "ada".into(),
//!     body: "hello".into(),
//! });
//! let data = NewEvent::new(posted.clone()).with_correlation_id("req-7").to_data()?;
//!
//! // The engine places it: stream, 0-based stream version, its clock's time.
//! let stream = StreamId::room("lobby")?;
//! let bytes = Envelope::new(stream.clone(), 0, 1_700_000_000_000, data).encode();
//!
//! // Any reader gets the header back without knowing the payload's type...
//! let raw = RawEvent::decode_record(17, &bytes)?;
//! assert_eq!(raw.envelope.event_type(), "room.message_posted");
//! assert_eq!(raw.envelope.stream(), &stream);
//!
//! // ...and a reader that knows the type gets the event.
//! let recorded = raw.decode::<BuiltinEvent>()?;
//! assert_eq!(recorded.position, 17);
//! assert_eq!(recorded.version, 0);
//! assert_eq!(recorded.correlation_id.as_deref(), Some("req-7"));
//! assert_eq!(recorded.event, posted);
//! # Ok::<(), logbook_projection::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod envelope;
mod error;
mod event;
mod event_type;
pub mod model;
pub mod projection;
pub mod projections;
pub mod readback;
pub mod stream;
pub mod upcast;
mod utf8;

pub use codec::CODEC_BINCODE2;
pub use envelope::{
    CORRELATION_ID_BYTES_MAX, ENVELOPE_BYTES_MAX, EVENT_TYPE_BYTES_MAX, Envelope, EnvelopeDecoder,
    EnvelopeRef, PAYLOAD_BYTES_MAX, TIMESTAMP_MS_MAX, same_text,
};
pub use error::{Error, RejectReason, Result};
pub use event::{Event, EventData, NewEvent, RawEvent, RecordDecoder, RecordedEvent};
pub use event_type::EventType;
pub use model::{BuiltinEvent, EventPayload};
pub use projection::{Order, Page, PageRequest, Projection};
pub use projections::{Jobs, Rooms, RunLedger, ValidateCommand};
pub use stream::{STREAM_ID_BYTES_MAX, StreamId, StreamKind};
