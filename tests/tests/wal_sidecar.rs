//! Sidecars of sealed segments: with `verify_sealed_segments_on_open = false`, open does not
//! scan sealed segments (cost independent of history), reads are identical, a damaged sidecar
//! only costs a scan, and a damaged sealed frame is still reported (on read) with its segment
//! and offset. The active segment's checkpoint (its sidecar written at a clean close) spares
//! open the rescan of its prefix, is kept by an open that changes nothing (so such an open
//! syncs and rewrites nothing), and is removed durably before the segment changes again.

use logbook_wal::{CrashMode, Error, MemoryStorage, RecoveryMode, SyncPolicy, Wal, WalOptions};
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
        segments,
        "one sidecar per sealed segment, and the active segment's checkpoint"
    );
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options()).unwrap();
    assert_eq!(
        report.bytes_scanned, 0,
        "after a clean close nothing is scanned"
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
        // A damaged header is noticed at open; damaged entries at the first seek.
        bytes[20] ^= 0x01;
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
    // The scan rewrote them (and close wrote a new checkpoint): the next open trusts them.
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage), Path::new("/log"), options()).unwrap();
    assert_eq!(report.bytes_scanned, 0);
    assert_eq!(read_everything(&wal, 1).len(), 400);
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

fn active_checkpoint(storage: &MemoryStorage) -> PathBuf {
    let last_segment = files_with(storage, "seg").pop().unwrap();
    last_segment.with_extension("idx")
}

#[test]
fn the_checkpoint_is_removed_durably_before_the_active_segment_changes() {
    let storage = MemoryStorage::new();
    build(&storage);
    let checkpoint = active_checkpoint(&storage);
    let saved = storage.file_contents(&checkpoint).unwrap();
    let unbuffered = WalOptions {
        // Every append reaches the file at once: the first append is the segment's change.
        buffer_bytes_max: 1,
        ..options()
    };
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), unbuffered).unwrap();
    assert_eq!(report.bytes_scanned, 0, "{report:?}");
    assert_eq!(
        storage.file_contents(&checkpoint),
        Some(saved),
        "an open that changed nothing keeps the checkpoint that describes the whole segment"
    );
    assert_eq!(wal.append(b"the first change").unwrap(), 401);
    assert!(
        storage.file_contents(&checkpoint).is_none(),
        "the first write to the active segment retires its checkpoint"
    );
    // The removal survives a power loss even though the append itself was never synced.
    storage.crash(CrashMode::LoseUnsynced);
    assert!(storage.file_contents(&checkpoint).is_none());
    drop(wal);
    // A read-only open uses the checkpoint and leaves it in place.
    build_more_and_close(&storage, 0);
    let checkpoint = active_checkpoint(&storage);
    let (reader, report) =
        Wal::open_read_only_with_storage(Arc::new(storage.clone()), Path::new("/log"), options())
            .unwrap();
    assert_eq!(report.bytes_scanned, 0);
    assert_eq!(read_everything(&reader, 1).len(), 400);
    drop(reader);
    assert!(storage.file_contents(&checkpoint).is_some());
}

/// An open followed by no append and a close syncs no file: the checkpoint that open kept still
/// describes the segment, so close does not rewrite it; the next open trusts it as before.
#[test]
fn an_open_that_appends_nothing_syncs_and_rewrites_nothing() {
    let storage = MemoryStorage::new();
    build(&storage);
    let checkpoint = active_checkpoint(&storage);
    let saved = storage.file_contents(&checkpoint).unwrap();
    let files_before = storage.files();
    for _ in 0..3 {
        let syncs = storage.sync_calls();
        let (wal, report) =
            Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options())
                .unwrap();
        assert_eq!(report.bytes_scanned, 0, "{report:?}");
        assert_eq!(read_everything(&wal, 1).len(), 400);
        wal.close().unwrap();
        assert_eq!(storage.sync_calls(), syncs, "no file was synced");
        assert_eq!(storage.file_contents(&checkpoint).as_ref(), Some(&saved));
        assert_eq!(
            storage.files(),
            files_before,
            "no file was added or removed"
        );
    }
}

