//! Durable named consumers: a subscription whose position survives a restart.
//!
//! Owns: [`Consumer`] (a [`Subscription`] plus an acknowledged position, checkpointed in
//! batches into the reserved stream `$consumer/<name>` as `logbook.consumer_acked` events),
//! [`ConsumerOptions`] and [`ConsumerFilter`] (stream pattern and event types, checked on a
//! record's header before its payload is decoded), and the engine's registry of consumers
//! (the newest checkpoint of each, restored at open and kept by the one apply; the handles
//! open in this process) that [`Stats::consumers`](crate::Stats) and the CLI report. Must
//! never: write a checkpoint above what its owner acknowledged, checkpoint per event (a
//! checkpoint is an append, so an fsync or a commit), block an appender (catch-up reads the
//! log, as every subscription does), or let two handles of one name both checkpoint silently.
//!
//! **Delivery is at least once.** A checkpoint records the highest acknowledged position; after
//! a crash (or a drop without [`Consumer::close`]) the consumer resumes after the last
//! *checkpoint*, so the events acknowledged after it are delivered again. Handlers must be
//! idempotent (key their effects by the event's position or id).
//!
//! **Ownership.** Checkpoints are appended with an exact expected version of the checkpoint
//! stream, and opening a consumer appends one (at its resume position) to claim it. A second
//! handle of the same name elsewhere (another process, another replica on PostgreSQL) takes
//! the consumer over; the older handle's next checkpoint then fails with
//! [`Error::ConsumerConflict`] instead of both doing the work silently. In one process a
//! second open of a name still open is [`Error::ConsumerInUse`].

use crate::engine::Logbook;
use crate::error::{Error, Result};
use crate::streams::{Direction, ExpectedVersion};
use crate::subscription::Subscription;
use crate::system::{self, CONSUMER_STREAM_PREFIX, ConsumerEvent};
use logbook_projection::{Event, RecordedEvent, StreamId};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest consumer name, in bytes.
pub const CONSUMER_NAME_BYTES_MAX: usize = 128;
/// The most event types one [`ConsumerFilter`] may list.
pub const FILTER_EVENT_TYPES_MAX: usize = 256;
/// The most consumers a log keeps in its registry (names with a checkpoint); a checkpoint of
/// one more is still written, but [`Stats::consumers`](crate::Stats) lists only these.
pub const CONSUMERS_MAX: usize = 4096;
/// Every this many checkpoints, the checkpoint stream is truncated behind its newest one, so
/// compaction purges the older ones and the stream stays small.
pub const CHECKPOINTS_PER_TRUNCATION: u64 = 64;

/// The most reserved-record positions the engine keeps to leave them out of consumers' lag
/// (8 bytes each: 512 KiB at most).
pub const RESERVED_POSITIONS_KEPT: usize = 65_536;

/// How many of the newest records of each reserved stream open reads to leave them out of
/// consumers' lag (a snapshot may stand for them).
pub const RESERVED_READ_AT_OPEN: usize = 64;

/// Attempts to claim a consumer at open when another handle checkpoints it meanwhile.
const CLAIM_ATTEMPTS_MAX: u32 = 3;

/// Which events a consumer receives. Checked on each record's header (stream id and event
/// type) before its payload is decoded: a filtered-out event costs no decoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerFilter {
    /// `Some((text, true))`: streams starting with `text`; `Some((text, false))`: that stream.
    streams: Option<(String, bool)>,
    /// Only these event types; `None`: every type.
    event_types: Option<BTreeSet<String>>,
}

impl ConsumerFilter {
    /// Every user event (the engine's own `$` streams are never delivered).
    pub fn everything() -> ConsumerFilter {
        ConsumerFilter::default()
    }

    /// Streams matching `pattern`: `room/*` is every stream starting with `room/`, any other
    /// pattern is one stream id exactly. A pattern naming a reserved `$` stream is refused.
    pub fn streams(pattern: &str) -> Result<ConsumerFilter> {
        ConsumerFilter::default().with_streams(pattern)
    }

