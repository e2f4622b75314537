//! `sluice connectors`: the life of a connector from the command line.

use serde_json::Value;

use crate::support::{Server, p};

#[tokio::test]
async fn create_list_show_edit_duplicate_rotate_and_delete() {
    let server = Server::start().await;
    let schema = server.path("schema.json");
    std::fs::write(
        &schema,
        r#"{"name": "orders", "fields": [{"name": "order_id", "type": "integer"}, {"name": "amount", "type": "decimal", "nullable": true}]}"#,
    )
    .unwrap();

    let created = server
        .run(&["connectors", "create", "--schema", p(&schema)])
        .ok();
    assert!(
        created.stdout.contains("Name:            orders"),
        "{}",
        created.stdout
    );
    assert!(
        created.stdout.contains("Write token: sluice_w_"),
        "{}",
        created.stdout
    );
    assert!(
        created.stdout.contains("shown only now"),
        "{}",
        created.stdout
    );

    let listed = server.run(&["connectors", "list"]).ok();
    let mut lines = listed.stdout.lines();
    assert!(
        lines.next().unwrap().starts_with("ID "),
        "{}",
        listed.stdout
    );
    assert!(
        lines.next().unwrap().contains(" orders "),
        "{}",
        listed.stdout
    );
    assert!(
        !listed.stdout.contains("sluice_w_"),
        "no token in a listing"
    );

    let shown = server.run(&["connectors", "show", "orders"]).ok();
    assert!(
        shown.stdout.contains("amount    decimal  yes"),
        "{}",
        shown.stdout
    );
    assert!(!shown.stdout.contains("sluice_w_"), "no token when shown");

    let edited_schema = server.path("edited.json");
    std::fs::write(
        &edited_schema,
        r#"[{"name": "id", "previous_name": "order_id", "type": "integer"}, {"name": "amount", "type": "decimal", "nullable": true}]"#,
    )
    .unwrap();
    let edited = server
        .run(&[
            "connectors",
            "edit",
            "orders",
            "--schema",
            p(&edited_schema),
            "--json",
        ])
        .ok();
    let edited: Value = serde_json::from_str(&edited.stdout).unwrap();
    assert_eq!(edited["schema_version"], 2);
    assert_eq!(edited["fields"][0]["name"], "id");

    let copy = server
        .run(&[
            "connectors",
            "duplicate",
            "orders",
            "--name",
            "orders_copy",
            "--json",
        ])
        .ok();
    let copy: Value = serde_json::from_str(&copy.stdout).unwrap();
    assert!(
        copy["write_token"]
            .as_str()
            .unwrap()
            .starts_with("sluice_w_")
    );

    let rotated = server
        .run(&["connectors", "rotate-token", "orders_copy", "read"])
        .ok();
    assert!(rotated.stdout.contains("sluice_r_"), "{}", rotated.stdout);

    let refused = server
        .run(&["connectors", "delete", "orders_copy"])
        .failed();
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    server
        .run(&["connectors", "delete", "orders_copy", "--yes"])
        .ok();
    let gone = server.run(&["connectors", "show", "orders_copy"]).failed();
    assert!(
        gone.stderr
            .contains("no connector is named \"orders_copy\""),
        "{}",
        gone.stderr
    );

    // The server's problem, by its code and detail.
    let taken = server
        .run(&["connectors", "create", "--schema", p(&schema)])
        .failed();
    assert!(
        taken.stderr.contains("(name_taken, HTTP 409)"),
        "{}",
        taken.stderr
    );
    // A schema the server would refuse is refused before it is sent.
    std::fs::write(&schema, r#"[{"name": "_id", "type": "integer"}]"#).unwrap();
    let invalid = server
        .run(&[
            "connectors",
            "create",
            "--name",
            "bad",
            "--schema",
            p(&schema),
        ])
        .failed();
    assert!(
        invalid.stderr.contains("fields[0].name"),
        "{}",
        invalid.stderr
    );
}
