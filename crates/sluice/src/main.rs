//! `sluice serve`: the control plane, the ingest gateway and the read API in
//! one process on one port (SPEC 1 and 2), for a single machine or a first
//! try. Each part is the same library its own binary runs; this binary only
//! starts the three and merges their routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use sluice_runtime::http::{self, Served};
use sluice_runtime::{Settings, telemetry, token};
use tokio::net::TcpListener;

/// How long in-flight requests may run after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Parser)]
#[command(
    version,
    about = "Sluice: a typed schema becomes a secure HTTP endpoint."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane, ingest gateway and read API on one port.
    ///
    /// Configured by the environment variables of the README; with no
    /// SLUICE_ADMIN_TOKEN, an operator token is generated and printed once.
    Serve,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli {
        command: Command::Serve,
    } = Cli::parse();
    telemetry::init();
    let mut settings = match Settings::from_env("0.0.0.0:8080") {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("sluice: {error}");
            std::process::exit(1);
        }
    };
    if settings.admin_token.is_none() {
        let generated = token::random_secret("sluice_admin_");
        // Printed once, to stdout rather than the log, so it stays out of
        // log collectors; it lives as long as this process.
        println!(
            "No SLUICE_ADMIN_TOKEN was set, so this run generated an operator token:\n\n    {generated}\n\nUse it as 'Authorization: Bearer <token>'. Set SLUICE_ADMIN_TOKEN to keep one across restarts."
        );
        settings.admin_token = Some(SecretString::from(generated));
    }
    serve(settings).await
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = http::shutdown_on_signal();
    let services = AllInOne {
        control: sluice_control::Service::start(settings.clone(), shutdown.clone()).await?,
        ingest: sluice_ingest::Service::start(settings.clone(), shutdown.clone()).await?,
        read: sluice_read::Service::start(settings.clone(), shutdown.clone()).await?,
    };
    let listener = TcpListener::bind(settings.listen).await?;
    http::run(
        listener,
        Arc::new(services),
        shutdown,
        SHUTDOWN_GRACE,
        settings.http,
    )
    .await?;
    Ok(())
}

/// The three services as one: their routes and OpenAPI documents merged,
/// ready when all three are.
struct AllInOne {
    control: sluice_control::Service,
    ingest: sluice_ingest::Service,
    read: sluice_read::Service,
}

impl Served for AllInOne {
    fn router(&self) -> Router {
        self.control
            .router()
            .merge(self.ingest.router())
            .merge(self.read.router())
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        let mut openapi = self.control.openapi();
        openapi.merge(self.ingest.openapi());
        openapi.merge(self.read.openapi());
        openapi
    }

    async fn readiness(&self) -> Vec<(&'static str, bool)> {
        let mut checks = self.control.readiness().await;
        checks.extend(self.ingest.readiness().await);
        checks.extend(self.read.readiness().await);
        checks
    }

    /// The reader commits and acks what it holds before the process exits.
    async fn stopped(&self) {
        self.read.stopped().await;
    }
}