    /// Only events of these types (at most [`FILTER_EVENT_TYPES_MAX`]).
    pub fn event_types<T: Into<String>>(
        types: impl IntoIterator<Item = T>,
    ) -> Result<ConsumerFilter> {
        ConsumerFilter::default().with_event_types(types)
    }

    /// This filter, limited to streams matching `pattern` (see [`ConsumerFilter::streams`]).
    pub fn with_streams(mut self, pattern: &str) -> Result<ConsumerFilter> {
        if pattern.is_empty() || system::is_reserved(pattern) {
            return Err(Error::InvalidRequest(format!(
                "consumer stream pattern {pattern:?}: give a stream id or a prefix ending in \
                 `*` (`room/*`); reserved `$` streams are never delivered"
            )));
        }
        self.streams = Some(match pattern.strip_suffix('*') {
            Some(prefix) => (prefix.to_owned(), true),
            None => (pattern.to_owned(), false),
        });
        Ok(self)
    }

    /// This filter, limited to events of these types.
    pub fn with_event_types<T: Into<String>>(
        mut self,
        types: impl IntoIterator<Item = T>,
    ) -> Result<ConsumerFilter> {
        let types: BTreeSet<String> = types.into_iter().map(Into::into).collect();
        if types.is_empty() || types.len() > FILTER_EVENT_TYPES_MAX {
            return Err(Error::LimitExceeded {
                what: "event types in a consumer filter (1 to the limit)",
                limit: FILTER_EVENT_TYPES_MAX as u64,
                actual: types.len() as u64,
            });
        }
        self.event_types = Some(types);
        Ok(self)
    }

    /// True when the filter keeps every user event.
    pub(crate) fn is_everything(&self) -> bool {
        self.streams.is_none() && self.event_types.is_none()
    }

    /// The stream pattern: `Some((prefix, true))` for `prefix*`, `Some((id, false))` for one
    /// stream id, `None` for every stream (what a store's query filters on).
    #[cfg(feature = "postgres")]
    pub(crate) fn stream_pattern(&self) -> Option<(&str, bool)> {
        self.streams
            .as_ref()
            .map(|(text, prefix)| (text.as_str(), *prefix))
    }

    /// The event types kept, `None` for every type (what a store's query filters on).
    #[cfg(feature = "postgres")]
    pub(crate) fn event_type_list(&self) -> Option<Vec<String>> {
        self.event_types
            .as_ref()
            .map(|types| types.iter().cloned().collect())
    }

    /// True when a record of `stream` and `event_type` is delivered.
    pub fn keeps(&self, stream: &str, event_type: &str) -> bool {
        let stream_kept = match &self.streams {
            None => true,
            Some((prefix, true)) => stream.starts_with(prefix.as_str()),
            Some((exact, false)) => stream == exact,
        };
        stream_kept
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.contains(event_type))
    }
}

/// How a consumer delivers and checkpoints.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Which events it receives.
    pub filter: ConsumerFilter,
    /// A checkpoint is written once the acknowledged position moved this many positions past
    /// the last checkpoint (default 1,000). Positions of every stream count, filtered-out
    /// ones included.
    pub checkpoint_every_events: u64,
    /// ... or once this long passed since the last checkpoint with something acknowledged
    /// and not yet checkpointed (default 1 s; checked on `ack` and while `next` waits).
    pub checkpoint_interval: Duration,
    /// Where a consumer without a checkpoint starts: it delivers the events after this
    /// position (default 0: the whole log).
    pub start_after: u64,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            filter: ConsumerFilter::everything(),
            checkpoint_every_events: 1000,
            checkpoint_interval: Duration::from_secs(1),
            start_after: 0,
        }
    }
}

