//! The one-round-trip group commit used by the group committer.
//!
//! Owns: [`commit_group`], which sends `BEGIN`, the append lock, ONE statement that checks
//! every request's expected version, gives versions and positions, inserts the events, the
//! stream heads and the log head, and `COMMIT`, all pipelined on one connection: the client
//! waits for nothing while the append lock is held, so the lock is held for the server's own
//! work and the commit only. The envelopes are encoded by the client with version 0 and the
//! statement writes each event's version into its envelope (bytes 4..12, little-endian, see
//! docs/format.md), so the stored bytes are exactly what [`logbook_projection::Envelope`]
//! encodes.
//! Never: takes two requests of one stream in one call (the statement checks each request
//! against the head before the group; the committer defers a second request of a stream to
//! the next group), reads heads before the lock is granted (the statement takes its snapshot
//! when it starts, after the lock statement before it completed), or reports a group as
//! committed unless every statement, the `COMMIT` included, succeeded.

use crate::error::{Error, Result};
use crate::store::{APPEND_LOCK_KEY, AppendRequest, Appended};
use crate::{ExpectedVersion, error};
use logbook_projection::Envelope;

/// Byte offset of the stream version in an envelope (after magic, format, codec, reserved).
const ENVELOPE_VERSION_OFFSET: i32 = 4;

/// The append statement. Parameters: per request `$1` stream, `$2` expectation kind (0 any,
/// 1 no stream, 2 stream exists, 3 exact), `$3` exact version, `$4` event count; per event
/// `$5` request number (1-based), `$6` offset in its request, `$7` event type, `$8` schema
/// version, `$9` codec, `$10` timestamp, `$11` envelope with version 0. Returns one row per
/// request: number, passed, deleted, head version before, first position.
const APPEND_SQL: &str = "
WITH req AS (
    SELECT r.i, r.stream, r.kind, r.exact, r.cnt, s.head_version,
           coalesce(s.deleted, false) AS deleted,
           -- Visible: an event no soft delete or truncation removed (the engine's rule:
           -- `NoStream` matches a stream without one, its versions continuing).
           coalesce(s.head_version + 1 > s.truncated_before, false) AS visible
    FROM unnest($1::text[], $2::smallint[], $3::bigint[], $4::bigint[])
         WITH ORDINALITY AS r(stream, kind, exact, cnt, i)
    -- A lateral lookup with LIMIT is never flattened into a join: one index probe per
    -- request. (As a plain join, the generic plan of this prepared statement, which guesses
    -- 10 requests, hashes a sequential scan of every stream row while the table is small
    -- enough: about 1,000 rows read per group at 1,000 streams.)
    LEFT JOIN LATERAL (
        SELECT head_version, deleted, truncated_before FROM logbook_streams
        WHERE logbook_streams.stream = r.stream LIMIT 1) s ON true
), checked AS (
    SELECT req.*, (NOT deleted AND CASE kind
        WHEN 0 THEN true
        WHEN 1 THEN NOT visible
        WHEN 2 THEN visible
        ELSE head_version IS NOT DISTINCT FROM exact END) AS passed
    FROM req
), placed AS (
    SELECT checked.*, coalesce(head_version + 1, 0) AS first_version,
           (SELECT last_position FROM logbook_log) + coalesce(sum(cnt) FILTER (WHERE passed)
               OVER (ORDER BY i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::bigint
               AS before_position
    FROM checked
), events AS (
    INSERT INTO logbook_events (position, stream, version, event_type, schema_version, codec,
        timestamp_ms, payload)
    SELECT p.before_position + e.off + 1, p.stream, p.first_version + e.off, e.event_type,
           e.schema_version, e.codec, e.timestamp_ms,
           overlay(e.envelope PLACING LE8(p.first_version + e.off) FROM OFFSET FOR 8)
    FROM unnest($5::bigint[], $6::bigint[], $7::text[], $8::integer[], $9::smallint[],
                $10::bigint[], $11::bytea[])
         AS e(req, off, event_type, schema_version, codec, timestamp_ms, envelope)
    JOIN placed p ON p.i = e.req AND p.passed
), heads AS (
    INSERT INTO logbook_streams (stream, head_version)
    SELECT stream, first_version + cnt - 1 FROM placed WHERE passed AND cnt > 0
    ON CONFLICT (stream) DO UPDATE SET head_version = EXCLUDED.head_version
), log AS (
    UPDATE logbook_log SET last_position = last_position
        + (SELECT coalesce(sum(cnt), 0)::bigint FROM placed WHERE passed)
)
SELECT i, passed, deleted, head_version, before_position + 1 FROM placed ORDER BY i";

/// Opens the group's transaction. The append statement always runs its generic plan (one
/// index probe per request, see [`APPEND_SQL`]): left to choose, PostgreSQL compares the
/// generic plan's cost for its guess of 10 requests with a custom plan's for the real count,
/// and with one request per group it re-plans the statement on every append (measured:
/// 1,253 appends/s against 1,959 with one writer, `benches/compare postgres`).
const BEGIN_SQL: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// The statement with its placeholders filled (built once).
fn append_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(build_append_sql)
}

/// [`APPEND_SQL`] with `LE8(x)` written out as x in 8 little-endian bytes.
fn build_append_sql() -> String {
    let mut le8 = "'\\x0000000000000000'::bytea".to_string();
    for byte in 0..8 {
        le8 = format!(
            "set_byte({le8}, {byte}, ((X >> {}) & 255)::integer)",
            8 * byte
        );
    }
    let start = ENVELOPE_VERSION_OFFSET + 1;
    let expression = "p.first_version + e.off";
    APPEND_SQL
        .replace(
            &format!("LE8({expression})"),
            &le8.replace('X', &format!("({expression})")),
        )
        .replace("FROM OFFSET FOR 8", &format!("FROM {start} FOR 8"))
}

/// The parameter arrays of one group.
#[derive(Default)]
struct Params {
    streams: Vec<String>,
    kinds: Vec<i16>,
    exacts: Vec<i64>,
    counts: Vec<i64>,
    event_requests: Vec<i64>,
    offsets: Vec<i64>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    codecs: Vec<i16>,
    timestamps_ms: Vec<i64>,
    envelopes: Vec<Vec<u8>>,
}

fn params(requests: &[AppendRequest], now_ms: u64) -> Params {
    let mut params = Params::default();
    for (number, request) in (1i64..).zip(requests) {
        let (kind, exact) = match request.expected {
            ExpectedVersion::Any => (0, 0),
            ExpectedVersion::NoStream => (1, 0),
            ExpectedVersion::StreamExists => (2, 0),
            ExpectedVersion::Exact(version) => (3, i64::try_from(version).unwrap_or(-1)),
        };
        params.streams.push(request.stream.as_str().to_string());
        params.kinds.push(kind);
        params.exacts.push(exact);
        params.counts.push(request.events.len() as i64);
        for (offset, data) in (0i64..).zip(&request.events) {
            // Version 0 here; the statement writes the real one in.
            // The time the appender stated, else `now_ms`: the column is the envelope's.
            let envelope = Envelope::new(request.stream.clone(), 0, now_ms, data.clone());
            params.event_requests.push(number);
            params.offsets.push(offset);
            params.event_types.push(data.event_type().to_string());
            params
                .schema_versions
                .push(i32::from(data.schema_version()));
            params.codecs.push(i16::from(data.codec()));
            params
                .timestamps_ms
                .push(i64::try_from(envelope.timestamp_ms()).unwrap_or(i64::MAX));
            params.envelopes.push(envelope.encode());
        }
    }
    params
}

/// Commits `requests` (at most one per stream) in one pipelined round trip on `client`.
/// Returns one outcome per request; the outer error means nothing was committed, or (a
/// retryable error) that the outcome is unknown.
pub(crate) async fn commit_group(
    client: &deadpool_postgres::Object,
    requests: &[AppendRequest],
    now_ms: u64,
) -> Result<Vec<Result<Appended>>> {
    let driver = |error| Error::from_driver("append", error);
    let (lock, append) = tokio::try_join!(
        client.prepare_cached("SELECT pg_advisory_xact_lock($1)"),
        client.prepare_cached(append_sql()),
    )
    .map_err(driver)?;
    let p = params(requests, now_ms);
    let append_params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
        &p.streams,
        &p.kinds,
        &p.exacts,
        &p.counts,
        &p.event_requests,
        &p.offsets,
        &p.event_types,
        &p.schema_versions,
        &p.codecs,
        &p.timestamps_ms,
        &p.envelopes,
    ];
    // One round trip: the four go out in this order before any answer is read. A failure
    // aborts the transaction, and the server then turns the COMMIT into a ROLLBACK.
    let (begun, locked, rows, committed) = tokio::join!(
        client.batch_execute(BEGIN_SQL),
        client.execute(&lock, &[&APPEND_LOCK_KEY]),
        client.query(&append, &append_params),
        client.batch_execute("COMMIT"),
    );
    // Errors in statement order: after the first, the others only say "aborted" (25P02).
    begun.map_err(driver)?;
    locked.map_err(driver)?;
    let rows = rows.map_err(driver)?;
    // Durability: the group is committed only when COMMIT itself succeeded.
    committed.map_err(driver)?;
    outcomes(requests, &rows)
}

