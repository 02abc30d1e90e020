//! Rooms: metadata, members, message count and last message of every `room/<id>` stream.
//!
//! Owns: the [`Rooms`] projection, room queries and room command validation.
//! Never: holds messages. Memory per room is bounded whatever the number of messages (members
//! are bounded by the number of joins, the last message by the text limit); history pages are
//! read from the log by the engine, with edits and deletes applied there. So this projection
//! cannot tell whether an edited or deleted message id exists: the engine checks that against
//! the log when it matters.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Lookup, Name, ValidateCommand, rejected};
use crate::error::{RejectReason, Result};
use crate::event::RecordedEvent;
use crate::model::{BuiltinEvent, RoomMessagePosted};
use crate::projection::{Page, PageRequest, Projection, paginate, restore_state, snapshot_state};
use crate::stream::{StreamId, StreamKind};

/// The snapshot key of [`Rooms`].
pub const ROOMS_PROJECTION_ID: &str = "builtin.rooms";
/// The state version of [`Rooms`] snapshots.
pub const ROOMS_STATE_VERSION: u16 = 1;

/// The latest message posted to a room, while it is not deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastMessage {
    /// The message id.
    pub message_id: String,
    /// Who wrote it.
    pub author: String,
    /// Its text, as last edited.
    pub body: String,
    /// When it was posted.
    pub posted_at_ms: u64,
    /// The room stream's version of `room.message_posted`.
    pub stream_version: u64,
    /// Whether it was edited.
    pub edited: bool,
}

/// One room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// The room id (the entity id of its `room/<id>` stream).
    pub room_id: String,
    /// The display name.
    pub name: String,
    /// The topic.
    pub topic: Option<String>,
    /// Who created it.
    pub created_by: Option<String>,
    /// The current members.
    pub members: BTreeSet<String>,
    /// Messages posted.
    pub messages_posted: u64,
    /// Messages deleted.
    pub messages_deleted: u64,
    /// The latest message, `None` if there is none or it was deleted.
    pub last_message: Option<LastMessage>,
    /// Whether the room is archived (read-only).
    pub archived: bool,
    /// When it was created.
    pub created_at_ms: u64,
    /// When the latest event was recorded.
    pub updated_at_ms: u64,
    /// The log position of `room.created`: the listing order.
    pub created_position: u64,
    /// The stream version of the latest event applied.
    pub stream_version: u64,
}

impl Room {
    /// Messages posted and not deleted.
    pub fn message_count(&self) -> u64 {
        self.messages_posted.saturating_sub(self.messages_deleted)
    }
}

/// The rooms projection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rooms {
    /// Boxed: growing the map moves a pointer per room rather than a 272-byte `Room` (a
    /// replay that creates 60,000 rooms: 178 to 138 ms, `docs/benchmarks.md` session 17).
    /// Serialized as the rooms themselves: the snapshot's bytes are the same.
    #[serde(serialize_with = "super::serialize_sorted")]
    rooms: Lookup<Box<Room>>,
    order: BTreeMap<u64, String>,
    ignored_events: u64,
}

impl Rooms {
    /// No rooms.
    pub fn new() -> Self {
        Rooms::default()
    }

    /// Refuses to create a room whose id is taken.
    pub fn can_create_room(&self, room_id: &str) -> Result<()> {
        check_create(self.room(room_id), room_id)
    }

    /// Refuses to post to (or edit, delete in, archive) a room that is unknown or archived.
    pub fn can_post(&self, room_id: &str) -> Result<()> {
        open_room(self.room(room_id), room_id).map(drop)
    }

    /// Refuses a join of a member already in the room, or a leave of one who is not.
    pub fn can_change_membership(&self, room_id: &str, member: &str, join: bool) -> Result<()> {
        check_membership(self.room(room_id), room_id, member, join)
    }

    /// The one rule set, shared by `validate` and `apply`.
    fn check(&self, room_id: &str, event: &BuiltinEvent) -> Result<()> {
        check_room(self.room(room_id), room_id, event)
    }

