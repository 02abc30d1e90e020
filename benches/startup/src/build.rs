//! Building the logs: room messages of about 150 bytes, appended fast (`SyncPolicy::Never`,
//! up to 10,000 events per call, two calls in flight), then a snapshot and a clean close.

use crate::BenchResult;
use logbook::model::{RoomCreated, RoomMessagePosted};
use logbook::{
    BuiltinEvent, BuiltinLog, ExpectedVersion, LogbookOptions, NewEvent, StreamId, SyncPolicy,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Rooms the messages are spread over, round robin in batches (the snapshot latency bench can
/// ask for more, to make the state a snapshot copies and encodes bigger).
pub const ROOMS: u64 = 10;
/// Events per append call (the engine's default limit).
const BATCH_EVENTS_MAX: u64 = 10_000;
/// Append calls in flight while building.
const IN_FLIGHT: usize = 2;

/// A log ready to be opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Built {
    /// Bytes of segment files.
    pub log_bytes: u64,
    /// Seconds the build took (0 when reused).
    pub seconds: f64,
}

/// The directory of the log of `messages` messages.
pub fn log_dir(base: &Path, messages: u64) -> PathBuf {
    base.join(format!("log-{messages}"))
}

fn marker(dir: &Path) -> PathBuf {
    dir.with_extension("built")
}

/// The stream of room `index`.
pub fn room(index: u64) -> StreamId {
    StreamId::room(&format!("room-{index}")).expect("a valid room id")
}

/// A room message of about 150 bytes once framed.
pub fn message(serial: u64) -> BuiltinEvent {
    RoomMessagePosted {
        message_id: format!("m{serial}"),
        author: format!("user-{}", serial % 97),
        body: format!(
            "message {serial:>10}: the quick brown fox jumps over the lazy dog, twice a day"
        ),
    }
    .into()
}

/// Builds the log unless a complete one is there already.
pub async fn ensure(dir: &Path, messages: u64, rebuild: bool) -> BenchResult<Built> {
    if !rebuild && let Ok(text) = std::fs::read_to_string(marker(dir)) {
        let log_bytes = text.trim().parse()?;
        return Ok(Built {
            log_bytes,
            seconds: 0.0,
        });
    }
    let _ = std::fs::remove_file(marker(dir));
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let built = write(dir, messages, ROOMS, LogbookOptions::default()).await?;
    std::fs::write(marker(dir), built.log_bytes.to_string())?;
    Ok(built)
}

/// Messages appended per process while building. With index format 1 (one sled key per
/// event) sled kept about 3-4 KB of memory per entry inserted, so a 10M build in one process
/// needed more than 40 GB, and each session ran in a child process (`build-session`) that
/// exits when done. Format 4 (delta-encoded chunks of 1,024 versions, written from an in-memory tail) needs
/// none of that (a 10M build took 17 s, RSS flat), but the sessions stay: each one ends with a
/// clean close and the next begins with a reopen, as a long-lived service's log would.
const SESSION_MESSAGES: u64 = 500_000;

/// Writes `messages` room messages over `rooms` rooms (after one `room.created` per room) into a
/// new log, takes a snapshot and closes it.
pub async fn write(
    dir: &Path,
    messages: u64,
    rooms: u64,
    mut options: LogbookOptions,
) -> BenchResult<Built> {
    let started = Instant::now();
    options.wal.sync_policy = SyncPolicy::Never;
    let (log, _) = BuiltinLog::open(dir, options.clone()).await?;
    for index in 0..rooms {
        let created = RoomCreated {
            name: format!("Room {index}"),
            topic: None,
            created_by: None,
        };
        log.execute(&room(index), created.into()).await?;
    }
    log.close().await?;
    let batch = (messages / rooms).clamp(1, BATCH_EVENTS_MAX);
    let mut written = 0;
    while written < messages {
        let session_end = (written + SESSION_MESSAGES).min(messages);
        let status = std::process::Command::new(std::env::current_exe()?)
            .arg("build-session")
            .arg(dir)
            .args(
                [
                    written,
                    session_end,
                    batch,
                    rooms,
                    options.wal.segment_bytes_max,
                ]
                .map(|n| n.to_string()),
            )
            .status()?;
        if !status.success() {
            return Err(format!("build-session {written}..{session_end} failed: {status}").into());
        }
        written = session_end;
        eprintln!(
            "  {written} messages written, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let (log, _) = BuiltinLog::open(dir, options).await?;
    log.log().snapshot().await?;
    let log_bytes = log.log().stats().backend.embedded().unwrap().segment_bytes;
    log.close().await?;
    Ok(Built {
        log_bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `build-session <dir> <from> <to> <batch> <rooms> <segment_bytes_max>`: appends messages
/// `from..to` to the log in `dir` and closes it (a child process of [`write()`]).
pub fn session(args: &[String]) -> BenchResult<()> {
    let [dir, from, to, batch, rooms, segment_bytes_max] = args else {
        return Err("build-session <dir> <from> <to> <batch> <rooms> <segment_bytes_max>".into());
    };
    let mut options = LogbookOptions::default();
    options.wal.sync_policy = SyncPolicy::Never;
    options.wal.segment_bytes_max = segment_bytes_max.parse()?;
    let (from, to, batch, rooms) = (from.parse()?, to.parse()?, batch.parse()?, rooms.parse()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (log, _) = BuiltinLog::open(Path::new(dir), options).await?;
        write_session(&log, from, to, batch, rooms).await?;
        log.close().await?;
        Ok(())
    })
}

/// Appends messages `from..to` in batches of `batch` to the rooms in turn.
async fn write_session(
    log: &BuiltinLog,
    from: u64,
    to: u64,
    batch: u64,
    rooms: u64,
) -> BenchResult<()> {
    let mut in_flight = std::collections::VecDeque::new();
    let mut written = from;
    while written < to {
        let count = batch.min(to - written);
        let stream = room((written / batch) % rooms);
        let events: Vec<NewEvent<BuiltinEvent>> = (written..written + count)
            .map(|serial| NewEvent::new(message(serial)))
            .collect();
        let engine = log.log().clone();
        in_flight.push_back(tokio::spawn(async move {
            engine.append(&stream, ExpectedVersion::Any, events).await
        }));
        if in_flight.len() >= IN_FLIGHT
            && let Some(oldest) = in_flight.pop_front()
        {
            oldest.await??;
        }
        written += count;
    }
    for pending in in_flight {
        pending.await??;
    }
    Ok(())
}
