//! The `sluice-control` binary's start-up checks.

use std::process::Command;

fn run_with(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    for name in [
        "SLUICE_ADMIN_TOKEN",
        "SLUICE_LISTEN",
        "DATABASE_URL",
        "NATS_URL",
    ] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    let output = command.output().expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_an_admin_token_it_refuses_to_start_and_says_why() {
    let (code, stderr) = run_with(&[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("SLUICE_ADMIN_TOKEN"), "{stderr}");
}

#[test]
fn a_bad_setting_is_named() {
    let (code, stderr) = run_with(&[("SLUICE_ADMIN_TOKEN", "t"), ("SLUICE_LISTEN", "nowhere")]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("SLUICE_LISTEN"), "{stderr}");
}
