//! An in-memory [`Storage`] that models what a crash does to unsynced data.
//!
//! Owns: file contents as the process sees them (`current`) apart from the contents a crash is
//! guaranteed to keep (`durable`, advanced by `sync_data`), and likewise the directory entries as
//! seen versus as last made durable by `sync_dir`. A simulated crash ([`MemoryStorage::crash`])
//! rebuilds the durable view according to a [`CrashMode`]: drop every unsynced byte, keep them
//! all (a process crash), keep a byte prefix, keep any subset of 512-byte sectors (reordered
//! write-back) or keep a sector prefix followed by a garbage sector (a torn write). It can fail a
//! chosen write or sync with EIO or ENOSPC, and halt (fail everything) after a chosen number of
//! mutating operations, so a test can crash at every step of a sequence. Must never: be used
//! outside tests and fuzzing, or make a byte or a name durable without an explicit sync.
//!
//! Directories follow the strict POSIX model: a directory made by `create_dir_all` is an entry
//! of its parent like a file is, and that entry is durable only once `sync_dir(parent)` ran
//! after it was made. On a crash (any mode but [`CrashMode::KeepUnsynced`]) a directory whose
//! entry, or any of whose ancestors' entries, was not durable vanishes with everything under
//! it, files and subdirectories, even those whose own entries were synced inside it. A root
//! (a path without a parent: `/` or the empty relative path) always exists.

use super::{LockGuard, OpenMode, Storage, StorageFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Size of the unit a disk writes atomically, for the sector-based crash modes.
pub const SECTOR_BYTES: usize = 512;

/// What a simulated crash does to data written since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Power loss with nothing written back: every unsynced byte and directory change is lost.
    LoseUnsynced,
    /// A process crash (kill -9): the OS keeps everything that was written, still unsynced
    /// (a later [`CrashMode::LoseUnsynced`] loses what nobody synced since).
    KeepUnsynced,
    /// Power loss after in-order write-back of a random prefix of the unsynced bytes (any byte
    /// count, so frames can be torn mid-sector).
    KeepPrefix {
        /// Seed of the random choice.
        seed: u64,
    },
    /// Power loss after write-back of a random subset of the unsynced 512-byte sectors.
    Reorder {
        /// Seed of the random choice.
        seed: u64,
    },
    /// Power loss during write-back: a random prefix of the unsynced sectors is kept and the
    /// sector after it is filled with garbage.
    Tear {
        /// Seed of the random choice.
        seed: u64,
    },
}

/// Which operation an injected fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `write_all_at`.
    Write,
    /// `sync_data` and `sync_dir`.
    Sync,
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// An I/O error (EIO). A failed write writes nothing.
    Eio,
    /// Out of space (ENOSPC). A failed write may have written a prefix of its bytes.
    Enospc,
}

