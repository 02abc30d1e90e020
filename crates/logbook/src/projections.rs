//! Projections in the engine: registration, replay, applying durable events, and hooks.
//!
//! Owns: the registry of projections a log was opened with, the handles services query them
//! through, the published versions readers get, the observers (`restored`, `upserted`,
//! `deleted`), and the replicas the snapshot thread keeps (a private copy of each projection
//! that follows the applied events, so a snapshot is encoded from it and never from the live
//! state). Must never: apply an event that is not durable, apply one twice to a copy, skip on
//! the live path an event the engine itself wrote (that is an error: the engine poisons), let
//! the applier wait for a reader, or change a version a reader holds.
//!
//! A reader never blocks the applier nor an acknowledgement (issue 12 item 4): `read()` returns
//! the version published last, an `Arc<P>` that is never changed once a reader may hold it.
//! The syncer applies each record copy-on-write: to the published version in place when no
//! reader holds it (the common case: one copy, no extra work), else to a second copy (the
//! *spare*: an older version, brought up to date by re-applying the records it lacks), else,
//! when readers hold both, to a clone of the published version; then it publishes the result.
//! It never waits for a reader; a reader waits at most for one record's `apply` (during the
//! replay at open, for one chunk of records: [`REPLAY_CHUNK_RECORDS`]).
//! [`ProjectionHandle::state_clones`] counts the clones. Each copy sees each event once, in
//! position order. Clones happen only in that fallback and to seed the replicas (once per
//! process, at its first snapshot); hooks get a reference to the published state and the
//! event, and nothing is built at all when no observer is registered. An observer that panics
//! is isolated: the panic is caught around that one hook call, logged and counted
//! ([`ProjectionHandle::observer_panics`], `Stats::observer_panics`), and the engine goes on;
//! it never poisons the engine nor fails an append (the event was durable and applied).

use crate::apply::{DurableRecord, Undecodable};
use crate::error::Result;
use crate::system;
use logbook_projection::{Event, Projection, RecordedEvent, StreamId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Callbacks on a projection's durable state. They run on the engine's syncer thread, in
/// position order, each once its event is applied and published (the state a hook gets is the
/// version [`ProjectionHandle::read`] returns from then on, and
/// [`ProjectionHandle::applied_position`] is the event's) and before its append is
/// acknowledged: keep them short (hand work to a channel), acknowledgements wait for them.
/// Readers do not: `read()` never waits for a hook.
///
/// The syncer thread has no async runtime: to start async work from a hook, send to a channel
/// (or use a `tokio::runtime::Handle` you captured) instead of calling `tokio::spawn`.
///
/// A hook that panics cannot hurt the engine: the panic is caught around that one call, logged
/// (`tracing::error!` with the projection id and the hook) and counted
/// ([`ProjectionHandle::observer_panics`], [`crate::Stats::observer_panics`]); the event stays
/// applied, its append is acknowledged, the other observers still run, and the engine is not
/// poisoned. The observer itself misses that call: nothing is retried. (Built with
/// `panic = "abort"`, a panic ends the process before anything can catch it.)
pub trait Observer<P: Projection>: Send + Sync + 'static {
    /// Once after open (also when nothing was restored), or at registration when the log is
    /// already open: initialization is done.
    fn restored(&self, state: &P) {
        let _ = state;
    }

    /// An event changed the entity of `event.stream` (look it up in `state`; nothing is
    /// cloned for you).
    fn upserted(&self, state: &P, event: &RecordedEvent<P::Event>) {
        let _ = (state, event);
    }

    /// The entity of `stream` was deleted with its stream (`delete_stream` or
    /// `soft_delete_stream`): `Projection::stream_deleted` dropped it and returned true.
    fn deleted(&self, state: &P, stream: &StreamId) {
        let _ = (state, stream);
    }
}

/// A boxed observer is an observer (a service that picks its observer at run time).
impl<P: Projection> Observer<P> for Box<dyn Observer<P>> {
    fn restored(&self, state: &P) {
        (**self).restored(state);
    }

    fn upserted(&self, state: &P, event: &RecordedEvent<P::Event>) {
        (**self).upserted(state, event);
    }

    fn deleted(&self, state: &P, stream: &StreamId) {
        (**self).deleted(state, stream);
    }
}

/// A shared observer is an observer (one observer registered on several logs).
impl<P: Projection, O: Observer<P> + ?Sized> Observer<P> for Arc<O> {
    fn restored(&self, state: &P) {
        (**self).restored(state);
    }

