//! The no-gap proof through the engine (issue 13, "Done when"): many tasks in several processes
//! append through `Logbook` on one PostgreSQL database while subscribers in other processes
//! follow it with `Logbook::subscribe`. Every subscriber sees every acknowledged event exactly
//! once, in position order, the same sequence on every subscriber and every replica's
//! projection; the acknowledged positions are dense and so is every stream's versions.
//!
//! Processes (the children are this test binary itself, run with `--exact` on
//! [`child_process_entry_point`] and an environment variable saying the role):
//! - writers `w0` (this process), `w1`, `w2`: each runs [`TASKS_PER_WRITER`] tasks; a task's
//!   round is up to three concurrent appends: its own stream with `ExpectedVersion::Exact` (it
//!   alone writes there), a stream shared by every task with `Any`, and every
//!   [`HOT_EVERY`] rounds the one stream every task contends for with `Exact` of the version
//!   its replica applied, retried with the actual version on `WrongExpectedVersion` (the
//!   optimistic-concurrency path across replicas). Writer replicas snapshot every
//!   [`SNAPSHOT_EVERY`] events into the shared snapshot table.
//! - subscribers `s0`, `s1`: open their replica and subscribe from position 1 before any write;
//!   a second subscription from position 1 starts once the first saw a third of the events
//!   (catch-up, then live, while the writers still write). `s1` keeps a live buffer of one
//!   batch and reads slowly, so it lags and falls back to reading the log again and again.
//!
//! Every replica checks that its projection equals what it followed (or read); the parent checks
//! every subscriber's sequence against the acknowledgements, and a replica opened afterwards
//! (from a writer's snapshot plus the tail). A deadline fails the test with a message instead
//! of hanging; the children are killed when the parent fails.

use logbook::{
    Error, ExpectedVersion, Logbook, LogbookOptions, Projection, ProjectionHandle, Projections,
    RecordedEvent, StreamId, Subscription,
};
use logbook_tests::pg::Cluster;
use logbook_tests::{CounterEvent, added, test_options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ROLE_VAR: &str = "LOGBOOK_PG_ENGINE_NO_GAP_ROLE";
const URL_VAR: &str = "LOGBOOK_PG_ENGINE_NO_GAP_URL";
const DIR_VAR: &str = "LOGBOOK_PG_ENGINE_NO_GAP_DIR";
/// Writer processes: the children `w1`.. plus this one, `w0`.
const WRITER_PROCESSES: usize = 3;
const SUBSCRIBER_PROCESSES: usize = 2;
const TASKS_PER_WRITER: usize = 8;
const ROUNDS_PER_TASK: usize = 40;
const SHARED_STREAMS: usize = 3;
/// The stream every task of every writer appends to with `Exact`, every `HOT_EVERY` rounds.
const HOT_STREAM: &str = "room/hot";
const HOT_EVERY: usize = 3;
/// `Exact` attempts on the hot stream before a task gives up (it never should).
const EXACT_ATTEMPTS_MAX: u64 = 10_000;
/// Writer replicas snapshot every this many applied events.
const SNAPSHOT_EVERY: u64 = 250;
/// The whole run, children included; each child also stops itself a little later.
const DEADLINE: Duration = Duration::from_secs(120);
const CHILD_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);
/// The slow subscriber (`s1`) pauses this long every `SLOW_EVERY` events.
const SLOW_PAUSE: Duration = Duration::from_millis(2);
const SLOW_EVERY: usize = 50;
const READ_PAGE: usize = 500;

/// One event as acknowledged, followed or applied: (position, stream, version, note).
type Entry = (u64, String, u64, String);

/// Events in the task's append to its own stream in `round`.
fn own_count(round: usize) -> usize {
    1 + round % 3
}

/// Events in the task's append to a shared stream in `round`.
fn shared_count(task: usize, round: usize) -> usize {
    1 + (task + round) % 2
}

/// Events in the task's append to the hot stream in `round` (0: none that round).
fn hot_count(round: usize) -> usize {
    usize::from(round.is_multiple_of(HOT_EVERY))
}

