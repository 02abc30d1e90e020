use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;

use super::job::JobProgressV1;
use super::*;
use crate::envelope::validate_event_type;
use crate::upcast::missing_steps;

fn samples() -> Vec<BuiltinEvent> {
    vec![
        RunStarted {
            kind: RunKind::WorkflowChild,
            agent_id: "coder".into(),
            parent_run_id: Some("r0".into()),
            parent_thread_id: None,
            prompt_ref: Some("prompts/1".into()),
            worker_thread_id: None,
            task_board_ref: None,
            task_card_ref: Some("card-9".into()),
            workflow_id: Some("w1".into()),
        }
        .into(),
        RunStatusChanged {
            status: RunStatus::AwaitingUser,
            reason: None,
        }
        .into(),
        RunEvent {
            sequence: 4,
            event_type: "tool_call".into(),
            payload: "{}".into(),
        }
        .into(),
        RunTelemetry {
            tokens_in: 10,
            tool_calls: [("grep".to_owned(), 2)].into(),
            ..RunTelemetry::default()
        }
        .into(),
        RunCheckpointed {
            reason: CheckpointReason::Paused,
            data: "state".into(),
        }
        .into(),
        RunCompleted::default().into(),
        RunFailed {
            error: "boom".into(),
        }
        .into(),
        RunCancelled::default().into(),
        WorkflowStarted {
            definition_id: "d".into(),
            parent_thread_id: None,
            input: String::new(),
            phases: vec!["plan".into(), "build".into()],
        }
        .into(),
        WorkflowPhaseStarted {
            phase: "plan".into(),
            child_run_ids: vec!["r1".into()],
        }
        .into(),
        WorkflowPhaseCompleted {
            phase: "plan".into(),
            child_run_ids: vec!["r1".into()],
            result_ref: Some("res".into()),
        }
        .into(),
        WorkflowPhaseFailed {
            phase: "build".into(),
            child_run_ids: vec![],
            error: "x".into(),
        }
        .into(),
        WorkflowCompleted::default().into(),
        WorkflowFailed { error: "x".into() }.into(),
        WorkflowCancelled::default().into(),
        RoomCreated {
            name: "Lobby".into(),
            topic: None,
            created_by: None,
        }
        .into(),
        RoomMemberJoined {
            member: "ada".into(),
        }
        .into(),
        RoomMemberLeft {
            member: "ada".into(),
        }
        .into(),
        RoomMessagePosted {
            message_id: "m1".into(),
            author: "ada".into(),
            body: "hi".into(),
        }
        .into(),
        RoomMessageEdited {
            message_id: "m1".into(),
            body: "hello".into(),
        }
        .into(),
        RoomMessageDeleted {
            message_id: "m1".into(),
        }
        .into(),
        RoomArchived::default().into(),
        JobQueued {
            kind: "train".into(),
            input: "{}".into(),
        }
        .into(),
        JobClaimed {
            worker: "w".into(),
            lease_expires_at_ms: 5,
        }
        .into(),
        JobHeartbeat {
            worker: "w".into(),
            lease_expires_at_ms: 9,
        }
        .into(),
        JobProgress {
            percent: Some(100),
            done: Some(3),
            total: Some(3),
            ..Default::default()
        }
        .into(),
        JobSucceeded::default().into(),
        JobFailed {
            error: "oom".into(),
            retryable: true,
        }
        .into(),
        JobCancelled::default().into(),
        JobLeaseExpired { worker: "w".into() }.into(),
    ]
}

#[test]
fn event_types_are_valid_unique_and_match_their_stream_kind() {
    let types = BuiltinEvent::EVENT_TYPES;
    assert_eq!(types.len(), 30);
    assert_eq!(types.iter().collect::<BTreeSet<_>>().len(), types.len());
    for event in samples() {
        let event_type = event.event_type();
        validate_event_type(event_type).unwrap();
        assert!(types.contains(&event_type));
        let family = event_type.split('.').next().unwrap();
        let prefix = event.stream_kind().prefix().unwrap();
        assert_eq!(format!("{family}/"), prefix, "{event_type}");
        assert_eq!(
            BuiltinEvent::current_schema_version(event_type),
            Some(event.schema_version())
        );
        assert!(missing_steps(BUILTIN_UPCASTERS, event_type, event.schema_version()).is_empty());
    }
    let sampled: BTreeSet<_> = samples().iter().map(|event| event.event_type()).collect();
    assert_eq!(sampled, types.iter().copied().collect());
    assert_eq!(BuiltinEvent::current_schema_version("nope"), None);
}

