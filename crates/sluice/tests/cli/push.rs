//! `sluice push`: big files of every type read back equal, a push killed
//! midway and run again stores each record once, refused records are
//! named by their line.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sluice_testkit::ADMIN_TOKEN;

use crate::support::{
    Server, each_once, every_type_fields, every_type_record, numbers, p, user_fields, write_csv,
    write_ndjson,
};

const RECORDS: u64 = 100_000;

/// Each stored record equals the one sent: numbers compared as numbers
/// (`0.0` is returned as `0`), everything else as JSON values.
fn assert_read_back_equal(stored: &[Value], count: u64) {
    assert_eq!(each_once(&numbers(stored), count), Ok(()));
    for record in user_fields(stored) {
        let n = record["n"].as_u64().unwrap();
        let expected = every_type_record(n);
        for (field, value) in expected.as_object().unwrap() {
            if field == "score" {
                assert_eq!(
                    record[field].as_f64(),
                    value.as_f64(),
                    "record {n}: {record}"
                );
            } else {
                assert_eq!(&record[field], value, "record {n}, field {field}");
            }
        }
    }
}

#[tokio::test]
async fn a_100k_record_csv_and_gzipped_ndjson_of_every_type_read_back_equal() {
    let server = Server::start().await;
    let csv_id = server.connector("from_csv", every_type_fields()).await;
    let ndjson_id = server.connector("from_ndjson", every_type_fields()).await;
    let csv = server.path("records.csv");
    write_csv(&csv, 0..RECORDS);
    let ndjson = server.path("records.ndjson");
    write_ndjson(&ndjson, 0..RECORDS);
    // Compressed, under a name that does not say so: told by its content.
    let gzipped = server.path("records-packed.ndjson");
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&std::fs::read(&ndjson).unwrap()).unwrap();
    std::fs::write(&gzipped, encoder.finish().unwrap()).unwrap();

    let run = server
        .run(&[
            "push",
            "--connector",
            &csv_id,
            "--chunk-size",
            "512K",
            p(&csv),
        ])
        .ok();
    assert!(
        run.stdout.contains("100,000 records") && run.stdout.contains("100,000 accepted"),
        "{}",
        run.stdout
    );
    // The connector by its name; stdin as the input.
    let run = crate::support::Run::of(
        server
            .cli(ADMIN_TOKEN)
            .args([
                "push",
                "--connector",
                "from_ndjson",
                "--chunk-size",
                "1M",
                "-",
            ])
            .stdin(std::fs::File::open(&gzipped).unwrap()),
    )
    .ok();
    assert!(run.stdout.contains("100,000 accepted"), "{}", run.stdout);

    assert_read_back_equal(&server.records_once(&csv_id, 100_000).await, RECORDS);
    assert_read_back_equal(&server.records_once(&ndjson_id, 100_000).await, RECORDS);
}

#[tokio::test]
async fn a_push_killed_midway_and_run_again_stores_every_record_once() {
    let server = Server::start().await;
    let id = server.connector("resumed", every_type_fields()).await;
    let file = server.path("records.ndjson");
    write_ndjson(&file, 0..RECORDS);
    let push_args = [
        "push",
        "--connector",
        id.as_str(),
        "--chunk-size",
        "64K",
        "--concurrency",
        "2",
    ];

    let mut first = server
        .cli(ADMIN_TOKEN)
        .args(push_args)
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed (SIGKILL: no chance to tidy up) once some records are stored.
    let started = Instant::now();
    loop {
        if server.has_records(&id).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "nothing stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    let status = first.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "the first push was killed before it ended"
    );

    let run = server.run(&[&push_args[..], &[p(&file)]].concat()).ok();
    assert!(run.stdout.contains("100,000 accepted"), "{}", run.stdout);
    // Stored ones of the first run are skipped, and none are left behind:
    // let the reader catch up, then make sure nothing more comes.
    let stored = server.records_once(&id, 100_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored.len(), server.records(&id).await.len());
    assert_eq!(each_once(&numbers(&stored), RECORDS), Ok(()));
}

