//! The console at 1280 and 360 CSS pixels wide: no page ever scrolls
//! sideways, and the shots of the list, the new-connector form and the
//! connector page (and of a new connector's tokens) are the ones in docs/screenshots (written when
//! SLUICE_WRITE_SCREENSHOTS=1, e.g. after a visible change to the console).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::{TestApp, spawn_app_behind};

const WIDTHS: [(u32, u32); 2] = [(1280, 800), (360, 740)];

async fn create(app: &TestApp, definition: Value) -> Value {
    let (status, created) = app
        .operator(Method::POST, "/v1/connectors", Some(definition))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn post(app: &TestApp, created: &Value, query: &str, records: Value) {
    let response = app
        .client
        .post(format!(
            "{}/v1/connectors/{}/records?wait=true{query}",
            app.address,
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(created["write_token"].as_str().unwrap())
        .json(&records)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Some connectors with records, so the pages show what they are for.
async fn furnish(app: &TestApp) -> String {
    let orders = create(
        app,
        json!({
            "name": "orders",
            "description": "Orders from the web shop, one record per order.",
            "fields": [
                {"name": "order_id", "type": "integer"},
                {"name": "email", "type": "string"},
                {"name": "total", "type": "decimal"},
                {"name": "paid", "type": "boolean"},
                {"name": "placed_at", "type": "timestamp"},
                {"name": "coupon", "type": "string", "nullable": true},
            ],
        }),
    )
    .await;
    let records: Vec<Value> = (1..=6)
        .map(|i| {
            json!({
                "order_id": 1000 + i,
                "email": format!("customer{i}@example.com"),
                "total": format!("{}.{:02}", 10 * i + 9, 5 * i),
                "paid": i % 3 != 0,
                "placed_at": format!("2026-11-29T1{}:{:02}:00Z", i % 10, 7 * i),
                "coupon": if i % 2 == 0 { json!("WINTER26") } else { Value::Null },
            })
        })
        .collect();
    post(app, &orders, "", json!(records)).await;
    post(
        app,
        &orders,
        "&mode=partial",
        json!([{"order_id": "ten", "email": "late@example.com", "total": "5", "paid": true, "placed_at": "yesterday"}]),
    )
    .await;
    let signups = create(
        app,
        json!({
            "name": "newsletter-signups",
            "fields": [
                {"name": "email", "type": "string"},
                {"name": "signed_up_on", "type": "date"},
            ],
            "extra_fields": "ignore",
        }),
    )
    .await;
    post(
        app,
        &signups,
        "",
        json!([{"email": "a@example.com", "signed_up_on": "2026-11-28"}]),
    )
    .await;
    create(
        app,
        json!({
            "name": "sensor-readings",
            "fields": [
                {"name": "sensor", "type": "string"},
                {"name": "celsius", "type": "number"},
                {"name": "payload", "type": "json", "nullable": true},
            ],
        }),
    )
    .await;
    orders["id"].as_str().unwrap().to_owned()
}

async fn assert_fits(browser: &Browser, width: u32, page: &str) {
    let measured = browser
        .eval(
            "return [window.innerWidth, document.documentElement.scrollWidth];",
            vec![],
        )
        .await;
    assert_eq!(measured[0], json!(width), "the viewport is {width} wide");
    assert!(
        measured[1].as_u64().unwrap() <= width as u64,
        "{page} scrolls sideways at {width} px: {measured}"
    );
}

/// Every visible control has a name a screen reader can say: a label, an
/// aria-label, or (for a button) its text.
async fn assert_labelled(browser: &Browser, page: &str) {
    let unnamed = browser
        .eval(
            r#"return [...document.querySelectorAll('input, select, textarea, button')]
                .filter((el) => el.offsetParent !== null)
                .filter((el) => {
                    const label = el.labels ? [...el.labels].map((l) => l.textContent.trim()).join(' ') : '';
                    const aria = el.getAttribute('aria-label') || '';
                    const text = el.tagName === 'BUTTON' ? el.textContent.trim() : '';
                    return !(label || aria || text);
                })
                .map((el) => el.outerHTML.slice(0, 160));"#,
            vec![],
        )
        .await;
    assert_eq!(unnamed, json!([]), "controls without a label on {page}");
}

/// Checks the page shown, scrolled to the top with nothing focused: it fits
/// the viewport's width and every control is labelled. Then shoots it as
/// `<file>-<width>.png`.
async fn check_and_save(
    browser: &mut Browser,
    (width, height): (u32, u32),
    page: &str,
    file: &str,
) {
    browser
        .eval(
            "document.activeElement.blur(); window.scrollTo(0, 0);",
            vec![],
        )
        .await;
    assert_fits(browser, width, page).await;
    assert_labelled(browser, page).await;
    let png = browser.full_page_png(width, height).await;
    save(&format!("{file}-{width}.png"), &png);
}

fn save(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    if std::env::var_os("SLUICE_WRITE_SCREENSHOTS").is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

#[tokio::test]
async fn every_page_fits_a_phone_and_a_desktop() {
    // The URL people would see in a real deployment, for the screenshots.
    let app = spawn_app_behind(Some("http://localhost:8080")).await;
    let orders = furnish(&app).await;
    let (width, height) = WIDTHS[0];
    let mut browser = Browser::start(width, height).await;
    browser.sign_in(&app.address).await;

    for (width, height) in WIDTHS {
        browser.resize(width, height).await;

        browser.goto(&format!("{}/#/", app.address)).await;
        browser.until_text("main", "sensor-readings").await;
        check_and_save(&mut browser, (width, height), "the list", "list").await;

        browser.goto(&format!("{}/#/new", app.address)).await;
        browser.until_text("h1", "New connector").await;
        browser
            .type_into("[data-testid=connector-name]", "payments")
            .await;
        for (n, (name, ty, nullable)) in [
            ("payment_id", "integer", false),
            ("amount", "decimal", false),
            ("currency", "string", false),
            ("settled_at", "timestamp", true),
        ]
        .into_iter()
        .enumerate()
        {
            if n > 0 {
                browser
                    .find("[data-testid=add-field]")
                    .await
                    .click()
                    .await
                    .unwrap();
            }
            browser.fill_field(n + 1, name, ty, nullable).await;
        }
        check_and_save(
            &mut browser,
            (width, height),
            "the new-connector form",
            "new-connector",
        )
        .await;

        // What Create shows once: the endpoint, the tokens and curl lines.
        browser
            .find("[data-testid=create]")
            .await
            .click()
            .await
            .unwrap();
        browser
            .until_text("h1", "Connector “payments” created")
            .await;
        check_and_save(
            &mut browser,
            (width, height),
            "the created connector",
            "created",
        )
        .await;
        let payments = browser.value("[data-testid=endpoint]").await;
        let payments = payments
            .trim_end_matches("/records")
            .rsplit('/')
            .next()
            .unwrap();
        let (status, _) = app
            .operator(Method::DELETE, &format!("/v1/connectors/{payments}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        browser
            .goto(&format!("{}/#/connectors/{orders}", app.address))
            .await;
        browser
            .until_text("[data-testid=records-preview]", "customer6@example.com")
            .await;
        browser
            .until_text("[data-testid=rejected-preview]", "late@example.com")
            .await;
        check_and_save(
            &mut browser,
            (width, height),
            "the connector page",
            "connector",
        )
        .await;
    }
    browser.close().await;
}
