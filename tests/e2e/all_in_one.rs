//! `sluice serve`: all three services in one process on one port.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sluice_testkit::{TestEnv, api, free_port};

use crate::support::{self, Client, Process};

#[tokio::test]
async fn sluice_serve_answers_every_route_on_one_port() {
    let env = TestEnv::new().await;
    let sluice = Process::start(&env, "sluice", &["serve"], &[]).await;
    let client = Client::single(&sluice);

    let created = client
        .create("signups", json!([{"name": "email", "type": "string"}, {"name": "at", "type": "date", "nullable": true}]))
        .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        created["endpoint"],
        format!("{}/v1/connectors/{id}/records", sluice.url)
    );
    let (status, answer) = client
        .post_records(
            id,
            created["write_token"].as_str().unwrap(),
            "text/csv",
            "email,at\nx@example.com,2026-02-28\ny@example.com,\n",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let records = client
        .read_all(id, created["read_token"].as_str().unwrap())
        .await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["at"], "2026-02-28");

    // The data lifecycle (issue 18) on the same port. A CSV row refused for
    // a column the schema lacks is replayed by CSV's grammar (the empty
    // cell is a null) once extra fields are ignored.
    let (write, read) = (
        created["write_token"].as_str().unwrap(),
        created["read_token"].as_str().unwrap(),
    );
    let partial = client
        .request(
            Method::POST,
            &format!("/v1/connectors/{id}/records?wait=true&mode=partial"),
            write,
        )
        .header("content-type", "text/csv")
        .body("email,at,source\nz@example.com,,web\n")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), StatusCode::OK);
    let patched = client
        .admin(Method::PATCH, &format!("/v1/connectors/{id}"))
        .json(&json!({"extra_fields": "ignore"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let replayed = api::fetch_json(client.request(
        Method::POST,
        &format!("/v1/connectors/{id}/rejected/replay"),
        write,
    ))
    .await;
    assert_eq!(replayed, json!({"replayed": 1, "still_rejected": 0}));
    let deleted = api::fetch_json(client.admin(
        Method::DELETE,
        &format!("/v1/connectors/{id}/records?email=eq.y@example.com"),
    ))
    .await;
    assert_eq!(deleted, json!({"deleted": 1}));
    let emails: Vec<_> = client
        .read_all(id, read)
        .await
        .iter()
        .map(|r| (r["email"].clone(), r["at"].clone()))
        .collect();
    assert_eq!(
        emails,
        [
            (json!("x@example.com"), json!("2026-02-28")),
            (json!("z@example.com"), json!(null))
        ]
    );

    for path in ["/", "/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = client.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let openapi = api::fetch_json(client.admin(Method::GET, "/openapi.json")).await;
    let paths = openapi["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/connectors"));
    assert!(paths.contains_key("/v1/connectors/{id}/records"));
    assert!(paths.contains_key("/v1/connectors/{id}/rejected"));
    assert!(paths.contains_key("/v1/connectors/{id}/rejected/replay"));
    let records = &paths["/v1/connectors/{id}/records"];
    assert!(
        ["get", "post", "delete"]
            .iter()
            .all(|m| records.get(m).is_some()),
        "{records}"
    );
}

#[tokio::test]
async fn sluice_serve_generates_an_operator_token_when_none_is_set() {
    let env = TestEnv::new().await;
    // Started by hand (not Process::start) to read what it prints.
    let port = free_port();
    let mut child = tokio::process::Command::from(support::service_command(&env, "sluice", port))
        .arg("serve")
        .env_remove("SLUICE_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut token = None;
    let mut line = String::new();
    while tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap()
        > 0
    {
        if let Some(t) = line
            .split_whitespace()
            .find(|w| w.starts_with("sluice_admin_"))
        {
            token = Some(t.to_owned());
            break;
        }
        line.clear();
    }
    let token = token.expect("the generated token is printed");
    let url = format!("http://127.0.0.1:{port}/v1/connectors");
    let http = reqwest::Client::new();
    let mut status = StatusCode::IM_A_TEAPOT;
    for _ in 0..100 {
        if let Ok(response) = http.get(&url).bearer_auth(&token).send().await {
            status = response.status();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    let unauthorized = http
        .get(&url)
        .bearer_auth("sluice_admin_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
}
