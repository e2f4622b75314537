//! JSON Schema (draft 2020-12) of one record, as producers send it.

use serde_json::{Map, Value, json};

use crate::connector::ExtraFields;
use crate::field::{Field, FieldType};
use crate::schema::Schema;

/// The JSON Schema that a record of `schema` satisfies when sent as JSON.
pub fn record_json_schema(title: &str, schema: &Schema, extra: ExtraFields) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in schema.fields() {
        properties.insert(field.name.to_string(), field_schema(field));
        if !field.nullable {
            required.push(Value::from(field.name.as_str()));
        }
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": extra == ExtraFields::Ignore,
    })
}

fn field_schema(field: &Field) -> Value {
    let mut schema = match field.ty {
        FieldType::String => json!({"type": "string"}),
        FieldType::Integer => json!({
            "type": "integer",
            "minimum": i64::MIN,
            "maximum": i64::MAX,
        }),
        FieldType::Number => json!({"type": "number"}),
        FieldType::Decimal => json!({
            "type": ["number", "string"],
            "pattern": r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$",
        }),
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Timestamp => json!({"type": "string", "format": "date-time"}),
        FieldType::Json => json!({}),
    };
    let object = schema.as_object_mut().expect("every arm is an object");
    if field.nullable {
        match object.get_mut("type") {
            Some(Value::Array(types)) => types.push("null".into()),
            Some(ty) => *ty = json!([ty.clone(), "null"]),
            None => {}
        }
    }
    if let Some(description) = &field.description {
        object.insert("description".into(), description.clone().into());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldSpec;

    #[test]
    fn required_follows_nullability_and_types_widen_with_null() {
        let schema = Schema::define(&[
            FieldSpec {
                name: "a".into(),
                ty: "integer".into(),
                nullable: false,
                description: Some("the a".into()),
                previous_name: None,
            },
            FieldSpec {
                name: "b".into(),
                ty: "decimal".into(),
                nullable: true,
                description: None,
                previous_name: None,
            },
        ])
        .unwrap();
        let js = record_json_schema("orders", &schema, ExtraFields::Reject);
        assert_eq!(js["required"], json!(["a"]));
        assert_eq!(js["properties"]["a"]["description"], "the a");
        assert_eq!(
            js["properties"]["b"]["type"],
            json!(["number", "string", "null"])
        );
        assert_eq!(js["additionalProperties"], false);
    }
}