#[tokio::test]
async fn refused_records_are_named_by_their_line_and_the_exit_status_says_so() {
    let server = Server::start().await;
    let id = server
        .connector(
            "lines",
            json!([{"name": "n", "type": "integer"}, {"name": "day", "type": "date"}]),
        )
        .await;
    // Line 4 has a bad date, line 6 a row of three cells, line 8 a bad
    // integer; a quoted line end moves everything after it down a line.
    let csv = server.path("bad.csv");
    std::fs::write(
        &csv,
        "n,day\n1,2026-01-01\n2,2026-01-02\n3,2026-02-30\n\"4\",2026-01-04\n5,2026-01-05,x\n6,2026-01-06\nseven,2026-01-07\n",
    )
    .unwrap();

    let partial = server
        .run(&["push", "--connector", &id, "--mode", "partial", p(&csv)])
        .failed();
    assert!(
        partial.stdout.contains("4 accepted, 3 rejected"),
        "{}",
        partial.stdout
    );
    for line in [
        "bad.csv line 4: field \"day\"",
        "bad.csv line 6:",
        "bad.csv line 8: field \"n\"",
    ] {
        assert!(
            partial.stderr.contains(line),
            "{line:?} in {}",
            partial.stderr
        );
    }
    assert_eq!(server.records_once(&id, 4).await.len(), 4);

    // All or nothing: the chunk is refused whole, and the lines named.
    let other = server
        .connector(
            "strict",
            json!([{"name": "n", "type": "integer"}, {"name": "day", "type": "date"}]),
        )
        .await;
    let strict = server
        .run(&["push", "--connector", &other, p(&csv)])
        .failed();
    assert!(
        strict.stdout.contains("0 accepted, 7 refused"),
        "{}",
        strict.stdout
    );
    assert!(
        strict.stderr.contains("bad.csv line 4: field \"day\""),
        "{}",
        strict.stderr
    );
    assert!(
        strict.stderr.contains("run the same command again"),
        "{}",
        strict.stderr
    );
    assert!(server.records(&other).await.is_empty());
}

#[tokio::test]
async fn bytes_that_are_not_utf8_stop_the_push_at_their_line() {
    let server = Server::start().await;
    let id = server
        .connector("latin1", json!([{"name": "city", "type": "string"}]))
        .await;
    let csv = server.path("latin1.csv");
    std::fs::write(&csv, b"city\nParis\nMontr\xe9al\n").unwrap();
    let run = server.run(&["push", "--connector", &id, p(&csv)]).failed();
    assert!(
        run.stderr
            .contains("latin1.csv line 3, column 6: the bytes there are not UTF-8"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_wrong_token_is_said_in_one_line_without_the_token() {
    let server = Server::start().await;
    let id = server
        .connector("guarded", json!([{"name": "n", "type": "integer"}]))
        .await;
    let file = server.path("one.ndjson");
    std::fs::write(&file, "{\"n\": 1}\n").unwrap();
    let run = crate::support::Run::of(
        server
            .cli("sluice_w_not_a_real_token_at_all")
            .args(["push", "--connector", &id])
            .arg(&file),
    )
    .failed();
    assert!(run.stderr.contains("HTTP 401"), "{}", run.stderr);
    assert!(!run.stderr.contains("not_a_real_token"), "{}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
}

#[tokio::test]
async fn ctrl_c_stops_a_push_from_stdin_and_the_same_push_again_sends_only_the_rest() {
    let server = Server::start().await;
    let id = server.connector("piped", every_type_fields()).await;
    let file = server.path("records.ndjson");
    write_ndjson(&file, 0..5_000);
    let content = std::fs::read(&file).unwrap();
    let args = [
        "push",
        "--connector",
        id.as_str(),
        "--chunk-size",
        "16K",
        "-",
    ];

    // Stdin stays open after the first 2 000 records: the push waits for
    // more until it is interrupted.
    let mut first = server
        .cli(ADMIN_TOKEN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cut = content
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1_999)
        .unwrap()
        .0
        + 1;
    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(&content[..cut]).unwrap();
    let started = Instant::now();
    while !server.has_records(&id).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let output = first.wait_with_output().unwrap();
    drop(stdin);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted. Run the same command again"),
        "{stderr}"
    );

    let run = crate::support::Run::of(
        server
            .cli(ADMIN_TOKEN)
            .args(args)
            .stdin(std::fs::File::open(&file).unwrap()),
    )
    .ok();
    assert!(run.stdout.contains("5,000 accepted"), "{}", run.stdout);
    let stored = server.records_once(&id, 5_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored.len(), server.records(&id).await.len());
    assert_eq!(each_once(&numbers(&stored), 5_000), Ok(()));
}

#[tokio::test]
async fn a_push_waits_out_a_bus_outage_and_stores_every_record_once() {
    let mut nats = sluice_testkit::PrivateNats::start();
    let server = Server::start_on_nats(nats.url()).await;
    let id = server.connector("outage", every_type_fields()).await;
    let file = server.path("records.ndjson");
    write_ndjson(&file, 0..20_000);

    // NATS goes down: the gateway answers 503 with Retry-After, and the
    // push keeps retrying each chunk with its key until NATS is back.
    nats.stop();
    let push = server
        .cli(ADMIN_TOKEN)
        .args(["push", "--connector", &id, "--chunk-size", "256K", p(&file)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    nats.restart();
    let output = push.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("20,000 accepted"), "{stdout}");
    assert!(stdout.contains("requests retried)"), "{stdout}");
    let stored = server.records_once(&id, 20_000).await;
    assert_eq!(each_once(&numbers(&stored), 20_000), Ok(()));
}