    fn upserted(&self, state: &P, event: &RecordedEvent<P::Event>) {
        (**self).upserted(state, event);
    }

    fn deleted(&self, state: &P, stream: &StreamId) {
        (**self).deleted(state, stream);
    }
}

struct Cell<P: Projection> {
    id: &'static str,
    /// The version readers get. Readers hold the lock only to clone the `Arc`; the applier
    /// holds it to replace the `Arc`, or to apply one record in place to a version no reader
    /// holds (then no reader can take it meanwhile). Never held across an observer's code.
    published: Mutex<Arc<P>>,
    /// The applier's side: the spare copy. Taken by the syncer (and at open, and by `observe`,
    /// so that no record is published between the state `restored` gets and the
    /// registration), never by `read()`.
    writer: Mutex<Writer<P>>,
    observers: RwLock<Vec<Arc<dyn Observer<P>>>>,
    has_observers: AtomicBool,
    restored: AtomicBool,
    /// The last position applied and published (0 before any).
    applied_position: AtomicU64,
    /// Observer hook calls that panicked (caught; see [`Observer`]).
    observer_panics: AtomicU64,
    /// Clones of the whole state the applier made (see [`ProjectionHandle::state_clones`]).
    clones: AtomicU64,
}

/// Records a spare may lag behind the published version before it is dropped (re-applying
/// more would cost more than it saves; memory is freed unless a reader still holds it).
const SPARE_LAG_RECORDS_MAX: usize = 256;

/// The applier's side of one projection.
struct Writer<P: Projection> {
    /// The last position applied, for the order check.
    position: u64,
    /// An older version (one a reader held when the applier needed it) and the records it
    /// lacks; `None` until a reader held the published version during an apply, and when the
    /// records are not kept (replay) or it lags too far.
    spare: Option<Spare<P>>,
}

struct Spare<P: Projection> {
    state: Arc<P>,
    lag: Vec<Arc<Op<P::Event>>>,
}

/// Locks a mutex; a poisoned one (a projection's `apply` panicked, which stops the syncer) is
/// used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The observer hooks, to name them in logs.
#[derive(Debug, Clone, Copy)]
enum Hook {
    Restored,
    Upserted,
    Deleted,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Restored => "restored",
            Hook::Upserted => "upserted",
            Hook::Deleted => "deleted",
        }
    }
}

impl<P: Projection> Cell<P> {
    /// The version published last.
    fn published(&self) -> Arc<P> {
        lock(&self.published).clone()
    }

    /// Applies one record's change (`change`) and publishes the result; `kept` is the record
    /// when it is kept for the spare (live), `None` at replay. Returns `change`'s result and
    /// the version published. Never waits for a reader: the published version is changed in
    /// place only when no reader holds it, else the spare (when no reader holds it either) or
    /// a clone takes the change, and the version a reader holds becomes the spare.
    fn change<T>(
        &self,
        writer: &mut Writer<P>,
        kept: Option<&Arc<Op<P::Event>>>,
        change: impl FnOnce(&mut P) -> T,
    ) -> (T, Arc<P>) {
        let (outcome, published) = self.change_in_place(writer, kept, true, change);
        match published {
            Some(published) => (outcome, published),
            // Unreachable (asked for), but never a panic: the published version.
            None => (outcome, self.published()),
        }
    }

    /// [`Cell::change`]; the version published is returned only when `want_published` (the
    /// replay, with no hook to call, saves an `Arc` clone and drop per record).
    fn change_in_place<T>(
        &self,
        writer: &mut Writer<P>,
        kept: Option<&Arc<Op<P::Event>>>,
        want_published: bool,
        change: impl FnOnce(&mut P) -> T,
    ) -> (T, Option<Arc<P>>) {
        let mut published = lock(&self.published);
        if let Some(state) = Arc::get_mut(&mut published) {
            // No reader holds it, and none can take it while the lock is held.
            let outcome = change(state);
            let current = want_published.then(|| published.clone());
            drop(published);
            match (kept, &mut writer.spare) {
                (Some(op), Some(spare)) if spare.lag.len() < SPARE_LAG_RECORDS_MAX => {
                    spare.lag.push(op.clone());
                }
                _ => writer.spare = None,
            }
            return (outcome, current);
        }
        // A reader holds the published version: leave it as it is.
        let current = published.clone();
        drop(published);
        // Unique (no reader holds it; none can take it any more: it is not published).
        let free = writer.spare.take().filter(|spare| {
            Arc::strong_count(&spare.state) == 1 && Arc::weak_count(&spare.state) == 0
        });
        let mut next = match free {
            Some(mut spare) => {
                // Unique: `make_mut` does not clone.
                let state = Arc::make_mut(&mut spare.state);
                for op in &spare.lag {
                    op.apply_to(state);
                }
                spare.state
            }
            // Held by a reader too (it keeps it alive; we let go of it), or none yet.
            None => {
                self.clones.fetch_add(1, Ordering::Relaxed);
                Arc::new(P::clone(&current))
            }
        };
        // Unique (the spare checked above, or the fresh clone): `make_mut` does not clone.
        let outcome = change(Arc::make_mut(&mut next));
        *lock(&self.published) = next.clone();
        writer.spare = kept.map(|op| Spare {
            state: current,
            lag: vec![op.clone()],
        });
        (outcome, Some(next))
    }

