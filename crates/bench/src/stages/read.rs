//! Stage 3: a client following `next_cursor` through every stored record,
//! in JSON and in CSV pages, next to `COPY … TO STDOUT` of the same rows.

use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use sluice_runtime::store::records_table;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::measure::{CpuSampler, CpuUse};

/// The header that carries the next cursor in every format (SPEC 8).
const NEXT_CURSOR: &str = "sluice-next-cursor";

#[derive(Debug, Serialize)]
pub(crate) struct PagedRead {
    pub format: &'static str,
    pub pages: u64,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub cpu: CpuUse,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum PageFormat {
    Json,
    Csv,
}

impl PageFormat {
    fn name(self) -> &'static str {
        match self {
            PageFormat::Json => "json",
            PageFormat::Csv => "csv",
        }
    }

    /// Records on a page, counted without parsing it (the client's CPU is
    /// the server's too, on this machine).
    fn records_in(self, body: &[u8]) -> u64 {
        match self {
            PageFormat::Json => memchr::memmem::find_iter(body, b"{\"_id\":").count() as u64,
            // One line per record after the header; the benchmark's values
            // hold no line breaks.
            PageFormat::Csv => memchr::memchr_iter(b'\n', body).count().saturating_sub(1) as u64,
        }
    }
}

/// Reads pages of `limit` from the start, following the cursor, until a
/// page is empty or `expected` records were seen.
pub(crate) async fn follow_cursor(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    format: PageFormat,
    limit: usize,
    expected: u64,
    pids: &[(&str, u32)],
) -> anyhow::Result<PagedRead> {
    let sampler = CpuSampler::start(pids);
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut read = PagedRead {
        format: format.name(),
        pages: 0,
        records: 0,
        bytes: 0,
        seconds: 0.0,
        records_per_s: 0.0,
        mb_per_s: 0.0,
        cpu: CpuUse::default(),
    };
    loop {
        let mut query = vec![
            ("limit", limit.to_string()),
            ("format", format.name().to_owned()),
        ];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let response = http
            .get(url)
            .bearer_auth(token)
            .query(&query)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "GET records answered {status}");
        let next = response
            .headers()
            .get(NEXT_CURSOR)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await?;
        let records = format.records_in(&body);
        read.pages += 1;
        read.records += records;
        read.bytes += body.len() as u64;
        if records == 0 || read.records >= expected {
            break;
        }
        cursor = Some(next.ok_or_else(|| anyhow::anyhow!("a page without {NEXT_CURSOR}"))?);
    }
    read.seconds = started.elapsed().as_secs_f64();
    read.cpu = sampler.finish();
    read.records_per_s = read.records as f64 / read.seconds;
    read.mb_per_s = read.bytes as f64 / read.seconds / 1e6;
    anyhow::ensure!(
        read.records == expected,
        "following the cursor in {} gave {} records, not {expected}",
        format.name(),
        read.records
    );
    Ok(read)
}

#[derive(Debug, Serialize)]
pub(crate) struct RawCopyOut {
    pub format: &'static str,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub cpu: CpuUse,
}

/// `COPY (SELECT every column in _id order) TO STDOUT` in CSV, received
/// and counted but not kept.
pub(crate) async fn copy_out(
    db: &mut PgConnection,
    connector: Uuid,
    records: u64,
) -> anyhow::Result<RawCopyOut> {
    let table = records_table(connector);
    let sampler = CpuSampler::start(&[]);
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut lines = 0u64;
    {
        let mut stream = db
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM {table} ORDER BY _id) TO STDOUT (FORMAT csv, HEADER)"
            ))
            .await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            lines += memchr::memchr_iter(b'\n', &chunk).count() as u64;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = sampler.finish();
    anyhow::ensure!(
        lines.saturating_sub(1) == records,
        "COPY TO gave {} rows, not {records}",
        lines.saturating_sub(1)
    );
    Ok(RawCopyOut {
        format: "csv",
        records,
        bytes,
        seconds,
        records_per_s: records as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        cpu,
    })
}
