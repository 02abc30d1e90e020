//! Checking a log in a PostgreSQL database: what `logbook verify <postgres-url>` (and `repair`
//! on a URL) reports.
//!
//! Owns: [`RemoteVerifyReport`] and its checks, run by [`RemoteLog::verify`] over pages of raw
//! rows ([`logbook_postgres::EventRow`]): every envelope decodes and agrees with its row's
//! columns; positions are positive, strictly increasing and not beyond
//! `logbook_log.last_position`; each stream's versions ascend with positions; engine events
//! decode; every stream with rows has a `logbook_streams` row whose head is its newest row, that
//! is not deleted, and whose truncation point is at or below its oldest row; a stream whose
//! visible versions should have rows has some; deletes and truncations recorded by engine
//! events are reflected in the stream rows; snapshot rows decode and lie within the log.
//!
//! What is NOT damage (see docs/format.md, "PostgreSQL schema"): gaps in positions (purged
//! events leave them, a copied-in log keeps its own), versions below a stream's
//! `truncated_before`, a deleted stream without rows. Gaps in a stream's versions above its
//! truncation point are notes, not damage: a log copied in from a directory keeps the gaps its
//! compaction (superseded latest-only events) or a keep-intact repair left; in a log written
//! only through PostgreSQL they mean rows were removed outside logbook.
//!
//! Must never: write, lock, stop at the first problem, panic on any byte read (decode errors
//! are findings), hold more than one page of rows plus one small tally per stream, or list
//! more than [`REMOTE_FINDINGS_MAX`] findings (the rest are counted).

use super::remote::RemoteLog;
use super::verify::Severity;
use crate::backend::postgres::from_store;
use crate::error::Result;
use crate::system::{Hidden, SYSTEM_STREAM, SystemEvent};
use logbook_compaction::decode_snapshot;
use logbook_postgres::{EventRow, StreamRow};
use logbook_projection::EnvelopeRef;
use std::collections::HashMap;

/// Rows read per round trip.
const VERIFY_PAGE_ROWS: usize = 1000;

/// The most findings a report lists; later ones are counted in
/// [`RemoteVerifyReport::findings_not_listed`].
pub const REMOTE_FINDINGS_MAX: usize = 1000;

/// One problem in a database's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFinding {
    /// How serious it is.
    pub severity: Severity,
    /// The table.
    pub table: &'static str,
    /// The row: `position N`, `stream S`, `singleton`.
    pub row: String,
    /// What is wrong.
    pub reason: String,
}

/// What [`RemoteLog::verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteVerifyReport {
    /// The database (`host:port/dbname`, never the password).
    pub target: String,
    /// The schema version found.
    pub schema_version: i32,
    /// `logbook_log.last_position`.
    pub head_position: i64,
    /// Event rows checked.
    pub events: u64,
    /// Bytes of their envelopes.
    pub bytes: u64,
    /// Stream rows checked.
    pub streams: u64,
    /// Snapshot rows checked.
    pub snapshots: u64,
    /// The checks that ran, in order.
    pub checks: Vec<&'static str>,
    /// The problems, in table and key order.
    pub findings: Vec<RemoteFinding>,
    /// Findings over [`REMOTE_FINDINGS_MAX`], not listed.
    pub findings_not_listed: u64,
    /// Corruption findings over [`REMOTE_FINDINGS_MAX`] (counted in `findings_not_listed`).
    pub corruptions_not_listed: u64,
}

impl RemoteVerifyReport {
    /// True when nothing is damaged (notes are fine).
    pub fn is_clean(&self) -> bool {
        self.corruptions_not_listed == 0
            && self
                .findings
                .iter()
                .all(|finding| finding.severity < Severity::Corruption)
    }

    /// Corruption findings, listed or not.
    pub fn corruptions(&self) -> u64 {
        self.findings
            .iter()
            .filter(|finding| finding.severity == Severity::Corruption)
            .count() as u64
            + self.corruptions_not_listed
    }

    fn find(&mut self, severity: Severity, table: &'static str, row: String, reason: String) {
        if self.findings.len() >= REMOTE_FINDINGS_MAX {
            self.findings_not_listed += 1;
            if severity == Severity::Corruption {
                self.corruptions_not_listed += 1;
            }
            return;
        }
        self.findings.push(RemoteFinding {
            severity,
            table,
            row,
            reason,
        });
    }

    fn corrupt(&mut self, table: &'static str, row: String, reason: String) {
        self.find(Severity::Corruption, table, row, reason);
    }
}

