//! HTTP/1.1 by hand, for what a well-behaved client library hides: sending
//! half a request and stalling, choosing the client address, and seeing
//! whether a keep-alive connection survives an early refusal.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// Opens a connection from `from` (any address of 127.0.0.0/8 on Linux), so
/// that an attack is a client of its own to the per-address throttle.
pub(crate) async fn connect(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One connection, read by whole answers.
pub(crate) struct Connection {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

/// The parts of an answer an attack looks at.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    /// `Connection: close`, or a body delimited by the close: the client
    /// must not send another request on this connection.
    pub close: bool,
}

impl Connection {
    pub async fn open(from: IpAddr, to: SocketAddr) -> io::Result<Connection> {
        let (read, writer) = connect(from, to).await?.into_split();
        Ok(Connection {
            reader: BufReader::new(read),
            writer,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Reads one answer, its body included (by `Content-Length`, chunks, or
    /// up to the close).
    pub async fn answer(&mut self) -> io::Result<Answer> {
        read_answer(&mut self.reader).await
    }
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed without (the rest of) an answer",
        ));
    }
    Ok(line.trim_end().to_owned())
}

pub(crate) async fn read_answer(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<Answer> {
    let status_line = read_line(reader).await?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| broken("no status line"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        let line = read_line(reader).await?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(broken("a header line without a colon"));
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(value.parse::<u64>().map_err(|_| broken("Content-Length"))?)
            }
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value.contains("close"),
            _ => {}
        }
    }
    if status == 204 || status == 304 || status < 200 {
        return Ok(Answer { status, close });
    }
    if chunked {
        loop {
            let size = read_line(reader).await?;
            let size = u64::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| broken("chunk size"))?;
            if size == 0 {
                while !read_line(reader).await?.is_empty() {}
                break;
            }
            discard(reader, size + 2).await?;
        }
    } else if let Some(length) = length {
        discard(reader, length).await?;
    } else {
        tokio::io::copy(reader, &mut tokio::io::sink()).await?;
        close = true;
    }
    Ok(Answer { status, close })
}

async fn discard(reader: &mut BufReader<OwnedReadHalf>, bytes: u64) -> io::Result<()> {
    let copied = tokio::io::copy(&mut reader.take(bytes), &mut tokio::io::sink()).await?;
    if copied < bytes {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed within a body",
        ));
    }
    Ok(())
}

/// The head of a request, with `Host` and the given headers.
pub(crate) fn head(method: &str, path: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: sluice.bench\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}