#[test]
fn every_sample_round_trips_through_payload_and_json() {
    for event in samples() {
        let bytes = event.encode_payload().unwrap();
        let decoded =
            BuiltinEvent::decode_payload(event.event_type(), event.schema_version(), &bytes)
                .unwrap();
        assert_eq!(decoded, event);
        let json = event.to_json();
        assert_eq!(
            BuiltinEvent::from_json(event.event_type(), json).unwrap(),
            event
        );
    }
}

#[test]
fn the_cli_json_lines_work() {
    let created = BuiltinEvent::from_json("room.created", json!({"name": "Lobby"})).unwrap();
    assert_eq!(
        created,
        BuiltinEvent::RoomCreated(RoomCreated {
            name: "Lobby".into(),
            topic: None,
            created_by: None
        })
    );
    let posted = BuiltinEvent::from_json(
        "room.message_posted",
        json!({"message_id": "m1", "author": "ada", "body": "hello"}),
    )
    .unwrap();
    assert_eq!(
        posted,
        BuiltinEvent::RoomMessagePosted(RoomMessagePosted {
            message_id: "m1".into(),
            author: "ada".into(),
            body: "hello".into(),
        })
    );
    assert_eq!(
        posted.to_json(),
        json!({"message_id": "m1", "author": "ada", "body": "hello"})
    );
    assert_eq!(
        created.to_json(),
        json!({"name": "Lobby", "topic": null, "created_by": null})
    );
}

#[test]
fn json_errors_are_typed() {
    let json_error = |event_type: &str, data| match BuiltinEvent::from_json(event_type, data) {
        Err(Error::Json { reason, .. }) => reason,
        other => panic!("expected a JSON error, got {other:?}"),
    };
    assert!(json_error("room.message_posted", json!({"message_id": "m1"})).contains("author"));
    assert!(json_error("room.created", json!({"name": "x", "nmae": "y"})).contains("nmae"));
    assert!(json_error("job.progress", json!({"percent": 300})).contains("300"));
    assert!(json_error("room.created", json!("Lobby")).contains("struct"));
    let error = BuiltinEvent::from_json("room.exploded", json!({})).unwrap_err();
    assert!(matches!(error, Error::UnknownEventType { .. }), "{error}");
    assert_eq!(
        BuiltinEvent::from_json("room.archived", serde_json::Value::Null).unwrap(),
        BuiltinEvent::RoomArchived(RoomArchived { reason: None })
    );
}

