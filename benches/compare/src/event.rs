//! The event every peer stores: a service's own event type, as `tests/src/lib.rs`'s
//! `CounterEvent` is, whose encoded payload is exactly [`EVENT_PAYLOAD_BYTES`] long.
//!
//! Every peer stores the same payload bytes (`codec::encode`) with the same metadata (stream,
//! version, timestamp), and every reader decodes them back into a [`BenchEvent`], so encoding
//! and decoding costs are the same on all sides.

use crate::BenchResult;
use logbook::Event;
use logbook_projection::codec;
use serde::{Deserialize, Serialize};

/// Bytes of one event's encoded payload.
pub const EVENT_PAYLOAD_BYTES: usize = 200;
/// Streams the append workload spreads its events over.
pub const STREAMS: usize = 1000;
/// The event type name every event has.
pub const EVENT_TYPE: &str = "bench.posted";
/// bincode's `standard()` spends one byte on the variant and one on a string length below 251.
const BODY_BYTES: usize = EVENT_PAYLOAD_BYTES - 2;
/// Distinct bodies built up front, so building an event is a copy, not a computation.
const BODIES: usize = 64;

/// The one event type of the benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BenchEvent {
    /// A message of [`BODY_BYTES`] letters.
    Posted {
        /// The text.
        body: String,
    },
}

impl Event for BenchEvent {
    fn event_type(&self) -> &'static str {
        EVENT_TYPE
    }

    fn schema_version(&self) -> u16 {
        1
    }

    fn encode_payload(&self) -> logbook_projection::Result<Vec<u8>> {
        codec::encode(self)
    }

    fn decode_payload(
        _event_type: &str,
        _schema_version: u16,
        payload: &[u8],
    ) -> logbook_projection::Result<Self> {
        codec::decode(payload, 1 << 20)
    }
}

/// Builds events from a fixed pool of pseudo-random bodies (no peer compresses, but the bytes
/// are not trivially repetitive either).
#[derive(Debug, Clone)]
pub struct EventPool {
    events: Vec<BenchEvent>,
}

impl EventPool {
    /// The pool; checks that every event encodes to exactly [`EVENT_PAYLOAD_BYTES`].
    pub fn new() -> BenchResult<EventPool> {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut events = Vec::with_capacity(BODIES);
        for _ in 0..BODIES {
            let body: String = (0..BODY_BYTES)
                .map(|_| {
                    // xorshift64: cheap, deterministic letters.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'a' + (state % 26) as u8)
                })
                .collect();
            let event = BenchEvent::Posted { body };
            let encoded = codec::encode(&event)?;
            assert_eq!(encoded.len(), EVENT_PAYLOAD_BYTES, "event payload size");
            events.push(event);
        }
        Ok(EventPool { events })
    }

    /// The `index`-th event (cycling through the pool).
    pub fn event(&self, index: u64) -> BenchEvent {
        self.events[(index % BODIES as u64) as usize].clone()
    }
}

/// The name of stream `index` of the append workload.
pub fn stream_name(index: usize) -> String {
    format!("bench/{index:04}")
}

/// The stream the read and tail workloads fill.
pub const READ_STREAM: &str = "bench/reader";
/// The stream `--tail-other-events` appends after [`READ_STREAM`].
pub const OTHER_STREAM: &str = "bench/other";

/// Decodes a payload as every peer's reader does.
pub fn decode(payload: &[u8]) -> BenchResult<BenchEvent> {
    Ok(BenchEvent::decode_payload(EVENT_TYPE, 1, payload)?)
}

/// What every peer's reader hands its caller: the same fields as logbook's `RecordedEvent`.
#[derive(Debug)]
pub struct ReadEvent {
    /// The position in the whole log.
    pub position: u64,
    /// The stream.
    pub stream: String,
    /// The 0-based index in the stream.
    pub version: u64,
    /// When it was appended.
    pub timestamp_ms: u64,
    /// The decoded event.
    pub event: BenchEvent,
}

