//! Typed events: the trait a service implements for its own event enum, and the shapes an event
//! takes on its way into the log ([`NewEvent`], [`EventData`]) and out of it ([`RawEvent`],
//! [`RecordedEvent`]).
//!
//! Owns: the contract between an event enum and the engine; the built-in model
//! (`crate::model::BuiltinEvent`) is only one implementor.
//! Never: assigns positions or stream versions, or timestamps unless the caller states one
//! ([`NewEvent::with_timestamp_ms`]; otherwise the engine does), or does I/O.

use std::fmt;

use crate::codec::CODEC_BINCODE2;
use crate::envelope::{
    ENVELOPE_HEADER_BYTES, Envelope, EnvelopeDecoder, EnvelopeRef, PAYLOAD_BYTES_MAX,
    TIMESTAMP_MS_MAX, validate_correlation_id, validate_event_type,
};
use crate::error::{Error, Result};
use crate::event_type::EventType;
use crate::stream::StreamId;

/// A service's event type: usually an enum with one variant per event type name.
///
/// The engine stores `event_type()`, `schema_version()`, [`Event::CODEC`] and the bytes of
/// `encode_payload()` in the envelope, and calls `decode_payload` with the first two and the
/// bytes when it reads the event back, possibly years later: `decode_payload` must accept every
/// schema version ever written, upgrading old ones (see [`crate::upcast`]).
///
/// # What the codec reads back, and what `append` refuses
///
/// Every payload is decoded back with `decode_payload` and encoded again before the engine
/// accepts it ([`NewEvent::to_data`], [`crate::readback`]), for every value, on the caller's
/// task: an event whose bytes would not read back as itself is refused with
/// [`Error::Unreadable`] and nothing of its batch is written. So no acknowledged event fails to
/// decode later. With the default codec ([`crate::codec`], bincode: every field in order, no
/// field names, no type tags) the rules for the serde types an event encodes are:
///
/// - Work: structs, tuples, plain enums (externally tagged, serde's default), `Option`, `Vec`,
///   maps and sets (`BTreeMap`, `HashMap`, ...), strings, integers, floats, `bool`,
///   `#[serde(rename)]`, `#[serde(skip)]` (skipped both ways), `#[serde(default)]` on a field
///   that is always written, `#[serde(with)]` that writes a fixed shape.
/// - Refused at append, every time: anything that needs serde's `deserialize_any` to decode,
///   `#[serde(tag = "...")]`, `#[serde(tag, content)]`, `#[serde(untagged)]`,
///   `#[serde(flatten)]`, `serde_json::Value` ([`crate::readback::FEATURE_DESERIALIZE_ANY`]).
/// - Refused at append for the values it affects: `#[serde(skip_serializing_if = "...")]` and
///   `#[serde(skip_serializing)]`, which write fewer fields than decoding reads
///   ([`crate::readback::FEATURE_SKIPPED_FIELD`]); an `Option` field with `None` is refused
///   while the same type with `Some` is accepted, so drop the attribute instead.
///
/// A type with its own codec (an id from 128 to 255) gets the same check: whatever
/// `encode_payload` writes, its `decode_payload` must read.
pub trait Event: Sized + Send + Sync + 'static {
    /// The codec id recorded with every payload of this type. Keep the default
    /// ([`CODEC_BINCODE2`]) when `encode_payload` uses [`crate::codec::encode`]; an
    /// application's own encoding takes an id from 128 to 255.
    const CODEC: u8 = CODEC_BINCODE2;

    /// The event type name, e.g. `"room.message_posted"`: ASCII `[a-z0-9_.]`, 1 to 128 bytes.
    fn event_type(&self) -> &'static str;

    /// The current schema version of this event's type.
    fn schema_version(&self) -> u16;

    /// Encodes the payload at the current schema version.
    fn encode_payload(&self) -> Result<Vec<u8>>;

    /// Decodes a payload recorded with (event_type, schema_version); older versions go through
    /// upcasters.
    fn decode_payload(event_type: &str, schema_version: u16, payload: &[u8]) -> Result<Self>;

    /// [`Event::decode_payload`] into `self`, an event decoded before: what a replay does
    /// record after record (into the event it applied before), so an implementation may keep
    /// the buffers `self` holds. The result must equal `decode_payload`'s, errors included.
    /// On an error `self` may hold part of the new payload: it is decoded into again before it
    /// is used. The default decodes a new value.
    fn decode_payload_into(
        &mut self,
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> Result<()> {
        *self = Self::decode_payload(event_type, schema_version, payload)?;
        Ok(())
    }
}