/// A crash at any point after an open that kept the checkpoint (with or without appends, synced
/// or not) loses no synced record, and the next open is as correct as one after a scan.
#[test]
fn a_crash_after_an_open_that_kept_the_checkpoint_loses_nothing_synced() {
    for seed in 0..24u64 {
        let storage = MemoryStorage::new();
        build(&storage);
        let options = WalOptions {
            buffer_bytes_max: if seed % 2 == 0 { 1 } else { 1 << 20 },
            ..options()
        };
        let (wal, _) = Wal::open_with_storage(
            Arc::new(storage.clone()),
            Path::new("/log"),
            options.clone(),
        )
        .unwrap();
        let synced = seed % 3;
        let unsynced = seed % 4;
        let mut position = 400;
        for _ in 0..synced {
            position += 1;
            assert_eq!(wal.append(&payload(position)).unwrap(), position);
        }
        wal.sync().unwrap();
        let durable = position;
        for _ in 0..unsynced {
            position += 1;
            assert_eq!(wal.append(&payload(position)).unwrap(), position);
        }
        storage.crash(CrashMode::Tear { seed });
        drop(wal);
        let (wal, report) =
            Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options).unwrap();
        assert!(
            report.last_position >= durable && report.last_position <= position,
            "seed {seed}: {report:?}"
        );
        let records = read_everything(&wal, 1);
        assert_eq!(records.len() as u64, report.last_position, "seed {seed}");
        for (at, bytes) in records {
            assert_eq!(bytes, payload(at), "seed {seed}");
        }
        let next = wal.append(b"after").unwrap();
        assert_eq!(next, report.last_position + 1, "seed {seed}");
        wal.close().unwrap();
    }
}

fn build_more_and_close(storage: &MemoryStorage, more: u64) {
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options()).unwrap();
    let first = report.last_position + 1;
    for position in first..first + more {
        assert_eq!(wal.append(&payload(position)).unwrap(), position);
    }
    wal.close().unwrap();
}

/// A checkpoint of a prefix (written at a clean close, then the segment grew and the writer
/// crashed): open scans only what follows it, cuts a torn tail there, and loses nothing synced.
#[test]
fn open_scans_only_past_the_checkpoint_and_still_cuts_a_torn_tail() {
    let mut cuts = 0;
    for seed in 0..40u64 {
        let storage = MemoryStorage::new();
        let options = WalOptions {
            segment_bytes_max: 64 << 10,
            // Unsynced appends reach the file at once, so the crash has a tail to tear.
            buffer_bytes_max: 1,
            ..options()
        };
        let (wal, _) = Wal::open_with_storage(
            Arc::new(storage.clone()),
            Path::new("/log"),
            options.clone(),
        )
        .unwrap();
        for position in 1..=100u64 {
            wal.append(&payload(position)).unwrap();
        }
        wal.close().unwrap();
        let checkpoint = active_checkpoint(&storage);
        let saved = storage.file_contents(&checkpoint).unwrap();
        let prefix_len = storage
            .file_contents(&files_with(&storage, "seg").pop().unwrap())
            .unwrap()
            .len() as u64;
        let (wal, _) = Wal::open_with_storage(
            Arc::new(storage.clone()),
            Path::new("/log"),
            options.clone(),
        )
        .unwrap();
        for position in 101..=150u64 {
            wal.append(&payload(position)).unwrap();
        }
        wal.sync().unwrap();
        for position in 151..=170u64 {
            wal.append(&payload(position)).unwrap();
        }
        storage.crash(CrashMode::Tear { seed });
        drop(wal);
        // The checkpoint of the synced prefix comes back (as if its removal had not happened:
        // the prefix it describes is unchanged, so it is still true).
        storage.set_file_contents(&checkpoint, saved.clone());
        // Measured before open: a cut (of a torn tail, or of preallocated zeros behind it)
        // shortens the file.
        let segment_len = files_with(&storage, "seg")
            .iter()
            .map(|path| storage.file_contents(path).unwrap().len() as u64)
            .sum::<u64>();
        let (wal, report) = Wal::open_with_storage(
            Arc::new(storage.clone()),
            Path::new("/log"),
            options.clone(),
        )
        .unwrap();
        assert_eq!(
            report.bytes_scanned,
            segment_len - prefix_len,
            "seed {seed}: only what follows the checkpointed prefix ({prefix_len} bytes) is scanned: {report:?}"
        );
        assert!(report.last_position >= 150, "seed {seed}: {report:?}");
        if let Some(cut) = &report.tail_cut {
            assert!(cut.offset >= prefix_len, "seed {seed}: {report:?}");
            cuts += 1;
        }
        let records = read_everything(&wal, 1);
        assert_eq!(records.len() as u64, report.last_position, "seed {seed}");
        for (position, bytes) in records {
            assert_eq!(bytes, payload(position), "seed {seed}");
        }
        // Appends carry on after the recovered end.
        let next = wal.append(b"after").unwrap();
        assert_eq!(next, report.last_position + 1);
        wal.close().unwrap();
    }
    assert!(cuts > 0, "some seeds tore the unsynced tail");
}

