//! Following the global log without gaps: catch-up reads by position, a wake-up on new
//! commits, a periodic poll as the safety net.
//!
//! Owns: [`Follower`] (a cursor on the global log that waits for the next page), and the
//! store's `WakeHub`: ONE `LISTEN` connection per store (clones share it; open one store per
//! process), outside the pool, started by the first follower, reconnected by itself after a
//! dropped connection (every follower re-reads then, since notifications sent meanwhile are
//! lost), and closed when the last follower and store handle are gone.
//! Never: learns of events from a notification's payload (a wake-up only says "read from your
//! position"), relies on notifications alone (each follower polls every
//! [`FollowOptions::poll_interval`]), or skips a position: positions are given in commit
//! order under the append lock (see [`crate::store`]), so `position >= next` is complete.

use crate::error::Result;
use crate::listener::Listener;
use crate::store::PgStore;
use logbook_projection::RawEvent;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// How often a follower reads even without a wake-up (notifications are lost while the
/// listener reconnects, or when a NOTIFY could not be sent).
pub const FOLLOW_POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Events per page a follower reads by default.
pub const FOLLOW_PAGE_DEFAULT: usize = 1000;
/// The wait before the listener connects again after losing its connection.
pub const LISTENER_RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// How a [`Follower`] reads.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// The safety-net poll.
    pub poll_interval: Duration,
    /// Events per page (clamped to [`crate::READ_PAGE_MAX`]).
    pub page_max: usize,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            poll_interval: FOLLOW_POLL_INTERVAL_DEFAULT,
            page_max: FOLLOW_PAGE_DEFAULT,
        }
    }
}

/// The store's one listener, shared by its followers: a counter bumped on every wake-up.
#[derive(Default)]
pub(crate) struct WakeHub {
    receiver: Mutex<Option<watch::Receiver<u64>>>,
}

impl WakeHub {
    /// A receiver of wake-ups, starting the listener task on first use.
    fn subscribe(&self, store: &PgStore) -> watch::Receiver<u64> {
        let mut slot = match self.receiver.lock() {
            Ok(slot) => slot,
            // A panic while holding this lock left nothing half-written: a receiver or none.
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(receiver) = slot.as_ref() {
            return receiver.clone();
        }
        let (sender, receiver) = watch::channel(0u64);
        tokio::spawn(listen(
            store.config().clone(),
            store.target().to_string(),
            sender,
        ));
        *slot = Some(receiver.clone());
        receiver
    }
}

/// The listener task: listens, bumps the counter on each notification, reconnects after a
/// loss; ends when every receiver is gone.
async fn listen(config: tokio_postgres::Config, target: String, sender: watch::Sender<u64>) {
    let bump = |sender: &watch::Sender<u64>| sender.send_modify(|count| *count += 1);
    loop {
        if let Ok(mut listener) = Listener::connect_with(&config, &target).await {
            // Events committed while no listener was connected sent no wake-up we saw.
            bump(&sender);
            loop {
                tokio::select! {
                    () = sender.closed() => return,
                    woken = listener.wait(FOLLOW_POLL_INTERVAL_DEFAULT) => match woken {
                        Ok(true) => {
                            // Fold the wake-ups already queued into this one.
                            listener.drain();
                            bump(&sender);
                        }
                        Ok(false) => {}
                        Err(_) => break,
                    },
                }
            }
        }
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep(LISTENER_RECONNECT_DELAY) => {}
        }
    }
}

/// A cursor on the global log: [`Follower::next_page`] returns the next events in position
/// order, waiting for them.
pub struct Follower {
    store: PgStore,
    wakes: watch::Receiver<u64>,
    next_position: u64,
    options: FollowOptions,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Follower")
            .field("next_position", &self.next_position)
            .finish_non_exhaustive()
    }
}

impl Follower {
    pub(crate) fn new(
        store: PgStore,
        hub: std::sync::Arc<WakeHub>,
        from_position: u64,
        options: FollowOptions,
    ) -> Follower {
        let wakes = hub.subscribe(&store);
        Follower {
            store,
            wakes,
            next_position: from_position.max(1),
            options,
        }
    }

    /// The position the next page starts at.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Waits for and returns the next non-empty page. An error (retryable ones included)
    /// leaves the cursor where it was: call again to retry.
    pub async fn next_page(&mut self) -> Result<Vec<RawEvent>> {
        loop {
            // Marked before the read: a wake-up that arrives during the read is not lost.
            self.wakes.borrow_and_update();
            let page = self
                .store
                .read_all(self.next_position, self.options.page_max)
                .await?;
            if let Some(last) = page.last() {
                assert!(last.position >= self.next_position, "a page went backwards");
                self.next_position = last.position + 1;
                return Ok(page);
            }
            let woken = tokio::time::timeout(self.options.poll_interval, self.wakes.changed());
            if let Ok(Err(_)) = woken.await {
                // The listener task is gone (the runtime is shutting down): poll only.
                tokio::time::sleep(self.options.poll_interval).await;
            }
        }
    }

    /// [`Follower::next_page`] as stored ([`PgStore::read_all_records_through`]): each
    /// event's position and envelope bytes, checked against the row but not copied into an
    /// [`logbook_projection::Envelope`], and the position the page covers the log through
    /// (purged positions included). Returns when the cursor moved: a page can hold no record
    /// when only purged positions were passed. What the engine applies.
    pub async fn next_records(&mut self) -> Result<(Vec<(u64, Vec<u8>)>, u64)> {
        loop {
            // Marked before the read: a wake-up that arrives during the read is not lost.
            self.wakes.borrow_and_update();
            let (records, through) = self
                .store
                .read_all_records_through(self.next_position, self.options.page_max)
                .await?;
            debug_assert!(records.is_sorted_by(|a, b| a.0 < b.0));
            if through >= self.next_position {
                assert!(
                    records
                        .first()
                        .is_none_or(|(first, _)| *first >= self.next_position),
                    "a page went backwards"
                );
                assert!(
                    records.last().is_none_or(|(last, _)| *last <= through),
                    "a page beyond what it covers"
                );
                self.next_position = through + 1;
                return Ok((records, through));
            }
            assert!(records.is_empty(), "records but no progress");
            let woken = tokio::time::timeout(self.options.poll_interval, self.wakes.changed());
            if let Ok(Err(_)) = woken.await {
                // The listener task is gone (the runtime is shutting down): poll only.
                tokio::time::sleep(self.options.poll_interval).await;
            }
        }
    }

    /// Like [`Follower::next_page`], but gives up after `timeout` with an empty page.
    pub async fn next_page_within(&mut self, timeout: Duration) -> Result<Vec<RawEvent>> {
        match tokio::time::timeout(timeout, self.next_page()).await {
            Ok(page) => page,
            Err(_) => Ok(Vec::new()),
        }
    }
}
