//! Torn tails and corruption: every-byte truncation and bit flips of the last frames are cut
//! (an honest crash), while a bad frame that was provably durable fails open with its segment
//! and exact offset, and salvage cuts there and reports exactly what it dropped.

use logbook_tests::{
    FoundFrame, MEMORY_DIR, memory_files, memory_storage_with, payload, positions, read_all,
    segment_frames,
};
use logbook_wal::{
    Error, MemoryStorage, RecoveryMode, RecoveryReport, Salvage, SyncPolicy, TailCut, Wal,
    WalOptions,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SEGMENT_BYTES_MAX: u64 = 1000;

fn options(recovery_mode: RecoveryMode) -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Always,
        segment_bytes_max: SEGMENT_BYTES_MAX,
        recovery_mode,
        ..WalOptions::default()
    }
}

/// A log of two segments: singles 1..=20, then single 21 and the batch 22..=23, all synced
/// (`Always`), so each frame's durable mark is the position before its batch.
struct Log {
    files: Vec<(PathBuf, Vec<u8>)>,
    appended: Vec<Vec<u8>>,
}

impl Log {
    fn build() -> Log {
        let storage = Arc::new(MemoryStorage::new());
        let (wal, _) =
            Wal::open_with_storage(storage.clone(), Path::new(MEMORY_DIR), options_strict())
                .unwrap();
        let mut appended = Vec::new();
        for position in 1..=21u64 {
            appended.push(payload(position, 36 + (position % 5) as usize));
            assert_eq!(wal.append(appended.last().unwrap()).unwrap(), position);
        }
        let batch = [payload(22, 50), payload(23, 45)];
        assert_eq!(wal.append_batch(&batch).unwrap().last, 23);
        appended.extend(batch);
        wal.close().unwrap();
        let log = Log {
            files: memory_files(&storage),
            appended,
        };
        let segments = log.segment_files();
        assert_eq!(segments.len(), 2, "layout: two segments");
        let tail = log.tail_frames();
        let tail_positions: Vec<u64> = tail.iter().map(|frame| frame.header.position).collect();
        assert_eq!(
            tail_positions,
            [21, 22, 23],
            "layout: the last three frames"
        );
        assert!(tail[1].header.is_batch_first() && !tail[1].header.is_batch_last());
        assert!(segment_frames(&log.last_bytes()).len() > 3);
        log
    }

    fn segment_files(&self) -> Vec<&(PathBuf, Vec<u8>)> {
        self.files
            .iter()
            .filter(|(path, _)| path.extension().is_some_and(|ext| ext == "seg"))
            .collect()
    }

    fn last_path(&self) -> PathBuf {
        self.segment_files().last().unwrap().0.clone()
    }

    fn last_bytes(&self) -> Vec<u8> {
        self.segment_files().last().unwrap().1.clone()
    }

    fn tail_frames(&self) -> Vec<FoundFrame> {
        let frames = segment_frames(&self.last_bytes());
        frames[frames.len() - 3..].to_vec()
    }

    /// The files as a crash that tore the last segment leaves them: `path` replaced by
    /// `bytes`, and no checkpoint of the last segment. A writable open removes that checkpoint
    /// durably before the segment takes an append, so a torn tail never has one; a checkpoint
    /// longer than its segment proves lost records instead (`wal_sidecar.rs`).
    fn torn(&self, path: &Path, bytes: Vec<u8>) -> Vec<(PathBuf, Vec<u8>)> {
        let checkpoint = path.with_extension("idx");
        let mut files = self.with_file(path, bytes);
        files.retain(|(file_path, _)| *file_path != checkpoint);
        files
    }

    /// The files with `path` replaced by `bytes`.
    fn with_file(&self, path: &Path, bytes: Vec<u8>) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = self.files.clone();
        for (file_path, file_bytes) in &mut files {
            if file_path == path {
                *file_bytes = bytes.clone();
            }
        }
        files
    }
}

fn options_strict() -> WalOptions {
    options(RecoveryMode::Strict)
}

fn open(
    files: &[(PathBuf, Vec<u8>)],
    recovery_mode: RecoveryMode,
) -> (MemoryStorage, logbook_wal::Result<(Wal, RecoveryReport)>) {
    let storage = memory_storage_with(files);
    let opened = Wal::open_with_storage(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        options(recovery_mode),
    );
    (storage, opened)
}

