//! Throwaway PostgreSQL clusters for logbook's tests.
//!
//! Owns: finding the PostgreSQL server binaries (`PATH`, else `/usr/lib/postgresql/*/bin`),
//! `initdb` into a fresh temporary directory, `pg_ctl start` listening only on a Unix socket in
//! that directory (no TCP port), trust authentication, one fresh database per test, stopping the
//! server (`-m immediate`) and removing the directory at the end, and the `kill_server` /
//! `restart` faults. PostgreSQL refuses to run as root, so as root every server command runs
//! through `runuser -u postgres` on a directory that user owns (CI runs as root with no `sudo`).
//!
//! Never: skips a test because PostgreSQL is missing (a missing or broken installation panics
//! with a message that says what to install), listens on TCP, touches a cluster it did not create,
//! or is used outside tests (every failure here is a panic, the test's failure).
//!
//! A cluster shared by every test of one test binary is [`Cluster::shared`]; statics are never
//! dropped, so each cluster also starts a small watchdog shell that stops the server and removes
//! its directory once the test process is gone (even after a panic or an abort).
//!
//! ```no_run
//! let cluster = logbook_pgtest::Cluster::shared();
//! let database = cluster.create_database();
//! // tokio_postgres::connect(&database.connection_string(), NoTls) ...
//! # let _ = database;
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The superuser `initdb` creates and every test connects as.
pub const SUPERUSER: &str = "postgres";
/// The unprivileged system user that runs the server when the tests run as root.
pub const RUN_AS_USER: &str = "postgres";
/// The port number: with no TCP listener it only names the socket file `.s.PGSQL.<port>`.
pub const PORT: u16 = 5432;
/// Connections the server accepts: many tests of one binary each hold a pool at once.
pub const MAX_CONNECTIONS: u32 = 300;
/// Seconds `pg_ctl` waits for the server to start or stop.
pub const PG_CTL_WAIT_SECONDS: u32 = 60;
/// How often (seconds) the watchdog checks that the test process still runs.
pub const WATCHDOG_POLL_SECONDS: u32 = 1;

/// Settings of a throwaway cluster; the default turns `fsync` off.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterOptions {
    /// `fsync` of the server. Tests may turn it off for speed (an immediate stop still keeps
    /// every committed transaction: the bytes are in the kernel); benchmarks never do.
    pub fsync: bool,
}

/// One running throwaway PostgreSQL cluster, stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    options: ClusterOptions,
    next_database: AtomicU64,
    watchdog: Option<Child>,
}

/// One fresh database in a [`Cluster`].
#[derive(Debug, Clone)]
pub struct TestDatabase {
    name: String,
    socket_dir: PathBuf,
}

impl TestDatabase {
    /// The database name (`t_<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A libpq key/value connection string for `tokio_postgres` (Unix socket, trust auth).
    pub fn connection_string(&self) -> String {
        format!(
            "host={} port={PORT} user={SUPERUSER} dbname={}",
            self.socket_dir.display(),
            self.name
        )
    }

