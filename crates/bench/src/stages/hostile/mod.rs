//! Stage 7: the attacks of issue 12 ("Survive hostile traffic"), bounded in
//! count and time, over loopback, against a control plane, gateway and read
//! API started afresh for the stage, so that each one's idle memory is a
//! known starting point. For every attack it reports what the attacker
//! saw and each service's peak resident memory next to the limit.
//!
//! The attacks that need a failing client address (wrong tokens) come from
//! addresses of their own in 127.0.0.0/8, so the per-address throttle of
//! one does not decide the outcome of another.

mod bodies;
mod connections;
mod requests;
mod wire;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use serde::Serialize;
use serde_json::json;
use sluice_runtime::Settings;
use sluice_testkit::TestEnv;

use super::{Connector, MemoryLog, create_connector, wait_until_gateway_knows};
use crate::data;
use crate::report::{Row, mib};
use crate::services::{ServiceKind, ServiceProcess};
use crate::stages::ingest;

/// No service may go above this under any attack, with default settings
/// (issue 12).
const RSS_LIMIT_BYTES: u64 = 300 * 1024 * 1024;

const MIB: usize = 1024 * 1024;

/// Client addresses of the attacks that must not share a throttle.
const SLOW_CLIENTS_FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const REFUSALS_FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
const WRONG_TOKENS_FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));

/// The size of each attack: the in a full run, tiny in smoke mode.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HostileSizes {
    /// Attack 1, per service.
    pub method_requests: usize,
    /// Attack 2: rows of each CSV, and how many are sent at once.
    pub partial_rows: usize,
    pub partial_floods: usize,
    /// Attack 3: half heads per service; stalled uploads to the gateway,
    /// their declared and their sent size.
    pub half_heads: usize,
    pub stalled_uploads: usize,
    pub stalled_upload_declared: usize,
    pub stalled_upload_sent: usize,
    /// Attack 4.
    pub large_bodies: usize,
    pub large_body_bytes: usize,
    /// Attack 5, per kind of refusal.
    pub refusal_rounds: usize,
    /// Attack 6: times each input is sent.
    pub former_500_rounds: usize,
    /// Attack 7, per service.
    pub wrong_tokens: usize,
    /// Header and body timeouts (seconds) the services are started with,
    /// when not their defaults.
    pub timeouts: Option<(u64, u64)>,
    /// Pause after each attack before the memory left is read.
    pub settle: Duration,
}

impl HostileSizes {
    pub fn full(short_timeouts: bool) -> HostileSizes {
        HostileSizes {
            method_requests: 20_000,
            partial_rows: 1_000_000,
            partial_floods: 2,
            half_heads: 200,
            stalled_uploads: 20,
            stalled_upload_declared: 15 * MIB,
            stalled_upload_sent: 4 * MIB,
            large_bodies: 32,
            large_body_bytes: 13 * MIB,
            refusal_rounds: 200,
            former_500_rounds: 10,
            wrong_tokens: 3_000,
            timeouts: short_timeouts.then_some((2, 5)),
            settle: Duration::from_secs(1),
        }
    }

    pub fn smoke() -> HostileSizes {
        HostileSizes {
            method_requests: 100,
            partial_rows: 1_000,
            partial_floods: 2,
            half_heads: 5,
            stalled_uploads: 2,
            stalled_upload_declared: 15 * MIB,
            stalled_upload_sent: 64 * 1024,
            large_bodies: 2,
            large_body_bytes: MIB,
            refusal_rounds: 3,
            former_500_rounds: 1,
            wrong_tokens: 30,
            timeouts: Some((1, 2)),
            settle: Duration::from_millis(100),
        }
    }
}

/// The services and connectors the attacks aim at.
pub(crate) struct Services<'a> {
    pub control: &'a ServiceProcess,
    pub gateway: &'a ServiceProcess,
    pub reader: &'a ServiceProcess,
    /// The benchmark's usual fields: floods and large bodies go here.
    pub bulk: &'a Connector,
    /// Another connector, which must be served meanwhile.
    pub other: &'a Connector,
    /// One field of each type the former 500s need, with a stored record.
    pub typed: &'a Connector,
}

