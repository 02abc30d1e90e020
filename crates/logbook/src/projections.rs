//! Projections in the engine: registration, replay, applying durable events, and hooks.
//!
//! Owns: the registry of projections a log was opened with, the handles services query them
//! through, the observers (`restored`, `upserted`, `deleted`), and the replicas the snapshot
//! thread keeps (a private copy of each projection that follows the applied events, so a
//! snapshot is encoded from it and never from the live state). Must never: apply an event that
//! is not durable, apply one twice, skip on the live path an event the engine itself wrote
//! (that is an error: the engine poisons), or clone state for anything but seeding the replicas
//! (once per process, at its first snapshot): hooks get a reference to the state and the
//! event, and nothing is built at all when no observer is registered. An observer that panics
//! is isolated: the panic is caught around that one hook call, logged and counted
//! ([`ProjectionHandle::observer_panics`], `Stats::observer_panics`), and the engine goes on;
//! it never poisons the engine nor fails an append (the event was durable and applied).

use crate::error::Result;
use logbook_projection::{Event, Projection, RecordedEvent, StreamId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// Callbacks on a projection's durable state. They run on the engine's syncer thread, in
/// position order, while the state is read-locked: keep them short (hand work to a channel).
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

    /// The entity of `stream` was deleted with its stream.
    fn deleted(&self, state: &P, stream: &StreamId) {
        let _ = (state, stream);
    }
}

struct Cell<P: Projection> {
    state: RwLock<P>,
    observers: RwLock<Vec<Arc<dyn Observer<P>>>>,
    has_observers: AtomicBool,
    restored: AtomicBool,
    /// The last position applied (0 before any).
    applied_position: AtomicU64,
    /// Observer hook calls that panicked (caught; see [`Observer`]).
    observer_panics: AtomicU64,
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
    /// Calls `call` (one hook) on every registered observer, each call isolated (see
    /// [`Cell::isolated`]). The observer list is read-locked here, the state by the caller.
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
    /// state and the observer list are read-locked, and a read guard is not poisoned by a
    /// panic), so unwinding out of an observer leaves nothing half-done.
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
            .field("id", &self.read().id())
            .finish()
    }
}

impl<P: Projection> ProjectionHandle<P> {
    /// The durable state, read-locked. Hold the guard briefly: the engine waits for it to
    /// apply new events.
    pub fn read(&self) -> RwLockReadGuard<'_, P> {
        self.cell
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last position applied to this projection.
    pub fn applied_position(&self) -> u64 {
        self.cell.applied_position.load(Ordering::Acquire)
    }