    /// Whether `upserted` and `deleted` fire: for live records only (replayed ones are summed
    /// up by the one `restored` that follows the replay, so an observer registered before open
    /// sees what one registered after open sees: `restored`, then each new event; found by
    /// tests/projection_hooks.rs), and only when someone observes.
    fn live_hooks(&self) -> bool {
        self.has_observers.load(Ordering::Acquire) && self.restored.load(Ordering::Acquire)
    }

    /// Calls `call` (one hook) on every registered observer, each call isolated (see
    /// [`Cell::isolated`]). The observer list is read-locked here.
    fn notify(&self, state: &P, hook: Hook, call: impl Fn(&dyn Observer<P>)) {
        let observers = self
            .observers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for observer in observers.iter() {
            self.isolated(state, hook, || call(observer.as_ref()));
        }
    }

    /// Runs one observer hook call; a panic in it is caught, logged and counted, and the
    /// engine goes on. Nothing of the engine's state is borrowed mutably across the call (the
    /// state is a published version, the observer list is read-locked, and a read guard is not
    /// poisoned by a panic), so unwinding out of an observer leaves nothing half-done.
    fn isolated(&self, state: &P, hook: Hook, call: impl FnOnce()) {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
            self.observer_panics.fetch_add(1, Ordering::Relaxed);
            let message = panic_message(payload.as_ref());
            tracing::error!(
                projection = state.id(),
                hook = hook.name(),
                panic = %message,
                "an observer panicked; caught, counted in Stats::observer_panics, the engine goes on"
            );
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message), or a stand-in.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic payload that is not a string".to_owned()
    }
}

/// A version of a projection's state, as [`ProjectionHandle::read`] returned it: nobody changes
/// it while this value lives (whole records applied, never half of one). Dereferences to the
/// state; `Send` and `Sync`, so it may be held across an `.await`, also in a spawned task (it
/// never blocks the engine; see [`ProjectionHandle::read`] for what holding it costs). Not
/// `Clone`, so `handle.read().clone()` clones the state itself, as it did before.
pub struct ProjectionRead<P>(Arc<P>);

impl<P> std::ops::Deref for ProjectionRead<P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.0
    }
}

impl<P> AsRef<P> for ProjectionRead<P> {
    fn as_ref(&self) -> &P {
        &self.0
    }
}

impl<P: std::fmt::Debug> std::fmt::Debug for ProjectionRead<P> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl<P> ProjectionRead<P> {
    /// The version as a shared pointer (to keep or hand on; the same cost as keeping `self`).
    pub fn into_arc(self) -> Arc<P> {
        self.0
    }
}

/// A registered projection: query it with [`ProjectionHandle::read`].
pub struct ProjectionHandle<P: Projection> {
    cell: Arc<Cell<P>>,
}

impl<P: Projection> Clone for ProjectionHandle<P> {
    fn clone(&self) -> Self {
        ProjectionHandle {
            cell: self.cell.clone(),
        }
    }
}

impl<P: Projection> std::fmt::Debug for ProjectionHandle<P> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ProjectionHandle")
            .field("id", &self.cell.id)
            .finish()
    }
}

impl<P: Projection> ProjectionHandle<P> {
    /// The durable state: the version published last, as of this call. It holds every
    /// acknowledged append (an append is acknowledged only once its events are applied and
    /// published here: read-your-writes).
    ///
    /// The engine never waits for a reader, so no acknowledgement does: hold the value as long
    /// as you like, across `.await` too (a call waits at most for the one record being applied
    /// in place). The rule that remains: it is a consistent version as of the call and does not
    /// see later appends (call `read()` again for those); while held, that version stays alive
    /// in memory beside the current one, and the engine applies new events to another copy: the
    /// spare when it has one no reader holds, else a clone of the current state, once
    /// ([`ProjectionHandle::state_clones`]). A long-held value costs one extra copy in memory
    /// and at most one clone, never a stalled append.
    pub fn read(&self) -> ProjectionRead<P> {
        ProjectionRead(self.cell.published())
    }

