//! What a push shows while it runs: a bar on a terminal (records, bytes,
//! rate, ETA), a plain line every few seconds otherwise, nothing with
//! `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain line is printed when stderr is no terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

enum Shown {
    Bar(ProgressBar),
    Plain { last: Instant },
    Quiet,
}

pub(crate) struct Progress {
    shown: Shown,
    name: String,
    /// The input's size as stored, when known, and how much was read.
    size: Option<u64>,
    consumed: Arc<AtomicU64>,
    retried: Arc<AtomicU64>,
    started: Instant,
}

impl Progress {
    pub(crate) fn new(
        name: &str,
        size: Option<u64>,
        consumed: Arc<AtomicU64>,
        retried: Arc<AtomicU64>,
        quiet: bool,
    ) -> Progress {
        let shown = if quiet {
            Shown::Quiet
        } else if std::io::stderr().is_terminal() {
            let template = match size {
                Some(_) => {
                    "{prefix} [{bar:24}] {bytes}/{total_bytes} · {msg} · {elapsed} · ETA {eta}"
                }
                None => "{prefix} {spinner} {bytes} · {msg} · {elapsed}",
            };
            let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                )
                .with_prefix(name.to_owned());
            Shown::Bar(bar)
        } else {
            Shown::Plain {
                last: Instant::now(),
            }
        };
        Progress {
            shown,
            name: name.to_owned(),
            size,
            consumed,
            retried,
            started: Instant::now(),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Brings the display up to date with `records` stored or refused.
    pub(crate) fn update(&mut self, records: u64) {
        let read = self.consumed.load(Ordering::Relaxed);
        let message = self.message(records);
        match &mut self.shown {
            Shown::Bar(bar) => {
                bar.set_position(read);
                bar.set_message(message);
            }
            Shown::Plain { last } if last.elapsed() >= PLAIN_EVERY => {
                *last = Instant::now();
                let done = match self.size {
                    Some(size) if size > 0 => format!(
                        "{} of {} ({}%)",
                        HumanBytes(read),
                        HumanBytes(size),
                        read * 100 / size
                    ),
                    _ => HumanBytes(read).to_string(),
                };
                eprintln!("{}: {done}, {message}", self.name);
            }
            Shown::Plain { .. } | Shown::Quiet => {}
        }
    }

    fn message(&self, records: u64) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (records as f64 / seconds) as u64;
        let retried = self.retried.load(Ordering::Relaxed);
        let mut message = format!("{} records · {} records/s", grouped(records), grouped(rate));
        if retried > 0 {
            message.push_str(&format!(" · {retried} retried"));
        }
        message
    }

    /// Prints `line` on stderr (above the bar), unless quiet.
    pub(crate) fn note(&self, line: &str) {
        match &self.shown {
            Shown::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            Shown::Plain { .. } => eprintln!("{line}"),
            Shown::Quiet => {}
        }
    }

    /// Takes the bar away: the summary that follows says it all.
    pub(crate) fn finish(&mut self, records: u64) {
        self.update(records);
        if let Shown::Bar(bar) = &self.shown {
            bar.finish_and_clear();
        }
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::grouped(0), "0");
        assert_eq!(super::grouped(999), "999");
        assert_eq!(super::grouped(1000), "1,000");
        assert_eq!(super::grouped(1234567), "1,234,567");
    }
}
