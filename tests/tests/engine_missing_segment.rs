//! A segment removed behind the engine's back (a mistaken `rm`, an incomplete backup copy) is
//! detected by `verify`, by a read-only open and by a writer open, on a compacted and an
//! uncompacted log: the manifest lists every segment. A failed open changes nothing, and only an
//! explicit repair accepts the loss (reporting exactly which segments and positions it gave up).

use logbook::inspect::{self, Inspector, NoProgress, RepairMode, Severity};
use logbook::{BuiltinEvent, BuiltinLog, Projections, StreamId};
use logbook_tests::test_options;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SEGMENT_BYTES_MAX: u64 = 4096;

fn options() -> logbook::LogbookOptions {
    let mut options = test_options();
    options.wal.segment_bytes_max = SEGMENT_BYTES_MAX;
    options
}

async fn open(dir: &Path) -> logbook::Result<BuiltinLog> {
    let storage = Arc::new(logbook_wal::FileStorage::new());
    BuiltinLog::open_with(storage, dir, options(), Projections::new())
        .await
        .map(|(log, _)| log)
}

async fn post(log: &BuiltinLog, room: &str, count: usize) {
    let stream = StreamId::room(room).unwrap();
    let created = BuiltinEvent::from_json("room.created", json!({ "name": room })).unwrap();
    log.execute(&stream, created).await.unwrap();
    for index in 0..count {
        let body = format!("{room} message {index} {}", "x".repeat(120));
        let message = BuiltinEvent::from_json(
            "room.message_posted",
            json!({ "message_id": format!("m{index}"), "author": "ada", "body": body }),
        )
        .unwrap();
        log.execute(&stream, message).await.unwrap();
    }
}

