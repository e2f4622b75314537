//! A raw HTTP/1.1 client connection, for tests that assert what is on the
//! wire (an answer on a kept connection, `Connection: close`, a socket the
//! server closed) rather than what an HTTP client library makes of it.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Upper bound on any wait, so that a regression fails instead of hanging;
/// never what a test asserts.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// An answer as read off the wire.
#[derive(Debug)]
pub struct WireAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WireAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the answer announces that the server closes the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The problem+json body, checked for the members SPEC 4 requires.
    pub fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["status"], self.status, "{body}");
        for member in ["type", "title", "detail", "code"] {
            assert!(body[member].is_string(), "{member} missing: {body}");
        }
        body
    }
}

/// One client connection, its halves apart so that a test can keep sending
/// while it reads.
pub struct WireClient {
    pub reader: WireReader,
    pub writer: OwnedWriteHalf,
}

/// The reading half of a [`WireClient`].
pub struct WireReader(BufReader<OwnedReadHalf>);

impl WireClient {
    pub async fn connect(address: impl ToSocketAddrs) -> WireClient {
        let stream = TcpStream::connect(address).await.expect("connecting");
        let (reader, writer) = stream.into_split();
        WireClient {
            reader: WireReader(BufReader::new(reader)),
            writer,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("sending");
    }

    pub async fn answer(&mut self) -> Option<WireAnswer> {
        self.reader.answer().await
    }
}

impl WireReader {
    /// The next answer, or `None` when the server closed the connection
    /// first.
    pub async fn answer(&mut self) -> Option<WireAnswer> {
        tokio::time::timeout(PATIENCE, self.read_answer())
            .await
            .expect("the server answers or closes")
    }

    async fn read_answer(&mut self) -> Option<WireAnswer> {
        let mut line = String::new();
        if self.0.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.0.read_line(&mut line).await.ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut answer = WireAnswer {
            status,
            headers,
            body: Vec::new(),
        };
        let length: usize = answer
            .header("content-length")
            .map_or(0, |v| v.parse().expect("a numeric Content-Length"));
        answer.body.resize(length, 0);
        self.0.read_exact(&mut answer.body).await.ok()?;
        Some(answer)
    }

    /// True once the server has closed the connection (after any answer)
    /// without a reset.
    pub async fn is_closed_by_server(&mut self) -> bool {
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, self.0.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection")
            .is_ok()
    }
}
