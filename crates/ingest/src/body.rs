//! Reading a request body: its format from `Content-Type`, its encoding from
//! `Content-Encoding`, and its bytes under `SLUICE_MAX_BODY_BYTES`.
//!
//! The limit applies to the decompressed size and is enforced while the body
//! streams in, and then while a gzip body is inflated step by step, so a
//! small "gzip bomb" costs at most the limit in memory and is refused as
//! soon as it crosses it. Every buffer is held in the request's share of
//! the gateway's memory before it is allocated.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use flate2::read::MultiGzDecoder;
use futures::StreamExt;
use sluice_schema::Format;

use crate::budget::RequestMemory;
use crate::error::IngestError;

/// The body format named by `Content-Type`; parameters such as `charset` are
/// ignored (every format must be UTF-8 anyway).
pub(crate) fn format_of(headers: &HeaderMap) -> Result<Format, IngestError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(IngestError::UnsupportedMediaType(None));
    };
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let essence = text.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(Format::Json)
    } else if essence.eq_ignore_ascii_case("application/x-ndjson") {
        Ok(Format::Ndjson)
    } else if essence.eq_ignore_ascii_case("text/csv") {
        Ok(Format::Csv)
    } else {
        Err(IngestError::UnsupportedMediaType(Some(text)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
}

/// The body's `Content-Encoding`: none, `identity` or `gzip`.
pub(crate) fn encoding_of(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let mut encoding = Encoding::Identity;
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("identity") {
                continue;
            }
            // One layer of gzip only: a body compressed twice is refused
            // rather than inflated twice.
            let gzip = coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip");
            if gzip && encoding == Encoding::Identity {
                encoding = Encoding::Gzip;
            } else {
                return Err(IngestError::UnsupportedEncoding(text.into_owned()));
            }
        }
    }
    Ok(encoding)
}

/// The body's size as the client announced it, if it did.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Reads the whole body, decompressed, refusing it with 413 as soon as it
/// passes `limit` bytes. Every byte it keeps is held in `memory` first.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
    limit: usize,
    memory: &mut RequestMemory,
) -> Result<Vec<u8>, IngestError> {
    let declared = declared_length(headers);
    let too_large = IngestError::PayloadTooLarge { limit };
    // A gzip body is read whole before it is inflated: it is at most
    // about as large as the limit, and inflating from memory lets each
    // step of the output be reserved before it is written.
    let received_limit = match encoding {
        Encoding::Identity => limit,
        Encoding::Gzip => compressed_limit(limit),
    };
    // Refuse before reading a byte when the client announced too much.
    if declared.is_some_and(|n| n > received_limit) {
        return Err(too_large);
    }

    let mut received = Vec::new();
    if let Some(n) = declared {
        make_room(&mut received, n, received_limit, memory).await?;
    }
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(body_read_failed)?;
        if received.len() + chunk.len() > received_limit {
            return Err(too_large);
        }
        make_room(&mut received, chunk.len(), received_limit, memory).await?;
        received.extend_from_slice(&chunk);
    }
    match encoding {
        Encoding::Identity => Ok(received),
        // An empty body is empty whatever its announced encoding.
        Encoding::Gzip if received.is_empty() => Ok(received),
        Encoding::Gzip => {
            let inflated = inflate(&received, limit, memory).await;
            memory.let_go(received.capacity());
            inflated
        }
    }
}

/// Compressed bytes read at most. gzip never grows data by more than a few
/// bytes per 64 KiB block, so a body past this is refused even if it would
/// inflate to little (a stream of empty blocks is endless otherwise).
fn compressed_limit(limit: usize) -> usize {
    limit.saturating_add(limit / 64).saturating_add(64 * 1024)
}

fn body_read_failed(error: axum::Error) -> IngestError {
    IngestError::MalformedBody(format!("the body could not be read: {error}"))
}

/// Makes room for `more` bytes in `buffer`, holding the memory before it is
/// allocated: doubling as a `Vec` would, but never past `cap`.
async fn make_room(
    buffer: &mut Vec<u8>,
    more: usize,
    cap: usize,
    memory: &mut RequestMemory,
) -> Result<(), IngestError> {
    const FIRST: usize = 64 * 1024;
    let needed = buffer.len() + more;
    if needed <= buffer.capacity() {
        return Ok(());
    }
    let capacity = (buffer.capacity() * 2).max(FIRST).min(cap).max(needed);
    memory.hold(capacity - buffer.capacity()).await?;
    buffer.reserve_exact(capacity - buffer.len());
    Ok(())
}

