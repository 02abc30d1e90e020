//! Stream deletion a service can live with: deleting a stream that never had an event is
//! `StreamNotFound` and writes nothing (unless `NoStream` says to reserve the name); deleting a
//! deleted stream again is `StreamDeleted`; a soft delete hides the stream's events and lets
//! the id be used again, its versions continuing, and the stream catalog (snapshot) and the
//! stream index (sled) agree on it after a reopen, with or without a snapshot.
//!
//! Before, `delete_stream` of a stream that never existed returned `Ok` and wrote a tombstone
//! (the first test failed on it), and a deleted id could never be used again.

use logbook::{Direction, Error, ExpectedVersion, Logbook, LogbookOptions, OpenReport, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::path::Path;

async fn open(dir: &Path) -> (Logbook<CounterEvent>, OpenReport) {
    Logbook::open(dir, test_options()).await.expect("open")
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("stream id")
}

/// The stream's visible versions, oldest first.
async fn versions(log: &Logbook<CounterEvent>, stream: &StreamId) -> Vec<u64> {
    log.read_stream(stream, 0, Direction::Forward, 100)
        .await
        .expect("read")
        .iter()
        .map(|event| event.version)
        .collect()
}

fn durable(log: &Logbook<CounterEvent>) -> u64 {
    log.stats().durable_position
}

#[tokio::test]
async fn deleting_a_stream_that_never_existed_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = open(dir.path()).await;
    log.append(&stream("there"), ExpectedVersion::Any, vec![added(1, "")])
        .await
        .expect("append");
    let before = durable(&log);
    let never = stream("never");
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(0),
    ] {
        let error = log.delete_stream(&never, expected).await.unwrap_err();
        assert!(matches!(error, Error::StreamNotFound { .. }), "{error}");
    }
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        let error = log.soft_delete_stream(&never, expected).await.unwrap_err();
        assert!(matches!(error, Error::StreamNotFound { .. }), "{error}");
    }
    assert!(error_text_names(&log, &never).await.contains("never"));
    assert_eq!(durable(&log), before, "a refused delete writes nothing");
    assert_eq!(log.stream_version(&never).expect("version"), None);
    log.append(&never, ExpectedVersion::NoStream, vec![added(1, "")])
        .await
        .expect("the name is still free");
    log.close().await.expect("close");
}

async fn error_text_names(log: &Logbook<CounterEvent>, stream: &StreamId) -> String {
    let error = log
        .delete_stream(stream, ExpectedVersion::Any)
        .await
        .unwrap_err();
    error.to_string()
}

#[tokio::test]
async fn no_stream_reserves_an_unused_name_and_a_second_delete_is_stream_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = open(dir.path()).await;
    let reserved = stream("reserved");
    log.delete_stream(&reserved, ExpectedVersion::NoStream)
        .await
        .expect("an explicit tombstone of an unused name");
    let error = log
        .append(&reserved, ExpectedVersion::Any, vec![added(1, "")])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error}");

    let used = stream("used");
    log.append(&used, ExpectedVersion::Any, vec![added(1, "")])
        .await
        .expect("append");
    log.delete_stream(&used, ExpectedVersion::Any)
        .await
        .expect("delete");
    let before = durable(&log);
    let error = log
        .delete_stream(&used, ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error}");
    let error = log
        .soft_delete_stream(&used, ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error}");
    assert_eq!(durable(&log), before, "a refused delete writes nothing");
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_soft_deleted_stream_continues_its_versions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = open(dir.path()).await;
    let session = stream("session");
    let events = (1..=3).map(|amount| added(amount, "old")).collect();
    log.append(&session, ExpectedVersion::NoStream, events)
        .await
        .expect("append");
    let error = log
        .soft_delete_stream(&session, ExpectedVersion::Exact(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::WrongExpectedVersion {
                actual: Some(2),
                ..
            }
        ),
        "{error}"
    );
    log.soft_delete_stream(&session, ExpectedVersion::Exact(2))
        .await
        .expect("soft delete");
    assert_eq!(versions(&log, &session).await, Vec::<u64>::new());
    assert_eq!(log.stream_version(&session).expect("version"), Some(2));
    // Accepted after a soft delete: Any, NoStream, Exact(last). Refused: StreamExists and any
    // other version.
    for refused in [ExpectedVersion::StreamExists, ExpectedVersion::Exact(1)] {
        let error = log
            .append(&session, refused, vec![added(9, "")])
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::WrongExpectedVersion { .. }),
            "{error}"
        );
    }
    // A sibling per accepted form, each soft-deleted at version 0.
    for accepted in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Any,
    ] {
        let sibling = stream(&format!("sibling-{accepted}").replace(' ', "-"));
        log.append(&sibling, ExpectedVersion::NoStream, vec![added(1, "")])
            .await
            .expect("append sibling");
        log.soft_delete_stream(&sibling, ExpectedVersion::Any)
            .await
            .expect("soft delete sibling");
        let written = log
            .append(&sibling, accepted, vec![added(2, "new")])
            .await
            .unwrap_or_else(|error| panic!("{accepted} after a soft delete: {error}"));
        assert_eq!(written.version, 1, "{accepted}");
    }
    let written = log
        .append(&session, ExpectedVersion::NoStream, vec![added(4, "new")])
        .await
        .expect("append after the soft delete");
    assert_eq!((written.first_version, written.version), (3, 3));
    log.append(
        &session,
        ExpectedVersion::StreamExists,
        vec![added(5, "new")],
    )
    .await
    .expect("the stream exists again");
    let error = log
        .append(&session, ExpectedVersion::NoStream, vec![added(6, "")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::WrongExpectedVersion { .. }),
        "{error}"
    );
    assert_eq!(versions(&log, &session).await, vec![3, 4]);
    // A hard delete after a soft one is a permanent tombstone.
    log.delete_stream(&session, ExpectedVersion::Exact(4))
        .await
        .expect("hard delete");
    let error = log
        .append(&session, ExpectedVersion::Any, vec![added(7, "")])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error}");
    log.close().await.expect("close");
}

