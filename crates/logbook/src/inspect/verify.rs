//! `verify`: every segment header, frame checksum, batch, event envelope and stream version,
//! checked without opening the log, each problem with its file and byte offset.
//!
//! Owns: the checks and the verdict: corruption (the log will not open, or open would drop
//! durable events), or only a torn tail (what a crash or a live writer leaves; the next open
//! cuts it). Must never: stop at the first problem when a later frame can still be read, or
//! write anything.
//!
//! The checks run one pass per segment file, then one per snapshot file; each is a function
//! below. The stream index (sled, `index/`) is not checked: it is derived data the engine
//! rebuilds on any error, and sled cannot open it without writing; the report says so.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::Progress;
use super::scan::{self, FrameWalker, SegmentFile, Walk};
use crate::error::Result;
use crate::system::{self, SystemEvent};
use logbook_compaction::{Error as CompactionError, SnapshotStore, decode_snapshot};
use logbook_projection::EnvelopeRef;
use logbook_wal::manifest;
use logbook_wal::segment::{self, SEGMENT_HEADER_BYTES};
use logbook_wal::sidecar::{self, SIDECAR_EXTENSION};
use logbook_wal::storage::{LockGuard, OpenMode, StorageFile};
use logbook_wal::{FileStorage, Storage};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most findings listed per segment file; more are counted, not listed.
pub const FINDINGS_PER_SEGMENT_MAX: usize = 100;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Information (a file that is not a segment, the zeros a writer preallocated).
    Note,
    /// An incomplete tail of the last segment: what a crash or a live writer leaves. The next
    /// open cuts it; nothing durable is lost.
    Tail,
    /// Corruption: open refuses the log, or would drop events that were durable.
    Corruption,
}

impl Severity {
    /// A short name: `note`, `tail`, `corrupt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Tail => "tail",
            Severity::Corruption => "corrupt",
        }
    }
}

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// The file.
    pub file: PathBuf,
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// What [`verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Valid frames.
    pub frames: u64,
    /// Frames holding a valid event envelope.
    pub events: u64,
    /// The checks that ran, in order.
    pub checks: Vec<&'static str>,
    /// Every problem, in file and offset order.
    pub findings: Vec<Finding>,
    /// Findings not listed (over [`FINDINGS_PER_SEGMENT_MAX`] in one file).
    pub findings_not_listed: u64,
    /// Snapshot files checked.
    pub snapshots: usize,
    /// What exists but was not checked, and why.
    pub unchecked: Vec<&'static str>,
    /// The log's creation was not finished (see [`super::CREATION_UNFINISHED`]): it holds no
    /// event, and that is not corruption.
    pub creation_unfinished: bool,
}

impl VerifyReport {
    /// True when nothing is corrupt (notes and a torn tail are fine).
    pub fn is_clean(&self) -> bool {
        self.findings_not_listed == 0
            && self
                .findings
                .iter()
                .all(|finding| finding.severity < Severity::Corruption)
    }
}

/// The checks, in the order they run.
const CHECKS: &[&str] = &[
    "segment file names and headers",
    "segment base positions",
    "frame checksums, positions and batches",
    "event envelopes",
    "stream versions and engine events",
    "segment sidecars",
    "the manifest: segment set and how far the log reached",
    "snapshot checksums and positions",
];

/// The directory of the engine's stream index.
const INDEX_DIR_NAME: &str = "index";

/// Verifies the log in `dir` on the real file system.
pub fn verify(dir: impl AsRef<Path>, progress: &dyn Progress) -> Result<VerifyReport> {
    verify_with_storage(Arc::new(FileStorage::new()), dir.as_ref(), progress)
}

