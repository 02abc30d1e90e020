//! Fuzz regression: replays every committed fuzz input through the same checks the fuzz targets
//! run, under a plain `cargo test` (no libFuzzer, no cargo-fuzz).
//!
//! For each target, the files of `fuzz/corpus/<target>/` (seeds), `fuzz/regressions/<target>/`
//! (minimized reproducers of bugs found, committed) and `fuzz/artifacts/<target>/` (crash
//! reproducers of local fuzz runs, git-ignored) must all pass. The checks are the files of
//! `fuzz/src/checks/`, included here by path, so the fuzz crate stays out of the workspace.
//!
//! `write_seed_corpus` (ignored) regenerates the committed seeds:
//! `cargo test -p logbook-tests --test fuzz_corpus_replay -- --ignored write_seed_corpus`.

#[path = "../../fuzz/src/checks/envelope_decode.rs"]
mod envelope_decode;
#[path = "../../fuzz/src/checks/frame_decode.rs"]
mod frame_decode;
#[path = "../../fuzz/src/checks/manifest_decode.rs"]
mod manifest_decode;
#[path = "../../fuzz/src/checks/segment_recovery.rs"]
mod segment_recovery;
#[path = "../../fuzz/src/checks/wal_model.rs"]
mod wal_model;

use logbook_projection::model::{
    JobClaimed, JobProgress, JobQueued, RoomCreated, RoomMessagePosted, RunFailed,
};
use logbook_projection::{BuiltinEvent, Envelope, Event, NewEvent, StreamId};
use logbook_wal::frame::{self, FLAG_BATCH_FIRST, FLAG_BATCH_LAST};
use logbook_wal::segment::{self, SEGMENT_HEADER_BYTES};
use logbook_wal::{MemoryStorage, SyncPolicy, Wal, WalOptions};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every input file of `target`: seeds, committed reproducers and local artifacts.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus", "regressions", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let hidden = path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'));
            if path.is_file() && !hidden {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`; fails naming every input that panicked.
fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no committed corpus for fuzz target {target}"
    );
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("read a fuzz input");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: inputs that panic: {failed:#?}"
    );
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn frame_decode_inputs_pass() {
    replay("frame_decode", frame_decode::check);
}

#[test]
fn segment_recovery_inputs_pass() {
    replay("segment_recovery", segment_recovery::check);
}

#[test]
fn envelope_decode_inputs_pass() {
    replay("envelope_decode", envelope_decode::check);
}

#[test]
fn manifest_decode_inputs_pass() {
    replay("manifest_decode", manifest_decode::check);
}

#[test]
fn wal_model_inputs_pass() {
    replay("wal_model", wal_model::check);
}

/// The input size limits the fuzz runs pass as `-max_len` (see `.ci/fuzz-smoke`).
#[test]
fn seeds_fit_the_input_limits() {
    let limits = [
        ("frame_decode", frame_decode::INPUT_BYTES_MAX),
        ("segment_recovery", segment_recovery::INPUT_BYTES_MAX),
        ("envelope_decode", envelope_decode::INPUT_BYTES_MAX),
        ("wal_model", wal_model::INPUT_BYTES_MAX),
        ("manifest_decode", manifest_decode::INPUT_BYTES_MAX),
    ];
    for (target, limit) in limits {
        for path in inputs(target) {
            let len = std::fs::metadata(&path).expect("metadata").len();
            assert!(
                len <= limit as u64,
                "{} is over {limit} bytes",
                path.display()
            );
        }
    }
}

/// Regenerates `fuzz/corpus/<target>/seed-*`; run by hand, then commit the files.
#[test]
#[ignore = "writes the committed seed corpus into the source tree"]
fn write_seed_corpus() {
    let seeds = [
        ("frame_decode", frame_seeds()),
        ("segment_recovery", segment_seeds()),
        ("envelope_decode", envelope_seeds()),
        ("wal_model", wal_model_seeds()),
        ("manifest_decode", manifest_seeds()),
    ];
    for (target, files) in seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (name, bytes) in files {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
        }
    }
}

fn encoded_frame(position: u64, durable_mark: u64, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_frame(&mut out, position, durable_mark, flags, payload);
    out
}

fn frame_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let single = FLAG_BATCH_FIRST | FLAG_BATCH_LAST;
    let with_control = |control: u8, bytes: &[u8]| [&[control][..], bytes].concat();
    vec![
        (
            "single",
            with_control(128, &encoded_frame(1, 0, single, b"hello")),
        ),
        (
            "batch-first",
            with_control(255, &encoded_frame(7, 3, FLAG_BATCH_FIRST, &[9; 200])),
        ),
        (
            "batch-middle-empty",
            with_control(1, &encoded_frame(8, 3, 0, b"")),
        ),
        (
            "too-large",
            with_control(0, &encoded_frame(2, 1, FLAG_BATCH_LAST, b"x")),
        ),
        (
            "segment-header",
            with_control(4, &segment::encode_header(42)),
        ),
        ("file-name", with_control(0, b"00000000000000000001.seg")),
    ]
}

/// A segment written by the real WAL: a few single records and batches.
fn written_segment() -> Vec<u8> {
    let storage = MemoryStorage::new();
    let options = WalOptions {
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open_with_storage(Arc::new(storage.clone()), Path::new("/log"), options)
        .expect("open");
    wal.append(b"first").expect("append");
    wal.append_batch(&[&b"a"[..], b"bb", b"ccc"])
        .expect("batch");
    wal.append(&[7; 40]).expect("append");
    wal.append_batch(&[&b"x"[..], b"y"]).expect("batch");
    wal.close().expect("close");
    storage
        .file_contents(Path::new("/log/wal/00000000000000000001.seg"))
        .expect("segment")
}

fn segment_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let segment = written_segment();
    let frames = &segment[SEGMENT_HEADER_BYTES..];
    let torn = &frames[..frames.len() - 5];
    let mut flipped = frames.to_vec();
    flipped[40] ^= 0x10;
    // Structured specs `[step, mark_back, flags, len]` + payload (see `built_frames`).
    let specs: Vec<u8> = [
        &[1, 0, 3, 4][..],
        b"abcd",
        &[1, 0, 1, 2],
        b"xy",
        &[1, 1, 2, 0],
        &[1, 0, 3 | 4, 3],
        b"bad",
        &[1, 2, 3, 1],
        b"z",
        &[1, 0, 3 | 8, 9],
        b"torn tail",
    ]
    .concat();
    vec![
        ("whole-file", [&[0][..], &segment].concat()),
        ("torn-tail", [&[1][..], torn].concat()),
        ("bit-flip", [&[1][..], &flipped].concat()),
        ("small-limits", [&[1 | 0b1_1100][..], frames].concat()),
        ("built-frames", [&[2][..], &specs].concat()),
        ("short-file", vec![0, b'L', b'O', b'G']),
    ]
}

fn envelope(event: BuiltinEvent, stream: &str, version: u64, correlation: bool) -> Vec<u8> {
    let mut new_event = NewEvent::new(event);
    if correlation {
        new_event = new_event
            .with_correlation_id("req-7")
            .with_causation_id("cmd-1");
    }
    let data = new_event.to_data().expect("event data");
    let stream = StreamId::new(stream).expect("stream id");
    Envelope::new(stream, version, 1_700_000_000_000, data).encode()
}

fn envelope_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let posted = BuiltinEvent::from(RoomMessagePosted {
        message_id: "m1".into(),
        author: "ada".into(),
        body: "hello".into(),
    });
    let created = BuiltinEvent::from(RoomCreated {
        name: "Lobby".into(),
        topic: Some("tea".into()),
        created_by: None,
    });
    let queued = BuiltinEvent::from(JobQueued {
        kind: "train".into(),
        input: "{}".into(),
    });
    let claimed = BuiltinEvent::from(JobClaimed {
        worker: "w1".into(),
        lease_expires_at_ms: 1_700_000_060_000,
    });
    let progress = BuiltinEvent::from(JobProgress {
        percent: Some(40),
        done: Some(2),
        total: Some(5),
        ..JobProgress::default()
    });
    let failed = BuiltinEvent::from(RunFailed {
        error: "boom".into(),
    });
    let payload_seed = |control: u8, event: &BuiltinEvent| {
        let index = BuiltinEvent::EVENT_TYPES
            .iter()
            .position(|&name| name == event.event_type())
            .expect("a built-in type") as u8;
        let version = event.schema_version().to_le_bytes();
        let payload = event.encode_payload().expect("payload");
        [&[control, index, version[0], version[1]][..], &payload].concat()
    };
    let with_control = |bytes: Vec<u8>| [&[0][..], &bytes].concat();
    vec![
        (
            "room-message-posted",
            with_control(envelope(posted.clone(), "room/lobby", 3, true)),
        ),
        (
            "room-created",
            with_control(envelope(created, "room/lobby", 0, false)),
        ),
        (
            "job-queued",
            with_control(envelope(queued, "job/7", 0, true)),
        ),
        (
            "job-claimed",
            with_control(envelope(claimed.clone(), "job/7", 1, false)),
        ),
        (
            "job-progress",
            with_control(envelope(progress.clone(), "job/7", 2, false)),
        ),
        (
            "run-failed",
            with_control(envelope(failed, "run/r1", 9, false)),
        ),
        ("payload-posted", payload_seed(1, &posted)),
        ("payload-claimed", payload_seed(3, &claimed)),
        ("payload-progress", payload_seed(1, &progress)),
    ]
}

/// `arbitrary` turns any bytes into operations, so the seeds are deterministic noise of a few
/// sizes (more bytes, more operations).
fn wal_model_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let noise = |seed: u64, len: usize| {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect::<Vec<u8>>()
    };
    vec![
        ("noise-64", noise(1, 64)),
        ("noise-256", noise(2, 256)),
        ("noise-1024", noise(3, 1024)),
        ("noise-2048", noise(4, 2048)),
    ]
}

/// Seeds of `manifest_decode`: valid manifests (empty, with live and removing segments), and
/// built-mode inputs.
fn manifest_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use logbook_wal::manifest::{Manifest, ManifestSegment, encode};
    let segment = |base, compacted_through, removing| ManifestSegment {
        base,
        compacted_through,
        removing,
    };
    let manifests = [
        Manifest::default(),
        Manifest {
            reached: 15,
            segments: vec![
                segment(1, 12, false),
                segment(6, 0, true),
                segment(11, 0, false),
            ],
        },
        Manifest {
            reached: 0,
            segments: vec![segment(1, 0, false)],
        },
    ];
    let names = ["manifest-empty", "manifest-three", "manifest-one"];
    let mut seeds: Vec<(&'static str, Vec<u8>)> = names
        .into_iter()
        .zip(&manifests)
        .map(|(name, manifest)| {
            let mut bytes = vec![0u8];
            bytes.extend(encode(manifest));
            (name, bytes)
        })
        .collect();
    let mut built = vec![1u8];
    built.extend(40u64.to_le_bytes());
    built.extend([4, 1, 0, 4, 2, 1, 9, 0, 0, 17]);
    seeds.push(("built", built));
    seeds
}
