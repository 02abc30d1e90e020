//! A reader, however slow, never blocks an acknowledgement (issue 12 item 4).
//!
//! `ProjectionHandle::read` returns a published version of the state that nobody changes while
//! it is held; the syncer applies a record in place only to a version no reader holds, else to
//! another copy that it then publishes, so it never waits for a reader. Before,
//! `read()` returned a `RwLockReadGuard` and the syncer took the write lock before acknowledging:
//! a guard held across `append(..).await` on the main task deadlocked, and a guard held by any
//! thread stalled every acknowledgement until it was dropped.
//!
//! Also checked: read-your-writes after an acknowledged append still holds, a held guard keeps
//! its version, a held guard costs at most one clone of the state, and the state built by the
//! copies under concurrent readers, appends and deletions equals a single-copy replay.

use logbook::{
    ExpectedVersion, Logbook, MemoryStorage, Observer, Projection, ProjectionHandle, Projections,
    RecordedEvent, StreamId,
};
use logbook_tests::MEMORY_DIR;
use logbook_tests::{CounterEvent, added, test_options};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long an append may take before the test calls it stalled.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the reader thread holds its guard.
const HOLD: Duration = Duration::from_secs(2);

/// Per stream: events and the sum of their amounts; and in total. Dropped with the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sums {
    streams: BTreeMap<String, (u64, u64)>,
    events: u64,
    total: u64,
}

impl Sums {
    /// The totals agree with the per-stream entries (minus what deleted streams took along).
    fn consistent(&self) -> bool {
        let events: u64 = self.streams.values().map(|(events, _)| events).sum();
        events <= self.events
    }
}

impl Projection for Sums {
    type Event = CounterEvent;

    fn id(&self) -> &'static str {
        "tests.sums"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<CounterEvent>) {
        let amount = match &event.event {
            CounterEvent::Added { amount, .. } => *amount,
            CounterEvent::Reset => 0,
        };
        let entry = self
            .streams
            .entry(event.stream.as_str().to_owned())
            .or_default();
        entry.0 += 1;
        entry.1 += amount;
        self.events += 1;
        self.total += amount;
    }

    fn snapshot(&self) -> logbook::EventResult<Vec<u8>> {
        logbook::snapshot_state(&(&self.streams, self.events, self.total))
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook::EventResult<()> {
        let (streams, events, total) = logbook::restore_state(self.id(), 1, state_version, bytes)?;
        *self = Sums {
            streams,
            events,
            total,
        };
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.streams.remove(stream.as_str()).is_some()
    }

    fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
        false // sums only: nothing copied out of the hidden events
    }
}

async fn open(storage: &Arc<MemoryStorage>) -> (Logbook<CounterEvent>, ProjectionHandle<Sums>) {
    let mut projections = Projections::new();
    let handle = projections.register(Sums::default());
    let (log, _report) =
        Logbook::open_with_projections(storage.clone(), MEMORY_DIR, test_options(), projections)
            .await
            .expect("open");
    (log, handle)
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("stream id")
}

/// Before: the syncer waited for the guard's read lock, the main task waited for the ack: a
/// deadlock (here, the timeout).
#[tokio::test(flavor = "current_thread")]
async fn a_guard_held_across_an_append_on_the_main_task_does_not_stall_it() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, handle) = open(&storage).await;
    let guard = handle.read();
    let outcome = tokio::time::timeout(
        ACK_TIMEOUT,
        log.append(
            &stream("counter-a"),
            ExpectedVersion::NoStream,
            vec![added(5, "a")],
        ),
    )
    .await;
    let acknowledged = outcome.expect("the append stalled behind a held read guard");
    acknowledged.expect("append");
    // The guard is the version as of the `read()` call: it does not see the append.
    assert_eq!((guard.events, guard.total), (0, 0));
    // A fresh read after the ack sees it (read-your-writes), while the old guard is still held.
    assert_eq!((handle.read().events, handle.read().total), (1, 5));
    assert_eq!((guard.events, guard.total), (0, 0));
    drop(guard);
    log.close().await.expect("close");
}

