//! Pages of a stream whose positions the index's memory does not give: a page of at most 512
//! events whose records span at most 512 positions is read on the caller's thread (the index
//! query, then the records, within a frame budget); a page spread thinner among other streams'
//! records, and a longer page, go to the blocking pool. Every path returns the same pages, on
//! either runtime flavour, from `block_on`, spawned tasks, a `LocalSet`, joined with other
//! futures, with one worker and many readers; and a dense page does not wait for a busy
//! blocking pool.

use logbook::{Direction, ExpectedVersion, Logbook, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::sync::Arc;
use std::time::Duration;

type Log = Logbook<CounterEvent>;

/// Events of each stream.
const EVENTS: u64 = 2_500;

/// `counter/a` and `counter/b`, appended in alternating batches of 100 (a page of 500 spans
/// about 1,000 positions: the blocking pool); `counter/dense`, appended after them in batches
/// of 1,000 (a page of 500 spans 500 positions: the caller's thread); `counter/sparse`, one
/// event after every 600 of `counter/bulk` (every page is spread thin).
fn streams() -> [StreamId; 4] {
    ["counter/a", "counter/b", "counter/dense", "counter/sparse"]
        .map(|name| StreamId::new(name).unwrap())
}

async fn append_versions(log: &Log, stream: &StreamId, versions: std::ops::Range<u64>) {
    let events = versions.map(|version| added(version, "")).collect();
    log.append(stream, ExpectedVersion::Any, events)
        .await
        .unwrap();
}

async fn fill(log: &Log) {
    let [a, b, dense, sparse] = streams();
    for start in (0..EVENTS).step_by(100) {
        for stream in [&a, &b] {
            append_versions(log, stream, start..start + 100).await;
        }
    }
    for start in (0..EVENTS).step_by(1000) {
        append_versions(log, &dense, start..(start + 1000).min(EVENTS)).await;
    }
    let bulk = StreamId::new("counter/bulk").unwrap();
    for version in 0..SPARSE_EVENTS {
        append_versions(log, &bulk, version * 600..(version + 1) * 600).await;
        append_versions(log, &sparse, version..version + 1).await;
    }
}

/// Events of `counter/sparse`.
const SPARSE_EVENTS: u64 = 40;

/// Reads every page of every stream at each size in `sizes`.
async fn read_every_stream(log: &Log, sizes: &[usize]) {
    let [a, b, dense, sparse] = streams();
    for &max in sizes {
        for stream in [&a, &b, &dense] {
            assert_eq!(read_all_pages(log, stream, max, EVENTS).await, EVENTS);
        }
        assert_eq!(
            read_all_pages(log, &sparse, max, SPARSE_EVENTS).await,
            SPARSE_EVENTS
        );
    }
}

/// Every page of `max` events of `stream`, forward then backward, each event checked; returns
/// how many were read.
async fn read_all_pages(log: &Log, stream: &StreamId, max: usize, events: u64) -> u64 {
    let mut from = 0u64;
    loop {
        let page = log
            .read_stream(stream, from, Direction::Forward, max)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= max);
        for event in &page {
            assert_eq!(event.version, from, "forward, pages of {max}");
            assert_eq!(&event.stream, stream);
            assert!(matches!(event.event, CounterEvent::Added { amount, .. } if amount == from));
            from += 1;
        }
    }
    assert_eq!(from, events, "forward, pages of {max}");
    let mut next = u64::MAX;
    let mut expected = events;
    loop {
        let page = log
            .read_stream(stream, next, Direction::Backward, max)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        for event in &page {
            expected -= 1;
            assert_eq!(event.version, expected, "backward, pages of {max}");
        }
        if expected == 0 {
            break;
        }
        next = expected - 1;
    }
    assert_eq!(expected, 0, "backward, pages of {max}");
    from
}

fn multi_thread(workers: usize, blocking: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(blocking)
        .enable_all()
        .build()
        .unwrap()
}

/// Page sizes on both sides of the caller's-thread limit (512).
const SIZES: [usize; 6] = [65, 500, 512, 513, 1000, 3000];

/// Opens a log in `dir` and fills it, on `runtime`.
fn filled(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) -> Arc<Log> {
    Arc::new(runtime.block_on(async {
        let log = Log::open(dir, test_options()).await.unwrap().0;
        fill(&log).await;
        log
    }))
}

fn close(runtime: &tokio::runtime::Runtime, log: Arc<Log>) {
    let log = Arc::into_inner(log).unwrap();
    runtime.block_on(log.close()).unwrap();
}

/// Every stream at every size, from `block_on` and from spawned tasks.
#[test]
fn multi_thread_runtime_reads_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = multi_thread(2, 8);
    let log = filled(&runtime, dir.path());
    runtime.block_on(read_every_stream(&log, &SIZES));
    let tasks: Vec<_> = [&SIZES[..2], &SIZES[2..4], &SIZES[4..]]
        .into_iter()
        .map(|sizes| {
            let log = log.clone();
            let sizes = sizes.to_vec();
            runtime.spawn(async move { read_every_stream(&log, &sizes).await })
        })
        .collect();
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    close(&runtime, log);
}

