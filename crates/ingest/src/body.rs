//! Reading a request body: its format from `Content-Type`, its encoding from
//! `Content-Encoding`, and its bytes under `SLUICE_MAX_BODY_BYTES`.
//!
//! The limit applies to the decompressed size and is enforced while the body
//! streams in: a gzip body is inflated chunk by chunk into a buffer that
//! refuses to grow past the limit, so a small "gzip bomb" costs at most the
//! limit in memory and is refused as soon as it crosses it.

use std::io::Write;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use flate2::write::MultiGzDecoder;
use futures::StreamExt;
use sluice_schema::Format;

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

/// Reads the whole body, decompressed, refusing it with 413 as soon as it
/// passes `limit` bytes.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
    limit: usize,
) -> Result<Vec<u8>, IngestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let compressed_limit = compressed_limit(limit);
    let too_large = IngestError::PayloadTooLarge { limit };
    // Refuse before reading a byte when the client announced too much.
    let announced_limit = match encoding {
        Encoding::Identity => limit,
        Encoding::Gzip => compressed_limit,
    };
    if declared.is_some_and(|n| n > announced_limit as u64) {
        return Err(too_large);
    }

    let mut stream = body.into_data_stream();
    match encoding {
        Encoding::Identity => {
            let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(body_read_failed)?;
                if out.len() + chunk.len() > limit {
                    return Err(too_large);
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        }
        Encoding::Gzip => {
            let mut inflater = Inflater::new(limit);
            let mut received = 0usize;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(body_read_failed)?;
                received += chunk.len();
                if received > compressed_limit {
                    return Err(too_large);
                }
                inflater.write(&chunk)?;
            }
            // An empty body is empty whatever its announced encoding.
            if received == 0 {
                return Ok(Vec::new());
            }
            inflater.finish()
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

/// Incremental gzip decompression into a buffer with a hard size limit.
pub(crate) struct Inflater {
    decoder: MultiGzDecoder<LimitedBuffer>,
    limit: usize,
}

impl Inflater {
    pub(crate) fn new(limit: usize) -> Inflater {
        Inflater {
            decoder: MultiGzDecoder::new(LimitedBuffer {
                bytes: Vec::new(),
                limit,
                overflowed: false,
            }),
            limit,
        }
    }

    /// Feeds compressed bytes; the output grows by at most the decoder's
    /// internal buffer beyond what the limit allows before this fails.
    pub(crate) fn write(&mut self, compressed: &[u8]) -> Result<(), IngestError> {
        self.decoder
            .write_all(compressed)
            .map_err(|e| self.failure(e))
    }

    pub(crate) fn finish(mut self) -> Result<Vec<u8>, IngestError> {
        if let Err(error) = self.decoder.try_finish() {
            return Err(self.failure(error));
        }
        let buffer = self.decoder.finish().map_err(not_gzip)?;
        Ok(buffer.bytes)
    }

    fn failure(&self, error: std::io::Error) -> IngestError {
        if self.decoder.get_ref().overflowed {
            IngestError::PayloadTooLarge { limit: self.limit }
        } else {
            not_gzip(error)
        }
    }
}

fn not_gzip(error: std::io::Error) -> IngestError {
    IngestError::MalformedBody(format!("the body is not valid gzip: {error}"))
}

/// A `Vec` that refuses writes past `limit` and remembers that it did.
struct LimitedBuffer {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for LimitedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("decompressed body too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn inflater_stops_at_the_limit_without_inflating_the_rest() {
        let bomb = gzip(&vec![0u8; 8 * 1024 * 1024]);
        let mut inflater = Inflater::new(64 * 1024);
        let outcome = bomb
            .chunks(1024)
            .try_for_each(|chunk| inflater.write(chunk));
        assert!(matches!(
            outcome,
            Err(IngestError::PayloadTooLarge { limit: 65536 })
        ));
        // Never held much more than the limit.
        assert!(inflater.decoder.get_ref().bytes.len() <= 64 * 1024);
    }

    #[test]
    fn inflater_reads_multi_member_streams_and_refuses_garbage() {
        let mut data = gzip(b"[{\"a\":1}");
        data.extend(gzip(b",{\"a\":2}]"));
        let mut inflater = Inflater::new(1024);
        inflater.write(&data).unwrap();
        assert_eq!(inflater.finish().unwrap(), b"[{\"a\":1},{\"a\":2}]");

        let mut inflater = Inflater::new(1024);
        let outcome = inflater.write(b"this is not gzip at all");
        let outcome = outcome.and_then(|()| inflater.finish().map(drop));
        assert!(matches!(outcome, Err(IngestError::MalformedBody(_))));

        let truncated = &gzip(b"[{\"a\":1}]")[..10];
        let mut inflater = Inflater::new(1024);
        let outcome = inflater.write(truncated);
        let outcome = outcome.and_then(|()| inflater.finish().map(drop));
        assert!(matches!(outcome, Err(IngestError::MalformedBody(_))));
    }

    #[tokio::test]
    async fn plain_bodies_are_refused_past_the_limit() {
        let h = HeaderMap::new();
        let ok = read_limited(&h, Body::from(vec![b'x'; 10]), Encoding::Identity, 10).await;
        assert_eq!(ok.unwrap().len(), 10);
        let too_big = read_limited(&h, Body::from(vec![b'x'; 11]), Encoding::Identity, 10).await;
        assert!(matches!(
            too_big,
            Err(IngestError::PayloadTooLarge { limit: 10 })
        ));
    }
}
