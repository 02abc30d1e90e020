//! The golden log: `tests/fixtures/golden-log-v1/` holds a small log written by the first
//! version of the built-in model (every built-in event type at least once, a deleted stream, a
//! truncated stream), and `tests/fixtures/golden-log-v1.digest` the digest of the state it must
//! rebuild: each projection's snapshot bytes, the streams and their versions, room histories,
//! run event pages, and the interrupted report with its resume plans. Every future version
//! must rebuild the same digest from it: projection code that changes what the log means fails
//! here instead of slipping through. (A change of meaning that is intended gets a new fixture,
//! `golden-log-v2`, next to this one; this one stays.)
//!
//! `GENERATE_GOLDEN=1 cargo test -p logbook-tests --test projection_golden_log` writes the
//! fixture and its digest again. The log is written on a manual clock, so generating twice
//! gives the same bytes.

#[path = "projection_golden_log/generate.rs"]
mod generate;

use logbook::{
    BuiltinEvent, BuiltinLog, HistoryRequest, Interrupted, ManualClock, Order, PageRequest,
    Projection, Projections,
};
use logbook_projection::projections::RunFilter;
use logbook_tests::digest;
use logbook_tests::projection_support::{
    BuiltinState, CLOCK_START_MS, OpenedLog, RoomEditsMirror, clocked_options,
};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden-log-v1")
}

fn digest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden-log-v1.digest")
}

/// Serializes the tests of this file: with `GENERATE_GOLDEN=1` the first one writes the
/// fixture, and none reads it half written.
static FIXTURE: Mutex<bool> = Mutex::new(false);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `check` on the fixture, generating it first when `GENERATE_GOLDEN=1`.
fn with_fixture(check: impl AsyncFnOnce()) {
    let mut generated = FIXTURE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = runtime();
    if std::env::var("GENERATE_GOLDEN").as_deref() == Ok("1") && !*generated {
        runtime.block_on(generate::generate());
        *generated = true;
    }
    runtime.block_on(check());
}

/// Copies the fixture's segments into a fresh directory (the log needs a writable directory
/// for its lock and stream index) and opens it.
async fn open_fixture(temp: &Path) -> OpenedLog {
    let wal = temp.join(logbook_wal::WAL_DIR_NAME);
    std::fs::create_dir_all(&wal).unwrap();
    let mut segments = 0;
    for entry in std::fs::read_dir(fixture_dir().join(logbook_wal::WAL_DIR_NAME)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, wal.join(path.file_name().unwrap())).unwrap();
        segments += 1;
    }
    assert!(segments > 0, "the fixture has segments");
    let mut projections = Projections::new();
    let edits = projections.register(RoomEditsMirror::default());
    let options = clocked_options(&ManualClock::new(CLOCK_START_MS));
    let (log, report) = BuiltinLog::open_with(
        Arc::new(logbook_wal::FileStorage::new()),
        temp,
        options,
        projections,
    )
    .await
    .expect("the golden log opens");
    OpenedLog { log, report, edits }
}

#[test]
fn the_golden_log_rebuilds_its_digest() {
    with_fixture(async || {
        let temp = tempfile::tempdir().unwrap();
        let opened = open_fixture(temp.path()).await;
        let (actual, readable) = digest_lines(&opened).await;
        opened.log.close().await.unwrap();
        let expected = std::fs::read_to_string(digest_path()).expect("the digest file");
        let expected: Vec<&str> = expected
            .lines()
            .filter(|line| !line.starts_with('#'))
            .collect();
        let actual: Vec<&str> = actual
            .lines()
            .filter(|line| !line.starts_with('#'))
            .collect();
        assert_eq!(
            actual, expected,
            "the state rebuilt from the golden log changed: projection code changed meaning. \
             What it rebuilds now:\n{readable}"
        );
    });
}

#[test]
fn every_golden_event_decodes() {
    with_fixture(async || {
        let temp = tempfile::tempdir().unwrap();
        let opened = open_fixture(temp.path()).await;
        let log = opened.log.log();
        let raws = log.read_all_raw(1, 100_000).await.unwrap();
        assert_eq!(raws.len() as u64, opened.report.log.events_replayed);
        assert_eq!(log.undecodable_events(), 0);
        let mut types = BTreeSet::new();
        for raw in &raws {
            let event_type = raw.envelope.event_type().to_owned();
            if raw.envelope.stream().as_str() == logbook::system::SYSTEM_STREAM {
                logbook::system::SystemEvent::decode(raw.envelope.payload())
                    .unwrap_or_else(|error| panic!("{event_type} at {}: {error}", raw.position));
            } else {
                raw.decode::<BuiltinEvent>()
                    .unwrap_or_else(|error| panic!("{event_type} at {}: {error}", raw.position));
            }
            types.insert(event_type);
        }
        for event_type in BuiltinEvent::EVENT_TYPES {
            assert!(
                types.contains(*event_type),
                "{event_type} missing from the log"
            );
        }
        for event_type in [
            logbook::system::STREAM_DELETED,
            logbook::system::STREAM_TRUNCATED,
        ] {
            assert!(
                types.contains(event_type),
                "{event_type} missing from the log"
            );
        }
        opened.log.close().await.unwrap();
    });
}

