//! A panicking observer cannot hurt the engine: the panic is caught around the one hook call,
//! logged and counted (`Stats::observer_panics`, `ProjectionHandle::observer_panics`), and the
//! engine goes on: the append that triggered it is acknowledged (it was durable and applied),
//! later appends work, other observers still run, the engine is not poisoned. Before, a panic
//! in `upserted` took down the `logbook-syncer` thread: the append returned `Closed` and every
//! later call failed. Hooks at every place they run are covered: `upserted`, `deleted`,
//! `restored` at open and `restored` at `observe` after open.

use logbook::{
    ExpectedVersion, Logbook, MemoryStorage, Observer, Projection, ProjectionHandle, Projections,
    RecordedEvent, StreamId,
};
use logbook_tests::MEMORY_DIR;
use logbook_tests::{CounterEvent, added, test_options};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Events per stream, dropped with the stream.
#[derive(Debug, Clone, Default)]
struct Counts(std::collections::BTreeMap<String, u64>);

impl Projection for Counts {
    type Event = CounterEvent;

    fn id(&self) -> &'static str {
        "tests.counts"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<CounterEvent>) {
        *self.0.entry(event.stream.as_str().to_owned()).or_default() += 1;
    }

    fn snapshot(&self) -> logbook::EventResult<Vec<u8>> {
        logbook::snapshot_state(&self.0)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook::EventResult<()> {
        self.0 = logbook::restore_state(self.id(), 1, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.0.remove(stream.as_str()).is_some()
    }

    fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
        false // only counts: nothing copied out of the hidden events
    }
}

/// Panics in the hooks it is told to, on the stream it is told to; counts the calls it saw.
#[derive(Default)]
struct Bomb {
    panic_on_stream: Option<&'static str>,
    panic_on_restored: bool,
    panic_on_deleted: bool,
    upserts: Arc<AtomicU64>,
}

impl Observer<Counts> for Bomb {
    fn restored(&self, _state: &Counts) {
        // What `tokio::spawn` on the syncer thread (no runtime) does.
        assert!(!self.panic_on_restored, "observer panics in restored");
    }

    fn upserted(&self, _state: &Counts, event: &RecordedEvent<CounterEvent>) {
        self.upserts.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_stream == Some(event.stream.as_str()) {
            panic!("observer panics in upserted on {}", event.stream);
        }
    }

    fn deleted(&self, _state: &Counts, _stream: &StreamId) {
        assert!(!self.panic_on_deleted, "observer panics in deleted");
    }
}

async fn open(
    storage: &Arc<MemoryStorage>,
    observer: Option<Bomb>,
) -> (Logbook<CounterEvent>, ProjectionHandle<Counts>) {
    let mut projections = Projections::new();
    let handle = projections.register(Counts::default());
    if let Some(observer) = observer {
        handle.observe(observer);
    }
    let (log, _report) =
        Logbook::open_with_projections(storage.clone(), MEMORY_DIR, test_options(), projections)
            .await
            .expect("open");
    (log, handle)
}

#[tokio::test]
async fn a_panic_in_upserted_is_counted_and_the_append_is_acknowledged() {
    let storage = Arc::new(MemoryStorage::new());
    let bomb_upserts = Arc::new(AtomicU64::new(0));
    let calm_upserts = Arc::new(AtomicU64::new(0));
    let (log, handle) = open(
        &storage,
        Some(Bomb {
            panic_on_stream: Some("counter-bad"),
            upserts: bomb_upserts.clone(),
            ..Bomb::default()
        }),
    )
    .await;
    // A second observer, registered after the one that panics, still sees every event.
    handle.observe(Bomb {
        upserts: calm_upserts.clone(),
        ..Bomb::default()
    });

    let good = StreamId::new("counter-good").expect("stream id");
    let bad = StreamId::new("counter-bad").expect("stream id");
    log.append(&good, ExpectedVersion::NoStream, vec![added(1, "a")])
        .await
        .expect("append before the panic");
    let result = log
        .append(&bad, ExpectedVersion::NoStream, vec![added(2, "b")])
        .await
        .expect("the append whose observer panicked was durable and applied: acknowledged");
    assert_eq!(result.first_version, 0);
    assert_eq!(handle.read().0.get("counter-bad"), Some(&1));

    // The engine goes on.
    log.append(&good, ExpectedVersion::Exact(0), vec![added(3, "c")])
        .await
        .expect("append after the panic");
    log.append(&bad, ExpectedVersion::Exact(0), vec![added(4, "d")])
        .await
        .expect("a second panicking append");
    assert_eq!(handle.read().0.get("counter-good"), Some(&2));
    assert_eq!(handle.read().0.get("counter-bad"), Some(&2));
    assert_eq!(bomb_upserts.load(Ordering::SeqCst), 4);
    assert_eq!(calm_upserts.load(Ordering::SeqCst), 4);

    let stats = log.stats();
    assert_eq!(stats.observer_panics, 2);
    assert_eq!(handle.observer_panics(), 2);
    assert!(stats.poisoned.is_none(), "an observer panic never poisons");
    log.sync().await.expect("sync after the panics");
    log.close().await.expect("close");

    // Nothing of it is in the log: a reopen without the observer sees every event.
    let (log, handle) = open(&storage, None).await;
    assert_eq!(handle.read().0.get("counter-bad"), Some(&2));
    assert_eq!(log.stats().observer_panics, 0);
    log.close().await.expect("close");
}

#[tokio::test]
async fn panics_in_restored_and_deleted_are_counted_too() {
    let storage = Arc::new(MemoryStorage::new());
    // `restored` at open runs on the open's blocking task.
    let (log, handle) = open(
        &storage,
        Some(Bomb {
            panic_on_restored: true,
            panic_on_deleted: true,
            ..Bomb::default()
        }),
    )
    .await;
    assert_eq!(log.stats().observer_panics, 1);

    // `restored` at `observe` after open runs on the caller's thread: it is caught as well.
    handle.observe(Bomb {
        panic_on_restored: true,
        ..Bomb::default()
    });
    assert_eq!(handle.observer_panics(), 2);

    let stream = StreamId::new("counter-gone").expect("stream id");
    log.append(&stream, ExpectedVersion::NoStream, vec![added(1, "a")])
        .await
        .expect("append");
    log.delete_stream(&stream, ExpectedVersion::Exact(0))
        .await
        .expect("the delete whose observer panicked is acknowledged");
    assert_eq!(handle.read().0.get("counter-gone"), None);
    let other = StreamId::new("counter-next").expect("stream id");
    log.append(&other, ExpectedVersion::NoStream, vec![added(1, "b")])
        .await
        .expect("append after the panic in deleted");
    assert_eq!(log.stats().observer_panics, 3);
    assert!(log.stats().poisoned.is_none());
    log.close().await.expect("close");
}
