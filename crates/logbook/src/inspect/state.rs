//! The built-in projections rebuilt read-only, and room history read from the log.
//!
//! Owns: [`BuiltinState`], the run ledger, rooms, jobs and room edits replayed through the
//! engine's own applier (the same decoding, tombstones and skipping of undecodable events as a
//! writer's open), and [`Inspector::room_history`]. Must never: hold more than one page of
//! message bodies.

use super::{EventFilter, Inspector, Progress};
use crate::apply::DurableRecord;
use crate::builtin::{HISTORY_LIMIT_MAX, HistoryPage, Message, RoomEdits};
use crate::engine::{SnapshotReport, start_from_snapshot};
use crate::error::{Error, Result};
use crate::projections::{Applier, Projections, TypedApplier};
use crate::system::{self, Hidden, SystemEvent};
use logbook_compaction::SnapshotStore;
use logbook_projection::model::RoomMessagePosted;
use logbook_projection::projections::{Interrupted, interrupted};
use logbook_projection::{BuiltinEvent, Jobs, RawEvent, Rooms, RunLedger, StreamId};
use std::collections::{HashMap, HashSet, VecDeque};

/// The built-in projections as of the last durable position.
#[derive(Debug, Clone)]
pub struct BuiltinState {
    /// Runs and workflows.
    pub runs: RunLedger,
    /// Rooms.
    pub rooms: Rooms,
    /// Jobs.
    pub jobs: Jobs,
    /// Edited and deleted room messages.
    pub edits: RoomEdits,
    /// The last position replayed.
    pub position: u64,
    /// The snapshot the projections were restored from, and the ones rejected (as a writer's
    /// open would); `used: None` means a replay of the whole log.
    pub snapshot: SnapshotReport,
    /// Events replayed after the snapshot (engine events included).
    pub events: u64,
    /// Events the built-in model could not decode (skipped, as a writer's open skips them).
    pub undecodable: u64,
    /// The corruption the replay stopped before: the state is as of `position`, the last event
    /// before it, and leaves out everything after it. `None`: the whole log was replayed.
    pub damage: Option<logbook_wal::Damage>,
}

impl BuiltinState {
    /// Everything running or claimed without a terminal event.
    pub fn interrupted(&self) -> Interrupted {
        interrupted(&self.runs, &self.jobs)
    }
}

impl Inspector {
    /// Rebuilds the built-in projections as a writer's open would: the newest usable snapshot,
    /// then the log after it (the whole log when there is none). Reads only. On a damaged log
    /// it stops before the damage and says so in [`BuiltinState::damage`]: the state is then
    /// the one as of the last intact event before it (never one that skips an event).
    pub fn replay_builtin(&self, progress: &dyn Progress) -> Result<BuiltinState> {
        replay_builtin_with(|applier| {
            let store = SnapshotStore::new(self.storage.clone(), &self.dir);
            let ((_, start), snapshot) =
                start_from_snapshot(&store, self.wal.durable_position(), applier);
            let last = self.last_position();
            progress.start("replay", last.saturating_sub(start));
            let mut events = 0u64;
            let mut position = start;
            let mut reader = self.wal.read_from(start + 1);
            let mut replayer = applier.replayer();
            while reader.next_position() <= last {
                let Some(record) = reader.next() else {
                    break;
                };
                let record = record?;
                if record.position > last {
                    break;
                }
                let durable = DurableRecord::decode(record.position, &record.payload)?;
                replayer.apply(&durable, None)?;
                progress.advance(record.position - position);
                position = record.position;
                events += 1;
            }
            replayer.flush();
            progress.finish();
            Ok(Replayed {
                position,
                snapshot,
                events,
                damage: self.damage().cloned(),
            })
        })
    }

    /// A page of a room's messages, newest first, with versions below `before` (all when
    /// `None`), edits and deletions applied; `next` is the `before` of the following page.
    /// Reads the whole log once; keeps one page of messages.
    pub fn room_history(
        &self,
        room_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let stream = StreamId::room(room_id)?;
        let limit = limit.clamp(1, HISTORY_LIMIT_MAX);
        let before = before.unwrap_or(u64::MAX);
        let mut page = RoomScan::default();
        // Up to the last position known: on a damaged log, the page as of the damage (the
        // caller sees `Inspector::damage`).
        let filter = EventFilter {
            to: Some(self.last_position()),
            ..EventFilter::default()
        };
        for raw in self.events(&filter) {
            page.feed(&stream, &raw?, before, limit)?;
        }
        page.finish(&stream, limit)
    }
}

/// What a replay through [`replay_builtin_with`]'s applier reached.
pub(super) struct Replayed {
    /// The last position applied.
    pub(super) position: u64,
    /// The snapshot the replay started from.
    pub(super) snapshot: SnapshotReport,
    /// Events applied after the snapshot.
    pub(super) events: u64,
    /// The damage the replay stopped before.
    pub(super) damage: Option<logbook_wal::Damage>,
}

