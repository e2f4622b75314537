//! PATCH: settings, and every kind of field change against stored data.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{id_of, spawn_app};

fn names(connector: &Value) -> Vec<String> {
    connector["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["name"].as_str().unwrap(),
                f["type"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn name_and_description_change_without_a_new_schema_version() {
    let app = spawn_app().await;
    let created = app
        .create("orders", json!([{"name": "a", "type": "string"}]))
        .await;
    let id = id_of(&created);
    app.create("taken", json!([{"name": "a", "type": "string"}]))
        .await;

    let edited = app
        .patch(&id, json!({"name": "sales", "description": "all of them"}))
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(edited.body["name"], "sales");
    assert_eq!(edited.body["description"], "all of them");
    assert_eq!(edited.body["schema_version"], 1);
    assert_ne!(edited.body["updated_at"], created["updated_at"]);
    assert_eq!(edited.body["created_at"], created["created_at"]);
    assert_eq!(app.published(&id).await.unwrap().name, "sales");

    // Absent keeps the description, null clears it.
    let kept = app.patch(&id, json!({"name": "sales2"})).await;
    assert_eq!(kept.body["description"], "all of them");
    let cleared = app.patch(&id, json!({"description": null})).await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.body["description"], Value::Null);
    assert_eq!(cleared.body["name"], "sales2");

    let taken = app.patch(&id, json!({"name": "taken"})).await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.code(), "name_taken");

    let invalid = app
        .patch(&id, json!({"name": "", "extra_fields": "maybe"}))
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.code(), "invalid_schema");
    assert_eq!(invalid.body["errors"].as_array().unwrap().len(), 2);

    // A PATCH that changes nothing changes nothing, updated_at included.
    let before = app.get(&id).await.body;
    let same = app
        .patch(
            &id,
            json!({"name": "sales2", "fields": [{"name": "a", "type": "string"}]}),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body, before);

    assert_eq!(app.get(&id).await.body["name"], "sales2");
}

#[tokio::test]
async fn extra_fields_change_is_a_new_version() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create("c", json!([{"name": "a", "type": "string"}]))
            .await,
    );
    let edited = app.patch(&id, json!({"extra_fields": "ignore"})).await;
    assert_eq!(edited.body["extra_fields"], "ignore");
    assert_eq!(edited.body["schema_version"], 2);
    let doc = app.published(&id).await.unwrap();
    assert_eq!(doc.extra_fields, sluice_schema::ExtraFields::Ignore);
    assert_eq!(doc.schema_version, 2);
}

