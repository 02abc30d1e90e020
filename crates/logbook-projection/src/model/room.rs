//! Room events: one collaboration room and its messages, in stream `room/<room id>`.
//!
//! Owns: the payloads of `room.*` events and their value rules.
//! Never: carries the room id (the stream id is its identity).

use serde::{Deserialize, Serialize};

use super::EventPayload;
use super::validate;
use crate::codec;
use crate::envelope::PAYLOAD_BYTES_MAX;
use crate::error::Result;
use crate::event::reuse;
use crate::stream::StreamKind;

/// `room.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomCreated {
    /// The display name.
    pub name: String,
    /// What the room is about.
    #[serde(default)]
    pub topic: Option<String>,
    /// Who created it.
    #[serde(default)]
    pub created_by: Option<String>,
}

impl EventPayload for RoomCreated {
    const EVENT_TYPE: &'static str = "room.created";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Room;

    fn validate(&self) -> Result<()> {
        let t = Self::EVENT_TYPE;
        validate::id(t, "name", &self.name)?;
        validate::optional_text(t, "topic", self.topic.as_deref())?;
        validate::optional_id(t, "created_by", self.created_by.as_deref())
    }

    fn decode_into(&mut self, bytes: &[u8]) -> Result<()> {
        // The fields in declaration order (as serde's path encodes the struct), borrowed through
        // bincode's own decoder and copied into the buffers held: a replay of a log of many
        // rooms decodes one of these per room. Bytes that decoder refuses go through
        // `codec::decode`, whose error is the answer (the same as a fresh decode's).
        let Ok((name, topic, created_by)) =
            codec::decode_borrowed::<(&str, Option<&str>, Option<&str>)>(bytes, PAYLOAD_BYTES_MAX)
        else {
            *self = codec::decode(bytes, PAYLOAD_BYTES_MAX)?;
            return Ok(());
        };
        name.clone_into(&mut self.name);
        reuse(&mut self.topic, topic);
        reuse(&mut self.created_by, created_by);
        Ok(())
    }
}

/// `room.member_joined` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomMemberJoined {
    /// The member.
    pub member: String,
}

impl EventPayload for RoomMemberJoined {
    const EVENT_TYPE: &'static str = "room.member_joined";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Room;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "member", &self.member)
    }
}

/// `room.member_left` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomMemberLeft {
    /// The member.
    pub member: String,
}

impl EventPayload for RoomMemberLeft {
    const EVENT_TYPE: &'static str = "room.member_left";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Room;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "member", &self.member)
    }
}

/// `room.message_posted` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomMessagePosted {
    /// The message id, unique in the room.
    #[serde(deserialize_with = "crate::codec::string")]
    pub message_id: String,
    /// Who wrote it.
    #[serde(deserialize_with = "crate::codec::string")]
    pub author: String,
    /// The text.
    #[serde(deserialize_with = "crate::codec::string")]
    pub body: String,
}

impl EventPayload for RoomMessagePosted {
    const EVENT_TYPE: &'static str = "room.message_posted";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Room;

    fn validate(&self) -> Result<()> {
        let t = Self::EVENT_TYPE;
        validate::id(t, "message_id", &self.message_id)?;
        validate::id(t, "author", &self.author)?;
        validate::text(t, "body", &self.body)
    }

    fn decode_into(&mut self, bytes: &[u8]) -> Result<()> {
        // The fields in declaration order, as serde's path encodes the struct.
        let (message_id, author, body) = codec::decode_three_strs(bytes, PAYLOAD_BYTES_MAX)?;
        message_id.clone_into(&mut self.message_id);
        author.clone_into(&mut self.author);
        body.clone_into(&mut self.body);
        Ok(())
    }
}

/// `room.message_edited` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomMessageEdited {
    /// The message.
    pub message_id: String,
    /// The new text.
    pub body: String,
}

impl EventPayload for RoomMessageEdited {
    const EVENT_TYPE: &'static str = "room.message_edited";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Room;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "message_id", &self.message_id)?;
        validate::text(Self::EVENT_TYPE, "body", &self.body)
    }
}

/// `room.message_deleted` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomMessageDeleted {
    /// The message.
    pub message_id: String,
}

impl EventPayload for RoomMessageDeleted {
    const EVENT_TYPE: &'static str = "room.message_deleted";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Room;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "message_id", &self.message_id)
    }
}

/// `room.archived` v1: the room becomes read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomArchived {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

impl EventPayload for RoomArchived {
    const EVENT_TYPE: &'static str = "room.archived";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Room;

    fn validate(&self) -> Result<()> {
        validate::optional_text(Self::EVENT_TYPE, "reason", self.reason.as_deref())
    }
}
