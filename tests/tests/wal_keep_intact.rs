//! `Wal::repair_keep_intact`: one damaged frame costs only its own batch, never the intact
//! frames after it. Damage in a payload, in a frame header, in a length field, in the last frame
//! of a sealed segment, in the middle of a batch, twice, and in the last segment; after the
//! repair a strict open reads every other record back, and the report names exactly the
//! positions and byte ranges given up.

use logbook_tests::{
    FoundFrame, MEMORY_DIR, memory_files, memory_storage_with, payload, positions, read_all,
    segment_frames,
};
use logbook_wal::frame::{FLAG_BATCH_FIRST, FLAG_BATCH_LAST, encode_frame};
use logbook_wal::{
    DamagedRegion, Error, KeepIntactReport, MemoryStorage, RecoveryMode, SyncPolicy, Wal,
    WalOptions,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn options() -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Always,
        segment_bytes_max: 1000,
        recovery_mode: RecoveryMode::Strict,
        ..WalOptions::default()
    }
}

/// The batch appended whole at positions 30..=32.
const BATCH: [u64; 3] = [30, 31, 32];
const LAST: u64 = 60;

/// A log of singles 1..=60 (the batch 30..=32 excepted) over several segments, all synced.
fn build() -> Vec<(PathBuf, Vec<u8>)> {
    let storage = Arc::new(MemoryStorage::new());
    let (wal, _) =
        Wal::open_with_storage(storage.clone(), Path::new(MEMORY_DIR), options()).unwrap();
    let mut position = 1;
    while position <= LAST {
        if position == BATCH[0] {
            let batch: Vec<Vec<u8>> = BATCH.iter().map(|&at| payload(at, 40)).collect();
            assert_eq!(wal.append_batch(&batch).unwrap().last, BATCH[2]);
            position = BATCH[2] + 1;
            continue;
        }
        assert_eq!(wal.append(&payload(position, 40)).unwrap(), position);
        position += 1;
    }
    wal.close().unwrap();
    let files = memory_files(&storage);
    assert!(segments(&files).len() >= 4, "layout: several segments");
    files
}

fn segments(files: &[(PathBuf, Vec<u8>)]) -> Vec<(PathBuf, Vec<u8>)> {
    files
        .iter()
        .filter(|(path, _)| path.extension().is_some_and(|ext| ext == "seg"))
        .cloned()
        .collect()
}

/// Every frame by position: its segment file and place.
fn frames(files: &[(PathBuf, Vec<u8>)]) -> BTreeMap<u64, (PathBuf, FoundFrame)> {
    segments(files)
        .iter()
        .flat_map(|(path, bytes)| {
            segment_frames(bytes)
                .into_iter()
                .map(move |frame| (frame.header.position, (path.clone(), frame)))
        })
        .collect()
}

/// `files` with the byte at `offset` of `path` flipped.
fn flip(files: &[(PathBuf, Vec<u8>)], path: &Path, offsets: &[u64]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = files.to_vec();
    let (_, bytes) = files.iter_mut().find(|(at, _)| at == path).unwrap();
    for &offset in offsets {
        bytes[offset as usize] ^= 0x5a;
    }
    files
}

/// Repairs `files` keeping what is intact; returns the report and the records a strict open
/// then reads.
fn repair(files: &[(PathBuf, Vec<u8>)]) -> (KeepIntactReport, Vec<u64>, MemoryStorage) {
    let storage = memory_storage_with(files);
    let report = Wal::repair_keep_intact(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        &options(),
        |_| Ok::<(), Error>(()),
    )
    .unwrap();
    let (wal, recovery) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new(MEMORY_DIR), options())
            .unwrap_or_else(|error| panic!("strict open after the repair: {error}"));
    assert!(recovery.salvage.is_none());
    let records = read_all(&wal, 1);
    for record in &records {
        assert_eq!(
            record.payload,
            payload(record.position, 40),
            "kept bytes unchanged"
        );
    }
    wal.close().unwrap();
    (report, positions(&records), storage)
}