/// Every event the writers will have acknowledged once done (the log holds nothing else).
fn planned_total() -> usize {
    let per_writer: usize = (0..TASKS_PER_WRITER)
        .flat_map(|task| {
            (0..ROUNDS_PER_TASK)
                .map(move |round| own_count(round) + shared_count(task, round) + hot_count(round))
        })
        .sum();
    WRITER_PROCESSES * per_writer
}

/// Every applied `Added` event in the order applied: what a replica's projection saw.
#[derive(Debug, Clone, Default)]
struct Applied(Vec<Entry>);

impl Projection for Applied {
    type Event = CounterEvent;

    fn id(&self) -> &'static str {
        "test.no_gap_applied"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<CounterEvent>) {
        self.0.push(entry(event));
    }

    fn snapshot(&self) -> logbook::EventResult<Vec<u8>> {
        logbook::snapshot_state(&self.0)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook::EventResult<()> {
        self.0 = logbook::restore_state("test.no_gap_applied", 1, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, _stream: &StreamId) -> bool {
        false
    }

    fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
        false
    }
}

fn entry(event: &RecordedEvent<CounterEvent>) -> Entry {
    let note = match &event.event {
        CounterEvent::Added { note, .. } => note.clone(),
        CounterEvent::Reset => String::from("reset"),
    };
    (
        event.position,
        event.stream.to_string(),
        event.version,
        note,
    )
}

type Log = Logbook<CounterEvent>;

async fn open_replica(url: &str, options: LogbookOptions) -> (Log, ProjectionHandle<Applied>) {
    let mut projections = Projections::new();
    let applied = projections.register(Applied::default());
    let (log, _) = Log::open_postgres_with_projections(url, options, projections)
        .await
        .expect("open a replica");
    (log, applied)
}