/// After recovery to `last`: exactly the first `last` records, appends continue at `last + 1`,
/// and a second reopen finds nothing more to cut.
fn check_recovered(storage: &MemoryStorage, wal: Wal, appended: &[Vec<u8>], last: u64) {
    let records = read_all(&wal, 1);
    assert_eq!(positions(&records), (1..=last).collect::<Vec<_>>());
    for record in &records {
        assert_eq!(record.payload, appended[record.position as usize - 1]);
    }
    assert_eq!(wal.durable_position(), last);
    assert_eq!(wal.append(b"next").unwrap(), last + 1);
    wal.close().unwrap();
    let (wal, report) = Wal::open_with_storage(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        options_strict(),
    )
    .unwrap();
    assert_eq!(report.last_position, last + 1);
    assert!(report.tail_cut.is_none() && report.salvage.is_none());
    assert_eq!(read_all(&wal, last + 1)[0].payload, b"next");
}

/// Where recovery must cut a last segment that ends at `len`, and the last position kept.
fn expected_cut(tail: &[FoundFrame], len: u64) -> (u64, u64) {
    if len < tail[0].end() {
        (tail[0].offset, 20)
    } else if len < tail[2].end() {
        (tail[1].offset, 21)
    } else {
        (len, 23)
    }
}

#[test]
fn every_byte_truncation_of_the_last_three_frames_recovers_to_the_last_whole_batch() {
    let log = Log::build();
    let path = log.last_path();
    let bytes = log.last_bytes();
    let tail = log.tail_frames();
    for len in tail[0].offset..=bytes.len() as u64 {
        let files = log.torn(&path, bytes[..len as usize].to_vec());
        let (storage, opened) = open(&files, RecoveryMode::Strict);
        let (wal, report) = opened.unwrap_or_else(|error| panic!("length {len}: {error}"));
        let (cut, last) = expected_cut(&tail, len);
        assert_eq!(report.last_position, last, "length {len}");
        assert!(report.salvage.is_none());
        if cut == len {
            assert!(report.tail_cut.is_none(), "length {len}: nothing torn");
        } else {
            let tail_cut = report.tail_cut.clone().expect("a torn tail is reported");
            assert!(
                matches!(&tail_cut, TailCut { segment, offset, bytes_dropped, .. }
                    if *segment == path && *offset == cut && *bytes_dropped == len - cut),
                "length {len}: {tail_cut:?}"
            );
        }
        assert_eq!(storage.file_contents(&path).unwrap().len() as u64, cut);
        check_recovered(&storage, wal, &log.appended, last);
    }
}

fn flip(bytes: &[u8], bit: u64) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[(bit / 8) as usize] ^= 1 << (bit % 8);
    flipped
}

fn frame_bits(frame: &FoundFrame) -> std::ops::Range<u64> {
    frame.offset * 8..frame.end() * 8
}

/// A bit flip in the last batch (no later frame proves it durable) is an unsynced tail: cut.
#[test]
fn bit_flips_in_the_tail_batch_are_cut_as_torn() {
    let log = Log::build();
    let path = log.last_path();
    let bytes = log.last_bytes();
    let tail = log.tail_frames();
    for frame in &tail[1..] {
        for bit in frame_bits(frame) {
            let files = log.with_file(&path, flip(&bytes, bit));
            let (storage, opened) = open(&files, RecoveryMode::Strict);
            let (wal, report) = opened.unwrap_or_else(|error| panic!("bit {bit}: {error}"));
            let tail_cut = report.tail_cut.clone().expect("cut");
            assert_eq!(tail_cut.segment, path);
            assert_eq!(tail_cut.offset, tail[1].offset, "bit {bit}");
            assert_eq!(tail_cut.bytes_dropped, bytes.len() as u64 - tail[1].offset);
            assert!(report.salvage.is_none());
            assert_eq!(report.last_position, 21);
            check_recovered(&storage, wal, &log.appended, 21);
        }
    }
}

/// The strict open fails naming the file and offset; salvage then cuts exactly there.
fn check_corruption_and_salvage(
    log: &Log,
    path: &Path,
    bytes: &[u8],
    bad: &FoundFrame,
    expected: &Salvage,
) {
    let last_kept = bad.header.position - 1;
    for bit in frame_bits(bad) {
        let files = log.with_file(path, flip(bytes, bit));
        let (storage, opened) = open(&files, RecoveryMode::Strict);
        let error = opened.expect_err("a durable bad frame fails a strict open");
        assert!(
            matches!(&error, Error::Corrupted { segment, offset, .. }
                if segment == path && *offset == bad.offset),
            "bit {bit}: {error}"
        );
        assert!(error.is_corruption());
        assert!(error.to_string().contains(&path.display().to_string()));
        assert_eq!(
            memory_files(&storage),
            files,
            "a failed open changes nothing"
        );

        let (storage, opened) = open(&files, RecoveryMode::Salvage);
        let (wal, report) = opened.unwrap_or_else(|error| panic!("bit {bit}: {error}"));
        let salvage = report.salvage.clone().expect("salvage is reported");
        assert_eq!(
            Salvage {
                reason: salvage.reason.clone(),
                ..expected.clone()
            },
            salvage,
            "bit {bit}"
        );
        assert!(report.tail_cut.is_none());
        assert_eq!(report.last_position, last_kept);
        for removed in &expected.segments_removed {
            assert!(
                storage.file_contents(removed).is_none(),
                "{removed:?} removed"
            );
        }
        assert_eq!(
            storage.file_contents(path).unwrap().len() as u64,
            bad.offset
        );
        check_recovered(&storage, wal, &log.appended, last_kept);
    }
}