/// Builds a log of several segments with a snapshot; `compacted` deletes a room and compacts.
async fn build(dir: &Path, compacted: bool) {
    let log = open(dir).await.unwrap();
    for room in ["alpha", "beta", "gamma", "delta"] {
        post(&log, room, 30).await;
    }
    log.log().snapshot().await.unwrap();
    if compacted {
        log.log()
            .delete_stream(
                &StreamId::room("beta").unwrap(),
                logbook::ExpectedVersion::Any,
            )
            .await
            .unwrap();
        let report = log.log().compact().await.unwrap();
        assert!(report.records_dropped > 0, "{report:?}");
    }
    post(&log, "epsilon", 10).await;
    log.close().await.unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    found.sort();
    found
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn remove_segment(path: &Path) {
    std::fs::remove_file(path).unwrap();
    let sidecar = path.with_extension("idx");
    if sidecar.exists() {
        std::fs::remove_file(sidecar).unwrap();
    }
}

fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_removed_segment_is_detected_by_verify_read_only_and_writer_opens() {
    for compacted in [false, true] {
        let original = tempfile::tempdir().unwrap();
        build(original.path(), compacted).await;
        let all = segments(original.path());
        assert!(all.len() >= 4, "{} segments", all.len());
        let last = all.len() - 1;
        let cases: [(&str, Vec<usize>); 4] = [
            ("first", vec![0]),
            ("middle", vec![last / 2]),
            ("last", vec![last]),
            ("last two", vec![last - 1, last]),
        ];
        for (name, victims) in cases {
            let context = format!("compacted {compacted}, {name} removed");
            let copy = tempfile::tempdir().unwrap();
            copy_dir(original.path(), copy.path());
            let removed: Vec<PathBuf> = victims
                .iter()
                .map(|&index| {
                    copy.path()
                        .join("wal")
                        .join(all[index].file_name().unwrap())
                })
                .collect();
            for path in &removed {
                remove_segment(path);
            }
            let first_missing = base_of(&removed[0]);

            let report = inspect::verify(copy.path(), &NoProgress).unwrap();
            assert!(!report.is_clean(), "{context}: {report:?}");
            let missing: Vec<_> = report
                .findings
                .iter()
                .filter(|finding| {
                    finding.severity == Severity::Corruption && finding.reason.contains("missing")
                })
                .collect();
            assert_eq!(
                missing.len(),
                removed.len(),
                "{context}: {:?}",
                report.findings
            );
            let reason = &missing[0].reason;
            assert!(
                reason.contains(&format!("positions {first_missing}.."))
                    || reason.contains(&format!("positions from {first_missing} ")),
                "{context}: {reason}"
            );

            let Err(error) = Inspector::open(copy.path()) else {
                panic!("{context}: a read-only open succeeded");
            };
            assert!(
                matches!(
                    &error,
                    logbook::Error::Wal(logbook_wal::Error::MissingSegment { first_position, .. })
                        if *first_position == first_missing
                ),
                "{context}: {error}"
            );

            let before = contents(copy.path());
            let Err(error) = open(copy.path()).await else {
                panic!("{context}: a writer open succeeded");
            };
            assert!(
                matches!(
                    &error,
                    logbook::Error::Damaged {
                        wal: logbook_wal::Error::MissingSegment { first_position, .. },
                        ..
                    } if *first_position == first_missing
                ),
                "{context}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains("missing") && message.contains("repair"),
                "{message}"
            );
            assert_eq!(
                contents(copy.path()),
                before,
                "{context}: a refused open changes nothing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_accepts_a_missing_segment_and_says_which_positions_it_gave_up() {
    let original = tempfile::tempdir().unwrap();
    build(original.path(), true).await;
    let all = segments(original.path());
    let log = open(original.path()).await.unwrap();
    let end = log.log().stats().durable_position;
    log.close().await.unwrap();

    // The middle segment: the positions it held are lost, the ones after it are kept.
    let middle = &all[all.len() / 2];
    let next_base = base_of(&all[all.len() / 2 + 1]);
    remove_segment(middle);
    let dry = inspect::repair(original.path(), RepairMode::DryRun).unwrap();
    assert!(dry.drops_anything());
    assert!(
        open(original.path()).await.is_err(),
        "a dry run changes nothing"
    );
    let report = inspect::repair(original.path(), RepairMode::Apply).unwrap();
    let lost: Vec<_> = report
        .recovery
        .manifest_findings
        .iter()
        .filter_map(|finding| match finding {
            logbook_wal::manifest::Finding::Missing {
                base,
                last_position,
                ..
            } => Some((*base, *last_position)),
            _ => None,
        })
        .collect();
    assert_eq!(lost, vec![(base_of(middle), Some(next_base - 1))]);
    assert!(
        report.snapshots_removed.iter().all(|path| !path.exists()),
        "{report:?}"
    );
    assert!(
        inspect::verify(original.path(), &NoProgress)
            .unwrap()
            .is_clean()
    );
    let log = open(original.path()).await.unwrap();
    assert_eq!(
        log.log().stats().durable_position,
        end,
        "the positions after the missing segment are kept"
    );
    post(&log, "zeta", 2).await;
    assert!(log.log().stats().durable_position > end);
    let snapshot = log.log().snapshot().await.unwrap();
    log.close().await.unwrap();

    // The last two segments: the end of the log is lost; the snapshot past the new end is
    // evidence, not something an open deletes, until repair accepts the loss.
    let all = segments(original.path());
    assert_eq!(log_snapshot(original.path()), snapshot.path);
    let snapshot = snapshot.path;
    for path in &all[all.len() - 2..] {
        remove_segment(path);
    }
    assert!(open(original.path()).await.is_err());
    assert!(snapshot.exists(), "a refused open keeps the evidence");
    let report = inspect::repair(original.path(), RepairMode::Apply).unwrap();
    assert!(report.drops_anything(), "{report:?}");
    let log = open(original.path()).await.unwrap();
    log.close().await.unwrap();
    assert!(
        inspect::verify(original.path(), &NoProgress)
            .unwrap()
            .is_clean()
    );
}

fn log_snapshot(dir: &Path) -> PathBuf {
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "snap"))
        .collect();
    snapshots.sort();
    snapshots.pop().expect("a snapshot")
}
