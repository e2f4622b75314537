use sluice_read::Application;
use sluice_runtime::http::shutdown_on_signal;
use sluice_runtime::{Settings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let settings = match Settings::from_env("0.0.0.0:8082") {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("sluice-read: {error}");
            std::process::exit(1);
        }
    };
    let shutdown = shutdown_on_signal();
    Application::build(settings, shutdown).await?.run().await
}