/// The built-in projections, registered as a `BuiltinLog` registers them, fed by `replay`
/// (which restores a snapshot into the applier and applies what follows it).
pub(super) fn replay_builtin_with(
    replay: impl FnOnce(&dyn Applier) -> Result<Replayed>,
) -> Result<BuiltinState> {
    let mut projections = Projections::<BuiltinEvent>::new();
    // The order a `BuiltinLog` registers them in.
    let runs = projections.register(RunLedger::new());
    let rooms = projections.register(Rooms::new());
    let jobs = projections.register(Jobs::new());
    let edits = projections.register(RoomEdits::default());
    let applier = TypedApplier::new(projections);
    let replayed = replay(&applier)?;
    let runs = runs.read().clone();
    let rooms = rooms.read().clone();
    let jobs = jobs.read().clone();
    let edits = edits.read().clone();
    Ok(BuiltinState {
        runs,
        rooms,
        jobs,
        edits,
        position: replayed.position,
        snapshot: replayed.snapshot,
        events: replayed.events,
        undecodable: applier.undecodable(),
        damage: replayed.damage,
    })
}

/// The state of one room scan.
#[derive(Debug, Default)]
pub(super) struct RoomScan {
    deleted: bool,
    truncated_before: u64,
    /// The newest posts seen, at most one page plus one (to know whether more exist).
    posts: VecDeque<Message>,
    /// Per message id in `posts`, the latest edit: (version, body).
    edits: HashMap<String, (u64, String)>,
    /// Message ids in `posts` that were deleted.
    deletions: HashSet<String>,
}

impl RoomScan {
    /// Takes the next event of the log (in position order) into the page of `stream`.
    pub(super) fn feed(
        &mut self,
        stream: &StreamId,
        raw: &RawEvent,
        before: u64,
        limit: usize,
    ) -> Result<()> {
        let envelope = raw.envelope.stream().as_str();
        if envelope == system::SYSTEM_STREAM {
            let event =
                SystemEvent::decode_record(raw.envelope.event_type(), raw.envelope.payload())
                    .map_err(|reason| Error::Corrupted {
                        position: raw.position,
                        reason,
                    })?;
            self.system(stream, &event);
            return Ok(());
        }
        if envelope != stream.as_str() {
            return Ok(());
        }
        // An undecodable event is skipped, as the projections skip it.
        if let Ok(event) = raw.decode::<BuiltinEvent>() {
            self.event(event, before, limit);
        }
        Ok(())
    }

    fn system(&mut self, stream: &StreamId, event: &SystemEvent) {
        if event.stream() != stream.as_str() {
            return;
        }
        match event.hides() {
            Hidden::All => self.deleted = true,
            // A soft delete hides every version before it: the room's earlier history is
            // gone from reads, its later messages are shown.
            Hidden::Below(before_version) => {
                self.truncated_before = self.truncated_before.max(before_version);
            }
        }
    }

    fn event(
        &mut self,
        event: logbook_projection::RecordedEvent<BuiltinEvent>,
        before: u64,
        limit: usize,
    ) {
        match event.event {
            BuiltinEvent::RoomMessagePosted(RoomMessagePosted {
                message_id,
                author,
                body,
            }) if event.version < before => {
                self.posts.push_back(Message {
                    version: event.version,
                    position: event.position,
                    timestamp_ms: event.timestamp_ms,
                    message_id,
                    author,
                    body,
                    edited: false,
                    deleted: false,
                });
                if self.posts.len() > limit + 1
                    && let Some(evicted) = self.posts.pop_front()
                {
                    self.edits.remove(&evicted.message_id);
                    self.deletions.remove(&evicted.message_id);
                }
            }
            BuiltinEvent::RoomMessageEdited(edit) if self.in_page(&edit.message_id) => {
                self.edits
                    .insert(edit.message_id, (event.version, edit.body));
            }
            BuiltinEvent::RoomMessageDeleted(deleted) if self.in_page(&deleted.message_id) => {
                self.deletions.insert(deleted.message_id);
            }
            _ => {}
        }
    }

    fn in_page(&self, message_id: &str) -> bool {
        self.posts
            .iter()
            .any(|message| message.message_id == message_id)
    }

    pub(super) fn finish(mut self, stream: &StreamId, limit: usize) -> Result<HistoryPage> {
        if self.deleted {
            return Err(Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        let visible = self.truncated_before;
        self.posts.retain(|message| message.version >= visible);
        let more = self.posts.len() > limit;
        if more {
            self.posts.pop_front();
        }
        let mut messages: Vec<Message> = self.posts.into_iter().rev().collect();
        for message in &mut messages {
            if self.deletions.contains(&message.message_id) {
                message.deleted = true;
                message.body.clear();
            }
            if let Some((version, body)) = self.edits.get(&message.message_id) {
                message.edited = true;
                if !message.deleted && *version >= visible {
                    message.body.clone_from(body);
                }
            }
        }
        let next = if more {
            messages.last().map(|message| message.version)
        } else {
            None
        };
        Ok(HistoryPage { messages, next })
    }
}
