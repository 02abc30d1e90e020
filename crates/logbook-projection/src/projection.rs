//! Projections: in-memory state rebuilt from the log, one event at a time.
//!
//! Owns: the [`Projection`] trait the engine drives (replay on open, then every durable event),
//! and the paging types the built-in projections' queries share.
//! Never: does I/O, reads a clock or anything else outside the event it is given: `apply` is a
//! pure function of the state and the event, so a replay after a restart rebuilds exactly the
//! state the live process had.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, Result};
use crate::event::{Event, RecordedEvent};
use crate::stream::StreamId;

/// The largest snapshot [`restore_state`] reads, in bytes.
pub const SNAPSHOT_BYTES_MAX: usize = codec::DECODE_INPUT_BYTES_MAX;
/// The most items one page of a query returns.
pub const PAGE_LIMIT_MAX: usize = 1000;

/// State derived from events, rebuilt by replaying the log.
///
/// The engine applies every event in position order, exactly once, after it is durable; on open
/// it restores the latest snapshot (if its `state_version` matches) and replays the rest.
///
/// `Clone` is how snapshots stay off the append path: at its first snapshot the engine clones
/// the state once (between two applied batches) into a replica that its snapshot thread keeps
/// up to date with the same events and encodes ([`Projection::snapshot`]) while the original
/// goes on. Nothing else clones it. `apply` being a pure function of the state and the event is
/// what keeps the replica equal to the original.
pub trait Projection: Clone + Send + Sync + 'static {
    /// The event type the projection reads.
    type Event: Event;

    /// A stable id, e.g. `"builtin.runs"`; used as the snapshot key.
    fn id(&self) -> &'static str;

    /// The schema version of the serialized state.
    fn state_version(&self) -> u16;

    /// Applies one event: deterministic, no I/O, never fails. An event the state cannot accept
    /// (e.g. written by another tool without validation) is ignored, the same way every time.
    fn apply(&mut self, event: &RecordedEvent<Self::Event>);

    /// Applies `events` in order, leaving exactly the state that [`Projection::apply`] on each
    /// in turn leaves (which is what this default does). The engine's replay hands the
    /// projections a chunk of records at a time through here; a projection may override it to
    /// share work between consecutive events, say one lookup for a run of one entity's events.
    fn apply_all(&mut self, events: &[RecordedEvent<Self::Event>]) {
        for event in events {
            self.apply(event);
        }
    }

    /// Serializes the state (through [`crate::codec`]).
    fn snapshot(&self) -> Result<Vec<u8>>;

    /// Replaces the state with a snapshot taken at `state_version`.
    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> Result<()>;

    /// The stream was deleted (`delete_stream`, a permanent tombstone, or
    /// `soft_delete_stream`, whose versions continue): drop **everything** the state derived
    /// from that stream's events, the entity and every byte copied out of them. Returns true
    /// when something was dropped (the engine then fires the observers' `deleted` hook).
    /// Deterministic, like `apply`.
    ///
    /// Required, with no default: the engine's purge promise (`Logbook::compact`: purged bytes
    /// exist in no file) holds only if no snapshot keeps them, and snapshots are encoded from
    /// this state. A projection that keeps nothing per stream returns false.
    ///
    /// ```compile_fail
    /// // Leaving `stream_deleted` (or `stream_truncated`) out does not compile.
    /// use logbook_projection::{Projection, RecordedEvent, BuiltinEvent, Result};
    /// #[derive(Clone)]
    /// struct Forgets;
    /// impl Projection for Forgets {
    ///     type Event = BuiltinEvent;
    ///     fn id(&self) -> &'static str { "forgets" }
    ///     fn state_version(&self) -> u16 { 1 }
    ///     fn apply(&mut self, _: &RecordedEvent<BuiltinEvent>) {}
    ///     fn snapshot(&self) -> Result<Vec<u8>> { Ok(Vec::new()) }
    ///     fn restore(&mut self, _: u16, _: &[u8]) -> Result<()> { Ok(()) }
    /// }
    /// ```
    fn stream_deleted(&mut self, stream: &StreamId) -> bool;

    /// The stream's events below `before_version` were hidden (`truncate_stream`, a session
    /// reset) and compaction will purge them: drop whatever the state copied out of them
    /// (message bodies, ids), so no snapshot keeps purged bytes. Counters and identity may
    /// stay. Returns true when something was dropped. Deterministic, like `apply`.
    ///
    /// Required, with no default, for the same reason as [`Projection::stream_deleted`]. A
    /// projection that copies no bytes out of events returns false.
    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) -> bool;
}

/// Encodes a projection state for [`Projection::snapshot`].
pub fn snapshot_state<S: Serialize>(state: &S) -> Result<Vec<u8>> {
    codec::encode(state)
}