impl ReadEvent {
    /// Checks that this is version `version` of the read stream, as every reader does.
    pub fn check(&self, version: u64) -> BenchResult<()> {
        let BenchEvent::Posted { body } = &self.event;
        check(&self.stream, self.version, self.timestamp_ms, body, version)
    }
}

/// Checks an event read back: the stream, the version, a timestamp and a full body.
pub fn check(
    stream: &str,
    version: u64,
    timestamp_ms: u64,
    body: &str,
    expected: u64,
) -> BenchResult<()> {
    if stream != READ_STREAM || version != expected || timestamp_ms == 0 || body.len() != BODY_BYTES
    {
        return Err(format!("read {stream} version {version}, expected version {expected}").into());
    }
    Ok(())
}

/// The owned streams of writer `writer` out of `writers`: every `writers`-th stream.
pub fn streams_of(writer: usize, writers: usize) -> Vec<usize> {
    (writer..STREAMS).step_by(writers).collect()
}

/// The durable-append loop every peer runs: `writers` threads, each appending to its own
/// streams ([`streams_of`]) round robin until `deadline`, one `append(stream, version,
/// encoded event)` per event, made durable before it returns. Returns the appends made and,
/// with one writer (one append outstanding), the latency of every append (empty otherwise).
pub fn append_until<F>(
    writers: usize,
    deadline: std::time::Instant,
    pool: &EventPool,
    append: F,
) -> BenchResult<(u64, Vec<std::time::Duration>)>
where
    F: Fn(&str, u64, &[u8]) -> BenchResult<()> + Sync,
{
    let names: Vec<String> = (0..STREAMS).map(stream_name).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let (names, append) = (&names, &append);
                scope.spawn(move || -> BenchResult<(u64, Vec<std::time::Duration>)> {
                    let mine = streams_of(writer, writers);
                    let mut versions = vec![0u64; mine.len()];
                    let mut latencies = Vec::new();
                    let mut count = 0u64;
                    while std::time::Instant::now() < deadline {
                        let slot = count as usize % mine.len();
                        let payload = codec::encode(&pool.event(count))?;
                        let started = std::time::Instant::now();
                        append(&names[mine[slot]], versions[slot], &payload)?;
                        if writers == 1 {
                            latencies.push(started.elapsed());
                        }
                        versions[slot] += 1;
                        count += 1;
                    }
                    Ok((count, latencies))
                })
            })
            .collect();
        let mut total = 0;
        let mut latencies = Vec::new();
        for handle in handles {
            let (count, mine) = handle.join().map_err(|_| "writer panicked")??;
            total += count;
            latencies.extend(mine);
        }
        Ok((total, latencies))
    })
}

/// Milliseconds since the epoch, as every peer stamps its events.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The record the sled and raw peers store: stream, version and timestamp before the payload.
///
/// ```text
/// u16 LE stream length, stream bytes, u64 LE version, u64 LE timestamp_ms, payload
/// ```
pub fn encode_record(stream: &str, version: u64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(2 + stream.len() + 16 + payload.len());
    record.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    record.extend_from_slice(stream.as_bytes());
    record.extend_from_slice(&version.to_le_bytes());
    record.extend_from_slice(&now_ms().to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// Decodes [`encode_record`]'s bytes and the payload in them.
pub fn decode_record(position: u64, record: &[u8]) -> BenchResult<ReadEvent> {
    let short = || "record too short";
    let stream_len = u16::from_le_bytes(record.get(..2).ok_or_else(short)?.try_into()?) as usize;
    let stream = std::str::from_utf8(record.get(2..2 + stream_len).ok_or_else(short)?)?;
    let rest = record.get(2 + stream_len..).ok_or_else(short)?;
    let version = u64::from_le_bytes(rest.get(..8).ok_or_else(short)?.try_into()?);
    let timestamp_ms = u64::from_le_bytes(rest.get(8..16).ok_or_else(short)?.try_into()?);
    Ok(ReadEvent {
        position,
        stream: stream.to_owned(),
        version,
        timestamp_ms,
        event: decode(rest.get(16..).ok_or_else(short)?)?,
    })
}
