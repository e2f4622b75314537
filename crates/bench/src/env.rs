//! The run's own database and NATS namespace, so that it can share servers
//! with anything else and leave nothing behind.

use anyhow::Context as _;
use sluice_runtime::bus::Namespace;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The operator token of the services this run starts.
pub(crate) const ADMIN_TOKEN: &str = "sluice-bench-admin-token";

pub(crate) struct BenchEnv {
    /// `postgres://…:5432`, without a database.
    server_url: String,
    pub database: String,
    pub database_url: String,
    pub nats_url: String,
    pub namespace: Namespace,
}

impl BenchEnv {
    pub async fn create(server_url: &str, nats_url: &str) -> anyhow::Result<BenchEnv> {
        let server_url = server_url.trim_end_matches('/').to_owned();
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("sluice_bench_{}", &id[..16]);
        let mut admin = PgConnection::connect(&format!("{server_url}/postgres"))
            .await
            .with_context(|| format!("connecting to PostgreSQL at {server_url}"))?;
        sqlx::query(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await
            .context("creating the benchmark's database")?;
        let namespace =
            Namespace::new(&format!("bench{}", &id[16..28])).map_err(anyhow::Error::msg)?;
        Ok(BenchEnv {
            database_url: format!("{server_url}/{database}"),
            server_url,
            database,
            nats_url: nats_url.to_owned(),
            namespace,
        })
    }

    /// The variables a service of this run is started with.
    pub fn service_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SLUICE_LISTEN", "127.0.0.1:0".to_owned()),
            ("NATS_URL", self.nats_url.clone()),
            ("DATABASE_URL", self.database_url.clone()),
            ("SLUICE_NAMESPACE", self.namespace.as_str().to_owned()),
            ("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("SLUICE_PUBLIC_URL", "http://sluice.bench".to_owned()),
        ]
    }

    pub async fn connect_db(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.database_url)
            .await
            .context("connecting to the benchmark's database")
    }

    /// Drops the database and the namespace's streams and bucket; best
    /// effort, reporting what it could not remove.
    pub async fn remove(&self) {
        match PgConnection::connect(&format!("{}/postgres", self.server_url)).await {
            Ok(mut admin) => {
                let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
                if let Err(error) = sqlx::query(&drop).execute(&mut admin).await {
                    eprintln!("sluice-bench: could not drop {}: {error}", self.database);
                }
            }
            Err(error) => eprintln!("sluice-bench: could not drop {}: {error}", self.database),
        }
        match async_nats::connect(&self.nats_url).await {
            Ok(client) => {
                let js = async_nats::jetstream::new(client);
                let ns = &self.namespace;
                for stream in [ns.records_stream(), ns.dead_letter_stream()] {
                    let _ = js.delete_stream(&stream).await;
                }
                let _ = js.delete_key_value(ns.connectors_bucket()).await;
            }
            Err(error) => eprintln!(
                "sluice-bench: could not remove namespace {}: {error}",
                self.namespace.as_str()
            ),
        }
    }
}
