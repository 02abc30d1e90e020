//! Round trip: what is appended reads back exactly, from every position, across segment rolls,
//! reopens and gaps; readers follow appends but never see past the durable position.

use logbook_tests::{
    MEMORY_DIR, SplitMix, memory_storage_with, payload, positions, read_all, segment_frames,
};
use logbook_wal::frame::{FLAG_BATCH_FIRST, FLAG_BATCH_LAST, FRAME_HEADER_BYTES, encode_frame};
use logbook_wal::segment::{self, encode_header};
use logbook_wal::{FileStorage, MemoryStorage, Storage, SyncPolicy, WAL_DIR_NAME, Wal, WalOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INDEX_INTERVAL_BYTES: u64 = 128;

fn small_segments(sync_policy: SyncPolicy) -> WalOptions {
    WalOptions {
        sync_policy,
        segment_bytes_max: 1024,
        index_interval_bytes: INDEX_INTERVAL_BYTES,
        buffer_bytes_max: 300,
        ..WalOptions::default()
    }
}

/// Appends singles and batches of varied sizes; returns every payload, index = position - 1.
fn append_mixed(wal: &Wal, records: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut random = SplitMix(seed);
    let mut appended: Vec<Vec<u8>> = Vec::new();
    while appended.len() < records {
        let count = (random.range(1, 6) as usize).min(records - appended.len());
        let batch: Vec<Vec<u8>> = (0..count)
            .map(|index| {
                payload(
                    (appended.len() + index) as u64,
                    random.range(0, 120) as usize,
                )
            })
            .collect();
        let expected_first = appended.len() as u64 + 1;
        if count == 1 {
            assert_eq!(wal.append(&batch[0]).unwrap(), expected_first);
        } else {
            let receipt = wal.append_batch(&batch).unwrap();
            assert_eq!(receipt.first, expected_first);
            assert_eq!(receipt.last, expected_first + count as u64 - 1);
        }
        appended.extend(batch);
    }
    appended
}

/// Reading from every position gives exactly the suffix, and a seek reads only a few frames
/// (the sparse index works).
fn check_reads_from_every_position(wal: &Wal, appended: &[Vec<u8>]) {
    let last = appended.len() as u64;
    let seek_frames_max = INDEX_INTERVAL_BYTES / FRAME_HEADER_BYTES as u64 + 2;
    for from in 0..=last + 1 {
        let records = read_all(wal, from);
        let first = from.max(1);
        let expected: Vec<u64> = (first..=last).collect();
        assert_eq!(positions(&records), expected, "reading from {from}");
        // A read-ahead hint, right or wrong (behind the start, inside, past the end, in
        // another segment), changes how the bytes are read, never what is read.
        for through in [
            from.saturating_sub(1),
            from,
            from + 3,
            last / 2,
            last,
            last + 100,
        ] {
            let hinted: Vec<_> = wal
                .read_from(from)
                .reading_through(through)
                .collect::<Result<_, _>>()
                .unwrap_or_else(|error| panic!("reading from {from} through {through}: {error}"));
            assert_eq!(hinted, records, "reading from {from} through {through}");
        }
        for record in &records {
            assert_eq!(
                record.payload,
                appended[record.position as usize - 1],
                "payload at {}",
                record.position
            );
        }
        if from >= 1 && from <= last {
            let mut reader = wal.read_from(from);
            assert_eq!(reader.next().unwrap().unwrap().position, from);
            assert!(
                reader.frames_read() <= seek_frames_max,
                "seeking to {from} read {} frames",
                reader.frames_read()
            );
        }
    }
}

fn check_segments(wal: &Wal) {
    let segments = wal.segments();
    assert!(segments.len() > 5, "only {} segments", segments.len());
    let active: Vec<bool> = segments.iter().map(|segment| segment.active).collect();
    assert_eq!(active.iter().filter(|&&active| active).count(), 1);
    assert!(
        segments.last().unwrap().active,
        "the last segment is the active one"
    );
    for pair in segments.windows(2) {
        assert_eq!(
            pair[1].base,
            pair[0].last_position + 1,
            "positions are gapless across segments"
        );
    }
    for info in &segments {
        let name = info.path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, segment::file_name(info.base));
        assert_eq!(name.len(), "00000000000000000001.seg".len());
        assert_eq!(
            info.path.parent().unwrap().file_name().unwrap(),
            WAL_DIR_NAME
        );
    }
    assert_eq!(segments[0].base, 1);
}