fn writer_options() -> LogbookOptions {
    let mut options = test_options();
    options.snapshots.every_events = SNAPSHOT_EVERY;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_in_other_processes_see_every_acknowledged_event_once_in_order() {
    let started = Instant::now();
    let total = planned_total();
    let database = Cluster::shared().create_database();
    let url = database.connection_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut children = Children::new(url.clone(), dir.path().to_path_buf(), started);

    // The subscribers open (the schema is created by whichever replica comes first) and
    // subscribe before anything is written; this replica opens meanwhile.
    for n in 0..SUBSCRIBER_PROCESSES {
        children.spawn(&format!("s{n}"));
    }
    let (log, applied) = open_replica(&url, writer_options()).await;
    let ready = |role: String| dir.path().join(format!("ready-{role}"));
    for n in 0..SUBSCRIBER_PROCESSES {
        children.wait_for_file(&ready(format!("s{n}"))).await;
    }
    for n in 1..WRITER_PROCESSES {
        children.spawn(&format!("w{n}"));
    }
    for n in 1..WRITER_PROCESSES {
        children.wait_for_file(&ready(format!("w{n}"))).await;
    }
    // Every writer starts at once.
    mark(dir.path(), "go");
    let mut local = Some(tokio::spawn(write_as(log.clone(), "w0".to_string())));
    let mut results = BTreeMap::new();
    loop {
        children.check_deadline("the writers and subscribers to finish");
        if local
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
        {
            let (acks, conflicts) = local
                .take()
                .expect("local writer")
                .await
                .expect("writer w0");
            results.insert("w0".to_string(), (acks, conflicts));
        }
        if children.all_exited() && local.is_none() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let writing = started.elapsed();

    let mut acknowledged = Vec::new();
    let mut conflicts = 0;
    for n in 1..WRITER_PROCESSES {
        let (acks, lost) = read_acks(dir.path(), &format!("w{n}"));
        results.insert(format!("w{n}"), (acks, lost));
    }
    for (acks, lost) in results.into_values() {
        acknowledged.extend(acks);
        conflicts += lost;
    }
    acknowledged.sort();
    check_acknowledged(&acknowledged, total);
    assert!(
        conflicts > 0,
        "no Exact append on {HOT_STREAM} ever lost: the optimistic-concurrency path never ran"
    );

    let mut sequences = 0;
    for n in 0..SUBSCRIBER_PROCESSES {
        for which in ["a", "b"] {
            let name = format!("s{n}-{which}");
            let seen = read_entries(&dir.path().join(format!("seen-{name}")));
            same_sequence(&name, &seen, &acknowledged);
            sequences += 1;
        }
    }

    // This replica (a writer) applied exactly the log, and so does one opened now, from the
    // newest snapshot a writer left plus the tail.
    check_replica("w0", &log, &applied, total, started).await;
    log.close().await.expect("close w0");
    let mut projections = Projections::new();
    let late = projections.register(Applied::default());
    let (replica, report) = Log::open_postgres_with_projections(&url, test_options(), projections)
        .await
        .expect("open a late replica");
    assert!(
        report.snapshot.used.is_some(),
        "the late replica found no snapshot (writers snapshot every {SNAPSHOT_EVERY} events): {:?}",
        report.snapshot
    );
    assert!(
        report.snapshot.rejected.is_empty(),
        "the late replica rejected snapshots the writers left: {:?}",
        report.snapshot.rejected
    );
    same_sequence("the late replica", &late.read().0, &acknowledged);
    replica.close().await.expect("close the late replica");
    println!(
        "{total} events by {} tasks in {WRITER_PROCESSES} processes, {conflicts} lost Exact \
         appends retried, {sequences} subscriptions in {SUBSCRIBER_PROCESSES} processes: \
         writing and following {writing:?}, all {:?}",
        WRITER_PROCESSES * TASKS_PER_WRITER,
        started.elapsed()
    );
}

/// The child side: a no-op unless run by the test above with its environment variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_entry_point() {
    let (Ok(role), Ok(url), Ok(dir)) = (
        std::env::var(ROLE_VAR),
        std::env::var(URL_VAR),
        std::env::var(DIR_VAR),
    ) else {
        return;
    };
    let started = Instant::now();
    let dir = PathBuf::from(dir);
    // Never outlive a parent that died without killing this process.
    std::thread::spawn({
        let role = role.clone();
        move || {
            std::thread::sleep(DEADLINE + CHILD_GRACE);
            eprintln!("child {role}: still running after {DEADLINE:?}; exiting");
            std::process::exit(3);
        }
    });
    if role.starts_with('s') {
        subscribe_as(&url, &dir, &role, started).await;
    } else {
        let (log, applied) = open_replica(&url, writer_options()).await;
        mark(&dir, &format!("ready-{role}"));
        wait_for_go(&dir, &role, started).await;
        let (acks, conflicts) = write_as(log.clone(), role.clone()).await;
        let mut text = format!("conflicts {conflicts}\n");
        text.push_str(&entries_text(&acks));
        write_file(&dir, &format!("acks-{role}"), &text);
        // Once every writer is done, this replica applied exactly the log.
        check_replica(&role, &log, &applied, planned_total(), started).await;
        log.close().await.expect("close");
    }
}

/// A subscriber replica: two subscriptions from position 1 (one before any write, one once the
/// first saw a third of the events), then the projection against what they saw.
async fn subscribe_as(url: &str, dir: &Path, role: &str, started: Instant) {
    let total = planned_total();
    let slow = role == "s1";
    let mut options = test_options();
    if slow {
        options.subscription_buffer = 1;
    }
    let (log, applied) = open_replica(url, options).await;
    let first = log.subscribe(1);
    mark(dir, &format!("ready-{role}"));
    let progress = Arc::new(AtomicUsize::new(0));
    let first = tokio::spawn(follow(
        first,
        format!("{role}-a"),
        total,
        slow,
        progress.clone(),
        started,
    ));
    while progress.load(Ordering::SeqCst) < total / 3 && !first.is_finished() {
        assert!(
            started.elapsed() < DEADLINE,
            "{role}: the first subscription never reached a third of the events"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let second = follow(
        log.subscribe(1),
        format!("{role}-b"),
        total,
        slow,
        Arc::new(AtomicUsize::new(0)),
        started,
    )
    .await;
    let first = first.await.expect("the first subscription");
    for (which, seen) in [("a", &first), ("b", &second)] {
        write_file(dir, &format!("seen-{role}-{which}"), &entries_text(seen));
    }
    let last = first.last().map_or(0, |entry| entry.0);
    within(started, log.wait_applied(last), || {
        format!("{role}: the projection never applied position {last}")
    })
    .await
    .expect("wait_applied");
    same_sequence(&format!("{role}'s projection"), &applied.read().0, &first);
    log.close().await.expect("close");
}

/// Follows `subscription` until `total` events; asserts ascending positions as it goes.
async fn follow(
    mut subscription: Subscription<CounterEvent>,
    name: String,
    total: usize,
    slow: bool,
    progress: Arc<AtomicUsize>,
    started: Instant,
) -> Vec<Entry> {
    let mut seen: Vec<Entry> = Vec::with_capacity(total);
    let mut last = 0;
    while seen.len() < total {
        let next = within(started, subscription.next(), || {
            format!(
                "subscription {name}: nothing after position {last} ({} of {total} events seen)",
                seen.len()
            )
        })
        .await;
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(error)) => panic!("subscription {name} after position {last}: {error}"),
            None => panic!("subscription {name} ended after position {last}"),
        };
        assert!(
            event.position > last,
            "subscription {name}: position {} after {last}",
            event.position
        );
        last = event.position;
        seen.push(entry(&event));
        progress.store(seen.len(), Ordering::SeqCst);
        if slow && seen.len().is_multiple_of(SLOW_EVERY) {
            tokio::time::sleep(SLOW_PAUSE).await;
        }
    }
    seen
}

/// `future`'s output, or a panic with `what` once the run's deadline passed.
async fn within<T>(
    started: Instant,
    future: impl std::future::Future<Output = T>,
    what: impl FnOnce() -> String,
) -> T {
    let left = DEADLINE.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, future).await {
        Ok(output) => output,
        Err(_) => panic!("{} (deadline {DEADLINE:?})", what()),
    }
}

