//! The command line of people with files: `sluice push`, `pull`,
//! `connectors` and `infer`, each a client of a running Sluice over its
//! HTTP API (SPEC 6 to 8), configured by `--url` and `--token` or
//! `SLUICE_URL` and `SLUICE_TOKEN`.
//!
//! Errors end the command with one line (or a short list) on stderr, made
//! from the server's problem+json `code` and `detail`, and exit status 1;
//! usage errors are clap's, status 2. A token is printed only by the
//! commands that have just created it.

mod api;
mod connectors;
mod infer;
mod input;
mod pull;
mod push;
mod records;
mod table;

use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Where the server is and who is asking.
#[derive(Args)]
pub(crate) struct Remote {
    /// Base URL of the Sluice to talk to [default: $SLUICE_URL, else
    /// http://localhost:8080].
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// Bearer token: the operator's for `connectors`, a connector's write
    /// token suffices for `push`, its read token for `pull` [default:
    /// $SLUICE_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Send CSV, NDJSON or JSON files (gzip too; `-` for stdin) to a
    /// connector, in chunks, resumably and exactly once.
    Push {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: push::PushArgs,
    },
    /// Read a connector's records page by page, to stdout or a file.
    Pull {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: pull::PullArgs,
    },
    /// List, show, create, edit, duplicate and delete connectors; rotate
    /// their tokens.
    Connectors {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: connectors::ConnectorsCommand,
    },
    /// Propose a schema for a CSV, NDJSON or JSON file from a sample of it,
    /// printed as JSON to edit and pass to `connectors create --schema`.
    Infer(infer::InferArgs),
}

/// Runs a client command; its exit status.
pub(crate) async fn run(command: Command) -> ExitCode {
    let outcome = match command {
        Command::Push { remote, args } => push::run(&remote, args).await,
        Command::Pull { remote, args } => pull::run(&remote, args).await,
        Command::Connectors { remote, command } => connectors::run(&remote, command).await,
        Command::Infer(args) => infer::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}
