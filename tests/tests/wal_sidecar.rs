//! Sidecars of sealed segments: with `verify_sealed_segments_on_open = false`, open does not
//! scan sealed segments (cost independent of history), reads are identical, a damaged sidecar
//! only costs a scan, and a damaged sealed frame is still reported (on read) with its segment
//! and offset.

use logbook_wal::{Error, MemoryStorage, SyncPolicy, Wal, WalOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn options() -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Never,
        segment_bytes_max: 4096,
        verify_sealed_segments_on_open: false,
        ..WalOptions::default()
    }
}

fn payload(position: u64) -> Vec<u8> {
    format!("record-{position}-")
        .repeat((position % 7 + 1) as usize)
        .into_bytes()
}

fn read_everything(wal: &Wal, from: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read_from(from)
        .map(|record| record.map(|r| (r.position, r.payload)))
        .collect::<Result<_, _>>()
        .unwrap()
}

fn build(storage: &MemoryStorage) -> u64 {
    let (wal, _) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options()).unwrap();
    for position in 1..=400u64 {
        assert_eq!(wal.append(&payload(position)).unwrap(), position);
    }
    wal.sync().unwrap();
    let segments = wal.segments().len() as u64;
    wal.close().unwrap();
    segments
}

fn files_with(storage: &MemoryStorage, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = storage
        .files()
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn open_trusts_matching_sidecars_and_reads_are_identical() {
    let storage = MemoryStorage::new();
    let segments = build(&storage);
    assert!(segments > 5);
    assert_eq!(
        files_with(&storage, "idx").len() as u64,
        segments - 1,
        "one sidecar per sealed segment"
    );
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options()).unwrap();
    let last_segment_bytes = wal.segments().last().unwrap().bytes;
    assert_eq!(
        report.bytes_scanned, last_segment_bytes,
        "only the last segment is scanned"
    );
    assert_eq!(report.records, 400);
    assert_eq!(report.last_position, 400);
    for from in [1, 2, 57, 199, 200, 399, 400, 401] {
        let records = read_everything(&wal, from);
        assert_eq!(records.len() as u64, 401 - from.min(401));
        for (position, bytes) in records {
            assert_eq!(bytes, payload(position));
        }
    }
    wal.close().unwrap();
}

#[test]
fn a_damaged_sidecar_costs_a_scan_not_a_record() {
    let storage = MemoryStorage::new();
    build(&storage);
    for sidecar in files_with(&storage, "idx") {
        let mut bytes = storage.file_contents(&sidecar).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        storage.set_file_contents(&sidecar, bytes);
    }
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options()).unwrap();
    assert_eq!(report.last_position, 400);
    assert!(
        report.bytes_scanned > wal.segments().last().unwrap().bytes,
        "sealed segments were scanned"
    );
    assert_eq!(read_everything(&wal, 1).len(), 400);
    wal.close().unwrap();
    // The scan rewrote them: the next open trusts them again.
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage), Path::new("/log"), options()).unwrap();
    assert_eq!(report.bytes_scanned, wal.segments().last().unwrap().bytes);
    wal.close().unwrap();
}

#[test]
fn a_damaged_sealed_frame_is_reported_on_read_with_segment_and_offset() {
    let storage = MemoryStorage::new();
    build(&storage);
    let segments = files_with(&storage, "seg");
    let victim = segments[2].clone();
    let mut bytes = storage.file_contents(&victim).unwrap();
    let offset = 32 + 28 + 3; // inside the first frame's payload
    bytes[offset] ^= 0x01;
    storage.set_file_contents(&victim, bytes);
    let (wal, _) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options()).unwrap();
    let error = wal
        .read_from(1)
        .find_map(Result::err)
        .expect("the damage is reported");
    assert!(
        matches!(&error, Error::Corrupted { segment, offset: 32, .. } if *segment == victim),
        "{error}"
    );
    drop(wal);
    // With full verification, open itself refuses.
    let strict = WalOptions {
        verify_sealed_segments_on_open: true,
        ..options()
    };
    let error = Wal::open_with_storage(Arc::new(storage), Path::new("/log"), strict).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupted { segment, offset: 32, .. } if *segment == victim),
        "{error}"
    );
}
