//! No event the engine cannot decode is ever acknowledged (issue 12 item 1). A service's event
//! enum written the way serde users write them, `#[serde(tag = "kind")]` or a field with
//! `#[serde(skip_serializing_if = "Option::is_none")]`, encodes fine with the bincode codec but
//! cannot be decoded back. Before, `append` returned `Ok` and every later read failed with
//! `Decode { reason: "Serde(AnyNotSupported)" }` or `UnexpectedEnd`; now `append` refuses such an
//! event with `EventError::Unreadable`, which names the serde feature at fault, and nothing of
//! the batch is written.

use std::collections::HashMap;

use logbook::serde::{Deserialize, Serialize};
use logbook::{
    Error, Event, EventError, EventResult, ExpectedVersion, Logbook, LogbookOptions, NewEvent,
    StreamId, codec,
};

/// The most bytes one payload of these tests may decode from.
const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// Implements `Event` with the bincode codec for a serde type: every variant one event type.
macro_rules! bincode_event {
    ($name:ident, $event_type:literal) => {
        impl Event for $name {
            fn event_type(&self) -> &'static str {
                $event_type
            }

            fn schema_version(&self) -> u16 {
                1
            }

            fn encode_payload(&self) -> EventResult<Vec<u8>> {
                codec::encode(self)
            }

            fn decode_payload(
                _event_type: &str,
                _schema_version: u16,
                payload: &[u8],
            ) -> EventResult<Self> {
                codec::decode(payload, PAYLOAD_BYTES_MAX)
            }
        }
    };
}

/// An internally tagged enum: decoding it needs serde's `deserialize_any`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde", tag = "kind")]
enum Tagged {
    Started { name: String },
    Stopped,
}
bincode_event!(Tagged, "tagged.event");

/// A field written only when it is `Some`: the `None` values lack a field decoding reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
struct Note {
    title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}
bincode_event!(Note, "note.written");

/// A plain enum: what the bincode codec reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
enum Plain {
    Started { name: String, tags: Vec<String> },
    Counted(u64),
    Stopped,
}
bincode_event!(Plain, "plain.event");

/// A map whose iteration order differs between two instances with the same entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
struct Scores {
    by_player: HashMap<String, u32>,
}
bincode_event!(Scores, "scores.recorded");

fn stream() -> StreamId {
    StreamId::new("things/1").expect("stream id")
}

fn note(detail: Option<&str>) -> NewEvent<Note> {
    NewEvent::new(Note {
        title: "t".into(),
        detail: detail.map(str::to_owned),
    })
}

/// The engine's error for an event its own type cannot read back, with its `feature` hint.
fn unreadable_feature(error: &Error) -> &'static str {
    match error {
        Error::Event(EventError::Unreadable { feature, .. }) => feature,
        other => panic!("expected EventError::Unreadable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tagged_enum_is_refused_at_append_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Logbook::<Tagged>::open(dir.path(), LogbookOptions::default())
        .await
        .expect("open");
    let events = vec![
        NewEvent::new(Tagged::Started { name: "a".into() }),
        NewEvent::new(Tagged::Stopped),
    ];
    let error = log
        .append(&stream(), ExpectedVersion::Any, events)
        .await
        .expect_err("an event no read could decode is refused");
    let feature = unreadable_feature(&error);
    assert!(feature.contains("#[serde(tag"), "{feature}");
    let message = error.to_string();
    assert!(message.contains("tagged.event"), "{message}");
    assert!(message.contains("AnyNotSupported"), "{message}");
    assert!(message.contains("deserialize_any"), "{message}");
    assert!(
        log.read_all(0, 100).await.expect("read").is_empty(),
        "nothing of the refused batch is written"
    );
    log.close().await.expect("close");

    let (log, _) = Logbook::<Tagged>::open(dir.path(), LogbookOptions::default())
        .await
        .expect("reopen");
    assert!(log.read_all(0, 100).await.expect("read").is_empty());
    assert_eq!(log.undecodable_events(), 0);
    log.close().await.expect("close");
}

#[tokio::test]
async fn skip_serializing_if_is_refused_per_value_not_per_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Logbook::<Note>::open(dir.path(), LogbookOptions::default())
        .await
        .expect("open");

    // The `None` value lacks a field: the whole batch is refused, the `Some` before it too.
    let error = log
        .append(
            &stream(),
            ExpectedVersion::NoStream,
            vec![note(Some("d")), note(None)],
        )
        .await
        .expect_err("None is written without the field decoding reads");
    let feature = unreadable_feature(&error);
    assert!(feature.contains("skip_serializing_if"), "{feature}");
    assert!(log.read_all(0, 100).await.expect("read").is_empty());

    // The same type with `Some` reads back, so a check cached per type could not decide.
    let written = log
        .append(&stream(), ExpectedVersion::NoStream, vec![note(Some("d"))])
        .await
        .expect("a Some value reads back");
    assert_eq!(written.first_version, 0);
    let error = log
        .append(&stream(), ExpectedVersion::Exact(0), vec![note(None)])
        .await
        .expect_err("a None value after a Some one is still refused");
    assert!(unreadable_feature(&error).contains("skip_serializing_if"));

    let read = log
        .read_all(0, 100)
        .await
        .expect("every acknowledged event reads");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event, note(Some("d")).event);
    log.close().await.expect("close");
}

#[tokio::test]
async fn plain_enums_and_hash_maps_are_appended_and_read_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Logbook::<Plain>::open(dir.path(), LogbookOptions::default())
        .await
        .expect("open");
    let events = vec![
        Plain::Started {
            name: "a".into(),
            tags: vec!["x".into(), String::new()],
        },
        Plain::Counted(u64::MAX),
        Plain::Stopped,
    ];
    log.append(
        &stream(),
        ExpectedVersion::NoStream,
        events.iter().cloned().map(NewEvent::new).collect(),
    )
    .await
    .expect("plain enums read back");
    let read: Vec<Plain> = log
        .read_all(0, 100)
        .await
        .expect("read")
        .into_iter()
        .map(|recorded| recorded.event)
        .collect();
    assert_eq!(read, events);
    log.close().await.expect("close");

    // A HashMap decodes into a map that iterates in another order, so re-encoding it gives
    // the same bytes in another order: that is not a different value, and is accepted.
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Logbook::<Scores>::open(dir.path(), LogbookOptions::default())
        .await
        .expect("open");
    let scores = Scores {
        by_player: (0..64)
            .map(|player| (format!("p{player}"), player))
            .collect(),
    };
    for _ in 0..8 {
        log.append(
            &stream(),
            ExpectedVersion::Any,
            vec![NewEvent::new(scores.clone())],
        )
        .await
        .expect("a HashMap field reads back");
    }
    let read = log.read_all(0, 100).await.expect("read");
    assert_eq!(read.len(), 8);
    assert!(read.iter().all(|recorded| recorded.event == scores));
    log.close().await.expect("close");
}
