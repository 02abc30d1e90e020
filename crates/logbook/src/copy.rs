//! Moving a whole log between its two homes (`logbook copy`): a directory (the embedded WAL)
//! and a PostgreSQL database, either way, so a service can start embedded and move to
//! PostgreSQL when it grows.
//!
//! Owns: [`copy_log`] and [`Location`]. The copy reads the source's durable records twice: once
//! to learn every stream's final state (the one catalog apply, `apply::apply_catalog`), once to
//! write them. It writes what the log shows: a record that a delete or a truncation hid is not
//! copied (compaction would drop it anyway, and PostgreSQL never keeps one); the engine's own
//! events that hid them are. Positions, versions, event types, timestamps and payload bytes
//! stay identical (gaps included). The target must be new or empty, and a failed copy leaves
//! nothing behind: a directory is written beside the target and renamed into place once
//! durable; a database is written in one transaction.
//! Never: writes into a log that has events, copies a record above the source's durable
//! position, or decodes a payload (only envelope headers and the engine's own events).

use crate::apply::{DurableRecord, apply_catalog};
use crate::error::{Error, Result};
use crate::streams::StreamTable;
use logbook_compaction::CompactionPolicy;
use logbook_wal::{SyncPolicy, Wal, WalOptions};
use std::path::{Path, PathBuf};

/// Records read from the source per page.
pub const COPY_PAGE_RECORDS: usize = 1000;

/// Where a log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory (the embedded WAL).
    Dir(PathBuf),
    /// A PostgreSQL database, by URL (`postgres://...` or `postgresql://...`).
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL is a database (with the `postgres` feature);
    /// anything else is a directory.
    pub fn parse(text: &str) -> Location {
        #[cfg(feature = "postgres")]
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Location::Postgres(text.to_string());
        }
        Location::Dir(PathBuf::from(text))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(dir) => write!(formatter, "{}", dir.display()),
            // The URL may hold a password: name only its scheme.
            #[cfg(feature = "postgres")]
            Location::Postgres(_) => formatter.write_str("the PostgreSQL database"),
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyReport {
    /// Records written.
    pub records: u64,
    /// Records of the source not copied because a delete or a truncation hid them.
    pub hidden_skipped: u64,
    /// Streams in the copy (the engine's own stream included).
    pub streams: u64,
    /// The last position copied (0: an empty log).
    pub last_position: u64,
}

/// Copies the whole log at `from` to `to` (new, or an empty directory or database): every
/// durable record the log shows, positions kept. The copy is complete or absent.
pub async fn copy_log(from: &Location, to: &Location) -> Result<CopyReport> {
    if from == to {
        return Err(Error::InvalidRequest(format!(
            "cannot copy {from} onto itself"
        )));
    }
    let source = Source::open(from).await?;
    // Pass 1: every stream's final state.
    let mut streams = StreamTable::default();
    let policy = CompactionPolicy::default();
    let mut next = 1;
    loop {
        let page = source.page(next).await?;
        let Some((last, _)) = page.last() else { break };
        next = last + 1;
        for (position, bytes) in &page {
            let record = DurableRecord::decode(*position, bytes)?;
            apply_catalog(&mut streams, &policy, &record)?;
        }
    }
    match to {
        Location::Dir(dir) => write_dir(&source, dir, &streams).await,
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => write_postgres(&source, url, &streams).await,
    }
}

/// True when the record is hidden by a delete or a truncation in the log's final state.
fn hidden(streams: &StreamTable, record: &DurableRecord<'_>) -> bool {
    let Ok(stream) = logbook_projection::StreamId::new(record.envelope.stream) else {
        return false;
    };
    streams.get(&stream).is_some_and(|state| {
        state.deleted || record.envelope.stream_version < state.truncated_before
    })
}

/// The log being copied.
enum Source {
    Dir(Wal),
    #[cfg(feature = "postgres")]
    Postgres(Box<logbook_postgres::PgStore>),
}

