//! The event model a binary is built for: how events are shown as JSON, made from an `append`
//! line and written.
//!
//! Owns: [`Model`] and its two implementations, [`Builtin`] (the `logbook` binary: the built-in
//! event model, its JSON through `BuiltinEvent::to_json`/`from_json`, writes through
//! `BuiltinLog::execute` with its validation) and [`Serde`] (a service's own event type, whose
//! JSON is its serde JSON, written through `Logbook::append`). The engine's own events (stream
//! `$logbook`) are shown the same way for both. Must never: change what the built-in model
//! prints or accepts (`dump --json` keys and text lines are a public contract), or panic on a
//! payload read from disk (an undecodable one is shown as hex).

use anyhow::{Result, anyhow};
use logbook::inspect::{DecodedPayload, decode_payload};
use logbook::system::{ConsumerEvent, SYSTEM_STREAM, SystemEvent};
use logbook::{
    AppendResult, BuiltinEvent, BuiltinLog, Event, ExpectedVersion, Logbook, LogbookOptions,
    NewEvent, RawEvent, StreamId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::path::Path;
use tokio::runtime::Runtime;

/// An event model: what the generic commands (`dump`, `tail`, `append`, `delete-stream`,
/// `truncate-stream`) need to know about the events of the log they work on.
pub trait Model: 'static {
    /// The writer of a log of this model.
    type Log;
    /// The events of this model.
    type Event: Event;

    /// Opens (or creates) the log in `dir` as its one writer.
    fn open(runtime: &Runtime, dir: &Path) -> logbook::Result<Self::Log>;

    /// The engine under the writer.
    fn logbook(log: &Self::Log) -> &Logbook<Self::Event>;

    /// Closes the writer.
    fn close(runtime: &Runtime, log: Self::Log) -> logbook::Result<()>;

    /// The JSON data of an event of this model that is not an engine event; `None` when it
    /// cannot be decoded.
    fn data(raw: &RawEvent) -> Option<serde_json::Value>;

    /// Makes one `append` input line into a stream, an event and an optional expected version.
    fn parse_line(
        text: &str,
        default_stream: Option<&str>,
    ) -> Result<(StreamId, Self::Event, Option<ExpectedVersion>)>;

    /// Appends one event whose expected version was checked before.
    fn append(
        runtime: &Runtime,
        log: &Self::Log,
        stream: &StreamId,
        event: Self::Event,
        expected: Option<ExpectedVersion>,
    ) -> logbook::Result<AppendResult>;
}

/// The built-in event model of the `logbook` binary.
#[derive(Debug)]
pub enum Builtin {}

impl Model for Builtin {
    type Log = BuiltinLog;
    type Event = BuiltinEvent;

    fn open(runtime: &Runtime, dir: &Path) -> logbook::Result<BuiltinLog> {
        let options = LogbookOptions::default();
        let (log, _) = match crate::cmd::postgres_url(dir) {
            Some(url) => runtime.block_on(BuiltinLog::open_postgres(&url, options))?,
            None => runtime.block_on(BuiltinLog::open(dir, options))?,
        };
        Ok(log)
    }

    fn logbook(log: &BuiltinLog) -> &Logbook<BuiltinEvent> {
        log.log()
    }

    fn close(runtime: &Runtime, log: BuiltinLog) -> logbook::Result<()> {
        runtime.block_on(log.close())
    }

    fn data(raw: &RawEvent) -> Option<serde_json::Value> {
        match decode_payload(raw) {
            DecodedPayload::Builtin(event) => Some(event.to_json()),
            _ => None,
        }
    }

    fn parse_line(
        text: &str,
        default_stream: Option<&str>,
    ) -> Result<(StreamId, BuiltinEvent, Option<ExpectedVersion>)> {
        crate::cmd::write::parse_builtin_line(text, default_stream)
    }

    fn append(
        runtime: &Runtime,
        log: &BuiltinLog,
        stream: &StreamId,
        event: BuiltinEvent,
        _expected: Option<ExpectedVersion>,
    ) -> logbook::Result<AppendResult> {
        // The expected version was checked just before; `execute` validates the event against
        // the built-in projections (what `append` has always done).
        runtime.block_on(log.execute(stream, event))
    }
}