fn all_but(dropped: &[u64]) -> Vec<u64> {
    (1..=LAST)
        .filter(|position| !dropped.contains(position))
        .collect()
}

fn region(report: &KeepIntactReport) -> &DamagedRegion {
    assert_eq!(report.regions.len(), 1, "{:?}", report.regions);
    &report.regions[0]
}

#[test]
fn damage_in_a_payload_a_header_or_a_length_drops_that_frame_only() {
    let files = build();
    let frames = frames(&files);
    let (path, frame) = frames[&20].clone();
    // Payload, position field, CRC field, flags, and the length field (which makes the reader
    // check the wrong byte range).
    for within in [40, 9, 5, 24, 0, 1] {
        let damaged = flip(&files, &path, &[frame.offset + within]);
        let (report, kept, _) = repair(&damaged);
        assert_eq!(kept, all_but(&[20]), "byte {within} of the frame");
        let region = region(&report);
        assert_eq!((region.start, region.end), (frame.offset, frame.end()));
        assert_eq!(region.bad_offset, frame.offset);
        assert_eq!(region.positions_given_up(), (20, Some(20)));
        assert!(region.intact_frames_dropped.is_empty());
        assert_eq!(report.segments_rewritten, vec![path.clone()]);
        assert_eq!(report.records_kept, LAST - 1);
    }
}

#[test]
fn damage_in_the_last_frame_of_a_sealed_segment_keeps_the_next_segment() {
    let files = build();
    let frames = frames(&files);
    let first_segment = &segments(&files)[0].0;
    let (last_here, (_, frame)) = frames
        .iter()
        .rfind(|(_, (path, _))| path == first_segment)
        .map(|(position, found)| (*position, found.clone()))
        .unwrap();
    let damaged = flip(&files, first_segment, &[frame.offset + 30]);
    let (report, kept, _) = repair(&damaged);
    assert_eq!(kept, all_but(&[last_here]));
    let region = region(&report);
    assert_eq!((region.start, region.end), (frame.offset, frame.end()));
    assert_eq!(
        region.positions_given_up(),
        (last_here, Some(last_here)),
        "the next kept position is the next segment's first"
    );
}

#[test]
fn damage_inside_a_batch_drops_the_whole_batch_and_lists_its_intact_frames() {
    let files = build();
    let frames = frames(&files);
    let (path, middle) = frames[&BATCH[1]].clone();
    let first = frames[&BATCH[0]].1;
    let last = frames[&BATCH[2]].1;
    let damaged = flip(&files, &path, &[middle.offset + 33]);
    let (report, kept, _) = repair(&damaged);
    assert_eq!(kept, all_but(&BATCH));
    let region = region(&report);
    assert_eq!((region.start, region.end), (first.offset, last.end()));
    assert_eq!(region.bad_offset, middle.offset);
    assert_eq!(region.positions_given_up(), (BATCH[0], Some(BATCH[2])));
    assert_eq!(region.intact_frames_dropped, vec![BATCH[0], BATCH[2]]);
}

#[test]
fn two_damaged_regions_cost_two_frames() {
    let files = build();
    let frames = frames(&files);
    let (path_a, a) = frames[&8].clone();
    let (path_b, b) = frames[&45].clone();
    assert_ne!(path_a, path_b);
    let damaged = flip(
        &flip(&files, &path_a, &[a.offset + 35]),
        &path_b,
        &[b.offset + 2],
    );
    // And two in one segment: 10 and 12.
    let (path_c, c) = frames[&10].clone();
    let (_, e) = frames[&12].clone();
    assert_eq!(path_a, path_c);
    let damaged = flip(&damaged, &path_c, &[c.offset + 12, e.offset + 50]);
    let (report, kept, _) = repair(&damaged);
    assert_eq!(kept, all_but(&[8, 10, 12, 45]));
    let given_up: Vec<(u64, Option<u64>)> = report
        .regions
        .iter()
        .map(DamagedRegion::positions_given_up)
        .collect();
    assert_eq!(
        given_up,
        vec![(8, Some(8)), (10, Some(10)), (12, Some(12)), (45, Some(45))]
    );
    assert_eq!(report.segments_rewritten, vec![path_a, path_b]);
}

