//! Following the global log without gaps: catch-up reads by position, a wake-up on new
//! commits, a periodic poll as the safety net.
//!
//! Owns: [`Follower`] (a cursor on the global log that waits for the next page), and the
//! store's `WakeHub`: ONE `LISTEN` connection per store (clones share it; open one store per
//! process), outside the pool, started by the first follower, reconnected by itself after a
//! dropped connection (every follower re-reads then, since notifications sent meanwhile are
//! lost), and closed when the last follower and store handle are gone.
//! Catching up, a follower reads ahead: while its caller handles a full page, the next
//! [`FollowOptions::read_ahead`] pages are already being read, each on its own pooled
//! connection (see [`Follower`] for why a page read ahead is never a gap).
//! Never: learns of events from a notification's payload (a wake-up only says "read from your
//! position"), relies on notifications alone (each follower polls every
//! [`FollowOptions::poll_interval`]), or skips a position: positions are given in commit
//! order under the append lock (see [`crate::store`]), so `position >= next` is complete.

use crate::error::Result;
use crate::listener::Listener;
use crate::store::{PgStore, READ_PAGE_MAX};
use logbook_projection::RawEvent;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a follower reads even without a wake-up (notifications are lost while the
/// listener reconnects, or when a NOTIFY could not be sent).
pub const FOLLOW_POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Events per page a follower reads by default.
pub const FOLLOW_PAGE_DEFAULT: usize = 1000;
/// The wait before the listener connects again after losing its connection.
pub const LISTENER_RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// Pages a catching-up follower reads ahead by default (see [`FollowOptions::read_ahead`]).
pub const FOLLOW_READ_AHEAD_DEFAULT: usize = 2;
/// The most pages a follower reads ahead (a larger [`FollowOptions::read_ahead`] is clamped).
pub const FOLLOW_READ_AHEAD_MAX: usize = 8;

/// How a [`Follower`] reads.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// The safety-net poll.
    pub poll_interval: Duration,
    /// Events per page (clamped to [`crate::READ_PAGE_MAX`]).
    pub page_max: usize,
    /// Pages read ahead while catching up (0: none; clamped to [`FOLLOW_READ_AHEAD_MAX`]).
    /// Each is read on a connection of the store's pool, so a follower holds up to
    /// `1 + read_ahead` pages in memory and up to `read_ahead` pooled connections. Pages are
    /// read ahead only after a full page (when the log's head is near, a follower reads
    /// one page at a time, as without read-ahead).
    pub read_ahead: usize,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            poll_interval: FOLLOW_POLL_INTERVAL_DEFAULT,
            page_max: FOLLOW_PAGE_DEFAULT,
            read_ahead: FOLLOW_READ_AHEAD_DEFAULT,
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
///
/// Read-ahead: after a full page ending at position `L` (read from `s`, `page` rows), the
/// follower starts reading the next pages at `s + page`, `s + 2 * page`, ... without waiting
/// for `L`. A page read from `s'` is a contiguous run of the log from `s'`; it continues the
/// previous full page when `s' <= L + 1`, which always holds (the previous page holds `page`
/// distinct positions from `s' - page`, so `L >= s' - 1`); rows it repeats (at or below `L`,
/// only where positions were purged) are dropped. After a page that is not full (the head was
/// reached at that read's snapshot), every page read ahead is thrown away: a later read from
/// beyond that head could miss positions committed in between.
pub struct Follower {
    store: PgStore,
    wakes: watch::Receiver<u64>,
    next_position: u64,
    options: FollowOptions,
    /// Pages being read ahead, in position order; each starts where the one before it (or
    /// the cursor, for the first) would continue if full.
    ahead: VecDeque<Ahead>,
}

/// A page being read ahead: where its read starts, the read, and the wake-up count when it
/// started (a wake-up after that may be for rows the read did not see).
struct Ahead {
    from: u64,
    kind: Kind,
    read: JoinHandle<Result<Fetched>>,
    wakes_at_start: u64,
}

/// What a page read returns: [`PgStore::read_all`] or [`PgStore::read_all_records_through`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Events,
    Records,
}

/// One page as read.
enum Fetched {
    Events(Vec<RawEvent>),
    /// The records and the position the page covers the log through.
    Records(Vec<(u64, Vec<u8>)>, u64),
}

impl Fetched {
    fn len(&self) -> usize {
        match self {
            Fetched::Events(events) => events.len(),
            Fetched::Records(records, _) => records.len(),
        }
    }
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Follower")
            .field("next_position", &self.next_position)
            .field("pages_ahead", &self.ahead.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.drop_ahead();
    }
}