impl Source {
    async fn open(location: &Location) -> Result<Source> {
        match location {
            Location::Dir(dir) => {
                if !dir.join(logbook_wal::WAL_DIR_NAME).is_dir() {
                    return Err(Error::Io {
                        path: dir.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "not a logbook directory (no wal/)",
                        ),
                    });
                }
                let dir = dir.clone();
                let (wal, _report) = tokio::task::spawn_blocking(move || {
                    Wal::open_read_only(&dir, WalOptions::default())
                })
                .await
                .map_err(|error| Error::Task(error.to_string()))??;
                Ok(Source::Dir(wal))
            }
            #[cfg(feature = "postgres")]
            Location::Postgres(url) => {
                let store = logbook_postgres::PgStore::open_read_only(
                    url,
                    logbook_postgres::StoreOptions::default(),
                )
                .await
                .map_err(crate::backend::postgres::from_store)?;
                Ok(Source::Postgres(Box::new(store)))
            }
        }
    }

    /// Up to [`COPY_PAGE_RECORDS`] durable records from `from`, in position order.
    async fn page(&self, from: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        match self {
            Source::Dir(wal) => {
                let durable = wal.durable_position();
                let mut page = Vec::new();
                for record in wal.read_from(from) {
                    let record = record?;
                    if record.position > durable || page.len() == COPY_PAGE_RECORDS {
                        break;
                    }
                    page.push((record.position, record.payload));
                }
                Ok(page)
            }
            #[cfg(feature = "postgres")]
            Source::Postgres(store) => store
                .read_all_records(from, COPY_PAGE_RECORDS)
                .await
                .map_err(crate::backend::postgres::from_store),
        }
    }
}

/// Writes the copy into a directory beside `dir`, then renames it into place once durable.
async fn write_dir(source: &Source, dir: &Path, streams: &StreamTable) -> Result<CopyReport> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the target directory is not empty: copy into a new or empty one",
                ),
            });
        }
        std::fs::remove_dir(dir).map_err(io(dir))?;
    }
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "log".to_string());
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = parent.join(format!(".{name}.copying"));
    if staging.exists() {
        // A copy that failed before: never a log anyone opened.
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let options = WalOptions {
        sync_policy: SyncPolicy::Never,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&staging, options)?;
    let mut report = CopyReport::default();
    let mut next = 1;
    loop {
        let page = source.page(next).await?;
        let Some((last, _)) = page.last() else { break };
        next = last + 1;
        for (position, bytes) in &page {
            let record = DurableRecord::decode(*position, bytes)?;
            if hidden(streams, &record) {
                report.hidden_skipped += 1;
                continue;
            }
            wal.append_batch_at(*position, &[bytes])?;
            report.records += 1;
            report.last_position = *position;
        }
    }
    // Durability: every record is synced before the copy takes the target's name.
    wal.sync()?;
    wal.close()?;
    std::fs::rename(&staging, dir).map_err(io(dir))?;
    std::fs::File::open(&parent)
        .and_then(|parent| parent.sync_all())
        .map_err(io(&parent))?;
    report.streams = streams.len() as u64;
    Ok(report)
}

/// Writes the copy into an empty database, in one transaction.
#[cfg(feature = "postgres")]
async fn write_postgres(source: &Source, url: &str, streams: &StreamTable) -> Result<CopyReport> {
    use logbook_postgres::{ImportPart, ImportedStream};
    let store = logbook_postgres::PgStore::open(url, logbook_postgres::StoreOptions::default())
        .await
        .map_err(crate::backend::postgres::from_store)?;
    let (parts, receiver) = tokio::sync::mpsc::channel(4);
    let importer = tokio::spawn({
        let store = store.clone();
        async move { store.import_log(receiver).await }
    });
    let mut report = CopyReport::default();
    let mut next = 1;
    let read = async {
        loop {
            let page = source.page(next).await?;
            let Some((last, _)) = page.last() else { break };
            next = last + 1;
            let mut records = Vec::with_capacity(page.len());
            for (position, bytes) in page {
                let record = DurableRecord::decode(position, &bytes)?;
                if hidden(streams, &record) {
                    report.hidden_skipped += 1;
                    continue;
                }
                report.records += 1;
                report.last_position = position;
                records.push((position, bytes));
            }
            if parts.send(ImportPart::Records(records)).await.is_err() {
                // The importer failed: its error is the one to report.
                return Ok(());
            }
        }
        let states = streams
            .iter()
            .map(|(stream, state)| ImportedStream {
                stream: stream.to_string(),
                head_version: state.last_version(),
                deleted: state.deleted,
                truncated_before: state.truncated_before,
            })
            .collect();
        let _ = parts.send(ImportPart::Streams(states)).await;
        Ok::<(), Error>(())
    };
    let read = read.await;
    // On a read error the channel closes before the streams arrive: the import rolls back.
    drop(parts);
    let imported = importer
        .await
        .map_err(|error| Error::Task(error.to_string()))?;
    read?;
    let imported = imported.map_err(crate::backend::postgres::from_store)?;
    assert_eq!(
        imported.records, report.records,
        "the import took every record sent"
    );
    report.streams = imported.streams;
    Ok(report)
}