/// Frame 21 is followed by the batch 22..=23 whose durable mark (21) proves it was durable.
#[test]
fn bit_flips_in_a_durable_frame_of_the_last_segment_are_corruption() {
    let log = Log::build();
    let path = log.last_path();
    let bytes = log.last_bytes();
    let frames = segment_frames(&bytes);
    for bad in [frames[0], frames[frames.len() - 3]] {
        let later = frames
            .iter()
            .filter(|frame| frame.offset > bad.offset)
            .count();
        let expected = Salvage {
            segment: path.clone(),
            offset: bad.offset,
            reason: String::new(),
            bytes_dropped: bytes.len() as u64 - bad.offset,
            segments_removed: Vec::new(),
            valid_frames_dropped: later as u64,
        };
        check_corruption_and_salvage(&log, &path, &bytes, &bad, &expected);
    }
}

/// In a sealed segment every bad frame is corruption, even its last one (the roll synced it).
#[test]
fn bit_flips_in_a_sealed_segment_are_corruption() {
    let log = Log::build();
    let segments = log.segment_files();
    let (path, bytes) = segments[0].clone();
    let frames = segment_frames(&bytes);
    for bad in [frames[frames.len() / 2], frames[frames.len() - 1]] {
        let later = frames
            .iter()
            .filter(|frame| frame.offset > bad.offset)
            .count();
        let expected = Salvage {
            segment: path.clone(),
            offset: bad.offset,
            reason: String::new(),
            bytes_dropped: bytes.len() as u64 - bad.offset,
            segments_removed: vec![log.last_path()],
            valid_frames_dropped: later as u64,
        };
        check_corruption_and_salvage(&log, &path, &bytes, &bad, &expected);
    }
}

/// Zeros after the last complete batch of the last segment are the space a writer
/// preallocated (`WalOptions::preallocate_bytes`): the end of the data, kept (not cut) for the
/// next appends to overwrite, and trimmed at the next clean close.
#[test]
fn a_zero_filled_tail_is_preallocated_space_and_reused() {
    let log = Log::build();
    let path = log.last_path();
    let mut bytes = log.last_bytes();
    let len = bytes.len() as u64;
    bytes.resize(bytes.len() + 4096, 0);
    let (storage, opened) = open(&log.with_file(&path, bytes), RecoveryMode::Strict);
    let (wal, report) = opened.unwrap();
    assert!(report.tail_cut.is_none(), "{report:?}");
    assert_eq!(report.preallocated_bytes, 4096);
    assert_eq!(report.last_position, 23);
    assert_eq!(
        storage.file_contents(&path).unwrap().len() as u64,
        len + 4096
    );
    assert_eq!(wal.append(b"over the zeros").unwrap(), 24);
    wal.sync().unwrap();
    let on_disk = storage.file_contents(&path).unwrap();
    let frames = segment_frames(&on_disk[..]);
    assert_eq!(
        frames.last().unwrap().offset,
        len,
        "the append reuses the zeros"
    );
    let mut appended = log.appended.clone();
    appended.push(b"over the zeros".to_vec());
    check_recovered(&storage, wal, &appended, 24);
    let closed = storage.file_contents(&path).unwrap();
    assert!(
        closed.len() as u64 > len && closed.ends_with(b"next"),
        "trimmed at close"
    );
}

