//! Target `segment_recovery`: opening a log whose only segment file holds arbitrary bytes, on the
//! in-memory storage, in strict, salvage and read-only mode.
//!
//! Input: one control byte, then the segment's material. Control bits 0-1 choose the layout of
//! `/log/wal/00000000000000000001.seg`: 0 the bytes as they are; 1 a valid segment header for
//! base 1, then the bytes; 2 and 3 a valid header, then frames built from the bytes (valid
//! checksums, so recovery's ordering, batch and durable-mark logic is reached, with chosen
//! damage: see [`built_frames`]). Bits 2-4 pick small limits (record bytes, index interval,
//! segment bytes) so the append after open also rolls a segment.
//!
//! Properties: nothing panics. Open fails only with `Corrupted`, and salvage never fails once
//! the segment header is valid. After a successful open, every record reads back (positions
//! increase, the count and last position match the report, a read from any position starts at
//! the right record), one append works, and a strict reopen after a clean close shows every
//! record plus the new one. Strict and salvage agree when strict succeeds. A read-only open
//! fails only with `Corrupted` or "no segment files", writes nothing, refuses appends, and when
//! it succeeds beside a successful strict open it sees the same records; when it stops at
//! corruption (`RecoveryReport::damage`) it reads every record before it, then fails there.

use logbook_wal::frame;
use logbook_wal::segment;
use logbook_wal::{
    Error, MemoryStorage, OpenMode, Record, RecoveryMode, RecoveryReport, Storage, SyncPolicy, Wal,
    WalOptions,
};
use std::path::Path;
use std::sync::Arc;

/// The longest input worth recovering: a few hundred frames.
pub const INPUT_BYTES_MAX: usize = 16 * 1024;

const LOG_DIR: &str = "/log";
const WAL_DIR: &str = "/log/wal";
const SEGMENT_PATH: &str = "/log/wal/00000000000000000001.seg";
/// The record appended after a successful open.
const APPENDED: &[u8] = b"appended after recovery";

/// Runs every check on one input; panics only on a bug.
pub fn check(data: &[u8]) {
    if data.len() > INPUT_BYTES_MAX {
        return;
    }
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let contents = segment_contents(control, rest);
    let options = options(control);
    let strict = check_open(&contents, &options, RecoveryMode::Strict);
    let salvage = check_open(&contents, &options, RecoveryMode::Salvage);
    if let Some(strict) = &strict {
        assert_eq!(
            Some(strict),
            salvage.as_ref(),
            "salvage differs from a successful strict open"
        );
    }
    let read_only = check_read_only(&contents, &options);
    if let (Some(strict), Some(read_only)) = (&strict, &read_only) {
        assert_eq!(
            strict, read_only,
            "read-only open differs from a successful strict open"
        );
    }
}

fn options(control: u8) -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Always,
        record_bytes_max: if control & 0b100 != 0 { 64 } else { 4096 },
        index_interval_bytes: if control & 0b1000 != 0 { 1 } else { 4096 },
        segment_bytes_max: if control & 0b1_0000 != 0 {
            256
        } else {
            64 << 20
        },
        ..WalOptions::default()
    }
}

fn segment_contents(control: u8, rest: &[u8]) -> Vec<u8> {
    let mut contents = Vec::with_capacity(segment::SEGMENT_HEADER_BYTES + rest.len());
    match control & 0b11 {
        0 => {}
        1 => contents.extend_from_slice(&segment::encode_header(1)),
        _ => {
            contents.extend_from_slice(&segment::encode_header(1));
            built_frames(&mut contents, rest);
            return contents;
        }
    }
    contents.extend_from_slice(rest);
    contents
}

