//! The directory lock: one writer at a time (another handle or another process gets `Locked`
//! naming `<dir>/LOCK`), a read-only open works beside a live writer and never writes, and files
//! and directories are private (0600 / 0700).

use logbook_tests::{MEMORY_DIR, options, payload, positions, read_all, snapshot_dir};
use logbook_wal::{
    Error, FileStorage, LOCK_FILE_NAME, MemoryStorage, Storage, SyncPolicy, WAL_DIR_NAME, Wal,
    WalOptions,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

const CHILD: &str = env!("CARGO_BIN_EXE_wal_crash_child");

/// Every test here runs alone: a child process spawned by one test holds copies of the other
/// tests' lock-file descriptors until it execs, so a lock released by a close could still look
/// held for a moment (flock locks belong to the open file, which the fork shares).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn small_segments() -> WalOptions {
    options(SyncPolicy::Always, 400)
}

fn assert_locked(result: logbook_wal::Result<(Wal, logbook_wal::RecoveryReport)>, dir: &Path) {
    let lock_path = dir.join(LOCK_FILE_NAME);
    let error = result.expect_err("a second writer is refused");
    assert!(
        matches!(&error, Error::Locked { path } if *path == lock_path),
        "{error:?}"
    );
    assert!(error.to_string().contains(&lock_path.display().to_string()));
}

fn two_writers(storage: Arc<dyn Storage>, dir: &Path) {
    let (first, _) = Wal::open_with_storage(storage.clone(), dir, small_segments()).unwrap();
    first.append(b"one").unwrap();
    assert_locked(
        Wal::open_with_storage(storage.clone(), dir, small_segments()),
        dir,
    );
    first.close().unwrap();
    let (second, report) = Wal::open_with_storage(storage.clone(), dir, small_segments()).unwrap();
    assert_eq!(report.last_position, 1);
    second.append(b"two").unwrap();
    // Dropping (without close) releases the lock too.
    drop(second);
    let (third, _) = Wal::open_with_storage(storage, dir, small_segments()).unwrap();
    assert_eq!(positions(&read_all(&third, 1)), [1, 2]);
}

#[test]
fn a_second_writer_is_locked_out_on_files() {
    let _serial = serial();
    let temp = tempfile::tempdir().unwrap();
    two_writers(Arc::new(FileStorage::new()), &temp.path().join("log"));
}

#[test]
fn a_second_writer_is_locked_out_in_memory() {
    let _serial = serial();
    two_writers(Arc::new(MemoryStorage::new()), Path::new(MEMORY_DIR));
}

/// A reader that outlives its WAL must not keep the directory locked.
#[test]
fn closing_the_writer_releases_the_lock_despite_live_readers() {
    let _serial = serial();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let (wal, _) = Wal::open(&dir, small_segments()).unwrap();
    wal.append(b"one").unwrap();
    let mut reader = wal.read_from(1);
    wal.close().unwrap();
    let (wal, _) = Wal::open(&dir, small_segments()).expect("the lock was released at close");
    assert_eq!(reader.next().unwrap().unwrap().payload, b"one");
    wal.append(b"two").unwrap();
}

