//! End to end, as a person would use it: headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` with fantoccini) opens the page, starts a job, the server is killed with
//! SIGKILL mid-job and restarted on the same directory and port, and the page shows the job
//! as interrupted with the progress seen before the crash, the event stream resumed with no
//! missing and no repeated id, and a message posted after the restart. Screenshots go to
//! `target/dashboard-e2e/`. Never skips: without the browser it fails and says what to install.

mod common;

use common::{Server, http};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: the machine is slow and shared, and a browser starts slowly.
const WAIT: Duration = Duration::from_secs(120);
/// The event stream's `retry:` in this test: long enough that the page is still away when the
/// test writes events right after the restart, so the resume must fetch them.
const RECONNECT_MS: &str = "8000";
/// The screenshot's window.
const WINDOW: (u32, u32) = (1280, 860);

/// `$NAME` when set, else `default`; panics with what to install when it is not there.
fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found (set {env} to another path): the browser test needs Debian's chromium and \
         chromium-driver packages: apt-get install -y --no-install-recommends chromium \
         chromium-driver (scripts/test.sh installs them when missing)",
        path.display()
    );
    path
}

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn start_driver(chromedriver: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    common::wait_until("chromedriver to listen", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    driver
}

async fn browser(driver: &Driver, chromium: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-gpu".to_owned(),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
    ];
    let options = json!({"binary": chromium.display().to_string(), "args": args});
    capabilities.insert("goog:chromeOptions".to_owned(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with headless chromium")
}

/// Polls `probe` every 150 ms until it returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn script(client: &Client, code: &str) -> Value {
    client
        .execute(code, vec![])
        .await
        .expect("run a script in the page")
}

/// The first job row: its id, `data-state` and `data-done`.
async fn job_row(client: &Client) -> Option<(String, String, u64)> {
    let row = script(
        client,
        "const r = document.querySelector('#jobs tr'); \
         return r ? [r.id, r.dataset.state, Number(r.dataset.done)] : null;",
    )
    .await;
    let id = row.get(0)?.as_str()?.strip_prefix("job-row-")?.to_owned();
    Some((id, row.get(1)?.as_str()?.to_owned(), row.get(2)?.as_u64()?))
}

async fn text_of(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn post_in_page(client: &Client, body: &str) {
    let input = client
        .find(Locator::Id("body"))
        .await
        .expect("the message input");
    input.clear().await.expect("clear");
    input.send_keys(body).await.expect("type a message");
    client
        .find(Locator::Id("post"))
        .await
        .expect("post")
        .click()
        .await
        .expect("click post");
    let selector = "#room-lobby .message";
    eventually(&format!("message {body:?} in the page"), || async {
        let texts = script(
            client,
            &format!(
                "return [...document.querySelectorAll('{selector}')].map(e => e.textContent);"
            ),
        )
        .await;
        texts
            .as_array()?
            .iter()
            .any(|t| t.as_str().is_some_and(|t| t.ends_with(body)))
            .then_some(())
    })
    .await;
}

async fn ids(client: &Client) -> Vec<u64> {
    let ids = script(client, "return window.__ids;").await;
    ids.as_array()
        .expect("window.__ids")
        .iter()
        .map(|id| id.as_u64().expect("a numeric id"))
        .collect()
}

/// A room with more messages than the first page: "Load older" brings the rest, then hides.
async fn load_older_pages(client: &Client, address: &str) {
    for n in 0..25 {
        let message = json!({"author": "cy", "body": format!("old {n}")});
        let (status, body) = blocking(|| {
            http(
                address,
                "POST",
                "/api/rooms/archive/messages",
                Some(&message),
            )
        });
        assert_eq!(status, 201, "{body}");
    }
    let count = "return document.querySelectorAll('#room-archive .message').length;";
    eventually("the archive room's first page", || async {
        (script(client, count).await.as_u64()? == 20).then_some(())
    })
    .await;
    let button = client
        .find(Locator::Css("#room-archive .load-older"))
        .await
        .expect("a load older button");
    button.click().await.expect("click load older");
    eventually("the older page", || async {
        (script(client, count).await.as_u64()? == 25).then_some(())
    })
    .await;
    let first = script(
        client,
        "return document.querySelector('#room-archive .message').textContent;",
    );
    assert_eq!(first.await, json!("cyold 0"), "the oldest message first");
    assert!(
        !button.is_displayed().await.expect("displayed"),
        "no older page left"
    );
}

fn save_screenshot(png: &[u8], name: &str) -> PathBuf {
    // target/<profile>/dashboard -> target/dashboard-e2e/
    let binary = Path::new(env!("CARGO_BIN_EXE_dashboard"));
    let target = binary
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    let dir = target.join("dashboard-e2e");
    std::fs::create_dir_all(&dir).expect("create target/dashboard-e2e");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_survives_a_sigkill_mid_job() {
    let chromium = tool("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--reconnect-ms", RECONNECT_MS];
    let server = blocking(|| Server::start_with(dir.path(), "127.0.0.1:0", &args));
    let address = server.address.clone();
    let port = server.port();
    let driver = blocking(|| start_driver(&chromedriver));
    let client = browser(&driver, &chromium).await;
    client
        .set_window_size(WINDOW.0, WINDOW.1)
        .await
        .expect("window size");
    client
        .goto(&format!("http://{address}/"))
        .await
        .expect("open the page");
    eventually("the event stream to be live", || async {
        (text_of(&client, "#sse-status").await? == "live").then_some(())
    })
    .await;

    load_older_pages(&client, &address).await;
    post_in_page(&client, "before the crash").await;
    client
        .find(Locator::Id("start-job"))
        .await
        .expect("button")
        .click()
        .await
        .expect("start");
    let (job_id, _, done_seen) = eventually("the job to run 12 steps", || async {
        job_row(&client)
            .await
            .filter(|(_, state, done)| state == "running" && *done >= 12)
    })
    .await;
    let ids_before = ids(&client).await;

    blocking(|| server.kill_hard());
    let listen = format!("127.0.0.1:{port}");
    let server = blocking(|| Server::start_with(dir.path(), &listen, &args));
    // Written while the page is away (it reconnects after RECONNECT_MS): only a stream that
    // resumes after the last id the page saw delivers it.
    let away = json!({"author": "bob", "body": "while the page was away"});
    let (status, posted) =
        blocking(|| http(&address, "POST", "/api/rooms/lobby/messages", Some(&away)));
    assert_eq!(status, 201, "{posted}");
    let away_position = posted["position"].as_u64().expect("position");
    assert!(
        ids(&client).await.last() < Some(&away_position),
        "the page reconnected before the test wrote; raise RECONNECT_MS"
    );
    eventually("the message written while away in the page", || async {
        let texts = script(
            &client,
            "return document.querySelector('#room-lobby').textContent;",
        );
        texts
            .await
            .as_str()?
            .contains("while the page was away")
            .then_some(())
    })
    .await;
    let manual = script(&client, "return window.__manual_reconnects;").await;
    assert_eq!(
        manual,
        json!(0),
        "the browser's own reconnect (Last-Event-ID) resumed the stream"
    );

    // Interrupted (not failed), with at least the progress the page showed before the kill.
    let (_, _, done_after) = eventually("the job to show as interrupted", || async {
        job_row(&client)
            .await
            .filter(|(id, state, _)| *id == job_id && state == "interrupted")
    })
    .await;
    assert!(
        done_after >= done_seen,
        "progress went back from {done_seen} to {done_after}"
    );
    let resume = format!("#resume-{job_id}");
    client
        .find(Locator::Css(&resume))
        .await
        .expect("a resume button");

    post_in_page(&client, "after the restart").await;
    let (_, health) = blocking(|| http(&address, "GET", "/health", None));
    let durable = health["durable_position"]
        .as_u64()
        .expect("durable_position");
    let received = eventually("every durable event in the page", || async {
        let received = ids(&client).await;
        (received.last() >= Some(&durable)).then_some(received)
    })
    .await;
    assert!(
        received.len() > ids_before.len(),
        "no event after the restart: {received:?}"
    );
    assert_eq!(received[..ids_before.len()], ids_before[..]);
    for pair in received.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "a gap or a repeat in the SSE ids: {received:?}"
        );
    }
    // The header's figures catch up with the last event before the picture is taken.
    let last = received.last().copied().unwrap_or(0).to_string();
    eventually("the header to show the last position", || async {
        (text_of(&client, "#applied-position").await? == last).then_some(())
    })
    .await;
    script(&client, "window.scrollTo(0, 0); return null;").await;
    let png = client.screenshot().await.expect("screenshot");
    let path = save_screenshot(&png, "dashboard.png");
    eprintln!("screenshot: {}", path.display());

    // The resume button continues from the last durable step.
    client
        .find(Locator::Css(&resume))
        .await
        .expect("resume")
        .click()
        .await
        .expect("click");
    eventually("the job to run again past its last step", || async {
        job_row(&client)
            .await
            .filter(|(id, state, done)| *id == job_id && state == "running" && *done > done_after)
    })
    .await;
    let png = client.screenshot().await.expect("screenshot");
    save_screenshot(&png, "resumed.png");
    client.close().await.expect("close the browser");
    drop(driver);
    drop(server);
}