    fn apply_room_event(&mut self, room_id: &str, event: &RecordedEvent<BuiltinEvent>) -> bool {
        // One lookup checks and applies (a replay applies every event of a room through here).
        let mut found = self.room_mut(room_id);
        if check_room(found.as_deref(), room_id, &event.event).is_err() {
            return false;
        }
        let at_ms = event.timestamp_ms;
        if let BuiltinEvent::RoomCreated(created) = &event.event {
            let room = Room {
                room_id: room_id.to_owned(),
                name: created.name.clone(),
                topic: created.topic.clone(),
                created_by: created.created_by.clone(),
                members: BTreeSet::new(),
                messages_posted: 0,
                messages_deleted: 0,
                last_message: None,
                archived: false,
                created_at_ms: at_ms,
                updated_at_ms: at_ms,
                created_position: event.position,
                stream_version: event.version,
            };
            self.order.insert(event.position, room_id.to_owned());
            self.rooms.insert(room_id.to_owned(), Box::new(room));
            return true;
        }
        let Some(room) = found.take() else {
            return false;
        };
        match &event.event {
            BuiltinEvent::RoomMemberJoined(e) => {
                room.members.insert(e.member.clone());
            }
            BuiltinEvent::RoomMemberLeft(e) => {
                room.members.remove(&e.member);
            }
            BuiltinEvent::RoomMessagePosted(e) => {
                room.messages_posted = room.messages_posted.saturating_add(1);
                room.set_last_message(e, at_ms, event.version);
            }
            BuiltinEvent::RoomMessageEdited(e) => {
                if let Some(last) = &mut room.last_message
                    && last.message_id == e.message_id
                {
                    last.body.clone_from(&e.body);
                    last.edited = true;
                }
            }
            BuiltinEvent::RoomMessageDeleted(e) => {
                room.messages_deleted = room.messages_deleted.saturating_add(1);
                if room
                    .last_message
                    .as_ref()
                    .is_some_and(|last| last.message_id == e.message_id)
                {
                    room.last_message = None;
                }
            }
            BuiltinEvent::RoomArchived(_) => room.archived = true,
            _ => return false,
        }
        room.updated_at_ms = at_ms;
        room.stream_version = event.version;
        true
    }

    /// A room.
    pub fn room(&self, room_id: &str) -> Option<&Room> {
        self.rooms.get(room_id).map(|room| &**room)
    }

    fn room_mut(&mut self, room_id: &str) -> Option<&mut Room> {
        self.rooms.get_mut(&Name(room_id)).map(|room| &mut **room)
    }

    /// Rooms in creation order, archived ones only if asked, one page at a time.
    pub fn list_rooms(&self, include_archived: bool, page: &PageRequest) -> Page<&Room> {
        let entries = self
            .order
            .iter()
            .filter_map(|(position, id)| self.room(id).map(|room| (*position, room)));
        paginate(entries, page, |room| include_archived || !room.archived)
    }

    /// Events that broke a rule and were ignored by `apply`.
    pub fn ignored_events(&self) -> u64 {
        self.ignored_events
    }
}

/// Whether `event` posts a message to a room and `first` posted one to the same room: the
/// events [`Rooms::apply_posts`] takes as one run.
fn posts_to_the_room_of(
    event: &RecordedEvent<BuiltinEvent>,
    first: &RecordedEvent<BuiltinEvent>,
) -> bool {
    matches!(first.event, BuiltinEvent::RoomMessagePosted(_))
        && matches!(event.event, BuiltinEvent::RoomMessagePosted(_))
        && first.stream.kind() == StreamKind::Room
        && event.stream == first.stream
}

impl Rooms {
    /// Applies `posts`, messages posted to one room (at least one), as `apply` on each would.
    fn apply_posts(&mut self, posts: &[RecordedEvent<BuiltinEvent>]) {
        let (Some(first), Some(last)) = (posts.first(), posts.last()) else {
            return;
        };
        debug_assert!(posts.iter().all(|post| posts_to_the_room_of(post, first)));
        let BuiltinEvent::RoomMessagePosted(message) = &last.event else {
            return;
        };
        let count = u64::try_from(posts.len()).unwrap_or(u64::MAX);
        let room_id = first.stream.entity_id();
        let room = self.room_mut(room_id);
        // A post is refused, and counted as ignored, by the one rule a post has.
        let Some(room) = room.filter(|room| open_room(Some(room), room_id).is_ok()) else {
            self.ignored_events = self.ignored_events.saturating_add(count);
            return;
        };
        room.messages_posted = room.messages_posted.saturating_add(count);
        room.set_last_message(message, last.timestamp_ms, last.version);
        room.updated_at_ms = last.timestamp_ms;
        room.stream_version = last.version;
    }
}