fn round_trip(storage: Arc<dyn Storage>, dir: &Path, sync_policy: SyncPolicy) {
    let options = small_segments(sync_policy);
    let (wal, report) = Wal::open_with_storage(storage.clone(), dir, options.clone()).unwrap();
    assert_eq!(report.last_position, 0);
    let appended = append_mixed(&wal, 400, 7);
    assert_eq!(wal.sync().unwrap(), 400);
    assert_eq!(wal.last_position(), 400);
    check_segments(&wal);
    check_reads_from_every_position(&wal, &appended);
    let segment_count = wal.segments().len();
    wal.close().unwrap();

    let (wal, report) = Wal::open_with_storage(storage.clone(), dir, options.clone()).unwrap();
    assert_eq!(report.last_position, 400);
    assert_eq!(report.records, 400);
    assert_eq!(report.segments, segment_count);
    assert!(report.tail_cut.is_none() && report.salvage.is_none());
    assert_eq!(wal.durable_position(), 400);
    check_reads_from_every_position(&wal, &appended);
    assert_eq!(wal.append(b"after reopen").unwrap(), 401);
    wal.close().unwrap();

    let (wal, _) = Wal::open_with_storage(storage, dir, options).unwrap();
    let records = read_all(&wal, 400);
    assert_eq!(positions(&records), [400, 401]);
    assert_eq!(records[1].payload, b"after reopen");
}

#[test]
fn round_trip_across_segment_rolls_in_memory() {
    round_trip(
        Arc::new(MemoryStorage::new()),
        Path::new(MEMORY_DIR),
        SyncPolicy::Always,
    );
}

#[test]
fn round_trip_across_segment_rolls_on_files() {
    let temp = tempfile::tempdir().unwrap();
    round_trip(
        Arc::new(FileStorage::new()),
        &temp.path().join("log"),
        SyncPolicy::Never,
    );
}

fn record_payload(position: u64) -> Vec<u8> {
    payload(position, 10 + (position % 7) as usize)
}

/// A segment file written by hand, one single-record batch per position.
fn crafted_segment(base: u64, positions: &[u64]) -> Vec<u8> {
    let mut bytes = encode_header(base).to_vec();
    for &position in positions {
        let flags = FLAG_BATCH_FIRST | FLAG_BATCH_LAST;
        encode_frame(
            &mut bytes,
            position,
            position - 1,
            flags,
            &record_payload(position),
        );
    }
    bytes
}

fn segment_path(base: u64) -> PathBuf {
    Path::new(MEMORY_DIR)
        .join(WAL_DIR_NAME)
        .join(segment::file_name(base))
}

/// Positions that compaction could leave: a gap between segments and one inside a segment.
#[test]
fn gaps_between_and_inside_segments_are_accepted() {
    let stored = [1, 2, 3, 10, 11, 12, 15, 16];
    let storage = memory_storage_with(&[
        (segment_path(1), crafted_segment(1, &[1, 2, 3])),
        (segment_path(10), crafted_segment(10, &[10, 11, 12, 15, 16])),
    ]);
    let options = small_segments(SyncPolicy::Always);
    let dir = Path::new(MEMORY_DIR);
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), dir, options.clone()).unwrap();
    assert_eq!((report.last_position, report.records), (16, 8));
    assert!(report.tail_cut.is_none() && report.salvage.is_none());
    let check = |wal: &Wal, stored: &[u64]| {
        for from in 0..=stored.last().unwrap() + 1 {
            let records = read_all(wal, from);
            let expected: Vec<u64> = stored.iter().copied().filter(|&p| p >= from).collect();
            assert_eq!(positions(&records), expected, "reading from {from}");
            for record in records {
                assert_eq!(record.payload, record_payload(record.position));
            }
        }
    };
    check(&wal, &stored);
    assert_eq!(wal.append(&record_payload(17)).unwrap(), 17);
    wal.close().unwrap();

    let (wal, report) = Wal::open_with_storage(Arc::new(storage), dir, options).unwrap();
    assert_eq!(report.last_position, 17);
    check(&wal, &[1, 2, 3, 10, 11, 12, 15, 16, 17]);
}

/// A last segment that starts above the last stored position and holds nothing yet: appends
/// continue at its base, never below it.
#[test]
fn empty_last_segment_after_a_gap_sets_the_next_position() {
    let storage = memory_storage_with(&[
        (segment_path(1), crafted_segment(1, &[1, 2, 3])),
        (segment_path(20), crafted_segment(20, &[])),
    ]);
    let options = small_segments(SyncPolicy::Always);
    let dir = Path::new(MEMORY_DIR);
    let (wal, report) =
        Wal::open_with_storage(Arc::new(storage.clone()), dir, options.clone()).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(wal.append(&record_payload(20)).unwrap(), 20);
    assert_eq!(positions(&read_all(&wal, 4)), [20]);
    wal.close().unwrap();

    let bytes = storage.file_contents(&segment_path(20)).unwrap();
    let frames = segment_frames(&bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header.position, 20);
    let (wal, report) = Wal::open_with_storage(Arc::new(storage), dir, options).unwrap();
    assert_eq!(report.last_position, 20);
    assert_eq!(positions(&read_all(&wal, 1)), [1, 2, 3, 20]);
}