/// Before: every ack waited until the thread dropped its guard (2 s).
#[tokio::test(flavor = "current_thread")]
async fn acknowledgements_arrive_while_another_thread_holds_a_guard() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, handle) = open(&storage).await;
    log.append(
        &stream("counter-seed"),
        ExpectedVersion::NoStream,
        vec![added(1, "seed")],
    )
    .await
    .expect("seed append");

    let released = Arc::new(AtomicBool::new(false));
    let (taken, guard_taken) = std::sync::mpsc::channel();
    let holder = {
        let handle = handle.clone();
        let released = released.clone();
        std::thread::spawn(move || {
            let guard = handle.read();
            taken.send(()).expect("signal");
            std::thread::sleep(HOLD);
            // Still the version it read: the 100 appends went to other copies.
            let seen = (guard.events, guard.total);
            released.store(true, Ordering::SeqCst);
            drop(guard);
            seen
        })
    };
    guard_taken.recv().expect("the holder took its guard");

    let counter = stream("counter-b");
    for index in 0..100u64 {
        let expected = match index {
            0 => ExpectedVersion::NoStream,
            _ => ExpectedVersion::Exact(index - 1),
        };
        tokio::time::timeout(
            ACK_TIMEOUT,
            log.append(&counter, expected, vec![added(2, "b")]),
        )
        .await
        .expect("an append stalled behind a held read guard")
        .expect("append");
        // Read-your-writes: the acknowledged append is in a fresh read.
        let fresh = handle.read();
        assert_eq!(fresh.events, 2 + index, "fresh read after ack {index}");
        assert_eq!(
            fresh.streams.get("counter-b"),
            Some(&(index + 1, 2 * (index + 1)))
        );
    }
    assert!(
        !released.load(Ordering::SeqCst),
        "the 100 acknowledgements arrived only after the guard was released"
    );
    let seen = holder.join().expect("holder thread");
    assert_eq!(seen, (1, 1), "a held guard keeps the version it read");
    assert_eq!((handle.read().events, handle.read().total), (101, 201));
    log.close().await.expect("close");
}

/// Copy-on-write: with no reader holding a version during an apply, the one copy is changed in
/// place (no clone); a guard held across appends costs one clone (then the held version is the
/// spare, and the new published one is changed in place again), never a wait; two guards on
/// consecutive versions cost one more; after they are dropped the spare is reused, not cloned.
#[tokio::test(flavor = "current_thread")]
async fn held_guards_cost_a_clone_each_at_most_and_no_wait() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, handle) = open(&storage).await;
    let counter = stream("counter-c");
    let append = |index: u64| {
        let expected = match index {
            0 => ExpectedVersion::NoStream,
            _ => ExpectedVersion::Exact(index - 1),
        };
        log.append(&counter, expected, vec![added(1, "c")])
    };
    for index in 0..20u64 {
        append(index).await.expect("append");
    }
    assert_eq!(
        handle.state_clones(),
        0,
        "no reader held a version: no clone"
    );

    let guard = handle.read();
    for index in 20..40u64 {
        append(index).await.expect("append while a guard is held");
    }
    assert_eq!(handle.state_clones(), 1, "the held version cost one clone");
    assert_eq!(guard.events, 20);

    // Readers now hold both the spare (`guard`) and the published version (`second`).
    let second = handle.read();
    append(40).await.expect("append while two guards are held");
    assert_eq!(handle.state_clones(), 2, "both copies held: one more clone");
    assert_eq!(
        (guard.events, second.events, handle.read().events),
        (20, 40, 41)
    );
    drop(guard);
    drop(second);

    // The spare is free again: a held published version costs no clone.
    let third = handle.read();
    for index in 41..60u64 {
        append(index).await.expect("append");
    }
    assert_eq!(handle.state_clones(), 2, "the free spare took the change");
    assert_eq!((third.events, handle.read().events), (41, 60));
    drop(third);
    log.close().await.expect("close");
}

/// The spare copy catches up on every record it missed (events, a deletion, a truncation)
/// before it takes a change: its result equals a single-copy replay at reopen.
#[tokio::test(flavor = "current_thread")]
async fn the_spare_catches_up_on_the_records_it_missed() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, handle) = open(&storage).await;
    let kept = stream("counter-kept");
    let doomed = stream("counter-doomed");
    log.append(
        &kept,
        ExpectedVersion::NoStream,
        vec![added(1, "k"), added(2, "k")],
    )
    .await
    .expect("append");
    log.append(&doomed, ExpectedVersion::NoStream, vec![added(3, "d")])
        .await
        .expect("append");
    // A held version makes the next record go to a clone; that version becomes the spare.
    let held = handle.read();
    log.append(&kept, ExpectedVersion::Exact(1), vec![added(4, "k")])
        .await
        .expect("append while held");
    assert_eq!(handle.state_clones(), 1);
    drop(held);
    // Records the spare misses (applied in place to the published version).
    log.delete_stream(&doomed, ExpectedVersion::Any)
        .await
        .expect("delete");
    log.truncate_stream(&kept, 1).await.expect("truncate");
    log.append(&kept, ExpectedVersion::Exact(2), vec![added(5, "k")])
        .await
        .expect("append");
    // Now the published version is held: the free spare catches up and takes the change.
    let held = handle.read();
    log.append(&kept, ExpectedVersion::Exact(3), vec![added(6, "k")])
        .await
        .expect("append while held");
    assert_eq!(handle.state_clones(), 1, "the spare took it, no clone");
    drop(held);
    let live = Sums::clone(&handle.read());
    assert!(!live.streams.contains_key("counter-doomed"));
    assert_eq!(live.streams.get("counter-kept"), Some(&(5, 18)));
    log.close().await.expect("close");
    let (reopened, replayed) = open(&storage).await;
    assert_eq!(
        *replayed.read(),
        live,
        "the spare's result equals a single-copy replay"
    );
    reopened.close().await.expect("close");
}

