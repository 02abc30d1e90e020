//! The import workload (issue 16): a generated 1,000,000-message room file imported with
//! `logbook::import` into a fresh log (events/s), beside the floor, the same file only parsed:
//! serde_json streaming over it (`IgnoredAny`, what the importer's parser does at least once
//! per pass) and `jq '.messages | length'` when `jq` is installed. Rounds interleave the three;
//! the medians are printed with the ratios to the serde_json floor.
//!
//! `cargo run --release -p logbook-bench-compare --bin logbook-bench-import -- [MESSAGES] [ROUNDS]`

use logbook::import::{ImportFormat, import_file};
use logbook::{BuiltinLog, LogbookOptions};
use std::io::{BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

fn generate(path: &Path, messages: u64) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    write!(
        out,
        "{{\"id\": \"bench\", \"name\": \"Bench\", \"created_at_ms\": 1, \"members\": [\"ada\", \"grace\"], \"messages\": ["
    )?;
    for index in 0..messages {
        let separator = if index == 0 { "" } else { "," };
        write!(
            out,
            "{separator}\n{{\"id\": \"m{index}\", \"author\": \"user{}\", \"body\": \"message number {index} of the benchmark room\", \"timestamp_ms\": {}}}",
            index % 50,
            1_700_000_000_000 + index
        )?;
    }
    write!(out, "\n]}}\n")?;
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

fn parse_serde(path: &Path) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let reader = BufReader::with_capacity(64 << 10, std::fs::File::open(path)?);
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    serde::de::Deserialize::deserialize(&mut deserializer).map(|_: serde::de::IgnoredAny| ())?;
    deserializer.end()?;
    Ok(started.elapsed())
}

fn parse_jq(path: &Path) -> Option<Duration> {
    let started = Instant::now();
    let output = std::process::Command::new("jq")
        .arg(".messages | length")
        .arg(path)
        .output()
        .ok()?;
    output.status.success().then(|| started.elapsed())
}

fn import_once(
    runtime: &tokio::runtime::Runtime,
    file: &Path,
) -> Result<(Duration, u64), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    runtime.block_on(async {
        let (log, _) = BuiltinLog::open(dir.path(), LogbookOptions::default()).await?;
        let started = Instant::now();
        let report = import_file(&log, ImportFormat::Room, file).await?;
        let elapsed = started.elapsed();
        log.close().await?;
        Ok((elapsed, report.events_written + 1))
    })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let messages: u64 = args.next().map_or(Ok(1_000_000), |arg| arg.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |arg| arg.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let temp = tempfile::tempdir()?;
    let file = temp.path().join("room.json");
    let bytes = generate(&file, messages)?;
    println!("room file: {messages} messages, {bytes} bytes");
    let (mut imports, mut serdes, mut jqs) = (Vec::new(), Vec::new(), Vec::new());
    let mut events = 0;
    for round in 0..rounds {
        let serde = parse_serde(&file)?;
        let jq = parse_jq(&file);
        let (import, written) = import_once(&runtime, &file)?;
        events = written;
        println!(
            "round {round}: import {:.2} s, serde_json parse {:.2} s, jq {}",
            import.as_secs_f64(),
            serde.as_secs_f64(),
            jq.map_or("not installed".to_owned(), |jq| format!(
                "{:.2} s",
                jq.as_secs_f64()
            ))
        );
        imports.push(import);
        serdes.push(serde);
        if let Some(jq) = jq {
            jqs.push(jq);
        }
    }
    let (import, serde) = (median(imports), median(serdes));
    println!(
        "median import: {:.2} s, {:.0} events/s ({events} events, the marker included), {:.1} MB/s",
        import.as_secs_f64(),
        events as f64 / import.as_secs_f64(),
        bytes as f64 / 1e6 / import.as_secs_f64()
    );
    println!(
        "median serde_json parse: {:.2} s ({:.1} MB/s); import / parse = {:.2}x",
        serde.as_secs_f64(),
        bytes as f64 / 1e6 / serde.as_secs_f64(),
        import.as_secs_f64() / serde.as_secs_f64()
    );
    if !jqs.is_empty() {
        let jq = median(jqs);
        println!(
            "median jq parse: {:.2} s; import / jq = {:.2}x",
            jq.as_secs_f64(),
            import.as_secs_f64() / jq.as_secs_f64()
        );
    }
    Ok(())
}
