//! What a producer's connection sees when the gateway refuses a POST before
//! reading its body, or when the body comes too slowly: the real answer, as
//! problem+json, and a connection that either stays usable or is announced
//! closed. A raw client, so what is on the wire is what is asserted.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::{Connector, TestApp, spawn_app, spawn_app_with};

/// Upper bound on any wait, so a regression fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct WireAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl WireAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn problem_code(&self) -> &str {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["status"], self.status, "{self:?}");
        self.body["code"].as_str().unwrap_or_default()
    }
}

async fn connect(app: &TestApp) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
    let address = app.ingest.trim_start_matches("http://");
    let (reader, writer) = TcpStream::connect(address)
        .await
        .expect("connecting to the gateway")
        .into_split();
    (BufReader::new(reader), writer)
}

fn post_head(connector: &Connector, token: &str, length: usize) -> String {
    format!(
        "POST /v1/connectors/{}/records HTTP/1.1\r\nHost: sluice.test\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {length}\r\n\r\n",
        connector.id
    )
}

/// The next answer on the connection; `None` if it was closed first.
async fn answer(reader: &mut BufReader<OwnedReadHalf>) -> Option<WireAnswer> {
    tokio::time::timeout(PATIENCE, async {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().expect("numeric Content-Length"));
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.ok()?;
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Some(WireAnswer {
            status,
            headers,
            body,
        })
    })
    .await
    .expect("the gateway answers or closes")
}

#[tokio::test]
async fn a_refused_post_leaves_a_keep_alive_connection_usable() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let (mut reader, mut writer) = connect(&app).await;
    let record = "{\"n\": 1}\n";

    // A wrong token is refused before the body is read.
    let refused = format!(
        "{}{record}",
        post_head(&connector, "sluice_w_wrong", record.len())
    );
    writer.write_all(refused.as_bytes()).await.unwrap();
    let first = answer(&mut reader).await.expect("the 401");
    assert_eq!(first.status, 401);
    assert_eq!(first.problem_code(), "unauthorized");
    assert!(!first.closes(), "{first:?}");

    let accepted = format!(
        "{}{record}",
        post_head(&connector, &connector.write_token, record.len())
    );
    writer.write_all(accepted.as_bytes()).await.unwrap();
    let second = answer(&mut reader)
        .await
        .expect("the same connection serves the next request");
    assert_eq!(second.status, 202, "{second:?}");
    assert_eq!(second.body["accepted"], 1);
}

#[tokio::test]
async fn a_body_too_large_by_content_length_is_answered_not_reset() {
    let app = spawn_app_with(|s| s.max_body_bytes = 64 * 1024).await;
    let connector = app.simple_connector().await;
    let (mut reader, mut writer) = connect(&app).await;
    let body = "{\"n\": 1}\n".repeat(100_000);

    // As a streaming proxy does: the whole body, then the answer.
    let sent = tokio::time::timeout(PATIENCE, async {
        writer
            .write_all(post_head(&connector, &connector.write_token, body.len()).as_bytes())
            .await?;
        writer.write_all(body.as_bytes()).await?;
        writer.shutdown().await
    })
    .await
    .expect("the gateway takes the body in");
    assert!(sent.is_ok(), "{sent:?}");
    let refused = answer(&mut reader).await.expect("the 413, not a reset");
    assert_eq!(refused.status, 413);
    assert_eq!(refused.problem_code(), "payload_too_large");
    assert!(refused.closes(), "{refused:?}");

    let answer = TestApp::send(app.post(&connector, "application/x-ndjson", "{\"n\": 2}")).await;
    assert_eq!(answer.status, 202, "{answer:?}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_408() {
    let app = spawn_app_with(|s| s.http.body_timeout = Duration::from_secs(1)).await;
    let connector = app.simple_connector().await;
    let (mut reader, mut writer) = connect(&app).await;
    // Announces 15 MiB and sends a record of it.
    writer
        .write_all(post_head(&connector, &connector.write_token, 15 << 20).as_bytes())
        .await
        .unwrap();
    writer.write_all(b"{\"n\": 1}\n").await.unwrap();
    let timed_out = answer(&mut reader).await.expect("the 408");
    assert_eq!(timed_out.status, 408);
    assert_eq!(timed_out.problem_code(), "body_timeout");
    assert!(timed_out.closes(), "{timed_out:?}");

    let answer = TestApp::send(app.post(&connector, "application/x-ndjson", "{\"n\": 2}")).await;
    assert_eq!(answer.status, 202, "{answer:?}");
}
