//! The `sluice` binary: `sluice serve` runs the whole service in one process
//! (see [`serve`]); every other command is a client of a running Sluice over
//! HTTP (see [`cli`]): push files, pull records, manage connectors, infer a
//! schema.

mod cli;
mod embedded_bus;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    #[command(flatten)]
    Client(cli::Command),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let Cli { command } = Cli::parse();
    match command {
        Command::Serve => serve::run().await.map(|()| ExitCode::SUCCESS),
        Command::Client(command) => Ok(cli::run(command).await),
    }
}

/// Stops the process with one line on stderr.
fn fail(error: &dyn std::fmt::Display) -> ! {
    eprintln!("sluice: {error}");
    std::process::exit(1);
}