/// The reader is not fused: `None` means caught up, and later appends show up, across rolls.
#[test]
fn readers_created_before_appends_see_them_once_durable() {
    let storage = Arc::new(MemoryStorage::new());
    let options = small_segments(SyncPolicy::Always);
    let (wal, _) = Wal::open_with_storage(storage, Path::new(MEMORY_DIR), options).unwrap();
    let mut from_start = wal.read_from(1);
    let mut from_future = wal.read_from(30);
    assert!(from_start.next().is_none());
    assert!(from_future.next().is_none());
    let mut expected = 1u64;
    for round in 0..40u64 {
        let count = 1 + round % 3;
        let batch: Vec<Vec<u8>> = (0..count).map(|i| payload(expected + i, 50)).collect();
        let receipt = wal.append_batch(&batch).unwrap();
        assert_eq!(receipt.first, expected);
        assert_eq!(wal.durable_position(), receipt.last);
        for position in receipt.first..=receipt.last {
            let record = from_start.next().unwrap().unwrap();
            assert_eq!(record.position, position);
            assert_eq!(record.payload, payload(position, 50));
        }
        assert!(from_start.next().is_none(), "caught up after round {round}");
        expected = receipt.last + 1;
    }
    assert!(wal.segments().len() > 3, "the reader crossed segment rolls");
    let later: Vec<u64> = from_future.map(|record| record.unwrap().position).collect();
    assert_eq!(later, (30..expected).collect::<Vec<_>>());
}

/// Under `Never`, appended records stay invisible until a sync makes them durable, whether they
/// sit in the WAL's buffer or were handed to the OS.
#[test]
fn never_policy_hides_records_until_sync() {
    for buffer_bytes_max in [0, 1 << 20] {
        let options = WalOptions {
            sync_policy: SyncPolicy::Never,
            buffer_bytes_max,
            ..WalOptions::default()
        };
        let storage = Arc::new(MemoryStorage::new());
        let (wal, _) = Wal::open_with_storage(storage, Path::new(MEMORY_DIR), options).unwrap();
        let mut reader = wal.read_from(1);
        for round in 0..3u64 {
            let before = wal.durable_position();
            for position in before + 1..=before + 10 {
                assert_eq!(wal.append(&payload(position, 40)).unwrap(), position);
            }
            assert_eq!(wal.durable_position(), before, "buffer {buffer_bytes_max}");
            assert_eq!(wal.last_position(), before + 10);
            assert!(
                reader.next().is_none(),
                "round {round}: unsynced record visible"
            );
            assert!(wal.read_from(before + 1).next().is_none());
            assert_eq!(wal.sync().unwrap(), before + 10);
            let seen: Vec<u64> = reader
                .by_ref()
                .map(|record| record.unwrap().position)
                .collect();
            assert_eq!(seen, (before + 1..=before + 10).collect::<Vec<_>>());
        }
    }
}

/// Under `Interval`, a background thread makes buffered appends durable without a `sync` call.
#[test]
fn interval_policy_makes_records_durable_in_the_background() {
    let options = WalOptions {
        sync_policy: SyncPolicy::Interval(Duration::from_millis(5)),
        ..WalOptions::default()
    };
    let storage = Arc::new(MemoryStorage::new());
    let (wal, _) = Wal::open_with_storage(storage, Path::new(MEMORY_DIR), options).unwrap();
    for position in 1..=3 {
        assert_eq!(wal.append(&payload(position, 8)).unwrap(), position);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.durable_position() < 3 {
        assert!(Instant::now() < deadline, "interval sync never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(positions(&read_all(&wal, 1)), [1, 2, 3]);
}

/// `append_batch_at` keeps another log's positions (a copy of a compacted log): positions may
/// skip, never repeat or go back; the gaps read back and survive a reopen, across rolls.
#[test]
fn batches_at_given_positions_keep_their_gaps_across_rolls_and_reopens() {
    let storage = Arc::new(MemoryStorage::new());
    let options = small_segments(SyncPolicy::Always);
    let (wal, _) =
        Wal::open_with_storage(storage.clone(), Path::new(MEMORY_DIR), options.clone()).unwrap();
    let mut expected = Vec::new();
    let mut position = 3;
    for round in 0..40u64 {
        let batch: Vec<Vec<u8>> = (0..1 + round % 3)
            .map(|n| payload(position + n, 40))
            .collect();
        let receipt = wal.append_batch_at(position, &batch).unwrap();
        assert_eq!(receipt.first, position);
        for (offset, bytes) in batch.into_iter().enumerate() {
            expected.push((position + offset as u64, bytes));
        }
        position = receipt.last + 1 + round % 4;
    }
    let back = wal.append_batch_at(expected.last().unwrap().0, &[b"again".to_vec()]);
    assert!(
        matches!(back, Err(logbook_wal::Error::InvalidArgument(_))),
        "{back:?}"
    );
    assert!(wal.segments().len() > 2, "the copy rolled segments");
    let read: Vec<(u64, Vec<u8>)> = read_all(&wal, 1)
        .into_iter()
        .map(|record| (record.position, record.payload))
        .collect();
    assert_eq!(read, expected);
    wal.close().unwrap();
    let (wal, report) = Wal::open_with_storage(storage, Path::new(MEMORY_DIR), options).unwrap();
    assert_eq!(report.last_position, expected.last().unwrap().0);
    let reread: Vec<(u64, Vec<u8>)> = read_all(&wal, 1)
        .into_iter()
        .map(|record| (record.position, record.payload))
        .collect();
    assert_eq!(reread, expected);
    let next = wal.append(b"next").unwrap();
    assert_eq!(next, expected.last().unwrap().0 + 1);
    wal.close().unwrap();
}