/// [`TASKS_PER_WRITER`] tasks appending concurrently through `log`; returns every acknowledged
/// event and how many `Exact` appends lost to another writer (and were retried).
async fn write_as(log: Log, writer: String) -> (Vec<Entry>, u64) {
    let tasks: Vec<_> = (0..TASKS_PER_WRITER)
        .map(|task| tokio::spawn(write_task(log.clone(), writer.clone(), task)))
        .collect();
    let mut acked = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let (acks, lost) = task.await.expect("writer task");
        acked.extend(acks);
        conflicts += lost;
    }
    (acked, conflicts)
}

async fn write_task(log: Log, writer: String, task: usize) -> (Vec<Entry>, u64) {
    let stream = |name: String| StreamId::new(name).expect("stream id");
    let own = stream(format!("room/{writer}-{task}"));
    let hot = stream(HOT_STREAM.to_string());
    let mut own_version: Option<u64> = None;
    let mut acked = Vec::new();
    let mut conflicts = 0;
    for round in 0..ROUNDS_PER_TASK {
        let notes = |kind: &str, count: usize| -> Vec<String> {
            (0..count)
                .map(|n| format!("{writer}.{task}.{round}.{kind}.{n}"))
                .collect()
        };
        let shared = stream(format!("room/shared-{}", (task + round) % SHARED_STREAMS));
        // Only this task writes its own stream: `Exact` of its last version always holds.
        let own_expected = own_version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let own_append = append(&log, &own, own_expected, notes("own", own_count(round)));
        let shared_append = append(
            &log,
            &shared,
            ExpectedVersion::Any,
            notes("shared", shared_count(task, round)),
        );
        let hot_append = async {
            match hot_count(round) {
                0 => (Vec::new(), 0),
                count => append_exact(&log, &hot, notes("hot", count)).await,
            }
        };
        let (own_acks, shared_acks, (hot_acks, lost)) =
            tokio::join!(own_append, shared_append, hot_append);
        own_version = own_acks.last().map(|entry| entry.2);
        acked.extend(own_acks);
        acked.extend(shared_acks);
        acked.extend(hot_acks);
        conflicts += lost;
    }
    (acked, conflicts)
}

/// Appends one event per note; panics on any failure.
async fn append(
    log: &Log,
    stream: &StreamId,
    expected: ExpectedVersion,
    notes: Vec<String>,
) -> Vec<Entry> {
    match try_append(log, stream, expected, &notes).await {
        Ok(acks) => acks,
        Err(error) => panic!("append to {stream} expecting {expected:?}: {error}"),
    }
}

