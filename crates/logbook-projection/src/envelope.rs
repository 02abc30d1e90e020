//! The envelope: the bytes of one WAL record.
//!
//! Owns: the envelope byte layout (see `FORMAT-ENVELOPE.md` beside `Cargo.toml`), its limits, and
//! the checks that make an [`Envelope`] valid by construction; [`EnvelopeDecoder`], which checks
//! a run of envelopes' repeated stream ids and event types once.
//! Never: decodes the payload (the header is readable without knowing the payload's Rust type),
//! panics on any input, indexes or unwraps unchecked, or allocates more than the input length
//! while decoding: every length is checked against the bytes actually present before any copy.
#![deny(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt;

use crate::error::{Error, Result, escape_bytes_lossy, escape_lossy};
use crate::event::EventData;
use crate::stream::{self, STREAM_ID_BYTES_MAX, StreamId};

/// The first byte of every envelope.
pub const ENVELOPE_MAGIC: u8 = 0xEB;
/// The envelope layout version this code writes and reads.
pub const ENVELOPE_FORMAT_VERSION: u8 = 1;
/// Bytes of the fixed little-endian prefix, before the variable fields.
pub const ENVELOPE_HEADER_BYTES: usize = 32;
/// The longest event type name, in bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 128;
/// The longest correlation id, and the longest causation id, in bytes.
pub const CORRELATION_ID_BYTES_MAX: usize = 128;
/// The largest payload: 16 MiB less 4 KiB, so that a whole envelope stays under 16 MiB.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024 - 4 * 1024;
/// The latest time an envelope may carry, in milliseconds since the Unix epoch: `i64::MAX`,
/// what PostgreSQL's `bigint` column holds (the engine's clock never gets there; a time stated
/// with [`crate::NewEvent::with_timestamp_ms`] is checked against it).
pub const TIMESTAMP_MS_MAX: u64 = i64::MAX as u64;
/// The largest encoded envelope: the header, every variable field at its limit, the payload.
pub const ENVELOPE_BYTES_MAX: usize = ENVELOPE_HEADER_BYTES
    + STREAM_ID_BYTES_MAX
    + EVENT_TYPE_BYTES_MAX
    + 2 * CORRELATION_ID_BYTES_MAX
    + PAYLOAD_BYTES_MAX;

/// One event as stored in one WAL record: a header and payload bytes of any type.
///
/// Built valid from a [`StreamId`] and an [`EventData`], or decoded with [`Envelope::decode`].
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    stream: StreamId,
    stream_version: u64,
    timestamp_ms: u64,
    data: EventData,
}

impl Envelope {
    /// Places `data` at `stream_version` (0-based) of `stream`, recorded at the time `data`
    /// states ([`EventData::with_timestamp_ms`]), else at `now_ms` (the engine's clock).
    pub fn new(stream: StreamId, stream_version: u64, now_ms: u64, mut data: EventData) -> Self {
        let timestamp_ms = data.take_timestamp_ms().unwrap_or(now_ms);
        Envelope {
            stream,
            stream_version,
            timestamp_ms,
            data,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The 0-based index of the event in its stream.
    pub fn stream_version(&self) -> u64 {
        self.stream_version
    }

    /// Milliseconds since the Unix epoch: the time the appender stated, else the engine's
    /// clock at the append.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The event type, e.g. `room.message_posted`.
    pub fn event_type(&self) -> &str {
        self.data.event_type()
    }

    /// The schema version the payload was written with.
    pub fn schema_version(&self) -> u16 {
        self.data.schema_version()
    }

    /// The id of the codec that wrote the payload.
    pub fn codec(&self) -> u8 {
        self.data.codec()
    }

    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.data.correlation_id()
    }

    /// The causation id, if any.
    pub fn causation_id(&self) -> Option<&str> {
        self.data.causation_id()
    }

    /// The payload bytes, undecoded.
    pub fn payload(&self) -> &[u8] {
        self.data.payload()
    }

    /// The event data (type, versions, ids, payload) without the stream placement.
    pub fn data(&self) -> &EventData {
        &self.data
    }

    /// Splits into stream, stream version, timestamp and event data.
    pub fn into_parts(self) -> (StreamId, u64, u64, EventData) {
        (
            self.stream,
            self.stream_version,
            self.timestamp_ms,
            self.data,
        )
    }

    /// The exact length of [`Envelope::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        ENVELOPE_HEADER_BYTES + self.stream.as_str().len() + self.data.variable_len()
    }

