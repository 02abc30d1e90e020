//! A child process the crash tests talk to by lines and kill with SIGKILL.
//!
//! Owns: spawning a test child with piped stdout and stderr, a reader thread that forwards
//! each complete stdout line (a line cut by the kill has no newline, so it was never printed
//! whole and is dropped), a reader thread that keeps the tail of stderr (so a chatty child never
//! blocks on a full pipe, and a failure can show what it said), and the kill itself. It must
//! never interpret the lines: what a line means is the test's business.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Instant;

/// Bytes of a child's stderr kept for error messages (the tail).
const STDERR_TAIL_BYTES: usize = 64 * 1024;

/// A running child whose complete stdout lines arrive one by one.
pub struct LineChild {
    child: Child,
    lines: Receiver<String>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl LineChild {
    /// Spawns `command` with stdout and stderr piped (whatever `command` said about them).
    pub fn spawn(command: &mut Command) -> LineChild {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn the child {command:?}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(complete) = line.strip_suffix('\n') {
                    let _ = sender.send(complete.to_owned());
                }
                line.clear();
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut tail = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(read @ 1..) = reader.read(&mut chunk) {
                tail.extend_from_slice(&chunk[..read]);
                if tail.len() > STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
            String::from_utf8_lossy(&tail).into_owned()
        });
        LineChild {
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// The next complete line, waiting at most until `deadline`. `Err(Timeout)` when none came
    /// in time, `Err(Disconnected)` when the child closed its stdout (it exited).
    pub fn recv_until(&self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        self.lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    /// The next complete line; panics (after killing the child, showing its stderr) when none
    /// came by `deadline`.
    pub fn expect_line(&mut self, deadline: Instant) -> String {
        match self.recv_until(deadline) {
            Ok(line) => line,
            Err(error) => self.fail(&format!("no line from the child ({error})")),
        }
    }

    /// Kills the child and panics with `message` and the tail of its stderr.
    pub fn fail(&mut self, message: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr_tail();
        panic!("{message}; the child's stderr: {stderr}");
    }

    /// Kills the child with SIGKILL (no destructor runs, nothing is flushed or unlocked) and
    /// returns the complete lines it printed that were not received yet. Panics if the child
    /// had already exited on its own.
    pub fn kill(mut self) -> Vec<String> {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            self.fail(&format!("the child exited on its own: {status}"));
        }
        self.child.kill().expect("SIGKILL the child");
        let status = self.child.wait().expect("wait for the killed child");
        assert!(!status.success(), "killed, not exited: {status}");
        self.rest()
    }

    /// Waits for the child to exit, asserts it succeeded, and returns the complete lines not
    /// received yet.
    pub fn wait_success(mut self) -> Vec<String> {
        let status: ExitStatus = self.child.wait().expect("wait for the child");
        if !status.success() {
            self.fail(&format!("the child failed: {status}"));
        }
        self.rest()
    }

    fn rest(&mut self) -> Vec<String> {
        if let Some(stdout) = self.stdout.take() {
            stdout.join().expect("the stdout reader");
        }
        self.lines.try_iter().collect()
    }

    fn stderr_tail(&mut self) -> String {
        self.stderr
            .take()
            .map(|stderr| stderr.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        // A test that panicked half-way must not leave a child running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
