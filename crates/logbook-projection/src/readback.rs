//! The read-back check: before an event is handed to the engine, its payload is decoded with
//! the event type's own `decode_payload` and the decoded value encoded again, so that no event a
//! read could not return is ever acknowledged.
//!
//! Owns: the rule "an appended payload decodes, as itself, with its own type's decoder", the
//! [`Error::Unreadable`] it raises, and the hint that names the serde feature at fault.
//! Never: does I/O, caches a verdict per event type (`skip_serializing_if` breaks only some
//! values of a type), or changes the bytes that are written.
//!
//! What the check proves: the payload decodes without error and without trailing bytes into a
//! value that encodes back to the same bytes, or to the same bytes in another order (a
//! `HashMap` or `HashSet` field iterates in a different order in every instance). What it cannot
//! prove without `PartialEq` on the user's type: that the decoded value equals the original
//! when both encode alike, which a field skipped on write can still cause in rare layouts.

use crate::codec::CODEC_BINCODE2;
use crate::error::{Error, Result};
use crate::event::Event;

/// The hint for a decoder that needs serde's `deserialize_any` (or `deserialize_identifier` or
/// `deserialize_ignored_any`): bincode writes no field names or type tags, so it has nothing
/// to look at.
pub const FEATURE_DESERIALIZE_ANY: &str = "serde's deserialize_any, which the bincode codec \
    does not support: #[serde(tag = \"...\")] (internally or adjacently tagged enums), \
    #[serde(untagged)], #[serde(flatten)], serde_json::Value or another self-describing type";

/// The hint for a payload that lacks bytes its decoder reads, or decodes into another value.
pub const FEATURE_SKIPPED_FIELD: &str = "a field written only sometimes: \
    #[serde(skip_serializing_if = \"...\")] or #[serde(skip_serializing)] writes fewer fields \
    than decoding reads (the bincode codec writes every field, in order, with no names)";

/// The hint when `decode_payload` refuses what `encode_payload` wrote for another reason.
pub const FEATURE_DECODER: &str = "decode_payload does not read what encode_payload writes \
    for this event type and schema version";

/// Bincode's error names that mean "this format cannot drive that `Deserialize`".
const SELF_DESCRIBING_ERRORS: [&str; 2] = ["AnyNotSupported", "IdentifierNotSupported"];

/// Bincode's error names that mean "the decoder read past the end of the payload".
const SHORT_PAYLOAD_ERRORS: [&str; 1] = ["UnexpectedEnd"];

/// Checks that `payload`, which `event.encode_payload()` just returned, reads back: decoded by
/// `E::decode_payload` at the event's type and schema version, then encoded again, it must give
/// the same bytes (in any order). Returns [`Error::Unreadable`] otherwise.
pub(crate) fn check_reads_back<E: Event>(event: &E, payload: &[u8]) -> Result<()> {
    let event_type = event.event_type();
    let schema_version = event.schema_version();
    let unreadable = |feature, cause| Error::Unreadable {
        event_type: event_type.to_owned(),
        schema_version,
        feature,
        cause,
    };
    let decoded = E::decode_payload(event_type, schema_version, payload)
        .map_err(|error| unreadable(decode_feature::<E>(&error), error.to_string()))?;
    let again = decoded.encode_payload().map_err(|error| {
        unreadable(
            FEATURE_DECODER,
            format!("the decoded value cannot be encoded again: {error}"),
        )
    })?;
    if again == payload || same_bytes_in_any_order(&again, payload) {
        return Ok(());
    }
    let feature = if E::CODEC == CODEC_BINCODE2 {
        FEATURE_SKIPPED_FIELD
    } else {
        FEATURE_DECODER
    };
    Err(unreadable(
        feature,
        format!(
            "the payload decodes into another value: {} bytes written, {} bytes when the \
             decoded value is encoded again",
            payload.len(),
            again.len()
        ),
    ))
}

