//! Per-token rate limits: requests per second and records per second, set
//! per connector (its `limits`, else the deployment's defaults), the same
//! in the ingest gateway and the read API.
//!
//! Each token is keyed by its SHA-256 hash, so a connector with several
//! tokens limits each on its own. The operator's token is never limited.
//!
//! # Across replicas: each replica takes its share
//!
//! Every gateway (and every read-API replica) keeps a heartbeat in the
//! `{namespace}_replicas` bucket, whose entries expire after
//! [`HEARTBEAT_TTL`], and counts the live replicas of its own kind; each
//! then lets a token through at `limit / replicas` per second. No request
//! waits for NATS, and the sum of the shares is the limit. The allowance
//! for a burst (one second of the whole limit) is each replica's own, so
//! that a request's size never depends on how many replicas run: after a
//! quiet spell a client spreading requests over N replicas may get up to N
//! seconds' worth at once, and then the limit, sustained. A client that
//! sends to one replica only (a sticky load balancer) gets its share, not
//! the whole limit.
//!
//! # Records are counted before anything is published
//!
//! A request's records are weighed after validation and before publishing:
//! a request over the records limit is refused whole (429, nothing
//! published), and one that passes is published whole, so the limit never
//! makes an accepted request lose records.

mod replicas;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::http::StatusCode;
use axum::http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use sluice_schema::RateLimits;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::Namespace;
use crate::http::Problem;
use crate::principal::Principal;
use crate::token::TokenHash;
use replicas::Heartbeat;
pub use replicas::{HEARTBEAT_INTERVAL, HEARTBEAT_TTL};

/// `RateLimit-Policy`: the policies in force (draft-ietf-httpapi-ratelimit-headers).
pub const RATE_LIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of each policy now.
pub const RATE_LIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Tokens remembered before the idle ones are forgotten.
const TOKENS_BEFORE_PRUNING: usize = 4096;

type Gcra =
    governor::RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The two policies a token may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Requests,
    Records,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Requests => "requests",
            Policy::Records => "records",
        }
    }
}

/// One policy's bucket for one token on this replica.
struct Bucket {
    limit: NonZeroU32,
    replicas: u32,
    gcra: Gcra,
}

impl Bucket {
    /// Refills at `limit / replicas` per second, holding one second of the
    /// whole limit.
    fn new(limit: NonZeroU32, replicas: u32) -> Bucket {
        let period = Duration::from_secs_f64(f64::from(replicas) / f64::from(limit.get()));
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a positive period")
            .allow_burst(limit);
        Bucket {
            limit,
            replicas,
            gcra: governor::RateLimiter::direct(quota).with_middleware(),
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.replicas) / f64::from(self.limit.get()))
    }

    /// Takes `n` cells, or says when they will be there.
    fn take(&self, policy: Policy, n: NonZeroU32) -> Result<PolicyState, Limited> {
        match self.gcra.check_n(n) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                let empty = self.limit.get() - remaining;
                Ok(PolicyState {
                    policy,
                    quota: self.limit.get(),
                    remaining,
                    reset: whole_seconds(self.period() * empty),
                })
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.gcra.clock().now());
                let state = PolicyState {
                    policy,
                    quota: self.limit.get(),
                    remaining: 0,
                    reset: whole_seconds(wait),
                };
                Err(Limited::TooFast { state })
            }
            Err(_insufficient) => Err(Limited::TooLarge {
                records: n.get(),
                state: PolicyState {
                    policy,
                    quota: self.limit.get(),
                    remaining: 0,
                    reset: 0,
                },
            }),
        }
    }
}