/// Reads one page of `kind` from `from`.
async fn read_page(store: PgStore, kind: Kind, from: u64, limit: usize) -> Result<Fetched> {
    match kind {
        Kind::Events => store.read_all(from, limit).await.map(Fetched::Events),
        Kind::Records => store
            .read_all_records_through(from, limit)
            .await
            .map(|(records, through)| Fetched::Records(records, through)),
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
            ahead: VecDeque::new(),
        }
    }

    /// The position the next page starts at.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Rows per page: the options' page size as the store clamps it.
    fn page_limit(&self) -> usize {
        self.options.page_max.min(READ_PAGE_MAX)
    }

    fn drop_ahead(&mut self) {
        for ahead in self.ahead.drain(..) {
            ahead.read.abort();
        }
    }

    /// The wake-up count now (it only grows).
    fn wakes_now(&self) -> u64 {
        *self.wakes.borrow()
    }

    /// After a page that was not full: waits for a wake-up, unless one came after the read of
    /// that page started (`wakes_at_start`), whose rows the read may not have seen (a page read
    /// ahead can be older than the call that took it): then returns at once, to read again.
    async fn wait_after(&mut self, wakes_at_start: u64) {
        if *self.wakes.borrow_and_update() != wakes_at_start {
            return;
        }
        let woken = tokio::time::timeout(self.options.poll_interval, self.wakes.changed());
        if let Ok(Err(_)) = woken.await {
            // The listener task is gone (the runtime is shutting down): poll only.
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    /// Reads the page at the cursor: the oldest page read ahead when it fits (same kind,
    /// starting at or before the cursor), else a read made now. Returns the page as read
    /// (rows before the cursor included), whether it was full, and the wake-up count when its
    /// read started. Cancel-safe: a page read ahead stays queued until its read has returned.
    async fn fetch(&mut self, kind: Kind) -> Result<(Fetched, bool, u64)> {
        let limit = self.page_limit();
        if self
            .ahead
            .front()
            .is_some_and(|front| front.kind != kind || front.from > self.next_position)
        {
            self.drop_ahead();
        }
        let (fetched, wakes_at_start) = match self.ahead.front_mut() {
            Some(front) => {
                let joined = (&mut front.read).await;
                let wakes_at_start = front.wakes_at_start;
                self.ahead.pop_front();
                match joined {
                    Ok(Ok(fetched)) => (fetched, wakes_at_start),
                    Ok(Err(error)) => {
                        self.drop_ahead();
                        return Err(error);
                    }
                    Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                    Err(_) => {
                        // Cancelled: only `drop_ahead` aborts, and it empties the queue first.
                        self.drop_ahead();
                        let wakes_at_start = self.wakes_now();
                        let read = read_page(self.store.clone(), kind, self.next_position, limit);
                        (read.await?, wakes_at_start)
                    }
                }
            }
            None => {
                let wakes_at_start = self.wakes_now();
                let read = read_page(self.store.clone(), kind, self.next_position, limit);
                (read.await?, wakes_at_start)
            }
        };
        let full = limit > 0 && fetched.len() >= limit;
        Ok((fetched, full, wakes_at_start))
    }

    /// After a full page: keeps [`FollowOptions::read_ahead`] pages being read, each from
    /// where the previous one would continue if full. After any other page: reads none.
    fn read_ahead(&mut self, kind: Kind, full: bool) {
        if !full {
            self.drop_ahead();
            return;
        }
        let limit = self.page_limit() as u64;
        let wanted = self.options.read_ahead.min(FOLLOW_READ_AHEAD_MAX);
        while self.ahead.len() < wanted {
            let from = match self.ahead.back() {
                Some(back) => back.from.saturating_add(limit),
                None => self.next_position,
            };
            let wakes_at_start = self.wakes_now();
            let read = tokio::spawn(read_page(self.store.clone(), kind, from, limit as usize));
            self.ahead.push_back(Ahead {
                from,
                kind,
                read,
                wakes_at_start,
            });
        }
    }

    /// Waits for and returns the next non-empty page. An error (retryable ones included)
    /// leaves the cursor where it was: call again to retry.
    pub async fn next_page(&mut self) -> Result<Vec<RawEvent>> {
        loop {
            let (fetched, full, wakes_at_start) = self.fetch(Kind::Events).await?;
            let Fetched::Events(mut page) = fetched else {
                unreachable!("an events read returned records")
            };
            let cursor = self.next_position;
            page.retain(|event| event.position >= cursor);
            debug_assert!(page.is_sorted_by(|a, b| a.position < b.position));
            if let Some(last) = page.last() {
                self.next_position = last.position + 1;
            }
            self.read_ahead(Kind::Events, full);
            if !page.is_empty() {
                return Ok(page);
            }
            if full {
                // Every row of a full page read ahead was before the cursor: read on.
                continue;
            }
            self.wait_after(wakes_at_start).await;
        }
    }

    /// [`Follower::next_page`] as stored ([`PgStore::read_all_records_through`]): each
    /// event's position and envelope bytes, checked against the row but not copied into an
    /// [`logbook_projection::Envelope`], and the position the page covers the log through
    /// (purged positions included). Returns when the cursor moved: a page can hold no record
    /// when only purged positions were passed. What the engine applies.
    pub async fn next_records(&mut self) -> Result<(Vec<(u64, Vec<u8>)>, u64)> {
        loop {
            let (fetched, full, wakes_at_start) = self.fetch(Kind::Records).await?;
            let Fetched::Records(mut records, through) = fetched else {
                unreachable!("a records read returned events")
            };
            let cursor = self.next_position;
            records.retain(|(position, _)| *position >= cursor);
            debug_assert!(records.is_sorted_by(|a, b| a.0 < b.0));
            if through >= self.next_position {
                assert!(
                    records.last().is_none_or(|(last, _)| *last <= through),
                    "a page beyond what it covers"
                );
                self.next_position = through + 1;
                self.read_ahead(Kind::Records, full);
                return Ok((records, through));
            }
            assert!(records.is_empty(), "records but no progress");
            self.read_ahead(Kind::Records, full);
            if full {
                continue;
            }
            self.wait_after(wakes_at_start).await;
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