/// A zero tail that does not start at a frame boundary after a complete batch is a torn
/// frame, cut as before.
#[test]
fn zeros_inside_an_unfinished_batch_are_cut() {
    let log = Log::build();
    let path = log.last_path();
    let bytes = log.last_bytes();
    let frames = segment_frames(&bytes);
    let last = frames[frames.len() - 1];
    let mut torn = bytes.clone();
    torn[last.offset as usize + 28..].fill(0);
    torn.resize(bytes.len() + 4096, 0);
    let (storage, opened) = open(&log.with_file(&path, torn.clone()), RecoveryMode::Strict);
    let (wal, report) = opened.unwrap();
    let tail_cut = report.tail_cut.clone().expect("a torn frame is cut");
    let (cut, kept) = expected_cut(&frames[frames.len() - 3..], last.offset + 28);
    assert_eq!(tail_cut.offset, cut);
    assert_eq!(tail_cut.bytes_dropped, torn.len() as u64 - cut);
    assert_eq!(report.preallocated_bytes, 0);
    check_recovered(&storage, wal, &log.appended, kept);
}

/// A hole (zeros) followed by valid frames is no proof of corruption when those frames were
/// written before the hole was durable: the unsynced tail of a power loss, written back out of
/// order. It is cut like any torn tail.
#[test]
fn a_hole_followed_by_unproven_frames_is_cut() {
    let storage = Arc::new(MemoryStorage::new());
    let never = WalOptions {
        sync_policy: SyncPolicy::Never,
        ..options_strict()
    };
    let (wal, _) =
        Wal::open_with_storage(storage.clone(), Path::new(MEMORY_DIR), never.clone()).unwrap();
    let appended: Vec<Vec<u8>> = (1..=8).map(|position| payload(position, 30)).collect();
    for record in &appended[..5] {
        wal.append(record).unwrap();
    }
    assert_eq!(wal.sync().unwrap(), 5);
    for record in &appended[5..] {
        wal.append(record).unwrap();
    }
    wal.close().unwrap();
    let log = Log {
        files: memory_files(&storage),
        appended,
    };
    let path = log.last_path();
    let mut bytes = log.last_bytes();
    let frames = segment_frames(&bytes);
    assert_eq!(frames.len(), 8);
    let hole = frames[5];
    bytes[hole.offset as usize..hole.end() as usize].fill(0);
    let (storage, opened) = open(&log.with_file(&path, bytes.clone()), RecoveryMode::Strict);
    let (wal, report) = opened.unwrap();
    let tail_cut = report.tail_cut.clone().expect("the hole is cut");
    assert_eq!(tail_cut.offset, hole.offset);
    assert_eq!(tail_cut.bytes_dropped, bytes.len() as u64 - hole.offset);
    assert_eq!(report.last_position, 5);
    check_recovered(&storage, wal, &log.appended, 5);
}

/// The same torn tails on the real file system: truncation (every 5th byte), and a zero tail
/// (preallocated space: kept).
#[test]
fn torn_tails_on_real_files_are_cut() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let (wal, _) = Wal::open(&dir, options_strict()).unwrap();
    let mut appended = Vec::new();
    for position in 1..=21u64 {
        appended.push(payload(position, 36 + (position % 5) as usize));
        wal.append(appended.last().unwrap()).unwrap();
    }
    let batch = [payload(22, 50), payload(23, 45)];
    wal.append_batch(&batch).unwrap();
    appended.extend(batch);
    let path = wal.segments().last().unwrap().path.clone();
    wal.close().unwrap();
    // As a crash leaves it: no checkpoint of the last segment (see `Log::torn`).
    std::fs::remove_file(path.with_extension("idx")).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let frames = segment_frames(&bytes);
    let tail = &frames[frames.len() - 3..];
    let truncations = (tail[0].offset..bytes.len() as u64).step_by(5);
    for len in truncations.chain([bytes.len() as u64 + 4096]) {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        drop(file);
        let (wal, report) = Wal::open(&dir, options_strict()).unwrap();
        let (cut, last) = expected_cut(tail, len.min(bytes.len() as u64));
        let cut = if len > bytes.len() as u64 {
            bytes.len() as u64
        } else {
            cut
        };
        assert_eq!(report.last_position, last, "length {len}");
        let dropped = report
            .tail_cut
            .as_ref()
            .map_or(0, |tail_cut| tail_cut.bytes_dropped);
        // Zeros after the last frame are preallocated space: kept, not cut.
        let zeros = len.saturating_sub(bytes.len() as u64);
        assert_eq!(report.preallocated_bytes, zeros, "length {len}");
        assert_eq!(dropped, len - cut - zeros, "length {len}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), cut + zeros);
        let records = read_all(&wal, 1);
        assert_eq!(positions(&records), (1..=last).collect::<Vec<_>>());
        assert_eq!(wal.append(b"next").unwrap(), last + 1);
        wal.close().unwrap();
        // Back to the torn state of the next round: its bytes, and no checkpoint.
        std::fs::write(&path, &bytes).unwrap();
        std::fs::remove_file(path.with_extension("idx")).unwrap();
    }
}
