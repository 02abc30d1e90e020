//! Progress bars for long work, on a terminal only: piped output shows nothing of the kind.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logbook::inspect::Progress;
use std::cell::RefCell;
use std::io::IsTerminal;

/// An indicatif bar on stderr while work runs, when stderr is a terminal; nothing otherwise.
pub struct Bar {
    terminal: bool,
    bar: RefCell<Option<ProgressBar>>,
}

impl Bar {
    pub fn new() -> Bar {
        Bar {
            terminal: std::io::stderr().is_terminal(),
            bar: RefCell::new(None),
        }
    }
}

impl Progress for Bar {
    fn start(&self, what: &'static str, total: u64) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{msg:>8} [{bar:40}] {percent:>3}% {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what);
        if let Some(previous) = self.bar.replace(Some(bar)) {
            previous.finish_and_clear();
        }
    }

    fn advance(&self, units: u64) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.inc(units);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
