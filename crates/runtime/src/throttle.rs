//! Throttling of failed authentication per client address, the same in
//! every service.
//!
//! A request whose token is missing, malformed or unknown is a failure. An
//! address may fail `SLUICE_AUTH_FAILURE_LIMIT` times in a burst and earns one
//! more attempt every `SLUICE_AUTH_FAILURE_WINDOW_SECS / limit` (a token
//! bucket); past that, its failing requests are answered 429
//! `too_many_failed_attempts` with `Retry-After`, before any lookup that
//! costs more than memory (the gateway's bucket read, for instance).
//!
//! Only failures are throttled. Every service checks a token in memory first
//! (the operator's by constant-time comparison, a connector's in the
//! catalog), so a valid token keeps working from a throttled address: a
//! guesser behind the same NAT or proxy cannot lock a producer out.
//!
//! The table of addresses is bounded (`SLUICE_AUTH_THROTTLE_ADDRESSES`), so
//! traffic from many addresses costs at most that many entries.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header::{HeaderValue, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::http::Problem;
use crate::settings::AuthThrottleSettings;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Failed authentications per client address, for one service.
pub struct AuthThrottle {
    /// Failures an address may make in a burst: the bucket's size.
    burst: f64,
    /// Failures forgiven per second: the bucket's refill.
    refill_per_sec: f64,
    max_addresses: usize,
    trusted_proxies: Vec<IpNet>,
    table: Mutex<HashMap<IpAddr, Allowance>>,
}

/// What is left of an address's bucket, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: f64,
    at: Instant,
}

/// The answer to a failure from an address that has failed too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed authentication attempts; retry in {retry_after_secs} s")]
pub struct TooManyFailedAttempts {
    pub retry_after_secs: u64,
}

impl From<TooManyFailedAttempts> for Problem {
    fn from(throttled: TooManyFailedAttempts) -> Problem {
        let secs = throttled.retry_after_secs;
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_attempts",
            format!(
                "too many requests from this address had a missing or unknown token; \
                 retry in {secs} s with a valid token"
            ),
        )
        .with_header(RETRY_AFTER, HeaderValue::from(secs))
    }
}

impl IntoResponse for TooManyFailedAttempts {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl AuthThrottle {
    pub fn new(settings: &AuthThrottleSettings) -> AuthThrottle {
        let burst = f64::from(settings.failures);
        AuthThrottle {
            burst,
            refill_per_sec: burst / settings.window.as_secs_f64(),
            max_addresses: settings.max_addresses,
            trusted_proxies: settings.trusted_proxies.clone(),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Whom a request from `peer` comes from. The peer itself, unless it is
    /// a trusted proxy: then `X-Forwarded-For` is read from the right (each
    /// proxy appends the address it was called from), and the first address
    /// that is not a trusted proxy is the client. Anything to its left was
    /// written by the client and proves nothing.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let values: Vec<Option<&str>> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(|v| v.to_str().ok())
            .collect();
        let mut client = peer;
        for hops in values.into_iter().rev() {
            // A value that is not text cannot be read past: stop at the last
            // address known good.
            let Some(hops) = hops else { return client };
            for hop in hops.rsplit(',') {
                let Some(address) = parse_hop(hop.trim()) else {
                    return client;
                };
                client = address;
                if !self.is_trusted(address) {
                    return client;
                }
            }
        }
        client
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }

    /// `Err` while `address` has no failure left to spend.
    #[cfg(test)]
    fn check(&self, address: IpAddr, now: Instant) -> Result<(), TooManyFailedAttempts> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(&bucket_key(address)) {
            Some(allowance) => self.spendable(self.refilled(*allowance, now)),
            None => Ok(()),
        }
    }

    /// Counts one failure of `address`.
    #[cfg(test)]
    fn record_failure(&self, address: IpAddr, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        self.spend(&mut table, address, now);
    }

    /// A failure of `address`: `Err` if it has none left to spend, else it
    /// is counted. One step under the lock, so that requests failing at
    /// the same time cannot all pass a check made before any is counted.
    pub fn fail(&self, address: IpAddr, now: Instant) -> Result<(), TooManyFailedAttempts> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(allowance) = table.get(&bucket_key(address)) {
            self.spendable(self.refilled(*allowance, now))?;
        }
        self.spend(&mut table, address, now);
        Ok(())
    }