/// Appends frames described by `spec`: 4 bytes `[step, mark_back, flags, len]` per frame, then
/// up to `len % 64` payload bytes. The position moves by `step % 3` (0 repeats it), or jumps by
/// 2^40 (`step` 254) or to the top of the position space (`step` 255); the durable mark is
/// `mark_back + 1` below it; bits 0-1 of `flags` are the batch flags, and `flags >> 2` damages
/// the frame: 1 flips one bit, 2 tears it in half and ends the file, 3 zeroes it.
fn built_frames(out: &mut Vec<u8>, mut spec: &[u8]) {
    let mut position = 0u64;
    while let Some((&[step, mark_back, flags, len], rest)) = spec.split_first_chunk::<4>() {
        let (payload, rest) = rest.split_at(usize::from(len % 64).min(rest.len()));
        spec = rest;
        position = match step {
            255 => u64::MAX - u64::from(mark_back % 4),
            254 => position.saturating_add(1 << 40),
            _ => position.saturating_add(u64::from(step % 3)),
        }
        .max(1);
        let durable_mark = position.saturating_sub(1 + u64::from(mark_back));
        let start = out.len();
        frame::encode_frame(out, position, durable_mark, flags & 0b11, payload);
        let frame_len = out.len() - start;
        match flags >> 2 {
            1 => {
                let bit = usize::from(len) * 13 % (frame_len * 8);
                if let Some(byte) = out.get_mut(start + bit / 8) {
                    *byte ^= 1 << (bit % 8);
                }
            }
            2 => {
                out.truncate(start + frame_len / 2);
                return;
            }
            3 => out.iter_mut().skip(start).for_each(|byte| *byte = 0),
            _ => {}
        }
    }
}

/// A disk holding the one segment file, durably (file and directory synced).
fn storage_with(contents: &[u8]) -> MemoryStorage {
    let storage = MemoryStorage::new();
    let wal_dir = Path::new(WAL_DIR);
    storage.create_dir_all(wal_dir).expect("create the WAL dir");
    let file = storage
        .open_file(Path::new(SEGMENT_PATH), OpenMode::CreateNew)
        .expect("create the segment");
    file.write_all_at(0, contents).expect("write the segment");
    file.sync_data().expect("sync the segment");
    storage.sync_dir(wal_dir).expect("sync the WAL dir");
    storage
}

/// Opens for writing; on success checks reads, one append and a reopen, and returns the records
/// found at open.
fn check_open(contents: &[u8], options: &WalOptions, mode: RecoveryMode) -> Option<Vec<Record>> {
    let storage = storage_with(contents);
    let options = WalOptions {
        recovery_mode: mode,
        ..options.clone()
    };
    let opened = Wal::open_with_storage(
        Arc::new(storage.clone()),
        Path::new(LOG_DIR),
        options.clone(),
    );
    let (wal, report) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            assert!(
                error.is_corruption(),
                "{mode:?} open failed without corruption: {error}"
            );
            let header_valid = segment::decode_header(contents) == Ok(1);
            assert!(
                !(header_valid && mode == RecoveryMode::Salvage),
                "salvage refused a segment whose header is valid: {error}"
            );
            return None;
        }
    };
    if mode == RecoveryMode::Strict {
        assert!(report.salvage.is_none(), "strict open salvaged");
    }
    assert_eq!(wal.last_position(), report.last_position);
    assert_eq!(wal.durable_position(), report.last_position);
    let records = read_all(&wal, &report);
    let appended = wal.append(APPENDED);
    if report.last_position == u64::MAX - 1 {
        // No position left (frames end below u64::MAX): refused, never an overflow.
        assert!(
            matches!(appended, Err(Error::LimitExceeded { .. })),
            "{appended:?}"
        );
        return Some(records);
    }
    let position =
        appended.unwrap_or_else(|error| panic!("append after a successful {mode:?} open: {error}"));
    assert_eq!(position, report.last_position + 1, "the append is not next");
    wal.close().expect("clean close");

    let strict = WalOptions {
        recovery_mode: RecoveryMode::Strict,
        ..options
    };
    let (wal, again) = Wal::open_with_storage(Arc::new(storage), Path::new(LOG_DIR), strict)
        .unwrap_or_else(|error| panic!("reopen after a clean close: {error}"));
    assert_eq!(again.last_position, position, "the appended record is gone");
    assert!(again.tail_cut.is_none(), "a clean close left a tail");
    let reread = read_all(&wal, &again);
    let (last, earlier) = reread.split_last().expect("the appended record");
    assert!(
        earlier == records.as_slice(),
        "records changed across a reopen"
    );
    assert_eq!(
        (last.position, last.payload.as_slice()),
        (position, APPENDED)
    );
    Some(records)
}

