//! The `dashboard` binary: `dashboard --dir DIR [--listen ADDR] [--reconnect-ms MS]`. Prints
//! `listening on http://ADDR/` once it accepts connections; SIGTERM or Ctrl-C stop it
//! gracefully (exit 0).

use logbook_dashboard::{Config, events, serve, shutdown_signal};
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str =
    "usage: dashboard --dir DIR [--listen ADDR]   (ADDR defaults to 127.0.0.1:8080)";

fn parse(args: &[String]) -> Result<Config, String> {
    let mut dir = None;
    let mut address = "127.0.0.1:8080".to_owned();
    let mut reconnect_ms = events::RECONNECT_MS_DEFAULT;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--dir" => dir = Some(iter.next().ok_or("--dir needs a value")?.into()),
            "--listen" => address.clone_from(iter.next().ok_or("--listen needs a value")?),
            "--reconnect-ms" => {
                let value = iter.next().ok_or("--reconnect-ms needs a value")?;
                reconnect_ms = value
                    .parse()
                    .ok()
                    .filter(|ms| (events::RECONNECT_MS_MIN..=events::RECONNECT_MS_MAX).contains(ms))
                    .ok_or_else(|| {
                        format!("--reconnect-ms {value:?}: from 100 to 60000 allowed")
                    })?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let dir = dir.ok_or("--dir is required")?;
    Ok(Config {
        dir,
        address,
        reconnect_ms,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(config) => config,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("dashboard: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dashboard: tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(
        config,
        |address| {
            let mut stdout = std::io::stdout().lock();
            // The tests wait for this line; a closed stdout is not a reason to stop serving.
            let _ = writeln!(stdout, "listening on http://{address}/");
            let _ = stdout.flush();
        },
        shutdown_signal(),
    ));
    match result {
        Ok(()) => {
            eprintln!("dashboard: stopped, log closed");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dashboard: {error}");
            ExitCode::FAILURE
        }
    }
}
