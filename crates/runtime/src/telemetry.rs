//! Logging set-up, once per process.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` filters (default `info`),
/// `SLUICE_LOG_FORMAT=json` switches to one JSON object a line. A second call
/// (tests, the all-in-one binary) leaves the first in place.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours());
    let _ = match std::env::var("SLUICE_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().try_init(),
        _ => builder.try_init(),
    };
}

/// Colour codes only for a person at a terminal: the log goes to stdout, and
/// a file, a pipe or Docker's log driver would keep the escape sequences as
/// text. `NO_COLOR` (<https://no-color.org>) turns them off at a terminal too.
fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
