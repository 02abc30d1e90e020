//! Measuring helpers: medians, bytes on disk, the device's flush counter, logbook's sync
//! counter, and the group-commit gate the sled peer shares its fsyncs through.

use crate::BenchResult;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// The median of the samples (the mean of the middle two for an even count); 0 when empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let count = sorted.len();
    match count {
        0 => 0.0,
        _ if count % 2 == 1 => sorted[count / 2],
        _ => (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0,
    }
}

/// Bytes under a directory: (apparent file lengths, allocated blocks).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskBytes {
    /// Sum of file lengths.
    pub apparent: u64,
    /// Sum of allocated 512-byte blocks, in bytes.
    pub allocated: u64,
}

/// Walks `dir` and adds up every regular file.
pub fn disk_bytes(dir: &Path) -> BenchResult<DiskBytes> {
    let mut total = DiskBytes::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                total.apparent += metadata.len();
                total.allocated += metadata.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// Counters of the block device holding a directory, from `/proc/diskstats`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceCounters {
    /// Flush requests completed (the 16th counter, Linux 5.5+).
    pub flushes: u64,
    /// 512-byte sectors written (the 7th counter).
    pub sectors_written: u64,
}

/// The counters of the block device holding `dir`; `None` when they cannot be found (then the
/// columns are blank). Device-wide: other processes' writes and fsyncs count too, so they are a
/// cross-check, not a figure.
pub fn device_counters(dir: &Path) -> Option<DeviceCounters> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let matches = fields.first()?.parse::<u64>().ok()? == major
            && fields.get(1)?.parse::<u64>().ok()? == minor;
        if !matches {
            return None;
        }
        // Fields: major, minor, name, then the counters.
        let counter = |index: usize| fields.get(3 + index)?.parse::<u64>().ok();
        Some(DeviceCounters {
            flushes: counter(15)?,
            sectors_written: counter(6)?,
        })
    })
}

/// Counts logbook's `wal_sync` spans: each is exactly one write + `fdatasync` of the active
/// segment (segment rolls sync too, but they are rare and not counted).
static WAL_SYNCS: AtomicU64 = AtomicU64::new(0);

/// The `wal_sync` spans seen so far.
pub fn wal_syncs() -> u64 {
    WAL_SYNCS.load(Ordering::Relaxed)
}

struct SyncCounter;

const SYNC_SPAN: &str = "wal_sync";

impl tracing::Subscriber for SyncCounter {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.name() == SYNC_SPAN {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.name() == SYNC_SPAN
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        WAL_SYNCS.fetch_add(1, Ordering::Relaxed);
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, _event: &tracing::Event<'_>) {}

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}

/// Installs the sync counter as the process's tracing subscriber (once, at start).
pub fn install_sync_counter() -> BenchResult<()> {
    tracing::subscriber::set_global_default(SyncCounter)?;
    Ok(())
}

/// Leader/follower group commit of a sync call: a caller returns once a sync that *started
/// after it arrived* has finished, so concurrent callers share one sync, the way a simple group
/// commit does. No waiting for companions: the next sync starts as soon as the last one ends.
#[derive(Debug, Default)]
pub struct SyncGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    completed: u64,
    running: bool,
    failed: Option<String>,
}

impl SyncGate {
    /// Returns after a sync that started after this call; runs `sync` when leading.
    pub fn sync(&self, sync: impl FnOnce() -> std::io::Result<()>) -> BenchResult<()> {
        let mut state = self.state.lock().map_err(|_| "sync gate poisoned")?;
        let needed = state.completed + if state.running { 2 } else { 1 };
        loop {
            if let Some(reason) = &state.failed {
                return Err(format!("an earlier sync failed: {reason}").into());
            }
            if state.completed >= needed {
                return Ok(());
            }
            if state.running {
                state = self.changed.wait(state).map_err(|_| "sync gate poisoned")?;
                continue;
            }
            state.running = true;
            drop(state);
            let result = sync();
            state = self.state.lock().map_err(|_| "sync gate poisoned")?;
            state.running = false;
            state.completed += 1;
            if let Err(error) = &result {
                state.failed = Some(error.to_string());
            }
            self.changed.notify_all();
            // A sync that ran covers this caller (it started after the caller arrived).
            result?;
            return Ok(());
        }
    }

    /// Syncs run so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().map_or(0, |state| state.completed)
    }
}
