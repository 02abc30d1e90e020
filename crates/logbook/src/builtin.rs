//! The built-in model as a service embeds it: runs, workflows, rooms and jobs.
//!
//! Owns: [`BuiltinLog`], which opens a [`Logbook`] of [`BuiltinEvent`]s with the built-in
//! projections (and any of the service's own), validates commands against durable state before
//! writing them, and answers the queries that read the log itself (room history pages, a run's
//! recent events) so memory does not grow with history. Must never: write an event whose command
//! failed validation, or keep message bodies in memory.

use crate::engine::{Logbook, OpenReport};
use crate::error::{Error, Result};
use crate::options::{AppendDurability, LogbookOptions};
use crate::projections::{ProjectionHandle, Projections};
use crate::streams::{Direction, ExpectedVersion};
use crate::writer::AppendResult;
use logbook_projection::model::{JobLeaseExpired, RoomMessageEdited, RoomMessagePosted};
use logbook_projection::projections::{Interrupted, ResumePlan, interrupted};
use logbook_projection::{
    BuiltinEvent, Jobs, Order, Projection, RecordedEvent, RejectReason, Rooms, RunLedger, StreamId,
    StreamKind, ValidateCommand, projection,
};
use logbook_wal::{FileStorage, Storage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Messages (or run events) read per step while filling a page.
const PAGE_READ_CHUNK: usize = 64;
/// The most items one history or event page returns.
pub const HISTORY_LIMIT_MAX: usize = 1000;

/// What open found, with the built-in model's restart view.
#[derive(Debug, Clone)]
pub struct BuiltinOpenReport {
    /// The engine's report.
    pub log: OpenReport,
    /// Every run, workflow and job that was running or claimed without a terminal event: not
    /// marked failed; the service decides (resume, retry, or fail it with an event).
    pub interrupted: Interrupted,
}

/// A page request over a room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Newest or oldest first.
    pub order: Order,
    /// Only stream versions below this (newest first) or above it (oldest first).
    pub cursor: Option<u64>,
    /// The most messages (capped at [`HISTORY_LIMIT_MAX`]).
    pub limit: usize,
}

impl HistoryRequest {
    /// The newest `limit` messages.
    pub fn newest(limit: usize) -> Self {
        HistoryRequest {
            order: Order::NewestFirst,
            cursor: None,
            limit,
        }
    }
}

/// A room message with its edits and deletion applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Stream version of the post.
    pub version: u64,
    /// Log position of the post.
    pub position: u64,
    /// When it was posted.
    pub timestamp_ms: u64,
    /// The message id.
    pub message_id: String,
    /// The author.
    pub author: String,
    /// The current body (empty when deleted).
    pub body: String,
    /// True when edited.
    pub edited: bool,
    /// True when deleted.
    pub deleted: bool,
}

/// One page of history; `next` is the cursor of the following page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The messages, in the requested order.
    pub messages: Vec<Message>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next: Option<u64>,
}

/// Per room, the messages that were edited or deleted: the only per-message memory the engine
/// keeps, so history pages apply edits without scanning the room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEdits {
    rooms: BTreeMap<String, BTreeMap<String, EditState>>,
}

/// What happened to a message after it was posted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditState {
    /// Stream version of the latest edit.
    pub last_edit_version: Option<u64>,
    /// True once deleted.
    pub deleted: bool,
}

impl RoomEdits {
    /// The edit state of a message, if it was edited or deleted.
    pub fn get(&self, room_id: &str, message_id: &str) -> Option<EditState> {
        self.rooms.get(room_id)?.get(message_id).copied()
    }

    /// Records an edit (`edit`) or a delete of `message_id` in `room` at `version`.
    fn apply_change(&mut self, room: &str, message_id: &str, edit: bool, version: u64) {
        let state = self.rooms.entry(room.to_owned()).or_default();
        let message = state.entry(message_id.to_owned()).or_default();
        if edit {
            message.last_edit_version = Some(version);
        } else {
            message.deleted = true;
        }
    }
}

impl Projection for RoomEdits {
    type Event = BuiltinEvent;

