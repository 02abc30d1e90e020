//! Replay hands the projections their records a chunk at a time (256 events, or 1 MiB of
//! payload, per lock of a projection's state): engine events (a stream deletion, a soft
//! deletion, a truncation) in the middle of a chunk and records on both sides of chunk
//! boundaries rebuild exactly the live state, and `applied_position` after open is the log's
//! last position.

use logbook::{ExpectedVersion, ManualClock, MemoryStorage, NewEvent, StreamId};
use logbook_tests::projection_support::{
    BuiltinState, CLOCK_START_MS, assert_same_state, clocked_options, head, message_posted,
    open_memory, room_created,
};
use std::sync::Arc;

/// Messages per append: not a divisor of the chunk, so chunks end inside appends.
const BATCH: usize = 97;

fn room(id: &str) -> StreamId {
    StreamId::room(id).expect("room id")
}

async fn post(log: &logbook::BuiltinLog, id: &str, first: usize, count: usize, body: &str) {
    let events = (first..first + count)
        .map(|index| NewEvent::new(message_posted(&format!("m{index}"), "ada", body)))
        .collect();
    log.log()
        .append(&room(id), ExpectedVersion::Any, events)
        .await
        .expect("post");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_in_chunks_rebuilds_the_live_state_around_engine_events() {
    let storage = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(CLOCK_START_MS);
    let opened = open_memory(&storage, clocked_options(&clock)).await;
    let log = &opened.log;
    for id in ["a", "b", "c", "d"] {
        log.log()
            .append(
                &room(id),
                ExpectedVersion::NoStream,
                vec![NewEvent::new(room_created(id))],
            )
            .await
            .expect("create");
    }
    let mut posted = 0;
    for round in 0..9 {
        for id in ["a", "b", "c", "d"] {
            if id == "b" && round > 2 {
                // Deleted for good: appends to it are refused.
                continue;
            }
            post(log, id, posted, BATCH, &format!("round {round} of {id}")).await;
            posted += BATCH;
        }
        // Engine events land inside chunks (positions 4 + k * 388 + ...), and events of the
        // same rooms follow them in the same chunk.
        match round {
            2 => {
                log.log()
                    .delete_stream(&room("b"), ExpectedVersion::Any)
                    .await
                    .expect("delete b");
            }
            4 => {
                log.log()
                    .truncate_stream(&room("a"), 150)
                    .await
                    .expect("truncate a");
            }
            6 => {
                log.log()
                    .soft_delete_stream(&room("c"), ExpectedVersion::Any)
                    .await
                    .expect("soft delete c");
                log.log()
                    .append(
                        &room("c"),
                        ExpectedVersion::NoStream,
                        vec![NewEvent::new(room_created("c again"))],
                    )
                    .await
                    .expect("create c again");
            }
            _ => {}
        }
    }
    // One long message makes a chunk end on its payload bytes, not on its count.
    post(log, "d", posted, 3, &"x".repeat(400 * 1024)).await;
    let last = head(log);
    let live = BuiltinState::capture(&opened).await;
    let rooms = log.rooms().read();
    assert!(rooms.room("b").is_none(), "b was deleted");
    let c = rooms.room("c").expect("c was created again");
    assert_eq!(c.name, "c again");
    assert_eq!(
        c.messages_posted,
        2 * BATCH as u64,
        "c counts only the messages after its soft delete (rounds 7 and 8)"
    );
    let d = rooms.room("d").expect("d");
    assert_eq!(d.messages_posted, 9 * BATCH as u64 + 3);
    drop(rooms);
    opened.log.close().await.expect("close");

    let reopened = open_memory(&storage, clocked_options(&clock)).await;
    assert!(reopened.report.log.snapshot.used.is_none(), "a full replay");
    assert!(
        reopened.report.log.events_replayed > 3 * 256,
        "more than a few chunks: {}",
        reopened.report.log.events_replayed
    );
    let replayed = BuiltinState::capture(&reopened).await;
    assert_same_state(&live, &replayed, "after a replay in chunks");
    for (id, applied) in [
        ("runs", reopened.log.runs().applied_position()),
        ("rooms", reopened.log.rooms().applied_position()),
        ("jobs", reopened.log.jobs().applied_position()),
    ] {
        assert_eq!(applied, last, "{id} is as of the log's last position");
    }
    reopened.log.close().await.expect("close");
}