/// An event a caller asks the engine to append: the event, its optional trace ids and its
/// optional time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent<E> {
    /// The event.
    pub event: E,
    /// Ties together the events of one request or conversation (at most 128 bytes).
    pub correlation_id: Option<String>,
    /// The id of the event or command that caused this one (at most 128 bytes).
    pub causation_id: Option<String>,
    /// The event's time, milliseconds since the Unix epoch, when the caller knows it better
    /// than the engine's clock (an import of records made earlier); `None`, the usual case:
    /// the engine stamps the event with its clock at the append. See
    /// [`NewEvent::with_timestamp_ms`].
    pub timestamp_ms: Option<u64>,
}

impl<E: Event> NewEvent<E> {
    /// An event without trace ids.
    pub fn new(event: E) -> Self {
        NewEvent {
            event,
            correlation_id: None,
            causation_id: None,
            timestamp_ms: None,
        }
    }

    /// Sets the correlation id; it is validated by [`NewEvent::to_data`].
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id; it is validated by [`NewEvent::to_data`].
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Records the event at `timestamp_ms` (milliseconds since the Unix epoch, at most
    /// [`TIMESTAMP_MS_MAX`], validated by [`NewEvent::to_data`]) instead of the engine's clock
    /// at the append: the time the event happened, when it happened before it reached the log
    /// (what `logbook import` gives each imported event, so projections show the original
    /// times).
    ///
    /// The log's order stays its positions: events with stated times need not come in time
    /// order, so envelope timestamps are not monotonic in a log that has any (they are not
    /// guaranteed to be anyway: the clock is the wall clock). Nothing in the engine orders or
    /// expires by timestamp.
    pub fn with_timestamp_ms(mut self, timestamp_ms: u64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Encodes and validates: everything the envelope needs but the stream placement.
    ///
    /// The payload is decoded back with `E::decode_payload` and encoded again before it is
    /// accepted ([`crate::readback`]): a payload that would not read back as the same value is
    /// refused with [`Error::Unreadable`], which names the serde feature at fault.
    pub fn to_data(&self) -> Result<EventData> {
        let payload = self.event.encode_payload()?;
        crate::readback::check_reads_back(&self.event, &payload)?;
        let mut data = EventData::new(
            self.event.event_type(),
            self.event.schema_version(),
            payload,
        )?
        .with_codec(E::CODEC)?;
        if let Some(id) = &self.correlation_id {
            data = data.with_correlation_id(id.clone())?;
        }
        if let Some(id) = &self.causation_id {
            data = data.with_causation_id(id.clone())?;
        }
        if let Some(timestamp_ms) = self.timestamp_ms {
            data = data.with_timestamp_ms(timestamp_ms)?;
        }
        Ok(data)
    }
}

impl<E: Event> From<E> for NewEvent<E> {
    fn from(event: E) -> Self {
        NewEvent::new(event)
    }
}

/// An encoded, validated event not yet placed in a stream: type, schema version, codec, trace
/// ids, payload bytes and, when the caller stated one, its time. The engine turns it into an
/// [`Envelope`] once it knows the stream version and (for data without a time) the time.
#[derive(Clone, PartialEq, Eq)]
pub struct EventData {
    event_type: String,
    schema_version: u16,
    codec: u8,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    timestamp_ms: Option<u64>,
    payload: Vec<u8>,
}

impl EventData {
    /// Validates the event type and the payload length; the codec is [`CODEC_BINCODE2`].
    pub fn new(
        event_type: impl Into<String>,
        schema_version: u16,
        payload: Vec<u8>,
    ) -> Result<EventData> {
        let event_type = event_type.into();
        validate_event_type(&event_type)?;
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "payload",
                limit: PAYLOAD_BYTES_MAX,
                actual: payload.len(),
            });
        }
        Ok(EventData {
            event_type,
            schema_version,
            codec: CODEC_BINCODE2,
            correlation_id: None,
            causation_id: None,
            timestamp_ms: None,
            payload,
        })
    }

    /// Sets the codec id; 0 is refused.
    pub fn with_codec(mut self, codec: u8) -> Result<EventData> {
        if codec == 0 {
            return Err(Error::UnsupportedCodec { codec });
        }
        self.codec = codec;
        Ok(self)
    }

    /// Sets the correlation id (1 to 128 bytes, no control characters).
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Result<EventData> {
        let id = id.into();
        validate_correlation_id("correlation id", &id)?;
        self.correlation_id = Some(id);
        Ok(self)
    }

    /// Sets the causation id (1 to 128 bytes, no control characters).
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Result<EventData> {
        let id = id.into();
        validate_correlation_id("causation id", &id)?;
        self.causation_id = Some(id);
        Ok(self)
    }

    /// States the event's time, milliseconds since the Unix epoch: the envelope carries it
    /// instead of the engine's clock at the append ([`NewEvent::with_timestamp_ms`]). At most
    /// [`TIMESTAMP_MS_MAX`] (what PostgreSQL's `bigint` column holds).
    pub fn with_timestamp_ms(mut self, timestamp_ms: u64) -> Result<EventData> {
        if timestamp_ms > TIMESTAMP_MS_MAX {
            return Err(Error::InvalidId {
                what: "timestamp_ms",
                id: timestamp_ms.to_string(),
                reason: "is later than TIMESTAMP_MS_MAX (i64::MAX, what PostgreSQL's bigint holds)",
            });
        }
        self.timestamp_ms = Some(timestamp_ms);
        Ok(self)
    }

    /// Takes the stated time out (an envelope keeps it in its header, not in its data).
    pub(crate) fn take_timestamp_ms(&mut self) -> Option<u64> {
        self.timestamp_ms.take()
    }

    pub(crate) fn from_validated(
        event_type: String,
        schema_version: u16,
        codec: u8,
        correlation_id: Option<String>,
        causation_id: Option<String>,
        payload: Vec<u8>,
    ) -> EventData {
        EventData {
            event_type,
            schema_version,
            codec,
            correlation_id,
            causation_id,
            timestamp_ms: None,
            payload,
        }
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The payload's schema version.
    pub fn schema_version(&self) -> u16 {
        self.schema_version
    }

    /// The payload's codec id.
    pub fn codec(&self) -> u8 {
        self.codec
    }

    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The causation id, if any.
    pub fn causation_id(&self) -> Option<&str> {
        self.causation_id.as_deref()
    }

    /// The time the caller stated ([`EventData::with_timestamp_ms`]), if any.
    pub fn timestamp_ms(&self) -> Option<u64> {
        self.timestamp_ms
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The encoded length of the envelope this data makes in `stream`: lets the engine check
    /// a batch against the WAL's record limit before it takes a version.
    pub fn envelope_len(&self, stream: &StreamId) -> usize {
        ENVELOPE_HEADER_BYTES + stream.as_str().len() + self.variable_len()
    }

    /// Bytes after the header, except the stream id.
    pub(crate) fn variable_len(&self) -> usize {
        self.event_type.len()
            + self.correlation_id.as_ref().map_or(0, String::len)
            + self.causation_id.as_ref().map_or(0, String::len)
            + self.payload.len()
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventData")
            .field("event_type", &self.event_type)
            .field("schema_version", &self.schema_version)
            .field("codec", &self.codec)
            .field("correlation_id", &self.correlation_id)
            .field("causation_id", &self.causation_id)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// An event read from the log with its payload decoded into `E`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent<E> {
    /// The position in the whole log (the WAL's LSN of the record).
    pub position: u64,
    /// The stream.
    pub stream: StreamId,
    /// The 0-based index of the event in its stream.
    pub version: u64,
    /// The event type (shared by the events of a page, not copied per event).
    pub event_type: EventType,
    /// The schema version as recorded; `event` itself is at the current version.
    pub schema_version: u16,
    /// Milliseconds since the Unix epoch: the time the appender stated
    /// ([`NewEvent::with_timestamp_ms`]), else when the engine appended it.
    pub timestamp_ms: u64,
    /// The correlation id, if any.
    pub correlation_id: Option<String>,
    /// The causation id, if any.
    pub causation_id: Option<String>,
    /// The decoded event.
    pub event: E,
}

impl<E: Event> RecordedEvent<E> {
    /// Decodes the payload of a borrowed envelope (from [`EnvelopeRef::decode`]) into `E`,
    /// upcasting older schema versions: the read path's one copy of the strings, with no owned
    /// [`Envelope`] (and no copy of the payload bytes) in between.
    pub fn from_envelope_ref(position: u64, envelope: &EnvelopeRef<'_>) -> Result<Self> {
        if envelope.codec != E::CODEC {
            return Err(Error::UnsupportedCodec {
                codec: envelope.codec,
            });
        }
        let event = E::decode_payload(
            envelope.event_type,
            envelope.schema_version,
            envelope.payload,
        )?;
        Ok(RecordedEvent {
            position,
            // `EnvelopeRef::decode` validated it.
            stream: StreamId::from_validated(envelope.stream),
            version: envelope.stream_version,
            // `EnvelopeRef::decode` validated it.
            event_type: EventType::from_validated(envelope.event_type),
            schema_version: envelope.schema_version,
            timestamp_ms: envelope.timestamp_ms,
            correlation_id: envelope.correlation_id.map(str::to_owned),
            causation_id: envelope.causation_id.map(str::to_owned),
            event,
        })
    }

    /// [`RecordedEvent::from_envelope_ref`] into `self`, an event decoded before (a replay
    /// decodes each record into the event applied before it): the same codec check and
    /// fields, with the buffers of the stream id (when the stream is the same), the event type,
    /// the trace ids and the payload ([`Event::decode_payload_into`]) kept. On an error the
    /// position and header fields are unchanged, and the event is unchanged when the codec is
    /// another; a payload refused may have been decoded into it in part.
    pub fn decode_into(&mut self, position: u64, envelope: &EnvelopeRef<'_>) -> Result<()> {
        if envelope.codec != E::CODEC {
            return Err(Error::UnsupportedCodec {
                codec: envelope.codec,
            });
        }
        self.event.decode_payload_into(
            envelope.event_type,
            envelope.schema_version,
            envelope.payload,
        )?;
        if self.stream != *envelope.stream {
            // `EnvelopeRef::decode` validated it.
            self.stream = StreamId::from_validated(envelope.stream);
        }
        self.position = position;
        self.version = envelope.stream_version;
        if self.event_type != *envelope.event_type {
            // `EnvelopeRef::decode` validated it.
            self.event_type = EventType::from_validated(envelope.event_type);
        }
        self.schema_version = envelope.schema_version;
        self.timestamp_ms = envelope.timestamp_ms;
        // Most events carry no trace ids: nothing to call then.
        if self.correlation_id.is_some() || envelope.correlation_id.is_some() {
            reuse(&mut self.correlation_id, envelope.correlation_id);
        }
        if self.causation_id.is_some() || envelope.causation_id.is_some() {
            reuse(&mut self.causation_id, envelope.causation_id);
        }
        Ok(())
    }

    /// Decodes the envelope bytes of the record at `position` and its payload into `E`, the
    /// same as [`RawEvent::decode_record`] then [`RawEvent::decode`], without the owned
    /// envelope.
    pub fn decode_record(position: u64, bytes: &[u8]) -> Result<Self> {
        Self::from_envelope_ref(position, &EnvelopeRef::decode(bytes)?)
    }
}

/// Sets `slot` to `value`, in the buffer it holds when it holds one.
pub(crate) fn reuse(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(held), Some(value)) => value.clone_into(held),
        (_, value) => *slot = value.map(str::to_owned),
    }
}

