//! The raw-file baseline: what a careful hand-written append log costs, and no more.
//!
//! One file of frames: `u32 LE length, u32 LE crc32fast(record), record`, the record being
//! [`encode_record`]'s stream, version, timestamp and payload. No index, no segments.
//!
//! Group commit, the simple way: appenders put their frame in a shared buffer under a mutex;
//! the first one to find no sync running takes the whole buffer, writes it with one `pwrite`
//! and one `fdatasync` (outside the lock), and wakes everyone it covered. Appenders that arrive
//! meanwhile wait for the next sync, which starts as soon as this one ends: no delay, no target
//! group size. With one writer that is exactly one `fdatasync` per append.

use crate::BenchResult;
use crate::event::{EventPool, READ_STREAM, ReadEvent, append_until, decode_record, encode_record};
use crate::measure::disk_bytes;
use crate::peer_logbook::TAIL;
use crate::workload::{AppendOutcome, Plan, ReadOutcome};
use logbook_projection::codec;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const FILE_NAME: &str = "raw.log";
const FRAME_HEADER_BYTES: usize = 8;
const RECORD_BYTES_MAX: usize = 1 << 20;

struct RawLog {
    file: File,
    state: Mutex<RawState>,
    changed: Condvar,
}

#[derive(Default)]
struct RawState {
    buffer: Vec<u8>,
    /// Where the next write goes.
    offset: u64,
    /// Frames buffered so far (a frame's sequence number is its index + 1).
    appended: u64,
    /// Frames known durable.
    durable: u64,
    syncing: bool,
    syncs: u64,
    failed: Option<String>,
}

fn frame(buffer: &mut Vec<u8>, record: &[u8]) {
    buffer.extend_from_slice(&(record.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
    buffer.extend_from_slice(record);
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl RawLog {
    fn create(dir: &Path) -> BenchResult<RawLog> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path(dir))?;
        // Durability: the new file's name survives a crash.
        File::open(dir)?.sync_all()?;
        Ok(RawLog {
            file,
            state: Mutex::new(RawState::default()),
            changed: Condvar::new(),
        })
    }

    /// Returns once `record` is durable, leading a sync when none is running.
    fn append(&self, record: &[u8]) -> BenchResult<()> {
        let poisoned = || "raw log lock poisoned";
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        frame(&mut state.buffer, record);
        state.appended += 1;
        let mine = state.appended;
        loop {
            if let Some(reason) = &state.failed {
                return Err(format!("raw log failed: {reason}").into());
            }
            if state.durable >= mine {
                return Ok(());
            }
            if state.syncing {
                state = self.changed.wait(state).map_err(|_| poisoned())?;
                continue;
            }
            state.syncing = true;
            let bytes = std::mem::take(&mut state.buffer);
            let offset = state.offset;
            state.offset += bytes.len() as u64;
            let target = state.appended;
            drop(state);
            let result = self
                .file
                .write_all_at(&bytes, offset)
                .and_then(|()| self.file.sync_data());
            state = self.state.lock().map_err(|_| poisoned())?;
            state.syncing = false;
            state.syncs += 1;
            match result {
                Ok(()) => state.durable = target,
                Err(error) => state.failed = Some(error.to_string()),
            }
            self.changed.notify_all();
        }
    }
}

/// `writers` threads append one durable frame per call to their own streams until the deadline.
pub fn append(dir: &Path, writers: usize, duration: Duration) -> BenchResult<AppendOutcome> {
    let log = RawLog::create(dir)?;
    let pool = EventPool::new()?;
    let started = Instant::now();
    let deadline = started + duration;
    let (appends, latencies) =
        append_until(writers, deadline, &pool, |stream, version, payload| {
            log.append(&encode_record(stream, version, payload))
        })?;
    let elapsed = started.elapsed();
    let syncs = log.state.lock().map_or(0, |state| state.syncs);
    drop(log);
    Ok(AppendOutcome {
        appends,
        latencies,
        elapsed,
        syncs: Some(syncs),
        disk: disk_bytes(dir)?,
    })
}

/// Writes the frames of `(stream, events)` one after the other, then one `fdatasync`.
pub fn load(dir: &Path, streams: &[(&str, u64)]) -> BenchResult<()> {
    let log = RawLog::create(dir)?;
    let pool = EventPool::new()?;
    let mut buffer = Vec::with_capacity(2 << 20);
    let mut offset = 0u64;
    for &(stream, events) in streams {
        for index in 0..events {
            let payload = codec::encode(&pool.event(index))?;
            frame(&mut buffer, &encode_record(stream, index, &payload));
            if buffer.len() >= 1 << 20 {
                log.file.write_all_at(&buffer, offset)?;
                offset += buffer.len() as u64;
                buffer.clear();
            }
        }
    }
    log.file.write_all_at(&buffer, offset)?;
    log.file.sync_data()?;
    Ok(())
}

/// Reads every frame in order, checking each checksum; calls `visit(position, record)`.
fn scan(dir: &Path, mut visit: impl FnMut(u64, &[u8]) -> BenchResult<()>) -> BenchResult<u64> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path(dir))?);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut record = Vec::new();
    let mut position = 0u64;
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error.into()),
        }
        let len = u32::from_le_bytes(header[..4].try_into()?) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into()?);
        if len > RECORD_BYTES_MAX {
            return Err(format!("frame {position}: length {len} over the limit").into());
        }
        record.resize(len, 0);
        reader.read_exact(&mut record)?;
        if crc32fast::hash(&record) != crc {
            return Err(format!("frame {position}: checksum mismatch").into());
        }
        position += 1;
        visit(position, &record)?;
    }
    Ok(position)
}

