//! Appends per second of 200-byte records on the real file system: `logbook_wal::Wal` side by
//! side, in the same criterion group, with a raw baseline.
//!
//! The baseline writes the same bytes a WAL frame holds (a 28-byte header with length, CRC-32
//! from crc32fast, position, a zero durable mark and flags, then the payload) to a plain `File`
//! through a default `BufWriter`, with the same fsync cadence as the policy it stands beside:
//!
//! | group               | logbook                                     | raw baseline           |
//! | ------------------- | ------------------------------------------- | ---------------------- |
//! | `wal_unsynced`      | `SyncPolicy::Never`                         | no fsync               |
//! | `wal_sync_always`   | `SyncPolicy::Always`, one appender          | fdatasync every record |
//! | `wal_group_commit`  | `GroupCommit { 2 ms, 64 }`, 1/8/64 threads  | fdatasync every 64     |
//! | `wal_sync_interval` | `SyncPolicy::Interval(10 ms)`               | fdatasync every 10 ms  |
//!
//! Every timed run starts from a fresh directory (`tempfile`, so the real file system under the
//! system's temporary directory); opening the log, closing it (its final sync) and removing the
//! directory are not timed. A raw run that promises durability ends with a timed fdatasync, as
//! every acknowledged WAL append under `Always` and `GroupCommit` is durable when it returns.
//!
//! Run with `cargo bench -p logbook-benches --bench wal`; criterion prints records/s
//! (`thrpt`) for each case. A whole run takes about a minute plus compilation.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use criterion::{criterion_group, criterion_main};
use logbook_wal::{SyncPolicy, Wal, WalOptions};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes of one record's payload.
const RECORD_BYTES: usize = 200;
/// Bytes of the raw baseline's frame header: the same layout and size as a WAL frame header.
const FRAME_HEADER_BYTES: usize = 28;
/// Group commit: records that start a sync at once, and the raw baseline's fsync cadence.
const GROUP_RECORDS_MAX: usize = 64;
/// Group commit: the longest a record waits for companions.
const GROUP_DELAY: Duration = Duration::from_millis(2);
/// The interval policy's sync period, and the raw baseline's.
const SYNC_INTERVAL: Duration = Duration::from_millis(10);
/// Segments large enough that no run rolls: a roll syncs the old segment, which the unsynced
/// raw baseline has no counterpart for, so it would measure a sync instead of appends.
const SEGMENT_BYTES_MAX_NO_ROLL: u64 = 4 << 30;

/// The payload of every record: fixed, not compressible into anything special.
const PAYLOAD: [u8; RECORD_BYTES] = payload();

const fn payload() -> [u8; RECORD_BYTES] {
    let mut bytes = [0u8; RECORD_BYTES];
    let mut index = 0;
    while index < RECORD_BYTES {
        bytes[index] = (index * 31 % 251) as u8;
        index += 1;
    }
    bytes
}

/// When the raw baseline calls `fdatasync`.
#[derive(Debug, Clone, Copy)]
enum RawSync {
    Never,
    EveryRecords(u64),
    EveryInterval(Duration),
}

/// The raw baseline: frames encoded like the WAL's, written through a `BufWriter<File>`.
struct RawLog {
    file: BufWriter<File>,
    frame: Vec<u8>,
    position: u64,
}

impl RawLog {
    fn create(dir: &std::path::Path) -> RawLog {
        let file = File::create(dir.join("raw.log")).expect("create the raw file");
        RawLog {
            file: BufWriter::new(file),
            frame: Vec::with_capacity(FRAME_HEADER_BYTES + RECORD_BYTES),
            position: 0,
        }
    }