/// One consumer in [`Stats::consumers`](crate::Stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStats {
    /// The consumer's name.
    pub name: String,
    /// The last checkpointed position (durable): a restart resumes after it.
    pub position: u64,
    /// The position acknowledged by a handle open in this process (`None`: no open handle
    /// here); at or above `position`.
    pub acked: Option<u64>,
    /// User events durable and not yet acknowledged: the events of every stream that is not
    /// a reserved `$` stream (so neither the engine's records nor any consumer's checkpoints)
    /// between `acked` (or `position` without a handle here) and the durable position. A
    /// handle that acknowledged every delivered event has passed the events its filter
    /// rejected up to its last read, so they do not count; events beyond its last read
    /// count whatever its filter (the log has no per-filter count). Cost: O(log n) per
    /// consumer, from the positions of the reserved records applied since open (the newest
    /// [`RESERVED_POSITIONS_KEPT`]); reserved records before those (below the snapshot the log
    /// opened from, or forgotten) count as events, so a consumer that far behind may show a
    /// little more.
    pub lag: u64,
    /// When the last checkpoint was written (its event's timestamp, ms since the epoch).
    pub checkpointed_at_ms: u64,
}

/// A consumer's newest checkpoint, as the log holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The acknowledged position it records.
    pub(crate) position: u64,
    /// Where the checkpoint record itself is.
    pub(crate) record_position: u64,
    /// Its timestamp.
    pub(crate) timestamp_ms: u64,
}

/// The engine's view of its consumers: the newest checkpoint of each (kept by the one apply
/// and restored at open) and the handles open in this process.
#[derive(Debug, Default)]
pub(crate) struct ConsumerRegistry {
    checkpoints: Mutex<BTreeMap<String, Checkpoint>>,
    open: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Positions of the reserved (`$`) records applied since open, ascending, the newest
    /// [`RESERVED_POSITIONS_KEPT`]: what lag leaves out.
    reserved: Mutex<VecDeque<u64>>,
}

impl ConsumerRegistry {
    /// Notes a reserved (`$`) record the apply applied (in position order), so that lag does
    /// not count it; the oldest noted position is forgotten past [`RESERVED_POSITIONS_KEPT`].
    pub(crate) fn reserved_applied(&self, position: u64) {
        let mut reserved = lock(&self.reserved);
        if reserved.back().is_some_and(|&last| last >= position) {
            return;
        }
        if reserved.len() >= RESERVED_POSITIONS_KEPT {
            reserved.pop_front();
        }
        reserved.push_back(position);
    }

    /// Notes reserved records read at open (in any order), keeping the newest
    /// [`RESERVED_POSITIONS_KEPT`] of them and of those applied meanwhile.
    fn reserved_restored(&self, positions: Vec<u64>) {
        let mut reserved = lock(&self.reserved);
        let mut all: BTreeSet<u64> = reserved.iter().copied().collect();
        all.extend(positions);
        let skip = all.len().saturating_sub(RESERVED_POSITIONS_KEPT);
        *reserved = all.into_iter().skip(skip).collect();
    }

    /// User events in `(after, durable]`: positions minus the reserved records noted there.
    fn user_events(&self, after: u64, durable: u64) -> u64 {
        if durable <= after {
            return 0;
        }
        let reserved = lock(&self.reserved);
        let below_or_at = |bound: u64| reserved.partition_point(|&position| position <= bound);
        let noted = below_or_at(durable) - below_or_at(after);
        (durable - after).saturating_sub(noted as u64)
    }

    /// Records a checkpoint record (the apply of a durable `$consumer/<name>` record, or the
    /// restore at open); an older one than the one kept is ignored.
    pub(crate) fn checkpointed(&self, name: &str, checkpoint: Checkpoint) {
        let mut checkpoints = lock(&self.checkpoints);
        if let Some(kept) = checkpoints.get_mut(name) {
            if kept.record_position < checkpoint.record_position {
                *kept = checkpoint;
            }
            return;
        }
        if checkpoints.len() < CONSUMERS_MAX {
            checkpoints.insert(name.to_owned(), checkpoint);
        }
    }

    /// Applies a durable record of a consumer stream (garbage is logged and ignored: the
    /// registry is a report, never the authority; the consumer reads its own stream).
    pub(crate) fn apply(
        &self,
        stream: &str,
        event_type: &str,
        payload: &[u8],
        position: u64,
        timestamp_ms: u64,
    ) {
        let Some(name) = stream.strip_prefix(CONSUMER_STREAM_PREFIX) else {
            return;
        };
        match ConsumerEvent::decode_record(event_type, payload) {
            Ok(event) => self.checkpointed(
                name,
                Checkpoint {
                    position: event.position(),
                    record_position: position,
                    timestamp_ms,
                },
            ),
            Err(reason) => tracing::warn!(position, %reason, "consumer checkpoint ignored"),
        }
    }