    /// Gives back a failure counted by [`AuthThrottle::fail`] that proved
    /// not to be one.
    pub fn forgive(&self, address: IpAddr, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(allowance) = table.get_mut(&bucket_key(address)) {
            *allowance = Allowance {
                left: (self.refilled(*allowance, now) + 1.0).min(self.burst),
                at: now,
            };
        }
    }

    fn spendable(&self, left: f64) -> Result<(), TooManyFailedAttempts> {
        if left >= 1.0 {
            return Ok(());
        }
        // Less a microsecond, so that float rounding cannot add a second.
        let wait = (1.0 - left) / self.refill_per_sec - 1e-6;
        Err(TooManyFailedAttempts {
            retry_after_secs: (wait.ceil() as u64).max(1),
        })
    }

    fn spend(&self, table: &mut HashMap<IpAddr, Allowance>, address: IpAddr, now: Instant) {
        let key = bucket_key(address);
        if !table.contains_key(&key) && table.len() >= self.max_addresses {
            self.make_room(table, now);
        }
        let allowance = table.entry(key).or_insert(Allowance {
            left: self.burst,
            at: now,
        });
        let before = self.refilled(*allowance, now);
        *allowance = Allowance {
            left: (before - 1.0).max(0.0),
            at: now,
        };
        metrics::counter!("sluice_auth_failures_total").increment(1);
        if before >= 1.0 && allowance.left < 1.0 {
            tracing::warn!(client = %key, "throttling failed authentication from this address");
        }
    }

    fn refilled(&self, allowance: Allowance, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(allowance.at).as_secs_f64();
        (allowance.left + elapsed * self.refill_per_sec).min(self.burst)
    }

    /// Shrinks a full table to three quarters of its size, so that the scan
    /// is paid once per quarter of new addresses, not once per address.
    /// Addresses whose bucket has refilled go first (they are as good as
    /// new); then those with the most failures left, keeping the addresses
    /// that are throttled or close to it.
    fn make_room(&self, table: &mut HashMap<IpAddr, Allowance>, now: Instant) {
        let keep = self.max_addresses * 3 / 4;
        table.retain(|_, allowance| self.refilled(*allowance, now) < self.burst);
        if table.len() <= keep {
            return;
        }
        let excess = table.len() - keep;
        let mut by_left: Vec<(f64, IpAddr)> = table
            .iter()
            .map(|(address, allowance)| (self.refilled(*allowance, now), *address))
            .collect();
        by_left.select_nth_unstable_by(excess - 1, |a, b| b.0.total_cmp(&a.0));
        for (_, address) in &by_left[..excess] {
            table.remove(address);
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

/// An address as the throttle counts it. An IPv6 host usually holds a whole
/// /64, so the /64 is one client; an IPv4-mapped IPv6 address is its IPv4
/// address.
fn bucket_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
}

/// The throttle's view of one request: its service's table and the client
/// address. Services whose state holds an `Arc<AuthThrottle>` take it as
/// an extractor next to the bearer token.
///
/// The address comes from the connection (`ConnectInfo`, which `serve`
/// records); a router served without it throttles nothing.
pub struct AuthAttempt {
    throttle: Arc<AuthThrottle>,
    address: Option<IpAddr>,
}

impl<S> FromRequestParts<S> for AuthAttempt
where
    Arc<AuthThrottle>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let throttle = Arc::<AuthThrottle>::from_ref(state);
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| throttle.client_address(peer.ip(), &parts.headers));
        Ok(AuthAttempt { throttle, address })
    }
}

impl AuthAttempt {
    /// The request failed authentication in memory: `Err` (429) if this
    /// client is throttled, else the failure is counted and the caller
    /// answers 401 (or, first, looks further: see [`AuthAttempt::forgive`]).
    pub fn fail(&self) -> Result<(), TooManyFailedAttempts> {
        match self.address {
            Some(address) => self
                .throttle
                .fail(address, Instant::now())
                .inspect_err(|_| {
                    metrics::counter!("sluice_auth_throttled_total").increment(1);
                }),
            None => Ok(()),
        }
    }

