//! The manifest (`wal/MANIFEST`) makes the set of segment files provable: a failure at every
//! sync of a roll or of a segment removal, followed by a power loss, still opens with every
//! acknowledged record (never as "missing segment"); an unlisted segment with records, a
//! damaged manifest, and segments that end before the recorded position are refused; a log
//! written before manifests existed gets one at its first writer open.

use logbook_tests::{MEMORY_DIR, memory_segments, options, payload, positions, read_all};
use logbook_wal::manifest::{self, MANIFEST_FILE_NAME};
use logbook_wal::{
    CrashMode, Error, FaultKind, FaultOp, MemoryStorage, OpenMode, Storage, SyncPolicy, Wal,
};
use std::path::Path;
use std::sync::Arc;

/// Four 60-byte records per segment.
const SEGMENT_BYTES_MAX: u64 = 32 + 4 * (28 + 60);

fn open(storage: &MemoryStorage) -> Result<(Wal, logbook_wal::RecoveryReport), Error> {
    Wal::open_with_storage(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        options(SyncPolicy::Always, SEGMENT_BYTES_MAX),
    )
}

fn fill(wal: &Wal, from: u64, to: u64) {
    for position in from..=to {
        assert_eq!(wal.append(&payload(position, 60)).unwrap(), position);
    }
}

fn manifest_path() -> std::path::PathBuf {
    Path::new(MEMORY_DIR).join("wal").join(MANIFEST_FILE_NAME)
}

/// Every record is there with its payload, and the manifest lists exactly the segment files.
fn check(storage: &MemoryStorage, expected: &[u64], context: &str) {
    let (wal, report) = open(storage).unwrap_or_else(|error| panic!("{context}: {error}"));
    assert!(
        report
            .manifest_findings
            .iter()
            .all(|finding| !finding.is_error()),
        "{context}: {:?}",
        report.manifest_findings
    );
    let records = read_all(&wal, 1);
    assert_eq!(positions(&records), expected, "{context}");
    for record in &records {
        assert_eq!(record.payload, payload(record.position, 60), "{context}");
    }
    let listed: Vec<u64> = wal.manifest().live_bases().collect();
    let files: Vec<u64> = wal.segments().iter().map(|segment| segment.base).collect();
    assert_eq!(listed, files, "{context}");
    wal.close().unwrap();
}

#[test]
fn a_failed_sync_anywhere_in_a_roll_then_power_loss_loses_no_acknowledged_record() {
    let mut outcomes = [0; 2];
    for skip in 0..12 {
        let storage = MemoryStorage::new();
        let (wal, _) = open(&storage).unwrap();
        fill(&wal, 1, 4);
        // The fifth record rolls to a new segment: segment sync, header, directory, manifest.
        storage.inject_fault(FaultOp::Sync, skip, FaultKind::Eio);
        let acknowledged = wal.append(&payload(5, 60)).is_ok();
        outcomes[usize::from(acknowledged)] += 1;
        drop(wal);
        storage.crash(CrashMode::LoseUnsynced);
        let expected: Vec<u64> = if acknowledged {
            (1..=5).collect()
        } else {
            (1..=4).collect()
        };
        let context = format!("sync fault {skip}, acknowledged {acknowledged}");
        let (wal, _) = open(&storage).unwrap_or_else(|error| panic!("{context}: {error}"));
        let found = positions(&read_all(&wal, 1));
        assert!(found.starts_with(&expected[..4]), "{context}: {found:?}");
        if acknowledged {
            assert_eq!(found, expected, "{context}");
        }
        wal.close().unwrap();
    }
    assert!(
        outcomes[0] >= 4 && outcomes[1] > 0,
        "the faults hit every sync of the roll: {outcomes:?}"
    );
}

