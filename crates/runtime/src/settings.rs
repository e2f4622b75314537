//! Configuration from environment variables (SPEC section 1). Every service
//! reads the same names and ignores those it does not need.

use std::net::SocketAddr;

use secrecy::SecretString;

use crate::bus::Namespace;

#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub reason: String,
}

/// Checked configuration. The admin token is a [`SecretString`], so it never
/// reaches a `Debug` output or a log line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub nats_url: String,
    pub database_url: String,
    pub namespace: Namespace,
    pub admin_token: Option<SecretString>,
    pub public_url: String,
    pub max_body_bytes: usize,
    /// Size limit of the records stream (`SLUICE_STREAM_MAX_BYTES`); when it
    /// is full, ingest answers 503. `None`: limited only by the server.
    pub stream_max_bytes: Option<i64>,
    /// Memory the ingest gateway lets requests hold in all
    /// (`SLUICE_INGEST_MEMORY_BYTES`): bodies, validation, messages.
    pub ingest_memory_bytes: usize,
}

impl Settings {
    pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
    pub const DEFAULT_INGEST_MEMORY_BYTES: usize = 128 * 1024 * 1024;

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
            None => None,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(SettingsError {
                        variable: "SLUICE_STREAM_MAX_BYTES",
                        reason: format!("{v:?} is not a positive number of bytes"),
                    });
                }
            },
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
        Ok(Settings {
            listen,
            nats_url: get("NATS_URL", "nats://127.0.0.1:4222"),
            database_url: get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sluice"),
            namespace,
            admin_token: lookup("SLUICE_ADMIN_TOKEN")
                .filter(|v| !v.is_empty())
                .map(SecretString::from),
            public_url: public_url.trim_end_matches('/').to_owned(),
            max_body_bytes,
            stream_max_bytes,
            ingest_memory_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_bad_values_name_their_variable() {
        let s = Settings::from_lookup("0.0.0.0:8081", |_| None).unwrap();
        assert_eq!(s.listen.port(), 8081);
        assert_eq!(s.namespace.as_str(), "sluice");
        assert_eq!(s.max_body_bytes, 16 * 1024 * 1024);
        assert!(s.admin_token.is_none());

        let err = Settings::from_lookup("0.0.0.0:8081", |n| {
            (n == "SLUICE_MAX_BODY_BYTES").then(|| "lots".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.variable, "SLUICE_MAX_BODY_BYTES");

        assert_eq!(s.ingest_memory_bytes, 128 * 1024 * 1024);
        let err = Settings::from_lookup("0.0.0.0:8081", |n| {
            (n == "SLUICE_INGEST_MEMORY_BYTES").then(|| "33554431".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.variable, "SLUICE_INGEST_MEMORY_BYTES");

        let s = Settings::from_lookup("0.0.0.0:8081", |n| {
            (n == "SLUICE_ADMIN_TOKEN").then(|| "hunter2".to_owned())
        })
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
