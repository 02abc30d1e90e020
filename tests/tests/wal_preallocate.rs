//! Preallocated space (`WalOptions::preallocate_bytes`, `docs/format.md` "Preallocated space"):
//! the active segment grows by runs of zeros, not by every append; rolls and clean closes trim
//! the zeros, so sealed segments end with their last frame; after a power cut at any step, every
//! acknowledged append is still there and open reads a zero tail as the end of the data; zeros
//! at the end of a sealed segment are corruption; `verify` beside a live writer calls the zeros
//! preallocated space, not damage.

use logbook::inspect::{self, NoProgress, Severity};
use logbook::{ExpectedVersion, Logbook, StreamId};
use logbook_tests::{
    CounterEvent, MEMORY_DIR, added, memory_files, memory_segments, memory_storage_with, payload,
    positions, read_all, segment_frames, test_options,
};
use logbook_wal::{
    CrashMode, Error, FaultKind, FaultOp, MemoryStorage, RecoveryMode, SyncPolicy, Wal, WalOptions,
};
use std::path::Path;
use std::sync::Arc;

const RECORD: usize = 60;
const FRAME: u64 = 28 + RECORD as u64;

fn options(segment_bytes_max: u64, preallocate_bytes: u64) -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Always,
        segment_bytes_max,
        preallocate_bytes,
        ..WalOptions::default()
    }
}

fn open(
    storage: &MemoryStorage,
    options: &WalOptions,
) -> Result<(Wal, logbook_wal::RecoveryReport), Error> {
    Wal::open_with_storage(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        options.clone(),
    )
}

fn file_len(storage: &MemoryStorage, path: &Path) -> u64 {
    storage.file_contents(path).expect("segment file").len() as u64
}

#[test]
fn the_file_grows_by_a_run_of_zeros_not_by_every_append() {
    let storage = MemoryStorage::new();
    let options = options(64 << 20, 4096);
    let (wal, _) = open(&storage, &options).unwrap();
    let path = memory_segments(&storage).pop().unwrap();
    wal.append(&payload(1, RECORD)).unwrap();
    let first = 32 + FRAME;
    assert_eq!(file_len(&storage, &path), first + 4096);
    // Every append that fits in the zeros leaves the length alone.
    let fitting = 4096 / FRAME;
    for position in 2..=1 + fitting {
        wal.append(&payload(position, RECORD)).unwrap();
        assert_eq!(file_len(&storage, &path), first + 4096, "append {position}");
    }
    // The next one passes the zeros: one more run, behind its own frame.
    let position = 2 + fitting;
    wal.append(&payload(position, RECORD)).unwrap();
    let data_end = 32 + position * FRAME;
    assert_eq!(file_len(&storage, &path), data_end + 4096);
    let bytes = storage.file_contents(&path).unwrap();
    let frames = segment_frames(&bytes);
    assert_eq!(frames.len() as u64, position, "the frames, then zeros");
    assert!(bytes[data_end as usize..].iter().all(|&byte| byte == 0));
    assert_eq!(
        positions(&read_all(&wal, 1)),
        (1..=position).collect::<Vec<_>>()
    );
    wal.close().unwrap();
    assert_eq!(
        file_len(&storage, &path),
        data_end,
        "a clean close trims the zeros"
    );
}

/// A disk with room for the frames but not for the zeros: the append succeeds (zeros are not
/// data), and the segment grows append by append until the next segment.
#[test]
fn a_full_disk_fails_the_zeros_not_the_append() {
    for kind in [FaultKind::Enospc, FaultKind::Eio] {
        let storage = MemoryStorage::new();
        let options = options(32 + 40 * FRAME, 4096);
        let (wal, _) = open(&storage, &options).unwrap();
        let path = memory_segments(&storage).pop().unwrap();
        // The first write of the first append is its run of zeros.
        storage.inject_fault(FaultOp::Write, 0, kind);
        assert_eq!(wal.append(&payload(1, RECORD)).unwrap(), 1, "{kind:?}");
        assert!(!wal.is_poisoned());
        // ENOSPC may have written a prefix of the zeros: that much stays, no more is tried.
        let first_len = file_len(&storage, &path);
        assert!(first_len < 32 + FRAME + 4096, "{kind:?}: {first_len}");
        for position in 2..=5 {
            assert_eq!(wal.append(&payload(position, RECORD)).unwrap(), position);
            assert_eq!(
                file_len(&storage, &path),
                first_len.max(32 + position * FRAME),
                "{kind:?}: no more zeros in this segment"
            );
        }
        // A batch too large for the rest of the segment rolls while what the failed run of
        // zeros wrote still lies past the last frame: the roll trims it (found by the fuzzer:
        // a sealed segment ending in zeros, refused at the next open).
        let batch: Vec<Vec<u8>> = (6..=45).map(|position| payload(position, RECORD)).collect();
        wal.append_batch(&batch).unwrap();
        let sealed = &wal.segments()[0];
        assert!(!sealed.active);
        assert_eq!(file_len(&storage, &path), sealed.bytes, "{kind:?}");
        drop(wal);
        storage.crash(CrashMode::LoseUnsynced);
        let (wal, _) = open(&storage, &options).unwrap();
        assert_eq!(positions(&read_all(&wal, 1)), (1..=45).collect::<Vec<_>>());
        wal.close().unwrap();
    }
}