/// The checks, in the order they run.
const CHECKS: &[&str] = &[
    "schema version",
    "logbook_log.last_position",
    "event envelopes decode and agree with their columns (stream, version, type, schema \
     version, codec, timestamp)",
    "positions positive, strictly increasing, at most logbook_log.last_position",
    "stream versions ascend with positions",
    "engine events decode",
    "stream rows: head is the newest row, no rows of deleted streams or below truncated_before, \
     visible versions have rows, deletes and truncations recorded",
    "snapshot rows decode, their positions match and lie within the log",
];

/// What the event rows of one stream showed.
#[derive(Debug, Default)]
struct Tally {
    rows: u64,
    first_version: i64,
    first_position: i64,
    last_version: i64,
    last_position: i64,
    /// Versions missing between two rows, and the first such gap.
    missing: u64,
    first_gap: Option<(i64, i64)>,
}

/// What engine events said happened to a stream.
#[derive(Debug, Default, Clone, Copy)]
struct Purges {
    deleted_at: Option<i64>,
    /// The highest `before_version` of a truncation or soft delete, and where.
    below: Option<(u64, i64)>,
}

impl RemoteLog {
    /// Checks the database's log (see the module docs for what is and is not damage). Reads
    /// only. An error means the check could not run (the server went away); damage is in the
    /// report.
    pub async fn verify(&self) -> Result<RemoteVerifyReport> {
        let store = &self.store;
        let mut report = RemoteVerifyReport {
            target: store.target().to_string(),
            checks: CHECKS.to_vec(),
            ..RemoteVerifyReport::default()
        };
        report.schema_version = store.schema_version().await.map_err(from_store)?;
        if report.schema_version != logbook_postgres::schema::SCHEMA_VERSION {
            report.corrupt(
                "logbook_schema",
                "singleton".to_string(),
                format!(
                    "schema version {}, this logbook reads {}",
                    report.schema_version,
                    logbook_postgres::schema::SCHEMA_VERSION
                ),
            );
        }
        report.head_position = store.last_position_row().await.map_err(from_store)?;
        if report.head_position < 0 {
            report.corrupt(
                "logbook_log",
                "singleton".to_string(),
                format!("negative last_position {}", report.head_position),
            );
        }
        let mut tallies: HashMap<String, Tally> = HashMap::new();
        let mut purges: HashMap<String, Purges> = HashMap::new();
        let mut after = 0i64;
        loop {
            let page = store
                .event_rows_after(after, VERIFY_PAGE_ROWS)
                .await
                .map_err(from_store)?;
            let Some(last) = page.last().map(|row| row.position) else {
                break;
            };
            for row in &page {
                check_event_row(&mut report, &mut tallies, &mut purges, after, row);
                after = row.position;
            }
            after = after.max(last);
        }
        let mut after: Option<String> = None;
        loop {
            let page = store
                .stream_rows_after(after.as_deref(), VERIFY_PAGE_ROWS)
                .await
                .map_err(from_store)?;
            let Some(last) = page.last().map(|row| row.stream.clone()) else {
                break;
            };
            for row in &page {
                report.streams += 1;
                let tally = tallies.remove(&row.stream);
                let purge = purges.remove(&row.stream);
                check_stream_row(&mut report, row, tally.as_ref(), purge);
            }
            after = Some(last);
        }
        let mut orphans: Vec<(String, Tally)> = tallies.into_iter().collect();
        orphans.sort_by_key(|(_, tally)| tally.first_position);
        for (stream, tally) in orphans {
            report.corrupt(
                "logbook_events",
                format!("position {}", tally.first_position),
                format!(
                    "stream {stream} has {} rows (positions {}..={}) but no logbook_streams row",
                    tally.rows, tally.first_position, tally.last_position
                ),
            );
        }
        let mut purged: Vec<(String, Purges)> = purges.into_iter().collect();
        purged.sort_by(|a, b| a.0.cmp(&b.0));
        for (stream, purge) in purged {
            // An engine event purged a stream that has no stream row at all.
            let at = purge
                .deleted_at
                .or(purge.below.map(|(_, position)| position))
                .unwrap_or(0);
            report.corrupt(
                "logbook_streams",
                format!("stream {stream}"),
                format!(
                    "missing: the engine event at position {at} deleted or truncated it, so the \
                     stream must have a row recording that"
                ),
            );
        }
        self.verify_snapshots(&mut report).await?;
        Ok(report)
    }

