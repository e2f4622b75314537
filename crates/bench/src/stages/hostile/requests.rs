//! The attacks made of many small requests: made-up methods (metric
//! series), the inputs that used to be 500s, and wrong tokens.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use futures::StreamExt as _;
use serde::Serialize;
use serde_json::{Value, json};
use sluice_runtime::settings::AuthThrottleSettings;
use sluice_testkit::ADMIN_TOKEN;

use super::Services;

/// Requests in flight at once in these attacks.
const CONCURRENCY: usize = 16;

/// Attack 1 against one service.
#[derive(Debug, Serialize)]
pub(crate) struct MethodFlood {
    pub service: &'static str,
    pub requests: usize,
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer.
    pub failed: u64,
    pub metrics_bytes_before: usize,
    pub metrics_bytes_after: usize,
    pub seconds: f64,
}

impl MethodFlood {
    /// What `/metrics` may grow by: a few new series (method `other`,
    /// status 405), against the megabytes one series per method made.
    pub const GROWTH_LIMIT_BYTES: usize = 64 * 1024;

    pub fn growth(&self) -> usize {
        self.metrics_bytes_after
            .saturating_sub(self.metrics_bytes_before)
    }

    pub fn held(&self) -> bool {
        self.failed == 0 && self.growth() < Self::GROWTH_LIMIT_BYTES
    }
}

/// A made-up method name of 8 to 31 capital letters, different for each
/// `i` (no randomness needed, only variety).
fn method_name(i: u64) -> String {
    let mut state = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let len = 8 + (next() % 24) as usize;
    (0..len)
        .map(|_| (b'A' + (next() % 26) as u8) as char)
        .collect()
}

async fn metrics_bytes(http: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
    Ok(http.get(url).send().await?.bytes().await?.len())
}

/// Attack 1: `requests` requests with made-up methods on `/healthz`.
pub(crate) async fn methods(
    http: &reqwest::Client,
    service: &crate::services::ServiceProcess,
    requests: usize,
) -> anyhow::Result<MethodFlood> {
    let metrics_url = service.url("/metrics");
    let metrics_bytes_before = metrics_bytes(http, &metrics_url).await?;
    let healthz = service.url("/healthz");
    let (statuses, failed, seconds) = send_all((0..requests as u64).map(|i| {
        reqwest::Method::from_bytes(method_name(i).as_bytes())
            .ok()
            .map(|method| http.request(method, &healthz))
    }))
    .await;
    Ok(MethodFlood {
        service: service.kind.name(),
        requests,
        statuses,
        failed,
        metrics_bytes_before,
        metrics_bytes_after: metrics_bytes(http, &metrics_url).await?,
        seconds,
    })
}

/// Sends `requests`, `CONCURRENCY` at a time, reading each answer whole:
/// how many got each status, how many failed (could not be built or sent),
/// and the seconds it all took.
async fn send_all(
    requests: impl Iterator<Item = Option<reqwest::RequestBuilder>>,
) -> (BTreeMap<u16, u64>, u64, f64) {
    let started = Instant::now();
    let outcomes: Vec<Option<u16>> = futures::stream::iter(requests)
        .map(|request| async move {
            let response = request?.send().await.ok()?;
            let status = response.status().as_u16();
            response.bytes().await.ok()?;
            Some(status)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let (statuses, failed) = tally(outcomes);
    (statuses, failed, started.elapsed().as_secs_f64())
}

fn tally(outcomes: impl IntoIterator<Item = Option<u16>>) -> (BTreeMap<u16, u64>, u64) {
    let mut statuses = BTreeMap::new();
    let mut failed = 0;
    for outcome in outcomes {
        match outcome {
            Some(status) => *statuses.entry(status).or_default() += 1,
            None => failed += 1,
        }
    }
    (statuses, failed)
}

/// Attack 6: the inputs issue 12 found answered with 500.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Former500s {
    pub requests: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub failed: u64,
    /// The first few requests answered 5xx, as `METHOD path → status`.
    pub server_errors: Vec<String>,
    /// 4xx answers that are not problem+json.
    pub not_problem_json: Vec<String>,
}

impl Former500s {
    pub fn server_error_count(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| **status >= 500)
            .map(|(_, n)| n)
            .sum()
    }
}

struct Probe {
    method: reqwest::Method,
    url: String,
    token: String,
    body: Option<Value>,
}

