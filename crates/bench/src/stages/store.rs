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
use sqlx::{Connection as _, PgConnection};
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

/// Publishes `total` records for each of `connectors` (subject and
/// definition), as the gateway would, in messages of `per_message` records
/// numbered from 0, the connectors' messages taking turns as those of
/// producers writing at once would. Messages are made on a blocking thread
/// while earlier ones are in flight.
pub(crate) async fn fill(
    js: &jetstream::Context,
    connectors: &[(String, ConnectorDoc)],
    total: usize,
    per_message: usize,
    window: usize,
) -> anyhow::Result<Fill> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<(usize, Vec<u8>, usize)>>(64);
    let docs: Vec<ConnectorDoc> = connectors.iter().map(|(_, doc)| doc.clone()).collect();
    let maker = tokio::task::spawn_blocking(move || {
        let mut seq = 0usize;
        while seq < total {
            let n = per_message.min(total - seq);
            let body = data::json_body(seq as i64, n);
            for (turn, doc) in docs.iter().enumerate() {
                let message = data::record_batch_message(doc, &body).map(|m| (turn, m, n));
                if tx.blocking_send(message).is_err() {
                    return;
                }
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
        let (turn, payload, rows) = made?;
        let (subject, doc) = &connectors[turn];
        fill.message_bytes += payload.len() as u64;
        fill.records += rows as u64;
        fill.messages += 1;
        let message = PublishMessage::build()
            .payload(payload.into())
            .header(headers::CONNECTOR_ID, doc.id.to_string())
            .header(headers::SCHEMA_VERSION, doc.schema_version.to_string())
            .header(headers::BATCH_ID, Uuid::now_v7().to_string());
        pending.push(
            js.send_publish(subject.clone(), message)
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
    pub connectors: usize,
    pub records: u64,
    /// From the read API's start to its listening (its store loop may
    /// already be running by then).
    pub startup_seconds: f64,
    /// From the first count taken after start-up to the last record stored.
    pub seconds: f64,
    pub records_per_s: f64,
    pub cpu: CpuUse,
}

/// Starts the read API over the pre-filled stream and times until each
/// connector's `connector_stats.records` reaches its total.
pub(crate) async fn store_with_sluice(
    env: &TestEnv,
    log_dir: &Path,
    db: &mut PgConnection,
    others: &[(&str, u32)],
    filled: &[(Uuid, u64)],
) -> anyhow::Result<(ServiceProcess, SluiceStore)> {
    let total: u64 = filled.iter().map(|(_, records)| records).sum();
    let spawned = Instant::now();
    let read = ServiceProcess::spawn(ServiceKind::Read, env, log_dir).await?;
    let startup_seconds = spawned.elapsed().as_secs_f64();
    let mut pids = others.to_vec();
    pids.push(("read", read.pid));
    let sampler = CpuSampler::start(&pids);
    let count = async |db: &mut PgConnection| -> anyhow::Result<(u64, bool)> {
        let mut sum = 0;
        let mut done = true;
        for &(connector, records) in filled {
            let stored = stored_records(db, connector).await?;
            sum += stored;
            done &= stored >= records;
        }
        Ok((sum, done))
    };
    let (first_count, _) = count(db).await?;
    let counted_from = Instant::now();
    let mut last = (first_count, Instant::now());
    loop {
        let (stored, done) = count(db).await?;
        if done {
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
            connectors: filled.len(),
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
    /// Statements run side by side, one a connector, each on its own
    /// connection.
    pub statements: usize,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub cpu: CpuUse,
}

/// Binary `COPY`s of each connector's stored rows (exported first, outside
/// the timing) into a new table made `LIKE` its records table, indexes
/// included, one statement a connector, all at once.
pub(crate) async fn copy_in(database_url: &str, connectors: &[Uuid]) -> anyhow::Result<RawCopyIn> {
    let mut prepared = Vec::new();
    for (n, &connector) in connectors.iter().enumerate() {
        let mut db = PgConnection::connect(database_url).await?;
        let table = records_table(connector);
        let chunks: Vec<Bytes> = db
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM {table} ORDER BY _id) TO STDOUT (FORMAT binary)"
            ))
            .await?
            .try_collect()
            .await?;
        let target = format!("bench_copy_target_{n}");
        sqlx::query(&format!("DROP TABLE IF EXISTS {target}"))
            .execute(&mut db)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE {target} (LIKE {table} INCLUDING ALL)"
        ))
        .execute(&mut db)
        .await?;
        prepared.push((db, target, chunks.concat()));
    }
    let bytes = prepared.iter().map(|(_, _, data)| data.len() as u64).sum();
    let sampler = CpuSampler::start(&[]);
    let started = Instant::now();
    let copies = prepared.iter_mut().map(|(db, target, data)| async move {
        let mut copy = db
            .copy_in_raw(&format!("COPY {target} FROM STDIN (FORMAT binary)"))
            .await?;
        for chunk in data.chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        copy.finish().await.context("binary COPY")
    });
    let rows: u64 = futures::future::try_join_all(copies).await?.iter().sum();
    let seconds = started.elapsed().as_secs_f64();
    let cpu = sampler.finish();
    for (db, target, _) in &mut prepared {
        sqlx::query(&format!("DROP TABLE {target}"))
            .execute(&mut *db)
            .await?;
    }
    Ok(RawCopyIn {
        statements: connectors.len(),
        rows,
        bytes,
        seconds,
        records_per_s: rows as f64 / seconds,
        cpu,
    })
}
