//! `sluice serve`: the control plane, the ingest gateway and the read API in
//! one process on one port (SPEC 1 and 2), for a single machine or a first
//! try. Each part is the same library its own binary runs; this binary only
//! starts the three and merges their routes.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use futures::FutureExt;
use secrecy::SecretString;
use sluice_runtime::{Settings, http, telemetry, token};
use tokio::net::TcpListener;

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
    let control = sluice_control::Service::start(settings.clone(), shutdown.clone()).await?;
    let ingest = sluice_ingest::Service::start(settings.clone(), shutdown.clone()).await?;
    let read = sluice_read::Service::start(settings.clone(), shutdown.clone()).await?;

    let mut openapi = control.openapi();
    openapi.merge(ingest.openapi());
    openapi.merge(read.openapi());
    let api = control.router().merge(ingest.router()).merge(read.router());
    let services = Arc::new((control, ingest, read));
    let stored = services.clone();
    let ready: http::ReadinessCheck = Arc::new(move || {
        let services = services.clone();
        async move {
            let (control, ingest, read) = &*services;
            let mut checks = control.readiness().await;
            checks.extend(ingest.readiness().await);
            checks.extend(read.readiness().await);
            checks
        }
        .boxed()
    });
    let router = http::app(api, &openapi, ready);

    let listener = TcpListener::bind(settings.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "sluice serving");
    http::serve(
        listener,
        router,
        shutdown,
        std::time::Duration::from_secs(30),
    )
    .await?;
    // The reader commits and acks what it holds before the process exits.
    stored.2.stopped().await;
    Ok(())
}
