use sluice_control::Application;
use sluice_runtime::{Settings, http, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let settings = match Settings::from_env("0.0.0.0:8080") {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("sluice-control: {error}");
            std::process::exit(1);
        }
    };
    if settings.admin_token.is_none() {
        eprintln!(
            "sluice-control: SLUICE_ADMIN_TOKEN is not set; the control plane refuses to start without the operator's token"
        );
        std::process::exit(1);
    }
    let shutdown = http::shutdown_on_signal();
    Application::build(settings, shutdown).await?.run().await
}