/// Opens read-only: never a write, never an append; returns the records on success.
fn check_read_only(contents: &[u8], options: &WalOptions) -> Option<Vec<Record>> {
    let storage = storage_with(contents);
    let opened = Wal::open_read_only_with_storage(
        Arc::new(storage.clone()),
        Path::new(LOG_DIR),
        options.clone(),
    );
    let records = match opened {
        Ok((wal, report)) if report.damage.is_some() => {
            check_damaged_read(&wal, &report);
            None
        }
        Ok((wal, report)) => {
            let records = read_all(&wal, &report);
            let refused = wal.append(APPENDED);
            assert!(matches!(refused, Err(Error::ReadOnly)), "{refused:?}");
            Some(records)
        }
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}");
            None
        }
        Err(error) => {
            assert!(error.is_corruption(), "read-only open: {error}");
            None
        }
    };
    let after = storage.file_contents(Path::new(SEGMENT_PATH));
    assert!(
        after.as_deref() == Some(contents),
        "a read-only open changed the segment"
    );
    records
}

/// A read-only open that stopped at corruption: every record before it reads back (as many as
/// the report counts, none past its last position), then the read fails naming the damage.
fn check_damaged_read(wal: &Wal, report: &RecoveryReport) {
    let damage = report.damage.clone().expect("damage reported");
    assert_eq!(wal.damage(), Some(&damage));
    assert_eq!(damage.last_position, report.last_position);
    let mut records = 0u64;
    let mut last = 0u64;
    let mut ended = None;
    for item in wal.read_from(1) {
        match item {
            Ok(record) => {
                assert!(record.position > last, "positions do not increase");
                assert!(
                    record.position <= report.last_position,
                    "read past the damage"
                );
                last = record.position;
                records += 1;
            }
            Err(error) => ended = Some(error),
        }
    }
    assert_eq!(
        records, report.records,
        "records read != records before the damage"
    );
    let error = ended.expect("a read reaching the damage fails");
    assert!(
        matches!(&error, Error::Corrupted { segment, offset, .. }
            if *segment == damage.segment && *offset == damage.offset),
        "{error}"
    );
}

/// Reads every record; checks them against the report and checks reads from chosen positions.
fn read_all(wal: &Wal, report: &RecoveryReport) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    for item in wal.read_from(1) {
        let record = item.unwrap_or_else(|error| panic!("reading a recovered log: {error}"));
        if let Some(previous) = records.last() {
            assert!(
                record.position > previous.position,
                "positions do not increase"
            );
        }
        assert!(
            record.position <= report.last_position,
            "record past the last position"
        );
        records.push(record);
    }
    assert_eq!(
        records.len() as u64,
        report.records,
        "records read != records recovered"
    );
    if let Some(last) = records.last() {
        assert_eq!(
            last.position, report.last_position,
            "last record != last position"
        );
    }
    let probes = [records.len() / 2, records.len().saturating_sub(1)];
    for index in probes {
        let Some(expected) = records.get(index) else {
            continue;
        };
        // From the record's own position, and from just after the one before it (a gap).
        let after_previous = index
            .checked_sub(1)
            .and_then(|previous| records.get(previous))
            .map_or(1, |previous| previous.position + 1);
        for from in [expected.position, after_previous] {
            let first = wal.read_from(from).next();
            let first = first.map(|item| item.expect("read from a position"));
            assert!(
                first.as_ref() == Some(expected),
                "read from {from} starts elsewhere"
            );
        }
    }
    records
}
