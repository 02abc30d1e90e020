//! The replay workload (issue 7): opening a log of built-in events without any snapshot, which
//! replays every event into the built-in projections, against a raw checksummed scan of the
//! same segment files.
//!
//! The log holds `room.created` for [`ROOMS`] rooms, then `room.message_posted` events of about
//! 200 bytes of payload spread over them, appended [`BATCH`] at a time with
//! `SyncPolicy::Never`, with every snapshot trigger off. The stream index (`<dir>/index`) is
//! kept, so open replays the projections and the stream table but does not rebuild the index.

use crate::BenchResult;
use logbook::model::{RoomCreated, RoomMessagePosted};
use logbook::{
    BuiltinEvent, BuiltinLog, ExpectedVersion, LogbookOptions, NewEvent, StreamId, SyncPolicy,
};
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Rooms the events are spread over.
pub const ROOMS: u64 = 1000;
/// Events per append call.
const BATCH: u64 = 1000;
/// Letters of a message body (the payload is then about 200 bytes).
const BODY_BYTES: usize = 180;
/// Read buffer of the raw scan.
const SCAN_BUFFER_BYTES: usize = 1 << 20;
const SEGMENT_HEADER_BYTES: usize = 32;
const FRAME_HEADER_BYTES: usize = 28;
const SEGMENT_MAGIC: &[u8; 8] = b"LOGBKWAL";

/// Options with every snapshot trigger off, so every open is a full replay.
fn options(policy: SyncPolicy) -> LogbookOptions {
    let mut options = LogbookOptions::default();
    options.wal.sync_policy = policy;
    options.snapshots.every_events = 0;
    options.snapshots.every_bytes = 0;
    // Zero turns the time trigger off (`SnapshotPolicy::due`).
    options.snapshots.every = Duration::ZERO;
    // Nor one at close (`SnapshotPolicy::on_close_events`), after the build.
    options.snapshots.on_close_events = 0;
    options
}

fn room(index: u64) -> BenchResult<StreamId> {
    Ok(StreamId::room(&format!("r{index:04}"))?)
}

/// Fills `dir` with `events` built-in events (at least [`ROOMS`]) and closes the log.
pub fn build(runtime: &Runtime, dir: &Path, events: u64) -> BenchResult<()> {
    if events < ROOMS {
        return Err(format!("replay needs at least {ROOMS} events").into());
    }
    runtime.block_on(async {
        let (log, _) = BuiltinLog::open(dir, options(SyncPolicy::Never)).await?;
        let rooms = (0..ROOMS).map(room).collect::<BenchResult<Vec<_>>>()?;
        for (index, stream) in rooms.iter().enumerate() {
            let created = BuiltinEvent::RoomCreated(RoomCreated {
                name: format!("room{index}"),
                topic: None,
                created_by: Some("ada".into()),
            });
            let batch = vec![NewEvent::new(created)];
            log.log()
                .append(stream, ExpectedVersion::Any, batch)
                .await?;
        }
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let bodies: Vec<String> = (0..64)
            .map(|_| {
                (0..BODY_BYTES)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        char::from(b'a' + (state % 26) as u8)
                    })
                    .collect()
            })
            .collect();
        let messages = events - ROOMS;
        let mut written = 0u64;
        while written < messages {
            let count = (messages - written).min(BATCH);
            let stream = &rooms[((written / BATCH) % ROOMS) as usize];
            let batch = (written..written + count)
                .map(|index| {
                    NewEvent::new(BuiltinEvent::RoomMessagePosted(RoomMessagePosted {
                        message_id: format!("m{index:08}"),
                        author: "ada".into(),
                        body: bodies[(index % 64) as usize].clone(),
                    }))
                })
                .collect();
            log.log()
                .append(stream, ExpectedVersion::Any, batch)
                .await?;
            written += count;
        }
        log.close().await?;
        Ok(())
    })
}