impl Room {
    /// Makes `posted` (at `at_ms`, stream version `version`) the room's last message. Its
    /// buffers are reused: a replay of a busy room allocates only when a message outgrows them.
    fn set_last_message(&mut self, posted: &RoomMessagePosted, at_ms: u64, version: u64) {
        match &mut self.last_message {
            Some(last) => {
                last.message_id.clone_from(&posted.message_id);
                last.author.clone_from(&posted.author);
                last.body.clone_from(&posted.body);
                last.posted_at_ms = at_ms;
                last.stream_version = version;
                last.edited = false;
            }
            None => {
                self.last_message = Some(LastMessage {
                    message_id: posted.message_id.clone(),
                    author: posted.author.clone(),
                    body: posted.body.clone(),
                    posted_at_ms: at_ms,
                    stream_version: version,
                    edited: false,
                });
            }
        }
    }
}

/// The rule set of a room event, given the room it names (`None` when there is none).
fn check_room(room: Option<&Room>, room_id: &str, event: &BuiltinEvent) -> Result<()> {
    match event {
        BuiltinEvent::RoomCreated(_) => check_create(room, room_id),
        BuiltinEvent::RoomMemberJoined(e) => check_membership(room, room_id, &e.member, true),
        BuiltinEvent::RoomMemberLeft(e) => check_membership(room, room_id, &e.member, false),
        _ => open_room(room, room_id).map(drop),
    }
}

/// Refuses to create a room whose id is taken.
fn check_create(room: Option<&Room>, room_id: &str) -> Result<()> {
    if room.is_some() {
        return Err(rejected("room", room_id, RejectReason::AlreadyExists));
    }
    Ok(())
}

/// Refuses a join of a member already in the room, or a leave of one who is not.
fn check_membership(room: Option<&Room>, room_id: &str, member: &str, join: bool) -> Result<()> {
    let room = open_room(room, room_id)?;
    match (join, room.members.contains(member)) {
        (true, true) => Err(rejected("room member", member, RejectReason::AlreadyExists)),
        (false, false) => Err(rejected("room member", member, RejectReason::NotFound)),
        _ => Ok(()),
    }
}

/// The room, when it exists and is not archived.
fn open_room<'a>(room: Option<&'a Room>, room_id: &str) -> Result<&'a Room> {
    let Some(room) = room else {
        return Err(rejected("room", room_id, RejectReason::NotFound));
    };
    if room.archived {
        return Err(rejected("room", room_id, RejectReason::Archived));
    }
    Ok(room)
}

impl ValidateCommand for Rooms {
    fn validate(&self, stream: &StreamId, event: &BuiltinEvent, _now_ms: u64) -> Result<()> {
        if event.stream_kind() != StreamKind::Room {
            return Ok(());
        }
        event.check_stream(stream)?;
        self.check(stream.entity_id(), event)
    }
}

impl Projection for Rooms {
    type Event = BuiltinEvent;