    /// Encodes the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded envelope to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let data = &self.data;
        let stream = self.stream.as_str();
        let correlation = data.correlation_id().unwrap_or_default();
        let causation = data.causation_id().unwrap_or_default();
        // Every length was checked against its limit when the parts were built; a failure here
        // is a bug in this crate, not bad input.
        let stream_len = u16::try_from(stream.len()).ok();
        let event_type_len = u8::try_from(data.event_type().len()).ok();
        let correlation_len = u8::try_from(correlation.len()).ok();
        let causation_len = u8::try_from(causation.len()).ok();
        let payload_len = u32::try_from(data.payload().len()).ok();
        let (
            Some(stream_len),
            Some(event_type_len),
            Some(correlation_len),
            Some(causation_len),
            Some(payload_len),
        ) = (
            stream_len,
            event_type_len,
            correlation_len,
            causation_len,
            payload_len,
        )
        else {
            unreachable!("envelope parts are validated at construction");
        };
        let start = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(&[ENVELOPE_MAGIC, ENVELOPE_FORMAT_VERSION, data.codec(), 0]);
        out.extend_from_slice(&self.stream_version.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&data.schema_version().to_le_bytes());
        out.extend_from_slice(&stream_len.to_le_bytes());
        out.extend_from_slice(&[event_type_len, correlation_len, causation_len, 0]);
        out.extend_from_slice(&payload_len.to_le_bytes());
        debug_assert_eq!(out.len() - start, ENVELOPE_HEADER_BYTES);
        out.extend_from_slice(stream.as_bytes());
        out.extend_from_slice(data.event_type().as_bytes());
        out.extend_from_slice(correlation.as_bytes());
        out.extend_from_slice(causation.as_bytes());
        out.extend_from_slice(data.payload());
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// Decodes and validates an envelope that fills `bytes` exactly, copying it.
    pub fn decode(bytes: &[u8]) -> Result<Envelope> {
        EnvelopeRef::decode(bytes).map(|view| view.to_envelope())
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("stream", &self.stream.as_str())
            .field("stream_version", &self.stream_version)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("data", &self.data)
            .finish()
    }
}

/// A validated envelope borrowed from the bytes it was decoded from: no copy at all.
///
/// Recovery and `logbook dump` read headers this way without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvelopeRef<'a> {
    /// A valid stream id.
    pub stream: &'a str,
    /// The 0-based index of the event in its stream.
    pub stream_version: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// A valid event type.
    pub event_type: &'a str,
    /// The payload's schema version.
    pub schema_version: u16,
    /// The payload's codec id (never 0).
    pub codec: u8,
    /// The correlation id, if any.
    pub correlation_id: Option<&'a str>,
    /// The causation id, if any.
    pub causation_id: Option<&'a str>,
    /// The payload bytes, undecoded.
    pub payload: &'a [u8],
}

impl<'a> EnvelopeRef<'a> {
    /// Decodes and validates an envelope that fills `bytes` exactly.
    pub fn decode(bytes: &'a [u8]) -> Result<EnvelopeRef<'a>> {
        let parts = EnvelopeParts::split(bytes)?;
        let stream = text("stream id", parts.stream)?;
        stream::validate(stream)?;
        let event_type = text("event type", parts.event_type)?;
        validate_event_type(event_type)?;
        let (correlation_id, causation_id) = parts.ids()?;
        Ok(EnvelopeRef {
            stream,
            stream_version: parts.stream_version,
            timestamp_ms: parts.timestamp_ms,
            event_type,
            schema_version: parts.schema_version,
            codec: parts.codec,
            correlation_id,
            causation_id,
            payload: parts.payload,
        })
    }

    /// The stream id, owned: one allocation, no second validation (`decode` validated it).
    pub fn stream_id(&self) -> StreamId {
        StreamId::from_validated(self.stream)
    }

    /// Copies into an owned [`Envelope`]; allocates exactly the variable fields' bytes.
    pub fn to_envelope(&self) -> Envelope {
        Envelope {
            stream: StreamId::from_validated(self.stream),
            stream_version: self.stream_version,
            timestamp_ms: self.timestamp_ms,
            data: EventData::from_validated(
                self.event_type.to_owned(),
                self.schema_version,
                self.codec,
                self.correlation_id.map(str::to_owned),
                self.causation_id.map(str::to_owned),
                self.payload.to_vec(),
            ),
        }
    }
}

/// Decodes a run of envelopes (a replay, a scan), checking each distinct stream id and event
/// type once rather than once per record.
///
/// Every envelope is checked as [`EnvelopeRef::decode`] checks it: a stream id or event type
/// equal, byte for byte, to the one this decoder checked last is that same valid text, and the
/// decoded envelope borrows it from the decoder; any other is checked in full and kept (in a
/// buffer reused from record to record, so a log of interleaved streams does not allocate per
/// record either). Correlation and causation ids are checked every time.
#[derive(Debug, Default)]
pub struct EnvelopeDecoder {
    /// The stream id checked last; empty (never a valid id) before the first.
    stream: String,
    /// The event type checked last; empty (never a valid type) before the first.
    event_type: String,
}

impl EnvelopeDecoder {
    /// A decoder that has checked nothing yet.
    pub fn new() -> EnvelopeDecoder {
        EnvelopeDecoder::default()
    }

