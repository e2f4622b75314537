//! Stage 2: the read API storing a pre-filled stream, next to a binary
//! `COPY` of the same rows into a table of the same shape.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sluice_runtime::bus::{ConnectorDoc, headers};
use sluice_runtime::store::records_table;
use sluice_testkit::TestEnv;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::data;
use crate::measure::{CpuSampler, CpuUse};
use crate::services::{ServiceKind, ServiceProcess};

#[derive(Debug, Serialize)]
pub(crate) struct Fill {
    pub messages: u64,
    pub records: u64,
    pub message_bytes: u64,
    pub seconds: f64,
}

/// Publishes `total` records for `doc`'s connector, as the gateway would,
/// in messages of `per_message` records numbered from 0. Messages are made
/// on a blocking thread while earlier ones are in flight.
pub(crate) async fn fill(
    js: &jetstream::Context,
    subject: &str,
    doc: &ConnectorDoc,
    total: usize,
    per_message: usize,
    window: usize,
) -> anyhow::Result<Fill> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<(Vec<u8>, usize)>>(64);
    let maker_doc = doc.clone();
    let maker = tokio::task::spawn_blocking(move || {
        let mut seq = 0usize;
        while seq < total {
            let n = per_message.min(total - seq);
            let body = data::json_body(seq as i64, n);
            let message = data::record_batch_message(&maker_doc, &body).map(|m| (m, n));
            if tx.blocking_send(message).is_err() {
                return;
            }
            seq += n;
        }
    });
    let mut pending = FuturesUnordered::new();
    let mut fill = Fill {
        messages: 0,
        records: 0,
        message_bytes: 0,
        seconds: 0.0,
    };
    while let Some(made) = rx.recv().await {
        let (payload, rows) = made?;
        fill.message_bytes += payload.len() as u64;
        fill.records += rows as u64;
        fill.messages += 1;
        let message = PublishMessage::build()
            .payload(payload.into())
            .header(headers::CONNECTOR_ID, doc.id.to_string())
            .header(headers::SCHEMA_VERSION, doc.schema_version.to_string())
            .header(headers::BATCH_ID, Uuid::now_v7().to_string());
        pending.push(
            js.send_publish(subject.to_owned(), message)
                .await?
                .into_future(),
        );
        if pending.len() >= window
            && let Some(ack) = pending.next().await
        {
            ack?;
        }
    }
    while let Some(ack) = pending.next().await {
        ack?;
    }
    maker.await?;
    fill.seconds = started.elapsed().as_secs_f64();
    Ok(fill)
}

#[derive(Debug, Serialize)]
pub(crate) struct SluiceStore {
    pub records: u64,
    /// From the read API's start to its listening (its store loop may
    /// already be running by then).
    pub startup_seconds: f64,
    /// From the first count taken after start-up to the last record stored.
    pub seconds: f64,
    pub records_per_s: f64,
    pub cpu: CpuUse,
}

/// Starts the read API over the pre-filled stream and times until
/// `connector_stats.records` reaches `total`.
pub(crate) async fn store_with_sluice(
    env: &TestEnv,
    log_dir: &Path,
    db: &mut PgConnection,
    others: &[(&str, u32)],
    connector: Uuid,
    total: u64,
) -> anyhow::Result<(ServiceProcess, SluiceStore)> {
    let spawned = Instant::now();
    let read = ServiceProcess::spawn(ServiceKind::Read, env, log_dir).await?;
    let startup_seconds = spawned.elapsed().as_secs_f64();
    let mut pids = others.to_vec();
    pids.push(("read", read.pid));
    let sampler = CpuSampler::start(&pids);
    let first_count = stored_records(db, connector).await?;
    let counted_from = Instant::now();
    let mut last = (first_count, Instant::now());
    loop {
        let stored = stored_records(db, connector).await?;
        if stored >= total {
            break;
        }
        if stored > last.0 {
            last = (stored, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "the read API stored nothing for a minute ({stored} of {total}); see its log"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = counted_from.elapsed().as_secs_f64();
    let cpu = sampler.finish();
    Ok((
        read,
        SluiceStore {
            records: total,
            startup_seconds,
            seconds,
            records_per_s: (total - first_count) as f64 / seconds,
            cpu,
        },
    ))
}

pub(crate) async fn stored_records(db: &mut PgConnection, connector: Uuid) -> anyhow::Result<u64> {
    let records: Option<i64> =
        sqlx::query_scalar("SELECT records FROM connector_stats WHERE connector_id = $1")
            .bind(connector)
            .fetch_optional(db)
            .await?;
    Ok(records.unwrap_or(0).max(0) as u64)
}

#[derive(Debug, Serialize)]
pub(crate) struct RawCopyIn {
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub cpu: CpuUse,
}

/// The table the raw side copies into, dropped afterwards.
const COPY_TARGET: &str = "bench_copy_target";

/// Binary `COPY` of the connector's stored rows (exported first, outside
/// the timing) into a new table made `LIKE` its records table, indexes
/// included, in one statement.
pub(crate) async fn copy_in(db: &mut PgConnection, connector: Uuid) -> anyhow::Result<RawCopyIn> {
    let table = records_table(connector);
    let rows: Vec<Bytes> = db
        .copy_out_raw(&format!(
            "COPY (SELECT * FROM {table} ORDER BY _id) TO STDOUT (FORMAT binary)"
        ))
        .await?
        .try_collect()
        .await?;
    let data: Vec<u8> = rows.concat();
    sqlx::query(&format!("DROP TABLE IF EXISTS {COPY_TARGET}"))
        .execute(&mut *db)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {COPY_TARGET} (LIKE {table} INCLUDING ALL)"
    ))
    .execute(&mut *db)
    .await?;
    let sampler = CpuSampler::start(&[]);
    let started = Instant::now();
    let mut copy = db
        .copy_in_raw(&format!("COPY {COPY_TARGET} FROM STDIN (FORMAT binary)"))
        .await?;
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let copied = copy.finish().await.context("binary COPY")?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = sampler.finish();
    sqlx::query(&format!("DROP TABLE {COPY_TARGET}"))
        .execute(&mut *db)
        .await?;
    Ok(RawCopyIn {
        rows: copied,
        bytes: data.len() as u64,
        seconds,
        records_per_s: copied as f64 / seconds,
        cpu,
    })
}