/// Seconds, rounded up: a client that waits that long finds room.
fn whole_seconds(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

#[derive(Default)]
struct TokenBuckets {
    requests: Option<Bucket>,
    records: Option<Bucket>,
    used_at: Option<Instant>,
}

impl TokenBuckets {
    fn slot(&mut self, policy: Policy) -> &mut Option<Bucket> {
        match policy {
            Policy::Requests => &mut self.requests,
            Policy::Records => &mut self.records,
        }
    }
}

/// The per-token rate limits of one service (one process's gateway or read
/// API).
pub struct RateLimiter {
    defaults: RateLimits,
    /// Live replicas of this service's kind, this one included (at least 1).
    replicas: Arc<AtomicU32>,
    tokens: Mutex<HashMap<TokenHash, TokenBuckets>>,
    heartbeat_started: AtomicBool,
}

/// What a token's answer tells of its limits: the `RateLimit-Policy` and
/// `RateLimit` headers. Empty for an unlimited token.
#[derive(Debug, Clone, Default)]
pub struct RateLimitHeaders {
    /// Each policy in force, with its state once it was checked.
    policies: Vec<(Policy, u32, Option<PolicyState>)>,
}

#[derive(Debug, Clone, Copy)]
pub struct PolicyState {
    policy: Policy,
    quota: u32,
    remaining: u32,
    /// Seconds until the policy's allowance is whole again.
    reset: u64,
}

/// A request refused by its token's limits.
#[derive(Debug, Clone)]
pub enum Limited {
    /// 429: over the limit now; room again after `state.reset` seconds.
    TooFast { state: PolicyState },
    /// 413: more records in one request than the limit lets through in a
    /// second; no wait would help.
    TooLarge { records: u32, state: PolicyState },
}

/// [`Limited`] with the headers of the answer.
#[derive(Debug, Clone)]
pub struct RateLimited {
    pub why: Limited,
    pub headers: RateLimitHeaders,
}

/// The key a caller's limits are kept under: the SHA-256 of its token,
/// which stays right when a connector has several tokens. `None` for an
/// operator (`SLUICE_ADMIN_TOKEN` or a named operator token), who is never
/// limited.
pub fn limited_token(token: &str, caller: &Principal) -> Option<TokenHash> {
    (!caller.is_operator()).then(|| TokenHash::of(token))
}

impl RateLimiter {
    pub fn new(defaults: RateLimits) -> RateLimiter {
        RateLimiter {
            defaults,
            replicas: Arc::new(AtomicU32::new(1)),
            tokens: Mutex::new(HashMap::new()),
            heartbeat_started: AtomicBool::new(false),
        }
    }

    /// Live replicas sharing the limits, as last counted.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    /// The limits that apply to a connector's tokens: its own, else the
    /// defaults.
    pub fn effective(&self, own: RateLimits) -> RateLimits {
        own.or(self.defaults)
    }

    /// One request of `token` (a connector's, never the operator's) under
    /// `own` limits: counted against its requests per second. The headers
    /// go on the answer, whatever it is.
    pub fn admit_request(
        &self,
        token: &TokenHash,
        own: RateLimits,
    ) -> Result<RateLimitHeaders, RateLimited> {
        let limits = self.effective(own);
        let mut headers = RateLimitHeaders::of(limits);
        if let Some(limit) = limits.requests_per_second {
            let taken = self.take(token, Policy::Requests, limit, NonZeroU32::MIN);
            headers.record(taken.as_ref().map_or_else(Limited::state, |s| *s));
            taken.map_err(|why| RateLimited {
                why,
                headers: headers.clone(),
            })?;
        }
        Ok(headers)
    }

    /// `records` records of an admitted request, counted against its
    /// records per second before they are published.
    pub fn admit_records(
        &self,
        token: &TokenHash,
        own: RateLimits,
        records: usize,
        headers: &mut RateLimitHeaders,
    ) -> Result<(), RateLimited> {
        let Some(limit) = self.effective(own).records_per_second else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(u32::try_from(records).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        let taken = self.take(token, Policy::Records, limit, n);
        headers.record(taken.as_ref().map_or_else(Limited::state, |s| *s));
        taken.map(|_| ()).map_err(|why| RateLimited {
            why,
            headers: headers.clone(),
        })
    }

    fn take(
        &self,
        token: &TokenHash,
        policy: Policy,
        limit: NonZeroU32,
        n: NonZeroU32,
    ) -> Result<PolicyState, Limited> {
        let replicas = self.replicas();
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if !tokens.contains_key(token) && tokens.len() >= TOKENS_BEFORE_PRUNING {
            forget_idle(&mut tokens, now, replicas);
        }
        let buckets = tokens.entry(token.clone()).or_default();
        buckets.used_at = Some(now);
        let slot = buckets.slot(policy);
        // A new limit, or a new number of replicas, starts a new bucket.
        if !slot
            .as_ref()
            .is_some_and(|b| b.limit == limit && b.replicas == replicas)
        {
            *slot = Some(Bucket::new(limit, replicas));
        }
        let taken = slot.as_ref().expect("just set").take(policy, n);
        if taken.is_err() {
            metrics::counter!("sluice_rate_limited_total", "policy" => policy.name()).increment(1);
        }
        taken
    }

    /// Registers this replica in the replicas bucket (made with
    /// `stream_replicas` copies if missing) and counts those of its `role`
    /// (`ingest`, `read`); then, once, keeps its heartbeat and count
    /// current in the background until `shutdown`. Part of a service's
    /// start-up on NATS, so a replica counts itself before it serves.
    pub async fn join_replicas(
        self: &Arc<Self>,
        js: &jetstream::Context,
        namespace: &Namespace,
        stream_replicas: usize,
        role: &'static str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        if self.heartbeat_started.load(Ordering::SeqCst) {
            return Ok(());
        }
        let bucket = replicas::replicas_bucket(js, namespace, stream_replicas).await?;
        let heartbeat = Heartbeat {
            bucket,
            key: format!("{role}.{}", Uuid::now_v7().simple()),
            prefix: format!("{role}."),
            role,
            replicas: Arc::clone(&self.replicas),
        };
        // Watching before the first beat: a replica that joins at the same
        // time is seen by one of the two counts.
        let watch = heartbeat.watch().await?;
        heartbeat.beat().await?;
        if !self.heartbeat_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(heartbeat.run(Some(watch), shutdown));
        }
        Ok(())
    }
}

