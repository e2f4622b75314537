//! `sluice pull`: a connector's records page after page (SPEC 8), written
//! as they stream in, so memory stays the same whatever the count.
//!
//! With `--resume FILE`, the cursor is kept in FILE after every page,
//! together with how many bytes of the output (`-o`) that page ended at.
//! Each page is written and flushed to disk before FILE moves on, and a
//! resumed pull first cuts the output back to that length: a pull stopped
//! at any moment and resumed repeats no record and misses none. (To stdout
//! the bytes of a page cut short cannot be taken back: use `-o`.)

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use reqwest::{Method, Response};
use serde::{Deserialize, Serialize};

use super::Remote;
use super::api::{self, Api, ApiError};

/// Seconds a `--follow` request waits for new records (SPEC 8's most).
const FOLLOW_WAIT_SECS: u32 = 30;

#[derive(Args)]
pub(crate) struct PullArgs {
    /// Id or exact name of the connector (a name needs the operator token).
    #[arg(long, short)]
    connector: String,
    /// How records are written: one JSON object a line, CSV with a header
    /// row, or one JSON array.
    #[arg(long, value_enum, default_value_t = OutputFormat::Ndjson)]
    format: OutputFormat,
    /// Once every record is read, wait for new ones, for ever (Ctrl-C
    /// stops).
    #[arg(long)]
    follow: bool,
    /// Only records where FIELD compares so, e.g. `amount=gt.100`,
    /// `note=is.null`, `_received_at=gte.2026-12-01T00:00:00Z`; repeat to
    /// combine with AND. Operators: eq, neq, gt, gte, lt, lte, is.null,
    /// not.null.
    #[arg(long = "filter", value_name = "FIELD=OP.VALUE")]
    filters: Vec<String>,
    /// Only these fields, comma-separated (`_id` and `_received_at` too).
    #[arg(long, value_name = "A,B")]
    fields: Option<String>,
    /// Write to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Keep the cursor in FILE, to continue where the last pull stopped.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    /// Records per request (at most 10 000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page_size: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OutputFormat {
    Ndjson,
    Csv,
    Json,
}

/// What `--resume` keeps between runs.
#[derive(Serialize, Deserialize)]
struct ResumeState {
    connector: String,
    format: OutputFormat,
    /// Where the next page starts.
    cursor: Option<String>,
    /// Bytes of the output that the pages read so far fill.
    output_bytes: u64,
    records: u64,
}

