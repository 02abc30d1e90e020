//! A replay on two threads (more than 50,000 records past the snapshot: the reading thread
//! checks each frame and hands over where the record lies in its block, the projections'
//! thread decodes the envelope there) gives the projections
//! every record as it was appended: stream, version, event type, schema version, time, both
//! trace ids and the payload, for interleaved streams and both event types of a service's own
//! event type, with a deletion and a truncation in between. A projection that folds all of it,
//! in order, into a digest ends the reopen's replay with the digest it built live.

use logbook::{
    ExpectedVersion, Logbook, MemoryStorage, Projection, ProjectionHandle, Projections,
    RecordedEvent, StreamId,
};
use logbook_tests::{CounterEvent, MEMORY_DIR, test_options};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// Streams the events are spread over, a few events at a time each.
const STREAMS: u64 = 7;
/// Events appended: past the two-thread replay's threshold (50,000 records).
const EVENTS: u64 = 52_000;

/// Everything the projection was handed, folded in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Trail {
    digest: u64,
    events: u64,
    correlated: u64,
    caused: u64,
    resets: u64,
    per_stream: BTreeMap<String, u64>,
}

impl Trail {
    fn fold(&mut self, part: impl Hash) {
        let mut hasher = DefaultHasher::new();
        self.digest.hash(&mut hasher);
        part.hash(&mut hasher);
        self.digest = hasher.finish();
    }
}

impl Projection for Trail {
    type Event = CounterEvent;

    fn id(&self) -> &'static str {
        "tests.trail"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<CounterEvent>) {
        let payload = match &event.event {
            CounterEvent::Added { amount, note } => (*amount, note.clone()),
            CounterEvent::Reset => {
                self.resets += 1;
                (u64::MAX, String::new())
            }
        };
        self.fold((
            event.position,
            event.stream.as_str(),
            event.version,
            event.event_type.as_str(),
            event.schema_version,
            event.timestamp_ms,
            event.correlation_id.as_deref(),
            event.causation_id.as_deref(),
            payload,
        ));
        self.events += 1;
        self.correlated += u64::from(event.correlation_id.is_some());
        self.caused += u64::from(event.causation_id.is_some());
        *self
            .per_stream
            .entry(event.stream.as_str().to_owned())
            .or_default() += 1;
    }

    fn snapshot(&self) -> logbook::EventResult<Vec<u8>> {
        // Never taken: every snapshot trigger is off.
        logbook::snapshot_state(&self.digest)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook::EventResult<()> {
        self.digest = logbook::restore_state(self.id(), 1, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.fold(("deleted", stream.as_str()));
        self.per_stream.remove(stream.as_str()).is_some()
    }

    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) -> bool {
        self.fold(("truncated", stream.as_str(), before_version));
        true
    }
}

fn options() -> logbook::LogbookOptions {
    // Every append durable before it returns, so the live state has it when read.
    let mut options = test_options();
    options.wal.segment_bytes_max = 1024 * 1024;
    options.snapshots.every_events = 0;
    options.snapshots.every_bytes = 0;
    options.snapshots.every = Duration::ZERO;
    options.snapshots.on_close_events = 0;
    options
}

async fn open(
    storage: &Arc<MemoryStorage>,
) -> (Logbook<CounterEvent>, ProjectionHandle<Trail>, u64, bool) {
    let mut projections = Projections::new();
    let handle = projections.register(Trail::default());
    let (log, report) =
        Logbook::open_with_projections(storage.clone(), MEMORY_DIR, options(), projections)
            .await
            .expect("open");
    let replayed = report.events_replayed;
    let from_snapshot = report.snapshot.used.is_some();
    (log, handle, replayed, from_snapshot)
}

fn stream(index: u64) -> StreamId {
    StreamId::new(format!("counter-{index}")).expect("stream id")
}

/// The event at `index`: every eleventh a reset (another event type), trace ids on some.
fn event(index: u64) -> logbook::NewEvent<CounterEvent> {
    let mut event = if index % 11 == 10 {
        logbook::NewEvent::new(CounterEvent::Reset)
    } else {
        logbook_tests::added(index, &format!("n{index}"))
    };
    if index.is_multiple_of(3) {
        event = event.with_correlation_id(format!("corr-{}", index / 3));
    }
    if index.is_multiple_of(5) {
        event = event.with_causation_id(format!("cause-{index}"));
    }
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_thread_replay_hands_the_projections_every_envelope_as_appended() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, handle, _, _) = open(&storage).await;
    let mut appended = 0u64;
    let mut round = 0u64;
    let mut deleted = false;
    while appended < EVENTS {
        // 1 to 13 events per append, the streams in turn: runs of one stream are short. A
        // deleted stream takes no more appends: its turns go to stream 0.
        let count = (round % 13 + 1).min(EVENTS - appended);
        let events = (appended..appended + count).map(event).collect();
        let target = match round % STREAMS {
            2 if deleted => 0,
            other => other,
        };
        log.append(&stream(target), ExpectedVersion::Any, events)
            .await
            .expect("append");
        appended += count;
        round += 1;
        if appended / 1000 == 20 && appended % 1000 < count {
            log.truncate_stream(&stream(1), 100)
                .await
                .expect("truncate");
        }
        if appended / 1000 == 30 && appended % 1000 < count {
            log.delete_stream(&stream(2), ExpectedVersion::Any)
                .await
                .expect("delete");
            deleted = true;
        }
    }
    let live = handle.read().clone();
    // Counted as applied: a deletion drops the stream's entry, not the count.
    assert_eq!(live.events, EVENTS);
    assert!(live.correlated > 10_000 && live.caused > 5_000 && live.resets > 4_000);
    log.close().await.expect("close");

    let (reopened, handle, replayed, from_snapshot) = open(&storage).await;
    assert!(!from_snapshot, "a full replay");
    assert!(
        replayed > 50_000,
        "past the two-thread threshold: {replayed}"
    );
    let replay = handle.read().clone();
    assert_eq!(
        replay, live,
        "the replay handed the projection something else"
    );
    reopened.close().await.expect("close");
}