/// Forgets tokens unused long enough for their buckets to be whole again:
/// a bucket made anew is the same.
fn forget_idle(tokens: &mut HashMap<TokenHash, TokenBuckets>, now: Instant, replicas: u32) {
    let refilled = Duration::from_secs(u64::from(replicas) + 1);
    tokens.retain(|_, buckets| {
        buckets
            .used_at
            .is_some_and(|at| now.saturating_duration_since(at) < refilled)
    });
}

impl Limited {
    fn state(&self) -> PolicyState {
        match self {
            Limited::TooFast { state } | Limited::TooLarge { state, .. } => *state,
        }
    }
}

impl RateLimitHeaders {
    /// Every policy `limits` sets, none checked yet.
    fn of(limits: RateLimits) -> RateLimitHeaders {
        let policies = [
            (Policy::Requests, limits.requests_per_second),
            (Policy::Records, limits.records_per_second),
        ]
        .into_iter()
        .filter_map(|(policy, limit)| limit.map(|l| (policy, l.get(), None)))
        .collect();
        RateLimitHeaders { policies }
    }

    fn record(&mut self, state: PolicyState) {
        if let Some(entry) = self.policies.iter_mut().find(|(p, ..)| *p == state.policy) {
            entry.2 = Some(state);
        }
    }

    /// `RateLimit-Policy: "requests";q=10;w=1, "records";q=1000;qu="records";w=1`
    /// and `RateLimit: "requests";r=7;t=1, …` for the policies checked.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.policies.is_empty() {
            return;
        }
        let policies: Vec<String> = self
            .policies
            .iter()
            .map(|(policy, quota, _)| match policy {
                Policy::Requests => format!("\"{}\";q={quota};w=1", policy.name()),
                Policy::Records => format!("\"{}\";q={quota};qu=\"records\";w=1", policy.name()),
            })
            .collect();
        let states: Vec<String> = self
            .policies
            .iter()
            .filter_map(|(_, _, state)| *state)
            .map(|s| format!("\"{}\";r={};t={}", s.policy.name(), s.remaining, s.reset))
            .collect();
        if let Ok(value) = HeaderValue::from_str(&policies.join(", ")) {
            headers.insert(RATE_LIMIT_POLICY, value);
        }
        if !states.is_empty()
            && let Ok(value) = HeaderValue::from_str(&states.join(", "))
        {
            headers.insert(RATE_LIMIT, value);
        }
    }

    /// `response` with these headers.
    pub fn on(&self, mut response: Response) -> Response {
        self.apply(response.headers_mut());
        response
    }
}