#[test]
fn a_failed_sync_anywhere_in_a_truncation_then_power_loss_never_looks_like_a_missing_segment() {
    let mut outcomes = [0; 2];
    for skip in 0..10 {
        for mode in [
            CrashMode::LoseUnsynced,
            CrashMode::KeepUnsynced,
            CrashMode::Reorder { seed: skip },
        ] {
            let storage = MemoryStorage::new();
            let (wal, _) = open(&storage).unwrap();
            fill(&wal, 1, 14);
            storage.inject_fault(FaultOp::Sync, skip, FaultKind::Eio);
            let truncated = wal.truncate_before(9).is_ok();
            outcomes[usize::from(truncated)] += 1;
            drop(wal);
            storage.crash(mode);
            let context = format!("sync fault {skip}, {mode:?}, truncated {truncated}");
            let (wal, _) = open(&storage).unwrap_or_else(|error| panic!("{context}: {error}"));
            let found = positions(&read_all(&wal, 1));
            // Either the first two segments are gone, or still whole; 9.. always remain.
            assert!(
                found == (1..=14).collect::<Vec<_>>() || found == (9..=14).collect::<Vec<_>>(),
                "{context}: {found:?}"
            );
            if truncated {
                assert_eq!(found, (9..=14).collect::<Vec<_>>(), "{context}");
            }
            wal.close().unwrap();
            check(&storage, &found, &context);
        }
    }
    assert!(
        outcomes[0] >= 6 && outcomes[1] > 0,
        "the faults hit every sync of the truncation: {outcomes:?}"
    );
}

#[test]
fn removing_any_segment_is_refused_by_writer_and_read_only_opens() {
    let storage = MemoryStorage::new();
    let (wal, _) = open(&storage).unwrap();
    fill(&wal, 1, 14);
    wal.close().unwrap();
    let segments = memory_segments(&storage);
    assert_eq!(segments.len(), 4);
    for (index, victim) in segments.iter().enumerate() {
        let copy = MemoryStorage::new();
        for path in storage.files() {
            if &path != victim {
                copy.set_file_contents(&path, storage.file_contents(&path).unwrap());
            }
        }
        copy.create_dir_all(&Path::new(MEMORY_DIR).join("wal"))
            .unwrap();
        let error = open(&copy).unwrap_err();
        let base = [1, 5, 9, 13][index];
        assert!(
            matches!(&error, Error::MissingSegment { first_position, last_position, .. }
                if *first_position == base
                    && *last_position == (index < 3).then(|| base + 3)),
            "segment {index}: {error}"
        );
        assert!(error.is_corruption());
        let read_only = Wal::open_read_only_with_storage(
            Arc::new(copy.clone()),
            Path::new(MEMORY_DIR),
            options(SyncPolicy::Always, SEGMENT_BYTES_MAX),
        );
        assert!(
            matches!(read_only, Err(Error::MissingSegment { .. })),
            "{read_only:?}"
        );
    }
}

#[test]
fn an_unlisted_segment_with_records_is_refused_and_an_empty_one_from_a_roll_adopted() {
    let storage = MemoryStorage::new();
    let (wal, _) = open(&storage).unwrap();
    fill(&wal, 1, 6);
    wal.close().unwrap();
    let segments = memory_segments(&storage);
    let wal_dir = Path::new(MEMORY_DIR).join("wal");

    // A copy of a segment from another log, named past the end.
    let foreign = wal_dir.join(logbook_wal::segment::file_name(100));
    let mut bytes = logbook_wal::segment::encode_header(100).to_vec();
    let first = storage.file_contents(&segments[0]).unwrap();
    bytes.extend_from_slice(&first[32..]);
    storage.set_file_contents(&foreign, bytes);
    assert!(matches!(
        open(&storage),
        Err(Error::UnexpectedSegment { .. })
    ));
    storage.remove_file(&foreign).unwrap();

    // A segment holding only its header, newer than the manifest: a roll cut short.
    let rolled = wal_dir.join(logbook_wal::segment::file_name(7));
    storage.set_file_contents(&rolled, logbook_wal::segment::encode_header(7).to_vec());
    let (wal, report) = open(&storage).unwrap();
    assert!(
        report
            .manifest_findings
            .iter()
            .any(|finding| matches!(finding, manifest::Finding::InterruptedRoll { .. })),
        "{report:?}"
    );
    assert_eq!(wal.manifest().live_bases().collect::<Vec<_>>(), [1, 5, 7]);
    fill(&wal, 7, 8);
    wal.close().unwrap();
    check(
        &storage,
        &(1..=8).collect::<Vec<_>>(),
        "after adopting the roll",
    );
}

