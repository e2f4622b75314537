//! The log as a collector sees it: written to a pipe, as to a file or to
//! Docker's log driver.

use std::process::Stdio;

use sluice_testkit::TestEnv;
use sluice_testkit::free_port;
use sluice_testkit::wire::PATIENCE;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support;

#[tokio::test]
async fn a_log_written_to_a_pipe_carries_no_colour_codes() {
    let env = TestEnv::new().await;
    let mut child = tokio::process::Command::from(support::service_command(
        &env,
        "sluice-control",
        free_port(),
    ))
    .env("RUST_LOG", "info")
    .stdout(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .expect("starting sluice-control");
    let mut lines = BufReader::new(child.stdout.take().expect("a pipe")).lines();
    let listening = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("reading the log") {
            assert!(!line.contains('\x1b'), "an escape sequence in {line:?}");
            if line.contains("listening") {
                return line;
            }
        }
        panic!("the log ended before the service listened");
    })
    .await
    .expect("the service logs that it listens");
    assert!(listening.contains("INFO"), "{listening}");
}