    /// The last position applied to this projection and published to [`ProjectionHandle::read`].
    pub fn applied_position(&self) -> u64 {
        self.cell.applied_position.load(Ordering::Acquire)
    }

    /// How many times the engine cloned this projection's whole state since open to apply an
    /// event without waiting for readers: each time readers held both the published version
    /// and the spare copy (0 when no reader holds a version while events are applied). Not
    /// counted: the clone that seeds the snapshot thread's replica.
    pub fn state_clones(&self) -> u64 {
        self.cell.clones.load(Ordering::Relaxed)
    }

    /// Registers an observer. When the log is already open its `restored` runs now, on the
    /// caller's thread (a panic in it is caught and counted, like on the syncer), with the
    /// version published last; the applier does not publish meanwhile, so the observer then
    /// gets `upserted`/`deleted` for exactly the events after that version.
    pub fn observe(&self, observer: impl Observer<P>) {
        let observer: Arc<dyn Observer<P>> = Arc::new(observer);
        // Holds the applier's side (not the readers'): no record is published, and no hook
        // fires, between the state `restored` gets and the registration.
        let _writer = lock(&self.cell.writer);
        self.cell
            .observers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(observer.clone());
        self.cell.has_observers.store(true, Ordering::Release);
        if self.cell.restored.load(Ordering::Acquire) {
            let state = self.cell.published();
            self.cell
                .isolated(&state, Hook::Restored, || observer.restored(&state));
        }
    }

    /// Observer hook calls of this projection that panicked since open (each caught, logged
    /// and skipped; see [`Observer`]).
    pub fn observer_panics(&self) -> u64 {
        self.cell.observer_panics.load(Ordering::Relaxed)
    }
}

/// A projection with its type erased to the event type: what the engine drives.
pub(crate) trait Runner<E>: Send + Sync {
    fn id(&self) -> &'static str;
    /// Applies one durable record's operation and publishes the result, then fires its hooks
    /// (live). `kept` is the same operation, shared, when it is kept for the spare copy
    /// (live); `None` at replay.
    fn apply(&self, op: &Op<E>, position: u64, kept: Option<&Arc<Op<E>>>);
    /// Applies replayed events (in position order, each after the last applied) under one
    /// lock of the state, and publishes the result. Only before `restored`: no hook fires.
    fn apply_events(&self, events: &[RecordedEvent<E>]);
    /// A durable record at `position` that is nothing of this projection's (an engine-private
    /// record, or one skipped as undecodable): the state is unchanged and now as of `position`.
    fn pass(&self, position: u64);
    fn restored(&self);
    /// Observer hook calls that panicked (caught).
    fn observer_panics(&self) -> u64;
    /// (state version, bytes) for snapshots.
    fn snapshot(&self) -> Result<(u16, Vec<u8>)>;
    /// A copy of the state as it is now, for the snapshot thread to keep up to date.
    fn replica(&self) -> Box<dyn Replica<E>>;
    /// Replaces the state with a snapshot's, as of `position`.
    fn restore(&self, state_version: u16, bytes: &[u8], position: u64) -> Result<()>;
}