/// What a reopened log answers about `stream`: version, visible versions, next append.
async fn answers(dir: &Path, stream: &StreamId) -> (Option<u64>, Vec<u64>, u64) {
    let (log, _) = open(dir).await;
    let version = log.stream_version(stream).expect("version");
    let visible = versions(&log, stream).await;
    let next = log
        .append(stream, ExpectedVersion::Any, vec![added(0, "probe")])
        .await
        .expect("append")
        .version;
    // The probe changes the log: callers pass a copy of the directory.
    log.close().await.expect("close");
    (version, visible, next)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[tokio::test]
async fn a_soft_delete_survives_reopen_with_and_without_snapshot_and_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let session = stream("session");
    {
        let (log, _) = open(dir.path()).await;
        let events = (1..=3).map(|amount| added(amount, "old")).collect();
        log.append(&session, ExpectedVersion::NoStream, events)
            .await
            .expect("append");
        log.soft_delete_stream(&session, ExpectedVersion::Any)
            .await
            .expect("soft delete");
        log.append(&session, ExpectedVersion::NoStream, vec![added(4, "new")])
            .await
            .expect("append again");
        log.snapshot().await.expect("snapshot");
        log.close().await.expect("close");
    }
    let expected = (Some(3), vec![3], 4);
    let copies = tempfile::tempdir().expect("temp dir");
    // From the snapshot (catalog) and the sled index as they are.
    let snapshot_and_index = copies.path().join("snapshot_and_index");
    copy_dir(dir.path(), &snapshot_and_index);
    assert_eq!(answers(&snapshot_and_index, &session).await, expected);
    // Without the snapshot: the replay rebuilds the catalog from the log.
    let replayed = copies.path().join("replayed");
    copy_dir(dir.path(), &replayed);
    std::fs::remove_dir_all(replayed.join("snapshots")).expect("remove snapshots");
    assert_eq!(answers(&replayed, &session).await, expected);
    // Without the index either: it is rebuilt from the log.
    let rebuilt = copies.path().join("rebuilt");
    copy_dir(dir.path(), &rebuilt);
    std::fs::remove_dir_all(rebuilt.join("snapshots")).expect("remove snapshots");
    std::fs::remove_dir_all(rebuilt.join("index")).expect("remove index");
    assert_eq!(answers(&rebuilt, &session).await, expected);
    // After a compaction purged the hidden events, then a full replay.
    {
        let (log, _) = open(dir.path()).await;
        log.compact().await.expect("compact");
        log.close().await.expect("close");
    }
    let compacted_from_snapshot = copies.path().join("compacted_from_snapshot");
    copy_dir(dir.path(), &compacted_from_snapshot);
    assert_eq!(answers(&compacted_from_snapshot, &session).await, expected);
    let compacted = copies.path().join("compacted");
    copy_dir(dir.path(), &compacted);
    std::fs::remove_dir_all(compacted.join("snapshots")).expect("remove snapshots");
    assert_eq!(answers(&compacted, &session).await, expected);
}

#[tokio::test]
async fn soft_deleting_twice_changes_nothing() {
    // The default options (no test tuning): nothing depends on the sync policy.
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Logbook::<CounterEvent>::open(dir.path(), LogbookOptions::default())
        .await
        .expect("open");
    let one = stream("one");
    log.append(&one, ExpectedVersion::NoStream, vec![added(1, "")])
        .await
        .expect("append");
    log.soft_delete_stream(&one, ExpectedVersion::StreamExists)
        .await
        .expect("soft delete");
    // Soft-deleting again before anything was appended changes nothing.
    log.soft_delete_stream(&one, ExpectedVersion::NoStream)
        .await
        .expect("soft delete again");
    let written = log
        .append(&one, ExpectedVersion::NoStream, vec![added(2, "")])
        .await
        .expect("append again");
    assert_eq!(written.version, 1);
    log.close().await.expect("close");
}
