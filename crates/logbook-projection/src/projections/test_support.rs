//! A tiny in-memory log for the projections' unit tests: events go through the real envelope
//! encoding, commands are validated like the engine will, and any state can be replayed.

use std::collections::BTreeMap;
use std::fmt::Debug;

use super::ValidateCommand;
use crate::envelope::Envelope;
use crate::error::Result;
use crate::event::{NewEvent, RawEvent, RecordedEvent};
use crate::model::BuiltinEvent;
use crate::projection::Projection;
use crate::stream::StreamId;

/// A built-in projection with its command validation.
pub(crate) trait Checked:
    Projection<Event = BuiltinEvent> + ValidateCommand + Default + Clone + PartialEq + Debug
{
}

impl<P> Checked for P where
    P: Projection<Event = BuiltinEvent> + ValidateCommand + Default + Clone + PartialEq + Debug
{
}

/// The events appended so far, with the stream versions and a clock.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) events: Vec<RecordedEvent<BuiltinEvent>>,
    versions: BTreeMap<String, u64>,
    pub(crate) now_ms: u64,
}

impl Log {
    /// Validates like a command, then appends and applies.
    pub(crate) fn append<P: Checked>(
        &mut self,
        projection: &mut P,
        stream: &str,
        event: BuiltinEvent,
    ) -> Result<()> {
        let stream_id = StreamId::new(stream)?;
        projection.validate(&stream_id, &event, self.now_ms + 1)?;
        self.force(projection, stream, event);
        Ok(())
    }

    /// Appends and applies without validation, like a writer that skipped it.
    pub(crate) fn force<P: Projection<Event = BuiltinEvent>>(
        &mut self,
        projection: &mut P,
        stream: &str,
        event: BuiltinEvent,
    ) {
        let stream = StreamId::new(stream).expect("test stream id");
        let version = self.versions.entry(stream.as_str().to_owned()).or_default();
        self.now_ms += 1;
        let data = NewEvent::new(event).to_data().expect("valid test event");
        let bytes = Envelope::new(stream, *version, self.now_ms, data).encode();
        *version += 1;
        let position = self.events.len() as u64 + 1;
        let raw = RawEvent::decode_record(position, &bytes).expect("envelope");
        let recorded = raw.decode::<BuiltinEvent>().expect("payload");
        projection.apply(&recorded);
        self.events.push(recorded);
    }

    /// A fresh projection rebuilt from every event.
    pub(crate) fn replay<P: Checked>(&self) -> P {
        let mut projection = P::default();
        for event in &self.events {
            projection.apply(event);
        }
        projection
    }
}