    /// Decodes and validates an envelope that fills `bytes` exactly, as
    /// [`EnvelopeRef::decode`] does; its stream id and event type are borrowed from the
    /// decoder, the rest from `bytes`.
    pub fn decode<'a>(&'a mut self, bytes: &'a [u8]) -> Result<EnvelopeRef<'a>> {
        let parts = EnvelopeParts::split(bytes)?;
        if self.stream.is_empty() || !same_bytes(self.stream.as_bytes(), parts.stream) {
            let stream = text("stream id", parts.stream)?;
            stream::validate(stream)?;
            stream.clone_into(&mut self.stream);
        }
        if self.event_type.is_empty() || !same_bytes(self.event_type.as_bytes(), parts.event_type) {
            let event_type = text("event type", parts.event_type)?;
            validate_event_type(event_type)?;
            event_type.clone_into(&mut self.event_type);
        }
        debug_assert!(!self.stream.is_empty() && !self.event_type.is_empty());
        let (correlation_id, causation_id) = parts.ids()?;
        Ok(EnvelopeRef {
            stream: &self.stream,
            stream_version: parts.stream_version,
            timestamp_ms: parts.timestamp_ms,
            event_type: &self.event_type,
            schema_version: parts.schema_version,
            codec: parts.codec,
            correlation_id,
            causation_id,
            payload: parts.payload,
        })
    }
}

/// Whether `a` and `b` are the same text, compared in line a word at a time rather than through
/// a `memcmp` call: for the engine's per-record compares of short names (a replay's run of one
/// stream).
#[inline]
pub fn same_text(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// Whether `a` and `b` hold the same bytes: what a replay asks of every record's stream id and
/// event type (against the previous record's), compared here a word at a time in line rather
/// than through a `memcmp` call, which cost more than the compare on strings this short.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|word| <[u8; 8]>::try_from(word).ok())
            .map(u64::from_ne_bytes)
    };
    let len = a.len();
    if len < 8 {
        return a.iter().zip(b).fold(true, |same, (x, y)| same & (x == y));
    }
    let mut at = 0;
    while at + 8 <= len {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    // The last word overlaps the one before: it covers the bytes the loop left.
    at == len || word(a, len - 8) == word(b, len - 8)
}

/// An envelope whose header, limits and lengths are checked, its texts not yet: what
/// [`EnvelopeRef::decode`] and [`EnvelopeDecoder`] (which checks each distinct stream id and
/// event type of a run of records once) share.
struct EnvelopeParts<'a> {
    stream: &'a [u8],
    stream_version: u64,
    timestamp_ms: u64,
    event_type: &'a [u8],
    schema_version: u16,
    codec: u8,
    correlation_id: &'a [u8],
    causation_id: &'a [u8],
    payload: &'a [u8],
}