/// Appends with `Exact` of the version this replica applied; on `WrongExpectedVersion` again
/// with the actual version the store reported. Returns the acks and the attempts that lost.
async fn append_exact(log: &Log, stream: &StreamId, notes: Vec<String>) -> (Vec<Entry>, u64) {
    let expected_for =
        |version: Option<u64>| version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
    let mut expected = expected_for(log.stream_version(stream).expect("stream_version"));
    for lost in 0..EXACT_ATTEMPTS_MAX {
        match try_append(log, stream, expected, &notes).await {
            Ok(acks) => return (acks, lost),
            Err(Error::WrongExpectedVersion {
                expected: refused,
                actual,
                ..
            }) => {
                assert_eq!(refused, expected, "the refusal names what was expected");
                assert!(
                    expected_for(actual) != expected,
                    "{stream}: refused {expected:?} although the actual version is {actual:?}"
                );
                expected = expected_for(actual);
            }
            Err(error) => panic!("append to {stream} expecting {expected:?}: {error}"),
        }
    }
    panic!("{stream}: no Exact append won in {EXACT_ATTEMPTS_MAX} attempts")
}

async fn try_append(
    log: &Log,
    stream: &StreamId,
    expected: ExpectedVersion,
    notes: &[String],
) -> logbook::Result<Vec<Entry>> {
    let events = notes.iter().map(|note| added(1, note)).collect();
    let result = log.append(stream, expected, events).await?;
    assert_eq!(
        result.last_position - result.first_position + 1,
        notes.len() as u64,
        "one position per event"
    );
    assert_eq!(
        result.version - result.first_version + 1,
        notes.len() as u64,
        "one version per event"
    );
    Ok(notes
        .iter()
        .enumerate()
        .map(|(n, note)| {
            (
                result.first_position + n as u64,
                stream.to_string(),
                result.first_version + n as u64,
                note.clone(),
            )
        })
        .collect())
}

/// Waits until `replica` applied `total` events, then checks its projection against the log
/// read back through it.
async fn check_replica(
    name: &str,
    replica: &Log,
    applied: &ProjectionHandle<Applied>,
    total: usize,
    started: Instant,
) {
    within(started, replica.wait_applied(total as u64), || {
        format!("replica {name} never applied position {total}")
    })
    .await
    .expect("wait_applied");
    let mut log = Vec::with_capacity(total);
    let mut from = 1;
    loop {
        let page = replica.read_all(from, READ_PAGE).await.expect("read_all");
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        log.extend(page.iter().map(entry));
    }
    assert_eq!(log.len(), total, "replica {name}: the log's length");
    same_sequence(
        &format!("replica {name}'s projection"),
        &applied.read().0,
        &log,
    );
}

/// Acknowledged positions are 1..=total, each once, notes are unique, and each stream's
/// versions are dense and ascend with position.
fn check_acknowledged(acknowledged: &[Entry], total: usize) {
    assert_eq!(acknowledged.len(), total, "acknowledged events");
    for (index, (position, ..)) in acknowledged.iter().enumerate() {
        assert_eq!(
            *position,
            index as u64 + 1,
            "acknowledged positions are not dense: {:?}",
            acknowledged.get(index.saturating_sub(1)..=index)
        );
    }
    let notes: std::collections::BTreeSet<&str> =
        acknowledged.iter().map(|entry| entry.3.as_str()).collect();
    assert_eq!(notes.len(), total, "an event was acknowledged twice");
    let mut next_version: BTreeMap<&str, u64> = BTreeMap::new();
    for (position, stream, version, _) in acknowledged {
        let next = next_version.entry(stream).or_default();
        assert_eq!(
            *version, *next,
            "{stream}: version {version} at position {position}, expected {next}"
        );
        *next += 1;
    }
    let hot = next_version.get(HOT_STREAM).copied().unwrap_or(0) as usize;
    let per_writer_hot: usize = (0..ROUNDS_PER_TASK).map(hot_count).sum();
    assert_eq!(
        hot,
        WRITER_PROCESSES * TASKS_PER_WRITER * per_writer_hot,
        "{HOT_STREAM}'s events"
    );
}

