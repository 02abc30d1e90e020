//! Event type names as events read back carry them.
//!
//! Owns: [`EventType`], a name that can only exist valid (the rules of
//! [`validate_event_type`]: 1 to 128 bytes of `a-z`, `0-9`, `_` and `.`), shared by its clones.
//! Never: lets an invalid name exist; every constructor, `FromStr` and serde's `Deserialize`
//! go through the same validation.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::envelope::validate_event_type;
use crate::error::{Error, Result};

/// The type of an event read back ([`RecordedEvent::event_type`](crate::RecordedEvent)).
///
/// The name is shared, not copied, by clones (an `Arc<str>`): a page of events of one type
/// holds one allocation of it (a `String` per event was one allocation and copy per event
/// read). It reads like a string: it derefs to `str` and compares with `&str` and `String`.
///
/// ```
/// use logbook_projection::EventType;
///
/// let event_type: EventType = "room.message_posted".parse()?;
/// assert_eq!(event_type, "room.message_posted");
/// assert!(event_type.starts_with("room."));
/// assert!("Room.Posted".parse::<EventType>().is_err());
/// # Ok::<(), logbook_projection::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Arc<str>);

impl EventType {
    /// Validates `name` and wraps it.
    pub fn new(name: impl AsRef<str>) -> Result<EventType> {
        let name = name.as_ref();
        validate_event_type(name)?;
        Ok(EventType(Arc::from(name)))
    }

    /// Wraps a name the caller has validated.
    pub(crate) fn from_validated(name: &str) -> EventType {
        debug_assert!(validate_event_type(name).is_ok());
        EventType(Arc::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned `String`.
    pub fn into_string(self) -> String {
        self.0.to_string()
    }
}

impl std::ops::Deref for EventType {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl FromStr for EventType {
    type Err = Error;

    fn from_str(name: &str) -> Result<EventType> {
        EventType::new(name)
    }
}

impl TryFrom<String> for EventType {
    type Error = Error;

    fn try_from(name: String) -> Result<EventType> {
        EventType::new(name)
    }
}

impl TryFrom<&str> for EventType {
    type Error = Error;

    fn try_from(name: &str) -> Result<EventType> {
        EventType::new(name)
    }
}

impl From<EventType> for String {
    fn from(event_type: EventType) -> String {
        event_type.into_string()
    }
}

/// Looked up by `&str` in maps keyed by `EventType`: the derived `Eq`, `Ord` and `Hash` are
/// the inner `Arc<str>`'s, which agree with `str`'s.
impl std::borrow::Borrow<str> for EventType {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Compared in line, a word at a time: a replay compares every record's event type with the
/// one before.
impl PartialEq<str> for EventType {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        crate::envelope::same_bytes(self.0.as_bytes(), other.as_bytes())
    }
}

impl PartialEq<&str> for EventType {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for EventType {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<EventType> for str {
    fn eq(&self, other: &EventType) -> bool {
        *self == *other.0
    }
}

impl PartialEq<EventType> for &str {
    fn eq(&self, other: &EventType) -> bool {
        **self == *other.0
    }
}

impl PartialEq<EventType> for String {
    fn eq(&self, other: &EventType) -> bool {
        **self == *other.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Debug-printed as the string it is (`"room.message_posted"`), as the `String` it replaced.
impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        EventType::new(name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_names_exist_and_they_compare_as_strings() {
        assert!(EventType::new("").is_err());
        assert!(EventType::new("a".repeat(129)).is_err());
        assert!(EventType::new("Shop.Ordered").is_err());
        assert!(serde_json::from_str::<EventType>("\"bad type\"").is_err());
        let event_type = EventType::new("shop.ordered").unwrap();
        assert_eq!(event_type, "shop.ordered");
        assert_eq!("shop.ordered", event_type);
        assert_eq!(event_type, "shop.ordered".to_owned());
        assert_eq!(event_type.len(), 12);
        assert_eq!(
            format!("{event_type} {event_type:?}"),
            "shop.ordered \"shop.ordered\""
        );
        let json = serde_json::to_string(&event_type).unwrap();
        assert_eq!(json, "\"shop.ordered\"");
        assert_eq!(
            serde_json::from_str::<EventType>(&json).unwrap(),
            event_type
        );
        // Clones share the name.
        let clone = event_type.clone();
        assert!(std::ptr::eq(clone.as_str(), event_type.as_str()));
        let mut by_type = std::collections::HashMap::new();
        by_type.insert(event_type, 1);
        assert_eq!(by_type.get("shop.ordered"), Some(&1));
    }
}
