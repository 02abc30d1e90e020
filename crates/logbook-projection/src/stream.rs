//! Stream ids: the names of the event streams.
//!
//! Owns: [`StreamId`], a string that can only exist valid (UTF-8, 1 to [`STREAM_ID_BYTES_MAX`]
//! bytes, no control characters, no empty entity id after a built-in prefix), and [`StreamKind`],
//! the built-in entity family read from its prefix.
//! Never: lets an invalid name reach the log; every constructor, `FromStr` and serde's
//! `Deserialize` go through the same validation.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result, escape_lossy};

/// The longest stream id, in bytes of UTF-8.
pub const STREAM_ID_BYTES_MAX: usize = 256;

/// The family of a stream, read from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// `run/<id>`: one agent run.
    Run,
    /// `workflow/<id>`: one workflow run.
    Workflow,
    /// `room/<id>`: one collaboration room.
    Room,
    /// `job/<id>`: one background job.
    Job,
    /// Any other name: a service's own stream.
    Custom,
}

impl StreamKind {
    /// The prefix of the built-in kinds (`"run/"`), `None` for [`StreamKind::Custom`].
    pub const fn prefix(self) -> Option<&'static str> {
        match self {
            StreamKind::Run => Some("run/"),
            StreamKind::Workflow => Some("workflow/"),
            StreamKind::Room => Some("room/"),
            StreamKind::Job => Some("job/"),
            StreamKind::Custom => None,
        }
    }

    #[cfg(test)]
    const BUILT_IN: [StreamKind; 4] = [
        StreamKind::Run,
        StreamKind::Workflow,
        StreamKind::Room,
        StreamKind::Job,
    ];
}

/// A valid stream id.
///
/// ```
/// use logbook_projection::{StreamId, StreamKind};
///
/// let stream: StreamId = "room/lobby".parse()?;
/// assert_eq!(stream.kind(), StreamKind::Room);
/// assert_eq!(stream.entity_id(), "lobby");
/// assert!("room/".parse::<StreamId>().is_err());
/// assert!("".parse::<StreamId>().is_err());
/// # Ok::<(), logbook_projection::Error>(())
/// ```
///
/// The name is shared, not copied, by clones (an `Arc<str>`): every event read back from a
/// stream carries its id, and a page of them holds one allocation of it. Its kind is read once,
/// when it is made: every projection asks every event for it. Equality, order and hash are the
/// name's (so a map keyed by `StreamId` is looked up by `&str`).
#[derive(Clone)]
pub struct StreamId {
    name: Arc<str>,
    kind: StreamKind,
}

impl StreamId {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<StreamId> {
        let name = name.into();
        validate(&name)?;
        Ok(StreamId::wrap(name.into()))
    }

    /// Wraps a name this crate already validated (decoded envelopes).
    pub(crate) fn from_validated(name: &str) -> StreamId {
        debug_assert!(validate(name).is_ok(), "{name:?}");
        StreamId::wrap(name.into())
    }

    fn wrap(name: Arc<str>) -> StreamId {
        let kind = kind_and_entity(&name).0;
        StreamId { name, kind }
    }

    /// `run/<id>`.
    pub fn run(id: &str) -> Result<StreamId> {
        StreamId::new(format!("run/{id}"))
    }

    /// `workflow/<id>`.
    pub fn workflow(id: &str) -> Result<StreamId> {
        StreamId::new(format!("workflow/{id}"))
    }

    /// `room/<id>`.
    pub fn room(id: &str) -> Result<StreamId> {
        StreamId::new(format!("room/{id}"))
    }