/// Which serde feature most likely made `decode_payload` fail on bytes its own type wrote.
fn decode_feature<E: Event>(error: &Error) -> &'static str {
    let Error::Decode { reason, .. } = error else {
        return FEATURE_DECODER;
    };
    if E::CODEC != CODEC_BINCODE2 {
        return FEATURE_DECODER;
    }
    if SELF_DESCRIBING_ERRORS
        .iter()
        .any(|name| reason.contains(name))
    {
        FEATURE_DESERIALIZE_ANY
    } else if SHORT_PAYLOAD_ERRORS
        .iter()
        .any(|name| reason.contains(name))
        || reason.contains("trailing bytes")
    {
        FEATURE_SKIPPED_FIELD
    } else {
        FEATURE_DECODER
    }
}

/// True when `a` and `b` hold the same bytes, each as many times: what re-encoding a value with
/// a hash map or hash set field gives, since the entries come out in another order.
fn same_bytes_in_any_order(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut counts = [0i64; 256];
    for (&x, &y) in a.iter().zip(b) {
        counts[usize::from(x)] += 1;
        counts[usize::from(y)] -= 1;
    }
    counts.iter().all(|&count| count == 0)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::codec;
    use crate::envelope::PAYLOAD_BYTES_MAX;

    fn is_zero(value: &u8) -> bool {
        *value == 0
    }

    /// Two fields written only sometimes, laid out so that a `None` value decodes without error
    /// (into another value): only the re-encoding shows it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Shifty {
        #[serde(skip_serializing_if = "is_zero")]
        count: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<u8>,
        last: u8,
    }

    impl Event for Shifty {
        fn event_type(&self) -> &'static str {
            "shifty.event"
        }

        fn schema_version(&self) -> u16 {
            1
        }

        fn encode_payload(&self) -> Result<Vec<u8>> {
            codec::encode(self)
        }

        fn decode_payload(_: &str, _: u16, payload: &[u8]) -> Result<Self> {
            codec::decode(payload, PAYLOAD_BYTES_MAX)
        }
    }

    #[test]
    fn a_payload_that_decodes_into_another_value_is_refused() {
        let event = Shifty {
            count: 0,
            label: Some(0),
            last: 7,
        };
        let payload = event.encode_payload().expect("encode");
        // Written: label's tag 1, label 0, last 7; read: count 1, label None, last 7.
        let decoded = Shifty::decode_payload("shifty.event", 1, &payload).expect("decodes");
        assert_ne!(decoded, event);
        let error = check_reads_back(&event, &payload).expect_err("another value");
        assert!(
            matches!(
                &error,
                Error::Unreadable {
                    feature: FEATURE_SKIPPED_FIELD,
                    schema_version: 1,
                    ..
                }
            ),
            "{error}"
        );
        let every_field = Shifty {
            count: 3,
            label: Some(4),
            last: 5,
        };
        let payload = every_field.encode_payload().expect("encode");
        check_reads_back(&every_field, &payload).expect("every field written");
    }

    #[test]
    fn the_hint_follows_the_decode_error() {
        let decode = |reason: &str| Error::Decode {
            what: "value",
            reason: reason.to_owned(),
        };
        assert_eq!(
            decode_feature::<Shifty>(&decode("Serde(AnyNotSupported)")),
            FEATURE_DESERIALIZE_ANY
        );
        assert_eq!(
            decode_feature::<Shifty>(&decode("x v1: UnexpectedEnd { additional: 1 }")),
            FEATURE_SKIPPED_FIELD
        );
        assert_eq!(
            decode_feature::<Shifty>(&decode("2 trailing bytes after 3")),
            FEATURE_SKIPPED_FIELD
        );
        assert_eq!(
            decode_feature::<Shifty>(&Error::UnknownEventType {
                event_type: "x".into(),
                schema_version: Some(1)
            }),
            FEATURE_DECODER
        );
    }

    #[test]
    fn reordered_bytes_are_the_same_bytes() {
        assert!(same_bytes_in_any_order(&[1, 2, 2, 3], &[2, 3, 1, 2]));
        assert!(!same_bytes_in_any_order(&[1, 2, 2], &[1, 1, 2]));
        assert!(!same_bytes_in_any_order(&[1, 2], &[1, 2, 0]));
        assert!(same_bytes_in_any_order(&[], &[]));
    }
}
