//! The console's routes over plain HTTP: what a browser is sent.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};

use crate::spawn_app;

#[tokio::test]
async fn the_page_and_every_module_it_imports_are_served() {
    let app = spawn_app().await;
    let page = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/app.js">"#));
    assert!(html.contains(r#"href="/console/console.css""#));

    let css = app
        .client
        .get(format!("{}/console/console.css", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");

    // Follow the imports from app.js: a module that is written but not
    // embedded would break the console only in the browser.
    let mut seen = BTreeSet::new();
    let mut pending = vec!["/console/app.js".to_owned()];
    while let Some(path) = pending.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8",
            "{path}"
        );
        let source = response.text().await.unwrap();
        for line in source.lines().filter(|l| l.starts_with("import ")) {
            let module = line
                .rsplit_once("from './")
                .and_then(|(_, rest)| rest.split_once('\''))
                .map(|(name, _)| name)
                .unwrap_or_else(|| panic!("an import of a sibling module: {line}"));
            pending.push(format!("/console/{module}"));
        }
    }
    assert!(seen.len() >= 5, "{seen:?}");
}

#[tokio::test]
async fn unknown_assets_and_other_methods_get_problem_json() {
    let app = spawn_app().await;
    let missing = app
        .client
        .get(format!("{}/console/missing.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()[CONTENT_TYPE], "application/problem+json");

    let post = app
        .client
        .post(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()[CONTENT_TYPE], "application/problem+json");
    let body: serde_json::Value = post.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
}