impl<'a> EnvelopeParts<'a> {
    /// Splits an envelope that fills `bytes` exactly into its fields.
    ///
    /// The fixed header is read as one 32-byte array (no bounds check or `Result` per field:
    /// this runs once per record on every read and on a replay's reading thread); input
    /// shorter than a header goes to [`EnvelopeParts::split_short`], which refuses it with the
    /// same words as a field-by-field read.
    #[inline(always)]
    fn split(bytes: &'a [u8]) -> Result<EnvelopeParts<'a>> {
        let Some((header, rest)) = bytes.split_first_chunk::<ENVELOPE_HEADER_BYTES>() else {
            return Self::split_short(bytes);
        };
        let [
            magic,
            format_version,
            codec,
            flags,
            v0,
            v1,
            v2,
            v3,
            v4,
            v5,
            v6,
            v7,
            t0,
            t1,
            t2,
            t3,
            t4,
            t5,
            t6,
            t7,
            schema0,
            schema1,
            stream0,
            stream1,
            event_type_len,
            correlation_len,
            causation_len,
            reserved,
            p0,
            p1,
            p2,
            p3,
        ] = *header;
        check_fixed(magic, format_version, codec, flags)?;
        if reserved != 0 {
            return Err(corrupt(format!("reserved byte 27 is {reserved}, not 0")));
        }
        let lens = Lens {
            stream: usize::from(u16::from_le_bytes([stream0, stream1])),
            event_type: event_type_len,
            correlation: correlation_len,
            causation: causation_len,
            payload: usize::try_from(u32::from_le_bytes([p0, p1, p2, p3])).unwrap_or(usize::MAX),
        };
        let mut reader = Reader { rest };
        let (stream, event_type, correlation_id, causation_id, payload) = lens.take(&mut reader)?;
        Ok(EnvelopeParts {
            stream,
            stream_version: u64::from_le_bytes([v0, v1, v2, v3, v4, v5, v6, v7]),
            timestamp_ms: u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
            event_type,
            schema_version: u16::from_le_bytes([schema0, schema1]),
            codec,
            correlation_id,
            causation_id,
            payload,
        })
    }

    /// [`EnvelopeParts::split`] of input shorter than a header: read field by field, it fails
    /// at the first field that is not there (or at a bad value before it), naming it.
    #[cold]
    #[inline(never)]
    fn split_short(bytes: &'a [u8]) -> Result<EnvelopeParts<'a>> {
        let mut reader = Reader { rest: bytes };
        let [magic, format_version, codec, flags] = reader.array::<4>()?;
        check_fixed(magic, format_version, codec, flags)?;
        reader.array::<8>()?;
        reader.array::<8>()?;
        reader.array::<2>()?;
        reader.array::<2>()?;
        // The reserved byte is checked as soon as it is read, before the payload's length (a
        // header cut after it is refused for it, as the field-by-field read refuses it).
        let [_, _, _, reserved] = reader.array::<4>()?;
        if reserved != 0 {
            return Err(corrupt(format!("reserved byte 27 is {reserved}, not 0")));
        }
        reader.array::<4>()?;
        // A whole header was there after all: the usual path.
        Self::split(bytes)
    }

    /// The correlation and causation ids, each checked (an empty one is absent).
    #[inline(always)]
    fn ids(&self) -> Result<(Option<&'a str>, Option<&'a str>)> {
        Ok((
            optional_id("correlation id", self.correlation_id)?,
            optional_id("causation id", self.causation_id)?,
        ))
    }
}

/// `bytes` as UTF-8; `what` names the field in the error.
fn text<'a>(what: &'static str, bytes: &'a [u8]) -> Result<&'a str> {
    crate::utf8::text(bytes).ok_or_else(|| Error::Decode {
        what,
        reason: format!("not UTF-8: {:?}", escape_bytes_lossy(bytes)),
    })
}

/// An empty id is absent (the usual case, checked in line); any other is checked out of line.
#[inline(always)]
fn optional_id<'a>(what: &'static str, bytes: &'a [u8]) -> Result<Option<&'a str>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    present_id(what, bytes).map(Some)
}

#[inline(never)]
fn present_id<'a>(what: &'static str, bytes: &'a [u8]) -> Result<&'a str> {
    let id = text(what, bytes)?;
    validate_correlation_id(what, id)?;
    Ok(id)
}

/// Checks an event type name: ASCII `[a-z0-9_.]`, 1 to [`EVENT_TYPE_BYTES_MAX`] bytes.
pub fn validate_event_type(event_type: &str) -> Result<()> {
    let refuse = |reason| {
        Err(Error::InvalidEventType {
            event_type: escape_lossy(event_type),
            reason,
        })
    };
    if event_type.is_empty() {
        return refuse("empty");
    }
    if event_type.len() > EVENT_TYPE_BYTES_MAX {
        return refuse("longer than 128 bytes");
    }
    let allowed =
        |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_.".contains(&byte);
    if !event_type.bytes().all(allowed) {
        return refuse("only a-z, 0-9, '_' and '.' are allowed");
    }
    Ok(())
}

/// Checks a correlation or causation id: 1 to [`CORRELATION_ID_BYTES_MAX`] bytes, no control
/// characters. `what` names the field in the error.
pub fn validate_correlation_id(what: &'static str, id: &str) -> Result<()> {
    check_limit(what, id.len(), CORRELATION_ID_BYTES_MAX)?;
    let refuse = |reason| {
        Err(Error::InvalidId {
            what,
            id: escape_lossy(id),
            reason,
        })
    };
    if id.is_empty() {
        return refuse("empty");
    }
    if crate::model::validate::has_control(id) {
        return refuse("contains a control character");
    }
    Ok(())
}

fn check_limit(what: &'static str, actual: usize, limit: usize) -> Result<()> {
    if actual > limit {
        return Err(Error::LimitExceeded {
            what,
            limit,
            actual,
        });
    }
    Ok(())
}

/// Checks the envelope's first four bytes: magic, format version, codec id and the reserved
/// flags byte.
#[inline(always)]
fn check_fixed(magic: u8, format_version: u8, codec: u8, flags: u8) -> Result<()> {
    if magic != ENVELOPE_MAGIC {
        return Err(corrupt(format!(
            "magic byte is {magic:#04x}, not {ENVELOPE_MAGIC:#04x}"
        )));
    }
    if format_version != ENVELOPE_FORMAT_VERSION {
        return Err(corrupt(format!("unknown format version {format_version}")));
    }
    if codec == 0 {
        return Err(corrupt("codec id 0".to_owned()));
    }
    if flags != 0 {
        return Err(corrupt(format!("reserved byte 3 is {flags}, not 0")));
    }
    Ok(())
}

/// The lengths of an envelope's variable fields, as its header announces them.
struct Lens {
    stream: usize,
    event_type: u8,
    correlation: u8,
    causation: u8,
    payload: usize,
}

impl Lens {
    /// Checks each length against its limit and their sum against what follows the header,
    /// then takes the fields (stream id, event type, correlation id, causation id, payload).
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn take<'a>(
        &self,
        reader: &mut Reader<'a>,
    ) -> Result<(&'a [u8], &'a [u8], &'a [u8], &'a [u8], &'a [u8])> {
        let (event_type, correlation, causation) = (
            usize::from(self.event_type),
            usize::from(self.correlation),
            usize::from(self.causation),
        );
        check_limit("stream id", self.stream, STREAM_ID_BYTES_MAX)?;
        check_limit("event type", event_type, EVENT_TYPE_BYTES_MAX)?;
        check_limit("correlation id", correlation, CORRELATION_ID_BYTES_MAX)?;
        check_limit("causation id", causation, CORRELATION_ID_BYTES_MAX)?;
        check_limit("payload", self.payload, PAYLOAD_BYTES_MAX)?;
        let variable_len = self.stream + event_type + correlation + causation + self.payload;
        if reader.rest.len() != variable_len {
            return Err(corrupt(format!(
                "header announces {variable_len} bytes after it, {} are present",
                reader.rest.len()
            )));
        }
        Ok((
            reader.take(self.stream)?,
            reader.take(event_type)?,
            reader.take(correlation)?,
            reader.take(causation)?,
            reader.take(self.payload)?,
        ))
    }
}

fn corrupt(reason: String) -> Error {
    Error::Decode {
        what: "envelope",
        reason,
    }
}

/// A cursor over the input that only hands out bytes that are present.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    // Inlined, the error built out of line: `split` reads eleven fields of every record this
    // way (the read path and the replay), and an out-of-line call returning a `Result` of the
    // crate's error per field was a fifth of a record's decoding.
    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let Some((head, tail)) = self.rest.split_at_checked(len) else {
            return Err(truncated_field(len, self.rest.len()));
        };
        self.rest = tail;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let Some((head, tail)) = self.rest.split_first_chunk::<N>() else {
            return Err(truncated_header(self.rest.len()));
        };
        self.rest = tail;
        Ok(*head)
    }
}

#[cold]
#[inline(never)]
fn truncated_field(len: usize, left: usize) -> Error {
    corrupt(format!("truncated: {len} bytes wanted, {left} left"))
}

#[cold]
#[inline(never)]
fn truncated_header(left: usize) -> Error {
    corrupt(format!("truncated header: {left} bytes left"))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
