//! History pages read from the log cost O(page): a 50-message page of a room reads about the
//! records of that page (each one seek: at most one sparse-index interval of 4 KiB plus its
//! frame), whatever the size of the room, counted with `MemoryStorage::read_bytes()`. The same
//! for a run's `run.event` pages. Pages are also checked for content: order, cursors, edits
//! and deletes applied.

use logbook::model::{RoomMessageDeleted, RoomMessageEdited, RunEvent, RunKind};
use logbook::{
    BuiltinEvent, BuiltinLog, ExpectedVersion, HistoryRequest, ManualClock, MemoryStorage, Order,
    StreamId,
};
use logbook_tests::projection_support::{
    CLOCK_START_MS, clocked_options, message_posted, open_memory, room_created, run_started,
};
use std::sync::Arc;

const PAGE: usize = 50;
/// The WAL's sparse-index interval (`WalOptions::index_interval_bytes`, default 4 KiB).
const INDEX_INTERVAL_BYTES: u64 = 4096;
/// How far above page × (index interval + frame) the bytes of one page may go: a seek reads
/// one read-ahead chunk (8 KiB, two intervals) rather than exactly the bytes it needs.
const SLACK: u64 = 3;

/// A log with one room of `messages` messages and one run of as many `run.event`s, interleaved
/// with each other and with a busy room next door, so the records of one stream are spread
/// over the log.
struct Fixture {
    storage: Arc<MemoryStorage>,
    log: BuiltinLog,
    /// The largest frame of the log, in bytes.
    frame_bytes_max: u64,
}

fn body(index: usize) -> String {
    // Bodies of varying length, about 100 to 300 bytes.
    let filler = "lorem ipsum dolor sit amet ".repeat(4 + index % 8);
    format!("message {index}: {filler}")
}

async fn append(log: &BuiltinLog, stream: &StreamId, event: BuiltinEvent) {
    log.log()
        .append(stream, ExpectedVersion::Any, vec![event.into()])
        .await
        .unwrap();
}

async fn fixture(messages: usize) -> Fixture {
    let storage = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(CLOCK_START_MS);
    let mut options = clocked_options(&clock);
    options.wal.segment_bytes_max = 4 << 20;
    let log = open_memory(&storage, options).await.log;
    let room = StreamId::room("big").unwrap();
    let next_door = StreamId::room("next-door").unwrap();
    let run = StreamId::run("agent").unwrap();
    log.execute(&room, room_created("Big")).await.unwrap();
    log.execute(&next_door, room_created("Next door"))
        .await
        .unwrap();
    let started = run_started(RunKind::BackgroundAgent, "agent", None, None);
    log.execute(&run, started).await.unwrap();
    for index in 0..messages {
        let id = format!("m{index}");
        let other = format!("n{index}");
        let event = RunEvent {
            sequence: index as u64,
            event_type: "tool_call".into(),
            payload: body(index + 5),
        };
        // Three streams at once (they share group commits); each stream stays in order.
        tokio::join!(
            append(&log, &room, message_posted(&id, "ada", &body(index))),
            append(
                &log,
                &next_door,
                message_posted(&other, "bob", &body(index + 3))
            ),
            append(&log, &run, event.into()),
        );
        clock.advance(1);
    }
    log.log().sync().await.unwrap();
    let stats = log.log().stats();
    // Frames are the envelope plus a small header; bound them by the average times two.
    let frame_bytes_max = 2 * stats.backend.embedded().unwrap().segment_bytes / stats.head_position;
    Fixture {
        storage,
        log,
        frame_bytes_max,
    }
}

impl Fixture {
    /// The bytes a page of `items` records may read.
    fn budget(&self, items: usize) -> u64 {
        SLACK * items as u64 * (INDEX_INTERVAL_BYTES + self.frame_bytes_max)
    }

    /// Runs `read` and returns its result with the bytes and calls it read from storage.
    async fn measure<T>(&self, read: impl std::future::Future<Output = T>) -> (T, u64, u64) {
        let (bytes, calls) = (self.storage.read_bytes(), self.storage.read_calls());
        let result = read.await;
        let bytes = self.storage.read_bytes() - bytes;
        let calls = self.storage.read_calls() - calls;
        (result, bytes, calls)
    }

    async fn history(&self, request: HistoryRequest) -> (logbook::HistoryPage, u64) {
        let (page, bytes, _) = self.measure(self.log.room_history("big", request)).await;
        (page.unwrap(), bytes)
    }
}

fn ids(page: &logbook::HistoryPage) -> Vec<String> {
    page.messages
        .iter()
        .map(|message| message.message_id.clone())
        .collect()
}