impl Services<'_> {
    fn all(&self) -> [&ServiceProcess; 3] {
        [self.control, self.gateway, self.reader]
    }

    fn records_url(&self, service: &ServiceProcess, connector: &Connector) -> String {
        service.url(&format!("/v1/connectors/{}/records", connector.id))
    }
}

/// Everything the stage measured.
#[derive(Debug, Serialize)]
pub(crate) struct Hostile {
    pub rss_limit_bytes: u64,
    /// The gateway's memory budget (`SLUICE_INGEST_MEMORY_BYTES`, as the
    /// gateway reads it).
    pub ingest_budget_bytes: u64,
    pub header_timeout_seconds: f64,
    pub body_timeout_seconds: f64,
    pub timeouts_shortened: bool,
    pub idle_rss: BTreeMap<String, u64>,
    /// Peak of each service during each attack.
    pub peaks: MemoryLog,
    /// Resident memory a moment (`settle`) after each attack.
    pub rss_after: BTreeMap<String, BTreeMap<String, u64>>,
    /// At the end of the stage.
    pub final_rss: BTreeMap<String, u64>,
    pub methods: Vec<requests::MethodFlood>,
    pub partial: bodies::PartialFlood,
    pub slow_clients: connections::SlowClients,
    pub large_bodies: ingest::HttpLoad,
    pub refusals: Vec<connections::Refusals>,
    pub former_500s: requests::Former500s,
    pub wrong_tokens: Vec<requests::WrongTokens>,
}

/// The attacks' names, as keys of the memory figures.
const METHODS: &str = "methods";
const PARTIAL: &str = "partial";
const SLOW: &str = "slow_clients";
const LARGE: &str = "large_bodies";
const REFUSALS: &str = "refusals";
const FORMER_500S: &str = "former_500s";
const WRONG_TOKENS: &str = "wrong_tokens";

fn rss_of(services: &[&ServiceProcess]) -> BTreeMap<String, u64> {
    services
        .iter()
        .filter_map(|s| Some((s.kind.name().to_owned(), s.rss_bytes()?)))
        .collect()
}

