//! The results table: samples per (workload, peer), printed as medians with ratios, as a
//! Markdown table that `docs/benchmarks.md` can hold as is.

use crate::measure::median;
use crate::workload::Peer;

#[derive(Debug)]
struct Entry {
    workload: String,
    peer: Peer,
    unit: &'static str,
    higher_is_better: bool,
    samples: Vec<f64>,
    details: Vec<(&'static str, Vec<f64>)>,
}

/// Every sample taken, in the order workloads first appeared.
#[derive(Debug, Default)]
pub struct Table {
    entries: Vec<Entry>,
}

impl Table {
    fn entry(&mut self, workload: &str, peer: Peer) -> Option<&mut Entry> {
        self.entries
            .iter_mut()
            .find(|entry| entry.workload == workload && entry.peer == peer)
    }

    /// Adds a sample of a workload's main figure.
    pub fn figure(
        &mut self,
        workload: &str,
        peer: Peer,
        unit: &'static str,
        higher_is_better: bool,
        value: f64,
    ) {
        if let Some(entry) = self.entry(workload, peer) {
            entry.samples.push(value);
            return;
        }
        self.entries.push(Entry {
            workload: workload.to_owned(),
            peer,
            unit,
            higher_is_better,
            samples: vec![value],
            details: Vec::new(),
        });
    }

    /// Adds a sample of a secondary figure, shown as a median in the detail column. The
    /// workload's main figure must have been recorded first.
    pub fn detail(&mut self, workload: &str, peer: Peer, name: &'static str, value: f64) {
        let Some(entry) = self.entry(workload, peer) else {
            return;
        };
        match entry.details.iter_mut().find(|(known, _)| *known == name) {
            Some((_, samples)) => samples.push(value),
            None => entry.details.push((name, vec![value])),
        }
    }

    fn median_of(&self, workload: &str, peer: Peer) -> Option<f64> {
        self.entries
            .iter()
            .find(|entry| entry.workload == workload && entry.peer == peer)
            .map(|entry| median(&entry.samples))
    }

    /// The table in Markdown.
    pub fn render(&self) -> String {
        let mut workloads: Vec<&str> = Vec::new();
        for entry in &self.entries {
            if !workloads.contains(&entry.workload.as_str()) {
                workloads.push(&entry.workload);
            }
        }
        let mut out = String::from(
            "| workload | peer | median | unit | better | spread | logbook/peer | \
             tuned/peer | detail (medians) |\n|---|---|---:|---|---|---:|---:|---:|---|\n",
        );
        for workload in workloads {
            // The postgres workload has no embedded logbook: its logbook is logbook-postgres.
            let logbook = self
                .median_of(workload, Peer::Logbook)
                .or_else(|| self.median_of(workload, Peer::LogbookPostgres));
            let tuned = self.median_of(workload, Peer::LogbookTuned);
            let mut rows: Vec<&Entry> = self
                .entries
                .iter()
                .filter(|entry| entry.workload == workload)
                .collect();
            rows.sort_by_key(|entry| entry.peer);
            for entry in rows {
                out.push_str(&row(entry, logbook, tuned));
            }
        }
        out
    }
}

fn ratio(numerator: Option<f64>, denominator: f64) -> String {
    match numerator {
        Some(numerator) if denominator > 0.0 => format!("{:.2}x", numerator / denominator),
        _ => String::new(),
    }
}

fn row(entry: &Entry, logbook: Option<f64>, tuned: Option<f64>) -> String {
    let value = median(&entry.samples);
    let (low, high) = entry
        .samples
        .iter()
        .fold((f64::MAX, f64::MIN), |(low, high), sample| {
            (low.min(*sample), high.max(*sample))
        });
    let spread = if value > 0.0 {
        format!("±{:.0}%", (high - low) / value * 50.0)
    } else {
        String::new()
    };
    let details: Vec<String> = entry
        .details
        .iter()
        .map(|(name, samples)| format!("{name} {}", number(median(samples))))
        .collect();
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        entry.workload,
        entry.peer.name(),
        number(value),
        entry.unit,
        if entry.higher_is_better {
            "higher"
        } else {
            "lower"
        },
        spread,
        ratio(logbook, value),
        ratio(tuned, value),
        details.join(", "),
    )
}

/// A figure with thousands separators above 100, one decimal below.
fn number(value: f64) -> String {
    if value.abs() < 100.0 {
        return format!("{value:.1}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 {
        grouped.insert(0, '-');
    }
    grouped
}