#[test]
fn the_last_segment_keeps_intact_frames_after_durable_damage_and_leaves_a_torn_tail() {
    let files = build();
    let frames = frames(&files);
    let last_segment = segments(&files).last().unwrap().0.clone();
    let in_last: Vec<u64> = frames
        .iter()
        .filter(|(_, (path, _))| *path == last_segment)
        .map(|(position, _)| *position)
        .collect();
    assert!(in_last.len() >= 3, "{in_last:?}");
    // A frame followed by frames whose durable marks cover it: corruption, kept around.
    let victim = in_last[0];
    let frame = frames[&victim].1;
    let damaged = flip(&files, &last_segment, &[frame.offset + 31]);
    let (report, kept, _) = repair(&damaged);
    assert_eq!(kept, all_but(&[victim]));
    assert_eq!(region(&report).positions_given_up(), (victim, Some(victim)));

    // The last frame: nothing proves it durable, so it is a torn tail the open cuts.
    let frame = frames[&LAST].1;
    let damaged = flip(&files, &last_segment, &[frame.offset + 31]);
    let (report, kept, _) = repair(&damaged);
    assert!(report.regions.is_empty(), "{report:?}");
    assert!(report.segments_rewritten.is_empty());
    assert_eq!(kept, all_but(&[LAST]));
}

#[test]
fn a_clean_log_is_not_touched_and_a_locked_log_is_refused() {
    let files = build();
    let (report, kept, storage) = repair(&files);
    assert!(!report.drops_anything());
    assert_eq!(kept, all_but(&[]));
    let (wal, _) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new(MEMORY_DIR), options())
            .unwrap();
    let refused = Wal::repair_keep_intact(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        &options(),
        |_| Ok::<(), Error>(()),
    );
    assert!(matches!(refused, Err(Error::Locked { .. })), "{refused:?}");
    wal.close().unwrap();
}

/// A damaged frame whose payload holds a whole valid frame with a high position (an event that
/// stores log bytes): the resync must not take that copy for the next frame, or it would keep a
/// record that never existed and drop every real one after it.
#[test]
fn a_frame_copied_inside_a_damaged_payload_is_not_taken_for_a_real_one() {
    let storage = Arc::new(MemoryStorage::new());
    let (wal, _) =
        Wal::open_with_storage(storage.clone(), Path::new(MEMORY_DIR), options()).unwrap();
    let mut copied = Vec::new();
    encode_frame(
        &mut copied,
        1_000_000,
        0,
        FLAG_BATCH_FIRST | FLAG_BATCH_LAST,
        b"a frame inside a payload",
    );
    // More payload after the copy: the copy ends inside the damaged frame, not at a frame.
    copied.extend_from_slice(b"and more bytes after it");
    for position in 1..=12u64 {
        let bytes = if position == 5 {
            copied.clone()
        } else {
            payload(position, 40)
        };
        assert_eq!(wal.append(&bytes).unwrap(), position);
    }
    wal.close().unwrap();
    let files = memory_files(&storage);
    let frames = frames(&files);
    let (path, frame) = frames[&5].clone();
    let damaged = flip(&files, &path, &[frame.offset + 5]);
    let storage = memory_storage_with(&damaged);
    let report = Wal::repair_keep_intact(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        &options(),
        |_| Ok::<(), Error>(()),
    )
    .unwrap();
    assert_eq!(region(&report).positions_given_up(), (5, Some(5)));
    assert_eq!(region(&report).end, frame.end());
    let (wal, _) =
        Wal::open_with_storage(Arc::new(storage), Path::new(MEMORY_DIR), options()).unwrap();
    let kept = positions(&read_all(&wal, 1));
    assert_eq!(kept, vec![1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]);
}