/// Panics naming the first difference when `seen` is not `expected` entry for entry.
fn same_sequence(name: &str, seen: &[Entry], expected: &[Entry]) {
    if let Some(index) =
        (0..seen.len().max(expected.len())).find(|&i| seen.get(i) != expected.get(i))
    {
        panic!(
            "{name}: {} events where {} were acknowledged; the first difference at index \
             {index}: saw {:?}, acknowledged {:?}",
            seen.len(),
            expected.len(),
            seen.get(index),
            expected.get(index)
        );
    }
}

fn entries_text(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|(position, stream, version, note)| format!("{position} {stream} {version} {note}\n"))
        .collect()
}

fn parse_entry(line: &str) -> Entry {
    let words: Vec<&str> = line.split(' ').collect();
    let [position, stream, version, note] = words[..] else {
        panic!("a malformed line: {line:?}");
    };
    (
        position.parse().expect("position"),
        stream.to_string(),
        version.parse().expect("version"),
        note.to_string(),
    )
}

fn read_entries(path: &Path) -> Vec<Entry> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .lines()
        .map(parse_entry)
        .collect()
}

/// A writer child's acks file: its acknowledged events and lost `Exact` appends.
fn read_acks(dir: &Path, role: &str) -> (Vec<Entry>, u64) {
    let path = dir.join(format!("acks-{role}"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let mut lines = text.lines();
    let conflicts = lines
        .next()
        .and_then(|line| line.strip_prefix("conflicts "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{}: no conflicts line", path.display()));
    (lines.map(parse_entry).collect(), conflicts)
}

/// Writes `name` in `dir` whole (a temporary file renamed into place).
fn write_file(dir: &Path, name: &str, text: &str) {
    let temporary = dir.join(format!("{name}.partial"));
    std::fs::write(&temporary, text).expect("write a result file");
    std::fs::rename(&temporary, dir.join(name)).expect("rename a result file");
}

fn mark(dir: &Path, name: &str) {
    write_file(dir, name, "");
}

async fn wait_for_go(dir: &Path, role: &str, started: Instant) {
    while !dir.join("go").exists() {
        assert!(
            started.elapsed() < DEADLINE,
            "{role}: the parent never said go"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The child processes; every one still running is killed when this is dropped (the test
/// failed), so none outlives the test.
struct Children {
    url: String,
    dir: PathBuf,
    started: Instant,
    /// (role, process, exited)
    running: Vec<(String, Child, bool)>,
}

impl Children {
    fn new(url: String, dir: PathBuf, started: Instant) -> Children {
        Children {
            url,
            dir,
            started,
            running: Vec::new(),
        }
    }

    fn spawn(&mut self, role: &str) {
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "child_process_entry_point",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, role)
            .env(URL_VAR, &self.url)
            .env(DIR_VAR, &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a child test process");
        self.running.push((role.to_string(), child, false));
    }

    /// True once every child exited successfully; panics when one failed.
    fn all_exited(&mut self) -> bool {
        for (role, child, exited) in &mut self.running {
            if *exited {
                continue;
            }
            match child.try_wait().expect("try_wait") {
                Some(status) if status.success() => *exited = true,
                Some(status) => {
                    *exited = true;
                    panic!("child {role} failed ({status}); its message is above")
                }
                None => {}
            }
        }
        self.running.iter().all(|(_, _, exited)| *exited)
    }

    fn check_deadline(&mut self, what: &str) {
        self.all_exited();
        if self.started.elapsed() > DEADLINE {
            let waiting: Vec<&str> = self
                .running
                .iter()
                .filter(|(_, _, exited)| !exited)
                .map(|(role, ..)| role.as_str())
                .collect();
            panic!("waited {DEADLINE:?} for {what}; children still running: {waiting:?}");
        }
    }

    /// Waits for a child's file, failing when a child failed or the deadline passed.
    async fn wait_for_file(&mut self, path: &Path) {
        while !path.exists() {
            self.check_deadline(&format!("{}", path.display()));
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child, exited) in &mut self.running {
            if !*exited {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
