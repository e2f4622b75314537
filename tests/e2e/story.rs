//! A user's story with the three services as separate processes: create a
//! connector, send each format, read back, edit the schema, send and read
//! under the new version, duplicate, rotate a token, delete.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_testkit::TestEnv;

use crate::support::{Client, Process};

#[tokio::test]
async fn a_connector_from_creation_to_deletion() {
    let env = TestEnv::new().await;
    let control = Process::start(&env, "sluice-control", &[], &[]).await;
    let ingest = Process::start(&env, "sluice-ingest", &[], &[]).await;
    let read = Process::start(&env, "sluice-read", &[], &[]).await;
    let client = Client::new(&control, &[&ingest], &[&read]);

    let created = client
        .create(
            "orders",
            json!([
                {"name": "order_id", "type": "integer"},
                {"name": "email", "type": "string"},
                {"name": "amount", "type": "decimal"},
                {"name": "placed_at", "type": "timestamp"},
                {"name": "note", "type": "string", "nullable": true},
            ]),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let write = created["write_token"].as_str().unwrap().to_owned();
    let read_token = created["read_token"].as_str().unwrap().to_owned();
    assert!(
        created["endpoint"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/connectors/{id}/records"))
    );

    // One record in each format, all stored before the answer (wait=true).
    let (status, answer) = client
        .post_records(&id, &write, "application/json",
            json!([{"order_id": 1, "email": "a@example.com", "amount": "12.50", "placed_at": "2026-11-29T14:00:00+01:00"}]).to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1);
    let (status, _) = client
        .post_records(&id, &write, "application/x-ndjson",
            "{\"order_id\": 2, \"email\": \"b@example.com\", \"amount\": 3, \"placed_at\": \"2026-11-29T13:00:01Z\", \"note\": \"gift\"}\n")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = client
        .post_records(&id, &write, "text/csv",
            "order_id,email,amount,placed_at,note\r\n3,c@example.com,0.001,2026-11-29T13:00:02Z,\r\n")
        .await;
    assert_eq!(status, StatusCode::OK);

    let records = client.read_all(&id, &read_token).await;
    let ids: Vec<&Value> = records.iter().map(|r| &r["order_id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(records[0]["amount"], "12.50");
    assert_eq!(records[0]["placed_at"], "2026-11-29T13:00:00Z");
    assert_eq!(records[2]["note"], Value::Null);

    // Edit: rename email to contact, widen order_id to number, add country.
    let response = client
        .admin(Method::PATCH, &format!("/v1/connectors/{id}"))
        .json(&json!({"fields": [
            {"name": "order_id", "type": "number"},
            {"name": "contact", "type": "string", "previous_name": "email"},
            {"name": "amount", "type": "decimal"},
            {"name": "placed_at", "type": "timestamp"},
            {"name": "note", "type": "string", "nullable": true},
            {"name": "country", "type": "string", "nullable": true},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let edited: Value = response.json().await.unwrap();
    assert_eq!(edited["schema_version"], 2);

    // The gateway applies the edit within a second of the answer.
    let record = json!({"order_id": 4.5, "contact": "d@example.com", "amount": "1", "placed_at": "2026-11-29T13:00:03Z", "country": "NZ"}).to_string();
    let mut status = StatusCode::IM_A_TEAPOT;
    for _ in 0..20 {
        (status, _) = client
            .post_records(&id, &write, "application/json", record.clone())
            .await;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    let records = client.read_all(&id, &read_token).await;
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[0]["contact"], "a@example.com",
        "renamed values are kept"
    );
    assert!(records[0].get("email").is_none());
    assert_eq!(records[3]["order_id"], 4.5);
    assert_eq!(records[3]["country"], "NZ");
    assert_eq!(records[0]["country"], Value::Null);

    // Duplicate: same schema, new id and tokens, no records.
    let response = client
        .admin(Method::POST, &format!("/v1/connectors/{id}/duplicate"))
        .json(&json!({"name": "orders-copy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let copy: Value = response.json().await.unwrap();
    assert_ne!(copy["id"], created["id"]);
    assert_eq!(copy["fields"], edited["fields"]);
    let copy_id = copy["id"].as_str().unwrap();
    assert!(
        client
            .read_all(copy_id, copy["read_token"].as_str().unwrap())
            .await
            .is_empty()
    );

    // Rotate the write token: the old one stops working.
    let response = client
        .admin(Method::POST, &format!("/v1/connectors/{id}/tokens/write"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.unwrap();
    let new_write = rotated["token"].as_str().unwrap();
    let mut old_status = StatusCode::OK;
    for _ in 0..20 {
        (old_status, _) = client
            .post_records(&id, &write, "application/json", record.clone())
            .await;
        if old_status == StatusCode::UNAUTHORIZED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(old_status, StatusCode::UNAUTHORIZED);
    let (status, _) = client
        .post_records(&id, new_write, "application/json", record.clone())
        .await;
    assert_eq!(status, StatusCode::OK);

    // Delete: 404 everywhere afterwards.
    let response = client
        .admin(Method::DELETE, &format!("/v1/connectors/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = client
        .admin(Method::GET, &format!("/v1/connectors/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let mut statuses = (StatusCode::OK, StatusCode::OK);
    for _ in 0..20 {
        let get = client
            .admin(Method::GET, &format!("/v1/connectors/{id}/records"))
            .send()
            .await
            .unwrap()
            .status();
        let post = client
            .admin(Method::POST, &format!("/v1/connectors/{id}/records"))
            .header("content-type", "application/json")
            .body(record.clone())
            .send()
            .await
            .unwrap()
            .status();
        statuses = (get, post);
        if statuses == (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses, (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
}
