//! Configuration from environment variables (SPEC section 1). Every service
//! reads the same names and ignores those it does not need.

use std::net::SocketAddr;
use std::time::Duration;

use std::num::NonZeroU32;

use ipnet::IpNet;
use secrecy::SecretString;
use sluice_schema::RateLimits;

use crate::bus::Namespace;

#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub reason: String,
}

/// Checked configuration. The admin token is a [`SecretString`], and the
/// passwords and tokens inside `NATS_URL` and `DATABASE_URL` are redacted
/// by `Debug` (see [`redact_url`]), so no secret reaches a log line.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// One NATS URL, or several separated by commas: the nodes of a
    /// cluster, any of which the client may use (see [`nats_servers`]).
    pub nats_url: String,
    pub database_url: String,
    /// `DATABASE_READ_URL`: a streaming replica of `database_url` that the
    /// read API's GET routes read from; `None`: they read the primary.
    pub database_read_url: Option<String>,
    pub namespace: Namespace,
    pub admin_token: Option<SecretString>,
    pub public_url: String,
    pub max_body_bytes: usize,
    /// Size limit of the records stream (`SLUICE_STREAM_MAX_BYTES`, default
    /// [`DEFAULT_STREAM_MAX_BYTES`]); when it is full, ingest answers 503
    /// `stream_full`. `None` (`unlimited`): limited only by the server.
    pub stream_max_bytes: Option<i64>,
    /// Copies JetStream keeps of every stream and bucket the services make
    /// (`SLUICE_STREAM_REPLICAS`, 1 to 5, default 1); 3 in a cluster of
    /// three, to ride through the loss of any one node.
    pub stream_replicas: usize,
    pub http: HttpLimits,
    /// How failed authentication is throttled per client address.
    pub auth_throttle: AuthThrottleSettings,
    /// Memory the ingest gateway lets requests hold in all
    /// (`SLUICE_INGEST_MEMORY_BYTES`): bodies, validation, messages.
    pub ingest_memory_bytes: usize,
    /// How much time each partition of a records table covers
    /// (`SLUICE_PARTITION_SPAN`, default one day): whole seconds.
    pub partition_span: Duration,
    /// How often the read API premakes partitions and applies retention
    /// (`SLUICE_MAINTENANCE_INTERVAL`, default 60 s).
    pub maintenance_interval: Duration,
    /// How often each service reports when tokens were last used
    /// (`SLUICE_TOKEN_USE_INTERVAL`, default 60 s): `last_used_at` trails
    /// a use by at most this.
    pub token_use_interval: Duration,
    /// Rate limits of a connector's tokens where the connector sets none
    /// (`SLUICE_DEFAULT_REQUESTS_PER_SECOND`,
    /// `SLUICE_DEFAULT_RECORDS_PER_SECOND`); unset: unlimited.
    pub default_limits: RateLimits,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Taken apart, so that a new field cannot be left out unnoticed.
        let Settings {
            listen,
            nats_url,
            database_url,
            database_read_url,
            namespace,
            admin_token,
            public_url,
            max_body_bytes,
            stream_max_bytes,
            stream_replicas,
            http,
            auth_throttle,
            ingest_memory_bytes,
            partition_span,
            maintenance_interval,
            token_use_interval,
            default_limits,
        } = self;
        f.debug_struct("Settings")
            .field("listen", listen)
            .field("nats_url", &redact_url(nats_url))
            .field("database_url", &redact_url(database_url))
            .field(
                "database_read_url",
                &database_read_url.as_deref().map(redact_url),
            )
            .field("namespace", namespace)
            .field("admin_token", admin_token)
            .field("public_url", public_url)
            .field("max_body_bytes", max_body_bytes)
            .field("stream_max_bytes", stream_max_bytes)
            .field("stream_replicas", stream_replicas)
            .field("http", http)
            .field("auth_throttle", auth_throttle)
            .field("ingest_memory_bytes", ingest_memory_bytes)
            .field("partition_span", partition_span)
            .field("maintenance_interval", maintenance_interval)
            .field("token_use_interval", token_use_interval)
            .field("default_limits", default_limits)
            .finish()
    }
}

/// The records stream's default size limit: 1 GiB. A backlog at the store's
/// full rate fills it in minutes, an ordinary load in hours, and a small
/// disk holds it; JetStream reserves it on the NATS server's disk when the
/// stream is made.
pub const DEFAULT_STREAM_MAX_BYTES: i64 = 1024 * 1024 * 1024;

