//! The cost of the read-back check `NewEvent::to_data` runs on every appended event (issue 12
//! item 1): each case side by side, in the same criterion group, with the same work minus the
//! check (encode the payload and build the `EventData`, what `to_data` did before).
//!
//! | group                    | event                                                         |
//! | ------------------------ | ------------------------------------------------------------- |
//! | `event_check_200b`       | a service enum with one 198-letter string: a 200-byte payload |
//! | `event_check_builtin`    | the built-in `room.message_posted`, whose decode validates    |
//! | `event_check_hash_map`   | a `HashMap` of 32 entries: the re-encoding comes out reordered |
//!
//! Run with `cargo bench -p logbook-benches --bench event_check`; criterion prints the time per
//! event for `encode_only` (baseline) and `to_data_checked`.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use logbook_projection::model::RoomMessagePosted;
use logbook_projection::{BuiltinEvent, Event, EventData, NewEvent, codec};
use serde::{Deserialize, Serialize};

/// Letters in the 200-byte event's body: bincode adds a variant byte and a length byte.
const BODY_BYTES: usize = 198;
/// Entries of the hash map event.
const MAP_ENTRIES: u32 = 32;
/// The most bytes a payload of these events may decode from.
const PAYLOAD_BYTES_MAX: usize = 1 << 20;

/// The compare bench's event: a service enum whose payload is 200 bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Posted {
    Posted { body: String },
}

/// An event with a hash map field.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scores {
    by_player: HashMap<String, u32>,
}

macro_rules! bincode_event {
    ($name:ident, $event_type:literal) => {
        impl Event for $name {
            fn event_type(&self) -> &'static str {
                $event_type
            }

            fn schema_version(&self) -> u16 {
                1
            }

            fn encode_payload(&self) -> logbook_projection::Result<Vec<u8>> {
                codec::encode(self)
            }

            fn decode_payload(
                _event_type: &str,
                _schema_version: u16,
                payload: &[u8],
            ) -> logbook_projection::Result<Self> {
                codec::decode(payload, PAYLOAD_BYTES_MAX)
            }
        }
    };
}
bincode_event!(Posted, "bench.posted");
bincode_event!(Scores, "bench.scores");

/// What `NewEvent::to_data` did before the check: encode, then validate type and length.
fn encode_only<E: Event>(event: &NewEvent<E>) -> EventData {
    let payload = event.event.encode_payload().expect("encode");
    EventData::new(
        event.event.event_type(),
        event.event.schema_version(),
        payload,
    )
    .expect("data")
    .with_codec(E::CODEC)
    .expect("codec")
}

fn compare<E: Event>(criterion: &mut Criterion, group: &str, event: NewEvent<E>) {
    let mut group = criterion.benchmark_group(group);
    group.bench_function("encode_only", |bencher| {
        bencher.iter(|| encode_only(black_box(&event)))
    });
    group.bench_function("to_data_checked", |bencher| {
        bencher.iter(|| black_box(&event).to_data().expect("reads back"))
    });
    group.finish();
}

fn event_check(criterion: &mut Criterion) {
    let body: String = (0..BODY_BYTES)
        .map(|index| char::from(b'a' + (index * 7 % 26) as u8))
        .collect();
    let posted = NewEvent::new(Posted::Posted { body });
    assert_eq!(encode_only(&posted).payload().len(), 200);
    compare(criterion, "event_check_200b", posted);

    let builtin = NewEvent::new(BuiltinEvent::from(RoomMessagePosted {
        message_id: "m-0001".into(),
        author: "ada".into(),
        body: "hello, this is a message of a plausible length for a chat room".into(),
    }));
    compare(criterion, "event_check_builtin", builtin);

    let scores = Scores {
        by_player: (0..MAP_ENTRIES)
            .map(|player| (format!("player-{player}"), player))
            .collect(),
    };
    compare(criterion, "event_check_hash_map", NewEvent::new(scores));
}

criterion_group!(benches, event_check);
criterion_main!(benches);