/// Counts `upserted` calls and checks the state it gets already holds the event.
struct SeesItsEvent {
    upserts: Arc<AtomicU64>,
    stale: Arc<AtomicU64>,
}

impl Observer<Sums> for SeesItsEvent {
    fn upserted(&self, state: &Sums, event: &RecordedEvent<CounterEvent>) {
        self.upserts.fetch_add(1, Ordering::SeqCst);
        let applied = state
            .streams
            .get(event.stream.as_str())
            .is_some_and(|(events, _)| *events > event.version);
        if !applied {
            self.stale.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Readers in a loop (each checks its version is consistent and never older than the one it
/// read before), writers appending and deleting concurrently, guards held across awaits: the
/// final state equals what a single-copy replay at reopen builds, and observers saw every
/// event in a state that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_and_writers_end_in_the_replayed_state() {
    const WRITERS: u64 = 8;
    const APPENDS_PER_WRITER: u64 = 40;
    const READERS: usize = 3;
    let storage = Arc::new(MemoryStorage::new());
    let (log, handle) = open(&storage).await;
    let upserts = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    handle.observe(SeesItsEvent {
        upserts: upserts.clone(),
        stale: stale.clone(),
    });

    let stop = Arc::new(AtomicBool::new(false));
    // Readers that have read once: the writers start only when every reader runs (on a loaded
    // machine a reader thread could otherwise first run after the writers were done).
    let reading = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let handle = handle.clone();
            let stop = stop.clone();
            let reading = reading.clone();
            std::thread::spawn(move || {
                let mut last_events = 0;
                let mut reads = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let state = handle.read();
                    assert!(state.consistent(), "a reader saw a torn state: {state:?}");
                    assert!(state.events >= last_events, "a reader went back in time");
                    last_events = state.events;
                    reads += 1;
                    if reads == 1 {
                        reading.fetch_add(1, Ordering::SeqCst);
                    }
                }
                reads
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reading.load(Ordering::SeqCst) < READERS as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reader threads never ran"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let log = log.clone();
        let handle = handle.clone();
        writers.push(tokio::spawn(async move {
            let counter = stream(&format!("counter-w{writer}"));
            for index in 0..APPENDS_PER_WRITER {
                let expected = match index {
                    0 => ExpectedVersion::NoStream,
                    _ => ExpectedVersion::Exact(index - 1),
                };
                // A guard held across the await (the guard is `Send`).
                let before = handle.read();
                log.append(&counter, expected, vec![added(writer + index, "w")])
                    .await
                    .expect("append");
                assert!(handle.read().events > before.events);
                drop(before);
                if writer % 3 == 0 && index == APPENDS_PER_WRITER / 2 {
                    let doomed = stream(&format!("counter-doomed{writer}"));
                    log.append(&doomed, ExpectedVersion::NoStream, vec![added(7, "d")])
                        .await
                        .expect("append to a stream to delete");
                    log.delete_stream(&doomed, ExpectedVersion::Any)
                        .await
                        .expect("delete");
                    assert!(!handle.read().streams.contains_key(doomed.as_str()));
                }
            }
        }));
    }
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("writers finish")
            .expect("writer task");
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().expect("reader thread") > 0);
    }

    let live = Sums::clone(&handle.read());
    let doomed_writers = (0..WRITERS).filter(|writer| writer % 3 == 0).count() as u64;
    assert_eq!(live.events, WRITERS * APPENDS_PER_WRITER + doomed_writers);
    assert_eq!(live.streams.len() as u64, WRITERS);
    assert_eq!(upserts.load(Ordering::SeqCst), live.events);
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "an observer saw a state without its event"
    );
    log.close().await.expect("close");

    let (reopened, replayed) = open(&storage).await;
    assert_eq!(
        *replayed.read(),
        live,
        "the live copies equal a single-copy replay"
    );
    reopened.close().await.expect("close");
}
