//! The sled 0.34.7 peer: an event store as one would write it on sled.
//!
//! Keys: `p` + position (u64 big endian) holds the event (stream, version, timestamp, payload);
//! `s` + stream + 0x00 + version (u64 big endian) holds the position: the stream index. Both
//! keys of an event go in one atomic `Batch`. Positions come from `Db::generate_id` (durable and
//! monotonic). Versions come from a per-writer counter (each writer owns its streams; sled has no
//! optimistic check to do it for us).
//!
//! Durability: sled's `flush()` on Linux ends in `sync_file_range` (src/pagecache/iobuf.rs),
//! which neither flushes the device cache nor the file's metadata, so it is not an fsync. After
//! each append's `flush()`, this peer calls `File::sync_all` on sled's log file `db` through a
//! [`SyncGate`], so concurrent writers share fsyncs the way a simple group commit would.
//! (Snapshots `snap.*` are synced by sled itself; `conf` never changes after creation.)

use crate::BenchResult;
use crate::event::{EventPool, READ_STREAM, ReadEvent, append_until, decode_record, encode_record};
use crate::measure::{SyncGate, disk_bytes};
use crate::peer_logbook::{READ_PAGE, TAIL};
use crate::workload::{AppendOutcome, Plan, ReadOutcome};
use logbook_projection::codec;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

const CATCH_UP_PAGE: usize = 1024;

struct Store {
    db: sled::Db,
    log_file: File,
    gate: SyncGate,
}

fn open(dir: &Path) -> BenchResult<Store> {
    let db = sled::Config::new().path(dir).open()?;
    let log_file = File::open(dir.join("db"))?;
    // Durability: the directory entries of sled's files survive a crash.
    File::open(dir)?.sync_all()?;
    Ok(Store {
        db,
        log_file,
        gate: SyncGate::default(),
    })
}

fn position_key(position: u64) -> [u8; 9] {
    let mut key = [b'p'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(b's');
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The end (exclusive) of a prefix range: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn insert(batch: &mut sled::Batch, position: u64, stream: &str, version: u64, payload: &[u8]) {
    batch.insert(
        &position_key(position),
        encode_record(stream, version, payload),
    );
    batch.insert(stream_key(stream, version), &position.to_be_bytes());
}

/// `writers` threads append one event per atomic batch, each made durable before the next.
pub fn append(dir: &Path, writers: usize, duration: Duration) -> BenchResult<AppendOutcome> {
    let store = open(dir)?;
    let pool = EventPool::new()?;
    let started = Instant::now();
    let deadline = started + duration;
    let (appends, latencies) =
        append_until(writers, deadline, &pool, |stream, version, payload| {
            let position = store.db.generate_id()? + 1;
            let mut batch = sled::Batch::default();
            insert(&mut batch, position, stream, version, payload);
            store.db.apply_batch(batch)?;
            store.db.flush()?;
            store.gate.sync(|| store.log_file.sync_all())?;
            Ok(())
        })?;
    let elapsed = started.elapsed();
    let syncs = store.gate.syncs();
    store.db.flush()?;
    drop(store);
    Ok(AppendOutcome {
        appends,
        latencies,
        elapsed,
        syncs: Some(syncs),
        disk: disk_bytes(dir)?,
    })
}

/// Fills the store with `(stream, events)` one after the other, 1,000 per batch.
pub fn load(dir: &Path, streams: &[(&str, u64)]) -> BenchResult<()> {
    let store = open(dir)?;
    let pool = EventPool::new()?;
    let mut position = 0u64;
    for &(stream, events) in streams {
        let mut written = 0u64;
        while written < events {
            let count = (events - written).min(1000);
            let mut batch = sled::Batch::default();
            for index in written..written + count {
                let payload = codec::encode(&pool.event(index))?;
                position += 1;
                insert(&mut batch, position, stream, index, &payload);
            }
            store.db.apply_batch(batch)?;
            written += count;
        }
    }
    store.db.flush()?;
    store.log_file.sync_all()?;
    Ok(())
}

fn stream_page(
    store: &Store,
    from: u64,
    max: usize,
    backward: bool,
) -> BenchResult<Vec<ReadEvent>> {
    let prefix = stream_prefix(READ_STREAM);
    let end = prefix_end(&prefix);
    let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if backward {
        Box::new(store.db.range(prefix..end).rev())
    } else {
        Box::new(store.db.range(stream_key(READ_STREAM, from)..end))
    };
    let mut events = Vec::with_capacity(max);
    for entry in keys.take(max) {
        let (_, position) = entry?;
        let position = u64::from_be_bytes(position.as_ref().try_into()?);
        let value = store
            .db
            .get(position_key(position))?
            .ok_or("stream index points at a missing event")?;
        events.push(decode_record(position, &value)?);
    }
    Ok(events)
}

/// `read_stream` in pages of 500 through the stream index, then a catch-up scan by position in
/// pages of 1,024.
pub fn read(dir: &Path, events: u64) -> BenchResult<[ReadOutcome; 2]> {
    let store = open(dir)?;
    let started = Instant::now();
    let mut from = 0u64;
    loop {
        let page = stream_page(&store, from, READ_PAGE, false)?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            event.check(from)?;
            from += 1;
        }
    }
    let read_stream = ReadOutcome::new(from, started.elapsed(), events)?;
    let started = Instant::now();
    let (mut next, mut delivered) = (1u64, 0u64);
    loop {
        let range = store.db.range(position_key(next).to_vec()..vec![b'q']);
        let mut page = Vec::with_capacity(CATCH_UP_PAGE);
        for entry in range.take(CATCH_UP_PAGE) {
            let (key, value) = entry?;
            let position = u64::from_be_bytes(key.get(1..9).ok_or("short key")?.try_into()?);
            page.push(decode_record(position, &value)?);
        }
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        for event in &page {
            event.check(delivered)?;
            delivered += 1;
        }
    }
    let catch_up = ReadOutcome::new(delivered, started.elapsed(), events)?;
    Ok([read_stream, catch_up])
}

/// The newest 50 events of the stream: (open + first query, warm query).
pub fn tail(dir: &Path, plan: &Plan) -> BenchResult<(Duration, Duration)> {
    let started = Instant::now();
    let store = open(dir)?;
    let first = stream_page(&store, 0, TAIL, true)?;
    let cold = started.elapsed();
    assert_eq!(first.len(), TAIL, "tail length");
    first[0].check(plan.tail_events - 1)?;
    let started = Instant::now();
    let mut queries = 0u32;
    while started.elapsed() < plan.tail_budget || queries < 3 {
        std::hint::black_box(stream_page(&store, 0, TAIL, true)?);
        queries += 1;
    }
    Ok((cold, started.elapsed() / queries))
}