    /// Registers an open handle; `None` when one of that name is open already.
    fn claim(&self, name: &str, position: u64) -> Option<Arc<AtomicU64>> {
        let mut open = lock(&self.open);
        if open.contains_key(name) {
            return None;
        }
        let slot = Arc::new(AtomicU64::new(position));
        open.insert(name.to_owned(), slot.clone());
        Some(slot)
    }

    fn release(&self, name: &str) {
        lock(&self.open).remove(name);
    }

    /// Every consumer with a checkpoint or an open handle, by name.
    pub(crate) fn stats(&self, durable: u64) -> Vec<ConsumerStats> {
        let checkpoints = lock(&self.checkpoints).clone();
        let open: HashMap<String, u64> = lock(&self.open)
            .iter()
            .map(|(name, slot)| (name.clone(), slot.load(Ordering::Relaxed)))
            .collect();
        let mut names: BTreeSet<&String> = checkpoints.keys().collect();
        names.extend(open.keys());
        names
            .into_iter()
            .map(|name| {
                let checkpoint = checkpoints.get(name);
                let position = checkpoint.map_or(0, |checkpoint| checkpoint.position);
                let acked = open.get(name).copied();
                ConsumerStats {
                    name: name.clone(),
                    position,
                    acked,
                    lag: self.user_events(acked.unwrap_or(position).max(position), durable),
                    checkpointed_at_ms: checkpoint.map_or(0, |checkpoint| checkpoint.timestamp_ms),
                }
            })
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks a consumer name: 1 to [`CONSUMER_NAME_BYTES_MAX`] bytes of ASCII letters, digits,
/// `-`, `_` and `.`; returns its checkpoint stream.
pub fn consumer_stream(name: &str) -> Result<StreamId> {
    let valid = !name.is_empty()
        && name.len() <= CONSUMER_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if !valid {
        return Err(Error::InvalidRequest(format!(
            "consumer name {name:?}: 1 to {CONSUMER_NAME_BYTES_MAX} ASCII letters, digits, \
             '-', '_' or '.'"
        )));
    }
    Ok(StreamId::new(format!("{CONSUMER_STREAM_PREFIX}{name}"))?)
}

/// A durable named consumer: every event after its last checkpoint (matching its filter),
/// then live, in position order, at least once. Get one with [`Logbook::consumer`].
///
/// Call [`Consumer::ack`] with an event's position once the event is handled (every event up
/// to that position counts as handled); acknowledgements are kept in memory and written as a
/// checkpoint every [`ConsumerOptions::checkpoint_every_events`] positions or
/// [`ConsumerOptions::checkpoint_interval`], on [`Consumer::checkpoint`] and on
/// [`Consumer::close`]. A crash replays what was acknowledged after the last checkpoint.
///
/// Delivery is **at least once**, so the handler is idempotent: here it records each effect
/// under the event's position and skips a position it has already handled, so an event
/// delivered again after a crash sends no second email.
///
/// ```
/// use logbook::{
///     BuiltinEvent, ConsumerFilter, ConsumerOptions, ExpectedVersion, Logbook, LogbookOptions,
///     MemoryStorage, StreamId,
/// };
/// use std::collections::BTreeSet;
/// use std::sync::Arc;
///
/// /// The service's own store of effects, keyed by the event's position (in a real service:
/// /// a table with a unique key, written in the same transaction as the effect).
/// #[derive(Default)]
/// struct Mailer {
///     sent: BTreeSet<u64>,
/// }
///
/// impl Mailer {
///     /// Idempotent: a position already handled is skipped.
///     fn handle(&mut self, position: u64) -> bool {
///         self.sent.insert(position)
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let storage = Arc::new(MemoryStorage::new());
/// let options = LogbookOptions::default();
/// let (log, _) =
///     Logbook::<BuiltinEvent>::open_with_storage(storage.clone(), "/log", options.clone())
///         .await?;
/// let room = StreamId::room("lobby")?;
/// let created = BuiltinEvent::from_json("room.created", serde_json::json!({"name": "Lobby"}))?;
/// log.append(&room, ExpectedVersion::NoStream, vec![created.into()]).await?;
///
/// let consumer_options = ConsumerOptions {
///     filter: ConsumerFilter::streams("room/*")?,
///     ..ConsumerOptions::default()
/// };
/// let mut mailer = Mailer::default();
/// let mut consumer = log.consumer("mailer", consumer_options.clone()).await?;
/// let event = consumer.next().await.expect("the room's event")?;
/// assert!(mailer.handle(event.position));
/// consumer.ack(event.position).await?; // in memory; checkpointed in batches
/// drop(consumer); // no close: the acknowledgement was never checkpointed (like a crash)
/// log.close().await?;
///
/// // After the restart the event comes again (at least once); the handler skips it.
/// let (log, _) = Logbook::<BuiltinEvent>::open_with_storage(storage, "/log", options).await?;
/// let mut consumer = log.consumer("mailer", consumer_options).await?;
/// let again = consumer.next().await.expect("delivered again")?;
/// assert_eq!(again.position, event.position);
/// assert!(!mailer.handle(again.position), "handled once, effect not repeated");
/// consumer.ack(again.position).await?;
/// consumer.close().await?; // writes the checkpoint: the next open starts after it
/// log.close().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Consumer<E> {
    log: Logbook<E>,
    name: String,
    stream: StreamId,
    subscription: Subscription<E>,
    options: ConsumerOptions,
    /// The highest acknowledged position.
    acked: u64,
    /// The position of the last event delivered (or failed to decode).
    delivered: u64,
    /// The position the last checkpoint recorded.
    checkpointed: u64,
    /// The checkpoint stream's version this handle wrote last (its claim).
    version: u64,
    last_checkpoint: Instant,
    checkpoints_written: u64,
    /// Shared with the registry, for stats.
    slot: Arc<AtomicU64>,
}

impl<E: Event> Logbook<E> {
    /// Opens the durable consumer `name` (created on first use): it resumes after its last
    /// checkpoint, or after [`ConsumerOptions::start_after`] when it has none. Appends a
    /// checkpoint at the resume position to claim the name (a handle elsewhere that
    /// checkpoints afterwards gets [`Error::ConsumerConflict`]); a second open in this process
    /// while one is open is [`Error::ConsumerInUse`].
    pub async fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Consumer<E>> {
        let stream = consumer_stream(name)?;
        let registry = &self.shared_ref().consumers;
        let slot = registry
            .claim(name, 0)
            .ok_or_else(|| Error::ConsumerInUse {
                name: name.to_owned(),
            })?;
        let opened = self.claim_consumer(name, &stream, &options).await;
        let (version, position) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                registry.release(name);
                return Err(error);
            }
        };
        slot.store(position, Ordering::Relaxed);
        let subscription = self
            .subscribe(position + 1)
            .with_filter(options.filter.clone());
        Ok(Consumer {
            log: self.clone(),
            name: name.to_owned(),
            stream,
            subscription,
            options,
            acked: position,
            delivered: position,
            checkpointed: position,
            version,
            last_checkpoint: Instant::now(),
            checkpoints_written: 0,
            slot,
        })
    }

    /// Reads the consumer's newest checkpoint and appends a claim at it; returns the claim's
    /// version and the resume position.
    async fn claim_consumer(
        &self,
        name: &str,
        stream: &StreamId,
        options: &ConsumerOptions,
    ) -> Result<(u64, u64)> {
        let mut attempt = 1;
        loop {
            // Applies what other replicas appended up to now, the consumer's stream included.
            self.sync().await?;
            match self.try_claim_consumer(name, stream, options).await {
                Err(Error::ConsumerConflict { .. }) if attempt < CLAIM_ATTEMPTS_MAX => {
                    attempt += 1;
                }
                claimed => return claimed,
            }
        }
    }

    async fn try_claim_consumer(
        &self,
        name: &str,
        stream: &StreamId,
        options: &ConsumerOptions,
    ) -> Result<(u64, u64)> {
        let (expected, position) = match self.newest_checkpoint(stream).await? {
            Some((version, event)) => (ExpectedVersion::Exact(version), event.position()),
            None => match self.stream_version(stream)? {
                // A stream whose checkpoints are all hidden: continue its versions.
                Some(version) => (ExpectedVersion::Exact(version), options.start_after),
                None => (ExpectedVersion::NoStream, options.start_after),
            },
        };
        let version = self
            .append_checkpoint(name, stream, expected, position)
            .await?;
        Ok((version, position))
    }

    /// The newest checkpoint of a consumer stream and its version.
    async fn newest_checkpoint(&self, stream: &StreamId) -> Result<Option<(u64, ConsumerEvent)>> {
        let Some(last) = self.stream_version(stream)? else {
            return Ok(None);
        };
        let raws = self
            .backend_ref()
            .read_stream(stream.clone(), last, Direction::Backward, 1)
            .await?;
        let Some(raw) = raws.first() else {
            return Ok(None);
        };
        let event = ConsumerEvent::decode_record(raw.envelope.event_type(), raw.envelope.payload())
            .map_err(|reason| Error::Corrupted {
                position: raw.position,
                reason,
            })?;
        Ok(Some((raw.envelope.stream_version(), event)))
    }

    /// Appends one checkpoint of `position` to the consumer stream if it is at `expected`;
    /// returns the new version. A wrong version is [`Error::ConsumerConflict`].
    async fn append_checkpoint(
        &self,
        name: &str,
        stream: &StreamId,
        expected: ExpectedVersion,
        position: u64,
    ) -> Result<u64> {
        let data = ConsumerEvent::Acked { position }.to_data()?;
        let request = crate::backend::AppendRequest {
            stream: stream.clone(),
            expected,
            events: vec![data],
            durability: crate::options::AppendDurability::Policy,
        };
        match self.backend_ref().append(request).await {
            Ok(result) => Ok(result.version),
            Err(Error::WrongExpectedVersion { actual, .. }) => Err(Error::ConsumerConflict {
                name: name.to_owned(),
                expected: expected.to_string(),
                actual: actual.map_or("no checkpoint".to_owned(), |version| version.to_string()),
            }),
            Err(error) => Err(error),
        }
    }

    /// An operator's reset: the consumer `name` resumes after `position` the next time it is
    /// opened (a handle open elsewhere gets [`Error::ConsumerConflict`] at its next
    /// checkpoint). A position above the durable position is refused.
    pub async fn reset_consumer(&self, name: &str, position: u64) -> Result<()> {
        let stream = consumer_stream(name)?;
        let durable = self.sync().await?;
        if position > durable {
            return Err(Error::InvalidRequest(format!(
                "consumer {name}: position {position} is above the log's durable position \
                 {durable}"
            )));
        }
        self.append_checkpoint(name, &stream, ExpectedVersion::Any, position)
            .await?;
        Ok(())
    }

    /// Fills the registry with the newest checkpoint of every consumer stream the catalog
    /// knows (at open: a snapshot may stand for the records that held them), and notes the
    /// positions of the newest [`RESERVED_READ_AT_OPEN`] records of every reserved stream, so
    /// that lag leaves them out even when a snapshot stands for them.
    pub(crate) async fn restore_consumers(&self) -> Result<()> {
        let streams: Vec<StreamId> = {
            let catalog = self
                .shared_ref()
                .durable_streams
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            catalog
                .iter()
                .map(|(stream, _)| stream)
                .filter(|stream| system::is_reserved(stream.as_str()))
                .take(CONSUMERS_MAX + 1)
                .cloned()
                .collect()
        };
        let mut reserved = Vec::new();
        for stream in streams {
            let Some(last) = self.stream_version(&stream)? else {
                continue;
            };
            let raws = self
                .backend_ref()
                .read_stream(
                    stream.clone(),
                    last,
                    Direction::Backward,
                    RESERVED_READ_AT_OPEN,
                )
                .await?;
            reserved.extend(raws.iter().map(|raw| raw.position));
            let Some(newest) = raws.first() else {
                continue;
            };
            self.shared_ref().consumers.apply(
                stream.as_str(),
                newest.envelope.event_type(),
                newest.envelope.payload(),
                newest.position,
                newest.envelope.timestamp_ms(),
            );
        }
        self.shared_ref().consumers.reserved_restored(reserved);
        Ok(())
    }
}

