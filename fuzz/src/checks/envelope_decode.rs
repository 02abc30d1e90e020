//! Target `envelope_decode`: the envelope decoders and the built-in event payload decoder of
//! `logbook-projection`, on arbitrary bytes. (Projection snapshots get their own target when
//! snapshot decoding exists.)
//!
//! Input: one control byte. Even: the rest is an envelope, decoded with `Envelope::decode` and
//! `EnvelopeRef::decode`, then as a `BuiltinEvent`. Odd: the rest is `[type index, schema
//! version (2 bytes LE), payload...]` for `BuiltinEvent::decode_payload`, with the event type
//! taken from the built-in list and the schema version kept small (0 to 3) unless bit 1 is set.
//!
//! Properties: nothing panics; the envelope decoders agree (`Envelope::decode`,
//! `EnvelopeRef::decode`, and an `EnvelopeDecoder` that checked another envelope of the same
//! stream id and event type just before, as a replay's does); a decoded envelope re-encodes to
//! exactly its bytes; a decoded event is
//! valid, its payload encodes, and that payload and its JSON both decode back to the same event;
//! decoding a payload into an event decoded before (`decode_payload_into`, as a replay does)
//! gives what a fresh decode gives, errors included.

use logbook_projection::model::RoomMessagePosted;
use logbook_projection::{
    BuiltinEvent, Envelope, EnvelopeDecoder, EnvelopeRef, Event, EventData, RawEvent,
};

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
    check_decoder(&envelope, bytes);
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

/// An `EnvelopeDecoder` decodes `bytes` as `EnvelopeRef::decode` does after it checked an
/// envelope with the same stream id and event type (so it skips their checks).
fn check_decoder(envelope: &Envelope, bytes: &[u8]) {
    let expected = EnvelopeRef::decode(bytes).expect("decoded above");
    let before = Envelope::new(
        envelope.stream().clone(),
        0,
        0,
        EventData::new(envelope.event_type(), 1, Vec::new()).expect("a decoded event type"),
    )
    .encode();
    let mut decoder = EnvelopeDecoder::new();
    decoder.decode(&before).expect("a valid envelope");
    assert_eq!(
        decoder.decode(bytes).expect("decodes after its stream"),
        expected,
        "a decoder that checked this stream and type before decodes differently"
    );
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
    let fresh = BuiltinEvent::decode_payload(event_type, schema_version, payload);
    // Into an event of the same type (decoded in place) and into one of another type.
    let held = [
        BuiltinEvent::from(RoomMessagePosted {
            message_id: "m1".into(),
            author: "ada".into(),
            body: "a body".into(),
        }),
        fresh.as_ref().ok().cloned().unwrap_or_else(|| {
            BuiltinEvent::from(RoomMessagePosted {
                message_id: "m2".into(),
                author: "bob".into(),
                body: String::new(),
            })
        }),
    ];
    for mut slot in held {
        let into = slot.decode_payload_into(event_type, schema_version, payload);
        match (&fresh, into) {
            (Ok(event), Ok(())) => assert_eq!(&slot, event, "decoded into differs"),
            (Err(error), Err(into)) => assert_eq!(error.to_string(), into.to_string()),
            (fresh, into) => panic!("decode_payload {fresh:?} vs decode_payload_into {into:?}"),
        }
    }
    if let Ok(event) = fresh {
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