/// A current-thread runtime (`#[tokio::test]`'s default) reads the same pages.
#[tokio::test]
async fn current_thread_runtime_reads_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), test_options()).await.unwrap();
    fill(&log).await;
    read_every_stream(&log, &SIZES).await;
    log.close().await.unwrap();
}

/// One worker, many readers at once, each read joined with a timer in its task: none is
/// lost or stuck.
#[test]
fn one_worker_many_readers_and_joined_futures() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = multi_thread(1, 8);
    let log = filled(&runtime, dir.path());
    let [a, b, dense, _] = streams();
    let tasks: Vec<_> = (0..9)
        .map(|reader| {
            let log = log.clone();
            let stream = [&a, &b, &dense][reader % 3].clone();
            runtime.spawn(async move {
                let (read, ()) = tokio::join!(
                    read_all_pages(&log, &stream, 500, EVENTS),
                    tokio::time::sleep(Duration::from_millis(1))
                );
                read
            })
        })
        .collect();
    runtime.block_on(async {
        for task in tasks {
            let read = tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("a reader is stuck")
                .unwrap();
            assert_eq!(read, EVENTS);
        }
    });
    close(&runtime, log);
}

/// Tasks of a `LocalSet` on a multi-threaded runtime read every page too.
#[test]
fn local_set_on_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = multi_thread(2, 8);
    let log = filled(&runtime, dir.path());
    let local = tokio::task::LocalSet::new();
    let reader = log.clone();
    local.block_on(&runtime, async move {
        tokio::task::spawn_local(async move { read_every_stream(&reader, &[500, 1000]).await })
            .await
            .unwrap()
    });
    close(&runtime, log);
}

/// A blocking-pool task that holds its thread until released (or 60 s).
struct BusyPool {
    release: std::sync::mpsc::Sender<()>,
    blocker: tokio::task::JoinHandle<()>,
}

impl BusyPool {
    /// Starts the task and returns once it holds its thread.
    fn start(runtime: &tokio::runtime::Runtime) -> BusyPool {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, is_started) = std::sync::mpsc::channel::<()>();
        let blocker = runtime.spawn_blocking(move || {
            started.send(()).unwrap();
            let _ = released.recv_timeout(Duration::from_secs(60));
        });
        is_started.recv().unwrap();
        BusyPool { release, blocker }
    }

    /// Frees the thread and waits for the task to end.
    fn release(self, runtime: &tokio::runtime::Runtime) {
        self.release.send(()).unwrap();
        runtime.block_on(self.blocker).unwrap();
    }
}

/// With the blocking pool's only thread busy until the read is done, a page of 500 events
/// lying together comes back (read on the caller's thread), from a spawned task and from
/// `block_on`; a page spread thin comes back once the pool is free again.
#[test]
fn a_dense_page_does_not_wait_for_a_busy_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = multi_thread(2, 1);
    let log = filled(&runtime, dir.path());
    let [a, _, dense, _] = streams();
    for in_task in [true, false] {
        let busy = BusyPool::start(&runtime);
        let read = {
            let log = log.clone();
            let dense = dense.clone();
            async move {
                log.read_stream(&dense, 1000, Direction::Forward, 500)
                    .await
                    .unwrap()
            }
        };
        let page = if in_task {
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), runtime.spawn(read))
                    .await
                    .map(Result::unwrap)
            })
        } else {
            runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), read).await })
        };
        busy.release(&runtime);
        let versions: Vec<u64> = page
            .expect("the dense page waited for the busy blocking pool")
            .iter()
            .map(|event| event.version)
            .collect();
        assert_eq!(versions, (1000..1500).collect::<Vec<u64>>());
        // Spread over ~1,000 positions: the pool, free now.
        let spread = runtime
            .block_on(log.read_stream(&a, 1000, Direction::Forward, 500))
            .unwrap();
        assert_eq!(spread.len(), 500);
        assert_eq!(spread[0].version, 1000);
    }
    close(&runtime, log);
}

/// Reopened after a clean close, the log answers before sled has opened (the recent file); a
/// page that needs sled then is not read on the caller's thread, which would wait for sled's
/// open (or a rebuild of the index) there: it waits for the blocking pool instead.
#[test]
fn a_page_needing_sled_before_it_opened_goes_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = multi_thread(2, 1);
    close(&runtime, filled(&runtime, dir.path()));
    let log = Arc::new(
        runtime
            .block_on(Log::open(dir.path(), test_options()))
            .unwrap()
            .0,
    );
    let busy = BusyPool::start(&runtime);
    let [_, _, dense, _] = streams();
    let read = {
        let log = log.clone();
        runtime.spawn(async move {
            log.read_stream(&dense, 1000, Direction::Forward, 500)
                .await
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !read.is_finished(),
        "the page was read on the caller's thread before sled had opened"
    );
    busy.release(&runtime);
    let page = runtime.block_on(read).unwrap();
    assert_eq!(page.len(), 500);
    assert_eq!(page[0].version, 1000);
    // Sled is open now: the same page no longer needs the pool.
    let again = runtime
        .block_on(log.read_stream(&streams()[2], 1000, Direction::Forward, 500))
        .unwrap();
    assert_eq!(again.len(), 500);
    close(&runtime, log);
}