impl<P: Projection> Runner<P::Event> for Cell<P> {
    fn id(&self) -> &'static str {
        self.id
    }

    fn apply(&self, op: &Op<P::Event>, position: u64, kept: Option<&Arc<Op<P::Event>>>) {
        let mut writer = lock(&self.writer);
        if let Op::Event(_) = op {
            assert!(
                position > writer.position,
                "events are applied once, in position order"
            );
        }
        // Hooks run with the writer side held: `observe` cannot slip in between (nor between
        // this check and the hooks below).
        let hooks = self.live_hooks();
        let (removed, state) =
            self.change_in_place(&mut writer, kept, hooks, |state| op.apply_to(state));
        writer.position = writer.position.max(position);
        self.applied_position
            .store(writer.position, Ordering::Release);
        let Some(state) = state.filter(|_| hooks) else {
            return;
        };
        match op {
            Op::Event(event) => {
                self.notify(&state, Hook::Upserted, |observer| {
                    observer.upserted(&state, event)
                });
            }
            // Deletions that removed something only.
            Op::Deleted(stream) if removed => {
                self.notify(&state, Hook::Deleted, |observer| {
                    observer.deleted(&state, stream)
                });
            }
            Op::Deleted(_) | Op::Truncated(..) => {}
        }
    }

    fn apply_events(&self, events: &[RecordedEvent<P::Event>]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        let mut writer = lock(&self.writer);
        assert!(
            first.position > writer.position
                && events
                    .windows(2)
                    .all(|pair| pair[0].position < pair[1].position),
            "events are applied once, in position order"
        );
        // Replayed records are summed up by the one `restored` that follows the replay.
        self.change_in_place(&mut writer, None, false, |state| state.apply_all(events));
        writer.position = last.position;
        self.applied_position
            .store(writer.position, Ordering::Release);
    }

    fn pass(&self, position: u64) {
        let mut writer = lock(&self.writer);
        writer.position = writer.position.max(position);
        self.applied_position
            .store(writer.position, Ordering::Release);
    }

    fn restored(&self) {
        let _writer = lock(&self.writer);
        let state = self.published();
        self.restored.store(true, Ordering::Release);
        self.notify(&state, Hook::Restored, |observer| observer.restored(&state));
    }

    fn observer_panics(&self) -> u64 {
        self.observer_panics.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Result<(u16, Vec<u8>)> {
        let state = self.published();
        Ok((state.state_version(), state.snapshot()?))
    }

    fn replica(&self) -> Box<dyn Replica<P::Event>> {
        Box::new(ProjectionReplica(P::clone(&self.published())))
    }

    fn restore(&self, state_version: u16, bytes: &[u8], position: u64) -> Result<()> {
        let mut writer = lock(&self.writer);
        let (restored, _) = self.change(&mut writer, None, |state| {
            state.restore(state_version, bytes)
        });
        restored?;
        writer.position = position;
        self.applied_position.store(position, Ordering::Release);
        Ok(())
    }
}

/// A projection's private copy on the snapshot thread: it gets the events the live one got, in
/// the same order (no hooks fire), and is encoded for snapshots while the live one goes on.
pub(crate) trait Replica<E>: Send {
    fn apply(&mut self, event: &RecordedEvent<E>);
    fn stream_deleted(&mut self, stream: &StreamId);
    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64);
    /// Encodes the state into its snapshot section.
    fn section(&self) -> Result<logbook_compaction::SnapshotSection>;
}

struct ProjectionReplica<P>(P);

impl<P: Projection> Replica<P::Event> for ProjectionReplica<P> {
    fn apply(&mut self, event: &RecordedEvent<P::Event>) {
        self.0.apply(event);
    }

    fn stream_deleted(&mut self, stream: &StreamId) {
        self.0.stream_deleted(stream);
    }

    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) {
        self.0.stream_truncated(stream, before_version);
    }

    fn section(&self) -> Result<logbook_compaction::SnapshotSection> {
        Ok(logbook_compaction::SnapshotSection {
            id: self.0.id().to_owned(),
            version: self.0.state_version(),
            bytes: self.0.snapshot()?,
        })
    }
}

/// Every projection's replica, type-erased to records: what the snapshot thread drives.
pub(crate) trait Replicas: Send {
    /// Applies a record the live projections applied.
    fn apply_record(&mut self, record: &DurableRecord<'_>) -> Result<()>;
    /// Every replica's state, keyed by projection id.
    fn sections(&self) -> Result<Vec<logbook_compaction::SnapshotSection>>;
}

struct TypedReplicas<E> {
    replicas: Vec<Box<dyn Replica<E>>>,
}

impl<E: Event> Replicas for TypedReplicas<E> {
    fn apply_record(&mut self, record: &DurableRecord<'_>) -> Result<()> {
        if self.replicas.is_empty() {
            return Ok(());
        }
        match decode::<E>(record)? {
            Decoded::Op(Op::Event(event)) => {
                self.replicas.iter_mut().for_each(|r| r.apply(&event));
            }
            Decoded::Op(Op::Deleted(stream)) => {
                self.replicas
                    .iter_mut()
                    .for_each(|r| r.stream_deleted(&stream));
            }
            Decoded::Op(Op::Truncated(stream, before)) => {
                self.replicas
                    .iter_mut()
                    .for_each(|r| r.stream_truncated(&stream, before));
            }
            // The live projections skipped it the same way (at replay), or the engine poisoned
            // (live) and no snapshot is taken any more.
            Decoded::Undecodable(_) | Decoded::Skip => {}
        }
        Ok(())
    }

