//! # logbook-dashboard
//!
//! A restart-safe dashboard over [`logbook::BuiltinLog`]: a page (plain HTML and a little JS,
//! served by the service) listing jobs with live progress bars, rooms with their newest
//! messages and older pages on demand, and runs with their status and telemetry; JSON
//! endpoints to start a job, resume an interrupted one, report progress and post a message; a
//! typed `/health`; and `/api/events`, a server-sent event stream of durable events whose `id:`
//! is the log position and which resumes from `Last-Event-ID`, also after a server restart.
//!
//! A thin shell: every state it shows is a projection of the log (the built-in model's jobs,
//! rooms and runs) or a read of it (room history pages); the only memory of its own is which
//! jobs this process is working on right now. So a job that was running when the process died
//! is shown as *interrupted* (claimed by a worker that is gone, not failed) and can be resumed
//! from its last durable progress. The endpoints and their JSON are in `docs/dashboard.md`.
//!
//! Limits: request bodies [`BODY_BYTES_MAX`], jobs running at once [`JOBS_RUNNING_MAX`], open
//! event streams [`EVENT_STREAMS_MAX`], steps of one job [`JOB_STEPS_MAX`], history pages
//! [`HISTORY_PAGE_MAX`], listed jobs, rooms and runs [`LIST_MAX`].

pub mod api;
pub mod error;
pub mod events;
pub mod health;
pub mod jobs;

pub use error::{Error, Result};

use logbook::{BuiltinLog, LogbookOptions, SnapshotInfo};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// The largest request body accepted, in bytes (a message body is the largest thing posted).
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Jobs this process works on at once; starting or resuming one more is refused (503).
pub const JOBS_RUNNING_MAX: usize = 32;
/// Event streams open at once; one more is refused (503).
pub const EVENT_STREAMS_MAX: usize = 64;
/// The most steps one job may have.
pub const JOB_STEPS_MAX: u64 = 100_000;
/// The most messages one history page returns.
pub const HISTORY_PAGE_MAX: usize = 100;
/// The most jobs, rooms and runs `/api/state` lists (the newest ones).
pub const LIST_MAX: usize = 200;

/// How the service is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// The log directory (created when missing).
    pub dir: PathBuf,
    /// Where to listen, e.g. `127.0.0.1:8080` (port 0: any free port).
    pub address: String,
    /// How long a browser waits before it reconnects an event stream, sent as `retry:`
    /// ([`events::RECONNECT_MS_DEFAULT`], from [`events::RECONNECT_MS_MIN`] to
    /// [`events::RECONNECT_MS_MAX`]).
    pub reconnect_ms: u64,
}

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) log: BuiltinLog,
    /// This process's worker id in `job.claimed`: unique per process start, so a claim by any
    /// other worker id belongs to a process that is gone (the directory lock proves it).
    pub(crate) worker: String,
    /// The jobs this process works on now, by job id.
    pub(crate) running: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Flips to `true` once shutdown starts: event streams end, job tasks stop.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Permits for open event streams ([`EVENT_STREAMS_MAX`]).
    pub(crate) event_streams: Arc<Semaphore>,
    /// The snapshot the log opened from (`/health` shows the newer one the engine wrote
    /// since, `Stats::snapshot_written`, once there is one).
    pub(crate) opened_from_snapshot: Option<SnapshotInfo>,
    /// The `retry:` sent at the start of every event stream, in ms.
    pub(crate) reconnect_ms: u64,
    /// Tells generated ids apart within one millisecond.
    pub(crate) counter: std::sync::atomic::AtomicU64,
}

impl App {
    /// Opens the log of `config` and the service's state over it (what [`serve`] serves);
    /// send `true` on the returned sender to end the event streams and stop the job tasks.
    pub async fn open(config: &Config) -> Result<(App, watch::Sender<bool>)> {
        let (log, report) = BuiltinLog::open(&config.dir, LogbookOptions::default())
            .await
            .map_err(|source| Error::Open {
                dir: config.dir.clone(),
                source,
            })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = format!("dashboard-{}-{}", std::process::id(), log.log().now_ms());
        let app = App {
            inner: Arc::new(Inner {
                log,
                worker,
                running: Mutex::new(HashMap::new()),
                shutdown: stop_rx,
                event_streams: Arc::new(Semaphore::new(EVENT_STREAMS_MAX)),
                opened_from_snapshot: report.log.snapshot.used.clone(),
                reconnect_ms: config
                    .reconnect_ms
                    .clamp(events::RECONNECT_MS_MIN, events::RECONNECT_MS_MAX),
                counter: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        Ok((app, stop_tx))
    }

    /// The log.
    pub fn log(&self) -> &BuiltinLog {
        &self.inner.log
    }

    /// Whether this process is working on `job_id` now.
    pub fn is_running(&self, job_id: &str) -> bool {
        self.running_jobs().iter().any(|id| id == job_id)
    }

    /// The jobs this process is working on now, sorted.
    pub fn running_jobs(&self) -> Vec<String> {
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ids: Vec<String> = running
            .iter()
            .filter(|(_, handle)| !handle.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// A fresh id: `<prefix>-<ms since epoch>-<counter>`.
    pub(crate) fn new_id(&self, prefix: &str) -> String {
        let n = self
            .inner
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}-{}-{n}", self.inner.log.log().now_ms())
    }
}

/// Opens the log, serves until `shutdown` resolves, then stops accepting, ends the event
/// streams, stops the job tasks (their jobs stay claimed: interrupted, resumable), and closes
/// the log (everything written is durable when this returns `Ok`). `on_listening` is called
/// with the bound address once the listener is up.
pub async fn serve(
    config: Config,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Bind first: a taken port fails before the log is opened.
    let listener = tokio::net::TcpListener::bind(&config.address)
        .await
        .map_err(|source| Error::Serve {
            address: config.address.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Serve {
        address: config.address.clone(),
        source,
    })?;
    let (app, stop_tx) = App::open(&config).await?;
    let log = app.log().clone();
    on_listening(local);
    let router = api::router(app.clone());
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Ends every event stream, so the graceful shutdown does not wait for them forever.
            let _ = stop_tx.send(true);
        })
        .await;
    let handles: Vec<JoinHandle<()>> = {
        let mut running = app
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        running.drain().map(|(_, handle)| handle).collect()
    };
    for handle in handles {
        // A job task that panicked has nothing more to write; the log closes all the same.
        let _ = handle.await;
    }
    drop(app);
    // Durability: close syncs every appended event before it returns.
    log.close().await?;
    served.map_err(|source| Error::Serve {
        address: local.to_string(),
        source,
    })
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops the service.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