/// The digest of everything the log rebuilds, one line per part (so a failure names it), and
/// a total.
/// Returns the digest lines and the readable parts (to show what changed when they differ).
async fn digest_lines(opened: &OpenedLog) -> (String, String) {
    let state = BuiltinState::capture(opened).await;
    let mut out = String::new();
    let mut readable = String::new();
    let mut total = Vec::new();
    let mut line = |name: &str, version: Option<u16>, bytes: &[u8]| {
        let version = version.map_or(String::new(), |version| format!(" v{version}"));
        writeln!(out, "{name}{version} {:016x}", digest(bytes)).unwrap();
        total.extend_from_slice(bytes);
    };
    let mut part = |name: &str, text: String| {
        writeln!(readable, "--- {name}\n{text}").unwrap();
        text
    };
    for (projection, bytes) in state.snapshots() {
        let version = match projection {
            id if id == state.runs.id() => state.runs.state_version(),
            id if id == state.rooms.id() => state.rooms.state_version(),
            id if id == state.jobs.id() => state.jobs.state_version(),
            _ => state.edits.state_version(),
        };
        line(projection, Some(version), &bytes);
    }
    let mut streams = String::new();
    for (name, summary) in &state.streams {
        writeln!(
            streams,
            "{name} events={} last_version={} deleted={}",
            summary.events, summary.last_version, summary.deleted
        )
        .unwrap();
    }
    let streams = part("streams", streams);
    line("streams", None, streams.as_bytes());
    let histories = part("room_histories", room_histories(opened).await);
    line("room_histories", None, histories.as_bytes());
    let run_events = part("run_events", run_event_pages(opened).await);
    line("run_events", None, run_events.as_bytes());
    assert_eq!(opened.log.interrupted(), opened.report.interrupted);
    let interrupted = part(
        "interrupted",
        render_interrupted(&opened.report.interrupted),
    );
    line("interrupted", None, interrupted.as_bytes());
    let total_digest = digest(&total);
    (format!("{out}total {total_digest:016x}\n"), readable)
}

/// Every message of every room, oldest first, in pages of 2 (so cursors are exercised).
async fn room_histories(opened: &OpenedLog) -> String {
    let log = &opened.log;
    let rooms: Vec<String> = {
        let rooms = log.rooms().read();
        let page = rooms.list_rooms(true, &PageRequest::first(1000));
        page.items.iter().map(|room| room.room_id.clone()).collect()
    };
    let mut out = String::new();
    for room in rooms {
        let mut cursor = None;
        loop {
            let request = HistoryRequest {
                order: Order::OldestFirst,
                cursor,
                limit: 2,
            };
            let page = log.room_history(&room, request).await.unwrap();
            for message in &page.messages {
                writeln!(out, "{room} {}", serde_json::to_string(message).unwrap()).unwrap();
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    out
}

/// Every `run.event` of every run, newest first, in pages of 1.
async fn run_event_pages(opened: &OpenedLog) -> String {
    let log = &opened.log;
    let runs: Vec<String> = {
        let ledger = log.runs().read();
        let page = ledger.list_runs(&RunFilter::default(), &PageRequest::first(1000));
        page.items.iter().map(|run| run.run_id.clone()).collect()
    };
    let mut out = String::new();
    for run in runs {
        let mut cursor = None;
        loop {
            let (events, next) = log
                .run_events(&run, Order::NewestFirst, cursor, 1)
                .await
                .unwrap();
            for event in &events {
                let BuiltinEvent::RunEvent(run_event) = &event.event else {
                    panic!("run_events returned {}", event.event_type);
                };
                writeln!(
                    out,
                    "{run} position={} version={} at={} sequence={} type={} payload={}",
                    event.position,
                    event.version,
                    event.timestamp_ms,
                    run_event.sequence,
                    run_event.event_type,
                    run_event.payload
                )
                .unwrap();
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    out
}

/// The interrupted report, spelled out field by field (not `Debug`, whose format may change).
fn render_interrupted(interrupted: &Interrupted) -> String {
    let mut out = String::new();
    for run in &interrupted.runs {
        let checkpoint = run.checkpoint.as_ref().map(|checkpoint| {
            format!(
                "{:?}/{}/{}/{}",
                checkpoint.reason,
                checkpoint.data,
                checkpoint.recorded_at_ms,
                checkpoint.stream_version
            )
        });
        writeln!(
            out,
            "run {} kind={} status={} workflow={:?} checkpoint={checkpoint:?} last_sequence={:?} \
             updated_at={}",
            run.run_id,
            run.kind.as_str(),
            run.status.as_str(),
            run.workflow_id,
            run.last_run_event_sequence,
            run.updated_at_ms
        )
        .unwrap();
    }
    for workflow in &interrupted.workflows {
        let plan = &workflow.plan;
        writeln!(
            out,
            "workflow {} definition={} updated_at={}",
            workflow.workflow_id, workflow.definition_id, workflow.updated_at_ms
        )
        .unwrap();
        for phase in &plan.completed {
            writeln!(
                out,
                "  completed {} result={:?} children={:?}",
                phase.phase, phase.result_ref, phase.child_run_ids
            )
            .unwrap();
        }
        for phase in &plan.to_relaunch {
            let children: Vec<String> = phase
                .completed_children
                .iter()
                .map(|child| format!("{}={:?}", child.run_id, child.result_ref))
                .collect();
            writeln!(
                out,
                "  relaunch {} reason={:?} reuse={children:?} relaunch={:?}",
                phase.phase, phase.reason, phase.children_to_relaunch
            )
            .unwrap();
        }
    }
    for job in &interrupted.jobs {
        let progress = job.progress.as_ref().map(|progress| {
            format!(
                "{:?}/{:?}/{:?}/{:?}/{:?}/{}",
                progress.stage,
                progress.percent,
                progress.done,
                progress.total,
                progress.message,
                progress.recorded_at_ms
            )
        });
        writeln!(
            out,
            "job {} kind={} worker={} lease={} claimed_at={} attempts={} progress={progress:?}",
            job.job_id,
            job.kind,
            job.claim.worker,
            job.claim.lease_expires_at_ms,
            job.claim.claimed_at_ms,
            job.attempts
        )
        .unwrap();
    }
    out
}