/// What replaces a secret in [`redact_url`]'s output.
const REDACTED: &str = "[REDACTED]";

/// `url` fit for a log line: the password of `user:password@`, a NATS
/// token (`nats://token@host`) and a `password=` query parameter are
/// replaced, the rest (hosts, ports, user names) kept. A comma-separated
/// list of NATS servers is redacted server by server.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
            // PostgreSQL reads a lone user name there; NATS a token.
            None if scheme.starts_with("postgres") => authority.to_owned(),
            None => format!("{REDACTED}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}={REDACTED}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}{authority}{tail}")
}

/// What one client may hold of a listener, and for how long. Every listener
/// applies them (see `http::serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `SLUICE_HTTP_HEADER_TIMEOUT_SECS`: time for a request's line and
    /// headers to arrive whole. hyper starts it as soon as a connection waits
    /// for a request, so it is also the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// `SLUICE_HTTP_BODY_TIMEOUT_SECS`: time for a whole request body to
    /// arrive, counted from the service's first read of it.
    pub body_timeout: Duration,
    /// `SLUICE_HTTP_MAX_CONNECTIONS`: connections served at once; further
    /// ones wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    /// Ten seconds is ample for headers over any link that can use the
    /// service; sixty for a body lets a 16 MiB body through at about
    /// 2.3 Mbit/s and cuts off a client that trickles. A thousand
    /// connections bound hyper's buffers to about 64 MiB.
    fn default() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

impl Settings {
    pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
    pub const DEFAULT_INGEST_MEMORY_BYTES: usize = 128 * 1024 * 1024;
    pub const DEFAULT_PARTITION_SPAN: Duration = Duration::from_secs(86_400);
    pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
    pub const DEFAULT_TOKEN_USE_INTERVAL: Duration = Duration::from_secs(60);