/// [`verify`] on any storage.
pub fn verify_with_storage(
    storage: Arc<dyn Storage>,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let (segments, others) = scan::segment_files(storage.as_ref(), dir)?;
    let mut report = VerifyReport {
        checks: CHECKS.to_vec(),
        ..VerifyReport::default()
    };
    let sidecars = sort_other_files(&segments, others, &mut report);
    let mut total = 0u64;
    for segment in &segments {
        let file = storage.open_file(&segment.path, logbook_wal::OpenMode::Read);
        let len = file.and_then(|file| file.len());
        total += len.map_err(|source| scan::io_error(&segment.path, source))?;
    }
    progress.start("verify", total);
    let mut streams = Streams::default();
    let mut last_position = 0u64;
    for (index, segment) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let bytes = scan::read_file(storage.as_ref(), &segment.path)?;
        let mut check = SegmentCheck {
            segment,
            is_last,
            findings: Vec::new(),
        };
        let frames = check.run(&bytes, last_position, &mut streams, &mut report);
        if let Some((_, last, _)) = frames.last() {
            last_position = *last;
        }
        if let Some(sidecar) = sidecars.get(&segment.base) {
            let sidecar_bytes = scan::read_file(storage.as_ref(), sidecar)?;
            check_sidecar(
                sidecar,
                &sidecar_bytes,
                (
                    segment.base,
                    bytes.len() as u64,
                    is_last,
                    check.findings.is_empty(),
                ),
                &frames,
                &mut report,
            );
        }
        let listed = check.findings.len().min(FINDINGS_PER_SEGMENT_MAX);
        report.findings_not_listed += (check.findings.len() - listed) as u64;
        report
            .findings
            .extend(check.findings.into_iter().take(listed));
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        progress.advance(bytes.len() as u64);
    }
    // A segment's base minus one was reached when the segment was created (compaction may
    // have dropped the records just before it).
    let end = segments
        .last()
        .map_or(last_position, |last| last_position.max(last.base - 1));
    check_manifest(storage.as_ref(), dir, &segments, end, &mut report)?;
    check_snapshots(&storage, dir, end, &mut report)?;
    report.creation_unfinished = super::creation_unfinished_with_storage(storage.as_ref(), dir)?;
    if storage.exists(&dir.join(INDEX_DIR_NAME)) {
        report.unchecked.push(
            "the stream index (index/): derived data the engine rebuilds on any error; it \
             cannot be opened without writing",
        );
    }
    progress.finish();
    Ok(report)
}

/// Checks the manifest (`wal/MANIFEST`): its checksum, that it lists exactly the segment files
/// present (a missing or unlisted segment is corruption, with the positions it covers), and
/// that the segments reach the position it records.
fn check_manifest(
    storage: &dyn Storage,
    dir: &Path,
    segments: &[SegmentFile],
    end: u64,
    report: &mut VerifyReport,
) -> Result<()> {
    let wal_dir = dir.join(logbook_wal::WAL_DIR_NAME);
    let path = wal_dir.join(manifest::MANIFEST_FILE_NAME);
    if !storage.exists(&path) {
        if !segments.is_empty() {
            report.findings.push(Finding {
                severity: Severity::Note,
                file: path,
                offset: 0,
                reason: "no manifest (a log written before manifests existed): the set of \
                         segments cannot be proven; the next writer open writes one"
                    .to_owned(),
            });
        }
        return Ok(());
    }
    let bytes = scan::read_file(storage, &path)?;
    report.bytes += bytes.len() as u64;
    let manifest = match manifest::decode(&bytes) {
        Ok(manifest) => manifest,
        Err(error) => {
            report.findings.push(Finding {
                severity: Severity::Corruption,
                file: path,
                offset: error.offset,
                reason: format!("{} (the log will not open)", error.reason),
            });
            return Ok(());
        }
    };
    let mut files = Vec::with_capacity(segments.len());
    for segment in segments {
        let len = if manifest.entry(segment.base).is_some() {
            0
        } else {
            storage
                .open_file(&segment.path, OpenMode::Read)
                .and_then(|file| file.len())
                .map_err(|source| scan::io_error(&segment.path, source))?
        };
        files.push((segment.base, len));
    }
    for finding in manifest::compare(&manifest, &wal_dir, &files) {
        let (severity, file, suffix) = match &finding {
            manifest::Finding::Missing { .. } => (
                Severity::Corruption,
                path.clone(),
                "; the log will not open (repair accepts the loss)",
            ),
            manifest::Finding::Unexpected { path: file } => (
                Severity::Corruption,
                file.clone(),
                "; the log will not open (repair adopts it)",
            ),
            manifest::Finding::Leftover { path: file } => (
                Severity::Note,
                file.clone(),
                "; the next writer open removes it",
            ),
            manifest::Finding::InterruptedRoll { path: file } => (
                Severity::Note,
                file.clone(),
                "; the next writer open adopts it",
            ),
        };
        report.findings.push(Finding {
            severity,
            file,
            offset: 0,
            reason: format!("{finding}{suffix}"),
        });
    }
    if manifest.reached > end {
        report.findings.push(Finding {
            severity: Severity::Corruption,
            file: path,
            offset: 16,
            reason: format!(
                "the log reached position {} but its segments end at {end}: positions {}..={} \
                 are gone; the log will not open (repair accepts the loss)",
                manifest.reached,
                end + 1,
                manifest.reached
            ),
        });
    }
    Ok(())
}