/// Inflates a whole gzip body (one or more members) step by step, holding
/// each step's output before it is kept, and refusing it with 413 as soon
/// as it passes `limit`: a small "gzip bomb" costs at most the limit.
async fn inflate(
    compressed: &[u8],
    limit: usize,
    memory: &mut RequestMemory,
) -> Result<Vec<u8>, IngestError> {
    const STEP: usize = 64 * 1024;
    let mut decoder = MultiGzDecoder::new(compressed);
    let mut step = vec![0u8; STEP];
    let mut out = Vec::new();
    loop {
        let n = decoder.read(&mut step).map_err(not_gzip)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(IngestError::PayloadTooLarge { limit });
        }
        make_room(&mut out, n, limit, memory).await?;
        out.extend_from_slice(&step[..n]);
        // Inflating is CPU work on the reactor: let other tasks in.
        tokio::task::consume_budget().await;
    }
}

fn not_gzip(error: std::io::Error) -> IngestError {
    IngestError::MalformedBody(format!("the body is not valid gzip: {error}"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::budget::FairShare;
    use axum::http::HeaderValue;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn content_types_ignore_parameters_and_case() {
        let of = |v: &str| format_of(&headers(&[(header::CONTENT_TYPE, v)]));
        assert_eq!(of("application/json").unwrap(), Format::Json);
        assert_eq!(of("Application/JSON; charset=utf-8").unwrap(), Format::Json);
        assert_eq!(of("application/x-ndjson").unwrap(), Format::Ndjson);
        assert_eq!(of("text/csv;header=present").unwrap(), Format::Csv);
        assert!(matches!(
            of("text/plain"),
            Err(IngestError::UnsupportedMediaType(Some(_)))
        ));
        assert!(matches!(
            format_of(&HeaderMap::new()),
            Err(IngestError::UnsupportedMediaType(None))
        ));
    }

    #[test]
    fn only_gzip_and_identity_encodings_are_accepted() {
        let of = |v: &str| encoding_of(&headers(&[(header::CONTENT_ENCODING, v)]));
        assert_eq!(encoding_of(&HeaderMap::new()).unwrap(), Encoding::Identity);
        assert_eq!(of("identity").unwrap(), Encoding::Identity);
        assert_eq!(of("GZIP").unwrap(), Encoding::Gzip);
        assert!(matches!(of("br"), Err(IngestError::UnsupportedEncoding(_))));
        assert!(matches!(
            of("gzip, gzip"),
            Err(IngestError::UnsupportedEncoding(_))
        ));
    }

    async fn read(body: Vec<u8>, encoding: Encoding, limit: usize) -> Result<Vec<u8>, IngestError> {
        let budget = FairShare::new(1 << 30, 1 << 30);
        let mut memory = RequestMemory::reserve(&budget, uuid::Uuid::nil(), 0)
            .await
            .unwrap();
        let outcome = read_limited(
            &HeaderMap::new(),
            Body::from(body),
            encoding,
            limit,
            &mut memory,
        )
        .await;
        // Whatever was kept was held first.
        if let Ok(kept) = &outcome {
            assert!(memory.in_use() >= kept.capacity());
        }
        outcome
    }

    #[tokio::test]
    async fn inflating_stops_at_the_limit_without_inflating_the_rest() {
        let bomb = gzip(&vec![0u8; 8 * 1024 * 1024]);
        let budget = FairShare::new(1 << 30, 1 << 30);
        let mut memory = RequestMemory::reserve(&budget, uuid::Uuid::nil(), 0)
            .await
            .unwrap();
        let outcome = inflate(&bomb, 64 * 1024, &mut memory).await;
        assert!(matches!(
            outcome,
            Err(IngestError::PayloadTooLarge { limit: 65536 })
        ));
        // Never held much more than the limit.
        assert!(memory.in_use() <= 64 * 1024);
    }

    #[tokio::test]
    async fn gzip_bodies_may_have_many_members_and_must_be_gzip() {
        let mut data = gzip(b"[{\"a\":1}");
        data.extend(gzip(b",{\"a\":2}]"));
        let inflated = read(data, Encoding::Gzip, 1024).await.unwrap();
        assert_eq!(inflated, b"[{\"a\":1},{\"a\":2}]");

        let garbage = read(b"this is not gzip at all".to_vec(), Encoding::Gzip, 1024).await;
        assert!(matches!(garbage, Err(IngestError::MalformedBody(_))));

        let truncated = gzip(b"[{\"a\":1}]")[..10].to_vec();
        let truncated = read(truncated, Encoding::Gzip, 1024).await;
        assert!(matches!(truncated, Err(IngestError::MalformedBody(_))));
    }

    #[tokio::test]
    async fn plain_bodies_are_refused_past_the_limit() {
        let ok = read(vec![b'x'; 10], Encoding::Identity, 10).await;
        assert_eq!(ok.unwrap().len(), 10);
        let too_big = read(vec![b'x'; 11], Encoding::Identity, 10).await;
        assert!(matches!(
            too_big,
            Err(IngestError::PayloadTooLarge { limit: 10 })
        ));
    }
}
