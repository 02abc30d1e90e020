//! The built-in model end to end: validated commands, queries, history from the log, reopen.

use logbook::{BuiltinEvent, BuiltinLog, HistoryRequest, MemoryStorage, Projections, StreamId};
use logbook_tests::test_options;
use serde_json::json;
use std::sync::Arc;

fn event(event_type: &str, data: serde_json::Value) -> BuiltinEvent {
    BuiltinEvent::from_json(event_type, data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_validate_and_state_survives_reopen() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, report) =
        BuiltinLog::open_with(storage.clone(), "/log", test_options(), Projections::new())
            .await
            .unwrap();
    assert!(report.interrupted.runs.is_empty());
    let room = StreamId::room("lobby").unwrap();
    // Posting to a room that does not exist is refused and writes nothing.
    let refused = log
        .execute(
            &room,
            event(
                "room.message_posted",
                json!({"message_id":"m0","author":"ada","body":"x"}),
            ),
        )
        .await;
    assert!(refused.is_err());
    assert_eq!(log.log().stats().head_position, 0);
    log.execute(&room, event("room.created", json!({"name":"Lobby"})))
        .await
        .unwrap();
    for index in 0..30 {
        let body = format!("hello {index}");
        log.execute(
            &room,
            event(
                "room.message_posted",
                json!({"message_id": format!("m{index}"), "author":"ada","body": body}),
            ),
        )
        .await
        .unwrap();
    }
    log.execute(
        &room,
        event(
            "room.message_edited",
            json!({"message_id":"m29","body":"edited"}),
        ),
    )
    .await
    .unwrap();
    log.execute(
        &room,
        event("room.message_deleted", json!({"message_id":"m28"})),
    )
    .await
    .unwrap();
    let page = log
        .room_history("lobby", HistoryRequest::newest(3))
        .await
        .unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|message| message.message_id.as_str())
            .collect::<Vec<_>>(),
        vec!["m29", "m28", "m27"]
    );
    assert_eq!(page.messages[0].body, "edited");
    assert!(page.messages[1].deleted && page.messages[1].body.is_empty());
    let next = log
        .room_history(
            "lobby",
            HistoryRequest {
                cursor: page.next,
                ..HistoryRequest::newest(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        next.messages
            .iter()
            .map(|message| message.message_id.as_str())
            .collect::<Vec<_>>(),
        vec!["m26", "m25", "m24"]
    );
    assert_eq!(
        log.rooms().read().room("lobby").unwrap().message_count(),
        29
    );
    log.execute(&room, event("room.archived", json!({})))
        .await
        .unwrap();
    let refused = log
        .execute(
            &room,
            event(
                "room.message_posted",
                json!({"message_id":"late","author":"ada","body":"x"}),
            ),
        )
        .await;
    assert!(refused.is_err(), "posting to an archived room is refused");

    let job = StreamId::job("j1").unwrap();
    log.execute(
        &job,
        event("job.queued", json!({"kind":"export","input":"{}"})),
    )
    .await
    .unwrap();
    let now = log.log().now_ms();
    log.execute(
        &job,
        event(
            "job.claimed",
            json!({"worker":"w1","lease_expires_at_ms": now + 60_000}),
        ),
    )
    .await
    .unwrap();
    let refused = log
        .execute(
            &job,
            event(
                "job.claimed",
                json!({"worker":"w2","lease_expires_at_ms": now + 60_000}),
            ),
        )
        .await;
    assert!(refused.is_err(), "a live lease refuses a second claim");
    log.close().await.unwrap();

    let (log, report) = BuiltinLog::open_with(storage, "/log", test_options(), Projections::new())
        .await
        .unwrap();
    assert_eq!(report.interrupted.jobs.len(), 1);
    assert_eq!(report.interrupted.jobs[0].job_id, "j1");
    assert_eq!(
        log.rooms().read().room("lobby").unwrap().message_count(),
        29
    );
    log.close().await.unwrap();
}