impl From<RateLimited> for Problem {
    fn from(limited: RateLimited) -> Problem {
        let mut problem = match limited.why {
            Limited::TooFast { state } => {
                let secs = state.reset.max(1);
                let what = match state.policy {
                    Policy::Requests => "requests",
                    Policy::Records => "records",
                };
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "this token may send {} {what} per second; retry in {secs} s",
                        state.quota
                    ),
                )
                .with("policy", state.policy.name())
                .with_header(RETRY_AFTER, HeaderValue::from(secs))
            }
            Limited::TooLarge { records, state } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "exceeds_records_limit",
                format!(
                    "this request holds {records} records, more than this token may send in a \
                     second ({}); send smaller requests",
                    state.quota
                ),
            )
            .with("policy", state.policy.name()),
        };
        let mut headers = HeaderMap::new();
        limited.headers.apply(&mut headers);
        for (name, value) in headers {
            if let Some(name) = name {
                problem = problem.with_header(name, value);
            }
        }
        problem
    }
}

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: Option<u32>, records: Option<u32>) -> RateLimits {
        RateLimits {
            requests_per_second: requests.and_then(NonZeroU32::new),
            records_per_second: records.and_then(NonZeroU32::new),
        }
    }

    fn header(headers: &HeaderMap, name: HeaderName) -> Option<String> {
        headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn an_unlimited_token_gets_no_headers() {
        let limiter = RateLimiter::new(RateLimits::default());
        let token = TokenHash::of("sluice_w_a");
        for _ in 0..1000 {
            let admitted = limiter
                .admit_request(&token, RateLimits::default())
                .unwrap();
            let mut headers = HeaderMap::new();
            admitted.apply(&mut headers);
            assert!(headers.is_empty());
        }
    }

    #[test]
    fn a_second_of_requests_passes_then_429_with_headers() {
        let limiter = RateLimiter::new(RateLimits::default());
        let token = TokenHash::of("sluice_w_a");
        let own = limits(Some(5), None);
        for left in (0..5).rev() {
            let admitted = limiter.admit_request(&token, own).unwrap();
            let mut headers = HeaderMap::new();
            admitted.apply(&mut headers);
            assert_eq!(
                header(&headers, RATE_LIMIT_POLICY).unwrap(),
                "\"requests\";q=5;w=1"
            );
            let state = header(&headers, RATE_LIMIT).unwrap();
            assert!(
                state.starts_with(&format!("\"requests\";r={left};t=")),
                "{state}"
            );
        }
        let refused = limiter.admit_request(&token, own).unwrap_err();
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(header(headers, RETRY_AFTER).unwrap(), "1");
        assert_eq!(header(headers, RATE_LIMIT).unwrap(), "\"requests\";r=0;t=1");
        // Another token of the same connector has its own allowance.
        assert!(
            limiter
                .admit_request(&TokenHash::of("sluice_w_b"), own)
                .is_ok()
        );
    }

    #[test]
    fn records_are_weighed_and_a_request_beyond_a_second_is_413() {
        let limiter = RateLimiter::new(limits(None, Some(100)));
        let token = TokenHash::of("sluice_w_a");
        let own = RateLimits::default();
        let mut headers = limiter.admit_request(&token, own).unwrap();
        limiter
            .admit_records(&token, own, 60, &mut headers)
            .unwrap();
        let mut map = HeaderMap::new();
        headers.apply(&mut map);
        assert_eq!(
            header(&map, RATE_LIMIT_POLICY).unwrap(),
            "\"records\";q=100;qu=\"records\";w=1"
        );
        assert!(
            header(&map, RATE_LIMIT)
                .unwrap()
                .starts_with("\"records\";r=40;")
        );
        let refused = limiter
            .admit_records(&token, own, 41, &mut headers)
            .unwrap_err();
        assert!(matches!(refused.why, Limited::TooFast { .. }));
        limiter
            .admit_records(&token, own, 40, &mut headers)
            .unwrap();
        let too_large = limiter
            .admit_records(&TokenHash::of("sluice_w_b"), own, 101, &mut headers)
            .unwrap_err();
        assert_eq!(
            too_large.into_response().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // No records, nothing counted.
        limiter.admit_records(&token, own, 0, &mut headers).unwrap();
    }

    #[test]
    fn a_connector_limit_overrides_the_default() {
        let limiter = RateLimiter::new(limits(Some(1), None));
        let token = TokenHash::of("sluice_w_a");
        let own = limits(Some(3), None);
        for _ in 0..3 {
            limiter.admit_request(&token, own).unwrap();
        }
        assert!(limiter.admit_request(&token, own).is_err());
    }
}