    /// Reads the process environment; `default_listen` is the service's own.
    pub fn from_env(default_listen: &str) -> Result<Settings, SettingsError> {
        Settings::from_lookup(default_listen, |name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process
    /// environment.
    pub fn from_lookup(
        default_listen: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let get = |name: &str, default: &str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let listen = get("SLUICE_LISTEN", default_listen);
        let listen = listen.parse().map_err(|e| SettingsError {
            variable: "SLUICE_LISTEN",
            reason: format!("{listen:?} is not an address like 0.0.0.0:8080 ({e})"),
        })?;
        let namespace =
            Namespace::new(&get("SLUICE_NAMESPACE", "sluice")).map_err(|reason| SettingsError {
                variable: "SLUICE_NAMESPACE",
                reason,
            })?;
        let max_body = get(
            "SLUICE_MAX_BODY_BYTES",
            &Self::DEFAULT_MAX_BODY_BYTES.to_string(),
        );
        let max_body_bytes = match max_body.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(SettingsError {
                    variable: "SLUICE_MAX_BODY_BYTES",
                    reason: format!("{max_body:?} is not a positive number of bytes"),
                });
            }
        };
        let stream_max_bytes = match lookup("SLUICE_STREAM_MAX_BYTES").filter(|v| !v.is_empty()) {
            None => Some(DEFAULT_STREAM_MAX_BYTES),
            Some(v) if v == "unlimited" => None,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(SettingsError {
                        variable: "SLUICE_STREAM_MAX_BYTES",
                        reason: format!(
                            "{v:?} is not a positive number of bytes, nor \"unlimited\""
                        ),
                    });
                }
            },
        };
        let stream_replicas = stream_replicas(&lookup)?;
        let nats_url = get("NATS_URL", "nats://127.0.0.1:4222");
        check_nats_servers(&nats_url)?;
        let defaults = HttpLimits::default();
        let positive = |variable: &'static str, default: u64, unit: &str| {
            let value = get(variable, &default.to_string());
            match value.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(SettingsError {
                    variable,
                    reason: format!("{value:?} is not a positive number of {unit}"),
                }),
            }
        };
        let http = HttpLimits {
            header_timeout: Duration::from_secs(positive(
                "SLUICE_HTTP_HEADER_TIMEOUT_SECS",
                defaults.header_timeout.as_secs(),
                "seconds",
            )?),
            body_timeout: Duration::from_secs(positive(
                "SLUICE_HTTP_BODY_TIMEOUT_SECS",
                defaults.body_timeout.as_secs(),
                "seconds",
            )?),
            max_connections: positive(
                "SLUICE_HTTP_MAX_CONNECTIONS",
                defaults.max_connections as u64,
                "connections",
            )? as usize,
        };
        let memory = get(
            "SLUICE_INGEST_MEMORY_BYTES",
            &Self::DEFAULT_INGEST_MEMORY_BYTES.to_string(),
        );
        // One connector may hold half of it, and a gzip body takes its
        // compressed and inflated forms at once: a body of the largest size
        // must fit in a connector's half twice over.
        let ingest_memory_bytes = match memory.parse::<usize>() {
            Ok(n) if n / 4 >= max_body_bytes => n,
            _ => {
                return Err(SettingsError {
                    variable: "SLUICE_INGEST_MEMORY_BYTES",
                    reason: format!(
                        "{memory:?} is not a number of bytes of at least 4 times \
                         SLUICE_MAX_BODY_BYTES ({max_body_bytes})"
                    ),
                });
            }
        };
        let public_url = get("SLUICE_PUBLIC_URL", "http://localhost:8080");
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(SettingsError {
                variable: "SLUICE_PUBLIC_URL",
                reason: format!("{public_url:?} must start with http:// or https://"),
            });
        }
        let duration = |variable: &'static str, default: Duration| {
            let Some(text) = lookup(variable).filter(|v| !v.is_empty()) else {
                return Ok(default);
            };
            sluice_schema::parse_duration(text.trim())
                .map_err(|reason| SettingsError { variable, reason })
        };
        let partition_span = duration("SLUICE_PARTITION_SPAN", Self::DEFAULT_PARTITION_SPAN)?;
        if partition_span.subsec_nanos() != 0 {
            return Err(SettingsError {
                variable: "SLUICE_PARTITION_SPAN",
                reason: "a partition span is a whole number of seconds".to_owned(),
            });
        }
        let maintenance_interval = duration(
            "SLUICE_MAINTENANCE_INTERVAL",
            Self::DEFAULT_MAINTENANCE_INTERVAL,
        )?;
        let token_use_interval = duration(
            "SLUICE_TOKEN_USE_INTERVAL",
            Self::DEFAULT_TOKEN_USE_INTERVAL,
        )?;
        Ok(Settings {
            listen,
            nats_url,
            database_url: get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sluice"),
            database_read_url: lookup("DATABASE_READ_URL").filter(|v| !v.is_empty()),
            namespace,
            admin_token: lookup("SLUICE_ADMIN_TOKEN")
                .filter(|v| !v.is_empty())
                .map(SecretString::from),
            public_url: public_url.trim_end_matches('/').to_owned(),
            max_body_bytes,
            stream_max_bytes,
            stream_replicas,
            http,
            auth_throttle: AuthThrottleSettings::from_lookup(&lookup)?,
            ingest_memory_bytes,
            partition_span,
            maintenance_interval,
            token_use_interval,
            default_limits: RateLimits {
                requests_per_second: default_limit(&lookup, "SLUICE_DEFAULT_REQUESTS_PER_SECOND")?,
                records_per_second: default_limit(&lookup, "SLUICE_DEFAULT_RECORDS_PER_SECOND")?,
            },
        })
    }
}

/// JetStream keeps at most five copies of a stream.
const MAX_STREAM_REPLICAS: usize = 5;

/// `SLUICE_STREAM_REPLICAS`: 1 to [`MAX_STREAM_REPLICAS`], default 1.
fn stream_replicas(lookup: &impl Fn(&str) -> Option<String>) -> Result<usize, SettingsError> {
    let replicas = positive(lookup, "SLUICE_STREAM_REPLICAS", 1usize)?;
    if replicas > MAX_STREAM_REPLICAS {
        return Err(SettingsError {
            variable: "SLUICE_STREAM_REPLICAS",
            reason: format!(
                "{replicas} copies: JetStream keeps 1 to {MAX_STREAM_REPLICAS} (3 in a cluster of three nodes)"
            ),
        });
    }
    Ok(replicas)
}

/// The servers of a `NATS_URL`: one URL, or several separated by commas
/// (the nodes of a cluster). The client connects to any of them and moves
/// to another when its node goes away.
pub fn nats_servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect()
}

