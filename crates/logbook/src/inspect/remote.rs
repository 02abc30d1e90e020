//! Reading a log in a PostgreSQL database without opening the engine: what
//! `logbook dump <postgres-url>` uses.
//!
//! Owns: [`RemoteEvents`], filtered pages of a database's events through a read-only store
//! (`default_transaction_read_only`, no DDL: the schema must exist and be one this code knows).
//! Must never: write (not even the schema), or read past the filter's `to` or `limit`.

use super::EventFilter;
use crate::backend::postgres::from_store;
use crate::error::Result;
use logbook_projection::RawEvent;

/// Events read per round trip.
pub const REMOTE_PAGE_EVENTS: usize = 1000;

/// The events of a database's log that a filter selects, page by page.
pub struct RemoteEvents {
    store: logbook_postgres::PgStore,
    filter: EventFilter,
    next: u64,
    taken: usize,
    done: bool,
}

impl RemoteEvents {
    /// Opens the database at `url` read-only and starts at the filter's `from`.
    pub async fn open(url: &str, filter: EventFilter) -> Result<RemoteEvents> {
        let store = logbook_postgres::PgStore::open_read_only(
            url,
            logbook_postgres::StoreOptions {
                pool_size: 1,
                ..logbook_postgres::StoreOptions::default()
            },
        )
        .await
        .map_err(from_store)?;
        Ok(RemoteEvents {
            store,
            next: filter.from.unwrap_or(1).max(1),
            filter,
            taken: 0,
            done: false,
        })
    }

    /// The next selected events (empty once the log, `to` or `limit` is reached).
    pub async fn next_page(&mut self) -> Result<Vec<RawEvent>> {
        let mut selected = Vec::new();
        while selected.is_empty() && !self.done {
            let page = self
                .store
                .read_all(self.next, REMOTE_PAGE_EVENTS)
                .await
                .map_err(from_store)?;
            let Some(last) = page.last() else {
                self.done = true;
                break;
            };
            self.next = last.position + 1;
            for raw in page {
                if self.filter.to.is_some_and(|to| raw.position > to)
                    || self.filter.limit.is_some_and(|limit| self.taken >= limit)
                {
                    self.done = true;
                    break;
                }
                let envelope = &raw.envelope;
                let selected_stream = self
                    .filter
                    .stream
                    .as_deref()
                    .is_none_or(|stream| stream == envelope.stream().as_str());
                let selected_type = self
                    .filter
                    .event_type
                    .as_deref()
                    .is_none_or(|event_type| event_type == envelope.event_type());
                if selected_stream && selected_type {
                    self.taken += 1;
                    selected.push(raw);
                }
            }
        }
        Ok(selected)
    }
}