/// Checks every snapshot file: its checksums (header, each section, trailer), that its header
/// position matches its name, and that the log reaches its position. Snapshots are derived
/// data (the engine skips a bad one), but a damaged file means the disk changed bytes.
fn check_snapshots(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    last_position: u64,
    report: &mut VerifyReport,
) -> Result<()> {
    let store = SnapshotStore::new(Arc::new(ReadOnly(storage.clone())), dir);
    let snapshots_dir = store.dir().to_path_buf();
    if !storage.exists(&snapshots_dir) {
        return Ok(());
    }
    let names = storage
        .list_dir(&snapshots_dir)
        .map_err(|source| scan::io_error(&snapshots_dir, source))?;
    let mut temps: Vec<&String> = names.iter().filter(|name| name.ends_with(".tmp")).collect();
    temps.sort();
    for name in temps {
        report.findings.push(Finding {
            severity: Severity::Note,
            file: snapshots_dir.join(name),
            offset: 0,
            reason: "snapshot temporary file left by a crash; the next snapshot removes it"
                .to_owned(),
        });
    }
    let mut infos = store.list()?;
    infos.reverse();
    for info in infos {
        let bytes = scan::read_file(storage.as_ref(), &info.path)?;
        report.snapshots += 1;
        report.bytes += bytes.len() as u64;
        let mut find = |offset: u64, reason: String| {
            report.findings.push(Finding {
                severity: Severity::Corruption,
                file: info.path.clone(),
                offset,
                reason,
            });
        };
        let snapshot = match decode_snapshot(&bytes) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                let offset = match &error {
                    CompactionError::Corrupted { offset, .. }
                    | CompactionError::Unsupported { offset, .. }
                    | CompactionError::LimitExceeded { offset, .. } => *offset,
                    _ => 0,
                };
                find(
                    offset,
                    format!("{error} (derived data: the engine skips this snapshot)"),
                );
                continue;
            }
        };
        if snapshot.position != info.position {
            let reason = format!(
                "snapshot header position {} does not match its file name",
                snapshot.position
            );
            find(16, reason);
        } else if snapshot.position > last_position {
            let reason = format!(
                "snapshot position {} is beyond the log's end {last_position}: events it \
                 describes are gone; the log will not open (repair removes the snapshot)",
                snapshot.position
            );
            find(16, reason);
        }
    }
    Ok(())
}

/// Sorts the files of `wal/` that are not segments: sidecars of existing segments are returned
/// by base position; the rest become notes.
fn sort_other_files(
    segments: &[SegmentFile],
    others: Vec<PathBuf>,
    report: &mut VerifyReport,
) -> HashMap<u64, PathBuf> {
    let mut sidecars = HashMap::new();
    for path in others {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let sidecar_base = name
            .strip_suffix(&format!(".{SIDECAR_EXTENSION}"))
            .and_then(|digits| segment::parse_file_name(&format!("{digits}.seg")));
        let reason = match sidecar_base {
            Some(base) if segments.iter().any(|segment| segment.base == base) => {
                sidecars.insert(base, path);
                continue;
            }
            Some(_) => "sidecar of a segment that is gone; the next writer open removes it",
            None if name == manifest::MANIFEST_FILE_NAME => continue,
            None if name.ends_with(".tmp") => {
                "temporary file left by a crash; the next writer open removes it"
            }
            None => "not a segment file: ignored by the log",
        };
        report.findings.push(Finding {
            severity: Severity::Note,
            file: path,
            offset: 0,
            reason: reason.to_owned(),
        });
    }
    sidecars
}

