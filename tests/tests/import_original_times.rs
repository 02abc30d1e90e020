//! Imported events keep their original times (issue 16): the envelope's `timestamp_ms` of each
//! event `logbook::import` writes is the time the file recorded, so the built-in projections
//! and the read API (`room_history`, `run_events`, jobs, runs, rooms) show a room's messages
//! at their file times, a task registry's jobs at their created/updated/ended times and runs at
//! their start/end times, not at the import's time; on both backends, and again after a
//! reopen (the times are in the log, not only in memory). An ordinary append may state a time
//! too (`NewEvent::with_timestamp_ms`): positions stay the order.

use logbook::builtin_projections::JobStatus;
use logbook::import::{self, ImportFormat, original_time_ms};
use logbook::model::{RoomMessagePosted, RunStatus};
use logbook::{
    BuiltinEvent, BuiltinLog, Direction, ExpectedVersion, HistoryRequest, LogbookOptions, NewEvent,
    Order, StreamId,
};
use logbook_tests::backends::Home;
use logbook_tests::backends::import_fixture as fixture;
use logbook_tests::backends::small_stream;
use logbook_tests::on_both_backends;

async fn open(home: &Home) -> BuiltinLog {
    home.open_builtin(LogbookOptions::default()).await
}

/// The envelope timestamps of a stream's events, in version order.
async fn stream_times(log: &BuiltinLog, stream: &str) -> Vec<u64> {
    let events = small_stream(log, stream).await;
    events.iter().map(|event| event.timestamp_ms).collect()
}

/// What the read API shows of the three fixtures, checked after the import and after a reopen.
async fn check_fixture_times(log: &BuiltinLog) {
    {
        let jobs = log.jobs().read();
        let done = jobs.job("t-100").expect("t-100");
        assert_eq!(done.status, JobStatus::Succeeded);
        assert_eq!(done.queued_at_ms, 1_733_000_000_000);
        assert_eq!(done.updated_at_ms, 1_733_000_120_000);
        assert_eq!(done.ended_at_ms, Some(1_733_000_120_000));
        let running = jobs.job("t-101").expect("t-101");
        assert_eq!(running.queued_at_ms, 1_733_000_200_000);
        assert_eq!(running.updated_at_ms, 1_733_000_210_000);
        let claim = running.claim.as_ref().expect("claim");
        assert_eq!(claim.claimed_at_ms, 1_733_000_210_000);
        assert_eq!(running.ended_at_ms, None);
        let failed = jobs.job("t-102").expect("t-102");
        assert_eq!(
            (failed.queued_at_ms, failed.ended_at_ms),
            (1_733_000_300_000, Some(1_733_000_320_000))
        );
        let queued = jobs.job("t-103").expect("t-103");
        assert_eq!(
            (queued.queued_at_ms, queued.updated_at_ms),
            (1_733_000_400_000, 1_733_000_400_000)
        );
        let cancelled = jobs.job("t-104").expect("t-104");
        assert_eq!(cancelled.ended_at_ms, Some(1_733_000_510_000));
    }
    {
        let rooms = log.rooms().read();
        let research = rooms.room("research").expect("room");
        assert_eq!(research.created_at_ms, 1_733_000_000_000);
        assert_eq!(research.updated_at_ms, 1_733_000_004_000);
    }
    let history = log
        .room_history(
            "research",
            HistoryRequest {
                order: Order::OldestFirst,
                cursor: None,
                limit: 10,
            },
        )
        .await
        .expect("history");
    let messages: Vec<(&str, &str, u64)> = history
        .messages
        .iter()
        .map(|m| (m.message_id.as_str(), m.author.as_str(), m.timestamp_ms))
        .collect();
    assert_eq!(
        messages,
        vec![
            ("m1", "ada", 1_733_000_001_000),
            ("m2", "grace", 1_733_000_002_000),
            ("m3", "linus", 1_733_000_003_000),
            ("m4", "ada", 1_733_000_004_000),
        ]
    );
    {
        let ledger = log.runs().read();
        let root = ledger.run("r-root").expect("r-root");
        assert_eq!(root.status, RunStatus::Completed);
        assert_eq!(root.started_at_ms, 1_733_000_000_000);
        assert_eq!(root.ended_at_ms, Some(1_733_000_090_000));
        assert_eq!(root.updated_at_ms, 1_733_000_090_000);
        let child = ledger.run("r-child").expect("r-child");
        assert_eq!(
            (child.started_at_ms, child.ended_at_ms),
            (1_733_000_030_000, Some(1_733_000_045_000))
        );
        let paused = ledger.run("r-paused").expect("r-paused");
        assert_eq!(
            (
                paused.started_at_ms,
                paused.updated_at_ms,
                paused.ended_at_ms
            ),
            (1_733_000_060_000, 1_733_000_070_000, None)
        );
    }
    let (run_events, _) = log
        .run_events("r-root", Order::OldestFirst, None, 10)
        .await
        .expect("run events");
    let times: Vec<u64> = run_events.iter().map(|event| event.timestamp_ms).collect();
    assert_eq!(times, vec![1_733_000_010_000, 1_733_000_020_000]);
    // Every imported event's envelope time is the one its causation id records.
    for stream in ["job/t-100", "room/research", "run/r-root", "run/r-child"] {
        let stream_id = StreamId::new(stream).expect("stream");
        let events = log
            .log()
            .read_stream(&stream_id, 0, Direction::Forward, 1000)
            .await
            .expect("read");
        for event in &events {
            assert_eq!(
                original_time_ms(event.causation_id.as_deref()),
                Some(event.timestamp_ms),
                "{stream} version {}",
                event.version
            );
        }
    }
}

