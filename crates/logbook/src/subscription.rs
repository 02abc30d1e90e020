//! Catch-up subscriptions: every durable event from a position on, then live, in order.
//!
//! Owns: switching between reading the log (catch-up, and whenever the live buffer overflowed)
//! and the live broadcast of newly durable records, so a subscriber sees no gap and no duplicate
//! however slow it is. Must never: deliver an event above the durable position, or drop a
//! subscriber silently.
//!
//! Why it cannot miss an event: a subscription joins the live broadcast *before* each catch-up
//! read. A record published before the join was durable before the read started, so the read
//! returns it; a record published after the join arrives live. Records seen twice are skipped
//! by position.

use crate::backend::Backend;
use crate::consumer::ConsumerFilter;
use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::syncer::LiveRecord;
use crate::system;
use futures_core::Stream;
use logbook_projection::{Event, RecordDecoder, RecordedEvent};
use logbook_wal::WalReader;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast::{self, error::RecvError};

/// Records read from the log per catch-up step.
pub(crate) const CATCH_UP_CHUNK: usize = 1024;

/// A live registration, for [`Stats`](crate::Stats).
#[derive(Debug)]
pub(crate) struct SubscriberSlot {
    pub(crate) next_position: AtomicU64,
}

/// A subscription to every durable event from a position on. Use [`Subscription::next`], or
/// [`Subscription::into_stream`] for a `Stream`.
pub struct Subscription<E> {
    shared: Arc<Shared>,
    /// Where catch-up reads go when the engine has no files of its own (a shared store): the
    /// backend. `None` on the embedded backend, whose catch-up reads the WAL through `shared`
    /// (holding the backend would keep its writer alive after the last `Logbook` is dropped).
    backend: Option<Arc<dyn Backend>>,
    slot: Arc<SubscriberSlot>,
    id: u64,
    next_position: u64,
    live: Option<broadcast::Receiver<Arc<Vec<LiveRecord>>>>,
    reader: Option<WalReader>,
    pending: VecDeque<LiveRecord>,
    /// Catch-up records read from the embedded WAL, decoded on the blocking thread straight from
    /// the reader's buffer (`None` for the engine's own events and filtered-out records); taken
    /// before `pending`. The chunk's own vector, handed over as it came back from the blocking
    /// thread (copying each record into a queue was a move of the whole event per record).
    caught_up: std::vec::IntoIter<Filtered<E>>,
    /// Which records are delivered (a durable consumer's filter); `None`: every user event.
    filter: Option<Arc<ConsumerFilter>>,
    /// The last position passed that is not a consumer checkpoint (delivered or filtered out).
    last_counted: u64,
    /// A filtered read from a shared store covered the log up to here (and its last counted
    /// position): passed once the records it returned (in `pending`) are delivered.
    covered: Option<(u64, Option<u64>)>,
    /// Decodes live records (and a shared store's catch-up reads).
    decoder: RecordDecoder,
    catching_up: bool,
    _event: PhantomData<fn() -> E>,
}