/// Every server of `NATS_URL` is a URL the NATS client takes.
fn check_nats_servers(url: &str) -> Result<(), SettingsError> {
    let servers = nats_servers(url);
    if servers.is_empty() {
        return Err(SettingsError {
            variable: "NATS_URL",
            reason: "no server given".to_owned(),
        });
    }
    for server in servers {
        if let Err(error) = server.parse::<async_nats::ServerAddr>() {
            return Err(SettingsError {
                variable: "NATS_URL",
                reason: format!(
                    "{:?} is not a NATS URL like nats://host:4222 ({error}); separate several with commas",
                    redact_url(server)
                ),
            });
        }
    }
    Ok(())
}

/// A default rate limit: a whole number from 1 to [`RateLimits::MAX`];
/// unset, empty or `unlimited`: none.
fn default_limit(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<Option<NonZeroU32>, SettingsError> {
    let Some(value) = lookup(variable).filter(|v| !v.is_empty() && v != "unlimited") else {
        return Ok(None);
    };
    value
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| RateLimits::check("default", n).ok())
        .map(Some)
        .ok_or_else(|| SettingsError {
            variable,
            reason: format!(
                "{value:?} is not a whole number from 1 to {}, nor \"unlimited\"",
                RateLimits::MAX
            ),
        })
}

/// Throttling of failed authentication (`crate::throttle`): each client
/// address may fail `failures` times in a burst, and earns one more attempt
/// every `window / failures`.
#[derive(Debug, Clone)]
pub struct AuthThrottleSettings {
    /// `SLUICE_AUTH_FAILURE_LIMIT`.
    pub failures: u32,
    /// `SLUICE_AUTH_FAILURE_WINDOW_SECS`.
    pub window: Duration,
    /// `SLUICE_AUTH_THROTTLE_ADDRESSES`: the most addresses remembered.
    pub max_addresses: usize,
    /// `SLUICE_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the
    /// client. Empty: the peer is the client.
    pub trusted_proxies: Vec<IpNet>,
}

impl AuthThrottleSettings {
    pub const DEFAULT_FAILURES: u32 = 20;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
    pub const DEFAULT_MAX_ADDRESSES: usize = 65_536;

    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let window_secs: u64 = positive(
            lookup,
            "SLUICE_AUTH_FAILURE_WINDOW_SECS",
            Self::DEFAULT_WINDOW.as_secs(),
        )?;
        let trusted_proxies = match lookup("SLUICE_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(parse_network)
                .collect::<Result<_, _>>()?,
        };
        Ok(AuthThrottleSettings {
            failures: positive(lookup, "SLUICE_AUTH_FAILURE_LIMIT", Self::DEFAULT_FAILURES)?,
            window: Duration::from_secs(window_secs),
            max_addresses: positive(
                lookup,
                "SLUICE_AUTH_THROTTLE_ADDRESSES",
                Self::DEFAULT_MAX_ADDRESSES,
            )?,
            trusted_proxies,
        })
    }
}

/// A positive whole number from `variable`, or `default` when it is unset.
fn positive<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
) -> Result<T, SettingsError>
where
    T: std::str::FromStr + PartialOrd + Default,
{
    let Some(value) = lookup(variable).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match value.trim().parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(SettingsError {
            variable,
            reason: format!("{value:?} is not a positive whole number"),
        }),
    }
}