/// Decodes a run of records (a page of a stream, a catch-up chunk) into typed events, checking
/// each distinct stream id and event type once rather than once per record.
///
/// Every record is checked as [`EnvelopeRef::decode`] checks it (through an
/// [`EnvelopeDecoder`]), and the events of a run share one stream id and one event type
/// (`Arc`s) rather than each allocating its own.
#[derive(Debug, Default)]
pub struct RecordDecoder {
    envelopes: EnvelopeDecoder,
    /// The stream id of the record before, shared by the events decoded since.
    stream: Option<StreamId>,
    /// The event type of the record before, shared likewise.
    event_type: Option<EventType>,
}

impl RecordDecoder {
    /// A decoder that has checked nothing yet.
    pub fn new() -> RecordDecoder {
        RecordDecoder::default()
    }

    /// Decodes the envelope bytes of the record at `position` and its payload into `E`, as
    /// [`RecordedEvent::decode_record`] does. The outer error is the envelope's (the record is
    /// corrupt); the inner one is `E`'s refusal of the payload (an unknown type, another codec).
    pub fn decode<E: Event>(
        &mut self,
        position: u64,
        bytes: &[u8],
    ) -> Result<Result<RecordedEvent<E>>> {
        Ok(self
            .decode_unless(position, bytes, None)?
            .unwrap_or_else(|| {
                Err(Error::Decode {
                    what: "envelope",
                    reason: "skipped with no stream to skip".to_owned(),
                })
            }))
    }