    fn id(&self) -> &'static str {
        "builtin.room_edits"
    }

    fn state_version(&self) -> u16 {
        1
    }

    /// In line: only edits and deletes of a room's messages change anything, and every other
    /// event (a replay's posted messages, say) returns before a call.
    #[inline]
    fn apply(&mut self, event: &RecordedEvent<BuiltinEvent>) {
        if event.stream.kind() != StreamKind::Room {
            return;
        }
        let (message_id, edit) = match &event.event {
            BuiltinEvent::RoomMessageEdited(RoomMessageEdited { message_id, .. }) => {
                (message_id, true)
            }
            BuiltinEvent::RoomMessageDeleted(deleted) => (&deleted.message_id, false),
            _ => return,
        };
        self.apply_change(event.stream.entity_id(), message_id, edit, event.version);
    }

    fn snapshot(&self) -> logbook_projection::Result<Vec<u8>> {
        projection::snapshot_state(self)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook_projection::Result<()> {
        *self = projection::restore_state(self.id(), 1, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        stream.kind() == StreamKind::Room && self.rooms.remove(stream.entity_id()).is_some()
    }

    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) -> bool {
        if stream.kind() != StreamKind::Room {
            return false;
        }
        let Some(messages) = self.rooms.get_mut(stream.entity_id()) else {
            return false;
        };
        // Message ids taken from hidden edits go with them. A deletion keeps its entry (it
        // records no version, and a visible deletion must keep hiding its message).
        let before = messages.len();
        messages.retain(|_, edit| {
            edit.deleted
                || edit
                    .last_edit_version
                    .is_some_and(|version| version >= before_version)
        });
        messages.len() != before
    }
}

/// The built-in model over one log.
#[derive(Clone, Debug)]
pub struct BuiltinLog {
    log: Logbook<BuiltinEvent>,
    runs: ProjectionHandle<RunLedger>,
    rooms: ProjectionHandle<Rooms>,
    jobs: ProjectionHandle<Jobs>,
    edits: ProjectionHandle<RoomEdits>,
}

/// The built-in projections' handles, registered before a log opens (both homes alike).
struct Handles {
    runs: ProjectionHandle<RunLedger>,
    rooms: ProjectionHandle<Rooms>,
    jobs: ProjectionHandle<Jobs>,
    edits: ProjectionHandle<RoomEdits>,
}

impl Handles {
    fn register(projections: &mut Projections<BuiltinEvent>) -> Handles {
        Handles {
            runs: projections.register(RunLedger::new()),
            rooms: projections.register(Rooms::new()),
            jobs: projections.register(Jobs::new()),
            edits: projections.register(RoomEdits::default()),
        }
    }

    /// The opened log with its handles, and what was interrupted when it stopped.
    fn finish(
        self,
        log: Logbook<BuiltinEvent>,
        report: OpenReport,
    ) -> (BuiltinLog, BuiltinOpenReport) {
        let interrupted = interrupted(&self.runs.read(), &self.jobs.read());
        let builtin = BuiltinLog {
            log,
            runs: self.runs,
            rooms: self.rooms,
            jobs: self.jobs,
            edits: self.edits,
        };
        let report = BuiltinOpenReport {
            log: report,
            interrupted,
        };
        (builtin, report)
    }
}

impl BuiltinLog {
    /// Opens (or creates) the log in `dir` with the built-in projections.
    pub async fn open(
        dir: impl AsRef<Path>,
        options: LogbookOptions,
    ) -> Result<(Self, BuiltinOpenReport)> {
        Self::open_with(
            Arc::new(FileStorage::new()),
            dir,
            options,
            Projections::new(),
        )
        .await
    }

    /// Opens the log in a PostgreSQL database (see [`Logbook::open_postgres_with_projections`]):
    /// the same built-in model and projections, shared by every replica that opens it.
    #[cfg(feature = "postgres")]
    pub async fn open_postgres(
        url: &str,
        options: LogbookOptions,
    ) -> Result<(Self, BuiltinOpenReport)> {
        let mut projections = Projections::new();
        let handles = Handles::register(&mut projections);
        let (log, report) =
            Logbook::open_postgres_with_projections(url, options, projections).await?;
        Ok(handles.finish(log, report))
    }