async fn imported_entities_show_their_original_times(home: Home) {
    let log = open(&home).await;
    let before = log.log().now_ms();
    for (format, name) in [
        (ImportFormat::Tasks, "tasks.json"),
        (ImportFormat::Room, "room.json"),
        (ImportFormat::Runs, "runs.json"),
    ] {
        import::import_file(&log, format, &fixture(name))
            .await
            .unwrap_or_else(|error| panic!("import {name}: {error}"));
    }
    check_fixture_times(&log).await;
    log.close().await.expect("close");
    // Rebuilt from the log: the times are the envelopes', not the import's memory.
    let log = open(&home).await;
    check_fixture_times(&log).await;
    // The marker is the engine's own append: stamped by its clock at the import.
    let markers: Vec<StreamId> = log
        .log()
        .read_all_raw(0, 100_000)
        .await
        .expect("read")
        .iter()
        .map(|raw| raw.envelope.stream().clone())
        .filter(|stream| stream.as_str().starts_with(import::MARKER_PREFIX))
        .collect();
    assert_eq!(markers.len(), 3);
    for marker in &markers {
        let times = stream_times(&log, marker.as_str()).await;
        assert!(times.iter().all(|&ms| ms >= before), "{times:?}");
    }
    log.close().await.expect("close");
}

on_both_backends!(
    imported_entities_show_their_original_times,
    imported_entities_show_their_original_times
);

/// A run event the file gives no time has the time of the event before it in its run (and a
/// causation id without one); the next recorded time is its own again.
async fn a_run_event_without_a_time_inherits_the_one_before(home: Home) {
    let log = open(&home).await;
    let file = r#"{"version": 1, "runs": [{"id": "r-1", "kind": "subagent", "agent_id": "a",
        "status": "running", "started_at_ms": 1700000000000,
        "events": [
          {"sequence": 1, "type": "note", "payload": "no time"},
          {"sequence": 2, "type": "note", "payload": "timed", "timestamp_ms": 1700000005000},
          {"sequence": 3, "type": "note", "payload": "no time again"}
        ]}]}"#;
    import::import_json(&log, ImportFormat::Runs, std::io::Cursor::new(file))
        .await
        .expect("import");
    assert_eq!(
        stream_times(&log, "run/r-1").await,
        vec![
            1_700_000_000_000,
            1_700_000_000_000,
            1_700_000_005_000,
            1_700_000_005_000
        ]
    );
    let stream = StreamId::run("r-1").expect("stream");
    let events = log
        .log()
        .read_stream(&stream, 0, Direction::Forward, 10)
        .await
        .expect("read");
    let recorded: Vec<Option<u64>> = events
        .iter()
        .map(|event| original_time_ms(event.causation_id.as_deref()))
        .collect();
    assert_eq!(
        recorded,
        vec![Some(1_700_000_000_000), None, Some(1_700_000_005_000), None]
    );
    log.close().await.expect("close");
}

on_both_backends!(
    a_run_event_without_a_time_inherits_the_one_before,
    a_run_event_without_a_time_inherits_the_one_before
);

/// An ordinary append may state its events' times: they need not follow the positions (which
/// stay the order), an event without one is stamped by the clock, and a time past
/// `TIMESTAMP_MS_MAX` is refused with nothing written.
async fn an_append_may_state_its_events_times(home: Home) {
    let log = open(&home).await;
    let stream = StreamId::room("lobby").expect("stream");
    let created = logbook::model::RoomCreated {
        name: "Lobby".to_owned(),
        topic: None,
        created_by: None,
    };
    let post = |id: &str| {
        BuiltinEvent::from(RoomMessagePosted {
            message_id: id.to_owned(),
            author: "ada".to_owned(),
            body: format!("message {id}"),
        })
    };
    let before = log.log().now_ms();
    let written = log
        .log()
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new(BuiltinEvent::from(created)).with_timestamp_ms(1_000_000),
                NewEvent::new(post("late")).with_timestamp_ms(3_000_000),
                NewEvent::new(post("early")).with_timestamp_ms(2_000_000),
                NewEvent::new(post("now")),
            ],
        )
        .await
        .expect("append");
    let times = stream_times(&log, "room/lobby").await;
    assert_eq!(times[..3], [1_000_000, 3_000_000, 2_000_000]);
    assert!(times[3] >= before, "{times:?}");
    let history = log
        .room_history("lobby", HistoryRequest::newest(10))
        .await
        .expect("history");
    let shown: Vec<(&str, u64)> = history
        .messages
        .iter()
        .map(|m| (m.message_id.as_str(), m.timestamp_ms))
        .collect();
    // Newest first by position, whatever the times say.
    assert_eq!(
        shown,
        vec![("now", times[3]), ("early", 2_000_000), ("late", 3_000_000)]
    );
    let refused = log
        .log()
        .append(
            &stream,
            ExpectedVersion::Exact(written.version),
            vec![NewEvent::new(post("far")).with_timestamp_ms(logbook::TIMESTAMP_MS_MAX + 1)],
        )
        .await;
    assert!(
        matches!(&refused, Err(logbook::Error::Event(_))),
        "{refused:?}"
    );
    assert_eq!(log.log().stream_version(&stream).expect("version"), Some(3));
    log.close().await.expect("close");
}

on_both_backends!(
    an_append_may_state_its_events_times,
    an_append_may_state_its_events_times
);