/// A checksummed sequential scan that decodes every event. The file holds the one stream, so
/// the same scan stands for `read_stream` and for catch-up (raw has no index to page with).
pub fn read(dir: &Path, events: u64) -> BenchResult<[ReadOutcome; 2]> {
    let mut outcomes = Vec::with_capacity(2);
    for _ in 0..2 {
        let started = Instant::now();
        let read = scan(dir, |position, record| {
            decode_record(position, record)?.check(position - 1)
        })?;
        outcomes.push(ReadOutcome::new(read, started.elapsed(), events)?);
    }
    let catch_up = outcomes.pop().ok_or("two scans")?;
    let read_stream = outcomes.pop().ok_or("two scans")?;
    Ok([read_stream, catch_up])
}

/// Without an index, the newest 50 events take a full checksummed scan that keeps the last 50
/// records of the stream and decodes only those.
fn newest(dir: &Path) -> BenchResult<Vec<ReadEvent>> {
    let mut last: VecDeque<(u64, Vec<u8>)> = VecDeque::with_capacity(TAIL + 1);
    let wanted = encode_record(READ_STREAM, 0, &[]);
    let prefix = wanted.get(..2 + READ_STREAM.len()).ok_or("stream prefix")?;
    scan(dir, |position, record| {
        if !record.starts_with(prefix) {
            return Ok(());
        }
        let mut kept = if last.len() == TAIL {
            last.pop_front().map(|(_, bytes)| bytes).unwrap_or_default()
        } else {
            Vec::new()
        };
        kept.clear();
        kept.extend_from_slice(record);
        last.push_back((position, kept));
        Ok(())
    })?;
    last.iter()
        .rev()
        .map(|(position, record)| decode_record(*position, record))
        .collect()
}

/// The newest 50 events of the stream: (first query, warm query); both are full scans.
pub fn tail(dir: &Path, plan: &Plan) -> BenchResult<(Duration, Duration)> {
    let started = Instant::now();
    let first = newest(dir)?;
    let cold = started.elapsed();
    assert_eq!(first.len(), TAIL, "tail length");
    first[0].check(plan.tail_events - 1)?;
    let started = Instant::now();
    let mut queries = 0u32;
    while started.elapsed() < plan.tail_budget || queries < 3 {
        std::hint::black_box(newest(dir)?);
        queries += 1;
    }
    Ok((cold, started.elapsed() / queries))
}
