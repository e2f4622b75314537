//! The services' HTTP API as the test crates call it: one way to build a
//! request, to read an answer whole, and to create a connector.

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ADMIN_TOKEN;

/// A request to `url`, with `token` as its bearer token and `body` as its
/// JSON body when they are given.
pub fn request(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> RequestBuilder {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
}

/// A response read whole: status, headers and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Sends `request` and reads its answer.
    pub async fn of(request: RequestBuilder) -> Answer {
        Answer::read(request.send().await.expect("the server answers")).await
    }

    /// Reads `response`; a body that is not JSON fails the test.
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{status}: body is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The problem+json `code`, or "" when there is none.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// `method` on `url` with the operator's token and `body` as JSON.
pub async fn admin(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Answer {
    Answer::of(request(client, method, url, Some(ADMIN_TOKEN), body)).await
}

/// Sends `request` and answers its JSON body, whatever the status.
pub async fn fetch_json(request: RequestBuilder) -> Value {
    request
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a JSON body")
}

/// Sends `request` and answers its body as text, whatever the status.
pub async fn fetch_text(request: RequestBuilder) -> String {
    request
        .send()
        .await
        .expect("the server answers")
        .text()
        .await
        .expect("a text body")
}

/// Creates a connector through the control plane at `control` (its base
/// URL) with the operator token, and answers the created connector, tokens
/// included.
pub async fn create_connector(
    client: &reqwest::Client,
    control: &str,
    name: &str,
    fields: Value,
) -> Value {
    let answer = admin(
        client,
        Method::POST,
        &format!("{control}/v1/connectors"),
        Some(json!({"name": name, "fields": fields})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body
}

/// A created connector's id and tokens.
#[derive(Debug, Clone)]
pub struct Connector {
    pub id: Uuid,
    pub write_token: String,
    pub read_token: String,
}

impl Connector {
    /// The id and tokens of a create answer.
    pub fn of(created: &Value) -> Connector {
        let text = |key: &str| {
            created[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {created}"))
                .to_owned()
        };
        Connector {
            id: text("id").parse().expect("a connector id"),
            write_token: text("write_token"),
            read_token: text("read_token"),
        }
    }
}