fn expected_ids(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|index| format!("m{index}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_page_reads_only_its_records() {
    let small = fixture(500).await;
    let large = fixture(5000).await;
    let mut costs = Vec::new();
    for (fixture, messages) in [(&small, 500), (&large, 5000)] {
        // Newest first.
        let (page, bytes) = fixture.history(HistoryRequest::newest(PAGE)).await;
        assert_eq!(ids(&page), expected_ids((messages - PAGE..messages).rev()));
        assert_eq!(page.messages[0].body, body(messages - 1));
        let budget = fixture.budget(PAGE);
        assert!(
            bytes <= budget,
            "{messages} messages: newest page read {bytes} B > {budget}"
        );
        costs.push(bytes);

        // A page in the middle, through a cursor.
        let middle = HistoryRequest {
            order: Order::NewestFirst,
            cursor: Some(page.messages[0].version - (messages as u64 / 2)),
            limit: PAGE,
        };
        let (page, bytes) = fixture.history(middle).await;
        assert_eq!(page.messages.len(), PAGE);
        assert!(
            bytes <= budget,
            "{messages} messages: middle page read {bytes} B > {budget}"
        );
        costs.push(bytes);

        // Oldest first, then the page after it.
        let oldest = HistoryRequest {
            order: Order::OldestFirst,
            cursor: None,
            limit: PAGE,
        };
        let (first, bytes) = fixture.history(oldest).await;
        assert_eq!(ids(&first), expected_ids(0..PAGE));
        assert!(
            bytes <= budget,
            "{messages} messages: oldest page read {bytes} B > {budget}"
        );
        let (second, bytes) = fixture
            .history(HistoryRequest {
                cursor: first.next,
                ..oldest
            })
            .await;
        assert_eq!(ids(&second), expected_ids(PAGE..2 * PAGE));
        assert!(bytes <= budget);
        costs.push(bytes);
    }
    eprintln!(
        "page of {PAGE}: bytes read (newest, middle, second oldest) for 500 messages {:?}, for \
         5000 {:?}; budget {} (small) / {} (large)",
        &costs[..3],
        &costs[3..],
        small.budget(PAGE),
        large.budget(PAGE)
    );
    // The room's size does not matter: each page of the large room costs about what the same
    // page of the small one costs.
    for (small_cost, large_cost) in costs[..3].iter().zip(&costs[3..]) {
        assert!(
            *large_cost <= small_cost * 3 / 2 && *small_cost <= large_cost * 3 / 2,
            "page costs differ with room size: {costs:?}"
        );
    }
    small.log.close().await.unwrap();
    large.log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_cost_one_read_each() {
    let fixture = fixture(2000).await;
    let room = StreamId::room("big").unwrap();
    // Edit two and delete one of the newest page's messages.
    for index in [1990, 1995] {
        let edit = RoomMessageEdited {
            message_id: format!("m{index}"),
            body: format!("edited {index}"),
        };
        fixture.log.execute(&room, edit.into()).await.unwrap();
    }
    let delete = RoomMessageDeleted {
        message_id: "m1999".into(),
    };
    fixture.log.execute(&room, delete.into()).await.unwrap();

    let (page, bytes) = fixture.history(HistoryRequest::newest(PAGE)).await;
    assert_eq!(ids(&page), expected_ids((2000 - PAGE..2000).rev()));
    let by_id = |id: &str| {
        page.messages
            .iter()
            .find(|message| message.message_id == id)
            .unwrap()
            .clone()
    };
    assert!(by_id("m1999").deleted && by_id("m1999").body.is_empty());
    assert!(by_id("m1995").edited && by_id("m1995").body == "edited 1995");
    assert!(by_id("m1990").edited && by_id("m1990").body == "edited 1990");
    assert!(!by_id("m1991").edited && by_id("m1991").body == body(1991));
    // The page (its edits and delete among its records) plus one read per edited message.
    let budget = fixture.budget(PAGE + 3 + 2);
    assert!(bytes <= budget, "read {bytes} B > {budget}");
    fixture.log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_event_pages_read_only_their_records() {
    let small = fixture(500).await;
    let large = fixture(5000).await;
    let mut costs = Vec::new();
    for (fixture, events) in [(&small, 500u64), (&large, 5000)] {
        let read = fixture
            .log
            .run_events("agent", Order::NewestFirst, None, PAGE);
        let (result, bytes, _) = fixture.measure(read).await;
        let (page, next) = result.unwrap();
        let page_size = PAGE as u64;
        assert_eq!(
            sequences(&page),
            (events - page_size..events).rev().collect::<Vec<_>>()
        );
        let budget = fixture.budget(PAGE);
        assert!(
            bytes <= budget,
            "{events} run events: page read {bytes} B > {budget}"
        );
        costs.push(bytes);

        // The next page follows on without overlap.
        let read = fixture
            .log
            .run_events("agent", Order::NewestFirst, next, PAGE);
        let (result, bytes, _) = fixture.measure(read).await;
        let (page, _) = result.unwrap();
        assert_eq!(
            sequences(&page),
            (events - 2 * page_size..events - page_size)
                .rev()
                .collect::<Vec<_>>()
        );
        assert!(bytes <= budget);
        costs.push(bytes);
    }
    eprintln!(
        "run.event pages: bytes read (first, second) for 500 events {:?}, 5000 {:?}",
        &costs[..2],
        &costs[2..]
    );
    for (small_cost, large_cost) in costs[..2].iter().zip(&costs[2..]) {
        assert!(
            *large_cost <= small_cost * 3 / 2 && *small_cost <= large_cost * 3 / 2,
            "page costs differ with the run's size: {costs:?}"
        );
    }
    small.log.close().await.unwrap();
    large.log.close().await.unwrap();
}

fn sequences(page: &[logbook::RecordedEvent<BuiltinEvent>]) -> Vec<u64> {
    page.iter()
        .map(|event| match &event.event {
            BuiltinEvent::RunEvent(run_event) => run_event.sequence,
            other => panic!("not a run.event: {other:?}"),
        })
        .collect()
}
