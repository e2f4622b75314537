//! `sluice pull`: every record once, in order, across runs that stop
//! anywhere, with `--resume`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_testkit::ADMIN_TOKEN;

use crate::support::{Server, every_type_fields, p, write_ndjson};

fn lines_of(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect()
}

#[tokio::test]
async fn a_resumed_pull_returns_every_record_once_across_runs_killed_midway() {
    let server = Server::start().await;
    let id = server.connector("pulled", every_type_fields()).await;
    let first_half = server.path("first.ndjson");
    write_ndjson(&first_half, 0..5_000);
    server
        .run(&["push", "--connector", &id, p(&first_half)])
        .ok();
    server.records_once(&id, 5_000).await;

    let out = server.path("out.ndjson");
    let state = server.path("pull.state");
    let pull_args = [
        "pull",
        "--connector",
        id.as_str(),
        "--page-size",
        "100",
        "-o",
        p(&out),
        "--resume",
        p(&state),
    ];
    // The first run is killed once it has written a page or more.
    let mut first = server
        .cli(ADMIN_TOKEN)
        .args(pull_args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !state.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no page was pulled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();

    // Run again to the end; then more records arrive, and a third run
    // takes only those.
    server.run(&pull_args).ok();
    let second_half = server.path("second.ndjson");
    write_ndjson(&second_half, 5_000..7_500);
    server
        .run(&["push", "--connector", &id, p(&second_half)])
        .ok();
    server.records_once(&id, 7_500).await;
    server.run(&pull_args).ok();

    let pulled = lines_of(&out);
    let ids: Vec<&str> = pulled.iter().map(|r| r["_id"].as_str().unwrap()).collect();
    let stored = server.records(&id).await;
    let expected: Vec<&str> = stored.iter().map(|r| r["_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 7_500);
    assert_eq!(ids, expected, "every record once, in _id order");
    assert_eq!(pulled, stored);
}

#[tokio::test]
async fn csv_and_json_pulls_write_one_header_or_one_array_and_filters_apply() {
    let server = Server::start().await;
    let id = server.connector("shaped", every_type_fields()).await;
    let file = server.path("records.ndjson");
    write_ndjson(&file, 0..250);
    server.run(&["push", "--connector", &id, p(&file)]).ok();
    server.records_once(&id, 250).await;

    let csv = server
        .run(&[
            "pull",
            "--connector",
            &id,
            "--format",
            "csv",
            "--page-size",
            "100",
            "--fields",
            "n,active",
        ])
        .ok();
    let mut reader = csv::Reader::from_reader(csv.stdout.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["_id", "_received_at", "n", "active"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 250);
    assert_eq!(&rows[249][2], "249");

    let json = server
        .run(&[
            "pull",
            "--connector",
            &id,
            "--format",
            "json",
            "--page-size",
            "100",
            "--filter",
            "n=gte.200",
            "--filter",
            "active=eq.true",
        ])
        .ok();
    let array: Vec<Value> = serde_json::from_str(&json.stdout).expect("one JSON array");
    let ns: Vec<u64> = array.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (200..250).step_by(2).collect::<Vec<_>>());

    let bad = server
        .run(&["pull", "--connector", &id, "--filter", "nope=eq.1"])
        .failed();
    assert!(
        bad.stderr.contains("HTTP 400") && bad.stderr.contains("nope"),
        "{}",
        bad.stderr
    );
}

#[tokio::test]
async fn a_following_pull_writes_records_as_they_arrive() {
    let server = Server::start().await;
    let id = server.connector("followed", every_type_fields()).await;
    let out = server.path("followed.ndjson");
    let mut follower = server
        .cli(ADMIN_TOKEN)
        .args(["pull", "--connector", &id, "--follow", "-o", p(&out)])
        .spawn()
        .unwrap();
    for (name, range) in [("a.ndjson", 0..300), ("b.ndjson", 300..700)] {
        let file = server.path(name);
        write_ndjson(&file, range);
        server.run(&["push", "--connector", &id, p(&file)]).ok();
    }
    let started = Instant::now();
    let lines = loop {
        let written = std::fs::read_to_string(&out).unwrap_or_default();
        if written.lines().count() >= 700 || started.elapsed() > Duration::from_secs(60) {
            break written;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        follower.try_wait().unwrap(),
        None,
        "a following pull does not end"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
    let mut ns: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..700).collect::<Vec<_>>());

    let refused = server
        .run(&["pull", "--connector", &id, "--follow", "--format", "json"])
        .failed();
    assert!(
        refused.stderr.contains("--format ndjson"),
        "{}",
        refused.stderr
    );
}