    /// `job/<id>`.
    pub fn job(id: &str) -> Result<StreamId> {
        StreamId::new(format!("job/{id}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name, by value.
    pub fn into_string(self) -> String {
        self.name.as_ref().to_owned()
    }

    /// The family read from the prefix.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// Whether `self` and `other` share one allocation of the name (one is a clone of the
    /// other): a check of a pointer that implies they are equal. False says nothing: two ids
    /// of the same name made apart are equal and not the same.
    #[inline]
    pub fn same_id(&self, other: &StreamId) -> bool {
        Arc::ptr_eq(&self.name, &other.name)
    }

    /// The part after a built-in prefix (`"r1"` for `run/r1`), the whole name for custom streams.
    pub fn entity_id(&self) -> &str {
        let prefix = self.kind.prefix().map_or(0, str::len);
        // The kind was read from this prefix: the entity is what follows it.
        let entity = self.name.get(prefix..).unwrap_or(&self.name);
        debug_assert_eq!(entity, kind_and_entity(&self.name).1);
        entity
    }
}

impl PartialEq for StreamId {
    fn eq(&self, other: &StreamId) -> bool {
        self.name == other.name
    }
}

impl Eq for StreamId {}

/// A stream id equals the name it holds (a replay compares every record's stream with the id
/// of the event before it: in line, a word at a time).
impl PartialEq<str> for StreamId {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        crate::envelope::same_bytes(self.name.as_bytes(), other.as_bytes())
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &StreamId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StreamId {
    fn cmp(&self, other: &StreamId) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl std::hash::Hash for StreamId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The name's hash alone, as `Borrow<str>` requires.
        self.name.hash(state);
    }
}

/// Checks the rules of a stream id without allocating.
pub fn validate(name: &str) -> Result<()> {
    let refuse = |reason| {
        Err(Error::InvalidStreamId {
            stream: escape_lossy(name),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > STREAM_ID_BYTES_MAX {
        return refuse("longer than 256 bytes");
    }
    if crate::model::validate::has_control(name) {
        return refuse("contains a control character");
    }
    let (kind, entity) = kind_and_entity(name);
    if kind != StreamKind::Custom && entity.is_empty() {
        return refuse("empty entity id after a built-in prefix");
    }
    Ok(())
}

fn kind_and_entity(name: &str) -> (StreamKind, &str) {
    // Every projection asks every replayed event's stream for its kind: the first byte picks
    // the prefixes worth comparing (literals, so each compare is a load or two).
    let found = match name.as_bytes().first() {
        Some(b'r') => name
            .strip_prefix("run/")
            .map(|entity| (StreamKind::Run, entity))
            .or_else(|| {
                name.strip_prefix("room/")
                    .map(|entity| (StreamKind::Room, entity))
            }),
        Some(b'w') => name
            .strip_prefix("workflow/")
            .map(|entity| (StreamKind::Workflow, entity)),
        Some(b'j') => name
            .strip_prefix("job/")
            .map(|entity| (StreamKind::Job, entity)),
        _ => None,
    };
    debug_assert!(found.is_none_or(|(kind, entity)| kind.prefix().is_some_and(
        |prefix| name.len() == prefix.len() + entity.len() && name.starts_with(prefix)
    )));
    found.unwrap_or((StreamKind::Custom, name))
}

impl FromStr for StreamId {
    type Err = Error;

    fn from_str(name: &str) -> Result<StreamId> {
        StreamId::new(name)
    }
}

impl TryFrom<String> for StreamId {
    type Error = Error;

    fn try_from(name: String) -> Result<StreamId> {
        StreamId::new(name)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = Error;

    fn try_from(name: &str) -> Result<StreamId> {
        StreamId::new(name)
    }
}

/// A map keyed by `StreamId` can be looked up by `&str` without allocating: the derived `Eq`,
/// `Ord` and `Hash` are the inner `Arc<str>`'s, which agree with `str`'s.
impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({:?})", self.name)
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        StreamId::new(name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> &'static str {
        match StreamId::new(name) {
            Err(Error::InvalidStreamId { reason, .. }) => reason,
            other => panic!("expected InvalidStreamId for {name:?}, got {other:?}"),
        }
    }

    #[test]
    fn refuses_empty_long_and_control() {
        assert_eq!(reason(""), "empty");
        assert_eq!(reason(&"a".repeat(257)), "longer than 256 bytes");
        assert_eq!(reason("run/a\nb"), "contains a control character");
        assert_eq!(reason("a\u{0}"), "contains a control character");
        assert_eq!(reason("a\u{7f}"), "contains a control character");
        assert_eq!(reason("a\u{85}"), "contains a control character");
        for prefix in ["run/", "workflow/", "room/", "job/"] {
            assert_eq!(reason(prefix), "empty entity id after a built-in prefix");
        }
    }

    #[test]
    fn accepts_the_boundary_and_multibyte() {
        assert!(StreamId::new("a".repeat(256)).is_ok());
        // 'é' is two bytes: 128 of them are exactly 256 bytes, one more 'a' is 257.
        let accents = "é".repeat(128);
        assert_eq!(accents.len(), 256);
        assert!(StreamId::new(accents.clone()).is_ok());
        assert_eq!(reason(&format!("{accents}a")), "longer than 256 bytes");
        // A 4-byte character crossing the boundary.
        let crab = format!("{}🦀", "a".repeat(252));
        assert_eq!(crab.len(), 256);
        assert!(StreamId::new(crab).is_ok());
        assert!(StreamId::new("run/ünïcödé 1").is_ok());
    }

    #[test]
    fn kinds_and_entities() {
        let cases = [
            ("run/r1", StreamKind::Run, "r1"),
            ("workflow/w/1", StreamKind::Workflow, "w/1"),
            ("room/lobby", StreamKind::Room, "lobby"),
            ("job/j", StreamKind::Job, "j"),
            ("orders-42", StreamKind::Custom, "orders-42"),
            ("run", StreamKind::Custom, "run"),
            ("runs/x", StreamKind::Custom, "runs/x"),
        ];
        for (name, kind, entity) in cases {
            let stream: StreamId = name.parse().expect(name);
            assert_eq!(stream.kind(), kind, "{name}");
            assert_eq!(stream.entity_id(), entity, "{name}");
            assert_eq!(stream.to_string(), name);
            assert_eq!(stream.as_str(), name);
        }
        assert_eq!(StreamId::run("x").expect("valid").as_str(), "run/x");
        assert_eq!(
            StreamId::workflow("x").expect("valid").kind(),
            StreamKind::Workflow
        );
        assert_eq!(StreamId::room("x").expect("valid").kind(), StreamKind::Room);
        assert_eq!(StreamId::job("x").expect("valid").kind(), StreamKind::Job);
        assert!(StreamId::job("").is_err());
    }

    #[test]
    fn error_escapes_the_input() {
        let error = StreamId::new("bad\u{1b}[31m").expect_err("control");
        let Error::InvalidStreamId { stream, .. } = error else {
            panic!("wrong error")
        };
        assert_eq!(stream, "bad\\u{1b}[31m");
    }

    #[test]
    fn serde_validates() {
        let stream: StreamId = serde_json::from_str("\"room/a\"").expect("valid");
        assert_eq!(
            serde_json::to_string(&stream).expect("serialize"),
            "\"room/a\""
        );
        assert!(serde_json::from_str::<StreamId>("\"room/\"").is_err());
        assert!(serde_json::from_str::<StreamId>("\"\"").is_err());
    }

    proptest::proptest! {
        /// The first-byte dispatch reads the kind and entity that trying every built-in
        /// prefix in turn reads.
        #[test]
        fn kinds_match_trying_every_prefix(
            name in "(run|room|ro|ru|r|workflow|work|w|job|jo|j|x|)(/|)[a-z/é]{0,3}",
        ) {
            let expected = StreamKind::BUILT_IN
                .into_iter()
                .find_map(|kind| Some((kind, name.strip_prefix(kind.prefix()?)?)))
                .unwrap_or((StreamKind::Custom, name.as_str()));
            proptest::prop_assert_eq!(kind_and_entity(&name), expected);
        }
    }

    /// Equality, order and hash are the name's: a map keyed by stream ids is looked up by
    /// `&str`, and ids sort as their names.
    #[test]
    fn a_stream_id_compares_and_hashes_as_its_name() {
        use std::collections::{BTreeSet, HashMap};
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        let names = ["room/b", "job/1", "run/a", "room/a", "custom", "workflow/w"];
        let ids: Vec<StreamId> = names.iter().map(|name| name.parse().unwrap()).collect();
        let mut map = HashMap::new();
        for (id, name) in ids.iter().zip(names) {
            assert_eq!(hasher.hash_one(id), hasher.hash_one(name), "{name}");
            map.insert(id.clone(), name.len());
        }
        for name in names {
            assert_eq!(map.get(name), Some(&name.len()), "{name}");
            assert_eq!(StreamId::new(name).unwrap(), StreamId::from_validated(name));
        }
        let sorted: Vec<&str> = ids
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(StreamId::as_str)
            .collect();
        let mut expected = names.to_vec();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
        assert!(StreamId::new("room/a").unwrap() < StreamId::new("room/b").unwrap());
    }
}