    /// As [`RecordDecoder::decode`], but `Ok(None)` when the record's stream is `skip_stream`
    /// (the envelope is checked, its payload is not decoded).
    pub fn decode_unless<E: Event>(
        &mut self,
        position: u64,
        bytes: &[u8],
        skip_stream: Option<&str>,
    ) -> Result<Option<Result<RecordedEvent<E>>>> {
        self.decode_if(position, bytes, |stream, _| {
            skip_stream.is_none_or(|skip| skip != stream)
        })
    }

    /// As [`RecordDecoder::decode`], but `Ok(None)` when `keep(stream, event_type)` is false:
    /// the envelope's header is checked and given to `keep` before the payload is looked at,
    /// so a record a reader filters out costs no payload decoding (what durable consumers
    /// filter by stream kind or event type with).
    pub fn decode_if<E: Event>(
        &mut self,
        position: u64,
        bytes: &[u8],
        keep: impl FnOnce(&str, &str) -> bool,
    ) -> Result<Option<Result<RecordedEvent<E>>>> {
        // The envelope's checks (each distinct stream id and event type once) are the
        // envelope decoder's; this keeps the shared ids the events carry.
        let envelope = self.envelopes.decode(bytes)?;
        let stream = match &self.stream {
            Some(stream) if *stream == *envelope.stream => stream,
            // `EnvelopeDecoder::decode` validated it.
            _ => self
                .stream
                .insert(StreamId::from_validated(envelope.stream)),
        };
        let event_type = match &self.event_type {
            Some(event_type) if *event_type == *envelope.event_type => event_type,
            // `EnvelopeDecoder::decode` validated it.
            _ => self
                .event_type
                .insert(EventType::from_validated(envelope.event_type)),
        };
        if !keep(stream.as_str(), event_type) {
            return Ok(None);
        }
        if envelope.codec != E::CODEC {
            return Ok(Some(Err(Error::UnsupportedCodec {
                codec: envelope.codec,
            })));
        }
        let event = match E::decode_payload(event_type, envelope.schema_version, envelope.payload) {
            Ok(event) => event,
            Err(error) => return Ok(Some(Err(error))),
        };
        Ok(Some(Ok(RecordedEvent {
            position,
            stream: stream.clone(),
            version: envelope.stream_version,
            event_type: event_type.clone(),
            schema_version: envelope.schema_version,
            timestamp_ms: envelope.timestamp_ms,
            correlation_id: envelope.correlation_id.map(str::to_owned),
            causation_id: envelope.causation_id.map(str::to_owned),
            event,
        })))
    }
}

