//! The stages of a run, in the order that lets each one start from a known
//! state: validation alone; ingest (Sluice, then raw publishing); the stream
//! is then emptied and pre-filled, and the read API started to store it;
//! reading; freshness with everything running; with the read API stopped,
//! the gateway under large bodies; and last, against services started
//! afresh for it, the hostile stage.

mod freshness;
mod hostile;
mod ingest;
mod push;
mod read;
mod store;
mod sustained;
mod validation;

pub(crate) use hostile::HostileSizes;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use sluice_runtime::bus::ConnectorDoc;
use sluice_testkit::{ADMIN_TOKEN, TestEnv};
use sqlx::Connection as _;
use uuid::Uuid;

use crate::data;
use crate::measure::{CpuSampler, Machine};
use crate::report::{Report, Row, count, mib, ratio};
use crate::services::{ServiceKind, ServiceProcess};
use crate::{Sizes, StageGroup};

/// Connectors stored at once in the second part of stage 2.
const PARALLEL_CONNECTORS: usize = 4;

/// A connector made for the run, with its tokens and its definition as the
/// gateway sees it.
struct Connector {
    id: Uuid,
    write_token: String,
    read_token: String,
    doc: ConnectorDoc,
}

/// Peak resident memory of each service, stage by stage.
#[derive(Debug, Default, Serialize)]
struct MemoryLog {
    /// Whether each stage's peak is its own (Linux `clear_refs`); if not,
    /// a peak covers everything since the service started.
    peaks_reset: bool,
    stages: BTreeMap<String, BTreeMap<String, u64>>,
}

impl MemoryLog {
    fn begin(&mut self, services: &[&ServiceProcess]) {
        let mut reset = true;
        for service in services {
            reset &= service.reset_peak();
        }
        self.peaks_reset = reset;
    }

    fn end(&mut self, stage: &str, services: &[&ServiceProcess]) {
        let peaks = services
            .iter()
            .filter_map(|s| Some((s.kind.name().to_owned(), s.peak_rss_bytes()?)))
            .collect();
        self.stages.insert(stage.to_owned(), peaks);
    }

    fn peak_over(&self, stages: &[&str], service: &str) -> Option<u64> {
        stages
            .iter()
            .filter_map(|stage| self.stages.get(*stage)?.get(service).copied())
            .max()
    }
}

/// Flushes what earlier stages wrote (a million rows is about a GiB of WAL
/// here), so that the stage about to run does not pay for their
/// checkpoint. Needs a superuser, as the default `--database-url` is.
async fn settle(db: &mut sqlx::PgConnection) {
    if let Err(error) = sqlx::query("CHECKPOINT").execute(db).await {
        eprintln!(
            "sluice-bench: CHECKPOINT failed ({error}); stages may pay for earlier ones' writes"
        );
    }
}

pub(crate) async fn run(env: &TestEnv, sizes: &Sizes, log_dir: &Path) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now().to_rfc3339();
    let nats = async_nats::connect(&env.nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {}", env.nats_url))?;
    let js = jetstream::new(nats.clone());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut db = sqlx::PgConnection::connect(&env.database_url)
        .await
        .context("connecting to the benchmark's database")?;
    let postgres_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut db)
        .await?;
    let machine = Machine::describe(postgres_version, nats.server_info().version.clone());
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();

    let validation = if sizes.runs(StageGroup::Validation) {
        eprintln!("sluice-bench: validation");
        let (duration, records) = (sizes.validation_duration, sizes.batch_records);
        let result =
            tokio::task::spawn_blocking(move || validation::run(duration, records)).await??;
        details.insert("validation".to_owned(), json!(result));
        Some(result)
    } else {
        None
    };
    if sizes.runs(StageGroup::Pipeline) {
        let (pipeline_rows, pipeline_details) =
            pipeline(env, sizes, log_dir, &http, &js, &mut db).await?;
        rows.extend(pipeline_rows);
        details.extend(pipeline_details);
    }
    // Stage 6 ran first (it needs nothing running) but is numbered after
    // the pipeline it measures a part of.
    rows.extend(validation.as_ref().map(validation_row));
    if sizes.runs(StageGroup::Hostile) {
        let hostile = hostile::run(env, &sizes.hostile, log_dir, &js).await?;
        rows.extend(hostile.rows());
        details.insert("hostile".to_owned(), json!(hostile));
    }
    Ok(Report {
        mode: if sizes.smoke { "smoke" } else { "full" },
        started_at,
        machine,
        sizes: sizes.clone(),
        rows,
        details: serde_json::Value::Object(details),
    })
}