/// Checks a segment's sidecar (its sparse index and summary, derived data). `segment` is the
/// segment's base, length and whether it is the last one. Open trusts the sidecar of a sealed
/// segment only when it matches the segment's length, and the last segment's (a checkpoint of
/// a prefix written at a clean close) only when it describes at most the file's length. The
/// last flag says whether the segment itself checked clean.
fn check_sidecar(
    path: &Path,
    bytes: &[u8],
    segment: (u64, u64, bool, bool),
    frames: &[(u64, u64, u64)],
    report: &mut VerifyReport,
) {
    let (base, segment_len, is_last, segment_clean) = segment;
    const REBUILD: &str = "derived data: remove it and the next writer open rebuilds it";
    let mut find = |severity: Severity, offset: u64, reason: String| {
        report.findings.push(Finding {
            severity,
            file: path.to_path_buf(),
            offset,
            reason,
        });
    };
    let sidecar = match sidecar::decode(bytes) {
        Ok(sidecar) => sidecar,
        Err(reason) => return find(Severity::Corruption, 0, format!("{reason} ({REBUILD})")),
    };
    let described = if is_last {
        sidecar.segment_len <= segment_len
    } else {
        sidecar.segment_len == segment_len
    };
    if !described {
        let reason = "stale sidecar (its segment's length differs): ignored and rebuilt by the \
                      next writer open";
        return find(Severity::Note, 24, reason.to_owned());
    }
    if sidecar.base != base {
        let reason = format!("sidecar base position {} is not {base}", sidecar.base);
        return find(Severity::Note, 16, format!("{reason}: ignored by open"));
    }
    if !segment_clean {
        // The segment's own findings say what is wrong; comparing the sidecar with a damaged
        // segment would only repeat them.
        return;
    }
    // The frames the sidecar describes (all of a sealed segment's; a checkpoint's prefix).
    let frames: Vec<(u64, u64, u64)> = frames
        .iter()
        .copied()
        .take_while(|(offset, _, _)| *offset < sidecar.segment_len)
        .collect();
    let frames = frames.as_slice();
    let last = frames.last().map_or(0, |(_, position, _)| *position);
    if sidecar.last_position != last {
        let reason = format!(
            "sidecar says the last position is {}, the segment ends at {last} ({REBUILD})",
            sidecar.last_position
        );
        find(Severity::Corruption, 32, reason);
    }
    if sidecar.records != frames.len() as u64 {
        let reason = format!(
            "sidecar counts {} records, the segment holds {} ({REBUILD})",
            sidecar.records,
            frames.len()
        );
        find(Severity::Corruption, 40, reason);
    }
    for (index, entry) in sidecar.entries.iter().enumerate() {
        let at = frames.binary_search_by_key(&entry.offset, |(offset, _, _)| *offset);
        let matches = at
            .ok()
            .and_then(|at| frames.get(at))
            .is_some_and(|(_, position, _)| *position == entry.position);
        if !matches {
            let reason = format!(
                "sidecar index entry {index} (position {} at offset {}) is not a frame of the \
                 segment ({REBUILD})",
                entry.position, entry.offset
            );
            find(
                Severity::Corruption,
                sidecar::SIDECAR_HEADER_BYTES as u64 + 16 * index as u64,
                reason,
            );
            return;
        }
    }
}

/// Per stream, the lowest version the next event may have.
#[derive(Debug, Default)]
struct Streams {
    next_version: HashMap<String, u64>,
}

struct SegmentCheck<'a> {
    segment: &'a SegmentFile,
    is_last: bool,
    findings: Vec<Finding>,
}