    fn sections(&self) -> Result<Vec<logbook_compaction::SnapshotSection>> {
        self.replicas
            .iter()
            .map(|replica| replica.section())
            .collect()
    }
}

/// What a durable record does to a projection; live, the records a spare copy lacks are kept
/// (re-applied once, to that copy).
pub(crate) enum Op<E> {
    Event(RecordedEvent<E>),
    Deleted(StreamId),
    Truncated(StreamId, u64),
}

impl<E: Event> Op<E> {
    /// Applies it to one copy of a projection; true when a deletion removed something.
    fn apply_to<P: Projection<Event = E>>(&self, state: &mut P) -> bool {
        match self {
            Op::Event(event) => {
                state.apply(event);
                false
            }
            Op::Deleted(stream) => state.stream_deleted(stream),
            Op::Truncated(stream, before_version) => {
                state.stream_truncated(stream, *before_version);
                false
            }
        }
    }
}

/// A durable record, decoded for the projections.
enum Decoded<E> {
    Op(Op<E>),
    /// The projections' event type cannot decode it.
    Undecodable(logbook_projection::Error),
    /// A record of the engine's own reserved streams (a consumer checkpoint, or an engine event
    /// about one): never the projections'.
    Skip,
}

fn decode<E: Event>(record: &DurableRecord<'_>) -> Result<Decoded<E>> {
    if record.engine_private() {
        return Ok(Decoded::Skip);
    }
    if let Some(event) = &record.system {
        if system::is_reserved(event.stream()) {
            // The truncation of a consumer's checkpoint stream: nothing of the projections'.
            return Ok(Decoded::Skip);
        }
        let stream = StreamId::new(event.stream())?;
        // A soft delete drops the entity too (its versions continue, the entity starts over),
        // so `Projection::stream_deleted` and the `deleted` hook run for both deletions.
        let op = if event.drops_entity() {
            Op::Deleted(stream)
        } else {
            Op::Truncated(stream, event.hides().before_version())
        };
        return Ok(Decoded::Op(op));
    }
    Ok(match record.event::<E>() {
        Ok(event) => Decoded::Op(Op::Event(event)),
        Err(error) => Decoded::Undecodable(error),
    })
}

/// The projections a log is opened with. Register each before open; keep the handles.
pub struct Projections<E> {
    pub(crate) runners: Vec<Arc<dyn Runner<E>>>,
}

impl<E> Default for Projections<E> {
    fn default() -> Self {
        Projections {
            runners: Vec::new(),
        }
    }
}

impl<E: Event> Projections<E> {
    /// No projections.
    pub fn new() -> Self {
        Projections::default()
    }

    /// Registers a projection; its id must be unique.
    pub fn register<P: Projection<Event = E>>(&mut self, projection: P) -> ProjectionHandle<P> {
        let id = projection.id();
        assert!(
            self.runners.iter().all(|runner| runner.id() != id),
            "projection id {id} registered twice"
        );
        let cell = Arc::new(Cell {
            id,
            published: Mutex::new(Arc::new(projection)),
            writer: Mutex::new(Writer {
                position: 0,
                spare: None,
            }),
            observers: RwLock::new(Vec::new()),
            has_observers: AtomicBool::new(false),
            restored: AtomicBool::new(false),
            applied_position: AtomicU64::new(0),
            observer_panics: AtomicU64::new(0),
            clones: AtomicU64::new(0),
        });
        self.runners.push(cell.clone());
        ProjectionHandle { cell }
    }

    pub(crate) fn apply(&self, op: &Op<E>, position: u64, kept: Option<&Arc<Op<E>>>) {
        for runner in &self.runners {
            runner.apply(op, position, kept);
        }
    }

    /// A record none of the projections applies: each is now as of `position`.
    pub(crate) fn pass(&self, position: u64) {
        for runner in &self.runners {
            runner.pass(position);
        }
    }