    async fn verify_snapshots(&self, report: &mut RemoteVerifyReport) -> Result<()> {
        let store = &self.store;
        let mut before: Option<i64> = None;
        loop {
            let page = store
                .snapshot_rows_before(before, VERIFY_PAGE_ROWS)
                .await
                .map_err(from_store)?;
            let Some(last) = page.last().map(|row| row.position) else {
                break;
            };
            for row in &page {
                report.snapshots += 1;
                let key = format!("position {}", row.position);
                if row.position > report.head_position {
                    report.corrupt(
                        "logbook_snapshots",
                        key.clone(),
                        format!(
                            "beyond the log's last position {}: it describes events that do not \
                             exist (derived data: the engine skips it)",
                            report.head_position
                        ),
                    );
                }
                let payload = match store.snapshot_payload(row.position).await {
                    Ok(Some(payload)) => payload,
                    Ok(None) => continue, // Removed meanwhile (a compaction beside us).
                    Err(error @ logbook_postgres::Error::TooLarge { .. }) => {
                        report.corrupt("logbook_snapshots", key, error.to_string());
                        continue;
                    }
                    Err(error) => return Err(from_store(error)),
                };
                report.bytes += payload.len() as u64;
                match decode_snapshot(&payload) {
                    Err(error) => report.corrupt(
                        "logbook_snapshots",
                        key,
                        format!("{error} (derived data: the engine skips this snapshot)"),
                    ),
                    Ok(snapshot) if i64::try_from(snapshot.position).ok() != Some(row.position) => {
                        report.corrupt(
                            "logbook_snapshots",
                            key,
                            format!(
                                "the snapshot's header says position {} (derived data: the \
                                 engine skips this snapshot)",
                                snapshot.position
                            ),
                        );
                    }
                    Ok(_) => {}
                }
            }
            before = Some(last);
        }
        Ok(())
    }
}

/// The columns of `row` that disagree with its envelope, in words (empty: all agree).
fn column_mismatches(row: &EventRow, envelope: &EnvelopeRef<'_>) -> Vec<String> {
    let mut wrong = Vec::new();
    if envelope.stream != row.stream {
        wrong.push(format!(
            "stream column {:?}, envelope {:?}",
            row.stream, envelope.stream
        ));
    }
    if i64::try_from(envelope.stream_version).ok() != Some(row.version) {
        wrong.push(format!(
            "version column {}, envelope {}",
            row.version, envelope.stream_version
        ));
    }
    if envelope.event_type != row.event_type {
        wrong.push(format!(
            "event_type column {:?}, envelope {:?}",
            row.event_type, envelope.event_type
        ));
    }
    if i32::from(envelope.schema_version) != row.schema_version {
        wrong.push(format!(
            "schema_version column {}, envelope {}",
            row.schema_version, envelope.schema_version
        ));
    }
    if i16::from(envelope.codec) != row.codec {
        wrong.push(format!(
            "codec column {}, envelope {}",
            row.codec, envelope.codec
        ));
    }
    if i64::try_from(envelope.timestamp_ms).ok() != Some(row.timestamp_ms) {
        wrong.push(format!(
            "timestamp_ms column {}, envelope {}",
            row.timestamp_ms, envelope.timestamp_ms
        ));
    }
    wrong
}

