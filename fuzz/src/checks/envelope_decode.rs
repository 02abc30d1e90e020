//! Target `envelope_decode`: the envelope decoders and the built-in event payload decoder of
//! `logbook-projection`, on arbitrary bytes. (Projection snapshots get their own target when
//! snapshot decoding exists.)
//!
//! Input: one control byte. Even: the rest is an envelope, decoded with `Envelope::decode` and
//! `EnvelopeRef::decode`, then as a `BuiltinEvent`. Odd: the rest is `[type index, schema
//! version (2 bytes LE), payload...]` for `BuiltinEvent::decode_payload`, with the event type
//! taken from the built-in list and the schema version kept small (0 to 3) unless bit 1 is set.
//!
//! Properties: nothing panics; the two envelope decoders agree; a decoded envelope re-encodes to
//! exactly its bytes; a decoded event is valid, its payload encodes, and that payload and its
//! JSON both decode back to the same event.

use logbook_projection::{BuiltinEvent, Envelope, EnvelopeRef, Event, RawEvent};

/// The longest input worth decoding (envelope limits are checked against the bytes present, so
/// a bigger one only costs time).
pub const INPUT_BYTES_MAX: usize = 4096;

/// Runs every check on one input; panics only on a bug.
pub fn check(data: &[u8]) {
    if data.len() > INPUT_BYTES_MAX {
        return;
    }
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control & 1 == 0 {
        check_envelope(rest);
    } else {
        check_payload(control, rest);
    }
}

fn check_envelope(bytes: &[u8]) {
    let view = EnvelopeRef::decode(bytes);
    let owned = Envelope::decode(bytes);
    let envelope = match (view, owned) {
        (Ok(view), Ok(envelope)) => {
            assert_eq!(view.to_envelope(), envelope, "the two decoders disagree");
            envelope
        }
        (Err(view_error), Err(error)) => {
            assert_eq!(view_error, error, "the two decoders fail differently");
            return;
        }
        (view, owned) => panic!("the two decoders disagree: {view:?} vs {owned:?}"),
    };
    assert_eq!(envelope.encoded_len(), bytes.len());
    assert!(
        envelope.encode() == bytes,
        "a decoded envelope does not re-encode to its bytes"
    );
    let raw = RawEvent::new(1, envelope.clone());
    if let Ok(recorded) = raw.decode::<BuiltinEvent>() {
        assert_eq!(recorded.position, 1);
        assert_eq!(&recorded.stream, envelope.stream());
        assert_eq!(recorded.version, envelope.stream_version());
        assert_eq!(recorded.event_type, envelope.event_type());
        assert_eq!(recorded.schema_version, envelope.schema_version());
        assert_eq!(
            recorded.correlation_id.as_deref(),
            envelope.correlation_id()
        );
        assert_eq!(recorded.causation_id.as_deref(), envelope.causation_id());
        check_event(&recorded.event, envelope.event_type());
    }
}

fn check_payload(control: u8, bytes: &[u8]) {
    let Some((&[index, low, high], payload)) = bytes.split_first_chunk::<3>() else {
        return;
    };
    let types = BuiltinEvent::EVENT_TYPES;
    let Some(&event_type) = types.get(usize::from(index) % types.len()) else {
        return;
    };
    let schema_version = if control & 0b10 == 0 {
        u16::from(low % 4)
    } else {
        u16::from_le_bytes([low, high])
    };
    if let Ok(event) = BuiltinEvent::decode_payload(event_type, schema_version, payload) {
        check_event(&event, event_type);
    }
}

/// A decoded event is valid and survives payload and JSON round trips unchanged.
fn check_event(event: &BuiltinEvent, event_type: &str) {
    assert_eq!(event.event_type(), event_type);
    assert_eq!(
        BuiltinEvent::current_schema_version(event_type),
        Some(event.schema_version())
    );
    event
        .validate()
        .unwrap_or_else(|error| panic!("a decoded {event_type} is invalid: {error}"));
    let payload = event
        .encode_payload()
        .unwrap_or_else(|error| panic!("a decoded {event_type} does not encode: {error}"));
    let again = BuiltinEvent::decode_payload(event_type, event.schema_version(), &payload)
        .unwrap_or_else(|error| panic!("a re-encoded {event_type} does not decode: {error}"));
    assert_eq!(&again, event, "payload round trip changed the event");
    let from_json = BuiltinEvent::from_json(event_type, event.to_json())
        .unwrap_or_else(|error| panic!("the JSON of a decoded {event_type}: {error}"));
    assert_eq!(&from_json, event, "JSON round trip changed the event");
}
