//! Upcasters: how a payload written at an old schema version is read by today's code.
//!
//! Owns: the chain of steps, one per (event type, version n to n + 1), that rewrites old payload
//! bytes into the current version's bytes before the current type decodes them. A step may work
//! on bytes or go through the old serde type ([`via_serde`]).
//! Never: changes what is in the log (old records stay as written; they are upcast every time
//! they are read), or guesses: a missing step is an [`Error::UnsupportedSchemaVersion`].
//!
//! ```
//! use logbook_projection::upcast::{Upcaster, upcast, via_serde};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct GreetedV1 { name: String }
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct GreetedV2 { name: String, polite: bool }
//!
//! const UPCASTERS: &[Upcaster] = &[Upcaster::new("app.greeted", 1, |bytes| {
//!     via_serde(bytes, |old: GreetedV1| GreetedV2 { name: old.name, polite: false })
//! })];
//!
//! let v1 = logbook_projection::codec::encode(&("ada",))?;
//! let v2 = upcast(UPCASTERS, "app.greeted", 1, 2, &v1)?;
//! let value: GreetedV2 = logbook_projection::codec::decode(&v2, 1024)?;
//! assert_eq!(value, GreetedV2 { name: "ada".into(), polite: false });
//! # Ok::<(), logbook_projection::Error>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::envelope::PAYLOAD_BYTES_MAX;
use crate::error::{Error, Result};

/// Rewrites payload bytes of version `n` into bytes of version `n + 1`.
pub type UpcastFn = fn(&[u8]) -> Result<Vec<u8>>;

/// One step of a chain: `event_type` at `from_version` to `from_version + 1`.
#[derive(Clone, Copy)]
pub struct Upcaster {
    /// The event type this step applies to.
    pub event_type: &'static str,
    /// The version it reads; it writes `from_version + 1`.
    pub from_version: u16,
    /// The rewrite.
    pub upcast: UpcastFn,
}

impl Upcaster {
    /// A step from `from_version` to `from_version + 1` of `event_type`.
    pub const fn new(event_type: &'static str, from_version: u16, upcast: UpcastFn) -> Self {
        Upcaster {
            event_type,
            from_version,
            upcast,
        }
    }
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Upcaster({} v{} -> v{})",
            self.event_type,
            self.from_version,
            { u32::from(self.from_version) + 1 }
        )
    }
}

/// Brings `payload`, written as `event_type` at `schema_version`, to `current_version` by
/// running every step in order. Borrows when no step is needed.
pub fn upcast<'a>(
    upcasters: &[Upcaster],
    event_type: &str,
    schema_version: u16,
    current_version: u16,
    payload: &'a [u8],
) -> Result<Cow<'a, [u8]>> {
    let unsupported = || Error::UnsupportedSchemaVersion {
        event_type: event_type.to_owned(),
        schema_version,
    };
    if schema_version > current_version {
        return Err(unsupported());
    }
    let mut bytes = Cow::Borrowed(payload);
    for version in schema_version..current_version {
        let step = upcasters
            .iter()
            .find(|step| step.event_type == event_type && step.from_version == version)
            .ok_or_else(unsupported)?;
        let next = (step.upcast)(&bytes)?;
        if next.len() > PAYLOAD_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "upcast payload",
                limit: PAYLOAD_BYTES_MAX,
                actual: next.len(),
            });
        }
        bytes = Cow::Owned(next);
    }
    Ok(bytes)
}

/// A step body that decodes the old serde type, converts it and encodes the new one.
pub fn via_serde<Old, New>(payload: &[u8], convert: impl FnOnce(Old) -> New) -> Result<Vec<u8>>
where
    Old: DeserializeOwned,
    New: Serialize,
{
    let old: Old = codec::decode(payload, PAYLOAD_BYTES_MAX)?;
    codec::encode(&convert(old))
}

/// The versions of `event_type` below `current_version` that have no step: empty when every
/// old version can be read. Tests call this for every event type.
pub fn missing_steps(upcasters: &[Upcaster], event_type: &str, current_version: u16) -> Vec<u16> {
    (1..current_version)
        .filter(|version| {
            !upcasters
                .iter()
                .any(|step| step.event_type == event_type && step.from_version == *version)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append_one(bytes: &[u8]) -> Result<Vec<u8>> {
        let mut out = bytes.to_vec();
        out.push(1);
        Ok(out)
    }

    fn fail(_: &[u8]) -> Result<Vec<u8>> {
        Err(Error::Decode {
            what: "test",
            reason: "no".into(),
        })
    }

    const STEPS: &[Upcaster] = &[
        Upcaster::new("a.b", 1, append_one),
        Upcaster::new("a.b", 2, append_one),
        Upcaster::new("c.d", 1, fail),
    ];

    #[test]
    fn runs_every_step_in_order() {
        assert_eq!(
            upcast(STEPS, "a.b", 1, 3, &[7]).expect("chain").as_ref(),
            &[7, 1, 1]
        );
        assert_eq!(
            upcast(STEPS, "a.b", 2, 3, &[7]).expect("chain").as_ref(),
            &[7, 1]
        );
        assert!(matches!(
            upcast(STEPS, "a.b", 3, 3, &[7]),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn refuses_newer_missing_and_failing_steps() {
        let newer = upcast(STEPS, "a.b", 4, 3, &[]);
        assert!(matches!(
            newer,
            Err(Error::UnsupportedSchemaVersion {
                schema_version: 4,
                ..
            })
        ));
        let missing = upcast(STEPS, "x.y", 1, 2, &[]);
        assert!(matches!(
            missing,
            Err(Error::UnsupportedSchemaVersion {
                schema_version: 1,
                ..
            })
        ));
        assert!(matches!(
            upcast(STEPS, "c.d", 1, 2, &[]),
            Err(Error::Decode { .. })
        ));
        assert!(missing_steps(STEPS, "a.b", 3).is_empty());
        assert_eq!(missing_steps(STEPS, "a.b", 4), vec![3]);
        assert_eq!(missing_steps(STEPS, "x.y", 3), vec![1, 2]);
    }
}