/// Checks one event row (`previous`: the position before it, 0 for the first).
fn check_event_row(
    report: &mut RemoteVerifyReport,
    tallies: &mut HashMap<String, Tally>,
    purges: &mut HashMap<String, Purges>,
    previous: i64,
    row: &EventRow,
) {
    report.events += 1;
    report.bytes += row.payload.len() as u64;
    let key = format!("position {}", row.position);
    if row.position <= 0 {
        report.corrupt(
            "logbook_events",
            key.clone(),
            "position not positive".into(),
        );
    } else if row.position <= previous {
        report.corrupt(
            "logbook_events",
            key.clone(),
            format!("positions do not increase: it follows position {previous}"),
        );
    }
    if row.position > report.head_position {
        report.corrupt(
            "logbook_events",
            key.clone(),
            format!(
                "beyond logbook_log.last_position {}: the next append would reuse the position",
                report.head_position
            ),
        );
    }
    match EnvelopeRef::decode(&row.payload) {
        Err(error) => report.corrupt(
            "logbook_events",
            key.clone(),
            format!(
                "the payload ({} bytes) is not a valid envelope: {error}",
                row.payload.len()
            ),
        ),
        Ok(envelope) => {
            let wrong = column_mismatches(row, &envelope);
            if !wrong.is_empty() {
                report.corrupt(
                    "logbook_events",
                    key.clone(),
                    format!(
                        "the envelope disagrees with the row's columns: {}",
                        wrong.join("; ")
                    ),
                );
            }
            if envelope.stream == SYSTEM_STREAM && row.stream == SYSTEM_STREAM {
                match SystemEvent::decode_record(envelope.event_type, envelope.payload) {
                    Err(reason) => report.corrupt("logbook_events", key.clone(), reason),
                    Ok(event) => {
                        let purge = purges.entry(event.stream().to_string()).or_default();
                        match event.hides() {
                            Hidden::All => purge.deleted_at = Some(row.position),
                            Hidden::Below(version) => {
                                if purge.below.is_none_or(|(before, _)| version >= before) {
                                    purge.below = Some((version, row.position));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if row.version < 0 {
        report.corrupt(
            "logbook_events",
            key,
            format!("negative version {}", row.version),
        );
        return;
    }
    let tally = tallies.entry(row.stream.clone()).or_default();
    if tally.rows == 0 {
        tally.first_version = row.version;
        tally.first_position = row.position;
    } else if row.version <= tally.last_version {
        let reason = format!(
            "stream {} version {} comes after version {} (position {}): versions must ascend \
             with positions",
            row.stream, row.version, tally.last_version, tally.last_position
        );
        report.corrupt("logbook_events", key, reason);
    } else if row.version > tally.last_version + 1 {
        tally.missing += u64::try_from(row.version - tally.last_version - 1).unwrap_or(0);
        tally
            .first_gap
            .get_or_insert((tally.last_version + 1, row.version - 1));
    }
    tally.rows += 1;
    tally.last_version = tally.last_version.max(row.version);
    tally.last_position = row.position;
}

/// Checks one `logbook_streams` row against the event rows of its stream (`tally`) and the
/// engine events that purged it.
fn check_stream_row(
    report: &mut RemoteVerifyReport,
    row: &StreamRow,
    tally: Option<&Tally>,
    purge: Option<Purges>,
) {
    let key = format!("stream {}", row.stream);
    let table = "logbook_streams";
    if row.truncated_before < 0 || row.head_version.is_some_and(|head| head < 0) {
        report.corrupt(
            table,
            key,
            format!(
                "negative head_version {:?} or truncated_before {}",
                row.head_version, row.truncated_before
            ),
        );
        return;
    }
    let next_version = row.head_version.map_or(0, |head| head + 1);
    if row.truncated_before > next_version {
        report.corrupt(
            table,
            key.clone(),
            format!(
                "truncated_before {} is beyond the next version {next_version}",
                row.truncated_before
            ),
        );
    }
    if let Some(purge) = purge {
        if let Some(position) = purge.deleted_at
            && !row.deleted
        {
            report.corrupt(
                table,
                key.clone(),
                format!(
                    "not marked deleted, but the engine event at position {position} deleted it"
                ),
            );
        }
        if let Some((before, position)) = purge.below
            && !row.deleted
            && u64::try_from(row.truncated_before).unwrap_or(0) < before
        {
            report.corrupt(
                table,
                key.clone(),
                format!(
                    "truncated_before {}, but the engine event at position {position} removed \
                     every version below {before}",
                    row.truncated_before
                ),
            );
        }
    }
    let Some(tally) = tally.filter(|tally| tally.rows > 0) else {
        // No rows: fine when deleted, or when every version was removed.
        if !row.deleted && row.truncated_before < next_version {
            report.corrupt(
                table,
                key,
                format!(
                    "versions {}..={} are visible but the stream has no event rows",
                    row.truncated_before,
                    next_version - 1
                ),
            );
        }
        return;
    };
    let rows = format!(
        "{} rows, versions {}..={} at positions {}..={}",
        tally.rows,
        tally.first_version,
        tally.last_version,
        tally.first_position,
        tally.last_position
    );
    if row.deleted {
        report.corrupt(
            table,
            key.clone(),
            format!("deleted, but its event rows remain ({rows})"),
        );
    }
    match row.head_version {
        None => report.corrupt(
            table,
            key.clone(),
            format!("head_version is NULL, but the stream has event rows ({rows})"),
        ),
        Some(head) if head != tally.last_version => report.corrupt(
            table,
            key.clone(),
            format!(
                "head_version {head}, but the newest row is version {} at position {}",
                tally.last_version, tally.last_position
            ),
        ),
        Some(_) => {}
    }
    if tally.first_version < row.truncated_before {
        report.corrupt(
            table,
            key.clone(),
            format!(
                "truncated_before {}, but version {} (position {}) is still there",
                row.truncated_before, tally.first_version, tally.first_position
            ),
        );
    } else if tally.first_version > row.truncated_before || tally.missing > 0 {
        let below = (tally.first_version - row.truncated_before).max(0);
        let mut gaps = Vec::new();
        if below > 0 {
            gaps.push(format!(
                "versions {}..={} (before its oldest row)",
                row.truncated_before,
                tally.first_version - 1
            ));
        }
        if let Some((first, last)) = tally.first_gap {
            gaps.push(format!(
                "{} versions between rows, the first {first}..={last}",
                tally.missing
            ));
        }
        report.find(
            Severity::Note,
            table,
            key,
            format!(
                "versions missing above truncated_before {}: {} (legitimate in a log copied in \
                 from a compacted or keep-intact-repaired directory; in a log written only \
                 through PostgreSQL, rows were removed outside logbook)",
                row.truncated_before,
                gaps.join("; ")
            ),
        );
    }
}