pub(crate) async fn run(
    env: &TestEnv,
    sizes: &HostileSizes,
    log_dir: &Path,
    js: &jetstream::Context,
) -> anyhow::Result<Hostile> {
    // Whatever earlier stages left unstored would keep a new read API busy.
    if let Ok(stream) = js.get_stream(env.namespace.records_stream()).await {
        stream
            .purge()
            .await
            .context("emptying the records stream")?;
    }
    let mut vars: Vec<(&str, String)> = Vec::new();
    if let Some((header, body)) = sizes.timeouts {
        eprintln!(
            "sluice-bench: hostile: services get SLUICE_HTTP_HEADER_TIMEOUT_SECS={header} and \
             SLUICE_HTTP_BODY_TIMEOUT_SECS={body} (defaults 10 and 60), so that the slow \
             clients are closed within seconds"
        );
        vars.push(("SLUICE_HTTP_HEADER_TIMEOUT_SECS", header.to_string()));
        vars.push(("SLUICE_HTTP_BODY_TIMEOUT_SECS", body.to_string()));
    }
    // The settings the children will read, to know their timeouts, body
    // limit and throttle without restating any default here.
    let service_vars = env.service_vars();
    let settings = Settings::from_lookup("127.0.0.1:0", |name| {
        vars.iter()
            .chain(service_vars.iter())
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var(name).ok())
    })
    .context("the hostile stage's service settings")?;

    eprintln!("sluice-bench: hostile: starting a control plane, gateway and read API");
    let log_dir = log_dir.join("hostile");
    let control = ServiceProcess::spawn_with(ServiceKind::Control, env, &log_dir, &vars).await?;
    let gateway = ServiceProcess::spawn_with(ServiceKind::Ingest, env, &log_dir, &vars).await?;
    let reader = ServiceProcess::spawn_with(ServiceKind::Read, env, &log_dir, &vars).await?;
    // Large bodies and floods may take a while; nothing may hang the run.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(300))
        .build()?;
    let bulk = create_connector(&http, &control, js, env, "hostile-bulk", data::fields()).await?;
    let other = create_connector(&http, &control, js, env, "hostile-other", data::fields()).await?;
    let typed = create_connector(
        &http,
        &control,
        js,
        env,
        "hostile-typed",
        json!([
            {"name": "s", "type": "string", "nullable": true},
            {"name": "dt", "type": "date", "nullable": true},
            {"name": "j", "type": "json", "nullable": true},
        ]),
    )
    .await?;
    for connector in [&bulk, &other, &typed] {
        wait_until_gateway_knows(&http, &gateway, connector).await?;
    }
    let services = Services {
        control: &control,
        gateway: &gateway,
        reader: &reader,
        bulk: &bulk,
        other: &other,
        typed: &typed,
    };
    store_one_typed_record(&http, &services).await?;
    let all = services.all();
    tokio::time::sleep(sizes.settle).await;
    let idle_rss = rss_of(&all);

    let mut peaks = MemoryLog::default();
    let mut rss_after = BTreeMap::new();
    let mut after = |name: &str, peaks: &mut MemoryLog| {
        peaks.end(name, &all);
        rss_after.insert(name.to_owned(), rss_of(&all));
    };
    let settle = sizes.settle;

    eprintln!(
        "sluice-bench: hostile 1: {} made-up methods per service",
        sizes.method_requests
    );
    peaks.begin(&all);
    let mut methods = Vec::new();
    for service in all {
        methods.push(requests::methods(&http, service, sizes.method_requests).await?);
    }
    tokio::time::sleep(settle).await;
    after(METHODS, &mut peaks);

    eprintln!(
        "sluice-bench: hostile 2: {} partial-mode CSVs of {} rejected rows",
        sizes.partial_floods, sizes.partial_rows
    );
    peaks.begin(&all);
    let partial =
        bodies::partial_flood(&http, &services, sizes.partial_floods, sizes.partial_rows).await;
    tokio::time::sleep(settle).await;
    after(PARTIAL, &mut peaks);

    eprintln!(
        "sluice-bench: hostile 3: {} half heads per service, {} stalled uploads (timeouts {:?} / {:?})",
        sizes.half_heads,
        sizes.stalled_uploads,
        settings.http.header_timeout,
        settings.http.body_timeout
    );
    peaks.begin(&all);
    let slow_clients = connections::slow_clients(
        &services,
        SLOW_CLIENTS_FROM,
        sizes.half_heads,
        sizes.stalled_uploads,
        sizes.stalled_upload_declared,
        sizes.stalled_upload_sent,
        &settings.http,
        sizes.timeouts.is_some(),
    )
    .await;
    tokio::time::sleep(settle).await;
    after(SLOW, &mut peaks);

    eprintln!(
        "sluice-bench: hostile 4: {} concurrent valid bodies of {}",
        sizes.large_bodies,
        mib(sizes.large_body_bytes as u64)
    );
    peaks.begin(&all);
    let large_bodies =
        bodies::large_bodies(&http, &services, sizes.large_bodies, sizes.large_body_bytes).await;
    tokio::time::sleep(settle).await;
    after(LARGE, &mut peaks);

    eprintln!("sluice-bench: hostile 5: early refusals on keep-alive connections");
    peaks.begin(&all);
    let refusals = connections::early_refusals(
        &services,
        REFUSALS_FROM,
        sizes.refusal_rounds,
        settings.max_body_bytes,
    )
    .await;
    tokio::time::sleep(settle).await;
    after(REFUSALS, &mut peaks);

    eprintln!("sluice-bench: hostile 6: the former 500s");
    peaks.begin(&all);
    let former_500s = requests::former_500s(&http, &services, sizes.former_500_rounds).await?;
    tokio::time::sleep(settle).await;
    after(FORMER_500S, &mut peaks);

    eprintln!(
        "sluice-bench: hostile 7: {} wrong tokens per service",
        sizes.wrong_tokens
    );
    peaks.begin(&all);
    let mut wrong_tokens = Vec::new();
    for kind in [ServiceKind::Control, ServiceKind::Ingest, ServiceKind::Read] {
        wrong_tokens.push(
            requests::wrong_tokens(
                &services,
                kind,
                sizes.wrong_tokens,
                WRONG_TOKENS_FROM,
                &settings.auth_throttle,
            )
            .await?,
        );
    }
    tokio::time::sleep(settle).await;
    after(WRONG_TOKENS, &mut peaks);

    let final_rss = rss_of(&all);
    for service in [control, gateway, reader] {
        service.stop().await;
    }
    Ok(Hostile {
        rss_limit_bytes: RSS_LIMIT_BYTES,
        ingest_budget_bytes: settings.ingest_memory_bytes as u64,
        header_timeout_seconds: settings.http.header_timeout.as_secs_f64(),
        body_timeout_seconds: settings.http.body_timeout.as_secs_f64(),
        timeouts_shortened: sizes.timeouts.is_some(),
        idle_rss,
        peaks,
        rss_after,
        final_rss,
        methods,
        partial,
        slow_clients,
        large_bodies,
        refusals,
        former_500s,
        wrong_tokens,
    })
}

