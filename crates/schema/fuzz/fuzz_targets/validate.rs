//! Any bytes, in any format, against a schema with every field type: the
//! validator must return (an outcome or a syntax error), never panic, and
//! its outcome must be consistent.
//!
//! `cargo fuzz run validate` from `crates/schema`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_schema::{ExtraFields, FieldSpec, FieldType, Format, Schema, Validation, validate};

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let specs: Vec<FieldSpec> = FieldType::ALL
            .iter()
            .enumerate()
            .map(|(i, ty)| FieldSpec {
                // Short names, so that the fuzzer finds them: a, b, c...
                name: char::from(b'a' + i as u8).to_string(),
                ty: ty.as_str().into(),
                nullable: i % 2 == 1,
                description: None,
                previous_name: None,
            })
            .collect();
        Schema::define(&specs).expect("a valid schema")
    })
}

fn check(v: &Validation) {
    assert_eq!(
        v.errors.len(),
        v.error_count.min(Validation::MAX_LISTED_ERRORS)
    );
    for refused in &v.rejected {
        assert!(!refused.errors.is_empty());
    }
    for record in &v.records {
        assert_eq!(record.0.len(), schema().len());
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the format and the extra-fields policy.
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = match selector % 3 {
        0 => Format::Json,
        1 => Format::Ndjson,
        _ => Format::Csv,
    };
    let extra = if selector & 0x80 == 0 {
        ExtraFields::Reject
    } else {
        ExtraFields::Ignore
    };
    match validate(schema(), extra, format, body) {
        Ok(v) => check(&v),
        Err(e) => assert!(e.line >= 1 && e.column >= 1),
    }
});