/// Decodes a projection state for [`Projection::restore`], refusing other state versions.
pub fn restore_state<S: DeserializeOwned>(
    projection: &'static str,
    expected_version: u16,
    state_version: u16,
    bytes: &[u8],
) -> Result<S> {
    if state_version != expected_version {
        return Err(Error::UnsupportedStateVersion {
            projection,
            state_version,
        });
    }
    codec::decode(bytes, SNAPSHOT_BYTES_MAX)
}

/// Which end of a list comes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (creation position ascending).
    #[default]
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

/// A page request: at most `limit` items (capped at [`PAGE_LIMIT_MAX`]) after the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Where the previous page stopped ([`Page::next`]); `None` for the first page.
    pub after: Option<u64>,
    /// The most items to return.
    pub limit: usize,
    /// The order.
    pub order: Order,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            after: None,
            limit: 100,
            order: Order::OldestFirst,
        }
    }
}

impl PageRequest {
    /// The first page of `limit` items, oldest first.
    pub fn first(limit: usize) -> Self {
        PageRequest {
            limit,
            ..PageRequest::default()
        }
    }
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in the requested order.
    pub items: Vec<T>,
    /// The cursor of the next page, `None` when this page is the last.
    pub next: Option<u64>,
}

/// Pages over `(key, item)` pairs already sorted by key ascending, keeping those `keep` accepts.
pub(crate) fn paginate<T>(
    entries: impl DoubleEndedIterator<Item = (u64, T)>,
    request: &PageRequest,
    keep: impl FnMut(&T) -> bool,
) -> Page<T> {
    match request.order {
        Order::OldestFirst => take_page(entries, request, keep),
        Order::NewestFirst => take_page(entries.rev(), request, keep),
    }
}

fn take_page<T>(
    entries: impl Iterator<Item = (u64, T)>,
    request: &PageRequest,
    mut keep: impl FnMut(&T) -> bool,
) -> Page<T> {
    let limit = request.limit.clamp(1, PAGE_LIMIT_MAX);
    let past_cursor = |key: u64| match (request.after, request.order) {
        (None, _) => true,
        (Some(cursor), Order::OldestFirst) => key > cursor,
        (Some(cursor), Order::NewestFirst) => key < cursor,
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for (key, item) in entries.filter(|(key, _)| past_cursor(*key)) {
        if !keep(&item) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        last_key = Some(key);
        items.push(item);
    }
    let next = if more { last_key } else { None };
    Page { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(page: &Page<u64>) -> Vec<u64> {
        page.items.clone()
    }

    #[test]
    fn pages_forward_and_backward_with_a_filter() {
        let entries = || (1..=10u64).map(|key| (key, key));
        let even = |item: &u64| item.is_multiple_of(2);
        let first = paginate(entries(), &PageRequest::first(2), even);
        assert_eq!(keys(&first), vec![2, 4]);
        assert_eq!(first.next, Some(4));
        let second = paginate(
            entries(),
            &PageRequest {
                after: first.next,
                ..first_req(2)
            },
            even,
        );
        assert_eq!(keys(&second), vec![6, 8]);
        let third = paginate(
            entries(),
            &PageRequest {
                after: second.next,
                ..first_req(2)
            },
            even,
        );
        assert_eq!(keys(&third), vec![10]);
        assert_eq!(third.next, None);

        let newest = PageRequest {
            order: Order::NewestFirst,
            ..first_req(3)
        };
        let page = paginate(entries(), &newest, |_| true);
        assert_eq!(keys(&page), vec![10, 9, 8]);
        let page = paginate(
            entries(),
            &PageRequest {
                after: page.next,
                ..newest
            },
            |_| true,
        );
        assert_eq!(keys(&page), vec![7, 6, 5]);
    }

    #[test]
    fn limits_are_clamped() {
        let entries = (1..=2000u64).map(|key| (key, key));
        let page = paginate(entries, &PageRequest::first(usize::MAX), |_| true);
        assert_eq!(page.items.len(), PAGE_LIMIT_MAX);
        let page = paginate(
            (1..=3u64).map(|key| (key, key)),
            &PageRequest::first(0),
            |_| true,
        );
        assert_eq!(page.items.len(), 1);
    }

    #[test]
    fn restore_refuses_other_versions() {
        let bytes = snapshot_state(&(1u8, "x")).unwrap();
        let error = restore_state::<(u8, String)>("p", 2, 1, &bytes).unwrap_err();
        assert!(matches!(
            error,
            Error::UnsupportedStateVersion {
                state_version: 1,
                ..
            }
        ));
        assert_eq!(
            restore_state::<(u8, String)>("p", 1, 1, &bytes).unwrap(),
            (1, "x".into())
        );
    }

    fn first_req(limit: usize) -> PageRequest {
        PageRequest::first(limit)
    }
}
