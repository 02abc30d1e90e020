//! `mylog`: the logbook command-line tool for a service's own events (a background-task
//! registry). `dump`, `tail` and `append` show and accept its events as their serde JSON:
//!
//! ```sh
//! echo '{"stream": "task/7", "data": {"Started": {"name": "backup"}}}' \
//!   | cargo run -q -p logbook-cli --example mylog -- append /tmp/mylog
//! cargo run -q -p logbook-cli --example mylog -- dump /tmp/mylog --json
//! ```
//!
//! The crate's integration test `cli_custom_events.rs` runs this event type in process.

use logbook::serde::{Deserialize, Serialize};
use logbook::{Event, EventResult, codec};

/// The most bytes one task event's payload may decode from.
const TASK_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// A background-task registry's events: serde's default (externally tagged) enum JSON, e.g.
/// `{"Progressed": {"percent": 40}}` or `"Finished"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
pub enum TaskEvent {
    Started { name: String },
    Progressed { percent: u8 },
    Failed { reason: String, retry: bool },
    Finished,
}

impl Event for TaskEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::Started { .. } => "task.started",
            TaskEvent::Progressed { .. } => "task.progressed",
            TaskEvent::Failed { .. } => "task.failed",
            TaskEvent::Finished => "task.finished",
        }
    }

    fn schema_version(&self) -> u16 {
        1
    }

    fn encode_payload(&self) -> EventResult<Vec<u8>> {
        codec::encode(self)
    }

    fn decode_payload(
        _event_type: &str,
        _schema_version: u16,
        payload: &[u8],
    ) -> EventResult<Self> {
        codec::decode(payload, TASK_PAYLOAD_BYTES_MAX)
    }
}

fn main() -> std::process::ExitCode {
    logbook_cli::run::<TaskEvent>()
}
