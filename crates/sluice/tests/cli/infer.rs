//! `sluice infer` and `connectors create --from-sample` on real public
//! data sets (tests/fixtures/vega_datasets), and on broken files.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Server, p};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vega_datasets")
        .join(name)
}

/// `sluice infer FILE`'s fields as `name type` (`?` when nullable).
fn inferred(file: &Path) -> Vec<String> {
    // infer reads a file only: no server, no token needed.
    let run = crate::support::Run::of(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["infer", p(file)])
            .env_remove("SLUICE_TOKEN"),
    )
    .ok();
    let proposal: Value = serde_json::from_str(&run.stdout).expect("infer prints JSON");
    proposal["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let nullable = if f["nullable"] == Value::Bool(true) {
                "?"
            } else {
                ""
            };
            format!(
                "{} {}{nullable}",
                f["name"].as_str().unwrap(),
                f["type"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn dates_numbers_and_gaps_of_real_csv_files_get_the_types_a_person_would_choose() {
    assert_eq!(
        inferred(&fixture("la-riots.csv")),
        [
            "first_name string",
            "last_name string",
            "age integer?",
            "gender string",
            "race string",
            "death_date date",
            "address string",
            "neighborhood string",
            "type string",
            "longitude number",
            "latitude number",
        ]
    );
    assert_eq!(
        inferred(&fixture("iowa-electricity.csv")),
        ["year date", "source string", "net_generation integer"]
    );
    // Prices are amounts: exact decimals. "Jan 1 2000" is no date Sluice
    // reads, so it stays text.
    assert_eq!(
        inferred(&fixture("stocks.csv")),
        ["symbol string", "date string", "price decimal"]
    );
    // Measurements are floating point; "2012/01/01" is no date Sluice reads.
    assert_eq!(
        inferred(&fixture("seattle-weather.csv")),
        [
            "date string",
            "precipitation number",
            "temp_max number",
            "temp_min number",
            "wind number",
            "weather string",
        ]
    );
}

#[test]
fn a_json_array_with_nulls_gets_nullable_fields() {
    assert_eq!(
        inferred(&fixture("cars.json")),
        [
            "Name string",
            "Miles_per_Gallon number?",
            "Cylinders integer",
            "Displacement number",
            "Horsepower integer?",
            "Weight_in_lbs integer",
            "Acceleration number",
            "Year date",
            "Origin string",
        ]
    );
}

#[tokio::test]
async fn a_connector_created_from_a_sample_takes_the_whole_file() {
    let server = Server::start().await;
    for (file, name, count) in [
        ("la-riots.csv", "riots", "63"),
        ("cars.json", "cars", "406"),
    ] {
        let created = server
            .run(&[
                "connectors",
                "create",
                "--from-sample",
                p(&fixture(file)),
                "--name",
                name,
                "--json",
            ])
            .ok();
        let created: Value = serde_json::from_str(&created.stdout).unwrap();
        let id = created["id"].as_str().unwrap();
        let pushed = server
            .run(&["push", "--connector", id, p(&fixture(file))])
            .ok();
        assert!(
            pushed.stdout.contains(&format!("{count} records"))
                && pushed.stdout.contains(&format!("{count} accepted")),
            "{}",
            pushed.stdout
        );
    }
}

/// `sluice infer` on a file holding `content`: its stderr, which must be
/// one line, and the exit status 1.
fn infer_error(name: &str, content: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("sluice-infer-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, content).unwrap();
    let run = crate::support::Run::of(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(["infer", p(&file)]),
    )
    .failed();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    run.stderr
}

#[test]
fn broken_files_are_named_with_the_line_at_fault() {
    let ragged = infer_error("ragged.csv", b"a,b\n1,2\n3,4,5\n");
    assert!(
        ragged.contains("ragged.csv line 3: the row has 3 cells, the header has 2"),
        "{ragged}"
    );
    let unclosed = infer_error("unclosed.csv", b"a,b\n1,2\n3,\"never closed\n4,5\n");
    assert!(
        unclosed
            .contains("unclosed.csv line 3: a quoted field opened on this line is never closed"),
        "{unclosed}"
    );
    let latin1 = infer_error(
        "latin1.ndjson",
        b"{\"city\": \"Paris\"}\n{\"city\": \"Montr\xe9al\"}\n",
    );
    assert!(
        latin1.contains("latin1.ndjson line 2, column 16: the bytes there are not UTF-8"),
        "{latin1}"
    );
    let broken = infer_error("broken.ndjson", b"{\"a\": 1}\n{\"a\": tru}\n");
    assert!(
        broken.contains("broken.ndjson line 2, column 10: expected ident"),
        "{broken}"
    );
    let not_object = infer_error("list.ndjson", b"[1, 2]\n");
    assert!(
        not_object.contains("list.ndjson line 1, column"),
        "{not_object}"
    );
}