/// CPU time this process has used so far, all its threads (those ended too), user and system:
/// around a timed run, how many cores the run kept busy. `None` where `getrusage` is not read.
pub fn cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{UsageWho, getrusage};
        use nix::sys::time::TimeValLike;
        let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let micros = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
        Some(Duration::from_micros(u64::try_from(micros).ok()?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// CPU time this process used since `before` (a [`cpu_time`] reading); `None` where either
/// reading is missing.
pub fn cpu_since(before: Option<Duration>) -> Option<Duration> {
    Some(cpu_time()?.saturating_sub(before?))
}

/// What one full replay took: its time and the allocations made meanwhile (process-wide).
pub struct Replayed {
    /// From `BuiltinLog::open` until every event is applied.
    pub elapsed: Duration,
    /// Allocations (`alloc`, `alloc_zeroed`, `realloc`) made meanwhile.
    pub allocations: u64,
}

/// `BuiltinLog::open` of `dir` until every event is applied: the time of a full replay.
pub fn open(runtime: &Runtime, dir: &Path, events: u64) -> BenchResult<Replayed> {
    runtime.block_on(async {
        let before = logbook_alloc_count::counts();
        let started = Instant::now();
        let (log, report) = BuiltinLog::open(dir, options(SyncPolicy::Never)).await?;
        log.log().wait_applied(events).await?;
        let elapsed = started.elapsed();
        let allocations = logbook_alloc_count::counts().since(before).allocations;
        if report.log.snapshot.used.is_some() || report.log.events_replayed != events {
            return Err(format!(
                "open replayed {} events (snapshot {:?}), expected {events} and none",
                report.log.events_replayed, report.log.snapshot.used
            )
            .into());
        }
        log.close().await?;
        Ok(Replayed {
            elapsed,
            allocations,
        })
    })
}

/// Alternates `rounds` full replays of `dir` (a log of `events` events) with as many raw
/// scans, printing each time (and the process's CPU time over it, the replay's close
/// included) and, last, the medians and their ratio (raw / replay: the fraction of the raw
/// scan's speed the replay reaches).
pub fn time(runtime: &Runtime, dir: &Path, events: u64, rounds: usize) -> BenchResult<()> {
    let mut replays = Vec::with_capacity(rounds);
    let mut scans = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // The process's CPU time over each run too: about the wall time when the machine ran
        // the replay's two threads one at a time, about twice it when it ran them at once.
        let cpu_ms = |cpu: Option<Duration>| {
            cpu.map_or("?".to_owned(), |cpu| {
                format!("{:.1}", cpu.as_secs_f64() * 1e3)
            })
        };
        let before = cpu_time();
        let replayed = open(runtime, dir, events)?.elapsed.as_secs_f64() * 1e3;
        let replay_cpu = cpu_since(before);
        let before = cpu_time();
        let scanned = scan(dir, events)?.as_secs_f64() * 1e3;
        let scan_cpu = cpu_since(before);
        println!(
            "replay {replayed:.2} ms (cpu {} ms), raw scan {scanned:.2} ms (cpu {} ms)",
            cpu_ms(replay_cpu),
            cpu_ms(scan_cpu)
        );
        replays.push(replayed);
        scans.push(scanned);
    }
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (replay, raw) = (median(&mut replays), median(&mut scans));
    println!(
        "median: replay {replay:.2} ms, raw scan {raw:.2} ms, replay/raw speed {:.3}x",
        raw / replay
    );
    Ok(())
}

/// The child of [`peak_rss`]: replays `dir` (a log of `events` events) once and prints its
/// peak resident set size (`VmHWM` of `/proc/self/status`, in KiB) on stdout.
pub fn rss_child(dir: &Path, events: u64) -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    open(&runtime, dir, events)?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or("no VmHWM in /proc/self/status")?;
    println!("{kib}");
    Ok(())
}

/// The peak RSS (KiB) of a fresh process of this binary that replays `dir` once: the
/// runtime, the engine, the projections' state and whatever the replay buffers.
pub fn peak_rss(dir: &Path, events: u64) -> BenchResult<u64> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .arg("replay-rss")
        .arg(dir)
        .arg(events.to_string())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "replay-rss failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

fn segments(dir: &Path) -> BenchResult<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir.join("wal"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "seg") {
            paths.push(path);
        }
    }
    // Names are zero-padded base positions: name order is log order.
    paths.sort();
    Ok(paths)
}

/// Reads exactly `buffer.len()` bytes; false on a clean end of file before the first byte.
fn read_or_end(reader: &mut impl Read, buffer: &mut [u8]) -> BenchResult<bool> {
    match reader.read_exact(buffer) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Reads every segment of `dir` sequentially, checks the segment headers and every frame's
/// CRC-32 (`docs/format.md`), and counts the frames: the time of a raw checksummed scan.
pub fn scan(dir: &Path, events: u64) -> BenchResult<Duration> {
    let started = Instant::now();
    let mut frames = 0u64;
    let mut last_position = 0u64;
    let mut payload = Vec::new();
    for path in segments(dir)? {
        let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, File::open(&path)?);
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        reader.read_exact(&mut header)?;
        let stored = u32::from_le_bytes(header[28..32].try_into()?);
        if &header[..8] != SEGMENT_MAGIC || crc32fast::hash(&header[..28]) != stored {
            return Err(format!("{}: bad segment header", path.display()).into());
        }
        let mut frame = [0u8; FRAME_HEADER_BYTES];
        while read_or_end(&mut reader, &mut frame)? {
            let length = u32::from_le_bytes(frame[..4].try_into()?) as usize;
            let stored = u32::from_le_bytes(frame[4..8].try_into()?);
            let position = u64::from_le_bytes(frame[8..16].try_into()?);
            payload.resize(length, 0);
            reader.read_exact(&mut payload)?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&frame[8..]);
            hasher.update(&payload);
            if hasher.finalize() != stored || position <= last_position {
                return Err(format!("{}: bad frame at {position}", path.display()).into());
            }
            last_position = position;
            frames += 1;
        }
    }
    let elapsed = started.elapsed();
    if frames != events {
        return Err(format!("scanned {frames} frames, expected {events}").into());
    }
    Ok(elapsed)
}