impl FaultKind {
    fn error(self) -> io::Error {
        match self {
            FaultKind::Eio => io::Error::from_raw_os_error(5),
            FaultKind::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct Namespace {
    entries: BTreeMap<PathBuf, Arc<Mutex<Node>>>,
    durable_entries: BTreeMap<PathBuf, Arc<Mutex<Node>>>,
    /// Directories as the process sees them (roots excluded: they always exist).
    dirs: BTreeSet<PathBuf>,
    /// Directories whose entry in their parent was made durable by `sync_dir(parent)`.
    durable_dirs: BTreeSet<PathBuf>,
    locks: BTreeMap<PathBuf, u64>,
    lock_tokens: u64,
}

/// A root: a path without a parent, which always exists and is always durable.
fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

impl Namespace {
    fn dir_exists(&self, dir: &Path) -> bool {
        is_root(dir) || self.dirs.contains(dir)
    }

    /// True when `dir` and every ancestor have durable entries (a root is always durable).
    fn survives_crash(&self, dir: &Path) -> bool {
        dir.ancestors()
            .all(|ancestor| is_root(ancestor) || self.durable_dirs.contains(ancestor))
    }

    /// Rebuilds the names after a power loss: only durable entries under durable directories.
    fn keep_durable_names(&mut self) {
        let dirs: BTreeSet<PathBuf> = self
            .durable_dirs
            .iter()
            .filter(|dir| self.survives_crash(dir))
            .cloned()
            .collect();
        let entries: BTreeMap<PathBuf, Arc<Mutex<Node>>> = self
            .durable_entries
            .iter()
            .filter(|(path, _)| path.parent().is_some_and(|dir| self.survives_crash(dir)))
            .map(|(path, node)| (path.clone(), node.clone()))
            .collect();
        self.dirs = dirs.clone();
        self.durable_dirs = dirs;
        self.entries = entries.clone();
        self.durable_entries = entries;
    }
}

/// The halt after a number of mutating operations (see [`MemoryStorage::halt_after`]).
#[derive(Debug, Default)]
struct Halt {
    /// Mutating operations still allowed; `None` when no halt is armed.
    operations_left: Option<u64>,
    /// True once the halt hit: every operation fails until the next crash.
    halted: bool,
}

#[derive(Debug)]
struct Fault {
    op: FaultOp,
    skip: u64,
    kind: FaultKind,
}

#[derive(Debug, Default)]
struct Shared {
    namespace: Mutex<Namespace>,
    faults: Mutex<Vec<Fault>>,
    halt: Mutex<Halt>,
    generation: AtomicU64,
    read_calls: AtomicU64,
    read_bytes: AtomicU64,
    write_calls: AtomicU64,
    sync_calls: AtomicU64,
}

/// The in-memory storage. Cloning gives another handle on the same "disk".
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    shared: Arc<Shared>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock (a failed test assertion) must not cascade.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn halted() -> io::Error {
    io::Error::other("storage halted: a simulated power loss stopped every operation")
}

fn stale() -> io::Error {
    io::Error::other("stale file handle: the storage crashed since this file was opened")
}

/// A small deterministic generator (SplitMix64), enough to pick crash outcomes.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
}

impl MemoryStorage {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a crash: every open handle goes stale, locks are released, and the disk keeps
    /// what `mode` says of the unsynced data.
    pub fn crash(&self, mode: CrashMode) {
        let mut namespace = lock(&self.shared.namespace);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        namespace.locks.clear();
        lock(&self.shared.faults).clear();
        *lock(&self.shared.halt) = Halt::default();
        if mode == CrashMode::KeepUnsynced {
            // A process crash leaves the OS state as it was: written bytes and directory entries
            // stay visible but are still unsynced, so a later power loss can lose them. Making
            // them durable here would hide a missing fsync of what a reopen accepts from a dead
            // process (the model test passed with the fsync at open removed).
            return;
        }
        namespace.keep_durable_names();
        let seed = match mode {
            CrashMode::KeepPrefix { seed }
            | CrashMode::Reorder { seed }
            | CrashMode::Tear { seed } => seed,
            CrashMode::LoseUnsynced | CrashMode::KeepUnsynced => 0,
        };
        let mut random = Random(seed);
        for node in namespace.entries.values() {
            let mut node = lock(node);
            let after = crash_contents(&node.current, &node.durable, mode, &mut random);
            node.current = after.clone();
            node.durable = after;
        }
    }

    /// Fails the `skip`-th next operation of kind `op` (0 = the very next one) with `kind`.
    pub fn inject_fault(&self, op: FaultOp, skip: u64, kind: FaultKind) {
        lock(&self.shared.faults).push(Fault { op, skip, kind });
    }

    /// Removes every pending injected fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Lets `operations` more mutating operations succeed, then halts: the next one and every
    /// later operation (reads included) fail, as if the power went out there, until
    /// [`MemoryStorage::crash`]. Mutating operations: creating each directory, creating a file,
    /// `write_all_at`, `set_len`, `sync_data`, `sync_dir`, `remove_file` and `rename`.
    pub fn halt_after(&self, operations: u64) {
        *lock(&self.shared.halt) = Halt {
            operations_left: Some(operations),
            halted: false,
        };
    }

    /// True once an armed [`MemoryStorage::halt_after`] has hit (until the next crash).
    pub fn is_halted(&self) -> bool {
        lock(&self.shared.halt).halted
    }

    /// Fails when the storage is halted.
    fn check_halt(&self) -> io::Result<()> {
        if lock(&self.shared.halt).halted {
            return Err(halted());
        }
        Ok(())
    }

    /// Counts one mutating operation against an armed halt; fails when it is halted.
    fn mutate(&self) -> io::Result<()> {
        let mut halt = lock(&self.shared.halt);
        if halt.halted {
            return Err(halted());
        }
        match halt.operations_left {
            Some(0) => {
                halt.halted = true;
                Err(halted())
            }
            Some(left) => {
                halt.operations_left = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Number of `read_at` calls so far (for tests that count the I/O of a query).
    pub fn read_calls(&self) -> u64 {
        self.shared.read_calls.load(Ordering::SeqCst)
    }

    /// Number of bytes returned by `read_at` so far.
    pub fn read_bytes(&self) -> u64 {
        self.shared.read_bytes.load(Ordering::SeqCst)
    }

    /// Number of `sync_data` calls so far.
    pub fn sync_calls(&self) -> u64 {
        self.shared.sync_calls.load(Ordering::SeqCst)
    }

    /// The current contents of a file, as the process sees them.
    pub fn file_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let namespace = lock(&self.shared.namespace);
        namespace
            .entries
            .get(path)
            .map(|node| lock(node).current.clone())
    }

    /// Replaces the contents of a file (current and durable), creating it (durably) when it
    /// does not exist: a test's way to corrupt a disk or put back an old file.
    pub fn set_file_contents(&self, path: &Path, bytes: Vec<u8>) {
        let mut namespace = lock(&self.shared.namespace);
        if let Some(node) = namespace.entries.get(path) {
            let mut node = lock(node);
            node.current = bytes.clone();
            node.durable = bytes;
            return;
        }
        let node = Arc::new(Mutex::new(Node {
            current: bytes.clone(),
            durable: bytes,
        }));
        namespace.entries.insert(path.to_path_buf(), node.clone());
        namespace.durable_entries.insert(path.to_path_buf(), node);
    }

    /// Every directory currently present (roots excluded), durable or not.
    pub fn dirs(&self) -> Vec<PathBuf> {
        lock(&self.shared.namespace).dirs.iter().cloned().collect()
    }

    /// Every file path currently present.
    pub fn files(&self) -> Vec<PathBuf> {
        lock(&self.shared.namespace)
            .entries
            .keys()
            .cloned()
            .collect()
    }

    fn take_fault(&self, op: FaultOp) -> Option<FaultKind> {
        let mut faults = lock(&self.shared.faults);
        let mut hit = None;
        for (index, fault) in faults.iter_mut().enumerate() {
            if fault.op != op {
                continue;
            }
            if fault.skip == 0 {
                hit = Some(index);
                break;
            }
            fault.skip -= 1;
        }
        hit.map(|index| faults.remove(index).kind)
    }
}

/// The contents a file is left with after a crash of the given mode.
fn crash_contents(current: &[u8], durable: &[u8], mode: CrashMode, random: &mut Random) -> Vec<u8> {
    let dirty = dirty_sectors(current, durable);
    let mut after = durable.to_vec();
    let copy_range = |after: &mut Vec<u8>, start: usize, end: usize| {
        let end = end.min(current.len());
        if start >= end {
            return;
        }
        if after.len() < end {
            after.resize(end, 0);
        }
        after[start..end].copy_from_slice(&current[start..end]);
    };
    match mode {
        CrashMode::LoseUnsynced | CrashMode::KeepUnsynced => {}
        CrashMode::KeepPrefix { .. } => {
            let total: usize = dirty.iter().map(|&(start, end)| end - start).sum();
            let mut keep = random.below(total as u64 + 1) as usize;
            for &(start, end) in &dirty {
                let take = keep.min(end - start);
                copy_range(&mut after, start, start + take);
                keep -= take;
            }
        }
        CrashMode::Reorder { .. } => {
            for &(start, end) in &dirty {
                if random.below(2) == 1 {
                    copy_range(&mut after, start, end);
                }
            }
        }
        CrashMode::Tear { .. } => {
            let keep = random.below(dirty.len() as u64 + 1) as usize;
            for &(start, end) in dirty.iter().take(keep) {
                copy_range(&mut after, start, end);
            }
            if let Some(&(start, end)) = dirty.get(keep) {
                if after.len() < end {
                    after.resize(end, 0);
                }
                // Garbage only where the sector held unsynced bytes: a disk writes sectors
                // atomically, so synced bytes sharing the sector stay as they were.
                for (at, byte) in after.iter_mut().enumerate().take(end).skip(start) {
                    if durable.get(at) != current.get(at) {
                        *byte = random.next() as u8;
                    }
                }
            }
        }
    }
    after
}

/// Sector ranges `[start, end)` where the current contents differ from the durable ones.
fn dirty_sectors(current: &[u8], durable: &[u8]) -> Vec<(usize, usize)> {
    let length = current.len().max(durable.len());
    let mut dirty = Vec::new();
    let mut start = 0;
    while start < length {
        let end = (start + SECTOR_BYTES).min(length);
        let now = current.get(start..end.min(current.len())).unwrap_or(&[]);
        let before = durable.get(start..end.min(durable.len())).unwrap_or(&[]);
        if now != before && start < current.len() {
            dirty.push((start, end.min(current.len())));
        }
        start = end;
    }
    dirty
}

#[derive(Debug)]
struct MemoryFile {
    storage: MemoryStorage,
    node: Arc<Mutex<Node>>,
    generation: u64,
    writable: bool,
}

impl MemoryFile {
    fn check(&self) -> io::Result<()> {
        if self.storage.shared.generation.load(Ordering::SeqCst) != self.generation {
            return Err(stale());
        }
        self.storage.check_halt()
    }

    fn check_writable(&self) -> io::Result<()> {
        self.check()?;
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9));
        }
        Ok(())
    }
}

impl StorageFile for MemoryFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        let node = lock(&self.node);
        let shared = &self.storage.shared;
        shared.read_calls.fetch_add(1, Ordering::Relaxed);
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= node.current.len() {
            return Ok(0);
        }
        let count = buf.len().min(node.current.len() - start);
        buf[..count].copy_from_slice(&node.current[start..start + count]);
        shared.read_bytes.fetch_add(count as u64, Ordering::Relaxed);
        Ok(count)
    }

    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        self.storage.mutate()?;
        self.storage
            .shared
            .write_calls
            .fetch_add(1, Ordering::Relaxed);
        let fault = self.storage.take_fault(FaultOp::Write);
        let written = match fault {
            Some(FaultKind::Eio) => 0,
            Some(FaultKind::Enospc) => buf.len() / 2,
            None => buf.len(),
        };
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let mut node = lock(&self.node);
        if written > 0 {
            let end = start + written;
            if node.current.len() < end {
                node.current.resize(end, 0);
            }
            node.current[start..end].copy_from_slice(&buf[..written]);
        }
        match fault {
            Some(kind) => Err(kind.error()),
            None => Ok(()),
        }
    }

    fn len(&self) -> io::Result<u64> {
        self.check()?;
        Ok(lock(&self.node).current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.storage.mutate()?;
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        lock(&self.node).current.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.storage.mutate()?;
        self.storage
            .shared
            .sync_calls
            .fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = self.storage.take_fault(FaultOp::Sync) {
            return Err(kind.error());
        }
        let mut node = lock(&self.node);
        node.durable = node.current.clone();
        Ok(())
    }
}