    fn id(&self) -> &'static str {
        ROOMS_PROJECTION_ID
    }

    fn state_version(&self) -> u16 {
        ROOMS_STATE_VERSION
    }

    fn apply(&mut self, event: &RecordedEvent<BuiltinEvent>) {
        if event.stream.kind() != StreamKind::Room {
            return;
        }
        let applied = event.event.stream_kind() == StreamKind::Room
            && self.apply_room_event(event.stream.entity_id(), event);
        if !applied {
            self.ignored_events = self.ignored_events.saturating_add(1);
        }
    }

    /// As `apply` on each event, with a run of messages posted to one room (a busy room, a
    /// batch append, an import) applied at once: one lookup and one check for the run (a post
    /// changes neither whether the room exists nor whether it is archived, so the run's posts
    /// are all applied or all ignored), and only the run's last message copied, as each post
    /// replaces the one before it.
    fn apply_all(&mut self, events: &[RecordedEvent<BuiltinEvent>]) {
        let mut rest = events;
        while let Some((first, after)) = rest.split_first() {
            let run = 1 + after
                .iter()
                .take_while(|event| posts_to_the_room_of(event, first))
                .count();
            match rest.split_at_checked(run) {
                Some((posts, tail)) if run > 1 => {
                    self.apply_posts(posts);
                    rest = tail;
                }
                _ => {
                    self.apply(first);
                    rest = after;
                }
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        snapshot_state(self)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> Result<()> {
        *self = restore_state(
            ROOMS_PROJECTION_ID,
            ROOMS_STATE_VERSION,
            state_version,
            bytes,
        )?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        if stream.kind() != StreamKind::Room {
            return false;
        }
        let id = stream.entity_id();
        let removed = self.rooms.remove(id).is_some();
        if removed {
            self.order.retain(|_, entity| entity != id);
        }
        removed
    }

    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) -> bool {
        if stream.kind() != StreamKind::Room {
            return false;
        }
        // The latest message's body and id came from a now hidden event: forget them (the
        // purge guarantee covers snapshots). The counters are lifetime counts and stay.
        let Some(room) = self.rooms.get_mut(stream.entity_id()) else {
            return false;
        };
        let hidden = room
            .last_message
            .as_ref()
            .is_some_and(|last| last.stream_version < before_version);
        if hidden {
            room.last_message = None;
        }
        hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        RoomArchived, RoomCreated, RoomMemberJoined, RoomMemberLeft, RoomMessageDeleted,
        RoomMessageEdited, RoomMessagePosted,
    };
    use crate::projections::test_support::Log;

    fn created(name: &str) -> BuiltinEvent {
        RoomCreated {
            name: name.into(),
            topic: None,
            created_by: None,
        }
        .into()
    }

    fn posted(id: &str, body: &str) -> BuiltinEvent {
        RoomMessagePosted {
            message_id: id.into(),
            author: "ada".into(),
            body: body.into(),
        }
        .into()
    }

    #[test]
    fn a_room_lives_and_archives() {
        let mut log = Log::default();
        let mut rooms = Rooms::new();
        log.append(&mut rooms, "room/a", created("A")).unwrap();
        log.append(
            &mut rooms,
            "room/a",
            RoomMemberJoined {
                member: "ada".into(),
            }
            .into(),
        )
        .unwrap();
        log.append(
            &mut rooms,
            "room/a",
            RoomMemberJoined {
                member: "bob".into(),
            }
            .into(),
        )
        .unwrap();
        log.append(
            &mut rooms,
            "room/a",
            RoomMemberLeft {
                member: "bob".into(),
            }
            .into(),
        )
        .unwrap();
        log.append(&mut rooms, "room/a", posted("m1", "one"))
            .unwrap();
        log.append(&mut rooms, "room/a", posted("m2", "two"))
            .unwrap();
        let edit = RoomMessageEdited {
            message_id: "m2".into(),
            body: "TWO".into(),
        };
        log.append(&mut rooms, "room/a", edit.into()).unwrap();
        let room = rooms.room("a").unwrap();
        assert_eq!(room.members, BTreeSet::from(["ada".to_owned()]));
        assert_eq!(room.message_count(), 2);
        let last = room.last_message.as_ref().unwrap();
        assert_eq!(
            (last.message_id.as_str(), last.body.as_str(), last.edited),
            ("m2", "TWO", true)
        );
        // Editing an older message leaves the last one alone.
        let edit = RoomMessageEdited {
            message_id: "m1".into(),
            body: "ONE".into(),
        };
        log.append(&mut rooms, "room/a", edit.into()).unwrap();
        assert_eq!(
            rooms.room("a").unwrap().last_message.as_ref().unwrap().body,
            "TWO"
        );
        log.append(
            &mut rooms,
            "room/a",
            RoomMessageDeleted {
                message_id: "m2".into(),
            }
            .into(),
        )
        .unwrap();
        let room = rooms.room("a").unwrap();
        assert_eq!(room.message_count(), 1);
        assert_eq!(room.last_message, None);

        log.append(&mut rooms, "room/a", RoomArchived::default().into())
            .unwrap();
        let error = log
            .append(&mut rooms, "room/a", posted("m3", "late"))
            .unwrap_err();
        assert!(
            matches!(
                &error,
                crate::Error::Rejected {
                    reason: RejectReason::Archived,
                    ..
                }
            ),
            "{error}"
        );
        assert!(rooms.can_post("a").is_err());
        assert!(rooms.can_post("nope").is_err());
        assert_eq!(
            rooms.list_rooms(false, &PageRequest::default()).items.len(),
            0
        );
        assert_eq!(
            rooms.list_rooms(true, &PageRequest::default()).items.len(),
            1
        );
    }

    #[test]
    fn commands_are_checked() {
        let mut log = Log::default();
        let mut rooms = Rooms::new();
        assert!(log.append(&mut rooms, "room/a", posted("m1", "x")).is_err());
        log.append(&mut rooms, "room/a", created("A")).unwrap();
        assert!(log.append(&mut rooms, "room/a", created("A")).is_err());
        let leave = BuiltinEvent::from(RoomMemberLeft {
            member: "zed".into(),
        });
        assert!(log.append(&mut rooms, "room/a", leave).is_err());
        let join = BuiltinEvent::from(RoomMemberJoined {
            member: "zed".into(),
        });
        log.append(&mut rooms, "room/a", join.clone()).unwrap();
        assert!(log.append(&mut rooms, "room/a", join).is_err());
        assert!(log.append(&mut rooms, "job/a", created("A")).is_err());
    }

    #[test]
    fn memory_does_not_grow_with_messages() {
        let mut log = Log::default();
        let mut rooms = Rooms::new();
        log.append(&mut rooms, "room/a", created("A")).unwrap();
        log.append(&mut rooms, "room/a", posted("m0000", "body"))
            .unwrap();
        let size_after_one = rooms.snapshot().unwrap().len();
        for index in 1..2000 {
            log.append(
                &mut rooms,
                "room/a",
                posted(&format!("m{index:04}"), "body"),
            )
            .unwrap();
        }
        assert_eq!(rooms.room("a").unwrap().message_count(), 2000);
        // Only counters and version numbers grew (a few varint bytes), not a message list.
        assert!(rooms.snapshot().unwrap().len() <= size_after_one + 16);
    }

    #[test]
    fn unvalidated_events_are_ignored_and_replay_matches() {
        let mut log = Log::default();
        let mut rooms = Rooms::new();
        log.force(&mut rooms, "room/a", posted("m1", "x"));
        log.append(&mut rooms, "room/a", created("A")).unwrap();
        log.force(&mut rooms, "room/a", created("B"));
        log.force(&mut rooms, "room/a", RoomArchived::default().into());
        log.force(&mut rooms, "room/a", posted("m1", "x"));
        assert_eq!(rooms.ignored_events(), 3);
        assert_eq!(rooms.room("a").unwrap().name, "A");
        assert_eq!(log.replay::<Rooms>(), rooms);
        let mut restored = Rooms::new();
        restored
            .restore(ROOMS_STATE_VERSION, &rooms.snapshot().unwrap())
            .unwrap();
        assert_eq!(restored, rooms);
    }

    /// A snapshot lists the rooms in id order, as when they were held in a `BTreeMap`: its
    /// bytes depend on the state only (not on the hasher's seed), and old snapshots restore.
    #[test]
    fn a_snapshot_lists_rooms_in_id_order() {
        let mut log = Log::default();
        let mut rooms = Rooms::new();
        for index in (0..64).rev() {
            let stream = format!("room/r{:02}", (index * 37) % 64);
            log.append(&mut rooms, &stream, created("R")).unwrap();
            log.append(&mut rooms, &stream, posted("m1", "x")).unwrap();
        }
        #[derive(Serialize)]
        struct Ordered<'a> {
            rooms: BTreeMap<&'a String, &'a Room>,
            order: &'a BTreeMap<u64, String>,
            ignored_events: u64,
        }
        let ordered = Ordered {
            rooms: rooms.rooms.iter().map(|(id, room)| (id, &**room)).collect(),
            order: &rooms.order,
            ignored_events: rooms.ignored_events,
        };
        let bytes = rooms.snapshot().unwrap();
        assert_eq!(bytes, snapshot_state(&ordered).unwrap());
        let mut restored = Rooms::new();
        restored.restore(ROOMS_STATE_VERSION, &bytes).unwrap();
        assert_eq!(restored, rooms);
        assert_eq!(restored.snapshot().unwrap(), bytes);
    }

    /// One of a few room events, on one of three streams (the last one not a room's), valid or
    /// not: posts dominate, as in a busy room, so runs of posts form and break.
    fn arbitrary_room_event() -> impl proptest::strategy::Strategy<Value = (usize, BuiltinEvent)> {
        use proptest::prelude::*;
        let event = prop_oneof![
            6 => (0..4u8, "[a-z]{0,12}").prop_map(|(id, body)| posted(&format!("m{id}"), &body)),
            1 => Just(created("R")),
            1 => (0..3u8).prop_map(|member| RoomMemberJoined { member: format!("u{member}") }.into()),
            1 => (0..3u8).prop_map(|member| RoomMemberLeft { member: format!("u{member}") }.into()),
            1 => (0..4u8, "[a-z]{0,6}").prop_map(|(id, body)| {
                RoomMessageEdited { message_id: format!("m{id}"), body }.into()
            }),
            1 => (0..4u8).prop_map(|id| RoomMessageDeleted { message_id: format!("m{id}") }.into()),
            1 => Just(RoomArchived { reason: None }.into()),
        ];
        (0..3usize, event)
    }

    proptest::proptest! {
        /// `apply_all` over any split of the events into chunks leaves the state `apply` on
        /// each event leaves: runs of posts, broken by other events and other streams, with
        /// rooms missing, archived or created twice.
        #[test]
        fn apply_all_is_apply_on_each_event(
            events in proptest::collection::vec(arbitrary_room_event(), 0..80),
            cuts in proptest::collection::vec(0..80usize, 0..6),
        ) {
            let mut log = Log::default();
            let mut one_by_one = Rooms::new();
            for (stream, event) in events {
                let stream = ["room/a", "room/b", "lobby"][stream];
                log.force(&mut one_by_one, stream, event);
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(log.events.len())).collect();
            cuts.push(0);
            cuts.push(log.events.len());
            cuts.sort_unstable();
            let mut by_chunks = Rooms::new();
            for pair in cuts.windows(2) {
                by_chunks.apply_all(&log.events[pair[0]..pair[1]]);
            }
            proptest::prop_assert_eq!(&by_chunks, &one_by_one);
            proptest::prop_assert_eq!(by_chunks.snapshot().unwrap(), one_by_one.snapshot().unwrap());
        }
    }

    #[test]
    fn a_run_of_posts_counts_them_all_and_keeps_the_last() {
        let mut log = Log::default();
        let mut one_by_one = Rooms::new();
        log.force(&mut one_by_one, "room/a", created("A"));
        for index in 0..5 {
            log.force(
                &mut one_by_one,
                "room/a",
                posted(&format!("m{index}"), "hi"),
            );
        }
        // Posts to a room that does not exist: ignored, each counted.
        for index in 0..3 {
            log.force(
                &mut one_by_one,
                "room/nowhere",
                posted(&format!("x{index}"), "lost"),
            );
        }
        let mut at_once = Rooms::new();
        at_once.apply_all(&log.events);
        assert_eq!(at_once, one_by_one);
        let room = at_once.room("a").unwrap();
        assert_eq!(room.messages_posted, 5);
        assert_eq!(room.last_message.as_ref().unwrap().message_id, "m4");
        assert_eq!(room.stream_version, 5);
        assert_eq!(at_once.ignored_events(), 3);
    }
}
