//! The JSON bridge the CLI uses: an event type and a line of JSON data in, the same JSON out.

use logbook_projection::model::{RoomCreated, RoomMessagePosted};
use logbook_projection::{BuiltinEvent, Error, Event};

fn from_line(event_type: &str, line: &str) -> Result<BuiltinEvent, Error> {
    let data: serde_json::Value = serde_json::from_str(line).expect("the line is JSON");
    BuiltinEvent::from_json(event_type, data)
}

#[test]
fn room_created_with_only_a_name() {
    let event = from_line("room.created", r#"{"name":"Lobby"}"#).expect("valid");
    let expected = RoomCreated {
        name: "Lobby".into(),
        topic: None,
        created_by: None,
    };
    assert_eq!(event, BuiltinEvent::RoomCreated(expected));
    assert_eq!(event.event_type(), "room.created");
}

#[test]
fn room_message_posted() {
    let line = r#"{"message_id":"m1","author":"ada","body":"hello"}"#;
    let event = from_line("room.message_posted", line).expect("valid");
    let expected = RoomMessagePosted {
        message_id: "m1".into(),
        author: "ada".into(),
        body: "hello".into(),
    };
    assert_eq!(event, BuiltinEvent::RoomMessagePosted(expected));
    let line_value: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(event.to_json(), line_value);
}

#[test]
fn bad_lines_are_typed_errors() {
    let error = from_line("room.message_posted", r#"{"message_id":"m1"}"#).expect_err("author");
    assert!(matches!(error, Error::Json { .. }), "{error}");
    let error = from_line("room.created", r#"{"name":""}"#).expect_err("empty name");
    assert!(
        matches!(error, Error::InvalidField { field: "name", .. }),
        "{error}"
    );
    let error = from_line("room.renamed", r#"{"name":"x"}"#).expect_err("unknown type");
    assert!(matches!(error, Error::UnknownEventType { .. }), "{error}");
}