#[tokio::test]
async fn rename_add_and_remove_keep_convert_and_drop_stored_values() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create(
            "people",
            json!([
                {"name": "email", "type": "string"},
                {"name": "age", "type": "integer"},
                {"name": "note", "type": "string", "nullable": true},
            ]),
        )
        .await,
    );
    app.insert_record(
        &id,
        &[("email", "'a@x.io'"), ("age", "41"), ("note", "'hi'")],
    )
    .await;
    app.insert_record(&id, &[("email", "'b@x.io'"), ("age", "7")])
        .await;

    let edited = app
        .patch(
            &id,
            json!({"fields": [
                {"name": "mail", "type": "string", "previous_name": "email"},
                {"name": "age", "type": "integer", "nullable": true},
                {"name": "city", "type": "string", "nullable": true},
            ]}),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(
        names(&edited.body),
        ["mail:string", "age:integer", "city:string"]
    );
    assert_eq!(edited.body["fields"][1]["nullable"], true);
    assert_eq!(edited.body["schema_version"], 2);
    assert!(edited.body["fields"][0].get("previous_name").is_none());

    assert_eq!(
        app.stored(&id, "mail").await,
        [json!("a@x.io"), json!("b@x.io")]
    );
    assert_eq!(app.stored(&id, "city").await, [Value::Null, Value::Null]);
    let columns: Vec<String> = app.columns(&id).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(columns, ["_id", "_received_at", "mail", "age", "city"]);

    // Gateways get the new version, with the renamed field keeping its id.
    let doc = app.published(&id).await.unwrap();
    assert_eq!(doc.schema_version, 2);
    let mail = doc.schema.field_by_name("mail").unwrap();
    assert_eq!(mail.id.0, 1);
    assert_eq!(doc.schema.field_by_name("city").unwrap().id.0, 4);

    // An unknown previous_name is the caller's mistake.
    let wrong = app
        .patch(
            &id,
            json!({"fields": [{"name": "x", "type": "string", "previous_name": "nope"}]}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong.body["errors"][0]["code"], "unknown_previous_name");
}

#[tokio::test]
async fn allowed_type_changes_convert_every_stored_value() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create(
            "typed",
            json!([
                {"name": "i_num", "type": "integer"},
                {"name": "i_dec", "type": "integer"},
                {"name": "i_str", "type": "integer"},
                {"name": "d_ts", "type": "date"},
                {"name": "b_json", "type": "boolean"},
                {"name": "t_str", "type": "timestamp"},
                {"name": "n_str", "type": "number", "nullable": true},
            ]),
        )
        .await,
    );
    app.insert_record(
        &id,
        &[
            ("i_num", "9007199254740992"),
            ("i_dec", "-9223372036854775808"),
            ("i_str", "42"),
            ("d_ts", "'2026-11-29'"),
            ("b_json", "true"),
            ("t_str", "'2026-11-29T13:00:00.5+02:00'"),
            ("n_str", "1.5"),
        ],
    )
    .await;
    app.insert_record(
        &id,
        &[
            ("i_num", "-3"),
            ("i_dec", "0"),
            ("i_str", "-1"),
            ("d_ts", "'1999-01-31'"),
            ("b_json", "false"),
            ("t_str", "'2026-01-01T00:00:00Z'"),
        ],
    )
    .await;

    let edited = app
        .patch(
            &id,
            json!({"fields": [
                {"name": "i_num", "type": "number"},
                {"name": "i_dec", "type": "decimal"},
                {"name": "i_str", "type": "string"},
                {"name": "d_ts", "type": "timestamp"},
                {"name": "b_json", "type": "json"},
                {"name": "t_str", "type": "string"},
                {"name": "n_str", "type": "string", "nullable": true},
            ]}),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(edited.body["schema_version"], 2);

    assert_eq!(
        app.stored(&id, "i_num").await,
        [json!(9007199254740992_i64), json!(-3)]
    );
    assert_eq!(
        app.stored_as(&id, "\"i_dec\"::text").await,
        [json!("-9223372036854775808"), json!("0")]
    );
    assert_eq!(app.stored(&id, "i_str").await, [json!("42"), json!("-1")]);
    assert_eq!(
        app.stored_as(
            &id,
            "to_char(\"d_ts\" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
        )
        .await,
        [json!("2026-11-29 00:00:00"), json!("1999-01-31 00:00:00")]
    );
    assert_eq!(app.stored(&id, "b_json").await, [json!(true), json!(false)]);
    assert_eq!(
        app.stored(&id, "t_str").await,
        [
            json!("2026-11-29T11:00:00.5Z"),
            json!("2026-01-01T00:00:00Z")
        ]
    );
    assert_eq!(app.stored(&id, "n_str").await, [json!("1.5"), Value::Null]);
    let types: Vec<String> = app.columns(&id).await.into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        types[2..],
        [
            "double precision",
            "numeric",
            "text",
            "timestamp with time zone",
            "jsonb",
            "text",
            "text",
        ]
    );
}

#[tokio::test]
async fn integer_to_number_is_refused_when_a_stored_value_would_lose_precision() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create("big", json!([{"name": "n", "type": "integer"}]))
            .await,
    );
    app.insert_record(&id, &[("n", "1")]).await;
    app.insert_record(&id, &[("n", "9007199254740993")]).await;

    let refused = app
        .patch(&id, json!({"fields": [{"name": "n", "type": "number"}]}))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.code(), "incompatible_schema_change");
    let error = &refused.body["errors"][0];
    assert_eq!(error["field"], "n");
    assert_eq!(
        (error["from"].as_str(), error["to"].as_str()),
        (Some("integer"), Some("number"))
    );
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("integer") && detail.contains("number"),
        "{detail}"
    );

    // Nothing changed.
    let after = app.get(&id).await.body;
    assert_eq!(after["schema_version"], 1);
    assert_eq!(names(&after), ["n:integer"]);
    assert_eq!(
        app.stored(&id, "n").await,
        [json!(1), json!(9007199254740993_i64)]
    );
    assert_eq!(app.published(&id).await.unwrap().schema_version, 1);

    // Decimal keeps every integer exactly.
    let widened = app
        .patch(&id, json!({"fields": [{"name": "n", "type": "decimal"}]}))
        .await;
    assert_eq!(widened.status, StatusCode::OK);
    assert_eq!(
        app.stored_as(&id, "\"n\"::text").await,
        [json!("1"), json!("9007199254740993")]
    );
}