impl SegmentCheck<'_> {
    fn find(&mut self, severity: Severity, offset: u64, reason: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            file: self.segment.path.clone(),
            offset,
            reason: reason.into(),
        });
    }

    /// Checks one segment; returns its valid frames: (offset, position, durable mark).
    fn run(
        &mut self,
        bytes: &[u8],
        last_position: u64,
        streams: &mut Streams,
        report: &mut VerifyReport,
    ) -> Vec<(u64, u64, u64)> {
        let mut frames: Vec<(u64, u64, u64)> = Vec::new();
        if !self.header(bytes, last_position) {
            return frames;
        }
        let start = SEGMENT_HEADER_BYTES as u64;
        let after = last_position.max(self.segment.base - 1);
        let mut bad: Vec<(u64, String, u64, bool)> = Vec::new();
        for step in FrameWalker::new(bytes, start, after) {
            match step {
                Walk::Frame {
                    offset,
                    header,
                    payload,
                } => {
                    report.frames += 1;
                    frames.push((offset, header.position, header.durable_mark));
                    if self.event(offset, header.position, payload, streams) {
                        report.events += 1;
                    }
                }
                Walk::Bad {
                    offset,
                    reason,
                    after_position,
                    at_end,
                } => bad.push((offset, reason, after_position, at_end)),
                Walk::Zeros { offset, bytes } if self.is_last => self.find(
                    Severity::Note,
                    offset,
                    format!(
                        "{bytes} zero bytes of preallocated space after the last frame (a live \
                         writer's, or a crash's: the next appends overwrite them)"
                    ),
                ),
                Walk::Zeros { offset, bytes } => self.find(
                    Severity::Corruption,
                    offset,
                    format!(
                        "{bytes} zero bytes after the last frame (in a sealed segment, which its \
                         roll trims)"
                    ),
                ),
            }
        }
        self.classify(bad, &frames);
        self.findings.sort_by_key(|finding| finding.offset);
        frames
    }

    /// Checks the header and the base position; false when the frames cannot be trusted to
    /// belong to this file.
    fn header(&mut self, bytes: &[u8], last_position: u64) -> bool {
        let base = self.segment.base;
        if bytes.len() <= SEGMENT_HEADER_BYTES && self.is_last {
            if segment::decode_header(bytes).is_err() {
                self.find(
                    Severity::Tail,
                    0,
                    "segment header incomplete: its creation was interrupted; the next open \
                     removes the file",
                );
                return false;
            }
            return true;
        }
        match segment::decode_header(bytes) {
            Ok(header_base) if header_base == base => {}
            Ok(header_base) => self.find(
                Severity::Corruption,
                16,
                format!("header base position {header_base} does not match the file name"),
            ),
            Err(reason) => self.find(Severity::Corruption, 0, reason),
        }
        if base <= last_position {
            self.find(
                Severity::Corruption,
                16,
                format!(
                    "segment base position {base} is not above the previous segment's last \
                     position {last_position}"
                ),
            );
        }
        true
    }

    /// Classifies bad frames: a later valid frame whose durable mark covers the position before
    /// a bad frame proves the bad frame was durable (corruption); in a sealed segment any bad
    /// frame is corruption; otherwise it is a torn tail, unless valid frames follow it.
    fn classify(&mut self, bad: Vec<(u64, String, u64, bool)>, frames: &[(u64, u64, u64)]) {
        for (offset, reason, after_position, at_end) in bad {
            let later = frames.iter().filter(|(at, _, _)| *at > offset);
            let proven = later.clone().any(|(_, _, mark)| *mark > after_position);
            let later_frames = later.count();
            let (severity, why) = if !self.is_last {
                (Severity::Corruption, " (in a sealed segment)".to_owned())
            } else if proven {
                (
                    Severity::Corruption,
                    " (a later frame proves it was durable)".to_owned(),
                )
            } else if !at_end {
                let why = format!(
                    " (not provably durable, but {later_frames} valid frames follow it; the \
                     next open would cut the log here)"
                );
                (Severity::Corruption, why)
            } else {
                (
                    Severity::Tail,
                    " (incomplete tail: a crash or a live writer; the next open cuts it)"
                        .to_owned(),
                )
            };
            self.find(severity, offset, format!("{reason}{why}"));
        }
    }

    /// Checks the envelope of a valid frame and its stream version; true when it is an event.
    fn event(&mut self, offset: u64, position: u64, payload: &[u8], streams: &mut Streams) -> bool {
        let envelope = match EnvelopeRef::decode(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                let reason = format!("record at position {position} is not an event: {error}");
                self.find(Severity::Corruption, offset, reason);
                return false;
            }
        };
        let expected = streams
            .next_version
            .entry(envelope.stream.to_owned())
            .or_insert(0);
        // Versions ascend in each stream. Gaps are allowed: compaction purges truncated and
        // superseded versions, and a bad frame reported above loses some.
        if envelope.stream_version < *expected {
            let reason = format!(
                "position {position}: stream {} has version {} after version {}",
                envelope.stream,
                envelope.stream_version,
                *expected - 1
            );
            self.find(Severity::Corruption, offset, reason);
        }
        *expected = envelope.stream_version + 1;
        if envelope.stream == system::SYSTEM_STREAM {
            self.system_event(offset, position, &envelope);
        }
        true
    }

    fn system_event(&mut self, offset: u64, position: u64, envelope: &EnvelopeRef<'_>) {
        if let Err(reason) = SystemEvent::decode_record(envelope.event_type, envelope.payload) {
            let reason = format!("position {position}: {reason}");
            self.find(Severity::Corruption, offset, reason);
        }
    }
}

/// The storage the snapshot store lists through here: reads pass, anything else is refused,
/// so a check can never write.
#[derive(Debug)]
struct ReadOnly(Arc<dyn Storage>);

fn refused() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, "verify never writes")
}

impl Storage for ReadOnly {
    fn is_file_system(&self) -> bool {
        self.0.is_file_system()
    }

    fn create_dir_all(&self, _: &Path) -> std::io::Result<()> {
        Err(refused())
    }

    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.0.list_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> std::io::Result<Arc<dyn StorageFile>> {
        match mode {
            OpenMode::Read => self.0.open_file(path, mode),
            _ => Err(refused()),
        }
    }

    fn remove_file(&self, _: &Path) -> std::io::Result<()> {
        Err(refused())
    }

    fn rename(&self, _: &Path, _: &Path) -> std::io::Result<()> {
        Err(refused())
    }

    fn sync_dir(&self, _: &Path) -> std::io::Result<()> {
        Err(refused())
    }

    fn try_lock(&self, _: &Path) -> std::io::Result<Option<Box<dyn LockGuard>>> {
        Err(refused())
    }
}
