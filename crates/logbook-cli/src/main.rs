//! `logbook`: look inside a log, check it, repair it, write to it, and watch the demo. The
//! whole tool is the library (`logbook_cli`); this binary runs it for the built-in event model.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    logbook_cli::run_builtin()
}
