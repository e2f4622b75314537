//! `sluice serve`: the control plane, the ingest gateway and the read API in
//! one process on one port (SPEC 1 and 2), for a single machine or a first
//! try. Each part is the same library its own binary runs; this module only
//! starts the three and merges their routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use secrecy::SecretString;
use sluice_runtime::bus::BusError;
use sluice_runtime::http::{self, Served};
use sluice_runtime::{Settings, telemetry, token};
use tokio::net::TcpListener;

use crate::embedded_bus::{self, BusChoice};
use crate::fail;

/// How long in-flight requests may run after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs until SIGTERM or Ctrl-C.
pub(crate) async fn run() -> anyhow::Result<()> {
    telemetry::init();
    let mut settings = match Settings::from_env("0.0.0.0:8080") {
        Ok(settings) => settings,
        Err(error) => fail(&error),
    };
    // Started before the services, stopped after they have committed and
    // acked what they hold (and before any exit, which would skip its drop).
    let embedded_bus =
        match embedded_bus::start_if_needed(&settings.nats_url, &BusChoice::from_env()) {
            Ok(Some(bus)) => {
                settings.nats_url = bus.url;
                bus.embedded
            }
            Ok(None) => None,
            Err(error) => fail(&error),
        };
    // Printed once the services are up (see `first_steps`).
    let generated_token = settings.admin_token.is_none().then(|| {
        let generated = token::random_secret("sluice_admin_");
        settings.admin_token = Some(SecretString::from(generated.clone()));
        generated
    });
    let served = serve_all(settings, generated_token).await;
    drop(embedded_bus);
    match served {
        Ok(()) => Ok(()),
        // An old NATS is the user's to fix, and BusError says how in one
        // line: no "Caused by" chain, no backtrace.
        Err(error) => match error.downcast_ref::<BusError>() {
            Some(bus_error @ BusError::TooOld { .. }) => fail(bus_error),
            _ => Err(error),
        },
    }
}

async fn serve_all(settings: Settings, generated_token: Option<String>) -> anyhow::Result<()> {
    let shutdown = http::shutdown_on_signal();
    let services = AllInOne {
        control: sluice_control::Service::start(settings.clone(), shutdown.clone()).await?,
        ingest: sluice_ingest::Service::start(settings.clone(), shutdown.clone()).await?,
        read: sluice_read::Service::start(settings.clone(), shutdown.clone()).await?,
    };
    let listener = TcpListener::bind(settings.listen).await?;
    println!(
        "{}",
        first_steps(listener.local_addr()?, generated_token.as_deref())
    );
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

/// What a newcomer does next: open the console, or create a first connector
/// with a curl that pastes as it is (with the generated token in it, which
/// was printed once anyway; else the variable the user set).
fn first_steps(listening: SocketAddr, generated_token: Option<&str>) -> String {
    let host = if listening.ip().is_unspecified() || listening.ip().is_loopback() {
        "localhost".to_owned()
    } else {
        listening.ip().to_string()
    };
    let base = format!("http://{host}:{}", listening.port());
    // Printed once, to stdout rather than the log, so it stays out of log
    // collectors; it lives as long as this process.
    let token_note = match generated_token {
        Some(token) => format!(
            "No SLUICE_ADMIN_TOKEN was set, so this run generated an operator token:\n\n    {token}\n\n\
             Use it as 'Authorization: Bearer <token>'. Set SLUICE_ADMIN_TOKEN to keep one across restarts.\n\n"
        ),
        None => String::new(),
    };
    let token = generated_token.unwrap_or("$SLUICE_ADMIN_TOKEN");
    format!(
        "{token_note}Sluice is ready.\n\n\
         Console: {base}/ (sign in with the operator token)\n\n\
         Create a first connector:\n\n    \
         curl -X POST {base}/v1/connectors -H \"Authorization: Bearer {token}\" -H 'Content-Type: application/json' \\\n      \
         -d '{{\"name\": \"orders\", \"fields\": [{{\"name\": \"order_id\", \"type\": \"integer\"}}, {{\"name\": \"amount\", \"type\": \"decimal\"}}]}}'\n"
    )
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