#[test]
fn a_large_write_grows_the_file_by_itself() {
    let storage = MemoryStorage::new();
    let options = options(64 << 20, 4096);
    let (wal, _) = open(&storage, &options).unwrap();
    let path = memory_segments(&storage).pop().unwrap();
    // 24 frames: 2,112 bytes, over half of a run of zeros.
    let batch: Vec<Vec<u8>> = (1..=24).map(|position| payload(position, RECORD)).collect();
    wal.append_batch(&batch).unwrap();
    let data_end = 32 + 24 * FRAME;
    assert_eq!(
        file_len(&storage, &path),
        data_end,
        "no zeros behind a bulk write"
    );
    // A small append after it gets its run of zeros.
    wal.append(&payload(25, RECORD)).unwrap();
    assert_eq!(file_len(&storage, &path), data_end + FRAME + 4096);
    assert_eq!(positions(&read_all(&wal, 1)), (1..=25).collect::<Vec<_>>());
    wal.close().unwrap();
}

#[test]
fn sealed_segments_and_a_clean_close_end_with_their_last_frame() {
    let storage = MemoryStorage::new();
    // Runs of zeros larger than a segment: capped at the segment's limit.
    let options = options(32 + 10 * FRAME, 1 << 20);
    let (wal, _) = open(&storage, &options).unwrap();
    for position in 1..=95 {
        wal.append(&payload(position, RECORD)).unwrap();
    }
    let infos = wal.segments();
    assert!(infos.len() >= 9, "{infos:?}");
    for info in &infos {
        let len = file_len(&storage, &info.path);
        if info.active {
            assert_eq!(
                len, options.segment_bytes_max,
                "zeros up to the limit, no further"
            );
        } else {
            assert_eq!(len, info.bytes, "a sealed segment is trimmed: {info:?}");
        }
    }
    wal.close().unwrap();
    for info in &infos {
        assert_eq!(file_len(&storage, &info.path), info.bytes, "{info:?}");
    }
    let (wal, report) = open(&storage, &options).unwrap();
    assert_eq!(report.preallocated_bytes, 0);
    assert!(report.tail_cut.is_none(), "{report:?}");
    assert_eq!(positions(&read_all(&wal, 1)), (1..=95).collect::<Vec<_>>());
    wal.close().unwrap();
}

/// Small runs of zeros (a new run every other append) and small segments, so that the power
/// goes out in every kind of step: a run of zeros, a frame write, a sync, a trim at a roll, a
/// segment creation, the manifest, the trim at close.
#[test]
fn a_power_cut_at_any_step_loses_no_acknowledged_append() {
    let options = options(32 + 6 * FRAME, 3 * FRAME);
    let mut cuts = 0;
    let mut zero_tails = 0;
    for steps in 0..160u64 {
        for mode in [
            CrashMode::LoseUnsynced,
            CrashMode::KeepUnsynced,
            CrashMode::KeepPrefix { seed: steps },
            CrashMode::Reorder { seed: steps },
            CrashMode::Tear { seed: steps },
        ] {
            let context = format!("power cut after {steps} steps, {mode:?}");
            let storage = MemoryStorage::new();
            let (wal, _) = open(&storage, &options).unwrap();
            storage.halt_after(steps);
            let mut acknowledged = 0;
            for position in 1..=20 {
                match wal.append(&payload(position, RECORD)) {
                    Ok(at) => {
                        assert_eq!(at, position, "{context}");
                        acknowledged = position;
                    }
                    Err(_) => break,
                }
            }
            if wal.close().is_err() {
                cuts += 1;
            }
            storage.crash(mode);
            let (wal, report) =
                open(&storage, &options).unwrap_or_else(|error| panic!("{context}: {error}"));
            if report.preallocated_bytes > 0 {
                zero_tails += 1;
            }
            let records = read_all(&wal, 1);
            let found = positions(&records);
            assert!(
                found.len() as u64 >= acknowledged,
                "{context}: acknowledged up to {acknowledged}, found {found:?}"
            );
            assert_eq!(
                found,
                (1..=found.len() as u64).collect::<Vec<_>>(),
                "{context}"
            );
            for record in &records {
                assert_eq!(
                    record.payload,
                    payload(record.position, RECORD),
                    "{context}"
                );
            }
            // The log goes on from there, over any zeros, and says so after a reopen.
            let next = found.len() as u64 + 1;
            assert_eq!(
                wal.append(&payload(next, RECORD)).unwrap(),
                next,
                "{context}"
            );
            drop(wal);
            storage.crash(CrashMode::LoseUnsynced);
            let (wal, _) =
                open(&storage, &options).unwrap_or_else(|error| panic!("{context}: {error}"));
            assert_eq!(
                positions(&read_all(&wal, 1)),
                (1..=next).collect::<Vec<_>>(),
                "{context}"
            );
            wal.close().unwrap();
        }
    }
    assert!(
        cuts > 100,
        "the power went out mid-run in most rounds: {cuts}"
    );
    assert!(
        zero_tails > 0,
        "some cuts left preallocated zeros for open to read past"
    );
}

