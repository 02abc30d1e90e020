//! Poisoning of the engine: after a failure it cannot undo in-process, the engine stops writing.
//!
//! Owns: the first such failure, with its position and cause: a failed WAL write or fsync (the
//! outcome of the records not yet durable is unknown), or a durable record that could not be
//! applied to the stream catalog or the projections (the live state would differ from a
//! replay). From then on every append, delete, truncation, sync, snapshot and read-your-writes
//! wait fails with [`Error::Poisoned`]; reads of the log itself keep working, and the
//! projections keep the state they had before the failed record. Must never: be cleared (only
//! a reopen, which replays the log, starts afresh), or be set for a failure of derived data the
//! engine rebuilds anyway (the sled stream index).

use crate::engine::Shared;
use crate::error::{Error, Result};
use std::sync::OnceLock;

/// Why the engine refuses writes: the first failure it could not recover from in-process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// The first position whose outcome is unknown: not durable (a failed write or fsync), or
    /// durable but not applied (a failed apply). Events below it were durable and applied.
    pub position: u64,
    /// What failed.
    pub reason: String,
}

impl Poison {
    /// The typed error every refused call gets.
    pub(crate) fn error(&self) -> Error {
        Error::Poisoned {
            position: self.position,
            reason: self.reason.clone(),
        }
    }
}

/// The engine's poison, set at most once.
#[derive(Debug, Default)]
pub(crate) struct PoisonCell(OnceLock<Poison>);

impl PoisonCell {
    /// Records a failure unless an earlier one is recorded; returns the one recorded.
    pub(crate) fn set(&self, position: u64, reason: String) -> &Poison {
        self.0.get_or_init(|| {
            tracing::error!(position, %reason, "the log is poisoned: writes refused until reopened");
            Poison { position, reason }
        })
    }
}

impl Shared {
    /// The engine's poison, if any (a lock-free read: it is on every request's path).
    pub(crate) fn poison(&self) -> Option<&Poison> {
        self.poisoned.0.get()
    }

    /// [`Shared::poison`], adopting a WAL poisoned behind the engine's back (a failed buffer
    /// write or segment roll under an append, or the `Interval` sync thread) at the first
    /// position that is not durable.
    pub(crate) fn adopt_wal_poison(&self) -> Option<&Poison> {
        if let Some(poison) = self.poison() {
            return Some(poison);
        }
        let wal = &self.files.as_ref()?.wal;
        let reason = wal.poisoned_reason()?;
        let reason = format!("a WAL write or sync failed: {reason}");
        Some(self.poison_at(wal.durable_position() + 1, reason))
    }

    /// Poisons the engine at `position` (first failure wins) and wakes `wait_applied` callers.
    pub(crate) fn poison_at(&self, position: u64, reason: String) -> &Poison {
        let poison = self.poisoned.set(position, reason);
        // Same value, but every waiter wakes and sees the poison.
        self.applied.send_modify(|_| {});
        poison
    }

    /// `Err(Error::Poisoned)` once the engine (or its WAL) is poisoned.
    pub(crate) fn check_poison(&self) -> Result<()> {
        match self.adopt_wal_poison() {
            Some(poison) => Err(poison.error()),
            None => Ok(()),
        }
    }
}