#[test]
fn value_rules_are_enforced() {
    let field = |event_type: &str, data| match BuiltinEvent::from_json(event_type, data) {
        Err(Error::InvalidField { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    assert_eq!(field("job.progress", json!({"percent": 101})), "percent");
    assert_eq!(
        field("job.progress", json!({"done": 4, "total": 3})),
        "done"
    );
    assert!(BuiltinEvent::from_json("job.progress", json!({"percent": 100})).is_ok());
    assert_eq!(field("room.created", json!({"name": ""})), "name");
    assert_eq!(
        field("room.member_joined", json!({"member": "a\u{0}"})),
        "member"
    );
    assert_eq!(
        field("run.status_changed", json!({"status": "completed"})),
        "status"
    );
    assert_eq!(
        field(
            "run.started",
            json!({"kind": "workflow_child", "agent_id": "a"})
        ),
        "workflow_id"
    );
    assert_eq!(
        field(
            "workflow.started",
            json!({"definition_id": "d", "phases": ["a", "a"]})
        ),
        { "phases" }
    );
    assert_eq!(field("run.failed", json!({"error": ""})), "error");
    // Validation also guards encode: a value built in Rust is checked before it is written.
    let bad = BuiltinEvent::from(JobProgress {
        percent: Some(200),
        ..Default::default()
    });
    assert!(matches!(
        bad.encode_payload(),
        Err(Error::InvalidField {
            field: "percent",
            ..
        })
    ));
}

#[test]
fn decode_refuses_values_that_break_the_rules() {
    // Bytes a buggy or hostile writer could produce: well-formed bincode, invalid value.
    let bytes = crate::codec::encode(&JobProgress {
        percent: Some(150),
        ..Default::default()
    })
    .unwrap();
    let error = BuiltinEvent::decode_payload("job.progress", 2, &bytes).unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidField {
                field: "percent",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn checkpoint_limit_is_enforced_on_encode_json_and_decode() {
    let big = "x".repeat(CHECKPOINT_BYTES_MAX + 1);
    let payload = RunCheckpointed {
        reason: CheckpointReason::Periodic,
        data: big.clone(),
    };
    let event = BuiltinEvent::from(payload.clone());
    let limit = |result: Result<_>| {
        matches!(
            result,
            Err(Error::LimitExceeded {
                what: "checkpoint data",
                ..
            })
        )
    };
    assert!(limit(event.encode_payload().map(drop)));
    let json = json!({"reason": "periodic", "data": big});
    assert!(limit(
        BuiltinEvent::from_json("run.checkpointed", json).map(drop)
    ));
    let bytes = crate::codec::encode(&payload).unwrap();
    assert!(limit(
        BuiltinEvent::decode_payload("run.checkpointed", 1, &bytes).map(drop)
    ));
    let fits = RunCheckpointed {
        reason: CheckpointReason::Periodic,
        data: "x".repeat(1 << 20),
    };
    assert!(BuiltinEvent::from(fits).encode_payload().is_ok());
}

#[test]
fn job_progress_v1_is_upcast_to_v2() {
    let v1 = JobProgressV1 {
        stage: Some("download".into()),
        percent: Some(40),
        done: Some(4),
        total: Some(10),
    };
    let bytes = crate::codec::encode(&v1).unwrap();
    let decoded = BuiltinEvent::decode_payload("job.progress", 1, &bytes).unwrap();
    assert_eq!(
        decoded,
        BuiltinEvent::JobProgress(JobProgress {
            stage: Some("download".into()),
            percent: Some(40),
            done: Some(4),
            total: Some(10),
            message: None,
        })
    );
    // v2 bytes are not v1 bytes: reading them as v1 fails instead of guessing.
    let v2 = BuiltinEvent::from(JobProgress {
        message: Some("m".into()),
        ..Default::default()
    });
    let v2_bytes = v2.encode_payload().unwrap();
    assert!(BuiltinEvent::decode_payload("job.progress", 1, &v2_bytes).is_err());
    for version in [0, 3, u16::MAX] {
        let error = BuiltinEvent::decode_payload("job.progress", version, &bytes).unwrap_err();
        assert!(
            matches!(error, Error::UnsupportedSchemaVersion { .. }),
            "{error}"
        );
    }
}

#[test]
fn unknown_types_and_versions_are_refused() {
    let error = BuiltinEvent::decode_payload("room.exploded", 1, &[]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::UnknownEventType {
                schema_version: Some(1),
                ..
            }
        ),
        "{error}"
    );
    let error = BuiltinEvent::decode_payload("room.created", 2, &[]).unwrap_err();
    assert!(
        matches!(error, Error::UnsupportedSchemaVersion { .. }),
        "{error}"
    );
    // A caller who gave no schema version is not told about "schema version 0" (issue 12
    // item 10): the message names only the type.
    let error = BuiltinEvent::from_json("room.exploded", serde_json::json!({})).unwrap_err();
    assert!(
        matches!(
            error,
            Error::UnknownEventType {
                schema_version: None,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.to_string(), r#"unknown event type "room.exploded""#);
}

#[test]
fn events_only_go_to_their_stream_kind() {
    let created = BuiltinEvent::from(RoomCreated {
        name: "a".into(),
        topic: None,
        created_by: None,
    });
    created.check_stream(&StreamId::room("a").unwrap()).unwrap();
    for other in ["job/a", "run/a", "workflow/a", "lobby"] {
        let error = created
            .check_stream(&StreamId::new(other).unwrap())
            .unwrap_err();
        assert!(matches!(error, Error::StreamMismatch { .. }), "{error}");
    }
}

proptest! {
    #[test]
    fn garbage_payloads_never_panic(
        index in 0usize..30,
        version in 0u16..4,
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let event_type = BuiltinEvent::EVENT_TYPES[index];
        let _ = BuiltinEvent::decode_payload(event_type, version, &bytes);
    }

    #[test]
    fn truncated_payloads_are_errors(index in 0usize..30, cut in any::<prop::sample::Index>()) {
        let event = &samples()[index];
        let bytes = event.encode_payload().unwrap();
        let at = cut.index(bytes.len().max(1));
        if at < bytes.len() {
            let result = BuiltinEvent::decode_payload(
                event.event_type(),
                event.schema_version(),
                &bytes[..at],
            );
            prop_assert!(result.is_err());
        }
    }
}

/// `decode_payload_into` over an event of any type gives what `decode_payload` gives: the
/// same event, or the same error (the replay decodes every record into the event before it).
fn assert_decodes_into_like_a_fresh_decode(
    held: &BuiltinEvent,
    event_type: &str,
    version: u16,
    bytes: &[u8],
) {
    let fresh = BuiltinEvent::decode_payload(event_type, version, bytes);
    let mut slot = held.clone();
    let into = slot.decode_payload_into(event_type, version, bytes);
    match (fresh, into) {
        (Ok(fresh), Ok(())) => assert_eq!(slot, fresh, "{event_type} v{version} into {held:?}"),
        (Err(fresh), Err(into)) => assert_eq!(
            fresh.to_string(),
            into.to_string(),
            "{event_type} v{version} into {held:?}"
        ),
        (fresh, into) => panic!("{event_type} v{version} into {held:?}: {fresh:?} vs {into:?}"),
    }
}

#[test]
fn decoding_into_any_event_gives_what_a_fresh_decode_gives() {
    let samples = samples();
    let longer = BuiltinEvent::from(RoomMessagePosted {
        message_id: "m-000000001".into(),
        author: "grace hopper".into(),
        body: "a body longer than the sample's, so the held buffers grow".into(),
    });
    let broken = BuiltinEvent::from(RoomMessagePosted {
        message_id: "m1".into(),
        author: "ada".into(),
        body: "x".into(),
    });
    let mut broken_bytes = broken.encode_payload().unwrap();
    // An author with a control character: decodes, then breaks a value rule.
    broken_bytes[4] = 0x07;
    for held in samples.iter().chain([&longer]) {
        for target in samples.iter().chain([&longer]) {
            let bytes = target.encode_payload().unwrap();
            assert_decodes_into_like_a_fresh_decode(
                held,
                target.event_type(),
                target.schema_version(),
                &bytes,
            );
            for cut in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                assert_decodes_into_like_a_fresh_decode(
                    held,
                    target.event_type(),
                    target.schema_version(),
                    &bytes[..cut],
                );
            }
            let mut trailing = bytes.clone();
            trailing.push(0);
            assert_decodes_into_like_a_fresh_decode(
                held,
                target.event_type(),
                target.schema_version(),
                &trailing,
            );
        }
        assert_decodes_into_like_a_fresh_decode(held, "room.message_posted", 1, &broken_bytes);
    }
    // The v1 job.progress payload goes through its upcaster into a held v2 event.
    let v1 = crate::codec::encode(&JobProgressV1 {
        stage: Some("download".into()),
        percent: Some(40),
        done: Some(4),
        total: Some(10),
    })
    .unwrap();
    for held in &samples {
        assert_decodes_into_like_a_fresh_decode(held, "job.progress", 1, &v1);
    }
}

proptest! {
    #[test]
    fn garbage_decodes_into_an_event_as_a_fresh_decode(
        held in 0usize..30,
        index in 0usize..30,
        version in 0u16..3,
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let held = &samples()[held];
        let event_type = BuiltinEvent::EVENT_TYPES[index];
        assert_decodes_into_like_a_fresh_decode(held, event_type, version, &bytes);
    }

    #[test]
    fn changed_payloads_decode_into_an_event_as_a_fresh_decode(
        held in 0usize..30,
        index in 0usize..30,
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let samples = samples();
        let target = &samples[index];
        let mut bytes = target.encode_payload().unwrap();
        for (at, byte) in changes {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
        }
        assert_decodes_into_like_a_fresh_decode(
            &samples[held],
            target.event_type(),
            target.schema_version(),
            &bytes,
        );
    }
}

fn arbitrary_room_created() -> impl Strategy<Value = RoomCreated> {
    let text = || proptest::string::string_regex("[a-zé ]{0,12}").unwrap();
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(|(name, topic, created_by)| RoomCreated {
            name,
            topic,
            created_by,
        })
}

proptest! {
    /// `RoomCreated`'s own `decode_into` (bincode's borrowing decoder, the held buffers
    /// reused) gives what a fresh decode gives, errors included, whatever the held room's
    /// fields: on its encoded payloads, cut or with bytes changed.
    #[test]
    fn a_room_created_decodes_into_any_held_room_as_a_fresh_decode(
        held in arbitrary_room_created(),
        target in arbitrary_room_created(),
        cut in any::<prop::sample::Index>(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let held = BuiltinEvent::from(held);
        // Encoded without the value rules: a fresh decode refuses what breaks them.
        let mut bytes = crate::codec::encode(&target).unwrap();
        assert_decodes_into_like_a_fresh_decode(&held, "room.created", 1, &bytes);
        for (at, byte) in changes {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        assert_decodes_into_like_a_fresh_decode(&held, "room.created", 1, &bytes);
        let cut = cut.index(bytes.len() + 1);
        assert_decodes_into_like_a_fresh_decode(&held, "room.created", 1, &bytes[..cut]);
    }
}