#[test]
fn a_damaged_manifest_is_refused_naming_the_file_and_a_missing_one_is_written_again() {
    let storage = MemoryStorage::new();
    let (wal, report) = open(&storage).unwrap();
    assert!(report.manifest_created, "a new log gets a manifest");
    fill(&wal, 1, 6);
    wal.close().unwrap();
    let good = storage.file_contents(&manifest_path()).unwrap();

    let mut bad = good.clone();
    bad[20] ^= 1;
    storage.set_file_contents(&manifest_path(), bad);
    let error = open(&storage).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupted { segment, .. } if segment == &manifest_path()),
        "{error}"
    );

    // A log written before manifests existed: the first writer open writes one.
    storage.remove_file(&manifest_path()).unwrap();
    let (wal, report) = open(&storage).unwrap();
    assert!(report.manifest_created);
    wal.close().unwrap();
    assert_eq!(storage.file_contents(&manifest_path()).unwrap(), good);
}

#[test]
fn segments_that_end_before_the_recorded_position_are_refused() {
    let storage = MemoryStorage::new();
    let (wal, _) = open(&storage).unwrap();
    fill(&wal, 1, 10);
    wal.close().unwrap();
    // The manifest of a log that reached position 12 (as if a later roll had been lost).
    let mut recorded = manifest::decode(&storage.file_contents(&manifest_path()).unwrap()).unwrap();
    recorded.reached = 12;
    storage.set_file_contents(&manifest_path(), manifest::encode(&recorded));
    let error = open(&storage).unwrap_err();
    assert!(
        matches!(
            error,
            Error::LogBehind {
                reached: 12,
                end: 10,
                ..
            }
        ),
        "{error}"
    );
    let file = storage.open_file(&manifest_path(), OpenMode::Read).unwrap();
    assert_eq!(
        file.len().unwrap(),
        manifest::encode(&recorded).len() as u64
    );
}

#[test]
fn read_only_opens_beside_a_rolling_and_truncating_writer_never_see_a_missing_segment() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let storage = MemoryStorage::new();
    let (wal, _) = open(&storage).unwrap();
    fill(&wal, 1, 4);
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU32::new(0));
    let reader = {
        let (storage, stop, opened) = (storage.clone(), stop.clone(), opened.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let result = Wal::open_read_only_with_storage(
                    Arc::new(storage.clone()),
                    Path::new(MEMORY_DIR),
                    options(SyncPolicy::Always, SEGMENT_BYTES_MAX),
                );
                match result {
                    Ok(_) => {
                        opened.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(
                        error @ (Error::MissingSegment { .. } | Error::UnexpectedSegment { .. }),
                    ) => {
                        panic!("a read-only open beside a live writer: {error}")
                    }
                    // Other races of a reader with a writer are not this test's subject.
                    Err(_) => {}
                }
            }
        })
    };
    // Rolls and truncations go on until the reader has opened the log many times (or, on a
    // loaded machine, for at most 30 s: the race is what is tested, not the speed).
    let started = std::time::Instant::now();
    let mut first = 5;
    while opened.load(Ordering::Acquire) < 5_000
        && started.elapsed() < std::time::Duration::from_secs(30)
    {
        fill(&wal, first, first + 7);
        wal.truncate_before(first).unwrap();
        first += 8;
    }
    stop.store(true, Ordering::Release);
    reader
        .join()
        .expect("the reader never saw a missing segment");
    let opened = opened.load(Ordering::Acquire);
    assert!(
        opened >= 500,
        "only {opened} read-only opens ran beside the writer"
    );
    wal.close().unwrap();
}