fn probe_lock(dir: &Path) -> String {
    let output = Command::new(CHILD)
        .arg("probe-lock")
        .arg(dir)
        .output()
        .expect("run the probe");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn another_process_is_locked_out() {
    let _serial = serial();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let (wal, _) = Wal::open(&dir, small_segments()).unwrap();
    let lock_path = dir.join(LOCK_FILE_NAME);
    assert_eq!(probe_lock(&dir), format!("locked {}", lock_path.display()));
    wal.close().unwrap();
    assert_eq!(probe_lock(&dir), "opened");
}

/// Appends `count` records after the current last position, with `Always`.
fn append(wal: &Wal, count: u64) {
    let start = wal.last_position() + 1;
    for position in start..start + count {
        assert_eq!(wal.append(&payload(position, 60)).unwrap(), position);
    }
}

fn check_payloads(wal: &Wal, last: u64) {
    let records = read_all(wal, 1);
    assert_eq!(positions(&records), (1..=last).collect::<Vec<_>>());
    for record in records {
        assert_eq!(record.payload, payload(record.position, 60));
    }
}

#[test]
fn read_only_opens_beside_a_live_writer_and_never_writes() {
    let _serial = serial();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let (writer, _) = Wal::open(&dir, small_segments()).unwrap();
    append(&writer, 5);

    let before = snapshot_dir(&dir);
    let (reader, report) = Wal::open_read_only(&dir, small_segments()).unwrap();
    assert_eq!(report.last_position, 5);
    check_payloads(&reader, 5);
    assert_eq!(snapshot_dir(&dir), before, "a read-only open wrote");

    // The writer goes on, rolling segments; the reader sees it all after `refresh`.
    append(&writer, 20);
    assert!(writer.segments().len() > 2);
    let mut tail = reader.read_from(6);
    assert!(tail.next().is_none(), "not before refresh");
    let before = snapshot_dir(&dir);
    assert_eq!(reader.refresh().unwrap(), 25);
    check_payloads(&reader, 25);
    assert_eq!(tail.next().unwrap().unwrap().position, 6);
    assert_eq!(reader.segments().len(), writer.segments().len());

    assert!(matches!(reader.append(b"no"), Err(Error::ReadOnly)));
    assert!(matches!(
        reader.append_batch(&[b"no"]),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(reader.truncate_before(25), Err(Error::ReadOnly)));
    reader.close().unwrap();
    assert_eq!(snapshot_dir(&dir), before, "a read-only handle wrote");

    // The reader held no lock: closing the writer lets a new writer in beside a reader.
    let (reader, _) = Wal::open_read_only(&dir, small_segments()).unwrap();
    writer.close().unwrap();
    let (writer, _) = Wal::open(&dir, small_segments()).unwrap();
    append(&writer, 1);
    assert_eq!(reader.refresh().unwrap(), 26);
    check_payloads(&reader, 26);
}

/// A read-only open of a log with a torn tail and no lock file cuts nothing, creates nothing.
#[test]
fn read_only_open_of_a_torn_log_changes_nothing() {
    let _serial = serial();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let (writer, _) = Wal::open(&dir, small_segments()).unwrap();
    append(&writer, 12);
    let last_segment = writer.segments().last().unwrap().path.clone();
    writer.close().unwrap();
    std::fs::remove_file(dir.join(LOCK_FILE_NAME)).unwrap();
    let mut bytes = std::fs::read(&last_segment).unwrap();
    let len = bytes.len();
    bytes.extend_from_slice(&[0xAB; 40]);
    bytes.extend_from_slice(&[0; 100]);
    std::fs::write(&last_segment, &bytes).unwrap();

    let before = snapshot_dir(&dir);
    let (reader, report) = Wal::open_read_only(&dir, small_segments()).unwrap();
    assert!(report.tail_cut.is_none(), "read-only opens cut nothing");
    check_payloads(&reader, 12);
    reader.refresh().unwrap();
    drop(reader);
    assert_eq!(snapshot_dir(&dir), before);
    assert!(!dir.join(LOCK_FILE_NAME).exists());

    let (writer, report) = Wal::open(&dir, small_segments()).unwrap();
    assert_eq!(report.tail_cut.unwrap().offset, len as u64);
    check_payloads(&writer, 12);
}

fn mode(path: &PathBuf) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn files_are_0600_and_directories_0700() {
    let _serial = serial();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let (writer, _) = Wal::open(&dir, small_segments()).unwrap();
    append(&writer, 20);
    writer.truncate_before(10).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(WAL_DIR_NAME)), 0o700);
    let mut files = 0;
    for (path, snapshot) in snapshot_dir(&dir) {
        let is_dir = snapshot.mode & 0o170000 == 0o040000;
        let expected = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(snapshot.mode & 0o777, expected, "{path:?}");
        files += usize::from(!is_dir);
    }
    assert!(files > 3, "LOCK and several segments");
    assert_eq!(mode(&dir.join(LOCK_FILE_NAME)), 0o600);
}
