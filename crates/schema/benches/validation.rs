//! Validation throughput per format, next to serde_json's own parse into
//! `Vec<serde_json::Value>` of the same JSON bytes, the floor that
//! validating JSON must beat.
//!
//! `cargo bench -p sluice-schema --bench validation`; after criterion's
//! figures a summary prints MB/s and records/s per format.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use sluice_schema::{ExtraFields, FieldSpec, Format, Schema, validate};

const RECORDS: usize = 10_000;

fn schema() -> Schema {
    let fields = [
        ("id", "integer"),
        ("name", "string"),
        ("email", "string"),
        ("amount", "decimal"),
        ("score", "number"),
        ("active", "boolean"),
        ("born", "date"),
        ("seen", "timestamp"),
    ];
    let specs: Vec<FieldSpec> = fields
        .iter()
        .map(|(name, ty)| FieldSpec {
            name: (*name).into(),
            ty: (*ty).into(),
            nullable: *name == "born",
            description: None,
            previous_name: None,
        })
        .collect();
    Schema::define(&specs).expect("a valid schema")
}

/// The same records in the three formats: (json, ndjson, csv).
fn dataset() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    // A small xorshift keeps the data varied and the run reproducible.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let names = [
        "Ada Lovelace",
        "Grace Hopper",
        "Édith Piaf",
        "Alan Turing",
        "Niklaus Wirth",
    ];
    let mut json = String::from("[");
    let mut ndjson = String::new();
    let mut csv = String::from("id,name,email,amount,score,active,born,seen\n");
    for i in 0..RECORDS {
        let r = next();
        let name = names[(r % 5) as usize];
        let email = format!("u{}@mail.io", r % 100_000);
        let amount = format!("{}.{:02}", r % 10_000, (r >> 8) % 100);
        let score = ((r >> 16) % 100_000) as f64 / 100.0;
        let active = r % 3 == 0;
        let birthday = if r % 7 == 0 {
            None
        } else {
            Some(format!(
                "19{:02}-{:02}-{:02}",
                (r >> 4) % 100,
                1 + (r >> 12) % 12,
                1 + (r >> 20) % 28
            ))
        };
        let seen_at = format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            1 + (r >> 24) % 12,
            1 + (r >> 28) % 28,
            (r >> 32) % 24,
            (r >> 36) % 60,
            (r >> 40) % 60
        );
        let birthday_json = birthday
            .as_ref()
            .map_or("null".to_owned(), |d| format!("\"{d}\""));
        let object = format!(
            r#"{{"id":{i},"name":"{name}","email":"{email}","amount":{amount},"score":{score},"active":{active},"born":{birthday_json},"seen":"{seen_at}"}}"#
        );
        if i > 0 {
            json.push(',');
        }
        json.push_str(&object);
        ndjson.push_str(&object);
        ndjson.push('\n');
        csv.push_str(&format!(
            "{i},{name},{email},{amount},{score},{active},{},{seen_at}\n",
            birthday.unwrap_or_default()
        ));
    }
    json.push(']');
    (json.into_bytes(), ndjson.into_bytes(), csv.into_bytes())
}

fn check(schema: &Schema, format: Format, body: &[u8]) {
    let v = validate(schema, ExtraFields::Reject, format, body).expect("well-formed");
    assert_eq!(
        v.records.len(),
        RECORDS,
        "{format:?}: {:?}",
        v.errors.first()
    );
}

fn benches(c: &mut Criterion) {
    let schema = schema();
    let (json, ndjson, csv) = dataset();
    for (format, body) in [
        (Format::Json, &json),
        (Format::Ndjson, &ndjson),
        (Format::Csv, &csv),
    ] {
        check(&schema, format, body);
    }

    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("serde_json_value_baseline", |b| {
        b.iter(|| serde_json::from_slice::<Vec<serde_json::Value>>(black_box(&json)).unwrap())
    });
    group.bench_function("json", |b| {
        b.iter(|| validate(&schema, ExtraFields::Reject, Format::Json, black_box(&json)).unwrap())
    });
    group.throughput(Throughput::Bytes(ndjson.len() as u64));
    group.bench_function("ndjson", |b| {
        b.iter(|| {
            validate(
                &schema,
                ExtraFields::Reject,
                Format::Ndjson,
                black_box(&ndjson),
            )
            .unwrap()
        })
    });
    group.throughput(Throughput::Bytes(csv.len() as u64));
    group.bench_function("csv", |b| {
        b.iter(|| validate(&schema, ExtraFields::Reject, Format::Csv, black_box(&csv)).unwrap())
    });
    group.finish();
}

/// MB/s and records/s of `run` over `bytes`, from the best of several runs
/// (the least disturbed by the rest of the machine).
fn summarise(label: &str, bytes: usize, mut run: impl FnMut()) {
    let mut best = Duration::MAX;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        run();
        best = best.min(t.elapsed());
    }
    let secs = best.as_secs_f64();
    println!(
        "{label:<28} {:>8.1} MB/s {:>12.0} records/s  ({bytes} bytes, {:.1} bytes/record)",
        bytes as f64 / secs / 1e6,
        RECORDS as f64 / secs,
        bytes as f64 / RECORDS as f64,
    );
}

fn summary() {
    let schema = schema();
    let (json, ndjson, csv) = dataset();
    println!("\nsummary, {RECORDS} records of 8 fields, best run:");
    summarise("serde_json Vec<Value> (json)", json.len(), || {
        black_box(serde_json::from_slice::<Vec<serde_json::Value>>(black_box(&json)).unwrap());
    });
    for (label, format, body) in [
        ("validate json", Format::Json, &json),
        ("validate ndjson", Format::Ndjson, &ndjson),
        ("validate csv", Format::Csv, &csv),
    ] {
        summarise(label, body.len(), || {
            black_box(validate(&schema, ExtraFields::Reject, format, black_box(body)).unwrap());
        });
    }
}

criterion_group!(validation, benches);

fn main() {
    validation();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs this binary in test mode: skip the summary.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        summary();
    }
}