/// An event read from the log, payload not decoded: what tools that do not know the event
/// types (`logbook dump`) and the engine's own indexes work with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The position in the whole log.
    pub position: u64,
    /// The decoded envelope.
    pub envelope: Envelope,
}

impl RawEvent {
    /// Pairs an envelope with its position.
    pub fn new(position: u64, envelope: Envelope) -> RawEvent {
        RawEvent { position, envelope }
    }

    /// Decodes the envelope bytes of the record at `position`.
    pub fn decode_record(position: u64, bytes: &[u8]) -> Result<RawEvent> {
        Ok(RawEvent {
            position,
            envelope: Envelope::decode(bytes)?,
        })
    }

    /// Decodes the payload into `E`, upcasting older schema versions.
    pub fn decode<E: Event>(&self) -> Result<RecordedEvent<E>> {
        let envelope = &self.envelope;
        if envelope.codec() != E::CODEC {
            return Err(Error::UnsupportedCodec {
                codec: envelope.codec(),
            });
        }
        let event = E::decode_payload(
            envelope.event_type(),
            envelope.schema_version(),
            envelope.payload(),
        )?;
        Ok(RecordedEvent {
            position: self.position,
            stream: envelope.stream().clone(),
            version: envelope.stream_version(),
            // An `Envelope` holds only a validated type.
            event_type: EventType::from_validated(envelope.event_type()),
            schema_version: envelope.schema_version(),
            timestamp_ms: envelope.timestamp_ms(),
            correlation_id: envelope.correlation_id().map(str::to_owned),
            causation_id: envelope.causation_id().map(str::to_owned),
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::codec;

    /// A service's own event enum, outside the built-in model.
    #[derive(Debug, Clone, PartialEq)]
    enum Shop {
        Ordered { sku: String, quantity: u32 },
        Shipped,
    }

    #[derive(Serialize, Deserialize)]
    struct Ordered {
        sku: String,
        quantity: u32,
    }

    impl Event for Shop {
        fn event_type(&self) -> &'static str {
            match self {
                Shop::Ordered { .. } => "shop.ordered",
                Shop::Shipped => "shop.shipped",
            }
        }

        fn schema_version(&self) -> u16 {
            1
        }

        fn encode_payload(&self) -> Result<Vec<u8>> {
            match self {
                Shop::Ordered { sku, quantity } => codec::encode(&Ordered {
                    sku: sku.clone(),
                    quantity: *quantity,
                }),
                Shop::Shipped => Ok(Vec::new()),
            }
        }

        fn decode_payload(event_type: &str, schema_version: u16, payload: &[u8]) -> Result<Self> {
            match (event_type, schema_version) {
                ("shop.ordered", 1) => {
                    let Ordered { sku, quantity } = codec::decode(payload, PAYLOAD_BYTES_MAX)?;
                    Ok(Shop::Ordered { sku, quantity })
                }
                ("shop.shipped", 1) if payload.is_empty() => Ok(Shop::Shipped),
                _ => Err(Error::UnknownEventType {
                    event_type: event_type.to_owned(),
                    schema_version: Some(schema_version),
                }),
            }
        }
    }

    #[test]
    fn a_service_event_goes_through_the_envelope() {
        let new_event = NewEvent::new(Shop::Ordered {
            sku: "tea".into(),
            quantity: 2,
        })
        .with_correlation_id("req-1")
        .with_causation_id("cmd-9");
        let data = new_event.to_data().expect("data");
        let stream = StreamId::new("orders/7").expect("stream");
        assert_eq!(
            data.envelope_len(&stream),
            Envelope::new(stream.clone(), 3, 9, data.clone())
                .encode()
                .len()
        );
        let bytes = Envelope::new(stream.clone(), 3, 1_700_000_000_000, data).encode();
        let raw = RawEvent::decode_record(42, &bytes).expect("envelope");
        let recorded = raw.decode::<Shop>().expect("payload");
        assert_eq!(recorded.position, 42);
        assert_eq!(recorded.stream, stream);
        assert_eq!(recorded.version, 3);
        assert_eq!(recorded.event_type, "shop.ordered");
        assert_eq!(recorded.schema_version, 1);
        assert_eq!(recorded.timestamp_ms, 1_700_000_000_000);
        assert_eq!(recorded.correlation_id.as_deref(), Some("req-1"));
        assert_eq!(recorded.causation_id.as_deref(), Some("cmd-9"));
        assert_eq!(recorded.event, new_event.event);
    }

    #[test]
    fn bad_trace_ids_and_codecs_are_refused() {
        let long = "x".repeat(129);
        let error = NewEvent::new(Shop::Shipped)
            .with_correlation_id(long)
            .to_data();
        assert!(
            matches!(error, Err(Error::LimitExceeded { limit: 128, .. })),
            "{error:?}"
        );
        let error = NewEvent::new(Shop::Shipped).with_causation_id("").to_data();
        assert!(matches!(error, Err(Error::InvalidId { .. })), "{error:?}");
        let error = NewEvent::new(Shop::Shipped)
            .with_causation_id("a\tb")
            .to_data();
        assert!(matches!(error, Err(Error::InvalidId { .. })), "{error:?}");
        let data = EventData::new("shop.shipped", 1, Vec::new()).expect("data");
        assert!(matches!(
            data.clone().with_codec(0),
            Err(Error::UnsupportedCodec { codec: 0 })
        ));
        let foreign = data.with_codec(200).expect("codec");
        let envelope = Envelope::new(StreamId::new("s").expect("stream"), 0, 0, foreign);
        let error = RawEvent::new(0, envelope).decode::<Shop>();
        assert!(
            matches!(error, Err(Error::UnsupportedCodec { codec: 200 })),
            "{error:?}"
        );
    }

    /// A stated time is the envelope's, kept in its header (the data read back states none,
    /// so the decoded envelope equals the built one); without one the envelope takes the
    /// engine's time; a time past `TIMESTAMP_MS_MAX` is refused.
    #[test]
    fn a_stated_time_is_the_envelopes() {
        let stream = StreamId::new("orders/7").expect("stream");
        let stated = NewEvent::new(Shop::Shipped)
            .with_timestamp_ms(1_600_000_000_000)
            .to_data()
            .expect("data");
        assert_eq!(stated.timestamp_ms(), Some(1_600_000_000_000));
        let envelope = Envelope::new(stream.clone(), 0, 1_700_000_000_000, stated);
        assert_eq!(envelope.timestamp_ms(), 1_600_000_000_000);
        assert_eq!(envelope.data().timestamp_ms(), None);
        let decoded = Envelope::decode(&envelope.encode()).expect("decode");
        assert_eq!(decoded, envelope);
        let unstated = NewEvent::new(Shop::Shipped).to_data().expect("data");
        let envelope = Envelope::new(stream, 0, 1_700_000_000_000, unstated);
        assert_eq!(envelope.timestamp_ms(), 1_700_000_000_000);
        assert!(
            NewEvent::new(Shop::Shipped)
                .with_timestamp_ms(TIMESTAMP_MS_MAX)
                .to_data()
                .is_ok()
        );
        let error = NewEvent::new(Shop::Shipped)
            .with_timestamp_ms(TIMESTAMP_MS_MAX + 1)
            .to_data();
        assert!(
            matches!(
                error,
                Err(Error::InvalidId {
                    what: "timestamp_ms",
                    ..
                })
            ),
            "{error:?}"
        );
    }

    /// Decoding into an event decoded before gives what a fresh decode gives (other stream,
    /// type and trace ids included), and a record of another codec leaves the event as it was.
    #[test]
    fn decode_into_gives_what_a_fresh_decode_gives() {
        let encode = |stream: &str, version: u64, event: NewEvent<Shop>| {
            let data = event.to_data().expect("data");
            Envelope::new(StreamId::new(stream).expect("stream"), version, 5, data).encode()
        };
        let ordered = NewEvent::new(Shop::Ordered {
            sku: "tea".into(),
            quantity: 2,
        })
        .with_correlation_id("req-1");
        let shipped = NewEvent::new(Shop::Shipped).with_causation_id("cmd-9");
        let first = encode("orders/7", 3, ordered);
        let second = encode("orders/8", 0, shipped);
        let mut slot =
            RecordedEvent::<Shop>::decode_record(1, &first).expect("the first record decodes");
        let envelope = EnvelopeRef::decode(&second).expect("envelope");
        slot.decode_into(2, &envelope)
            .expect("decodes into the slot");
        let fresh = RecordedEvent::<Shop>::decode_record(2, &second).expect("decodes");
        assert_eq!(slot, fresh);
        assert_eq!(slot.correlation_id, None);
        assert_eq!(slot.causation_id.as_deref(), Some("cmd-9"));
        // Back to the first record, in the same slot: the same again.
        let envelope = EnvelopeRef::decode(&first).expect("envelope");
        slot.decode_into(1, &envelope)
            .expect("decodes into the slot");
        assert_eq!(
            slot,
            RecordedEvent::<Shop>::decode_record(1, &first).expect("decodes")
        );
        // Another codec is refused, and the slot keeps the event it held.
        let foreign = EventData::new("shop.shipped", 1, Vec::new())
            .expect("data")
            .with_codec(200)
            .expect("codec");
        let foreign = Envelope::new(StreamId::new("s").expect("stream"), 0, 0, foreign).encode();
        let before = slot.clone();
        let envelope = EnvelopeRef::decode(&foreign).expect("envelope");
        let error = slot.decode_into(9, &envelope);
        assert!(
            matches!(error, Err(Error::UnsupportedCodec { codec: 200 })),
            "{error:?}"
        );
        assert_eq!(slot, before);
    }

    #[test]
    fn event_data_limits() {
        assert!(matches!(
            EventData::new("Bad", 1, Vec::new()),
            Err(Error::InvalidEventType { .. })
        ));
        let error = EventData::new("a.b", 1, vec![0; PAYLOAD_BYTES_MAX + 1]);
        assert!(matches!(
            error,
            Err(Error::LimitExceeded {
                what: "payload",
                ..
            })
        ));
        assert!(EventData::new("a.b", 1, vec![0; PAYLOAD_BYTES_MAX]).is_ok());
    }

    fn shop_record(stream: &str, version: u64, event: Shop, correlation: Option<&str>) -> Vec<u8> {
        let mut new_event = NewEvent::new(event);
        if let Some(id) = correlation {
            new_event = new_event.with_correlation_id(id);
        }
        let data = new_event.to_data().expect("data");
        Envelope::new(StreamId::new(stream).expect("stream"), version, 7, data).encode()
    }

    /// A run of records decoded by one `RecordDecoder` (stream ids and event types repeating,
    /// changing, and the skipped stream in between) is what the owned path decodes.
    #[test]
    fn the_record_decoder_decodes_as_the_owned_path_does() {
        let ordered = || Shop::Ordered {
            sku: "tea".into(),
            quantity: 2,
        };
        let records = [
            shop_record("orders/1", 0, ordered(), None),
            shop_record("orders/1", 1, Shop::Shipped, Some("req")),
            shop_record("$logbook", 0, Shop::Shipped, None),
            shop_record("orders/1", 2, ordered(), None),
            shop_record("orders/2", 0, ordered(), None),
            shop_record("orders/2", 1, ordered(), None),
        ];
        let mut decoder = RecordDecoder::new();
        for (position, bytes) in (1u64..).zip(&records) {
            let owned = RawEvent::decode_record(position, bytes).expect("envelope");
            let decoded = decoder
                .decode_unless::<Shop>(position, bytes, Some("$logbook"))
                .expect("envelope");
            if owned.envelope.stream().as_str() == "$logbook" {
                assert!(decoded.is_none());
                continue;
            }
            let expected = owned.decode::<Shop>().expect("payload");
            assert_eq!(decoded.expect("not skipped").expect("payload"), expected);
        }
        // An unknown codec is the payload's refusal (inner), not a corrupt envelope (outer).
        let foreign = EventData::new("shop.shipped", 1, Vec::new())
            .and_then(|data| data.with_codec(200))
            .expect("data");
        let bytes =
            Envelope::new(StreamId::new("orders/1").expect("stream"), 3, 0, foreign).encode();
        let decoded = decoder.decode::<Shop>(9, &bytes).expect("envelope");
        assert!(matches!(
            decoded,
            Err(Error::UnsupportedCodec { codec: 200 })
        ));
    }

    /// Checking each distinct text once checks no less: after a valid record has warmed the
    /// decoder, every one-byte change of another record is refused (or accepted) exactly as
    /// `EnvelopeRef::decode` refuses (or accepts) it, and nothing panics.
    #[test]
    fn the_record_decoder_refuses_what_the_envelope_decoder_refuses() {
        let warm = shop_record("orders/1", 0, Shop::Shipped, None);
        let record = shop_record("orders/1", 1, Shop::Shipped, Some("req-1"));
        let replacements = [0u8, 0x01, b'A', b'/', b'.', 0x7f, 0xC3, 0xFF];
        for index in 0..record.len() {
            for &byte in &replacements {
                let mut changed = record.clone();
                changed[index] = byte;
                let mut decoder = RecordDecoder::new();
                decoder
                    .decode::<Shop>(1, &warm)
                    .expect("warm")
                    .expect("payload");
                let mine = decoder.decode_unless::<Shop>(2, &changed, None);
                let envelope = EnvelopeRef::decode(&changed);
                assert_eq!(
                    mine.is_err(),
                    envelope.is_err(),
                    "byte {index} = {byte:#04x}: {mine:?} / {envelope:?}"
                );
            }
        }
        for len in 0..record.len() {
            let mut decoder = RecordDecoder::new();
            decoder
                .decode::<Shop>(1, &warm)
                .expect("warm")
                .expect("payload");
            assert!(decoder.decode::<Shop>(2, &record[..len]).is_err());
        }
    }
}
