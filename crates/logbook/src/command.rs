//! The generic command path: load a projection's state, decide, append with the version the
//! decision saw, retry on conflict.
//!
//! Owns: [`Logbook::execute`] and its error, [`CommandError`]. It is the custom-event
//! counterpart of `BuiltinLog::execute`: a service's own validation ("a finished task cannot
//! progress") runs against durable state, and a concurrent writer to the same stream makes the
//! append fail with a version conflict and the decision run again on the newer state, instead
//! of slipping past the check. Must never: append what a decision made on state older than the
//! stream's version it appends after (the expected version is the head the state was waited
//! for), retry without bound, or retry anything but a version conflict.

use crate::engine::Logbook;
use crate::error::Error;
use crate::streams::ExpectedVersion;
use crate::writer::AppendResult;
use crate::{AppendDurability, ProjectionHandle};
use logbook_projection::{Event, NewEvent, Projection, StreamId};

/// How many times [`Logbook::execute`] runs a decision before it gives up on a stream that
/// keeps changing under it and returns the last version conflict.
pub const EXECUTE_ATTEMPTS_MAX: u32 = 16;

/// Why [`Logbook::execute`] appended nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<R> {
    /// The decision refused the command (the service's own reason); nothing was written.
    #[error("command rejected: {0}")]
    Rejected(R),
    /// The log failed, or the stream kept changing for [`EXECUTE_ATTEMPTS_MAX`] attempts
    /// ([`Error::WrongExpectedVersion`]); nothing of this command was written.
    #[error(transparent)]
    Log(#[from] Error),
}

impl<E: Event> Logbook<E> {
    /// Runs a command against one stream: waits until `projection` has applied the stream's
    /// newest event, calls `decide` with that state, and appends the events it returns with
    /// the stream's version as the expected one (`NoStream` when it has none). If another
    /// writer appended to the stream in between, the append fails with a version conflict,
    /// and `decide` runs again on the newer state (at most [`EXECUTE_ATTEMPTS_MAX`] times).
    ///
    /// `decide` returns the events to append (one atomic batch; an empty vector appends
    /// nothing and returns `Ok(None)`), or `Err(reason)` to refuse the command:
    /// [`CommandError::Rejected`]. It may run several times, so it must not have side
    /// effects. The version check covers `stream` only: a decision that also reads other
    /// streams' state is not protected against their concurrent changes.
    ///
    /// The crate-level example ([`crate`]) runs a whole command flow.
    pub async fn execute<P, R, F>(
        &self,
        projection: &ProjectionHandle<P>,
        stream: &StreamId,
        decide: F,
    ) -> std::result::Result<Option<AppendResult>, CommandError<R>>
    where
        P: Projection<Event = E>,
        F: FnMut(&P) -> std::result::Result<Vec<E>, R>,
    {
        self.execute_with(projection, stream, AppendDurability::Policy, decide)
            .await
    }

    /// [`Logbook::execute`] with a chosen durability.
    pub async fn execute_with<P, R, F>(
        &self,
        projection: &ProjectionHandle<P>,
        stream: &StreamId,
        durability: AppendDurability,
        mut decide: F,
    ) -> std::result::Result<Option<AppendResult>, CommandError<R>>
    where
        P: Projection<Event = E>,
        F: FnMut(&P) -> std::result::Result<Vec<E>, R>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            debug_assert!(attempt <= EXECUTE_ATTEMPTS_MAX);
            // The head includes appends accepted but not yet durable: waiting for it to be
            // applied means the state below is at least as new as `expected`. If it is newer
            // (another append applied meanwhile), the append below fails and we decide again.
            let head = self.stream_head(stream);
            if let Some((_, position)) = head {
                self.wait_applied(position).await?;
            }
            let expected = head.map_or(ExpectedVersion::NoStream, |(version, _)| {
                ExpectedVersion::Exact(version)
            });
            let events = {
                let state = projection.read();
                decide(&state).map_err(CommandError::Rejected)?
            };
            if events.is_empty() {
                return Ok(None);
            }
            let events = events.into_iter().map(NewEvent::new).collect();
            match self.append_with(stream, expected, events, durability).await {
                Ok(result) => return Ok(Some(result)),
                Err(Error::WrongExpectedVersion { .. }) if attempt < EXECUTE_ATTEMPTS_MAX => {
                    tracing::debug!(%stream, attempt, "command lost a version race; deciding again");
                }
                Err(error) => return Err(CommandError::Log(error)),
            }
        }
    }
}