/// A damaged checkpoint costs a scan, never a record.
#[test]
fn a_damaged_checkpoint_costs_a_scan_not_a_record() {
    let storage = MemoryStorage::new();
    build(&storage);
    let checkpoint = active_checkpoint(&storage);
    let mut damaged = storage.file_contents(&checkpoint).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x10;
    storage.set_file_contents(&checkpoint, damaged);
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options()).unwrap();
    assert!(report.bytes_scanned > 0, "{report:?}");
    assert_eq!(read_everything(&wal, 1).len(), 400);
    wal.close().unwrap();
}

/// A segment that lost synced bytes behind the log's back, after a clean close, is lost records,
/// not a torn tail: its checkpoint proves the bytes were synced. Open refuses (writer and
/// read-only alike) with the checkpoint as evidence; salvage accepts the loss.
#[test]
fn a_segment_shorter_than_its_checkpoint_is_lost_records_not_a_torn_tail() {
    let storage = MemoryStorage::new();
    build(&storage);
    let segment = files_with(&storage, "seg").pop().unwrap();
    let mut short = storage.file_contents(&segment).unwrap();
    short.truncate(short.len() - 10);
    storage.set_file_contents(&segment, short.clone());
    for read_only in [false, true] {
        let shared: Arc<MemoryStorage> = Arc::new(storage.clone());
        let opened = if read_only {
            Wal::open_read_only_with_storage(shared, Path::new("/log"), options())
        } else {
            Wal::open_with_storage(shared, Path::new("/log"), options())
        };
        let error = opened
            .err()
            .unwrap_or_else(|| panic!("read_only {read_only}: open accepted a cut segment"));
        match &error {
            Error::LogBehind {
                reached,
                end,
                evidence,
            } => {
                assert_eq!((*reached, *end), (400, 399), "{error}");
                assert!(evidence.contains("checkpoint"), "{error}");
                assert!(evidence.contains(&segment.display().to_string()), "{error}");
            }
            other => panic!("read_only {read_only}: expected LogBehind, got {other}"),
        }
        // Nothing was cut by the refused open.
        assert_eq!(storage.file_contents(&segment).unwrap(), short);
    }
    let salvage = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..options()
    };
    let (wal, _report) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), salvage).unwrap();
    assert_eq!(read_everything(&wal, 1).len(), 399);
    wal.close().unwrap();
}

/// A failed retirement of the kept checkpoint (its directory fsync fails) poisons the WAL
/// before any byte of the segment changes: the append fails, the segment is as it was, and
/// after a power loss the next open finds every record and appends carry on.
#[test]
fn a_failed_checkpoint_retirement_poisons_before_the_segment_changes() {
    use logbook_wal::{FaultKind, FaultOp};
    let storage = MemoryStorage::new();
    build(&storage);
    let segment = files_with(&storage, "seg").pop().unwrap();
    let before = storage.file_contents(&segment).unwrap();
    let unbuffered = WalOptions {
        buffer_bytes_max: 1,
        ..options()
    };
    let (wal, _) = Wal::open_with_storage(
        Arc::new(storage.clone()),
        Path::new("/log"),
        unbuffered.clone(),
    )
    .unwrap();
    storage.inject_fault(FaultOp::Sync, 0, FaultKind::Eio);
    let error = wal.append(b"never written").unwrap_err();
    assert!(error.to_string().contains("wal"), "{error}");
    assert!(wal.poisoned_reason().is_some(), "the WAL is poisoned");
    assert!(matches!(
        wal.append(b"refused"),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(storage.file_contents(&segment).unwrap(), before);
    storage.clear_faults();
    storage.crash(CrashMode::LoseUnsynced);
    drop(wal);
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), unbuffered).unwrap();
    assert_eq!(report.last_position, 400);
    assert_eq!(read_everything(&wal, 1).len(), 400);
    assert_eq!(wal.append(b"after").unwrap(), 401);
    wal.close().unwrap();
}