pub(crate) async fn run(remote: &Remote, args: PullArgs) -> anyhow::Result<ExitCode> {
    if args.format == OutputFormat::Json && args.follow {
        bail!("--follow never ends, so it cannot close a JSON array: use --format ndjson");
    }
    let api = Api::new(remote)?;
    let id = api.connector_id(&args.connector).await?;
    let mut state = match &args.resume {
        Some(path) => load_state(path, &id, args.format)?,
        None => None,
    }
    .unwrap_or(ResumeState {
        connector: id.clone(),
        format: args.format,
        cursor: None,
        output_bytes: 0,
        records: 0,
    });
    let mut out = Output::open(args.output.as_deref(), state.output_bytes)?;
    if args.format == OutputFormat::Json && state.output_bytes == 0 {
        out.write_all(b"[").context("writing records")?;
        state.output_bytes = out.written;
    }
    let mut caught_up = false;
    loop {
        let wait = (args.follow && caught_up).then_some(FOLLOW_WAIT_SECS);
        let response = fetch_page(&api, &id, &args, state.cursor.as_deref(), wait).await?;
        let next_cursor = response
            .headers()
            .get("sluice-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut page = PageCopy::new(args.format, out.written > 0, state.records > 0);
        let mut response = response;
        while let Some(bytes) = response
            .chunk()
            .await
            .map_err(|e| api.unreachable(e))
            .context("reading a page of records")?
        {
            page.copy(&bytes, &mut out).context("writing records")?;
        }
        out.sync()?;
        state.records += page.records;
        state.output_bytes = out.written;
        if next_cursor.is_some() {
            state.cursor = next_cursor;
        }
        if let Some(path) = &args.resume {
            save_state(path, &state)?;
        }
        caught_up = page.records < u64::from(args.page_size);
        if caught_up && !args.follow {
            break;
        }
    }
    if args.format == OutputFormat::Json {
        // Not counted in the state: a resumed pull writes over it.
        out.write_all(b"\n]\n").context("writing records")?;
        out.sync()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One GET of records, retried while the server is busy or unreachable.
async fn fetch_page(
    api: &Api,
    id: &str,
    args: &PullArgs,
    cursor: Option<&str>,
    wait: Option<u32>,
) -> anyhow::Result<Response> {
    let format = match args.format {
        OutputFormat::Csv => "csv",
        OutputFormat::Ndjson | OutputFormat::Json => "ndjson",
    };
    let mut query: Vec<(String, String)> = vec![
        ("format".into(), format.into()),
        ("limit".into(), args.page_size.to_string()),
    ];
    if let Some(cursor) = cursor {
        query.push(("cursor".into(), cursor.into()));
    }
    if let Some(wait) = wait {
        query.push(("wait".into(), wait.to_string()));
    }
    if let Some(fields) = &args.fields {
        query.push(("fields".into(), fields.clone()));
    }
    for filter in &args.filters {
        let Some((field, condition)) = filter.split_once('=') else {
            bail!("--filter {filter:?} must be FIELD=OP.VALUE, e.g. amount=gt.100");
        };
        query.push((field.into(), condition.into()));
    }
    let mut attempt = 0;
    loop {
        let request = api
            .request(Method::GET, &format!("/v1/connectors/{id}/records"))
            .query(&query);
        let wait = match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let error = ApiError::from_response(response).await;
                if !api::retryable(error.status) || attempt >= api::RETRIES {
                    return Err(error.into());
                }
                error.retry_after.unwrap_or_else(|| api::backoff(attempt))
            }
            Err(error) if attempt >= api::RETRIES => return Err(api.unreachable(error)),
            Err(_) => api::backoff(attempt),
        };
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Copies one page's body to the output in the requested format, counting
/// its records: NDJSON as it is; CSV without its header row after the
/// first page; JSON as members of one array.
struct PageCopy {
    format: OutputFormat,
    /// CSV: the page's header row is still to come.
    in_header: bool,
    /// CSV: the header row is written (on the output's first page only).
    keep_header: bool,
    /// CSV: inside a quoted field.
    quoted: bool,
    /// JSON: the next byte starts a record.
    at_record_start: bool,
    /// JSON: a record was written before this one.
    any_before: bool,
    records: u64,
}

impl PageCopy {
    fn new(format: OutputFormat, output_started: bool, any_before: bool) -> PageCopy {
        PageCopy {
            format,
            in_header: format == OutputFormat::Csv,
            keep_header: !output_started,
            quoted: false,
            at_record_start: true,
            any_before,
            records: 0,
        }
    }

    fn copy(&mut self, mut bytes: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Ndjson => {
                self.records += memchr::memchr_iter(b'\n', bytes).count() as u64;
                out.write_all(bytes)
            }
            OutputFormat::Csv => {
                if self.in_header {
                    // Header cells are field names: no quotes, no line ends.
                    let end = memchr::memchr(b'\n', bytes).map(|i| i + 1);
                    let header = &bytes[..end.unwrap_or(bytes.len())];
                    if self.keep_header {
                        out.write_all(header)?;
                    }
                    bytes = &bytes[header.len()..];
                    self.in_header = end.is_none();
                }
                // The server quotes a cell whole, doubling the quotes in
                // it, so a line end outside quotes ends a row.
                for &byte in bytes {
                    match byte {
                        b'"' => self.quoted = !self.quoted,
                        b'\n' if !self.quoted => self.records += 1,
                        _ => {}
                    }
                }
                out.write_all(bytes)
            }
            OutputFormat::Json => {
                while !bytes.is_empty() {
                    if self.at_record_start {
                        out.write_all(if self.any_before { b",\n" } else { b"\n" })?;
                        self.at_record_start = false;
                        self.any_before = true;
                    }
                    match memchr::memchr(b'\n', bytes) {
                        Some(end) => {
                            out.write_all(&bytes[..end])?;
                            self.records += 1;
                            self.at_record_start = true;
                            bytes = &bytes[end + 1..];
                        }
                        None => {
                            out.write_all(bytes)?;
                            bytes = &[];
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Stdout, or a file cut back to where the last page ended.
struct Output {
    sink: Box<dyn Write>,
    file: Option<File>,
    written: u64,
}

impl Output {
    fn open(path: Option<&Path>, resume_at: u64) -> anyhow::Result<Output> {
        let Some(path) = path else {
            return Ok(Output {
                sink: Box::new(std::io::BufWriter::new(std::io::stdout())),
                file: None,
                written: resume_at,
            });
        };
        let shown = path.display();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {shown}"))?;
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        if length < resume_at {
            bail!(
                "{shown} holds {length} bytes, fewer than the {resume_at} that the resume \
                 file says were written: it is not the output of that pull"
            );
        }
        file.set_len(resume_at)
            .and_then(|()| file.seek(SeekFrom::Start(resume_at)))
            .with_context(|| format!("cutting {shown} back to {resume_at} bytes"))?;
        let sink = Box::new(std::io::BufWriter::new(
            file.try_clone()
                .with_context(|| format!("opening {shown}"))?,
        ));
        Ok(Output {
            sink,
            file: Some(file),
            written: resume_at,
        })
    }

    /// Flushed, and on disk when it is a file.
    fn sync(&mut self) -> anyhow::Result<()> {
        self.sink.flush().context("writing records")?;
        if let Some(file) = &self.file {
            file.sync_data().context("writing records to disk")?;
        }
        Ok(())
    }
}

/// Counts what goes through it.
impl Write for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.sink.write(bytes)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

fn load_state(path: &Path, id: &str, format: OutputFormat) -> anyhow::Result<Option<ResumeState>> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("reading {shown}")),
    };
    let state: ResumeState = serde_json::from_str(&text)
        .with_context(|| format!("{shown} is no resume file of sluice pull"))?;
    if state.connector != id {
        bail!(
            "{shown} resumes a pull of connector {}, not {id}",
            state.connector
        );
    }
    if state.format != format {
        bail!("{shown} resumes a pull in another --format");
    }
    Ok(Some(state))
}

/// Replaces the resume file whole (a new file renamed over it), so that a
/// crash leaves the old state or the new one, never half of one.
fn save_state(path: &Path, state: &ResumeState) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let shown = path.display();
    let mut file =
        File::create(&temporary).with_context(|| format!("writing {}", temporary.display()))?;
    serde_json::to_writer(&mut file, state)?;
    file.sync_data()
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("writing {shown}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(format: OutputFormat, started: bool, any: bool, parts: &[&str]) -> (String, u64) {
        let mut out = Vec::new();
        let mut page = PageCopy::new(format, started, any);
        for part in parts {
            page.copy(part.as_bytes(), &mut out).unwrap();
        }
        (String::from_utf8(out).unwrap(), page.records)
    }

    #[test]
    fn pages_are_copied_and_counted_across_chunk_boundaries() {
        let parts = ["{\"a\":1}\n{\"a\"", ":2}\n"];
        assert_eq!(
            copy(OutputFormat::Ndjson, false, false, &parts),
            ("{\"a\":1}\n{\"a\":2}\n".into(), 2)
        );
        assert_eq!(
            copy(OutputFormat::Json, false, false, &parts),
            ("\n{\"a\":1},\n{\"a\":2}".into(), 2)
        );
        assert_eq!(
            copy(OutputFormat::Json, true, true, &parts[1..]).0,
            ",\n:2}"
        );
        let csv = ["_id,a\n1,\"x\n", "y\"\"\"\n2,b\n"];
        assert_eq!(
            copy(OutputFormat::Csv, true, true, &csv),
            ("1,\"x\ny\"\"\"\n2,b\n".into(), 2)
        );
        assert_eq!(
            copy(OutputFormat::Csv, false, false, &csv),
            ("_id,a\n1,\"x\ny\"\"\"\n2,b\n".into(), 2)
        );
    }
}