/// The read API refuses filters on a connector whose table it has not
/// made; one stored record makes the former 500s reach PostgreSQL.
async fn store_one_typed_record(
    http: &reqwest::Client,
    services: &Services<'_>,
) -> anyhow::Result<()> {
    let status = http
        .post(services.records_url(services.gateway, services.typed))
        .bearer_auth(&services.typed.write_token)
        .json(&json!([{"s": "a", "dt": "2026-01-05", "j": {"k": 1}}]))
        .send()
        .await?
        .status();
    anyhow::ensure!(status.is_success(), "storing the typed record: {status}");
    let url = services.records_url(services.reader, services.typed);
    for _ in 0..300 {
        let page: serde_json::Value = http
            .get(&url)
            .bearer_auth(&services.typed.read_token)
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        if page["records"].as_array().is_some_and(|r| !r.is_empty()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the read API never stored the typed connector's record")
}

impl Hostile {
    /// Each service's figure in `figures`, as `control 14.6 MiB, …`.
    fn per_service(figures: Option<&BTreeMap<String, u64>>) -> String {
        let Some(figures) = figures else {
            return "–".to_owned();
        };
        ["control", "ingest", "read"]
            .iter()
            .filter_map(|s| Some(format!("{s} {}", mib(*figures.get(*s)?))))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The gateway's growth over its idle RSS allowed by its budget: the
    /// budget counts what requests hold (bodies, validation, messages); the
    /// process adds its HTTP read buffers (up to 64 KiB a connection) and
    /// what the allocator keeps of freed memory, hence 5 % more.
    fn ingest_growth_limit(&self) -> u64 {
        self.ingest_budget_bytes + self.ingest_budget_bytes / 20
    }

    /// Every service under the RSS limit, and the gateway's growth over its
    /// idle RSS within [`Hostile::ingest_growth_limit`].
    fn within_limit(&self, figures: Option<&BTreeMap<String, u64>>) -> bool {
        let idle_ingest = self.idle_rss.get("ingest").copied().unwrap_or(0);
        figures.is_some_and(|f| {
            !f.is_empty()
                && f.values().all(|b| *b <= self.rss_limit_bytes)
                && f.get("ingest")
                    .is_none_or(|b| b.saturating_sub(idle_ingest) <= self.ingest_growth_limit())
        })
    }

    fn memory_target(&self) -> String {
        format!(
            "each < {}; ingest ≤ idle + {} (budget {} + 5 %)",
            mib(self.rss_limit_bytes),
            mib(self.ingest_growth_limit()),
            mib(self.ingest_budget_bytes)
        )
    }

    /// One row for an attack: what the attacker saw, then each service's
    /// peak and what it kept a moment later.
    fn attack_row(&self, stage: String, outcome: String, attack: &str, held: bool) -> Row {
        let peaks = self.peaks.stages.get(attack);
        let after = self.rss_after.get(attack);
        Row {
            stage: format!("7. hostile: {stage}"),
            sluice: format!(
                "{outcome}; peak RSS {}; after {}",
                Hostile::per_service(peaks),
                Hostile::per_service(after)
            ),
            raw_limit: "–".to_owned(),
            ratio: None,
            target: self.memory_target(),
            met: Some(held && self.within_limit(peaks) && self.within_limit(after)),
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        let mut rows = vec![Row {
            stage: "7. hostile: RSS idle before the attacks → at the end".to_owned(),
            sluice: format!(
                "{} → {}",
                Hostile::per_service(Some(&self.idle_rss)),
                Hostile::per_service(Some(&self.final_rss))
            ),
            raw_limit: "–".to_owned(),
            ratio: None,
            target: self.memory_target(),
            met: Some(self.within_limit(Some(&self.final_rss))),
        }];

        let methods = &self.methods;
        let requests = methods.first().map_or(0, |m| m.requests);
        rows.push(self.attack_row(
            format!("1. {requests} made-up methods on /healthz, per service"),
            format!(
                "/metrics {}",
                methods
                    .iter()
                    .map(|m| format!(
                        "{} {} → {} B",
                        m.service, m.metrics_bytes_before, m.metrics_bytes_after
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            METHODS,
            methods.iter().all(requests::MethodFlood::held),
        ));

        let p = &self.partial;
        rows.push(self.attack_row(
            format!(
                "2. {} × partial-mode CSV of {} rejected rows ({:.1} MB) + 1 record elsewhere",
                p.floods.len(),
                crate::report::count(p.rows as f64),
                p.body_bytes as f64 / 1e6
            ),
            format!(
                "floods {}; the other connector's POST {}",
                p.floods
                    .iter()
                    .map(bodies::Outcome::describe)
                    .collect::<Vec<_>>()
                    .join(", "),
                p.bystander.describe()
            ),
            PARTIAL,
            p.held(),
        ));

        let s = &self.slow_clients;
        let heads = s.stalled.first().map_or(0, |x| x.connections);
        let uploads = s.stalled.last().map_or(0, |x| x.connections);
        rows.push(self.attack_row(
            format!(
                "3. {heads} half heads per service, {uploads} stalled 15 MiB uploads (timeouts {} s / {} s{})",
                s.header_timeout_seconds,
                s.body_timeout_seconds,
                if s.shortened { ", shortened" } else { ", defaults" }
            ),
            s.stalled
                .iter()
                .map(connections::Stalled::describe)
                .collect::<Vec<_>>()
                .join("; "),
            SLOW,
            s.held(),
        ));

        let l = &self.large_bodies;
        rows.push(self.attack_row(
            format!(
                "4. {} concurrent valid 13 MiB bodies to the gateway",
                l.clients
            ),
            format!(
                "{} accepted, {} refused{}",
                l.requests,
                l.failed,
                l.first_failure
                    .as_deref()
                    .map(|f| format!(" (first: {})", f.chars().take(60).collect::<String>()))
                    .unwrap_or_default()
            ),
            LARGE,
            bodies::large_bodies_held(l),
        ));

        let rounds = self.refusals.first().map_or(0, |r| r.rounds);
        rows.push(
            self.attack_row(
                format!("5. early refusals on keep-alive connections, {rounds} of each kind"),
                self.refusals
                    .iter()
                    .map(connections::Refusals::describe)
                    .collect::<Vec<_>>()
                    .join("; "),
                REFUSALS,
                self.refusals.iter().all(connections::Refusals::held),
            ),
        );

        let f = &self.former_500s;
        rows.push(self.attack_row(
            "6. the former 500s (NUL and out-of-range filters, xmin, NUL descriptions)".to_owned(),
            format!(
                "{} requests, {} 5xx, {} 4xx not problem+json, {} unanswered",
                f.requests,
                f.server_error_count(),
                f.not_problem_json.len(),
                f.failed
            ),
            FORMER_500S,
            f.server_error_count() == 0 && f.failed == 0,
        ));

        let requests = self.wrong_tokens.first().map_or(0, |w| w.requests);
        rows.push(
            self.attack_row(
                format!("7. {requests} wrong tokens per service"),
                self.wrong_tokens
                    .iter()
                    .map(|w| {
                        format!(
                            "{} {} × 401, {} × 429{} in {:.1} s",
                            w.service,
                            w.unauthorized,
                            w.throttled,
                            if w.other.is_empty() {
                                String::new()
                            } else {
                                format!(", other {:?}", w.other)
                            },
                            w.seconds
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                WRONG_TOKENS,
                self.wrong_tokens.iter().all(requests::WrongTokens::held),
            ),
        );
        rows
    }
}