    pub(crate) fn restored(&self) {
        for runner in &self.runners {
            runner.restored();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }
}

/// Decodes durable records once and applies them to every projection; type-erased so the
/// engine's shared state does not depend on the event type.
pub(crate) trait Applier: Send + Sync {
    /// Applies a durable record. Engine events are applied as stream deletions and
    /// truncations. An event the projections' type cannot decode is, with
    /// [`Undecodable::Skip`] (replay), skipped, counted and logged, the same way on every
    /// replay; with [`Undecodable::Fail`] (a record the engine itself just wrote and made
    /// durable) an error: a bug in the event type's decoding, since the bytes came from its own
    /// `encode_payload` and `NewEvent::to_data` decoded them back before they were written.
    fn apply(&self, record: &DurableRecord<'_>, undecodable: Undecodable) -> Result<()>;
    /// The replay's applier (before `restored`): applies records as `apply` does with
    /// [`Undecodable::Skip`], a chunk at a time.
    fn replayer(&self) -> Box<dyn Replayer + '_>;
    /// Fires `restored`; from then on records are kept for the spare copies.
    fn restored(&self);
    fn undecodable(&self) -> u64;
    /// Observer hook calls that panicked (caught), summed over the projections.
    fn observer_panics(&self) -> u64;
    /// A copy of every projection's state, taken between two applied batches, for the
    /// snapshot thread to keep up to date from then on.
    fn replicas(&self) -> Box<dyn Replicas>;
    /// Every projection's state, keyed by projection id.
    fn snapshot_sections(&self) -> Result<Vec<logbook_compaction::SnapshotSection>>;
    /// Restores every projection from a snapshot; all or nothing (on failure each projection
    /// is put back to the state it had before).
    fn restore_sections(&self, snapshot: &logbook_compaction::Snapshot) -> Result<()>;
}

pub(crate) struct TypedApplier<E> {
    pub(crate) projections: Projections<E>,
    undecodable: AtomicU64,
    /// Set by `restored`: the replay is over, records are kept for the spare copies.
    live: AtomicBool,
}

impl<E: Event> TypedApplier<E> {
    pub(crate) fn new(projections: Projections<E>) -> Self {
        TypedApplier {
            projections,
            undecodable: AtomicU64::new(0),
            live: AtomicBool::new(false),
        }
    }

    /// Counts, logs and passes over a record the projections' event type cannot decode (at
    /// replay: the same way on every replay).
    fn skip_undecodable(&self, position: u64, error: &logbook_projection::Error) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(position, %error, "event not decodable by the projections; skipped");
        self.projections.pass(position);
    }
}

impl<E: Event> Applier for TypedApplier<E> {
    fn apply(&self, record: &DurableRecord<'_>, undecodable: Undecodable) -> Result<()> {
        if self.projections.is_empty() {
            return Ok(());
        }
        let position = record.position;
        if record.engine_private() {
            self.projections.pass(position);
            return Ok(());
        }
        let live = self.live.load(Ordering::Acquire);
        match decode::<E>(record)? {
            Decoded::Op(op) if live => {
                let kept = Arc::new(op);
                self.projections.apply(&kept, position, Some(&kept));
            }
            Decoded::Op(op) => self.projections.apply(&op, position, None),
            Decoded::Undecodable(error) if undecodable == Undecodable::Fail => {
                return Err(error.into());
            }
            Decoded::Undecodable(error) => self.skip_undecodable(position, &error),
            Decoded::Skip => self.projections.pass(position),
        }
        Ok(())
    }

    fn replayer(&self) -> Box<dyn Replayer + '_> {
        assert!(
            !self.live.load(Ordering::Acquire),
            "a replay runs before restored"
        );
        Box::new(TypedReplayer {
            applier: self,
            events: Vec::new(),
            held: 0,
            held_payload_bytes: 0,
            previous: 0,
        })
    }

    fn restored(&self) {
        self.live.store(true, Ordering::Release);
        self.projections.restored();
    }

    fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    fn observer_panics(&self) -> u64 {
        self.projections
            .runners
            .iter()
            .map(|runner| runner.observer_panics())
            .sum()
    }

    fn replicas(&self) -> Box<dyn Replicas> {
        Box::new(TypedReplicas {
            replicas: self
                .projections
                .runners
                .iter()
                .map(|runner| runner.replica())
                .collect(),
        })
    }

    fn snapshot_sections(&self) -> Result<Vec<logbook_compaction::SnapshotSection>> {
        self.projections
            .runners
            .iter()
            .map(|runner| {
                let (version, bytes) = runner.snapshot()?;
                Ok(logbook_compaction::SnapshotSection {
                    id: runner.id().to_owned(),
                    version,
                    bytes,
                })
            })
            .collect()
    }