    /// Encodes one frame (length, CRC-32 over the rest, position, durable mark, flags, payload)
    /// and hands it to the `BufWriter`.
    fn append(&mut self, payload: &[u8]) {
        self.position += 1;
        let frame = &mut self.frame;
        frame.clear();
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&self.position.to_le_bytes());
        frame.extend_from_slice(&0u64.to_le_bytes());
        frame.extend_from_slice(&[0b11, 0, 0, 0]);
        frame.extend_from_slice(payload);
        let crc = crc32fast::hash(&frame[8..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all(frame).expect("raw write");
    }

    fn sync(&mut self) {
        self.file.flush().expect("raw flush");
        self.file.get_ref().sync_data().expect("raw fdatasync");
    }
}

/// Times `iters` raw appends with the given fsync cadence.
fn raw_run(iters: u64, sync: RawSync) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = RawLog::create(dir.path());
    let start = Instant::now();
    let mut last_sync = start;
    for appended in 1..=iters {
        log.append(&PAYLOAD);
        match sync {
            RawSync::Never => {}
            RawSync::EveryRecords(records) => {
                if appended.is_multiple_of(records) {
                    log.sync();
                }
            }
            RawSync::EveryInterval(interval) => {
                if last_sync.elapsed() >= interval {
                    log.sync();
                    last_sync = Instant::now();
                }
            }
        }
    }
    match sync {
        RawSync::Never | RawSync::EveryInterval(_) => log.file.flush().expect("raw flush"),
        // The WAL acknowledges every record durable, so the baseline's last records must be too.
        RawSync::EveryRecords(records) if !iters.is_multiple_of(records) => log.sync(),
        RawSync::EveryRecords(_) => {}
    }
    start.elapsed()
}

fn wal_options(sync_policy: SyncPolicy) -> WalOptions {
    WalOptions {
        sync_policy,
        segment_bytes_max: SEGMENT_BYTES_MAX_NO_ROLL,
        ..WalOptions::default()
    }
}

/// Times `iters` appends to a fresh WAL shared by `threads` appending threads, each taking the
/// next record from a common counter so that all finish together.
fn wal_run(iters: u64, options: &WalOptions, threads: usize) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _report) = Wal::open(dir.path(), options.clone()).expect("open the WAL");
    let wal = Arc::new(wal);
    let elapsed = if threads == 1 {
        let start = Instant::now();
        for _ in 0..iters {
            wal.append(&PAYLOAD).expect("append");
        }
        start.elapsed()
    } else {
        appenders(iters, &wal, threads)
    };
    let Ok(wal) = Arc::try_unwrap(wal) else {
        panic!("an appender thread still holds the WAL");
    };
    // Not timed: the final sync of the unsynced policies, like the raw file's close.
    wal.close().expect("close");
    elapsed
}

fn appenders(iters: u64, wal: &Arc<Wal>, threads: usize) -> Duration {
    let taken = Arc::new(AtomicU64::new(0));
    let start_line = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (wal, taken, start_line) = (wal.clone(), taken.clone(), start_line.clone());
            thread::spawn(move || {
                start_line.wait();
                while taken.fetch_add(1, Ordering::Relaxed) < iters {
                    wal.append(&PAYLOAD).expect("append");
                }
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    for handle in handles {
        handle.join().expect("appender thread");
    }
    start.elapsed()
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn unsynced(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_unsynced");
    configure(&mut group);
    let options = wal_options(SyncPolicy::Never);
    group.bench_function("logbook/never", |b| {
        b.iter_custom(|iters| wal_run(iters, &options, 1));
    });
    group.bench_function("raw/no_fsync", |b| {
        b.iter_custom(|iters| raw_run(iters, RawSync::Never));
    });
    group.finish();
}

fn sync_always(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_sync_always");
    configure(&mut group);
    let options = wal_options(SyncPolicy::Always);
    group.bench_function("logbook/always", |b| {
        b.iter_custom(|iters| wal_run(iters, &options, 1));
    });
    group.bench_function("raw/fsync_every_record", |b| {
        b.iter_custom(|iters| raw_run(iters, RawSync::EveryRecords(1)));
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_group_commit");
    configure(&mut group);
    let options = wal_options(SyncPolicy::GroupCommit {
        delay: GROUP_DELAY,
        records_max: GROUP_RECORDS_MAX,
    });
    for threads in [1, 8, 64] {
        let name = format!("logbook/{threads}_appenders");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| wal_run(iters, &options, threads));
        });
    }
    group.bench_function("raw/fsync_every_64", |b| {
        let records = GROUP_RECORDS_MAX as u64;
        b.iter_custom(|iters| raw_run(iters, RawSync::EveryRecords(records)));
    });
    group.finish();
}

fn sync_interval(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_sync_interval");
    configure(&mut group);
    let options = wal_options(SyncPolicy::Interval(SYNC_INTERVAL));
    group.bench_function("logbook/interval_10ms", |b| {
        b.iter_custom(|iters| wal_run(iters, &options, 1));
    });
    group.bench_function("raw/fsync_every_10ms", |b| {
        b.iter_custom(|iters| raw_run(iters, RawSync::EveryInterval(SYNC_INTERVAL)));
    });
    group.finish();
}

criterion_group!(benches, unsynced, sync_always, group_commit, sync_interval);
criterion_main!(benches);