    /// Opens on any storage, with the service's own projections beside the built-in ones.
    pub async fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: LogbookOptions,
        mut projections: Projections<BuiltinEvent>,
    ) -> Result<(Self, BuiltinOpenReport)> {
        let handles = Handles::register(&mut projections);
        let (log, report) =
            Logbook::open_with_projections(storage, dir, options, projections).await?;
        Ok(handles.finish(log, report))
    }

    /// The engine underneath (reads, subscriptions, stats, deletes).
    pub fn log(&self) -> &Logbook<BuiltinEvent> {
        &self.log
    }

    /// The run ledger: runs, workflows, lineage, telemetry, resume plans.
    pub fn runs(&self) -> &ProjectionHandle<RunLedger> {
        &self.runs
    }

    /// Rooms: metadata, members, counts, last message.
    pub fn rooms(&self) -> &ProjectionHandle<Rooms> {
        &self.rooms
    }

    /// Jobs: queue, claims, progress, terminal states.
    pub fn jobs(&self) -> &ProjectionHandle<Jobs> {
        &self.jobs
    }

    /// Validates `event` against the durable state of its stream, then appends it with the
    /// stream's current version as the expected one: a concurrent writer makes it fail with
    /// [`Error::WrongExpectedVersion`] rather than slip past validation.
    pub async fn execute(&self, stream: &StreamId, event: BuiltinEvent) -> Result<AppendResult> {
        self.execute_with(stream, event, AppendDurability::Policy)
            .await
    }

    /// [`BuiltinLog::execute`] with a chosen durability (relaxed for progress ticks).
    pub async fn execute_with(
        &self,
        stream: &StreamId,
        event: BuiltinEvent,
        durability: AppendDurability,
    ) -> Result<AppendResult> {
        let head = self.log.stream_head(stream);
        if let Some((_, position)) = head {
            self.log.wait_applied(position).await?;
        }
        event.check_stream(stream)?;
        event.validate()?;
        let now_ms = self.log.now_ms();
        self.runs.read().validate(stream, &event, now_ms)?;
        self.rooms.read().validate(stream, &event, now_ms)?;
        self.jobs.read().validate(stream, &event, now_ms)?;
        self.check_message_not_deleted(stream, &event)?;
        let expected = head.map_or(ExpectedVersion::NoStream, |(version, _)| {
            ExpectedVersion::Exact(version)
        });
        self.log
            .append_with(stream, expected, vec![event.into()], durability)
            .await
    }

    /// Refuses to edit or delete a room message that was deleted. `Rooms` keeps no per-message
    /// state, so without this a second `room.message_deleted` of one message (a retried request)
    /// was written and counted twice, and `Room::message_count` drifted below the truth.
    /// `RoomEdits` already knows the deleted messages. (Found by tests/projection_commands.rs.)
    fn check_message_not_deleted(&self, stream: &StreamId, event: &BuiltinEvent) -> Result<()> {
        let message_id = match event {
            BuiltinEvent::RoomMessageEdited(edited) => &edited.message_id,
            BuiltinEvent::RoomMessageDeleted(deleted) => &deleted.message_id,
            _ => return Ok(()),
        };
        let deleted = self
            .edits
            .read()
            .get(stream.entity_id(), message_id)
            .is_some_and(|edit| edit.deleted);
        if deleted {
            return Err(Error::Event(logbook_projection::Error::Rejected {
                entity: "room message",
                id: message_id.clone(),
                reason: RejectReason::NotFound,
            }));
        }
        Ok(())
    }

    /// Writes `job.lease_expired` for every claim whose lease ended before `now_ms`, so another
    /// worker can claim the job. Returns the job ids reclaimed.
    pub async fn reclaim_expired(&self, now_ms: u64) -> Result<Vec<String>> {
        let expired: Vec<(String, String)> = self
            .jobs
            .read()
            .expired_leases(now_ms)
            .into_iter()
            .map(|(job, worker)| (job.to_owned(), worker.to_owned()))
            .collect();
        let mut reclaimed = Vec::new();
        for (job, worker) in expired {
            let stream = StreamId::job(&job)?;
            let event = BuiltinEvent::from(JobLeaseExpired { worker });
            match self.execute(&stream, event).await {
                Ok(_) => reclaimed.push(job),
                // Another worker heartbeated or reclaimed it meanwhile: nothing to do.
                Err(Error::WrongExpectedVersion { .. } | Error::Event(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(reclaimed)
    }

    /// A workflow's resume plan: completed phases and children to reuse, missing or failed
    /// ones to relaunch.
    pub fn resume_plan(&self, workflow_id: &str) -> Result<ResumePlan> {
        Ok(self.runs.read().resume_plan(workflow_id)?)
    }

    /// Everything running or claimed without a terminal event, now.
    pub fn interrupted(&self) -> Interrupted {
        interrupted(&self.runs.read(), &self.jobs.read())
    }

    /// A page of a room's history, read from the log (O(page), edits and deletes applied).
    pub async fn room_history(
        &self,
        room_id: &str,
        request: HistoryRequest,
    ) -> Result<HistoryPage> {
        let stream = StreamId::room(room_id)?;
        let limit = request.limit.clamp(1, HISTORY_LIMIT_MAX);
        let (events, next) = self
            .page_of(&stream, request.order, request.cursor, limit, |event| {
                matches!(event.event, BuiltinEvent::RoomMessagePosted(_))
            })
            .await?;
        let mut messages = Vec::with_capacity(events.len());
        for event in events {
            let BuiltinEvent::RoomMessagePosted(RoomMessagePosted {
                message_id,
                author,
                body,
            }) = event.event
            else {
                continue;
            };
            let edit = self
                .edits
                .read()
                .get(room_id, &message_id)
                .unwrap_or_default();
            let body = match (edit.deleted, edit.last_edit_version) {
                (true, _) => String::new(),
                (false, Some(version)) => self.edited_body(&stream, version).await?.unwrap_or(body),
                (false, None) => body,
            };
            messages.push(Message {
                version: event.version,
                position: event.position,
                timestamp_ms: event.timestamp_ms,
                message_id,
                author,
                body,
                edited: edit.last_edit_version.is_some(),
                deleted: edit.deleted,
            });
        }
        Ok(HistoryPage { messages, next })
    }

    async fn edited_body(&self, stream: &StreamId, version: u64) -> Result<Option<String>> {
        let events = self
            .log
            .read_stream(stream, version, Direction::Forward, 1)
            .await?;
        Ok(events.into_iter().find_map(|event| match event.event {
            BuiltinEvent::RoomMessageEdited(edit) if event.version == version => Some(edit.body),
            _ => None,
        }))
    }

    /// A page of a run's `run.event`s, newest first by default, read from the log.
    pub async fn run_events(
        &self,
        run_id: &str,
        order: Order,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent<BuiltinEvent>>, Option<u64>)> {
        let stream = StreamId::run(run_id)?;
        let limit = limit.clamp(1, HISTORY_LIMIT_MAX);
        self.page_of(&stream, order, cursor, limit, |event| {
            matches!(event.event, BuiltinEvent::RunEvent(_))
        })
        .await
    }

    /// Reads a stream in chunks from a cursor, keeping the events `keep` accepts, until
    /// `limit` are found or the stream ends. Returns them and the next cursor.
    async fn page_of(
        &self,
        stream: &StreamId,
        order: Order,
        cursor: Option<u64>,
        limit: usize,
        keep: impl Fn(&RecordedEvent<BuiltinEvent>) -> bool,
    ) -> Result<(Vec<RecordedEvent<BuiltinEvent>>, Option<u64>)> {
        let (direction, mut from) = match (order, cursor) {
            (Order::NewestFirst, None) => (Direction::Backward, u64::MAX),
            (Order::NewestFirst, Some(0)) => return Ok((Vec::new(), None)),
            (Order::NewestFirst, Some(before)) => (Direction::Backward, before - 1),
            (Order::OldestFirst, None) => (Direction::Forward, 0),
            (Order::OldestFirst, Some(after)) => (Direction::Forward, after.saturating_add(1)),
        };
        let mut kept = Vec::new();
        loop {
            let chunk = (limit - kept.len()).clamp(1, PAGE_READ_CHUNK);
            let events = self.log.read_stream(stream, from, direction, chunk).await?;
            let exhausted = events.len() < chunk;
            for event in events {
                from = match direction {
                    Direction::Forward => event.version + 1,
                    Direction::Backward => event.version.checked_sub(1).unwrap_or(u64::MAX),
                };
                let last_version = event.version;
                if keep(&event) {
                    kept.push(event);
                    if kept.len() == limit {
                        let at_start = direction == Direction::Backward && last_version == 0;
                        return Ok((kept, if at_start { None } else { Some(last_version) }));
                    }
                }
                if direction == Direction::Backward && last_version == 0 {
                    return Ok((kept, None));
                }
            }
            if exhausted {
                return Ok((kept, None));
            }
        }
    }

    /// Makes everything durable and stops the log.
    pub async fn close(self) -> Result<()> {
        self.log.close().await
    }
}
