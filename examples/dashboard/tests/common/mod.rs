//! Test support: the `dashboard` binary as a child process, and a small HTTP/1.1 client over
//! a plain `TcpStream` (requests and the start of an SSE stream), with timeouts everywhere.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: the machine is slow and shared.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one HTTP exchange may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `dashboard` child.
pub struct Server {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl Server {
    /// Starts the binary on `dir`, listening on `listen` (`127.0.0.1:0` for any free port),
    /// and waits for its `listening on http://ADDR/` line.
    pub fn start(dir: &Path, listen: &str) -> Server {
        Server::start_with(dir, listen, &[])
    }

    /// [`Server::start`] with more arguments.
    pub fn start_with(dir: &Path, listen: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dashboard"))
            .arg("--dir")
            .arg(dir)
            .arg("--listen")
            .arg(listen)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the dashboard binary");
        let stdout = child.stdout.take().expect("child stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening on http://") {
                        let address = rest.trim_end_matches('/').to_owned();
                        // Keep draining stdout so the child never blocks on a full pipe.
                        std::thread::spawn(move || while lines_rx.recv().is_ok() {});
                        return Server { child, address };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the dashboard did not print its address within {STARTUP_TIMEOUT:?}");
                }
            }
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port in the address")
    }

    /// SIGKILL, and reap it.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL the dashboard");
        self.child.wait().expect("reap the dashboard");
    }

    /// Sends `signal` (`TERM`, `INT`) with the `kill` command and waits for the exit status.
    pub fn signal_and_wait(mut self, signal: &str, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed: {sent}");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the dashboard") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the dashboard did not exit within {timeout:?} of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request; returns the status code and the JSON body (`Value::Null` when empty).
pub fn http(address: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).expect("connect to the dashboard");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, content) = response.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    let json = if content.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(content).unwrap_or_else(|e| panic!("JSON body {content:?}: {e}"))
    };
    (status, json)
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The job's entry in `/api/state`.
pub fn job(address: &str, job_id: &str) -> Option<Value> {
    let (status, state) = http(address, "GET", "/api/state", None);
    assert_eq!(status, 200, "{state}");
    state["jobs"]
        .as_array()?
        .iter()
        .find(|job| job["job_id"] == job_id)
        .cloned()
}

/// Opens `/api/events` with the given extra headers and reads the first `count` events' ids
/// (lines `id: N`), in order.
pub fn sse_ids(address: &str, query: &str, headers: &str, count: usize) -> Vec<u64> {
    let mut stream = TcpStream::connect(address).expect("connect to the dashboard");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let request = format!(
        "GET /api/events{query} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\
         {headers}Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut reader = BufReader::new(stream);
    let mut ids = Vec::new();
    let mut line = String::new();
    while ids.len() < count {
        line.clear();
        let read = reader.read_line(&mut line).expect("read the event stream");
        assert!(read > 0, "the event stream ended after ids {ids:?}");
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            ids.push(id.parse().expect("a numeric id"));
        } else if let Some(id) = line.trim_end().strip_prefix("id:") {
            ids.push(id.trim().parse().expect("a numeric id"));
        }
    }
    ids
}
