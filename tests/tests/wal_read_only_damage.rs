//! A read-only open of a log with a damaged frame succeeds: it knows the log up to the damage,
//! readers return every record before it and then `Error::Corrupted` naming the segment and the
//! offset, and nothing is written. (A writer open still refuses the log.)

use logbook_tests::{MEMORY_DIR, memory_files, memory_storage_with, payload, segment_frames};
use logbook_wal::{Error, MemoryStorage, SyncPolicy, Wal, WalOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn options() -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Always,
        segment_bytes_max: 1000,
        ..WalOptions::default()
    }
}

fn build(records: u64) -> Vec<(PathBuf, Vec<u8>)> {
    let storage = Arc::new(MemoryStorage::new());
    let (wal, _) =
        Wal::open_with_storage(storage.clone(), Path::new(MEMORY_DIR), options()).unwrap();
    for position in 1..=records {
        assert_eq!(wal.append(&payload(position, 40)).unwrap(), position);
    }
    wal.close().unwrap();
    memory_files(&storage)
}

fn segment_files(files: &[(PathBuf, Vec<u8>)]) -> Vec<usize> {
    (0..files.len())
        .filter(|&index| files[index].0.extension().is_some_and(|ext| ext == "seg"))
        .collect()
}

/// Reads everything: the records read, then the error that ended the read (if any).
fn read(wal: &Wal, from: u64) -> (Vec<u64>, Option<Error>) {
    let mut positions = Vec::new();
    for item in wal.read_from(from) {
        match item {
            Ok(record) => positions.push(record.position),
            Err(error) => return (positions, Some(error)),
        }
    }
    (positions, None)
}

#[test]
fn readers_get_every_record_before_the_damage_then_its_segment_and_offset() {
    let mut files = build(60);
    let segments = segment_files(&files);
    assert!(segments.len() >= 4);
    // The third frame of the second segment (a sealed one).
    let victim = segments[1];
    let frame = segment_frames(&files[victim].1)[2];
    files[victim].1[frame.offset as usize + 30] ^= 0x01;
    let damaged_path = files[victim].0.clone();
    let storage = memory_storage_with(&files);

    let writer =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new(MEMORY_DIR), options());
    assert!(
        matches!(writer, Err(Error::Corrupted { .. })),
        "a writer still refuses"
    );

    let (wal, report) = Wal::open_read_only_with_storage(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        options(),
    )
    .unwrap();
    let damage = report.damage.clone().expect("the damage is reported");
    assert_eq!(damage.segment, damaged_path);
    assert_eq!(damage.offset, frame.offset);
    let before = frame.header.position - 1;
    assert_eq!(damage.last_position, before);
    assert_eq!(wal.damage(), Some(&damage));
    assert_eq!(wal.durable_position(), before);

    let (positions, error) = read(&wal, 1);
    assert_eq!(positions, (1..=before).collect::<Vec<_>>());
    let error = error.expect("the read ends with the damage");
    assert!(
        matches!(&error, Error::Corrupted { segment, offset, .. }
            if *segment == damaged_path && *offset == frame.offset),
        "{error}"
    );
    // From a position past the damage: the error at once, never a silent end.
    let (positions, error) = read(&wal, 50);
    assert!(positions.is_empty());
    assert!(matches!(error, Some(Error::Corrupted { .. })), "{error:?}");
    // A refresh never picks up what lies past the damage.
    assert_eq!(wal.refresh().unwrap(), before);
    assert_eq!(
        memory_files(&storage),
        files,
        "a read-only open writes nothing"
    );
}

#[test]
fn a_damaged_segment_header_ends_the_log_before_that_segment() {
    let mut files = build(60);
    let segments = segment_files(&files);
    let victim = segments[2];
    files[victim].1[3] ^= 0x10;
    let first_of_victim = segment_frames(&build(60)[victim].1)[0].header.position;
    let storage = memory_storage_with(&files);
    let (wal, report) =
        Wal::open_read_only_with_storage(Arc::new(storage), Path::new(MEMORY_DIR), options())
            .unwrap();
    let damage = report.damage.expect("reported");
    assert_eq!(
        (damage.segment.clone(), damage.offset),
        (files[victim].0.clone(), 0)
    );
    let (positions, error) = read(&wal, 1);
    assert_eq!(positions, (1..first_of_victim).collect::<Vec<_>>());
    assert!(
        matches!(error, Some(Error::Corrupted { offset: 0, .. })),
        "{error:?}"
    );
}

#[test]
fn damage_in_the_first_frame_of_the_log_fails_every_read() {
    let mut files = build(5);
    let segment = segment_files(&files)[0];
    let frame = segment_frames(&files[segment].1)[0];
    files[segment].1[frame.offset as usize + 30] ^= 0x01;
    let storage = memory_storage_with(&files);
    let (wal, _) =
        Wal::open_read_only_with_storage(Arc::new(storage), Path::new(MEMORY_DIR), options())
            .unwrap();
    assert_eq!(wal.durable_position(), 0);
    let (positions, error) = read(&wal, 1);
    assert!(positions.is_empty());
    assert!(matches!(error, Some(Error::Corrupted { offset, .. }) if offset == frame.offset));
}