/// `10.0.0.0/8`, or a single address (`192.0.2.7`, `::1`).
fn parse_network(item: &str) -> Result<IpNet, SettingsError> {
    item.parse::<IpNet>()
        .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| SettingsError {
            variable: "SLUICE_TRUSTED_PROXIES",
            reason: format!(
                "{item:?} is not an address or a network like 10.0.0.0/8 (separate several with commas)"
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rate_limits_are_positive_numbers_or_unlimited() {
        let with = |variable: &'static str, value: &'static str| {
            Settings::from_lookup("0.0.0.0:8081", move |n| {
                (n == variable).then(|| value.to_owned())
            })
        };
        let s = with("SLUICE_DEFAULT_REQUESTS_PER_SECOND", "50").unwrap();
        assert_eq!(
            s.default_limits.requests_per_second.map(|n| n.get()),
            Some(50)
        );
        assert_eq!(s.default_limits.records_per_second, None);
        let s = with("SLUICE_DEFAULT_RECORDS_PER_SECOND", "unlimited").unwrap();
        assert!(s.default_limits.is_unset());
        for variable in [
            "SLUICE_DEFAULT_REQUESTS_PER_SECOND",
            "SLUICE_DEFAULT_RECORDS_PER_SECOND",
        ] {
            for bad in ["0", "-3", "1.5", "lots", "1000000001"] {
                assert_eq!(with(variable, bad).unwrap_err().variable, variable, "{bad}");
            }
        }
    }

    #[test]
    fn defaults_apply_and_bad_values_name_their_variable() {
        let s = Settings::from_lookup("0.0.0.0:8081", |_| None).unwrap();
        assert_eq!(s.listen.port(), 8081);
        assert_eq!(s.namespace.as_str(), "sluice");
        assert_eq!(s.max_body_bytes, 16 * 1024 * 1024);
        assert!(s.admin_token.is_none());
        assert_eq!(s.http, HttpLimits::default());
        assert_eq!(s.stream_max_bytes, Some(1024 * 1024 * 1024));
        assert!(s.default_limits.is_unset());

        let err = Settings::from_lookup("0.0.0.0:8081", |n| {
            (n == "SLUICE_MAX_BODY_BYTES").then(|| "lots".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.variable, "SLUICE_MAX_BODY_BYTES");

        for variable in [
            "SLUICE_HTTP_HEADER_TIMEOUT_SECS",
            "SLUICE_HTTP_BODY_TIMEOUT_SECS",
            "SLUICE_HTTP_MAX_CONNECTIONS",
        ] {
            let err =
                Settings::from_lookup("0.0.0.0:8081", |n| (n == variable).then(|| "0".to_owned()))
                    .unwrap_err();
            assert_eq!(err.variable, variable);
        }
        let s = Settings::from_lookup("0.0.0.0:8081", |n| {
            (n == "SLUICE_HTTP_BODY_TIMEOUT_SECS").then(|| "5".to_owned())
        })
        .unwrap();
        assert_eq!(s.http.body_timeout, Duration::from_secs(5));
        assert_eq!(s.ingest_memory_bytes, 128 * 1024 * 1024);
        let err = Settings::from_lookup("0.0.0.0:8081", |n| {
            (n == "SLUICE_INGEST_MEMORY_BYTES").then(|| "33554431".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.variable, "SLUICE_INGEST_MEMORY_BYTES");
        let stream_bound = |value: &str| {
            Settings::from_lookup("0.0.0.0:8081", |n| {
                (n == "SLUICE_STREAM_MAX_BYTES").then(|| value.to_owned())
            })
            .map(|s| s.stream_max_bytes)
            .map_err(|e| e.variable)
        };
        assert_eq!(s.partition_span, Duration::from_secs(86_400));
        assert_eq!(s.maintenance_interval, Duration::from_secs(60));
        for (variable, bad) in [
            ("SLUICE_PARTITION_SPAN", "1500ms"),
            ("SLUICE_PARTITION_SPAN", "1 day"),
            ("SLUICE_MAINTENANCE_INTERVAL", "0s"),
        ] {
            let err =
                Settings::from_lookup("0.0.0.0:8081", |n| (n == variable).then(|| bad.to_owned()))
                    .unwrap_err();
            assert_eq!(err.variable, variable, "{bad}");
        }
        assert_eq!(stream_bound("unlimited"), Ok(None));
        assert_eq!(stream_bound("65536"), Ok(Some(65_536)));
        for bad in ["0", "-1", "1GiB"] {
            assert_eq!(stream_bound(bad), Err("SLUICE_STREAM_MAX_BYTES"), "{bad}");
        }

        let s = Settings::from_lookup("0.0.0.0:8081", |n| {
            (n == "SLUICE_ADMIN_TOKEN").then(|| "hunter2".to_owned())
        })
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn a_cluster_is_several_nats_urls_and_a_replica_count() {
        let with = |variable: &'static str, value: &'static str| {
            Settings::from_lookup("0.0.0.0:8081", move |n| {
                (n == variable).then(|| value.to_owned())
            })
        };
        let s = with("SLUICE_STREAM_REPLICAS", "3").unwrap();
        assert_eq!(s.stream_replicas, 3);
        assert_eq!(
            with("NATS_URL", "nats://a:4222").unwrap().stream_replicas,
            1
        );
        for bad in ["0", "6", "three", "-1"] {
            let err = with("SLUICE_STREAM_REPLICAS", bad).unwrap_err();
            assert_eq!(err.variable, "SLUICE_STREAM_REPLICAS", "{bad}");
        }

        let s = with("NATS_URL", "nats://n1:4222, nats://n2:4222,n3").unwrap();
        assert_eq!(
            nats_servers(&s.nats_url),
            ["nats://n1:4222", "nats://n2:4222", "n3"]
        );
        for bad in [",", "nats://n1:4222,http://n2:4222", "nats://n1:99999"] {
            let err = with("NATS_URL", bad).unwrap_err();
            assert_eq!(err.variable, "NATS_URL", "{bad}");
        }
        let err = with("NATS_URL", "nats://u:secret@n1:4222,http://u:secret@n2").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");

        assert_eq!(s.database_read_url, None);
        let s = with("DATABASE_READ_URL", "postgres://u:pw@replica/sluice").unwrap();
        assert_eq!(
            s.database_read_url.as_deref(),
            Some("postgres://u:pw@replica/sluice")
        );
        assert!(!format!("{s:?}").contains(":pw@"));
    }

    #[test]
    fn credentials_in_urls_never_reach_debug() {
        let s = Settings::from_lookup("0.0.0.0:8081", |n| match n {
            "DATABASE_URL" => Some("postgres://sluice:pg-secret@db:5432/sluice".to_owned()),
            "NATS_URL" => {
                Some("nats://nats-user:nats-secret@a:4222,nats://nats-token@b:4222".to_owned())
            }
            _ => None,
        })
        .unwrap();
        let debug = format!("{s:?}");
        for secret in ["pg-secret", "nats-secret", "nats-token"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        for kept in [
            "sluice:[REDACTED]@db:5432/sluice",
            "nats-user:[REDACTED]@a:4222",
            "nats://[REDACTED]@b:4222",
        ] {
            assert!(debug.contains(kept), "{kept} missing from {debug}");
        }
        // The settings themselves keep the secrets: the services need them.
        assert!(s.database_url.contains("pg-secret"));
    }

    #[test]
    fn urls_are_redacted_part_by_part() {
        for (url, redacted) in [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            (
                "postgres://postgres@127.0.0.1:5432/sluice",
                "postgres://postgres@127.0.0.1:5432/sluice",
            ),
            (
                "postgresql://u:p@h/db?sslmode=require&password=q",
                "postgresql://u:[REDACTED]@h/db?sslmode=require&password=[REDACTED]",
            ),
            (
                "postgres://h/db?PASSWORD=q",
                "postgres://h/db?PASSWORD=[REDACTED]",
            ),
            ("tls://tok@h:4222", "tls://[REDACTED]@h:4222"),
            ("u:p@h:4222", "u:[REDACTED]@h:4222"),
            ("nats://u:p:q@h", "nats://u:[REDACTED]@h"),
            ("nats://u:p@h/@x", "nats://u:[REDACTED]@h/@x"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn the_auth_throttle_has_careful_defaults_and_names_bad_values() {
        let s = Settings::from_lookup("0.0.0.0:8081", |_| None).unwrap();
        assert_eq!(s.auth_throttle.failures, 20);
        assert_eq!(s.auth_throttle.window, Duration::from_secs(60));
        assert!(s.auth_throttle.trusted_proxies.is_empty());

        let s = Settings::from_lookup("0.0.0.0:8081", |n| {
            (n == "SLUICE_TRUSTED_PROXIES").then(|| "10.0.0.0/8, 192.0.2.7,::1".to_owned())
        })
        .unwrap();
        let trusted: Vec<String> = s
            .auth_throttle
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(trusted, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);

        for (variable, value) in [
            ("SLUICE_AUTH_FAILURE_LIMIT", "0"),
            ("SLUICE_AUTH_FAILURE_LIMIT", "-3"),
            ("SLUICE_AUTH_FAILURE_WINDOW_SECS", "1m"),
            ("SLUICE_AUTH_THROTTLE_ADDRESSES", "lots"),
            ("SLUICE_TRUSTED_PROXIES", "proxy"),
        ] {
            let err = Settings::from_lookup("0.0.0.0:8081", |n| {
                (n == variable).then(|| value.to_owned())
            })
            .unwrap_err();
            assert_eq!(err.variable, variable, "{value}");
        }
    }
}
