//! `sluice push`: files to a connector, cut at record boundaries into
//! requests below the server's body limit, several in flight at once.
//!
//! Exactly once: every chunk carries an `Idempotency-Key` derived from the
//! input's content up to the chunk's end and the chunk's byte range (see
//! [`chunks`]), so running the same command on the same input again, after
//! a crash, a Ctrl-C or a refusal, stores nothing twice as long as it runs
//! within the server's idempotency window (10 minutes, SPEC 7): the chunks
//! already stored are answered from what the server remembers.

mod chunks;
mod progress;
mod send;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;
use sluice_schema::Format;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use self::chunks::{Chunk, Chunker, RecordLines};
use self::progress::{Progress, grouped};
use self::send::{Outcome, Sender};
use super::Remote;
use super::api::{self, Api, ApiError};
use super::input::{self, parse_format};
use super::records::{MAX_RECORD_BYTES, RecordReader};

/// Errors listed per file; the rest are counted.
const MAX_LISTED_ERRORS: usize = 100;

#[derive(Args)]
pub(crate) struct PushArgs {
    /// Files to send, one after another; `-` reads stdin. Gzip-compressed
    /// files are read as such, whatever their name.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Id or exact name of the connector (a name needs the operator token).
    #[arg(long, short)]
    connector: String,
    /// json, ndjson or csv [default: from the file's name, else its first
    /// byte: `[` json, `{` ndjson, anything else csv].
    #[arg(long, value_parser = parse_format)]
    format: Option<Format>,
    /// all-or-nothing: a chunk with a bad record is refused whole, and the
    /// push stops there. partial: good records are stored, bad ones kept as
    /// rejected, and listed with their line.
    #[arg(long, value_enum, default_value_t = Mode::AllOrNothing)]
    mode: Mode,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Bytes of records per request, before compression (K, M suffixes
    /// for KiB and MiB). Keep it the same when running a push again.
    #[arg(long, default_value = "2M", value_parser = parse_size)]
    chunk_size: usize,
    /// Send chunks as they are, not gzip-compressed.
    #[arg(long)]
    no_compress: bool,
    /// Attempts after the first, for a chunk the server is too busy to
    /// take (429, 503), failing for a moment (500, 502, 504) or unreachable.
    #[arg(long, default_value_t = api::RETRIES)]
    retries: u32,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    #[value(alias = "all_or_nothing")]
    AllOrNothing,
    Partial,
}

pub(crate) async fn run(remote: &Remote, args: PushArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(remote)?;
    let id = api.connector_id(&args.connector).await?;
    let mut clean = true;
    for file in &args.files {
        match push_file(&api, &id, file, &args).await? {
            Ended::Clean => {}
            Ended::Refused => clean = false,
            Ended::Interrupted => {
                eprintln!(
                    "sluice: interrupted. Run the same command again within 10 minutes to send \
                     the rest: what was stored already is skipped, never stored twice."
                );
                return Ok(ExitCode::from(130));
            }
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

enum Ended {
    /// Every record accepted.
    Clean,
    /// Some records rejected or refused.
    Refused,
    Interrupted,
}

/// What a file's chunks came to.
#[derive(Default)]
struct Tally {
    accepted: u64,
    rejected: u64,
    /// Records of chunks refused whole.
    refused: u64,
    listed: usize,
    unlisted: u64,
}

impl Tally {
    fn records(&self) -> u64 {
        self.accepted + self.rejected + self.refused
    }

    /// `data.csv: 1,000 records in 1.2 s (833 records/s): 990 accepted, 10 rejected`.
    fn summary(&self, name: &str, elapsed: Duration, partial: bool) -> String {
        let seconds = elapsed.as_secs_f64();
        let mut summary = format!(
            "{name}: {} records in {seconds:.1} s ({} records/s): {} accepted",
            grouped(self.records()),
            grouped((self.records() as f64 / seconds.max(0.001)) as u64),
            grouped(self.accepted),
        );
        if partial || self.rejected > 0 {
            summary.push_str(&format!(", {} rejected", grouped(self.rejected)));
        }
        if self.refused > 0 {
            summary.push_str(&format!(", {} refused", grouped(self.refused)));
        }
        summary
    }
}

/// Reading, cutting and hashing run on a thread of their own, at most one
/// chunk ahead of the requests: memory stays the same whatever the size of
/// the input. The thread stops at the first error, which it sends on, or
/// when the receiver is dropped.
fn read_ahead(
    mut chunker: Chunker,
) -> (
    mpsc::Receiver<anyhow::Result<Chunk>>,
    std::thread::JoinHandle<()>,
) {
    let (chunks, ready) = mpsc::channel::<anyhow::Result<Chunk>>(1);
    let reading = std::thread::spawn(move || {
        while let Some(next) = chunker.next_chunk().transpose() {
            let failed = next.is_err();
            if chunks.blocking_send(next).is_err() || failed {
                break;
            }
        }
    });
    (ready, reading)
}

async fn push_file(api: &Api, id: &str, path: &Path, args: &PushArgs) -> anyhow::Result<Ended> {
    let input = input::open(path, args.format)?;
    let (size, consumed) = (input.size, input.consumed.clone());
    let reader = RecordReader::new(input)?;
    let name = reader.name().to_owned();
    let format = reader.format();
    let content_type = match format {
        Format::Json => "application/json",
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv",
    };
    let partial = args.mode == Mode::Partial;
    let mode = if partial { "partial" } else { "all_or_nothing" };
    let chunker = Chunker::new(reader, args.chunk_size, mode);
    let retried = Arc::new(AtomicU64::new(0));
    let sender = Arc::new(Sender {
        api: api.clone(),
        path: format!("/v1/connectors/{id}/records"),
        content_type,
        partial,
        compress: !args.no_compress,
        retries: args.retries,
        retried: retried.clone(),
    });
    let mut progress = Progress::new(&name, size, consumed, retried.clone(), args.quiet);

    let (mut ready, reading) = read_ahead(chunker);

    let concurrency = usize::from(args.concurrency);
    let mut in_flight = JoinSet::new();
    let mut tally = Tally::default();
    let mut fatal: Option<anyhow::Error> = None;
    let mut stopped_at_refusal = false;
    let mut input_done = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        if input_done && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            _ = &mut interrupt => {
                progress.finish(tally.records());
                in_flight.abort_all();
                return Ok(Ended::Interrupted);
            }
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                let (lines, outcome) = joined?;
                match outcome {
                    Outcome::Stored { accepted, rejected, errors, error_count } => {
                        tally.accepted += accepted;
                        tally.rejected += rejected;
                        list_errors(&progress, &mut tally, &name, &lines, &errors, error_count);
                    }
                    Outcome::Refused(error) => {
                        tally.refused += lines.records();
                        report_refusal(&progress, &mut tally, &name, &lines, &error, format);
                        if !partial {
                            stopped_at_refusal = true;
                            input_done = true;
                        }
                    }
                    Outcome::Fatal(error) => {
                        fatal.get_or_insert(error);
                        input_done = true;
                    }
                }
            }
            next = ready.recv(), if !input_done && in_flight.len() < concurrency => match next {
                Some(Ok(chunk)) => {
                    in_flight.spawn(sender.clone().send(chunk));
                }
                Some(Err(error)) => {
                    fatal.get_or_insert(error);
                    input_done = true;
                }
                None => input_done = true,
            },
            _ = tick.tick() => progress.update(tally.records()),
        }
    }
    progress.finish(tally.records());
    // Lets the reading thread out of a blocked send, then waits for it.
    drop(ready);
    let _ = reading.join();

    if !args.quiet {
        let mut summary = tally.summary(&name, progress.elapsed(), partial);
        let retried = retried.load(std::sync::atomic::Ordering::Relaxed);
        if retried > 0 {
            summary.push_str(&format!(" ({} requests retried)", grouped(retried)));
        }
        println!("{summary}.");
    }
    if tally.unlisted > 0 {
        let all = if partial {
            format!("; GET /v1/connectors/{id}/rejected has every rejected record")
        } else {
            String::new()
        };
        eprintln!(
            "{name}: {} more errors not listed{all}",
            grouped(tally.unlisted)
        );
    }
    if let Some(error) = fatal {
        return Err(error.context(format!("{name}: the push stopped")));
    }
    if stopped_at_refusal {
        eprintln!(
            "{name}: stopped at the first refused chunk (--mode all-or-nothing). Fix the records \
             and run the same command again within 10 minutes: the chunks before them are \
             skipped, never stored twice. --mode partial stores the good records and keeps \
             the bad ones as rejected."
        );
    }
    Ok(if tally.rejected + tally.refused > 0 {
        Ended::Refused
    } else {
        Ended::Clean
    })
}

/// Lists a chunk's record errors, each with its file line.
fn list_errors(
    progress: &Progress,
    tally: &mut Tally,
    name: &str,
    lines: &RecordLines,
    errors: &[Value],
    error_count: u64,
) {
    for error in errors {
        if tally.listed >= MAX_LISTED_ERRORS {
            tally.unlisted += 1;
            continue;
        }
        tally.listed += 1;
        let line = error["record"]
            .as_u64()
            .and_then(|record| lines.of_record(record))
            .map_or_else(|| "?".to_owned(), |line| line.to_string());
        let field = error["field"].as_str().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or_default();
        let code = error["code"].as_str().unwrap_or_default();
        let field = if field.is_empty() {
            String::new()
        } else {
            format!("field {field:?}: ")
        };
        progress.note(&format!("{name} line {line}: {field}{message} ({code})"));
    }
    tally.unlisted += error_count.saturating_sub(errors.len() as u64);
}

/// Says why a chunk was refused whole, with the lines it held.
fn report_refusal(
    progress: &Progress,
    tally: &mut Tally,
    name: &str,
    lines: &RecordLines,
    error: &ApiError,
    format: Format,
) {
    let span = format!("lines {}–{}", lines.first, lines.last());
    let hint = match error.code.as_str() {
        "payload_too_large" => format!(
            " (try a smaller --chunk-size; one record may be at most {} MiB)",
            MAX_RECORD_BYTES >> 20
        ),
        _ => String::new(),
    };
    // A syntax error's line counts lines of the body sent: for NDJSON one
    // a record, for CSV after the header row.
    let at = error.body["line"].as_u64().and_then(|line| match format {
        Format::Ndjson => lines.of_record(line.checked_sub(1)?),
        Format::Csv => lines.of_record(line.checked_sub(2)?),
        Format::Json => None,
    });
    // Its "at line …, column …" counts in the body sent, not in the file.
    let detail = match error.body["line"].as_u64() {
        Some(_) => error.detail.split(" at line ").next().unwrap_or_default(),
        None => error.detail.as_str(),
    };
    match at {
        Some(line) => progress.note(&format!(
            "{name} line {line}: {detail} ({}); the records of {span} were not stored",
            error.code
        )),
        None => progress.note(&format!(
            "{name} {span}: not stored: {detail} ({}){hint}",
            error.code
        )),
    }
    let errors = error.body["errors"].as_array().cloned().unwrap_or_default();
    let count = error.body["error_count"]
        .as_u64()
        .unwrap_or(errors.len() as u64);
    list_errors(progress, tally, name, lines, &errors, count);
}

/// `4M`, `512K`, `1000000`: a size in bytes (K and M are KiB and MiB).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, unit) = match upper.as_bytes().last() {
        Some(b'K') => (&upper[..upper.len() - 1], 1024),
        Some(b'M') => (&upper[..upper.len() - 1], 1024 * 1024),
        _ => (upper, 1),
    };
    let size = digits
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is no size: give bytes, or a number with K or M"))?;
    if !(1024..=MAX_RECORD_BYTES).contains(&size) {
        return Err(format!(
            "{text:?}: a chunk is 1K to {}M",
            MAX_RECORD_BYTES >> 20
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_k_and_m() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("17M").is_err());
        assert!(parse_size("12").is_err());
        assert!(parse_size("x").is_err());
    }
}
