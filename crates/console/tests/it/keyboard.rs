//! The console with the keyboard alone: the skip link, a Tab order that
//! reaches every control of the new-connector form, keys that act, and a
//! busy button that keeps the focus.

use fantoccini::key::Key;
use serde_json::json;
use sluice_testkit::api;

use crate::browser::Browser;
use crate::{ADMIN_TOKEN, spawn_app};

#[tokio::test]
async fn the_new_connector_form_works_with_the_keyboard_alone() {
    let app = spawn_app().await;
    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{}/", app.address)).await;
    browser.find("input[type=password]").await;
    // Signing in by keyboard: the token box has the focus on arrival.
    assert_eq!(browser.focused().await["label"], "Operator token");
    browser.keys(ADMIN_TOKEN).await;
    browser.press_key(Key::Enter).await;
    browser.until_text("h1", "Connectors").await;
    browser.goto(&format!("{}/#/new", app.address)).await;
    browser.until_text("h1", "New connector").await;

    // On a fresh load, the first Tab reaches the skip link, and following
    // it lands in the content without leaving the page.
    browser.client.refresh().await.unwrap();
    browser.until_text("h1", "New connector").await;
    browser.press_key(Key::Tab).await;
    assert_eq!(
        browser
            .eval("return document.activeElement.className;", vec![])
            .await,
        json!("skip-link")
    );
    browser.press_key(Key::Enter).await;
    assert_eq!(
        browser
            .eval("return [document.activeElement.id, location.hash];", vec![])
            .await,
        json!(["main", "#/new"])
    );

    // Tab walks through every control of the form, in order.
    let controls = browser
        .eval(
            r#"const found = [...document.querySelectorAll('main input, main select, main textarea, main button, main a[href]')]
                   .filter((el) => el.offsetParent !== null);
               found.forEach((el, i) => { el.dataset.kbd = String(i); });
               return found.length;"#,
            vec![],
        )
        .await
        .as_u64()
        .unwrap();
    let mut reached = Vec::new();
    for _ in 0..controls + 5 {
        browser.press_key(Key::Tab).await;
        let index = browser
            .eval("return document.activeElement.dataset.kbd || null;", vec![])
            .await;
        if let Some(i) = index.as_str() {
            let i: u64 = i.parse().unwrap();
            if !reached.contains(&i) {
                reached.push(i);
            }
        }
    }
    // Radio buttons of one group take one Tab stop, so the second one is
    // reached with the arrow keys instead.
    let radios_skipped = 1;
    assert_eq!(
        reached.len() as u64 + radios_skipped,
        controls,
        "Tab reached {reached:?} of {controls} controls"
    );
    let mut in_order = reached.clone();
    in_order.sort();
    assert_eq!(reached, in_order, "Tab follows the page's order");

    // Keys act: Enter in the name box submits, Space on Add field adds a
    // row and puts the focus in it, Delete removes it.
    let name = browser.find("[data-testid=connector-name]").await;
    name.send_keys("keyboard").await.unwrap();
    browser
        .find(".field-row .field-name")
        .await
        .send_keys("email")
        .await
        .unwrap();
    browser
        .find("[data-testid=add-field]")
        .await
        .send_keys(" ")
        .await
        .unwrap();
    assert_eq!(browser.focused().await["label"], "Field 2 name");
    browser.keys("count").await;
    browser.press_key(Key::Tab).await;
    assert_eq!(browser.focused().await["label"], "Field 2 type");
    // Arrow keys change a focused select.
    browser.press_key(Key::Down).await;
    assert_eq!(
        browser
            .eval("return document.activeElement.value;", vec![])
            .await,
        json!("integer")
    );
    browser.press_key(Key::Tab).await;
    browser.press_key(Key::Space).await;
    assert_eq!(
        browser
            .eval("return document.activeElement.checked;", vec![])
            .await,
        json!(true),
        "Space ticks nullable"
    );
    name.send_keys(&Key::Enter.to_string()).await.unwrap();
    browser
        .until_text("h1", "Connector “keyboard” created")
        .await;
    assert_eq!(
        browser.focused().await["tag"],
        "h1",
        "the focus moves to what changed"
    );
    let (_, list) = app
        .operator(reqwest::Method::GET, "/v1/connectors", None)
        .await;
    assert_eq!(
        list["connectors"][0]["fields"],
        json!([
            {"name": "email", "type": "string", "nullable": false},
            {"name": "count", "type": "integer", "nullable": true},
        ])
    );
    browser.close().await;
}

/// A button that works (here Refresh records) keeps the keyboard focus and
/// says it is busy with `aria-disabled`, and refuses a second press until
/// its work is done; a `disabled` one would drop the focus to the page.
#[tokio::test]
async fn a_busy_button_keeps_the_focus_and_refuses_a_second_press() {
    let app = spawn_app().await;
    let created = api::create_connector(
        &app.client,
        &app.address,
        "busy",
        json!([{"name": "n", "type": "integer"}]),
    )
    .await;
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app.address).await;
    browser
        .goto(&format!(
            "{}/#/connectors/{}",
            app.address,
            created["id"].as_str().unwrap()
        ))
        .await;
    browser
        .until_text("[data-testid=records-preview]", "No records yet")
        .await;
    browser
        .until_text("[data-testid=rejected-preview]", "No rejected records")
        .await;

    // The API's answers wait until the test lets them through.
    browser
        .eval(
            r#"window.fetchesStarted = 0;
               const held = new Promise((release) => { window.releaseFetches = release; });
               const fetch = window.fetch.bind(window);
               window.fetch = (...request) => {
                   window.fetchesStarted += 1;
                   return held.then(() => fetch(...request));
               };"#,
            vec![],
        )
        .await;
    let refresh = "[data-testid=refresh-records]";
    let busy = format!("return document.querySelector('{refresh}').getAttribute('aria-disabled');");
    browser.press(refresh).await;
    assert_eq!(browser.eval(&busy, vec![]).await, json!("true"));
    assert_eq!(browser.focused().await["testid"], "refresh-records");
    browser.press_key(Key::Enter).await;
    assert_eq!(
        browser.eval("return window.fetchesStarted;", vec![]).await,
        json!(1),
        "the second press is refused while the first one works"
    );

    browser.eval("window.releaseFetches();", vec![]).await;
    browser
        .until(
            "the refresh to finish",
            &format!(
                "return document.querySelector('{refresh}').getAttribute('aria-disabled') === null;"
            ),
        )
        .await;
    assert_eq!(browser.focused().await["testid"], "refresh-records");
    assert_eq!(
        browser.eval("return window.fetchesStarted;", vec![]).await,
        json!(1)
    );
    browser.close().await;
}