    /// Registers an observer. When the log is already open its `restored` runs now, on the
    /// caller's thread (a panic in it is caught and counted, like on the syncer).
    pub fn observe(&self, observer: impl Observer<P>) {
        let observer: Arc<dyn Observer<P>> = Arc::new(observer);
        let state = self.read();
        self.cell
            .observers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(observer.clone());
        self.cell.has_observers.store(true, Ordering::Release);
        if self.cell.restored.load(Ordering::Acquire) {
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
    fn apply(&self, event: &RecordedEvent<E>);
    fn stream_deleted(&self, stream: &StreamId, position: u64);
    fn stream_truncated(&self, stream: &StreamId, before_version: u64, position: u64);
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
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .id()
    }

    fn apply(&self, event: &RecordedEvent<P::Event>) {
        let previous = self.applied_position.load(Ordering::Acquire);
        assert!(
            event.position > previous,
            "events are applied once, in position order"
        );
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .apply(event);
        self.applied_position
            .store(event.position, Ordering::Release);
        // Hooks fire for live events only: the replay at open is summed up by the one
        // `restored` that follows it, so an observer registered before open sees what one
        // registered after open sees (`restored`, then each new event), not one `upserted` per
        // replayed event. (Found by tests/projection_hooks.rs.)
        if self.has_observers.load(Ordering::Acquire) && self.restored.load(Ordering::Acquire) {
            let state = self
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.notify(&state, Hook::Upserted, |observer| {
                observer.upserted(&state, event)
            });
        }
    }

    fn stream_deleted(&self, stream: &StreamId, position: u64) {
        let removed = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .stream_deleted(stream);
        self.applied_position.fetch_max(position, Ordering::AcqRel);
        // Live deletions only, like `upserted` (see `apply`).
        if removed
            && self.has_observers.load(Ordering::Acquire)
            && self.restored.load(Ordering::Acquire)
        {
            let state = self
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.notify(&state, Hook::Deleted, |observer| {
                observer.deleted(&state, stream)
            });
        }
    }

    fn stream_truncated(&self, stream: &StreamId, before_version: u64, position: u64) {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .stream_truncated(stream, before_version);
        self.applied_position.fetch_max(position, Ordering::AcqRel);
    }

    fn restored(&self) {
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.restored.store(true, Ordering::Release);
        self.notify(&state, Hook::Restored, |observer| observer.restored(&state));
    }

    fn observer_panics(&self) -> u64 {
        self.observer_panics.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Result<(u16, Vec<u8>)> {
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok((state.state_version(), state.snapshot()?))
    }

    fn replica(&self) -> Box<dyn Replica<P::Event>> {
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Box::new(ProjectionReplica(P::clone(&state)))
    }

    fn restore(&self, state_version: u16, bytes: &[u8], position: u64) -> Result<()> {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.restore(state_version, bytes)?;
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
    /// Applies a record the live projections applied (envelope bytes).
    fn apply_record(&mut self, position: u64, bytes: &[u8]) -> Result<()>;
    /// Every replica's state, keyed by projection id.
    fn sections(&self) -> Result<Vec<logbook_compaction::SnapshotSection>>;
}

struct TypedReplicas<E> {
    replicas: Vec<Box<dyn Replica<E>>>,
}

impl<E: Event> Replicas for TypedReplicas<E> {
    fn apply_record(&mut self, position: u64, bytes: &[u8]) -> Result<()> {
        if self.replicas.is_empty() {
            return Ok(());
        }
        match decode::<E>(position, bytes)? {
            Decoded::Event(event) => self.replicas.iter_mut().for_each(|r| r.apply(&event)),
            Decoded::Deleted(stream) => {
                self.replicas
                    .iter_mut()
                    .for_each(|r| r.stream_deleted(&stream));
            }
            Decoded::Truncated(stream, before) => {
                self.replicas
                    .iter_mut()
                    .for_each(|r| r.stream_truncated(&stream, before));
            }
            // The live projections skipped it the same way (at replay), or the engine poisoned
            // (live) and no snapshot is taken any more.
            Decoded::Undecodable(_) => {}
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

/// A durable record, decoded for the projections.
enum Decoded<E> {
    Event(RecordedEvent<E>),
    Deleted(StreamId),
    Truncated(StreamId, u64),
    /// The projections' event type cannot decode it.
    Undecodable(logbook_projection::Error),
}

fn decode<E: Event>(position: u64, bytes: &[u8]) -> Result<Decoded<E>> {
    let raw = logbook_projection::RawEvent::decode_record(position, bytes).map_err(|error| {
        crate::Error::Corrupted {
            position,
            reason: error.to_string(),
        }
    })?;
    if raw.envelope.stream().as_str() == crate::system::SYSTEM_STREAM {
        return Ok(
            match crate::system::SystemEvent::decode(raw.envelope.payload())? {
                crate::system::SystemEvent::StreamDeleted { stream } => {
                    Decoded::Deleted(StreamId::new(stream)?)
                }
                crate::system::SystemEvent::StreamTruncated {
                    stream,
                    before_version,
                } => Decoded::Truncated(StreamId::new(stream)?, before_version),
            },
        );
    }
    Ok(match raw.decode::<E>() {
        Ok(event) => Decoded::Event(event),
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
            state: RwLock::new(projection),
            observers: RwLock::new(Vec::new()),
            has_observers: AtomicBool::new(false),
            restored: AtomicBool::new(false),
            applied_position: AtomicU64::new(0),
            observer_panics: AtomicU64::new(0),
        });
        self.runners.push(cell.clone());
        ProjectionHandle { cell }
    }

    pub(crate) fn apply(&self, event: &RecordedEvent<E>) {
        for runner in &self.runners {
            runner.apply(event);
        }
    }

    pub(crate) fn stream_deleted(&self, stream: &StreamId, position: u64) {
        for runner in &self.runners {
            runner.stream_deleted(stream, position);
        }
    }

    pub(crate) fn stream_truncated(&self, stream: &StreamId, before_version: u64, position: u64) {
        for runner in &self.runners {
            runner.stream_truncated(stream, before_version, position);
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
    /// Applies the record at `position` (envelope bytes). Engine events are applied as
    /// stream deletions and truncations; an event the projections' type cannot decode is skipped, counted and
    /// logged, the same way on every replay.
    fn apply_record(&self, position: u64, bytes: &[u8]) -> Result<()>;
    /// [`Applier::apply_record`] for a record the engine itself just wrote and made durable:
    /// an event the projections' type cannot decode is an error (a bug in the event type's
    /// encoding: the bytes came from its own `encode_payload`), not a skip.
    fn apply_durable(&self, position: u64, bytes: &[u8]) -> Result<()>;
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
}

impl<E: Event> TypedApplier<E> {
    pub(crate) fn new(projections: Projections<E>) -> Self {
        TypedApplier {
            projections,
            undecodable: AtomicU64::new(0),
        }
    }
}

/// What to do with an event the projections' type cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undecodable {
    /// Replay: skip it, count it, log it (the same way on every replay).
    Skip,
    /// Live: fail (the engine wrote these bytes itself).
    Fail,
}

impl<E: Event> TypedApplier<E> {
    fn apply(&self, position: u64, bytes: &[u8], undecodable: Undecodable) -> Result<()> {
        if self.projections.is_empty() {
            return Ok(());
        }
        match decode::<E>(position, bytes)? {
            Decoded::Event(event) => self.projections.apply(&event),
            Decoded::Deleted(stream) => self.projections.stream_deleted(&stream, position),
            Decoded::Truncated(stream, before_version) => {
                self.projections
                    .stream_truncated(&stream, before_version, position);
            }
            Decoded::Undecodable(error) if undecodable == Undecodable::Fail => {
                return Err(error.into());
            }
            Decoded::Undecodable(error) => {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(position, %error, "event not decodable by the projections; skipped");
            }
        }
        Ok(())
    }
}

impl<E: Event> Applier for TypedApplier<E> {
    fn apply_record(&self, position: u64, bytes: &[u8]) -> Result<()> {
        self.apply(position, bytes, Undecodable::Skip)
    }

    fn apply_durable(&self, position: u64, bytes: &[u8]) -> Result<()> {
        self.apply(position, bytes, Undecodable::Fail)
    }

    fn restored(&self) {
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