#[tokio::test]
async fn narrowing_is_refused_naming_field_and_types_and_changes_nothing() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create(
            "narrow",
            json!([
                {"name": "s", "type": "string"},
                {"name": "t", "type": "timestamp"},
                {"name": "keep", "type": "integer"},
            ]),
        )
        .await,
    );
    app.insert_record(&id, &[("s", "'12'"), ("t", "now()"), ("keep", "5")])
        .await;
    let refused = app
        .patch(
            &id,
            json!({"fields": [
                {"name": "s", "type": "integer"},
                {"name": "t", "type": "date"},
                {"name": "added", "type": "string", "nullable": true},
            ]}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.code(), "incompatible_schema_change");
    let errors: Vec<(&str, &str, &str)> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap(),
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [("s", "string", "integer"), ("t", "timestamp", "date")]
    );
    // Neither the removal of `keep` nor the addition happened.
    let columns: Vec<String> = app.columns(&id).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(columns, ["_id", "_received_at", "s", "t", "keep"]);
    assert_eq!(app.get(&id).await.body["schema_version"], 1);
}

#[tokio::test]
async fn two_fields_can_swap_names_and_keep_their_values() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create(
            "swap",
            json!([{"name": "first", "type": "string"}, {"name": "last", "type": "string"}]),
        )
        .await,
    );
    app.insert_record(&id, &[("first", "'Ada'"), ("last", "'Lovelace'")])
        .await;
    let edited = app
        .patch(
            &id,
            json!({"fields": [
                {"name": "last", "type": "string", "previous_name": "first"},
                {"name": "first", "type": "string", "previous_name": "last"},
            ]}),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(app.stored(&id, "last").await, [json!("Ada")]);
    assert_eq!(app.stored(&id, "first").await, [json!("Lovelace")]);
}

#[tokio::test]
async fn nullability_changes_apply_to_later_records_and_bump_the_version() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create("n", json!([{"name": "a", "type": "string"}]))
            .await,
    );
    app.insert_record(&id, &[("a", "'x'")]).await;
    let loosened = app
        .patch(
            &id,
            json!({"fields": [{"name": "a", "type": "string", "nullable": true}]}),
        )
        .await;
    assert_eq!(loosened.body["schema_version"], 2);
    app.insert_record(&id, &[]).await;
    // Back to not-null with a null stored: allowed, stored rows stay.
    let tightened = app
        .patch(&id, json!({"fields": [{"name": "a", "type": "string"}]}))
        .await;
    assert_eq!(tightened.status, StatusCode::OK, "{}", tightened.body);
    assert_eq!(tightened.body["schema_version"], 3);
    assert_eq!(tightened.body["fields"][0]["nullable"], false);
    assert_eq!(app.stored(&id, "a").await, [json!("x"), Value::Null]);
    assert!(!app.published(&id).await.unwrap().schema.fields()[0].nullable);
}

#[tokio::test]
async fn invalid_fields_are_all_reported_and_nothing_changes() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create("v", json!([{"name": "a", "type": "string"}]))
            .await,
    );
    let answer = app
        .patch(
            &id,
            json!({
                "name": "",
                "fields": [
                    {"name": "a", "type": "integer"},
                    {"name": "b b", "type": "nope"},
                ],
            }),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    let codes: Vec<&str> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_connector_name",
            "invalid_field_name",
            "unknown_field_type"
        ]
    );
    assert_eq!(app.get(&id).await.body["name"], "v");

    let missing = app
        .patch(&uuid::Uuid::now_v7().to_string(), json!({"name": "x"}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn field_names_that_are_sql_keywords_or_mixed_case_are_quoted() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create(
            "keywords",
            json!([
                {"name": "select", "type": "integer"},
                {"name": "Order", "type": "date"},
                {"name": "from", "type": "string"},
            ]),
        )
        .await,
    );
    app.insert_record(
        &id,
        &[("select", "1"), ("Order", "'2026-01-02'"), ("from", "'x'")],
    )
    .await;
    let edited = app
        .patch(
            &id,
            json!({"fields": [
                {"name": "table", "type": "string", "previous_name": "select"},
                {"name": "Order", "type": "timestamp"},
                {"name": "WHERE", "type": "boolean", "nullable": true},
            ]}),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(app.stored(&id, "table").await, [json!("1")]);
    let columns: Vec<String> = app.columns(&id).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(columns, ["_id", "_received_at", "table", "Order", "WHERE"]);
}