    fn restore_sections(&self, snapshot: &logbook_compaction::Snapshot) -> Result<()> {
        let before = self.snapshot_sections()?;
        let mut outcome = Ok(());
        for runner in &self.projections.runners {
            let Some(section) = snapshot.section(runner.id()) else {
                outcome = Err(crate::Error::Snapshot(format!(
                    "no section for projection {}",
                    runner.id()
                )));
                break;
            };
            if let Err(error) = runner.restore(section.version, &section.bytes, snapshot.position) {
                outcome = Err(error);
                break;
            }
        }
        if outcome.is_err() {
            for (runner, section) in self.projections.runners.iter().zip(&before) {
                runner.restore(section.version, &section.bytes, 0)?;
            }
        }
        outcome
    }
}

/// Records a replay decodes before it applies them, each projection taking the whole chunk
/// under one lock of its state (instead of two lock pairs per record and projection). A
/// reader's `read()` during the replay waits at most for one chunk's applies.
pub(crate) const REPLAY_CHUNK_RECORDS: usize = 256;

/// Payload bytes of the records a replay chunk holds before it is applied: with
/// [`REPLAY_CHUNK_RECORDS`], what bounds the decoded events held at once (large events make
/// short chunks).
pub(crate) const REPLAY_CHUNK_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// Applies a replay's durable records to the projections, a chunk at a time: what
/// [`Applier::replayer`] returns. Records come in position order, each once; call
/// [`Replayer::flush`] after the last one (the records held are applied only then).
pub(crate) trait Replayer {
    /// Applies a durable record as [`Applier::apply`] with [`Undecodable::Skip`] does, or
    /// holds it decoded in the current chunk.
    /// `stream`, when given, is the record's stream id as the catalog holds it (an `Arc` the
    /// decoded event shares instead of allocating its own).
    fn apply(&mut self, record: &DurableRecord<'_>, stream: Option<&StreamId>) -> Result<()>;
    /// Applies the records held.
    fn flush(&mut self);
}

struct TypedReplayer<'a, E> {
    applier: &'a TypedApplier<E>,
    /// The chunk: its first `held` events are decoded and not yet applied; every slot is
    /// decoded into again by a later chunk ([`RecordedEvent::decode_into`]), so the replay
    /// allocates only what the decoded payloads need.
    events: Vec<RecordedEvent<E>>,
    held: usize,
    held_payload_bytes: usize,
    /// The slot decoded last (in this chunk or the one before).
    previous: usize,
}

impl<E: Event> TypedReplayer<'_, E> {
    /// Gives the next slot `stream`, the catalog's id of the record's stream (an `Arc` clone,
    /// none when the slot has that very id already): a replay of interleaved streams then
    /// allocates no stream id per record.
    fn take_stream_id(&mut self, stream: &StreamId) {
        if let Some(slot) = self.events.get_mut(self.held)
            && !slot.stream.same_id(stream)
        {
            slot.stream = stream.clone();
        }
    }

    /// Gives the next slot the stream id of the event decoded last when `stream` is its
    /// stream (a shared `Arc`): a run of one stream's events allocates its id once, not once
    /// per slot.
    fn share_stream_id(&mut self, stream: &str) {
        let differs = self
            .events
            .get(self.held)
            .is_some_and(|slot| slot.stream != *stream);
        let Some(previous) = self
            .events
            .get(self.previous)
            .filter(|previous| differs && previous.stream == *stream)
            .map(|previous| previous.stream.clone())
        else {
            return;
        };
        if let Some(slot) = self.events.get_mut(self.held) {
            slot.stream = previous;
        }
    }
}

impl<E: Event> Replayer for TypedReplayer<'_, E> {
    fn apply(&mut self, record: &DurableRecord<'_>, stream: Option<&StreamId>) -> Result<()> {
        if self.applier.projections.is_empty() {
            return Ok(());
        }
        if record.system.is_some() || record.engine_private() {
            // Deletions, truncations and passes apply in position order, after the chunk.
            self.flush();
            return self.applier.apply(record, Undecodable::Skip);
        }
        let position = record.position;
        match stream {
            Some(stream) => self.take_stream_id(stream),
            None => self.share_stream_id(record.envelope.stream),
        }
        let decoded = match self.events.get_mut(self.held) {
            Some(slot) => slot.decode_into(position, &record.envelope),
            None => RecordedEvent::from_envelope_ref(position, &record.envelope)
                .map(|event| self.events.push(event)),
        };
        match decoded {
            Ok(()) => {
                self.previous = self.held;
                self.held += 1;
                self.held_payload_bytes += record.envelope.payload.len();
                if self.held >= REPLAY_CHUNK_RECORDS
                    || self.held_payload_bytes >= REPLAY_CHUNK_PAYLOAD_BYTES_MAX
                {
                    self.flush();
                }
            }
            Err(error) => {
                self.flush();
                self.applier.skip_undecodable(position, &error);
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        let events = self.events.get(..self.held).unwrap_or_default();
        for runner in &self.applier.projections.runners {
            runner.apply_events(events);
        }
        self.held = 0;
        self.held_payload_bytes = 0;
    }
}