impl<E: Event> Consumer<E> {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The highest acknowledged position.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The position the last checkpoint recorded (what a restart resumes after).
    pub fn checkpointed(&self) -> u64 {
        self.checkpointed
    }

    /// The next matching event; `None` once the log is closed and every durable event was
    /// delivered. While it waits with acknowledgements not yet checkpointed, it writes the
    /// checkpoint when [`ConsumerOptions::checkpoint_interval`] is up.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent<E>>> {
        loop {
            let wait = if self.saved_position() > self.checkpointed {
                self.options
                    .checkpoint_interval
                    .saturating_sub(self.last_checkpoint.elapsed())
            } else {
                Duration::MAX
            };
            if wait.is_zero() {
                if let Err(error) = self.checkpoint().await {
                    return Some(Err(error));
                }
                continue;
            }
            let next = if wait == Duration::MAX {
                self.subscription.next().await
            } else {
                match tokio::time::timeout(wait, self.subscription.next()).await {
                    Ok(next) => next,
                    Err(_elapsed) => continue,
                }
            };
            match &next {
                Some(Ok(event)) => self.delivered = event.position,
                Some(Err(_)) => {
                    self.delivered = self.subscription.next_position().saturating_sub(1);
                }
                None => {}
            }
            return next;
        }
    }

    /// Acknowledges every delivered event up to and including `position` (in memory; a
    /// checkpoint follows when one is due). An older position than the last acknowledged one
    /// changes nothing; one past the last delivered event is refused.
    pub async fn ack(&mut self, position: u64) -> Result<()> {
        if position > self.delivered {
            return Err(Error::InvalidRequest(format!(
                "consumer {}: ack of position {position}, past the last delivered event {}",
                self.name, self.delivered
            )));
        }
        if position <= self.acked {
            return Ok(());
        }
        self.acked = position;
        self.slot.store(self.saved_position(), Ordering::Relaxed);
        let moved = self.saved_position().saturating_sub(self.checkpointed);
        if moved >= self.options.checkpoint_every_events.max(1)
            || self.last_checkpoint.elapsed() >= self.options.checkpoint_interval
        {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// The position a checkpoint would record now: the acknowledged one, or, once every
    /// delivered event is acknowledged, the last non-checkpoint position the filter passed.
    fn saved_position(&self) -> u64 {
        if self.acked >= self.delivered {
            self.acked.max(self.subscription.last_counted())
        } else {
            self.acked
        }
    }

    /// Writes a checkpoint of the acknowledged position now (nothing when it is already
    /// checkpointed); returns the checkpointed position. [`Error::ConsumerConflict`] when
    /// another handle took the consumer over: stop using this one.
    pub async fn checkpoint(&mut self) -> Result<u64> {
        let position = self.saved_position();
        self.last_checkpoint = Instant::now();
        if position <= self.checkpointed {
            return Ok(self.checkpointed);
        }
        self.version = self
            .log
            .append_checkpoint(
                &self.name,
                &self.stream,
                ExpectedVersion::Exact(self.version),
                position,
            )
            .await?;
        self.checkpointed = position;
        self.slot.store(position, Ordering::Relaxed);
        self.checkpoints_written += 1;
        if self
            .checkpoints_written
            .is_multiple_of(CHECKPOINTS_PER_TRUNCATION)
        {
            // Hides the older checkpoints (compaction then purges them); the newest stays.
            self.log
                .backend_ref()
                .truncate_stream(self.stream.clone(), self.version)
                .await?;
        }
        Ok(position)
    }

    /// Writes the final checkpoint and releases the name.
    pub async fn close(mut self) -> Result<u64> {
        self.checkpoint().await
    }
}

impl<E> Drop for Consumer<E> {
    fn drop(&mut self) {
        self.log.shared_ref().consumers.release(&self.name);
    }
}