    /// A failure counted by [`AuthAttempt::fail`] proved valid after all
    /// (found by a costlier lookup than memory): it is given back.
    pub fn forgive(&self) {
        if let Some(address) = self.address {
            self.throttle.forgive(address, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn throttle(failures: u32, window_secs: u64, max_addresses: usize) -> AuthThrottle {
        AuthThrottle::new(&AuthThrottleSettings {
            failures,
            window: Duration::from_secs(window_secs),
            max_addresses,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_throttled_after_its_burst_and_forgiven_at_the_refill_rate() {
        let throttle = throttle(3, 60, 100);
        let now = Instant::now();
        let guesser = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(throttle.check(guesser, now), Ok(()));
            throttle.record_failure(guesser, now);
        }
        // One failure is forgiven every 20 s.
        assert_eq!(
            throttle.check(guesser, now),
            Err(TooManyFailedAttempts {
                retry_after_secs: 20
            })
        );
        assert_eq!(
            throttle.check(guesser, now + Duration::from_secs(15)),
            Err(TooManyFailedAttempts {
                retry_after_secs: 5
            })
        );
        assert_eq!(
            throttle.check(guesser, now + Duration::from_secs(21)),
            Ok(())
        );
        // Another address is not concerned.
        assert_eq!(throttle.check(ip("192.0.2.2"), now), Ok(()));
    }

    /// The gateway fails a request before it reads the bucket: requests
    /// sent at once must not all pass a check made before any is counted.
    #[test]
    fn failures_at_the_same_time_spend_the_burst_once() {
        let throttle = Arc::new(throttle(20, 60, 100));
        let now = Instant::now();
        let passed: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    let throttle = &throttle;
                    scope.spawn(move || {
                        (0..10)
                            .filter(|_| throttle.fail(ip("192.0.2.1"), now).is_ok())
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(passed, 20);
        throttle.forgive(ip("192.0.2.1"), now);
        assert_eq!(throttle.fail(ip("192.0.2.1"), now), Ok(()));
        assert!(throttle.fail(ip("192.0.2.1"), now).is_err());
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_client() {
        let throttle = throttle(2, 60, 100);
        let now = Instant::now();
        throttle.record_failure(ip("2001:db8:1:2::1"), now);
        throttle.record_failure(ip("2001:db8:1:2:ffff::9"), now);
        assert!(throttle.check(ip("2001:db8:1:2::77"), now).is_err());
        assert!(throttle.check(ip("2001:db8:1:3::1"), now).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        throttle.record_failure(ip("::ffff:192.0.2.9"), now);
        throttle.record_failure(ip("192.0.2.9"), now);
        assert!(throttle.check(ip("192.0.2.9"), now).is_err());
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_throttled_addresses() {
        let throttle = throttle(2, 60, 1_000);
        let now = Instant::now();
        let guesser = ip("198.51.100.7");
        throttle.record_failure(guesser, now);
        throttle.record_failure(guesser, now);
        // A hundred thousand addresses failing once each, as a spread-out
        // attacker (or a flood of IPv6 /64s) would.
        for n in 0..100_000u32 {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            throttle.record_failure(address, now);
            assert!(throttle.remembered() <= 1_000);
        }
        assert!(
            throttle.check(guesser, now).is_err(),
            "the throttled address outlives the addresses that failed once"
        );
    }

    #[test]
    fn addresses_whose_bucket_refilled_make_room_first() {
        let throttle = throttle(2, 60, 4);
        let now = Instant::now();
        for n in 1..=4 {
            throttle.record_failure(ip(&format!("192.0.2.{n}")), now);
        }
        assert_eq!(throttle.remembered(), 4);
        let later = now + Duration::from_secs(3_600);
        throttle.record_failure(ip("203.0.113.1"), later);
        assert_eq!(throttle.remembered(), 1);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let throttle = throttle(20, 60, 100);
        let headers = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for value in values {
                map.append(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        let spoofed = headers(&["203.0.113.9"]);
        // From anyone else, the header is the client's own word.
        assert_eq!(
            throttle.client_address(ip("192.0.2.1"), &spoofed),
            ip("192.0.2.1")
        );
        // From the proxy: the rightmost address that is not a proxy.
        assert_eq!(
            throttle.client_address(ip("10.1.2.3"), &spoofed),
            ip("203.0.113.9")
        );
        let chained = headers(&["198.51.100.1, 203.0.113.9", "10.9.9.9"]);
        assert_eq!(
            throttle.client_address(ip("10.1.2.3"), &chained),
            ip("203.0.113.9")
        );
        assert_eq!(
            throttle.client_address(ip("::1"), &headers(&["[2001:db8::5]:4711"])),
            ip("2001:db8::5")
        );
        // Nothing readable: the proxy is all that is known.
        assert_eq!(
            throttle.client_address(ip("10.1.2.3"), &headers(&["unknown"])),
            ip("10.1.2.3")
        );
        assert_eq!(
            throttle.client_address(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
    }
}
