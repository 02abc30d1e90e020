//! `truncate_before(position)` removes exactly the whole sealed segments that lie below the
//! position, never the active one, and reads from removed positions start at the first record
//! that remains, before and after a reopen.

use logbook_tests::{MEMORY_DIR, memory_segments, options, payload, positions, read_all};
use logbook_wal::{FileStorage, MemoryStorage, SegmentInfo, Storage, SyncPolicy, Wal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Four 60-byte records per segment.
const SEGMENT_BYTES_MAX: u64 = 32 + 4 * (28 + 60);

fn fill(wal: &Wal, records: u64) {
    for position in 1..=records {
        assert_eq!(wal.append(&payload(position, 60)).unwrap(), position);
    }
}

/// The sealed segments whose records all lie below `position`, as `truncate_before` must
/// remove them.
fn removable(segments: &[SegmentInfo], position: u64) -> Vec<PathBuf> {
    segments
        .windows(2)
        .take_while(|pair| !pair[0].active && pair[1].base <= position)
        .map(|pair| pair[0].path.clone())
        .collect()
}

fn check_reads(wal: &Wal, first_kept: u64, last: u64) {
    for from in 0..=last {
        let records = read_all(wal, from);
        let expected: Vec<u64> = (from.max(first_kept)..=last).collect();
        assert_eq!(positions(&records), expected, "reading from {from}");
        for record in records {
            assert_eq!(record.payload, payload(record.position, 60));
        }
    }
}

fn truncate_progressively(storage: Arc<dyn Storage>, dir: &Path, files: impl Fn() -> Vec<PathBuf>) {
    let options = options(SyncPolicy::Always, SEGMENT_BYTES_MAX);
    let (wal, _) = Wal::open_with_storage(storage.clone(), dir, options.clone()).unwrap();
    fill(&wal, 30);
    let bases: Vec<u64> = wal.segments().iter().map(|segment| segment.base).collect();
    assert_eq!(bases, [1, 5, 9, 13, 17, 21, 25, 29]);
    // A reader already inside the first segment, which truncation removes under it.
    let mut early_reader = wal.read_from(1);
    assert_eq!(early_reader.next().unwrap().unwrap().position, 1);

    let steps = [1, 4, 5, 6, 12, 13, 24, 1000, u64::MAX];
    for position in steps {
        let before = wal.segments();
        let expected = removable(&before, position);
        let removed = wal.truncate_before(position).unwrap();
        assert_eq!(removed, expected, "truncate_before({position})");
        let after = wal.segments();
        assert_eq!(after.len(), before.len() - removed.len());
        assert!(after.last().unwrap().active, "the active segment stays");
        let on_disk = files();
        for path in &removed {
            assert!(!on_disk.contains(path), "{path:?} still on disk");
        }
        for segment in &after {
            assert!(on_disk.contains(&segment.path), "{:?} gone", segment.path);
        }
        check_reads(&wal, after[0].base, 30);
    }
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(wal.segments()[0].base, 29);
    // It finishes the segment it holds open, then continues at the first remaining record.
    let rest: Vec<u64> = early_reader
        .map(|record| record.unwrap().position)
        .collect();
    assert_eq!(rest, [2, 3, 4, 29, 30]);
    assert_eq!(wal.append(&payload(31, 60)).unwrap(), 31);
    wal.close().unwrap();

    let (wal, report) = Wal::open_with_storage(storage, dir, options).unwrap();
    assert_eq!((report.last_position, report.records), (31, 3));
    check_reads(&wal, 29, 31);
    assert_eq!(wal.append(&payload(32, 60)).unwrap(), 32);
}

#[test]
fn truncate_before_removes_whole_sealed_segments_in_memory() {
    let storage = MemoryStorage::new();
    let listed = storage.clone();
    truncate_progressively(Arc::new(storage), Path::new(MEMORY_DIR), move || {
        memory_segments(&listed)
    });
}

#[test]
fn truncate_before_removes_whole_sealed_segments_on_files() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let wal_dir = dir.join(logbook_wal::WAL_DIR_NAME);
    truncate_progressively(Arc::new(FileStorage::new()), &dir, move || {
        std::fs::read_dir(&wal_dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect()
    });
}

/// Removing every sealed segment of a log whose active segment is empty: positions are not
/// reused after a reopen.
#[test]
fn positions_are_not_reused_after_truncating_to_an_empty_active_segment() {
    let storage = Arc::new(MemoryStorage::new());
    let dir = Path::new(MEMORY_DIR);
    let options = options(SyncPolicy::Always, SEGMENT_BYTES_MAX);
    let (wal, _) = Wal::open_with_storage(storage.clone(), dir, options.clone()).unwrap();
    fill(&wal, 5);
    wal.close().unwrap();
    // Cut the only record of the last segment (a torn tail), leaving it empty, as a crash
    // leaves it: without the clean close's checkpoint (which would prove the record synced).
    let last = memory_segments(&storage).pop().unwrap();
    let mut bytes = storage.file_contents(&last).unwrap();
    bytes.truncate(bytes.len() - 1);
    storage.set_file_contents(&last, bytes);
    storage.remove_file(&last.with_extension("idx")).unwrap();
    let (wal, report) = Wal::open_with_storage(storage.clone(), dir, options.clone()).unwrap();
    assert_eq!(report.last_position, 4);
    assert_eq!(wal.segments().len(), 2);
    assert_eq!(wal.truncate_before(u64::MAX).unwrap().len(), 1);
    assert!(read_all(&wal, 1).is_empty());
    wal.close().unwrap();

    let (wal, report) = Wal::open_with_storage(storage, dir, options).unwrap();
    assert_eq!(report.last_position, 4);
    assert_eq!(
        wal.append(&payload(5, 60)).unwrap(),
        5,
        "position 5 is next, not 1"
    );
    assert_eq!(positions(&read_all(&wal, 1)), [5]);
}