impl<E: Event> Subscription<E> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        backend: Option<Arc<dyn Backend>>,
        from_position: u64,
    ) -> Self {
        let (id, slot) = shared.register_subscriber(from_position.max(1));
        Subscription {
            shared,
            backend,
            slot,
            id,
            next_position: from_position.max(1),
            live: None,
            reader: None,
            pending: VecDeque::new(),
            caught_up: Vec::new().into_iter(),
            filter: None,
            last_counted: from_position.saturating_sub(1),
            covered: None,
            decoder: RecordDecoder::new(),
            catching_up: true,
            _event: PhantomData,
        }
    }

    /// The position the next event will be at or after.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Delivers only the events `filter` keeps (checked on each record's header, before its
    /// payload is decoded).
    pub(crate) fn with_filter(mut self, filter: ConsumerFilter) -> Self {
        self.filter = (!filter.is_everything()).then(|| Arc::new(filter));
        self
    }

    /// The last position passed (delivered, or skipped by the filter) that is not a consumer
    /// checkpoint: what a durable consumer may record once it acknowledged every delivered
    /// event.
    pub(crate) fn last_counted(&self) -> u64 {
        self.last_counted
    }

    /// The next event; `None` once the log is closed and every durable event was delivered.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent<E>>> {
        loop {
            if let Some((position, counted, decoded)) = self.caught_up.next() {
                if position < self.next_position {
                    continue;
                }
                self.advance(position, counted);
                match decoded {
                    Ok(Some(event)) => return Some(Ok(event)),
                    Ok(None) => continue,
                    Err(error) => return Some(Err(error)),
                }
            }
            if let Some((position, bytes)) = self.pending.pop_front() {
                if position < self.next_position {
                    continue;
                }
                let (counted, decoded) =
                    decode_with::<E>(&mut self.decoder, self.filter.as_deref(), position, &bytes);
                self.advance(position, counted);
                match decoded {
                    Ok(Some(event)) => return Some(Ok(event)),
                    Ok(None) => continue,
                    Err(error) => return Some(Err(error)),
                }
            }
            if let Some((through, counted)) = self.covered.take() {
                self.pass(through, counted);
            }
            if self.catching_up {
                if self.live.is_none() {
                    self.live = self.shared.subscribe_live();
                }
                match self.read_log().await {
                    // Caught up with a closed log: nothing more will ever come.
                    Ok(0) if self.live.is_none() => return None,
                    Ok(0) => self.catching_up = false,
                    Ok(_) => {}
                    Err(error) => return Some(Err(error)),
                }
                continue;
            }
            let live = self.live.as_mut()?;
            match live.recv().await {
                Ok(batch) => {
                    let first = batch.first().map(|(position, _)| *position);
                    if first.is_some_and(|first| first > self.next_position) {
                        // Something between was published before this subscriber listened.
                        self.catching_up = true;
                        continue;
                    }
                    self.pending.extend(batch.iter().cloned());
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        subscriber = self.id,
                        missed,
                        "subscriber lagged; reading the log"
                    );
                    self.live = None;
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => {
                    // The log closed: deliver what is durable and not yet seen, then end.
                    self.live = None;
                    match self.read_log().await {
                        Ok(0) => return None,
                        Ok(_) => {}
                        Err(error) => return Some(Err(error)),
                    }
                }
            }
        }
    }

    /// Marks `position` delivered (or passed); `counted`: not a consumer checkpoint.
    fn advance(&mut self, position: u64, counted: bool) {
        if counted {
            self.last_counted = position;
        }
        self.next_position = position + 1;
        self.slot
            .next_position
            .store(self.next_position, Ordering::Relaxed);
    }

    /// Passes every position up to `through` (a filtered read covered them: the records it
    /// kept are delivered, the rest were rejected); `counted`: the last of them that is not a
    /// consumer checkpoint.
    fn pass(&mut self, through: u64, counted: Option<u64>) {
        if let Some(counted) = counted {
            self.last_counted = self.last_counted.max(counted.min(through));
        }
        if through >= self.next_position {
            self.next_position = through + 1;
            self.slot
                .next_position
                .store(self.next_position, Ordering::Relaxed);
        }
    }

    /// Reads up to one chunk of durable records from the log into `pending` (a shared store)
    /// or `caught_up` (the embedded WAL). Returns how much it read or covered: 0 when the
    /// subscription is at the log's end.
    async fn read_log(&mut self) -> Result<usize> {
        let Some(files) = self.shared.files.clone() else {
            let Some(backend) = &self.backend else {
                return Err(Error::Closed);
            };
            if let Some(filter) = &self.filter {
                // The store filters in its query: rejected records are never read, and the
                // position moves over them (`covered`) even when none matched.
                let page = backend
                    .read_all_filtered(self.next_position, CATCH_UP_CHUNK, filter)
                    .await?;
                let count = page.records.len();
                self.pending.extend(page.records);
                if page.through < self.next_position {
                    return Ok(count);
                }
                self.covered = Some((page.through, page.counted));
                return Ok(count.max(1));
            }
            let records = backend.read_all(self.next_position, CATCH_UP_CHUNK).await?;
            let count = records.len();
            self.pending.extend(records);
            return Ok(count);
        };
        let mut reader = match self.reader.take() {
            Some(reader) if reader.next_position() == self.next_position => reader,
            _ => files.wal.read_from(self.next_position),
        };
        let filter = self.filter.clone();
        let (reader, records) = tokio::task::spawn_blocking(move || {
            let mut records = Vec::with_capacity(CATCH_UP_CHUNK);
            let mut decoder = RecordDecoder::new();
            while records.len() < CATCH_UP_CHUNK {
                let read = reader.next_with(|position, bytes| {
                    let (counted, decoded) =
                        decode_with::<E>(&mut decoder, filter.as_deref(), position, bytes);
                    (position, counted, decoded)
                });
                match read {
                    Some(Ok(record)) => records.push(record),
                    Some(Err(error)) => return (reader, Err(Error::from(error))),
                    None => break,
                }
            }
            (reader, Ok(records))
        })
        .await
        .map_err(|error| Error::Task(error.to_string()))?;
        let records = records?;
        self.reader = Some(reader);
        let count = records.len();
        // Always drained before the log is read again (`next` takes `caught_up` first).
        if self.caught_up.as_slice().is_empty() {
            self.caught_up = records.into_iter();
        } else {
            let mut all: Vec<Filtered<E>> = std::mem::take(&mut self.caught_up).collect();
            all.extend(records);
            self.caught_up = all.into_iter();
        }
        Ok(count)
    }

    /// This subscription as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<RecordedEvent<E>>> + Send + 'static {
        futures_util::stream::unfold(self, |mut subscription| async move {
            let item = subscription.next().await?;
            Some((item, subscription))
        })
    }
}

impl<E> Drop for Subscription<E> {
    fn drop(&mut self) {
        self.shared.unregister_subscriber(self.id);
    }
}

/// A record read ahead: its position, whether it counts (not a consumer checkpoint), and its
/// event (`None`: skipped).
type Filtered<E> = (u64, bool, Result<Option<RecordedEvent<E>>>);

/// Decodes a record into a typed event; `None` for the engine's own events (every reserved
/// `$` stream) and for records `filter` leaves out, whose payload is never decoded. The flag
/// is false for a consumer checkpoint. `decoder` checks each distinct stream id and event
/// type of a run of records once.
fn decode_with<E: Event>(
    decoder: &mut RecordDecoder,
    filter: Option<&ConsumerFilter>,
    position: u64,
    bytes: &[u8],
) -> (bool, Result<Option<RecordedEvent<E>>>) {
    let mut counted = true;
    let decoded = decoder.decode_if::<E>(position, bytes, |stream, event_type| {
        counted = !system::is_consumer_stream(stream);
        !system::is_reserved(stream) && filter.is_none_or(|filter| filter.keeps(stream, event_type))
    });
    let decoded = match decoded {
        Ok(Some(decoded)) => decoded.map(Some).map_err(Error::from),
        Ok(None) => Ok(None),
        Err(error) => Err(Error::Corrupted {
            position,
            reason: error.to_string(),
        }),
    };
    (counted, decoded)
}