/// Attack 6, `rounds` times over.
pub(crate) async fn former_500s(
    http: &reqwest::Client,
    services: &Services<'_>,
    rounds: usize,
) -> anyhow::Result<Former500s> {
    let typed = services.typed;
    let records = services
        .reader
        .url(&format!("/v1/connectors/{}/records", typed.id));
    let read = |query: &str| Probe {
        method: reqwest::Method::GET,
        url: format!("{records}?{query}"),
        token: typed.read_token.clone(),
        body: None,
    };
    let control = |method: reqwest::Method, path: &str, body: Value| Probe {
        method,
        url: services.control.url(path),
        token: ADMIN_TOKEN.to_owned(),
        body: Some(body),
    };
    let mut result = Former500s::default();
    for round in 0..rounds {
        let mut probes: Vec<Probe> = [
            "s=eq.%00",
            "s=gt.a%00b",
            "j=eq.%22%5Cu0000%22",
            "j=eq.%7B%22%5Cu0000%22%3A1%7D",
            "dt=eq.-5000-01-01",
            "dt=eq.10000-01-01",
            "s=eq.%FF",
        ]
        .into_iter()
        .map(read)
        .collect();
        probes.push(Probe {
            method: reqwest::Method::GET,
            url: services.reader.url("/v1/connectors/%FF/records"),
            token: typed.read_token.clone(),
            body: None,
        });
        for name in ["xmin", "ctid", "tableoid"] {
            probes.push(control(
                reqwest::Method::POST,
                "/v1/connectors",
                json!({"name": format!("hostile_{name}_{round}"),
                       "fields": [{"name": "a", "type": "string"}, {"name": name, "type": "integer"}]}),
            ));
        }
        probes.push(control(
            reqwest::Method::POST,
            "/v1/connectors",
            json!({"name": format!("hostile_nul_{round}"), "description": "a\u{0}b",
                   "fields": [{"name": "a", "type": "string"}]}),
        ));
        probes.push(control(
            reqwest::Method::POST,
            "/v1/connectors",
            json!({"name": format!("hostile_nul_field_{round}"),
                   "fields": [{"name": "a", "type": "string", "description": "a\u{0}b"}]}),
        ));
        probes.push(control(
            reqwest::Method::PATCH,
            &format!("/v1/connectors/{}", typed.id),
            json!({"description": "a\u{0}b"}),
        ));
        probes.push(Probe {
            method: reqwest::Method::POST,
            url: services
                .gateway
                .url(&format!("/v1/connectors/{}/records", typed.id)),
            token: typed.write_token.clone(),
            body: Some(json!([{"s": "a\u{0}b"}])),
        });
        for probe in probes {
            let label = format!("{} {}", probe.method, probe.url);
            let mut request = http
                .request(probe.method, &probe.url)
                .bearer_auth(&probe.token);
            if let Some(body) = &probe.body {
                request = request.json(body);
            }
            result.requests += 1;
            let Ok(response) = request.send().await else {
                result.failed += 1;
                continue;
            };
            let status = response.status().as_u16();
            *result.statuses.entry(status).or_default() += 1;
            let problem = response
                .headers()
                .get("content-type")
                .is_some_and(|t| t.as_bytes().starts_with(b"application/problem+json"));
            let _ = response.bytes().await;
            if status >= 500 && result.server_errors.len() < 10 {
                result.server_errors.push(format!("{label} → {status}"));
            }
            if (400..500).contains(&status) && !problem && result.not_problem_json.len() < 10 {
                result.not_problem_json.push(format!("{label} → {status}"));
            }
        }
    }
    Ok(result)
}

/// Attack 7 against one service, from a client address of its own.
#[derive(Debug, Serialize)]
pub(crate) struct WrongTokens {
    pub service: &'static str,
    pub requests: usize,
    pub unauthorized: u64,
    pub throttled: u64,
    /// Any other status, or no answer (0).
    pub other: BTreeMap<u16, u64>,
    pub seconds: f64,
    /// The most 401s the throttle allows in that time: the burst plus what
    /// refilled.
    pub allowed_unauthorized: u64,
}

impl WrongTokens {
    pub fn held(&self) -> bool {
        self.other.is_empty() && self.unauthorized <= self.allowed_unauthorized
    }
}

/// Attack 7: `requests` unknown tokens to `service`'s authenticated route,
/// all from `from`.
pub(crate) async fn wrong_tokens(
    services: &Services<'_>,
    kind: crate::services::ServiceKind,
    requests: usize,
    from: IpAddr,
    throttle: &AuthThrottleSettings,
) -> anyhow::Result<WrongTokens> {
    use crate::services::ServiceKind;
    let http = reqwest::Client::builder()
        .local_address(from)
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    let (service, method, url, prefix) = match kind {
        ServiceKind::Control => (
            services.control,
            reqwest::Method::GET,
            services.control.url("/v1/connectors"),
            "not-the-operator-token-",
        ),
        ServiceKind::Ingest => (
            services.gateway,
            reqwest::Method::POST,
            services
                .gateway
                .url(&format!("/v1/connectors/{}/records", services.bulk.id)),
            "sluice_w_",
        ),
        ServiceKind::Read => (
            services.reader,
            reqwest::Method::GET,
            services
                .reader
                .url(&format!("/v1/connectors/{}/records", services.typed.id)),
            "sluice_r_",
        ),
    };
    let (mut statuses, failed, seconds) = send_all((0..requests as u64).map(|i| {
        // Of a connector token's form, so the gateway and the read API get
        // as far as looking it up.
        let token = format!("{prefix}{:064x}", i + 1);
        let request = http.request(method.clone(), &url).bearer_auth(token);
        Some(if method == reqwest::Method::POST {
            request
                .header("content-type", "application/json")
                .body("[]")
        } else {
            request
        })
    }))
    .await;
    let unauthorized = statuses.remove(&401).unwrap_or(0);
    let throttled = statuses.remove(&429).unwrap_or(0);
    if failed > 0 {
        statuses.insert(0, failed);
    }
    let refill = throttle.window.as_secs_f64() / f64::from(throttle.failures.max(1));
    Ok(WrongTokens {
        service: service.kind.name(),
        requests,
        unauthorized,
        throttled,
        other: statuses,
        seconds,
        allowed_unauthorized: u64::from(throttle.failures) + (seconds / refill).ceil() as u64,
    })
}