    /// The same as a `postgres://` URL (the socket directory percent-encoded as the host).
    pub fn url(&self) -> String {
        let host: String = self
            .socket_dir
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('/', "%2F");
        format!("postgres://{SUPERUSER}@{host}:{PORT}/{}", self.name)
    }
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static NEXT_CLUSTER: AtomicU64 = AtomicU64::new(0);

impl Cluster {
    /// The one cluster of this test binary, started on first use (fsync off).
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| Cluster::start(ClusterOptions::default()))
    }

    /// Starts a private cluster, e.g. for a test that kills its server.
    ///
    /// # Panics
    /// When PostgreSQL is not installed or the cluster cannot start: the message says why.
    pub fn start(options: ClusterOptions) -> Cluster {
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found: no `initdb` and `pg_ctl` in PATH nor in \
                 /usr/lib/postgresql/*/bin. Install the `postgresql` package (apt-get install \
                 postgresql; .ci/run does this). These tests never skip."
            )
        });
        let run_as = if is_root() {
            ensure_run_as_user();
            Some(RUN_AS_USER.to_string())
        } else {
            None
        };
        let root = make_root_dir(run_as.as_deref());
        let mut cluster = Cluster {
            data: root.join("data"),
            root,
            bin,
            run_as,
            options,
            next_database: AtomicU64::new(0),
            watchdog: None,
        };
        cluster.watchdog = Some(cluster.spawn_watchdog());
        cluster.initdb();
        cluster.restart();
        cluster
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Creates a fresh, empty database `t_<n>`.
    pub fn create_database(&self) -> TestDatabase {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        TestDatabase {
            name,
            socket_dir: self.root.clone(),
        }
    }

    /// Runs one SQL statement with `psql` as the superuser in `database`, panicking on error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.root)
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run psql in {}: {error}", self.bin.display()));
        check(&output, &format!("psql -c {sql:?}"));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn kill_server(&self) {
        let output = self.server_command("pg_ctl", &self.stop_args());
        check(&output, "pg_ctl stop -m immediate");
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn restart(&self) {
        let log = self.root.join("server.log");
        let settings = format!(
            "-c listen_addresses='' -k {} -p {PORT} -c fsync={} -c max_connections={MAX_CONNECTIONS}",
            self.root.display(),
            if self.options.fsync { "on" } else { "off" },
        );
        let wait = PG_CTL_WAIT_SECONDS.to_string();
        let data = self.data.display().to_string();
        let log = log.display().to_string();
        let args = [
            "start", "-w", "-t", &wait, "-D", &data, "-l", &log, "-o", &settings,
        ];
        let output = self.server_command("pg_ctl", &args);
        if !output.status.success() {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "pg_ctl start failed ({}): {}\n{}\nserver log {log}:\n{log_text}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    fn stop_args(&self) -> Vec<String> {
        let data = self.data.display().to_string();
        let wait = PG_CTL_WAIT_SECONDS.to_string();
        ["stop", "-m", "immediate", "-w", "-t", &wait, "-D", &data]
            .map(String::from)
            .to_vec()
    }

    fn initdb(&self) {
        let data = self.data.display().to_string();
        let args = [
            "-D",
            &data,
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ];
        let output = self.server_command("initdb", &args);
        check(&output, "initdb");
    }

    /// Runs a server binary, through `runuser` when the tests run as root.
    fn server_command<S: AsRef<str>>(&self, program: &str, args: &[S]) -> Output {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        command.args(args.iter().map(AsRef::as_ref));
        command
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()))
    }

    /// A shell that waits for this process to end, then stops the server and removes the
    /// directory: the shared cluster is a static and is never dropped.
    fn spawn_watchdog(&self) -> Child {
        let stop = self.stop_args().join(" ");
        let pg_ctl = self.bin.join("pg_ctl");
        let prefix = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- "),
            None => String::new(),
        };
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep {WATCHDOG_POLL_SECONDS}; done; \
             {prefix}{pg_ctl} {stop} >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            root = self.root.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start the cluster watchdog shell: {error}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Errors are ignored: the server may already be stopped by a fault test.
        let _ = self.server_command("pg_ctl", &self.stop_args());
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

fn check(output: &Output, what: &str) {
    if !output.status.success() {
        panic!(
            "{what} failed ({}): {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The directory holding `initdb` and `pg_ctl`: `PATH` first, then the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_tools(&dir) {
                // Resolve symlinks (Debian links /usr/bin/pg_ctl to a wrapper-less binary in
                // /usr/lib/postgresql/N/bin, where psql and postgres sit beside it).
                let real_dir = std::fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|real| real.parent().map(Path::to_path_buf))
                    .filter(|real_dir| has_tools(real_dir));
                return Some(real_dir.unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn is_root() -> bool {
    command_stdout("id", &["-u"]).as_deref() == Some("0")
}

/// As root, the server needs an unprivileged user: the package's `postgres`, else one made here.
fn ensure_run_as_user() {
    if command_stdout("id", &["-u", RUN_AS_USER]).is_some() {
        return;
    }
    let created = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            RUN_AS_USER,
        ])
        .stdin(Stdio::null())
        .output();
    match created {
        Ok(output) if output.status.success() => {}
        Ok(output) => check(&output, "useradd postgres"),
        Err(error) => panic!("no user {RUN_AS_USER} to run PostgreSQL and useradd failed: {error}"),
    }
}

/// A new directory under /tmp (short, so the socket path stays under the 107-byte limit),
/// owned by the user that runs the server.
fn make_root_dir(run_as: Option<&str>) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
    let root = PathBuf::from(format!(
        "/tmp/logbook-pg-{}-{n}-{nanos:08x}",
        std::process::id()
    ));
    std::fs::create_dir(&root)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", root.display()));
    if let Some(user) = run_as {
        let uid = command_stdout("id", &["-u", user]).and_then(|text| text.parse::<u32>().ok());
        let gid = command_stdout("id", &["-g", user]).and_then(|text| text.parse::<u32>().ok());
        let (Some(uid), Some(gid)) = (uid, gid) else {
            panic!("cannot read the uid and gid of user {user} (id -u/-g {user})");
        };
        std::os::unix::fs::chown(&root, Some(uid), Some(gid))
            .unwrap_or_else(|error| panic!("cannot chown {} to {user}: {error}", root.display()));
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_serves_a_database_survives_a_kill_and_is_removed_on_drop() {
        let cluster = Cluster::start(ClusterOptions::default());
        let root = cluster.socket_dir().to_path_buf();
        let database = cluster.create_database();
        cluster.psql(
            database.name(),
            "CREATE TABLE t (x int); INSERT INTO t VALUES (7)",
        );
        cluster.kill_server();
        cluster.restart();
        assert_eq!(cluster.psql(database.name(), "SELECT x FROM t"), "7");
        let second = cluster.create_database();
        assert_ne!(second.name(), database.name());
        drop(cluster);
        assert!(!root.exists(), "{} was not removed", root.display());
    }
}