#[derive(Debug)]
struct MemoryLock {
    storage: MemoryStorage,
    path: PathBuf,
    token: u64,
}

impl LockGuard for MemoryLock {}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        let mut namespace = lock(&self.storage.shared.namespace);
        if namespace.locks.get(&self.path) == Some(&self.token) {
            namespace.locks.remove(&self.path);
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Storage for MemoryStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check_halt()?;
        let mut namespace = lock(&self.shared.namespace);
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .filter(|ancestor| !namespace.dir_exists(ancestor))
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for created in missing {
            if namespace.entries.contains_key(&created) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", created.display()),
                ));
            }
            // Each new directory is one step: a halt can fall between two of them.
            self.mutate()?;
            namespace.dirs.insert(created);
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.check_halt()?;
        let namespace = lock(&self.shared.namespace);
        if !namespace.dir_exists(dir) {
            return Err(not_found(dir));
        }
        let files = namespace
            .entries
            .keys()
            .filter(|path| path.parent() == Some(dir));
        let dirs = namespace
            .dirs
            .iter()
            .filter(|path| path.parent() == Some(dir));
        Ok(files
            .chain(dirs)
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let namespace = lock(&self.shared.namespace);
        namespace.entries.contains_key(path) || namespace.dir_exists(path)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        self.check_halt()?;
        let mut namespace = lock(&self.shared.namespace);
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let node = match (mode, namespace.entries.get(path)) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    path.display().to_string(),
                ));
            }
            (OpenMode::CreateNew, None) => {
                let parent = path.parent().unwrap_or(Path::new(""));
                if !namespace.dir_exists(parent) {
                    return Err(not_found(parent));
                }
                self.mutate()?;
                let node = Arc::new(Mutex::new(Node::default()));
                namespace.entries.insert(path.to_path_buf(), node.clone());
                node
            }
            (_, Some(node)) => node.clone(),
            (_, None) => return Err(not_found(path)),
        };
        Ok(Arc::new(MemoryFile {
            storage: self.clone(),
            node,
            generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.mutate()?;
        let mut namespace = lock(&self.shared.namespace);
        namespace
            .entries
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate()?;
        let mut namespace = lock(&self.shared.namespace);
        let node = namespace
            .entries
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        namespace.entries.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.mutate()?;
        self.shared.sync_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = self.take_fault(FaultOp::Sync) {
            return Err(kind.error());
        }
        let mut namespace = lock(&self.shared.namespace);
        if !namespace.dir_exists(dir) {
            return Err(not_found(dir));
        }
        let namespace = &mut *namespace;
        namespace
            .durable_entries
            .retain(|path, _| path.parent() != Some(dir));
        for (path, node) in &namespace.entries {
            if path.parent() == Some(dir) {
                namespace.durable_entries.insert(path.clone(), node.clone());
            }
        }
        // Subdirectories are entries of `dir` too (none is ever removed, so only additions).
        for sub in &namespace.dirs {
            if sub.parent() == Some(dir) {
                namespace.durable_dirs.insert(sub.clone());
            }
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.check_halt()?;
        let mut namespace = lock(&self.shared.namespace);
        if namespace.locks.contains_key(path) {
            return Ok(None);
        }
        namespace.lock_tokens += 1;
        let token = namespace.lock_tokens;
        namespace.locks.insert(path.to_path_buf(), token);
        Ok(Some(Box::new(MemoryLock {
            storage: self.clone(),
            path: path.to_path_buf(),
            token,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (MemoryStorage, Arc<dyn StorageFile>, PathBuf) {
        let storage = MemoryStorage::new();
        let dir = PathBuf::from("/db");
        storage.create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = storage.open_file(&path, OpenMode::CreateNew).unwrap();
        storage.sync_dir(&dir).unwrap();
        storage.sync_dir(Path::new("/")).unwrap();
        (storage, file, path)
    }

    #[test]
    fn unsynced_bytes_are_lost_and_synced_bytes_kept() {
        let (storage, file, path) = setup();
        file.write_all_at(0, b"durable").unwrap();
        file.sync_data().unwrap();
        file.write_all_at(7, b" and not").unwrap();
        storage.crash(CrashMode::LoseUnsynced);
        assert_eq!(storage.file_contents(&path).unwrap(), b"durable");
        assert!(
            file.read_at(0, &mut [0; 4]).is_err(),
            "old handles go stale"
        );
    }

    #[test]
    fn process_crash_keeps_written_bytes() {
        let (storage, file, path) = setup();
        file.write_all_at(0, b"written").unwrap();
        storage.crash(CrashMode::KeepUnsynced);
        assert_eq!(storage.file_contents(&path).unwrap(), b"written");
        storage.crash(CrashMode::LoseUnsynced);
        assert_eq!(storage.file_contents(&path).unwrap(), b"", "still unsynced");
    }

    #[test]
    fn unsynced_directory_entries_vanish() {
        let (storage, _file, _) = setup();
        let other = PathBuf::from("/db/g");
        storage.open_file(&other, OpenMode::CreateNew).unwrap();
        storage.crash(CrashMode::LoseUnsynced);
        assert!(!storage.exists(&other));
        assert!(storage.exists(Path::new("/db/f")));
    }

    #[test]
    fn partial_modes_keep_durable_prefix() {
        for seed in 0..200 {
            for mode in [
                CrashMode::KeepPrefix { seed },
                CrashMode::Reorder { seed },
                CrashMode::Tear { seed },
            ] {
                let (storage, file, path) = setup();
                let synced = vec![7u8; 1000];
                file.write_all_at(0, &synced).unwrap();
                file.sync_data().unwrap();
                file.write_all_at(1000, &vec![9u8; 3000]).unwrap();
                storage.crash(mode);
                let after = storage.file_contents(&path).unwrap();
                assert!(after.len() >= 1000 && after.len() <= 4000, "{mode:?}");
                assert_eq!(&after[..1000], &synced[..], "{mode:?}");
            }
        }
    }

    #[test]
    fn injected_faults_hit_the_chosen_operation() {
        let (storage, file, _) = setup();
        storage.inject_fault(FaultOp::Write, 1, FaultKind::Enospc);
        file.write_all_at(0, b"ok").unwrap();
        let error = file.write_all_at(2, b"full").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        storage.inject_fault(FaultOp::Sync, 0, FaultKind::Eio);
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
        file.sync_data().unwrap();
    }

    #[test]
    fn second_lock_is_refused_until_released() {
        let storage = MemoryStorage::new();
        let path = Path::new("/db/LOCK");
        let guard = storage.try_lock(path).unwrap().unwrap();
        assert!(storage.try_lock(path).unwrap().is_none());
        drop(guard);
        assert!(storage.try_lock(path).unwrap().is_some());
    }

    #[test]
    fn directory_with_unsynced_entry_vanishes_with_everything_under_it() {
        let storage = MemoryStorage::new();
        let sub = Path::new("/a/b");
        storage.create_dir_all(sub).unwrap();
        let file = sub.join("f");
        let handle = storage.open_file(&file, OpenMode::CreateNew).unwrap();
        handle.write_all_at(0, b"synced").unwrap();
        handle.sync_data().unwrap();
        storage.sync_dir(sub).unwrap();
        storage.sync_dir(Path::new("/a")).unwrap();
        // `/a` itself was never made durable in `/`.
        storage.crash(CrashMode::LoseUnsynced);
        assert!(!storage.exists(Path::new("/a")));
        assert!(!storage.exists(sub));
        assert!(!storage.exists(&file));
        assert!(storage.files().is_empty() && storage.dirs().is_empty());
        assert!(storage.list_dir(Path::new("/")).unwrap().is_empty());
    }

    #[test]
    fn directory_entries_survive_once_every_parent_is_synced() {
        let storage = MemoryStorage::new();
        let sub = Path::new("/a/b");
        storage.create_dir_all(sub).unwrap();
        storage.sync_dir(Path::new("/a")).unwrap();
        storage.sync_dir(Path::new("/")).unwrap();
        storage.create_dir_all(Path::new("/a/c")).unwrap();
        storage.crash(CrashMode::LoseUnsynced);
        assert!(storage.exists(sub));
        assert!(
            !storage.exists(Path::new("/a/c")),
            "its entry in /a was not synced"
        );
        // Relative paths: the empty path is the root.
        storage.create_dir_all(Path::new("rel/x")).unwrap();
        storage.sync_dir(Path::new("rel")).unwrap();
        storage.sync_dir(Path::new("")).unwrap();
        storage.crash(CrashMode::Reorder { seed: 3 });
        assert!(storage.exists(Path::new("rel/x")));
    }

    #[test]
    fn process_crash_keeps_unsynced_directories_until_power_loss() {
        let storage = MemoryStorage::new();
        storage.create_dir_all(Path::new("/a/b")).unwrap();
        storage.crash(CrashMode::KeepUnsynced);
        assert!(storage.exists(Path::new("/a/b")));
        storage.crash(CrashMode::LoseUnsynced);
        assert!(!storage.exists(Path::new("/a")));
    }

    #[test]
    fn sync_of_a_missing_directory_fails() {
        let storage = MemoryStorage::new();
        let error = storage.sync_dir(Path::new("/missing")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn halt_stops_every_operation_after_the_chosen_step_until_a_crash() {
        let storage = MemoryStorage::new();
        // Two directories, one file creation: the fourth mutation (the write) halts.
        storage.halt_after(3);
        storage.create_dir_all(Path::new("/a/b")).unwrap();
        let path = Path::new("/a/b/f");
        let file = storage.open_file(path, OpenMode::CreateNew).unwrap();
        assert!(!storage.is_halted());
        assert!(file.write_all_at(0, b"x").is_err());
        assert!(storage.is_halted());
        assert!(file.read_at(0, &mut [0; 1]).is_err(), "reads fail too");
        assert!(storage.list_dir(Path::new("/a")).is_err());
        assert!(storage.sync_dir(Path::new("/a")).is_err());
        assert_eq!(storage.file_contents(path).unwrap(), b"");
        storage.crash(CrashMode::LoseUnsynced);
        assert!(!storage.is_halted());
        assert!(!storage.exists(Path::new("/a")), "nothing was synced");
        storage.create_dir_all(Path::new("/a")).unwrap();

        // A halt can fall between the directories one `create_dir_all` makes.
        storage.halt_after(1);
        assert!(storage.create_dir_all(Path::new("/x/y")).is_err());
        assert!(storage.exists(Path::new("/x")) && !storage.exists(Path::new("/x/y")));
    }
}