#[test]
fn zeros_at_the_end_of_a_sealed_segment_are_corruption() {
    let storage = MemoryStorage::new();
    let options = options(32 + 4 * FRAME, 1 << 20);
    let (wal, _) = open(&storage, &options).unwrap();
    for position in 1..=10 {
        wal.append(&payload(position, RECORD)).unwrap();
    }
    wal.close().unwrap();
    let sealed = memory_segments(&storage)[0].clone();
    let mut bytes = storage.file_contents(&sealed).unwrap();
    let end = bytes.len() as u64;
    bytes.resize(bytes.len() + 4096, 0);
    storage.set_file_contents(&sealed, bytes);
    match open(&storage, &options) {
        Err(Error::Corrupted {
            segment,
            offset,
            reason,
        }) => {
            assert_eq!((segment, offset), (sealed, end));
            assert!(
                reason.contains("zero bytes after the last frame") && reason.contains("sealed"),
                "{reason}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // A keep-intact repair drops just the zeros: every record stays.
    let repaired = memory_storage_with(&memory_files(&storage));
    let report = Wal::repair_keep_intact(
        Arc::new(repaired.clone()),
        Path::new(MEMORY_DIR),
        &options,
        |_| Ok::<(), Error>(()),
    )
    .unwrap();
    assert_eq!(report.regions.len(), 1, "{report:?}");
    assert_eq!(
        (report.regions[0].start, report.regions[0].end),
        (end, end + 4096)
    );
    assert_eq!(report.records_kept, 10);
    let (wal, _) = open(&repaired, &options).unwrap();
    assert_eq!(positions(&read_all(&wal, 1)), (1..=10).collect::<Vec<_>>());
    wal.close().unwrap();
    let salvage = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..options
    };
    let (wal, report) = open(&storage, &salvage).unwrap();
    let salvaged = report.salvage.expect("salvage cuts there");
    assert_eq!(salvaged.offset, end);
    assert_eq!(positions(&read_all(&wal, 1)), (1..=4).collect::<Vec<_>>());
}

/// `logbook verify` beside a live writer: the zeros ahead of the writer are a note, not a tail
/// or corruption.
#[tokio::test]
async fn verify_beside_a_live_writer_notes_the_preallocated_space() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let (log, _) = Logbook::<CounterEvent>::open(&dir, test_options())
        .await
        .unwrap();
    let stream = StreamId::new("counter/1").unwrap();
    for amount in 0..3 {
        log.append(&stream, ExpectedVersion::Any, vec![added(amount, "note")])
            .await
            .unwrap();
    }
    let report = inspect::verify(&dir, &NoProgress).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(
        !report
            .findings
            .iter()
            .any(|finding| finding.severity >= Severity::Tail),
        "{report:?}"
    );
    assert!(
        report
            .findings
            .iter()
            .any(|finding| finding.severity == Severity::Note
                && finding.reason.contains("preallocated space")),
        "{report:?}"
    );
    assert!(report.events >= 3, "{report:?}");
    log.close().await.unwrap();
    let report = inspect::verify(&dir, &NoProgress).unwrap();
    assert!(
        !report
            .findings
            .iter()
            .any(|finding| finding.reason.contains("preallocated")),
        "a clean close trims the zeros: {report:?}"
    );
}
