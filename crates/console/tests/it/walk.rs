//! An operator's whole walk through the console in headless Chromium: sign
//! in, create a connector with four fields through the form, take the
//! endpoint and tokens it shows, post records with that write token, see
//! them in the preview, edit the schema, duplicate, delete.

use fantoccini::key::Key;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::{ADMIN_TOKEN, spawn_app};

#[tokio::test]
async fn an_operator_creates_fills_edits_duplicates_and_deletes_a_connector() {
    let app = spawn_app().await;
    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{}/", app.address)).await;

    // Sign-in: a wrong token is refused beside the field; the right one
    // gets in and is kept in this tab's session storage only.
    let token = browser.find("input[type=password]").await;
    token.send_keys("not-the-token").await.unwrap();
    token.send_keys(&Key::Enter.to_string()).await.unwrap();
    browser
        .until_text("main form", "Sluice does not know this token")
        .await;
    let token = browser.find("input[type=password]").await;
    assert_eq!(
        token.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    token.clear().await.unwrap();
    token.send_keys(ADMIN_TOKEN).await.unwrap();
    token.send_keys(&Key::Enter.to_string()).await.unwrap();
    browser.until_text("h1", "Connectors").await;
    let stored = browser
        .eval(
            "return [sessionStorage.getItem('sluice.operator_token'), localStorage.length, document.cookie];",
            vec![],
        )
        .await;
    assert_eq!(stored, json!([ADMIN_TOKEN, 0, ""]));
    browser.until_text("main", "No connectors yet").await;

    // The form: four fields, one of them first with a name the server
    // refuses, whose problem must appear beside that row.
    browser.press("[data-testid=new-connector]").await;
    browser.until_text("h1", "New connector").await;
    browser
        .type_into("[data-testid=connector-name]", "orders")
        .await;
    browser.fill_field(1, "email", "string", false).await;
    for _ in 0..3 {
        browser.press("[data-testid=add-field]").await;
        // The keyboard lands in the new row's name.
        let focused = browser.focused().await;
        assert_eq!(focused["class"], "field-name", "{focused}");
    }
    assert_eq!(browser.find_all(".field-row").await.len(), 4);
    let labels = browser.focused().await;
    assert_eq!(labels["label"], "Field 4 name");
    browser.fill_field(2, "2quantity", "integer", false).await;
    browser.fill_field(3, "price", "decimal", true).await;
    browser.fill_field(4, "placed_at", "timestamp", false).await;
    browser.press("[data-testid=create]").await;
    let problem = browser
        .until_text(".field-row:nth-child(2) .field-error", "")
        .await;
    assert!(!problem.is_empty(), "an explanation beside field 2");
    let name_input = browser.find(".field-row:nth-child(2) .field-name").await;
    assert_eq!(
        name_input.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    assert_eq!(browser.focused().await["label"], "Field 2 name");
    assert!(
        !browser
            .find(".field-row:nth-child(1) .field-error")
            .await
            .is_displayed()
            .await
            .unwrap(),
        "field 1 is fine"
    );
    browser.fill_field(2, "quantity", "integer", false).await;
    browser.press("[data-testid=create]").await;

    // Created: the endpoint and both tokens, and curl lines that use them.
    browser.until_text("h1", "Connector “orders” created").await;
    let endpoint = browser.value("[data-testid=endpoint]").await;
    let write_token = browser.value("[data-testid=write-token]").await;
    let read_token = browser.value("[data-testid=read-token]").await;
    assert!(
        endpoint.starts_with(&format!("{}/v1/connectors/", app.address))
            && endpoint.ends_with("/records"),
        "{endpoint}"
    );
    assert!(write_token.starts_with("sluice_w_"), "{write_token}");
    assert!(read_token.starts_with("sluice_r_"), "{read_token}");
    let send = browser.value("[data-testid=curl-send]").await;
    assert!(
        send.contains(&write_token) && send.contains(&endpoint),
        "{send}"
    );
    let retrieve = browser.value("[data-testid=curl-retrieve]").await;
    assert!(retrieve.contains(&read_token), "{retrieve}");
    let id = endpoint
        .trim_end_matches("/records")
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    // A producer posts with the token the console showed; one record of a
    // partial batch is refused and kept as rejected.
    let posted = app
        .client
        .post(format!("{endpoint}?wait=true&mode=partial"))
        .bearer_auth(&write_token)
        .json(&json!([
            {"email": "ada@example.com", "quantity": 3, "price": "19.99", "placed_at": "2026-11-29T13:00:00Z"},
            {"email": "grace@example.com", "quantity": 1, "price": null, "placed_at": "2026-11-29T14:30:00Z"},
            {"email": "bad@example.com", "quantity": "many", "price": "1", "placed_at": "2026-11-29T15:00:00Z"},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK, "{:?}", posted.text().await);
    let answer: Value = posted.json().await.unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(2), Some(1))
    );

    // The connector page shows them, newest first, with the stats.
    browser.press("[data-testid=open-connector]").await;
    browser.until_text("h1", "orders").await;
    browser
        .until_text("[data-testid=records-preview]", "grace@example.com")
        .await;
    let first_row = browser
        .find("[data-testid=records-table] tbody tr:first-child")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        first_row.contains("grace@example.com"),
        "newest first: {first_row}"
    );
    assert_eq!(
        browser
            .find_all("[data-testid=records-table] tbody tr")
            .await
            .len(),
        2
    );
    assert!(
        browser
            .find("[data-testid=records-table]")
            .await
            .text()
            .await
            .unwrap()
            .contains("19.99")
    );
    let rejected = browser
        .until_text("[data-testid=rejected-preview]", "bad@example.com")
        .await;
    assert!(
        rejected.contains("quantity"),
        "the error names the field: {rejected}"
    );
    assert_eq!(
        browser
            .find("[data-testid=stat-records]")
            .await
            .text()
            .await
            .unwrap(),
        "2"
    );
    assert_eq!(
        browser
            .find("[data-testid=stat-rejected]")
            .await
            .text()
            .await
            .unwrap(),
        "1"
    );

    // Rotating the write token shows the new one once; the old one stops.
    browser.press("[data-testid=rotate-write]").await;
    browser
        .until_text("dialog[open]", "stops working at once")
        .await;
    browser.press("dialog[open] [data-confirm]").await;
    let rotated = browser.find("[data-testid=new-write-token]").await;
    let new_write = rotated.prop("value").await.unwrap().unwrap_or_default();
    assert!(new_write.starts_with("sluice_w_") && new_write != write_token);
    let record = json!({"email": "x@example.com", "quantity": 1, "price": null, "placed_at": "2026-11-29T16:00:00Z"});
    let old = app
        .client
        .post(&endpoint)
        .bearer_auth(&write_token)
        .json(&record)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = app
        .client
        .post(format!("{endpoint}?wait=true"))
        .bearer_auth(&new_write)
        .json(&record)
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), StatusCode::OK);
    browser.press("[data-testid=refresh-records]").await;
    browser
        .until_text(
            "[data-testid=records-table] tbody tr:first-child",
            "x@example.com",
        )
        .await;

    // An incompatible change is refused with the server's explanation,
    // beside the field, and nothing changes.
    browser
        .find(".field-row:nth-child(1) .field-type")
        .await
        .select_by_value("integer")
        .await
        .unwrap();
    browser.press("[data-testid=save]").await;
    let summary = browser
        .until_text("[data-testid=problems]", "refused")
        .await;
    assert!(summary.contains("email"), "{summary}");
    let beside = browser
        .until_text(".field-row:nth-child(1) .field-error", "")
        .await;
    assert!(
        beside.contains("email") || beside.contains("string"),
        "{beside}"
    );
    let (_, unchanged) = app
        .operator(Method::GET, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(unchanged["schema_version"], 1);

    // Then a compatible edit: rename email, widen quantity to number, make
    // placed_at nullable, drop price, add a note.
    browser
        .find(".field-row:nth-child(1) .field-type")
        .await
        .select_by_value("string")
        .await
        .unwrap();
    browser
        .fill_field(1, "customer_email", "string", false)
        .await;
    assert!(
        browser
            .find(".field-row:nth-child(1) .renamed")
            .await
            .text()
            .await
            .unwrap()
            .contains("Renamed from email")
    );
    browser.fill_field(2, "quantity", "number", false).await;
    browser.fill_field(4, "placed_at", "timestamp", true).await;
    browser.press(".field-row:nth-child(3) .field-delete").await;
    browser.press("[data-testid=add-field]").await;
    browser.fill_field(4, "note", "string", true).await;
    browser.press("[data-testid=save]").await;
    browser
        .until_text("[data-testid=saved]", "Schema version 2")
        .await;
    let (_, edited) = app
        .operator(Method::GET, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(
        edited["fields"],
        json!([
            {"name": "customer_email", "type": "string", "nullable": false},
            {"name": "quantity", "type": "number", "nullable": false},
            {"name": "placed_at", "type": "timestamp", "nullable": true},
            {"name": "note", "type": "string", "nullable": true},
        ])
    );
    // The renamed field kept its values.
    let table = browser
        .until_text("[data-testid=records-preview]", "customer_email")
        .await;
    assert!(table.contains("ada@example.com"), "{table}");

    // Duplicate: asks for the name, then shows the copy's own tokens.
    let copy_name = browser.find("[data-testid=duplicate-name]").await;
    // A taken name is explained beside the name box.
    copy_name.clear().await.unwrap();
    copy_name.send_keys("orders").await.unwrap();
    copy_name.send_keys(&Key::Enter.to_string()).await.unwrap();
    browser
        .until_text(
            "section[aria-labelledby=duplicate-h] .error",
            "already has this name",
        )
        .await;
    assert_eq!(
        copy_name.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    copy_name.clear().await.unwrap();
    copy_name.send_keys("orders-eu").await.unwrap();
    copy_name.send_keys(&Key::Enter.to_string()).await.unwrap();
    browser.until_text("h1", "Copy “orders-eu” created").await;
    let copy_write = browser.value("[data-testid=write-token]").await;
    assert!(copy_write.starts_with("sluice_w_") && copy_write != write_token);
    let copy_endpoint = browser.value("[data-testid=endpoint]").await;
    assert_ne!(copy_endpoint, endpoint);

    // The list shows both; search narrows it by name.
    browser.goto(&format!("{}/#/", app.address)).await;
    browser.until_text("main", "orders-eu").await;
    assert_eq!(browser.find_all("tbody tr").await.len(), 2);
    // name, fields, schema version, records, rejected, last received
    let orders_row = browser
        .eval(
            "return [...document.querySelector(`tr[data-connector-id='${arguments[0]}']`).children].map((c) => c.innerText);",
            vec![json!(id)],
        )
        .await;
    let cells = orders_row.as_array().expect("the row's cells");
    assert_eq!(
        cells[..5],
        json!(["orders", "4", "2", "3", "1"]).as_array().unwrap()[..]
    );
    assert_ne!(cells[5], "never");
    let search = browser.find("input[type=search]").await;
    search.send_keys("EU").await.unwrap();
    browser.until_text("main", "1 of 2 connectors match").await;
    let visible = browser
        .eval(
            "return [...document.querySelectorAll('tbody tr')].filter(r => !r.hidden).map(r => r.querySelector('th').innerText);",
            vec![],
        )
        .await;
    assert_eq!(visible, json!(["orders-eu"]));

    // Delete asks first, saying the records go too; cancelling keeps it.
    browser
        .goto(&format!("{}/#/connectors/{id}", app.address))
        .await;
    browser.until_text("h1", "orders").await;
    browser.press("[data-testid=delete]").await;
    let dialog = browser.until_text("dialog[open]", "Delete “orders”?").await;
    assert!(
        dialog.contains("3 stored records") && dialog.contains("cannot be recovered"),
        "{dialog}"
    );
    // Cancel has the focus: Enter on it keeps the connector.
    browser.keys(&Key::Enter.to_string()).await;
    browser
        .until(
            "the dialog to close",
            "return !document.querySelector('dialog');",
        )
        .await;
    let (status, _) = app
        .operator(Method::GET, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    browser.press("[data-testid=delete]").await;
    browser.press("dialog[open] [data-confirm]").await;
    browser
        .until_text("[data-testid=flash]", "were deleted")
        .await;
    assert_eq!(browser.find_all("tbody tr").await.len(), 1);
    let (status, _) = app
        .operator(Method::GET, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let gone = app
        .client
        .get(&endpoint)
        .bearer_auth(&read_token)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(
            gone.status(),
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED
        ),
        "{}",
        gone.status()
    );

    // Signing out forgets the token.
    browser.press("#sign-out").await;
    browser.until_text("h1", "Sign in").await;
    let stored = browser
        .eval(
            "return sessionStorage.getItem('sluice.operator_token');",
            vec![],
        )
        .await;
    assert_eq!(stored, Value::Null);
    browser.close().await;
}