/// Stages 1 to 5: one control plane and gateway throughout, the read API
/// from the store stage on, over the same connectors and records.
async fn pipeline(
    env: &TestEnv,
    sizes: &Sizes,
    log_dir: &Path,
    http: &reqwest::Client,
    js: &jetstream::Context,
    db: &mut sqlx::PgConnection,
) -> anyhow::Result<(Vec<Row>, serde_json::Map<String, serde_json::Value>)> {
    let ns = &env.namespace;
    eprintln!("sluice-bench: starting the control plane and the gateway");
    let control = ServiceProcess::spawn(ServiceKind::Control, env, log_dir).await?;
    let gateway = ServiceProcess::spawn(ServiceKind::Ingest, env, log_dir).await?;
    let main = create_connector(http, &control, js, env, "bench", data::fields()).await?;
    let fresh =
        create_connector(http, &control, js, env, "bench-freshness", data::fields()).await?;
    let mut parallel = Vec::new();
    for n in 0..PARALLEL_CONNECTORS {
        let name = format!("bench-parallel-{n}");
        parallel.push(create_connector(http, &control, js, env, &name, data::fields()).await?);
    }
    for connector in [&main, &fresh] {
        wait_until_gateway_knows(http, &gateway, connector).await?;
    }
    let records_url = |service: &ServiceProcess, c: &Connector| {
        service.url(&format!("/v1/connectors/{}/records", c.id))
    };
    let mut memory = MemoryLog::default();

    // Stage 1, through Sluice.
    eprintln!(
        "sluice-bench: ingest, {} clients for {:?}",
        sizes.clients, sizes.ingest_duration
    );
    let bodies: Vec<(Bytes, usize)> = (0..16)
        .map(|i| {
            let first = (i * sizes.batch_records) as i64;
            (
                Bytes::from(data::json_body(first, sizes.batch_records)),
                sizes.batch_records,
            )
        })
        .collect();
    let target = ingest::Target {
        http,
        url: records_url(&gateway, &main),
        token: &main.write_token,
        bodies: &bodies,
    };
    memory.begin(&[&control, &gateway]);
    let sampler = CpuSampler::start(&[("ingest", gateway.pid)]);
    let mut ingest_http = ingest::post_in_loop(
        &target,
        sizes.clients,
        sizes.ingest_warmup,
        sizes.ingest_duration,
    )
    .await;
    ingest_http.cpu = sampler.finish();
    memory.end("ingest", &[&control, &gateway]);
    anyhow::ensure!(
        ingest_http.requests > 0,
        "no POST was accepted: {:?}",
        ingest_http.first_failure
    );

    // Stage 1, raw: as many messages as Sluice published, at least a few
    // windows' worth.
    eprintln!("sluice-bench: raw JetStream publish");
    let messages = bodies
        .iter()
        .map(|(body, rows)| {
            Ok((
                Bytes::from(data::record_batch_message(&main.doc, body)?),
                *rows,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let count = (ingest_http.requests as usize).max(sizes.publish_window * 4);
    let sampler = CpuSampler::start(&[]);
    let mut raw_publish = ingest::publish_raw(
        js,
        &ns.records_subject(main.id),
        main.id,
        main.doc.schema_version,
        &messages,
        count,
        sizes.publish_window,
    )
    .await?;
    raw_publish.cpu = sampler.finish();

    // Stage 1, from the command line: on an empty stream, which no read
    // API drains yet.
    let cli_push = push_stage(sizes, log_dir, js, env, &gateway, &main).await?;

    // Stage 2, several connectors at once: the stream holds exactly their
    // records, a share each.
    js.get_stream(ns.records_stream())
        .await?
        .purge()
        .await
        .context("emptying the records stream")?;
    let share = sizes.store_records.div_ceil(PARALLEL_CONNECTORS);
    eprintln!(
        "sluice-bench: filling the stream with {share} records for each of {PARALLEL_CONNECTORS} connectors"
    );
    let targets: Vec<(String, ConnectorDoc)> = parallel
        .iter()
        .map(|c| (ns.records_subject(c.id), c.doc.clone()))
        .collect();
    store::fill(
        js,
        &targets,
        share,
        sizes.batch_records,
        sizes.publish_window,
    )
    .await?;
    let filled: Vec<(Uuid, u64)> = parallel.iter().map(|c| (c.id, share as u64)).collect();
    eprintln!("sluice-bench: store, {PARALLEL_CONNECTORS} connectors, starting the read API");
    settle(db).await;
    let (reader, store_parallel) = store::store_with_sluice(
        env,
        log_dir,
        db,
        &[("control", control.pid), ("ingest", gateway.pid)],
        &filled,
    )
    .await?;
    reader.stop().await;
    eprintln!("sluice-bench: raw binary COPY, {PARALLEL_CONNECTORS} at once");
    settle(db).await;
    let parallel_ids: Vec<Uuid> = parallel.iter().map(|c| c.id).collect();
    let raw_copy_parallel = store::copy_in(&env.database_url, &parallel_ids).await?;

    // Stage 2, one connector: the stream holds exactly the records to
    // store.
    eprintln!(
        "sluice-bench: filling the stream with {} records",
        sizes.store_records
    );
    let fill = store::fill(
        js,
        &[(ns.records_subject(main.id), main.doc.clone())],
        sizes.store_records,
        sizes.batch_records,
        sizes.publish_window,
    )
    .await?;
    eprintln!("sluice-bench: store, starting the read API");
    settle(db).await;
    memory.begin(&[&control, &gateway]);
    let (reader, store_sluice) = store::store_with_sluice(
        env,
        log_dir,
        db,
        &[("control", control.pid), ("ingest", gateway.pid)],
        &[(main.id, fill.records)],
    )
    .await?;
    memory.end("store", &[&control, &gateway, &reader]);
    eprintln!("sluice-bench: raw binary COPY");
    settle(db).await;
    let raw_copy_in = store::copy_in(&env.database_url, &[main.id]).await?;

    // Stage 3.
    eprintln!("sluice-bench: read, JSON and CSV pages");
    let services = [&control, &gateway, &reader];
    let pids = [
        ("control", control.pid),
        ("ingest", gateway.pid),
        ("read", reader.pid),
    ];
    memory.begin(&services);
    let read_json = read::follow_cursor(
        http,
        &records_url(&reader, &main),
        &main.read_token,
        read::PageFormat::Json,
        sizes.page_records,
        fill.records,
        &pids,
    )
    .await?;
    let read_csv = read::follow_cursor(
        http,
        &records_url(&reader, &main),
        &main.read_token,
        read::PageFormat::Csv,
        sizes.page_records,
        fill.records,
        &pids,
    )
    .await?;
    memory.end("read", &services);
    eprintln!("sluice-bench: raw COPY TO");
    let raw_copy_out = read::copy_out(db, main.id, fill.records).await?;

    // Stage 4.
    settle(db).await;
    eprintln!(
        "sluice-bench: freshness at {} records/s for {:?}",
        sizes.freshness_rate, sizes.freshness_duration
    );
    memory.begin(&services);
    let freshness = freshness::run(
        &freshness::FreshnessTarget {
            http,
            post_url: records_url(&gateway, &fresh),
            get_url: records_url(&reader, &fresh),
            write_token: &fresh.write_token,
            read_token: &fresh.read_token,
        },
        sizes.freshness_rate,
        sizes.freshness_batch,
        sizes.freshness_duration,
        &pids,
    )
    .await?;
    memory.end("freshness", &services);

    // Stage 8.
    settle(db).await;
    let sustained = sustained::run(
        &sustained::Services {
            http,
            js,
            env,
            control: &control,
            gateway: &gateway,
            reader: &reader,
            pids: &pids,
        },
        raw_copy_in.records_per_s,
        &sizes.sustained_shares,
        sizes.batch_records,
        sizes.sustained_duration,
    )
    .await?;

    reader.stop().await;
    // Stage 5, the gateway under large bodies: last, with the read API
    // stopped (it would store all of it), so that the memory the gateway's
    // allocator keeps afterwards weighs on no other stage's peak.
    eprintln!(
        "sluice-bench: gateway memory, {} concurrent 1 MiB POSTs",
        sizes.large_clients
    );
    let (large_body, large_records) = data::json_body_of_size(0, 1 << 20);
    let large_bodies = vec![(Bytes::from(large_body), large_records)];
    let large_target = ingest::Target {
        http,
        url: records_url(&gateway, &main),
        token: &main.write_token,
        bodies: &large_bodies,
    };
    memory.begin(&[&gateway]);
    let sampler = CpuSampler::start(&[("ingest", gateway.pid)]);
    let mut large = ingest::post_in_loop(
        &large_target,
        sizes.large_clients,
        Duration::ZERO,
        sizes.large_duration,
    )
    .await;
    large.cpu = sampler.finish();
    large.gateway_peak_rss_bytes = gateway.peak_rss_bytes();
    memory.end("gateway_1mib", &[&gateway]);

    for service in [control, gateway] {
        service.stop().await;
    }

    let results = Results {
        sizes,
        ingest_http: &ingest_http,
        cli_push: &cli_push,
        large: &large,
        raw_publish: &raw_publish,
        store_sluice: &store_sluice,
        raw_copy_in: &raw_copy_in,
        store_parallel: &store_parallel,
        raw_copy_parallel: &raw_copy_parallel,
        sustained: &sustained,
        read_json: &read_json,
        read_csv: &read_csv,
        raw_copy_out: &raw_copy_out,
        freshness: &freshness,
        memory: &memory,
    };
    let rows = results.rows();
    let details = json!({
        "ingest": ingest_http,
        "cli_push": cli_push,
        "gateway_1mib": large,
        "raw_publish": raw_publish,
        "fill": fill,
        "store": store_sluice,
        "raw_copy_in": raw_copy_in,
        "store_parallel": store_parallel,
        "raw_copy_parallel": raw_copy_parallel,
        "sustained": sustained,
        "read_json": read_json,
        "read_csv": read_csv,
        "raw_copy_out": raw_copy_out,
        "freshness": freshness,
        "memory": memory,
    });
    let serde_json::Value::Object(details) = details else {
        unreachable!("json! of an object literal is an object")
    };
    Ok((rows, details))
}

/// `sluice push` of an NDJSON file an eighth of `sizes.push_bytes`, then
/// of one of the full size, each on an emptied stream.
async fn push_stage(
    sizes: &Sizes,
    log_dir: &Path,
    js: &jetstream::Context,
    env: &TestEnv,
    gateway: &ServiceProcess,
    main: &Connector,
) -> anyhow::Result<Vec<push::CliPush>> {
    let sluice = push::sluice_binary()?;
    let mut runs = Vec::new();
    for bytes in [sizes.push_bytes / 8, sizes.push_bytes] {
        js.get_stream(env.namespace.records_stream())
            .await?
            .purge()
            .await
            .context("emptying the records stream")?;
        let file = log_dir.join("push.ndjson");
        let records = push::write_ndjson(&file, 1 << 40, bytes)?;
        eprintln!("sluice-bench: sluice push of {} of NDJSON", mib(bytes));
        let run = push::run(
            &sluice,
            &gateway.url(""),
            &main.id.to_string(),
            &main.write_token,
            &file,
            records,
        )
        .await;
        let _ = std::fs::remove_file(&file);
        runs.push(run?);
    }
    Ok(runs)
}

async fn create_connector(
    http: &reqwest::Client,
    control: &ServiceProcess,
    js: &jetstream::Context,
    env: &TestEnv,
    name: &str,
    fields: serde_json::Value,
) -> anyhow::Result<Connector> {
    let response = http
        .post(control.url("/v1/connectors"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": name, "fields": fields}))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    anyhow::ensure!(
        status == reqwest::StatusCode::CREATED,
        "creating a connector answered {status}: {body}"
    );
    let text = |key: &str| {
        body[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the created connector has no {key}: {body}"))
    };
    let id: Uuid = text("id")?.parse()?;
    // The definition as the gateway holds it: field ids included, which the
    // raw side needs to publish messages the read API will store.
    let bucket = js.get_key_value(env.namespace.connectors_bucket()).await?;
    let doc = bucket
        .get(ConnectorDoc::key(id))
        .await?
        .context("the control plane did not publish the connector")?;
    Ok(Connector {
        id,
        write_token: text("write_token")?,
        read_token: text("read_token")?,
        doc: ConnectorDoc::decode(&doc)?,
    })
}

/// The gateway learns of a connector from the bucket, within a second.
async fn wait_until_gateway_knows(
    http: &reqwest::Client,
    gateway: &ServiceProcess,
    connector: &Connector,
) -> anyhow::Result<()> {
    let url = gateway.url(&format!("/v1/connectors/{}/records", connector.id));
    for _ in 0..100 {
        let status = http
            .post(&url)
            .bearer_auth(&connector.write_token)
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await?
            .status();
        if status.is_success() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the gateway never learnt of connector {}", connector.id)
}

/// Everything measured, for the table.
struct Results<'a> {
    sizes: &'a Sizes,
    ingest_http: &'a ingest::HttpLoad,
    /// The small file's run, then the full one's.
    cli_push: &'a [push::CliPush],
    large: &'a ingest::HttpLoad,
    raw_publish: &'a ingest::RawPublish,
    store_sluice: &'a store::SluiceStore,
    raw_copy_in: &'a store::RawCopyIn,
    store_parallel: &'a store::SluiceStore,
    raw_copy_parallel: &'a store::RawCopyIn,
    sustained: &'a sustained::Sustained,
    read_json: &'a read::PagedRead,
    read_csv: &'a read::PagedRead,
    raw_copy_out: &'a read::RawCopyOut,
    freshness: &'a freshness::Freshness,
    memory: &'a MemoryLog,
}

impl Results<'_> {
    /// `sluice push` next to the ingest stage's POST loop; met when the
    /// CLI stays under 50 MiB at both file sizes.
    fn push_row(&self) -> Row {
        let (Some(small), Some(full)) = (self.cli_push.first(), self.cli_push.last()) else {
            unreachable!("the push stage runs twice")
        };
        let peak = |run: &push::CliPush| run.peak_rss_bytes.map_or("?".to_owned(), mib);
        let push_ratio = ratio(full.records_per_s, self.ingest_http.records_per_s);
        let limit = 50 << 20;
        Row {
            stage: format!(
                "1. push: `sluice push` of a {} NDJSON file",
                mib(full.file_bytes)
            ),
            sluice: format!(
                "{} rec/s, {:.1} MB/s; CLI peak RSS {} ({} for a {} file)",
                count(full.records_per_s),
                full.mb_per_s,
                peak(full),
                peak(small),
                mib(small.file_bytes)
            ),
            raw_limit: format!(
                "stage 1's POST loop: {} rec/s",
                count(self.ingest_http.records_per_s)
            ),
            ratio: push_ratio,
            target: "CLI peak RSS < 50 MiB".to_owned(),
            met: Some(
                self.cli_push
                    .iter()
                    .all(|run| run.peak_rss_bytes.is_some_and(|peak| peak < limit)),
            ),
        }
    }

    fn rows(&self) -> Vec<Row> {
        let s = self.sizes;
        let at_least = |goal: f64| move |r: Option<f64>| r.map(|r| r >= goal);
        let ingest_ratio = ratio(
            self.ingest_http.records_per_s,
            self.raw_publish.records_per_s,
        );
        let store_ratio = ratio(
            self.store_sluice.records_per_s,
            self.raw_copy_in.records_per_s,
        );
        let parallel_ratio = ratio(
            self.store_parallel.records_per_s,
            self.raw_copy_parallel.records_per_s,
        );
        let sustained = self.sustained;
        let sustained_ratio = sustained
            .highest_records_per_s
            .and_then(|rate| ratio(rate, sustained.raw_copy_records_per_s));
        let json_ratio = ratio(
            self.read_json.records_per_s,
            self.raw_copy_out.records_per_s,
        );
        let csv_ratio = ratio(self.read_csv.records_per_s, self.raw_copy_out.records_per_s);
        let raw_read = format!(
            "COPY TO STDOUT (csv): {} rec/s, {:.0} MB/s",
            count(self.raw_copy_out.records_per_s),
            self.raw_copy_out.mb_per_s
        );
        let read_row = |read: &read::PagedRead, ratio: Option<f64>| Row {
            stage: format!(
                "3. read: GET pages of {} in {}",
                count(s.page_records as f64),
                read.format.to_uppercase()
            ),
            sluice: format!(
                "{} rec/s, {:.0} MB/s",
                count(read.records_per_s),
                read.mb_per_s
            ),
            raw_limit: raw_read.clone(),
            ratio,
            target: "≥ 0.8".to_owned(),
            met: at_least(0.8)(ratio),
        };
        let f = self.freshness;
        let fresh_met =
            f.failed_requests == 0 && f.unseen_requests == 0 && f.freshness.p99_ms < 250.0;
        let gateway_peak = self.large.gateway_peak_rss_bytes.unwrap_or(0);
        let stages_1_to_4 = ["ingest", "store", "read", "freshness"];
        let peaks: Vec<String> = ["control", "ingest", "read"]
            .iter()
            .filter_map(|svc| {
                let peak = self.memory.peak_over(&stages_1_to_4, svc)?;
                Some(format!("{svc} {}", mib(peak)))
            })
            .collect();
        vec![
            Row {
                stage: format!(
                    "1. ingest: POST {}-record JSON batches, {} clients",
                    count(s.batch_records as f64),
                    s.clients
                ),
                sluice: format!(
                    "{} rec/s, {:.1} MB/s, p50 {:.1} ms, p99 {:.1} ms",
                    count(self.ingest_http.records_per_s),
                    self.ingest_http.mb_per_s,
                    self.ingest_http.latency.p50_ms,
                    self.ingest_http.latency.p99_ms
                ),
                raw_limit: format!(
                    "JetStream publish, {} in flight: {} rec/s, {:.1} MB/s",
                    s.publish_window,
                    count(self.raw_publish.records_per_s),
                    self.raw_publish.mb_per_s
                ),
                ratio: ingest_ratio,
                target: "≥ 0.25".to_owned(),
                met: at_least(0.25)(ingest_ratio),
            },
            self.push_row(),
            Row {
                stage: format!(
                    "2. store: {} records from the stream",
                    count(self.store_sluice.records as f64)
                ),
                sluice: format!("{} rec/s", count(self.store_sluice.records_per_s)),
                raw_limit: format!(
                    "binary COPY: {} rec/s",
                    count(self.raw_copy_in.records_per_s)
                ),
                ratio: store_ratio,
                target: "≥ 0.8".to_owned(),
                met: at_least(0.8)(store_ratio),
            },
            Row {
                stage: format!(
                    "2. store: {} records of {} connectors at once",
                    count(self.store_parallel.records as f64),
                    self.store_parallel.connectors
                ),
                sluice: format!("{} rec/s", count(self.store_parallel.records_per_s)),
                raw_limit: format!(
                    "{} binary COPYs at once: {} rec/s",
                    self.raw_copy_parallel.statements,
                    count(self.raw_copy_parallel.records_per_s)
                ),
                ratio: parallel_ratio,
                target: "≥ 0.8".to_owned(),
                met: at_least(0.8)(parallel_ratio),
            },
            read_row(self.read_json, json_ratio),
            read_row(self.read_csv, csv_ratio),
            Row {
                stage: format!(
                    "4. freshness: 202 → GET at {} rec/s ({}-record POSTs)",
                    count(f.offered_records_per_s),
                    f.batch_records
                ),
                sluice: format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} rec/s accepted{})",
                    f.freshness.p50_ms,
                    f.freshness.p99_ms,
                    f.freshness.max_ms,
                    count(f.accepted_records_per_s),
                    if f.failed_requests + f.unseen_requests > 0 {
                        format!(
                            ", {} failed, {} unseen",
                            f.failed_requests, f.unseen_requests
                        )
                    } else {
                        String::new()
                    }
                ),
                raw_limit: "–".to_owned(),
                ratio: None,
                target: "p99 < 250 ms (aim 50)".to_owned(),
                met: Some(fresh_met),
            },
            Row {
                stage: format!(
                    "4. sustained: highest open-loop rate stored as accepted, p99 < 1 s ({} s steps)",
                    s.sustained_duration.as_secs_f64()
                ),
                sluice: format!(
                    "{} ({})",
                    sustained
                        .highest_records_per_s
                        .map_or_else(|| "none held".to_owned(), |r| format!("{} rec/s", count(r))),
                    sustained.summary()
                ),
                raw_limit: format!(
                    "binary COPY: {} rec/s",
                    count(sustained.raw_copy_records_per_s)
                ),
                ratio: sustained_ratio,
                target: "≥ 0.7".to_owned(),
                met: Some(at_least(0.7)(sustained_ratio).unwrap_or(false)),
            },
            Row {
                stage: format!(
                    "5. memory: gateway under {} concurrent 1 MiB POSTs",
                    s.large_clients
                ),
                sluice: format!(
                    "peak RSS {} ({} requests, {} failed)",
                    mib(gateway_peak),
                    self.large.requests,
                    self.large.failed
                ),
                raw_limit: "–".to_owned(),
                ratio: None,
                target: "< 100 MiB".to_owned(),
                met: Some(gateway_peak > 0 && gateway_peak < 100 * 1024 * 1024),
            },
            Row {
                stage: "5. memory: peak RSS of each service during 1–4".to_owned(),
                sluice: peaks.join(", "),
                raw_limit: "–".to_owned(),
                ratio: None,
                target: "–".to_owned(),
                met: None,
            },
        ]
    }
}

fn validation_row(v: &validation::ValidationResult) -> Row {
    Row {
        stage: format!(
            "6. validation: {}-record JSON body, one thread",
            count(v.records_per_body as f64)
        ),
        sluice: format!(
            "sluice_schema::validate: {:.0} MB/s ({} rec/s)",
            v.sluice_mb_per_s,
            count(v.sluice_records_per_s)
        ),
        raw_limit: format!(
            "serde_json::from_slice::<Vec<Value>>: {:.0} MB/s",
            v.serde_mb_per_s
        ),
        ratio: ratio(v.sluice_mb_per_s, v.serde_mb_per_s),
        target: "–".to_owned(),
        met: None,
    }
}