fn outcomes(
    requests: &[AppendRequest],
    rows: &[tokio_postgres::Row],
) -> Result<Vec<Result<Appended>>> {
    let driver = |error| Error::from_driver("append", error);
    if rows.len() != requests.len() {
        return Err(error::Error::Corrupted {
            table: "logbook_events",
            key: "append group".to_string(),
            reason: format!("{} outcomes for {} requests", rows.len(), requests.len()),
        });
    }
    let mut outcomes = Vec::with_capacity(requests.len());
    for (request, row) in requests.iter().zip(rows) {
        let passed: bool = row.try_get(1).map_err(driver)?;
        let deleted: bool = row.try_get(2).map_err(driver)?;
        let head: Option<i64> = row.try_get(3).map_err(driver)?;
        let first_position: i64 = row.try_get(4).map_err(driver)?;
        let stream = request.stream.as_str();
        let corrupted = |value: i64| Error::Corrupted {
            table: "logbook_streams",
            key: stream.to_string(),
            reason: format!("negative value {value}"),
        };
        let last_version = match head {
            Some(version) => Some(u64::try_from(version).map_err(|_| corrupted(version))?),
            None => None,
        };
        let first_position =
            u64::try_from(first_position).map_err(|_| corrupted(first_position))?;
        outcomes.push(match (passed, deleted) {
            (true, _) => Ok(Appended {
                first_version: last_version.map_or(0, |version| version + 1),
                first_position,
                count: request.events.len() as u64,
            }),
            (false, true) => Err(Error::StreamDeleted {
                stream: stream.to_string(),
            }),
            (false, false) => Err(Error::WrongExpectedVersion {
                stream: stream.to_string(),
                expected: request.expected,
                actual: last_version,
            }),
        });
    }
    Ok(outcomes)
}
