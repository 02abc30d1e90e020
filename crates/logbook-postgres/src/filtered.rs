//! Filtered reads of the global log: a durable consumer's catch-up with its filter in the SQL.
//!
//! Owns: [`RowFilter`] (hidden stream prefix, stream id or prefix, event types),
//! [`PgStore::read_filtered_records`] and its [`FilteredPage`] (the matching rows, how far the
//! statement scanned, and the last scanned position not in an uncounted stream), and the bound
//! on one statement's scan ([`FILTER_SCAN_POSITIONS_MAX`]).
//! Never: fetches the payload of a row the filter rejects (the scan reads the `stream` and
//! `event_type` columns; only the rows of the page are joined back for their payload), reports
//! a scanned position above the log's head read in the same statement (so a row that commits
//! later is never passed over: positions are given under the append lock, in commit order, see
//! `store.rs`), or scans more than [`FILTER_SCAN_POSITIONS_MAX`] positions per statement.

use crate::error::{Error, Result};
use crate::store::{PgStore, check_row, first_row, page_limit, to_i64, to_u64};

/// The most positions one filtered read scans: a consumer of rare events over a long run of
/// rejected ones advances this far per statement (one round trip), never reading the rest.
pub const FILTER_SCAN_POSITIONS_MAX: u64 = 16_384;

/// Which rows a filtered read returns: every condition must hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowFilter<'a> {
    /// Rows of streams starting with this are never returned (the engine's reserved `$`
    /// streams); empty: none hidden.
    pub hidden_prefix: &'a str,
    /// `Some((text, true))`: streams starting with `text`; `Some((text, false))`: that stream
    /// only; `None`: every stream.
    pub stream: Option<(&'a str, bool)>,
    /// Only these event types; `None`: every type.
    pub event_types: Option<&'a [String]>,
    /// Positions of streams starting with this do not count in [`FilteredPage::counted`]
    /// (consumers' checkpoints); empty: every position counts.
    pub uncounted_prefix: &'a str,
}

/// One filtered page of the global log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilteredPage {
    /// The matching rows, in position order: position and envelope bytes.
    pub records: Vec<(u64, Vec<u8>)>,
    /// The last position the statement covered: every row from the start up to here that is
    /// not in `records` was rejected (or purged), and no row at or below it can commit later.
    /// Below the start position when nothing new was covered.
    pub through: u64,
    /// The last position up to `through` that is not in an uncounted stream (`None`: none).
    pub counted: Option<u64>,
}

/// One statement, so one snapshot: the head, the scan and the page agree. `scan` reads the
/// header columns of at most `$3 - $1 + 1` positions; only `page` rows are joined back to
/// `logbook_events` for their payload.
const FILTERED_PAGE_SQL: &str = "
WITH head AS (SELECT last_position FROM logbook_log),
scan AS MATERIALIZED (
    SELECT position, stream, event_type FROM logbook_events
    WHERE position >= $1 AND position <= $3
      AND position <= (SELECT last_position FROM head)
),
page AS (
    SELECT position FROM scan
    WHERE ($4 = '' OR NOT starts_with(stream, $4))
      AND ($5::text IS NULL OR CASE WHEN $6 THEN starts_with(stream, $5) ELSE stream = $5 END)
      AND ($7::text[] IS NULL OR event_type = ANY($7))
    ORDER BY position LIMIT $2
),
bound AS (
    SELECT CASE WHEN (SELECT count(*) FROM page) >= $2 THEN (SELECT max(position) FROM page)
                ELSE LEAST((SELECT last_position FROM head), $3) END AS through
)
SELECT e.position, e.stream, e.version, e.payload, b.through,
       (SELECT max(s.position) FROM scan s
        WHERE s.position <= b.through AND ($8 = '' OR NOT starts_with(s.stream, $8))) AS counted
FROM bound b
LEFT JOIN page p ON true
LEFT JOIN logbook_events e ON e.position = p.position
ORDER BY e.position";

impl PgStore {
    /// Up to `max` rows from `from_position` on that `filter` keeps, scanning at most
    /// [`FILTER_SCAN_POSITIONS_MAX`] positions, and how far the scan reached (see
    /// [`FilteredPage`]). The rejected rows' payloads are never read.
    pub async fn read_filtered_records(
        &self,
        from_position: u64,
        max: usize,
        filter: RowFilter<'_>,
    ) -> Result<FilteredPage> {
        let driver = |error| Error::from_driver("read_filtered", error);
        let from_position = from_position.max(1);
        let last_scanned = from_position.saturating_add(FILTER_SCAN_POSITIONS_MAX - 1);
        let limit = page_limit(max).max(1);
        let (stream, prefix) = match filter.stream {
            Some((text, prefix)) => (Some(text), prefix),
            None => (None, false),
        };
        let client = self.client("read_filtered").await?;
        let statement = client
            .prepare_cached(FILTERED_PAGE_SQL)
            .await
            .map_err(driver)?;
        let rows = client
            .query(
                &statement,
                &[
                    &to_i64(from_position),
                    &limit,
                    &to_i64(last_scanned),
                    &filter.hidden_prefix,
                    &stream,
                    &prefix,
                    &filter.event_types,
                    &filter.uncounted_prefix,
                ],
            )
            .await
            .map_err(driver)?;
        let first = first_row(&rows)?;
        let through: Option<i64> = first.try_get(4).map_err(driver)?;
        let through = match through {
            Some(through) => to_u64(through, "logbook_log", "singleton")?,
            None => from_position - 1,
        };
        let counted: Option<i64> = first.try_get(5).map_err(driver)?;
        let counted = counted
            .map(|counted| to_u64(counted, "logbook_events", "counted position"))
            .transpose()?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<_, Option<i64>>(0).map_err(driver)?.is_none() {
                continue; // The one row of an empty page.
            }
            let (position, bytes, _) = check_row(row)?;
            records.push((position, bytes.to_vec()));
        }
        Ok(FilteredPage {
            records,
            through,
            counted,
        })
    }
}