/// A service's own event type, shown and accepted as its serde JSON.
#[derive(Debug)]
pub struct Serde<E>(PhantomData<E>);

/// One `append` input line for a service's own events.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SerdeLine {
    stream: Option<String>,
    /// Optional: when given, it must be the event type of `data`.
    #[serde(rename = "type", default)]
    event_type: Option<String>,
    data: serde_json::Value,
    #[serde(default)]
    expected_version: serde_json::Value,
}

impl<E> Model for Serde<E>
where
    E: Event + Serialize + DeserializeOwned,
{
    type Log = Logbook<E>;
    type Event = E;

    fn open(runtime: &Runtime, dir: &Path) -> logbook::Result<Logbook<E>> {
        let options = LogbookOptions::default();
        let (log, _) = match crate::cmd::postgres_url(dir) {
            Some(url) => runtime.block_on(Logbook::<E>::open_postgres(&url, options))?,
            None => runtime.block_on(Logbook::<E>::open(dir, options))?,
        };
        Ok(log)
    }

    fn logbook(log: &Logbook<E>) -> &Logbook<E> {
        log
    }

    fn close(runtime: &Runtime, log: Logbook<E>) -> logbook::Result<()> {
        runtime.block_on(log.close())
    }

    fn data(raw: &RawEvent) -> Option<serde_json::Value> {
        let recorded = raw.decode::<E>().ok()?;
        serde_json::to_value(&recorded.event).ok()
    }

    fn parse_line(
        text: &str,
        default_stream: Option<&str>,
    ) -> Result<(StreamId, E, Option<ExpectedVersion>)> {
        let line: SerdeLine = serde_json::from_str(text)
            .map_err(|error| anyhow!("invalid JSON: {}", crate::cmd::write::json_reason(&error)))?;
        let stream = crate::cmd::write::line_stream(line.stream.as_deref(), default_stream)?;
        let event: E = serde_json::from_value(line.data).map_err(|error| {
            anyhow!(
                "\"data\" is not an event of this log: {error} (it must be the event's serde \
                 JSON, as `dump --json` prints it)"
            )
        })?;
        if let Some(named) = line.event_type.as_deref()
            && named != event.event_type()
        {
            return Err(anyhow!(
                "\"type\" is {:?} but \"data\" is a {:?} event",
                crate::output::shorten(named, 64),
                event.event_type()
            ));
        }
        let expected = crate::cmd::write::expected_version(&line.expected_version)?;
        Ok((stream, event, expected))
    }

    fn append(
        runtime: &Runtime,
        log: &Logbook<E>,
        stream: &StreamId,
        event: E,
        expected: Option<ExpectedVersion>,
    ) -> logbook::Result<AppendResult> {
        let expected = expected.unwrap_or(ExpectedVersion::Any);
        runtime.block_on(log.append(stream, expected, vec![NewEvent::new(event)]))
    }
}

/// The JSON data of any event of a model's log: the engine's own events (stream `$logbook`,
/// and the consumers' checkpoints in `$consumer/<name>`) the same way for every model, the
/// others through the model; `None` when not decodable.
pub fn event_data<M: Model>(raw: &RawEvent) -> Option<serde_json::Value> {
    let stream = raw.envelope.stream().as_str();
    if stream == SYSTEM_STREAM {
        return SystemEvent::decode(raw.envelope.payload())
            .ok()
            .map(|event| system_json(&event));
    }
    if logbook::system::is_consumer_stream(stream) {
        return ConsumerEvent::decode_record(raw.envelope.event_type(), raw.envelope.payload())
            .ok()
            .map(|event| serde_json::json!({ "position": event.position() }));
    }
    M::data(raw)
}

/// The JSON form of an engine event's data.
fn system_json(event: &SystemEvent) -> serde_json::Value {
    match event {
        SystemEvent::StreamDeleted { stream } => serde_json::json!({ "stream": stream }),
        SystemEvent::StreamTruncated {
            stream,
            before_version,
        }
        | SystemEvent::StreamSoftDeleted {
            stream,
            before_version,
        } => serde_json::json!({ "stream": stream, "before_version": before_version }),
    }
}
