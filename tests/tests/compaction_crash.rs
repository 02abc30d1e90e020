//! A crash while a snapshot is written or a compaction runs never loses an acknowledged event and
//! never leaves the log unopenable.
//!
//! - In memory: `snapshot()` and `compact()` are stopped at each of their I/O steps in turn (an
//!   injected EIO or ENOSPC on the n-th write, or EIO on the n-th sync), then the storage
//!   crashes in every `CrashMode`. Reopen must succeed; every acknowledged event must read back
//!   identical, except those a delete, truncation or newer latest-only record acknowledged
//!   before the crash allows compaction to purge (those may or may not be there, intact if so);
//!   stream versions continue; the next compaction succeeds. Seeds per mode:
//!   `LOGBOOK_COMPACTION_CRASH_SEEDS` (default 2).
//! - SIGKILL: a child process (this test binary again) appends with `SyncPolicy::Always`,
//!   deletes and truncates streams, and compacts and snapshots in a loop, printing what was
//!   acknowledged; it is killed at random moments, and every printed record outside a purged
//!   stream must be there and intact. Cycles: `LOGBOOK_COMPACTION_KILL_CYCLES` (default 12);
//!   seed: `LOGBOOK_COMPACTION_KILL_SEED`.

use logbook::model::{JobProgress, RoomMessagePosted};
use logbook::{
    BuiltinEvent, BuiltinLog, Direction, ExpectedVersion, LogbookOptions, MemoryStorage,
    Projections, RawEvent, StreamId,
};
use logbook_tests::child::LineChild;
use logbook_tests::projection_support::{
    job_claimed, job_heartbeat, job_progress, job_queued, message_posted, room_created,
};
use logbook_tests::{
    MEMORY_DIR, SplitMix, memory_files, memory_storage_with, seed_from_env, test_options,
};
use logbook_wal::{CrashMode, FaultKind, FaultOp, OpenMode, Storage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn options() -> LogbookOptions {
    let mut options = test_options();
    options.wal.segment_bytes_max = 4096;
    // Only on-demand snapshots: a periodic one could consume an injected fault.
    options.snapshots.every_events = 0;
    options
}

fn room(name: &str) -> StreamId {
    StreamId::room(name).unwrap()
}

fn job(name: &str) -> StreamId {
    StreamId::job(name).unwrap()
}

async fn open(storage: &Arc<MemoryStorage>) -> logbook::Result<BuiltinLog> {
    let opened =
        BuiltinLog::open_with(storage.clone(), MEMORY_DIR, options(), Projections::new()).await?;
    Ok(opened.0)
}

async fn post(log: &BuiltinLog, stream: &StreamId, serial: u64) -> logbook::Result<u64> {
    let body = format!("message {serial} of {stream}: some words to make it a chat line");
    let event = message_posted(&format!("m{serial}"), "ada", &body);
    Ok(log.execute(stream, event).await?.first_position)
}

/// The history every crash starts from, closed and durable, with what it acknowledged.
struct Base {
    files: Vec<(PathBuf, Vec<u8>)>,
    acked: BTreeMap<u64, RawEvent>,
    /// Acknowledged events a compaction may purge: deleted stream, truncated versions,
    /// superseded latest-only records.
    may_vanish: BTreeSet<u64>,
}

async fn write_base_history(log: &BuiltinLog) {
    let (keep, gone, session) = (room("keep"), room("gone"), room("session"));
    for stream in [&keep, &gone, &session] {
        log.execute(stream, room_created("Room")).await.unwrap();
    }
    let (done, busy) = (job("done"), job("busy"));
    let now = log.log().now_ms();
    for stream in [&done, &busy] {
        log.execute(stream, job_queued("export")).await.unwrap();
        log.execute(stream, job_claimed("w1", now + 60_000))
            .await
            .unwrap();
    }
    for serial in 0..30u64 {
        post(log, &keep, serial).await.unwrap();
        post(log, &gone, serial).await.unwrap();
        post(log, &session, serial).await.unwrap();
        if serial % 3 == 0 {
            let percent = serial as u8 * 3;
            log.execute(&done, job_progress("copy", percent))
                .await
                .unwrap();
            log.execute(&busy, job_progress("copy", percent))
                .await
                .unwrap();
            let lease = now + 60_000 + serial * 1000;
            log.execute(&busy, job_heartbeat("w1", lease))
                .await
                .unwrap();
        }
    }
    let succeeded = BuiltinEvent::from_json("job.succeeded", serde_json::json!({"result": "ok"}));
    log.execute(&done, succeeded.unwrap()).await.unwrap();
    // An older snapshot, so that compaction also removes one.
    log.log().snapshot().await.unwrap();
    log.log()
        .delete_stream(&gone, ExpectedVersion::Any)
        .await
        .unwrap();
    log.log().truncate_stream(&session, 16).await.unwrap();
    for serial in 30..40u64 {
        post(log, &keep, serial).await.unwrap();
    }
}

/// The acknowledged events compaction may purge: every event of the deleted room, the
/// truncated versions, and latest-only records superseded by a newer one of their type in a
/// stream that finished after them (the policy's rule; the live job keeps all of its records).
fn may_vanish(acked: &BTreeMap<u64, RawEvent>) -> BTreeSet<u64> {
    let policy = logbook::CompactionPolicy::default();
    let mut newest: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut finished: BTreeMap<String, u64> = BTreeMap::new();
    for raw in acked.values() {
        let envelope = &raw.envelope;
        let stream = envelope.stream().to_string();
        if policy.is_latest_only(envelope.event_type()) {
            let key = (stream.clone(), envelope.event_type().into());
            newest.insert(key, envelope.stream_version());
        }
        if policy.is_finished(envelope.event_type()) {
            finished.insert(stream, envelope.stream_version());
        }
    }
    let superseded = |stream: &str, event_type: &str, version: u64| {
        let key = (stream.to_owned(), event_type.to_owned());
        let newer = newest.get(&key).is_some_and(|&newest| version < newest);
        newer && finished.get(stream).is_some_and(|&end| version < end)
    };
    let vanishing = acked.values().filter(|raw| {
        let envelope = &raw.envelope;
        let (stream, version) = (envelope.stream().as_str(), envelope.stream_version());
        stream == "room/gone"
            || (stream == "room/session" && version < 16)
            || superseded(stream, envelope.event_type(), version)
    });
    vanishing.map(|raw| raw.position).collect()
}

async fn base() -> Base {
    let storage = Arc::new(MemoryStorage::new());
    let log = open(&storage).await.unwrap();
    write_base_history(&log).await;
    let acked: BTreeMap<u64, RawEvent> = log
        .log()
        .read_all_raw(1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|raw| (raw.position, raw))
        .collect();
    log.close().await.unwrap();
    let may_vanish = may_vanish(&acked);
    Base {
        files: memory_files(&storage),
        acked,
        may_vanish,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Snapshot,
    Compact,
}

/// One injected fault: which operation, which kind, how many of that operation pass first.
#[derive(Debug, Clone, Copy)]
struct Fault {
    op: FaultOp,
    kind: FaultKind,
    skip: u64,
}

/// True when the fault is still pending: it was not reached by the action. Probes with writes
/// or syncs of a scratch file outside the log (`skip + 1` operations are enough to reach it).
fn fault_pending(storage: &MemoryStorage, fault: Fault, probe: u64) -> bool {
    let dir = Path::new("/probe");
    storage.create_dir_all(dir).unwrap();
    let file = storage
        .open_file(&dir.join(format!("p{probe}")), OpenMode::CreateNew)
        .unwrap();
    (0..=fault.skip).any(|_| match fault.op {
        FaultOp::Write => file.write_all_at(0, b"probe").is_err(),
        FaultOp::Sync => file.sync_data().is_err(),
    })
}

/// Reopens after the crash and checks every acknowledged event; returns a description of a
/// failure instead of panicking, so the caller can name the step and mode.
async fn check_after_crash(
    storage: &Arc<MemoryStorage>,
    base: &Base,
    extra: &BTreeMap<u64, RawEvent>,
) -> Result<(), String> {
    let log = open(storage)
        .await
        .map_err(|error| format!("reopen failed: {error}"))?;
    check_acked(&log, base, extra).await?;
    // Versions continue where the acknowledged appends left them, purged or not.
    for stream in [room("keep"), room("session"), job("done"), job("busy")] {
        let last_acked = base
            .acked
            .values()
            .chain(extra.values())
            .filter(|raw| *raw.envelope.stream() == stream)
            .map(|raw| raw.envelope.stream_version())
            .max();
        let version = log.log().stream_version(&stream);
        let version = version.map_err(|error| format!("{stream}: {error}"))?;
        if version < last_acked {
            return Err(format!(
                "{stream} is at {version:?}, {last_acked:?} acknowledged"
            ));
        }
    }
    let keep = room("keep");
    let version = log.log().stream_version(&keep).map_err(|e| e.to_string())?;
    let appended = log
        .execute(&keep, message_posted("after", "bob", "after the crash"))
        .await
        .map_err(|error| format!("append after reopen: {error}"))?;
    if Some(appended.version) != version.map(|version| version + 1) {
        return Err(format!(
            "append after reopen got version {}",
            appended.version
        ));
    }
    // A compaction on the recovered log works and keeps everything acknowledged.
    log.log()
        .compact()
        .await
        .map_err(|error| format!("compaction after reopen: {error}"))?;
    check_acked(&log, base, extra).await?;
    log.close().await.map_err(|error| error.to_string())?;
    Ok(())
}

async fn check_acked(
    log: &BuiltinLog,
    base: &Base,
    extra: &BTreeMap<u64, RawEvent>,
) -> Result<(), String> {
    let found: BTreeMap<u64, RawEvent> = log
        .log()
        .read_all_raw(1, usize::MAX)
        .await
        .map_err(|error| format!("read_all_raw: {error}"))?
        .into_iter()
        .map(|raw| (raw.position, raw))
        .collect();
    for (position, raw) in base.acked.iter().chain(extra) {
        match found.get(position) {
            Some(stored) if stored == raw => {}
            Some(stored) => return Err(format!("event {position} changed: {stored:?}")),
            None if base.may_vanish.contains(position) => {}
            None => return Err(format!("acknowledged event {position} lost")),
        }
    }
    // The stream index agrees with the log for the streams that keep everything.
    for stream in [room("keep"), job("busy")] {
        let events = log
            .log()
            .read_stream(&stream, 0, Direction::Forward, 10_000)
            .await
            .map_err(|error| format!("read_stream {stream}: {error}"))?;
        let positions: Vec<u64> = events.iter().map(|event| event.position).collect();
        let expected: Vec<u64> = found
            .values()
            .filter(|raw| *raw.envelope.stream() == stream)
            .map(|raw| raw.position)
            .collect();
        if positions != expected {
            return Err(format!(
                "read_stream {stream} gave {positions:?}, log has {expected:?}"
            ));
        }
    }
    Ok(())
}

/// What one crash run found.
struct Run {
    /// The fault was never reached: the action has fewer steps than `skip + 1`.
    fault_pending: bool,
    action_failed: bool,
}

async fn crash_run(base: &Base, action: Action, fault: Fault, mode: CrashMode) -> Run {
    let storage = Arc::new(memory_storage_with(&base.files));
    let log = open(&storage).await.unwrap();
    let keep = room("keep");
    let mut extra = BTreeMap::new();
    let mut acknowledge = |raws: Vec<RawEvent>| {
        for raw in raws {
            extra.insert(raw.position, raw);
        }
    };
    let position = post(&log, &keep, 100).await.unwrap();
    acknowledge(log.log().read_all_raw(position, 1).await.unwrap());

    storage.inject_fault(fault.op, fault.skip, fault.kind);
    let outcome = match action {
        Action::Snapshot => log.log().snapshot().await.map(drop),
        Action::Compact => log.log().compact().await.map(drop),
    };
    let pending = fault_pending(&storage, fault, fault.skip);
    storage.clear_faults();
    // The log may carry on after a failed compaction: what it acknowledges must survive too.
    if let Ok(position) = post(&log, &keep, 101).await {
        acknowledge(log.log().read_all_raw(position, 1).await.unwrap());
    }
    storage.crash(mode);
    let _ = log.close().await; // its files are stale: nothing more reaches the disk

    if let Err(failure) = check_after_crash(&storage, base, &extra).await {
        panic!("{action:?}, {fault:?}, then {mode:?} (action: {outcome:?}): {failure}");
    }
    Run {
        fault_pending: pending,
        action_failed: outcome.is_err(),
    }
}

fn crash_modes(seeds: u64) -> Vec<CrashMode> {
    let mut modes = vec![CrashMode::LoseUnsynced, CrashMode::KeepUnsynced];
    for seed in 0..seeds {
        modes.push(CrashMode::KeepPrefix { seed });
        modes.push(CrashMode::Reorder { seed });
        modes.push(CrashMode::Tear { seed });
    }
    modes
}

/// Stops `action` at each write or sync step in turn, crashing in every mode at each.
async fn crash_at_every_step(base: &Base, action: Action, op: FaultOp, kind: FaultKind) -> u64 {
    let seeds = std::env::var("LOGBOOK_COMPACTION_CRASH_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2);
    let mut steps_failed = 0;
    for skip in 0..1000 {
        let fault = Fault { op, kind, skip };
        let mut pending = false;
        for mode in crash_modes(seeds) {
            let run = crash_run(base, action, fault, mode).await;
            pending |= run.fault_pending;
            steps_failed += u64::from(run.action_failed && mode == CrashMode::LoseUnsynced);
        }
        if pending {
            eprintln!("{action:?} {op:?} {kind:?}: {skip} steps, {steps_failed} made it fail");
            assert!(skip > 0, "the action must do I/O of this kind");
            return skip;
        }
    }
    panic!("{action:?} never ran out of {op:?} steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_step_of_snapshot_and_compaction_loses_no_acknowledged_event() {
    let started = Instant::now();
    let base = base().await;
    assert!(
        base.may_vanish.len() > 30,
        "the history gives compaction work"
    );
    let mut steps = 0;
    for action in [Action::Snapshot, Action::Compact] {
        for (op, kind) in [
            (FaultOp::Write, FaultKind::Eio),
            (FaultOp::Write, FaultKind::Enospc),
            (FaultOp::Sync, FaultKind::Eio),
        ] {
            steps += crash_at_every_step(&base, action, op, kind).await;
        }
    }
    eprintln!("{steps} steps crashed, {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of a child process.

const CHILD_ENV: &str = "LOGBOOK_COMPACTION_CHILD";

fn child_options() -> LogbookOptions {
    let mut options = test_options();
    options.wal.segment_bytes_max = 16 << 10;
    // Periodic snapshots in the background, besides the on-demand ones.
    options.snapshots.every_events = 40;
    options
}

/// A line the child prints.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// An acknowledged event: position, stream, version, the token in its body or message.
    Ack {
        position: u64,
        stream: String,
        version: u64,
        token: String,
        latest_only: bool,
    },
    /// Printed before a delete or truncation is requested: from then on, the stream's events
    /// (below `before`) may be purged.
    Purging {
        stream: String,
        before: u64,
    },
    /// Printed before a compaction starts / after it ends.
    Compacting,
    Compacted,
}

fn parse_line(line: &str) -> Option<Line> {
    let fields: Vec<&str> = line.split(' ').collect();
    Some(match fields[..] {
        [
            kind @ ("ack" | "ack-latest"),
            position,
            stream,
            version,
            token,
        ] => Line::Ack {
            position: position.parse().ok()?,
            stream: stream.to_owned(),
            version: version.parse().ok()?,
            token: token.to_owned(),
            latest_only: kind == "ack-latest",
        },
        ["purging", stream, before] => Line::Purging {
            stream: stream.to_owned(),
            before: before.parse().ok()?,
        },
        ["compacting"] => Line::Compacting,
        ["compacted"] => Line::Compacted,
        _ => return None,
    })
}

/// The child: appends, purges, compacts and snapshots until it is killed.
async fn child_main(dir: &Path, cycle: u64, seed: u64) {
    let mut random = SplitMix(seed);
    let (log, _) = BuiltinLog::open(dir, child_options()).await.unwrap();
    let keep = room(&format!("keep{cycle}"));
    let work = job(&format!("work{cycle}"));
    log.execute(&keep, room_created("Keep")).await.unwrap();
    log.execute(&work, job_queued("export")).await.unwrap();
    let now = log.log().now_ms();
    log.execute(&work, job_claimed("w1", now + 3_600_000))
        .await
        .unwrap();
    let ack = |kind: &str, stream: &StreamId, result: logbook::AppendResult, token: &str| {
        let (position, version) = (result.first_position, result.version);
        println!("{kind} {position} {stream} {version} {token}");
    };
    for round in 0u64.. {
        let doomed = room(&format!("doomed{cycle}-{round}"));
        log.execute(&doomed, room_created("Doomed")).await.unwrap();
        for serial in 0..random.range(5, 30) {
            let token = format!("c{cycle}r{round}s{serial}");
            let stream = if random.range(0, 3) == 0 {
                &doomed
            } else {
                &keep
            };
            let event = message_posted(&format!("m{serial}"), "ada", &token);
            let result = log.execute(stream, event).await.unwrap();
            ack("ack", stream, result, &token);
            if random.range(0, 4) == 0 {
                let token = format!("p{cycle}r{round}s{serial}");
                let event = BuiltinEvent::from(JobProgress {
                    stage: Some("copy".into()),
                    percent: Some((serial % 100) as u8),
                    done: None,
                    total: None,
                    message: Some(token.clone()),
                });
                let result = log.execute(&work, event).await.unwrap();
                ack("ack-latest", &work, result, &token);
            }
        }
        if round % 2 == 0 {
            println!("purging {doomed} {}", u64::MAX);
            log.log()
                .delete_stream(&doomed, ExpectedVersion::Any)
                .await
                .unwrap();
        } else {
            let last = log.log().stream_version(&doomed).unwrap().unwrap_or(0);
            let before = random.range(0, last + 2);
            println!("purging {doomed} {before}");
            log.log().truncate_stream(&doomed, before).await.unwrap();
        }
        match random.range(0, 3) {
            0 => drop(log.log().snapshot().await.unwrap()),
            _ => {
                println!("compacting");
                log.log().compact().await.unwrap();
                println!("compacted");
            }
        }
    }
}

#[test]
fn compaction_child() {
    // Not a test of its own: the body of the child process of the SIGKILL test.
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let fields: Vec<&str> = spec.split('|').collect();
    let [dir, cycle, seed] = fields[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(child_main(
        Path::new(dir),
        cycle.parse().unwrap(),
        seed.parse().unwrap(),
    ));
}

fn spawn_child(dir: &Path, cycle: u64, seed: u64) -> LineChild {
    let exe = std::env::current_exe().unwrap();
    LineChild::spawn(
        Command::new(exe)
            .args([
                "compaction_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}|{cycle}|{seed}", dir.display())),
    )
}

/// When the parent kills a child.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// After this long.
    After(Duration),
    /// This long after the first compaction that starts once `Duration` has passed (or at
    /// the latest after 10 s).
    InCompaction(Duration, Duration),
}

/// Runs one child, kills it with SIGKILL as `kill` says, returns its complete lines.
fn run_and_kill(dir: &Path, cycle: u64, seed: u64, kill: Kill) -> Vec<Line> {
    let child = spawn_child(dir, cycle, seed);
    let mut lines = Vec::new();
    match kill {
        Kill::After(lifetime) => std::thread::sleep(lifetime),
        Kill::InCompaction(at_least, delay) => {
            let started = Instant::now();
            let deadline = started + Duration::from_secs(10);
            while let Ok(line) = child.recv_until(deadline) {
                let Some(parsed) = parse_line(&line) else {
                    continue;
                };
                let compacting = matches!(parsed, Line::Compacting);
                lines.push(parsed);
                if compacting && started.elapsed() >= at_least {
                    break;
                }
            }
            std::thread::sleep(delay);
        }
    }
    // SIGKILL: no destructor, no final sync, no unlock.
    lines.extend(child.kill().iter().filter_map(|line| parse_line(line)));
    lines
}

/// What the parent knows after every cycle so far.
#[derive(Default)]
struct Ledger {
    acks: BTreeMap<u64, (String, u64, String, bool)>,
    /// Streams that may have lost events below a version.
    purged: BTreeMap<String, u64>,
    kills_while_compacting: u64,
    compactions: u64,
    /// Opens after a kill that found the stream index unusable and rebuilt it.
    index_rebuilds: u64,
}

impl Ledger {
    fn absorb(&mut self, lines: Vec<Line>) {
        let mut compacting = false;
        for line in lines {
            match line {
                Line::Ack {
                    position,
                    stream,
                    version,
                    token,
                    latest_only,
                } => {
                    self.acks
                        .insert(position, (stream, version, token, latest_only));
                }
                Line::Purging { stream, before } => {
                    let entry = self.purged.entry(stream).or_default();
                    *entry = (*entry).max(before);
                }
                Line::Compacting => compacting = true,
                Line::Compacted => {
                    compacting = false;
                    self.compactions += 1;
                }
            }
        }
        self.kills_while_compacting += u64::from(compacting);
    }

    fn may_vanish(&self, stream: &str, version: u64, latest_only: bool) -> bool {
        latest_only
            || self
                .purged
                .get(stream)
                .is_some_and(|&before| version < before)
    }
}

fn token_of(raw: &RawEvent) -> Option<String> {
    match raw.decode::<BuiltinEvent>().ok()?.event {
        BuiltinEvent::RoomMessagePosted(RoomMessagePosted { body, .. }) => Some(body),
        BuiltinEvent::JobProgress(progress) => progress.message,
        _ => None,
    }
}

/// Reopens the killed child's log and checks every acknowledged event it printed.
async fn check_killed_log(dir: &Path, ledger: &mut Ledger) -> usize {
    let (log, report) = BuiltinLog::open(dir, child_options())
        .await
        .expect("the log opens after SIGKILL");
    ledger.index_rebuilds += u64::from(report.log.index.rebuilt.is_some());
    let found: BTreeMap<u64, RawEvent> = log
        .log()
        .read_all_raw(1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|raw| (raw.position, raw))
        .collect();
    let mut checked = 0;
    let mut last_versions: BTreeMap<&str, u64> = BTreeMap::new();
    for (position, (stream, version, token, latest_only)) in &ledger.acks {
        let vanishable = ledger.may_vanish(stream, *version, *latest_only);
        let Some(raw) = found.get(position) else {
            assert!(vanishable, "acknowledged event {position} of {stream} lost");
            continue;
        };
        assert_eq!(raw.envelope.stream().as_str(), stream, "event {position}");
        assert_eq!(raw.envelope.stream_version(), *version, "event {position}");
        assert_eq!(
            token_of(raw).as_deref(),
            Some(token.as_str()),
            "event {position}"
        );
        checked += 1;
        if !ledger.purged.contains_key(stream) {
            let last = last_versions.entry(stream).or_default();
            *last = (*last).max(*version);
        }
    }
    // Versions continue, and the stream index finds every acknowledged event of a kept room.
    for (stream, last) in last_versions {
        let stream = StreamId::new(stream).unwrap();
        let version = log.log().stream_version(&stream).unwrap();
        assert!(version.is_some_and(|version| version >= last), "{stream}");
        if stream.as_str().starts_with("room/keep") {
            let events = log
                .log()
                .read_stream(&stream, 0, Direction::Forward, 100_000)
                .await
                .unwrap();
            let versions: BTreeSet<u64> = events.iter().map(|event| event.version).collect();
            let acked = ledger
                .acks
                .values()
                .filter(|(name, ..)| name == stream.as_str())
                .map(|(_, version, ..)| *version);
            for version in acked {
                assert!(
                    versions.contains(&version),
                    "{stream} v{version} not indexed"
                );
            }
        }
    }
    log.close().await.unwrap();
    checked
}

#[test]
fn acknowledged_events_survive_sigkill_during_compaction() {
    if std::env::var(CHILD_ENV).is_ok() {
        return; // this process is a child
    }
    let cycles: u64 = std::env::var("LOGBOOK_COMPACTION_KILL_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(12);
    let mut random = SplitMix(seed_from_env("LOGBOOK_COMPACTION_KILL_SEED"));
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut ledger = Ledger::default();
    let mut checked = 0;
    for cycle in 0..cycles {
        let lifetime = Duration::from_millis(random.range(300, 1500));
        // Every other kill aims at a compaction in progress.
        let kill = match cycle % 2 {
            0 => Kill::After(lifetime),
            _ => Kill::InCompaction(lifetime / 2, Duration::from_micros(random.range(0, 20_000))),
        };
        let lines = run_and_kill(&dir, cycle, random.next_u64(), kill);
        ledger.absorb(lines);
        checked = runtime.block_on(check_killed_log(&dir, &mut ledger));
    }
    eprintln!(
        "{cycles} kills ({} during a compaction), {} acknowledged events, {checked} present at \
         the end, {} compactions finished, {} stream index rebuilds, {:?}",
        ledger.kills_while_compacting,
        ledger.acks.len(),
        ledger.compactions,
        ledger.index_rebuilds,
        started.elapsed()
    );
    assert!(ledger.compactions > 0, "the children compacted");
    assert!(checked > 0, "the test checked events");
}
