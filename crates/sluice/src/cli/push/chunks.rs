//! Records gathered into request bodies below the server's limit, each
//! with an `Idempotency-Key` that the same input cut the same way always
//! gets again: that is what makes a push resumable and exactly once.

use sha2::{Digest, Sha256};
use sluice_schema::Format;

use crate::cli::records::RecordReader;

/// One request's worth of records.
pub(crate) struct Chunk {
    /// The body: the records as read (CSV: after the header row; JSON:
    /// inside `[` and `]`, one after another separated by `\n,`).
    pub(crate) body: Vec<u8>,
    pub(crate) key: String,
    pub(crate) lines: RecordLines,
}

/// Where a chunk's records are in the file, to say which line a refused
/// record is on.
pub(crate) struct RecordLines {
    pub(crate) first: u64,
    /// Each record's line, from `first`.
    offsets: Vec<u32>,
}

impl RecordLines {
    pub(crate) fn records(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// The file line of the chunk's record `index` (as the server counts
    /// them, from 0), if it has one.
    pub(crate) fn of_record(&self, index: u64) -> Option<u64> {
        let offset = *self.offsets.get(usize::try_from(index).ok()?)?;
        Some(self.first + u64::from(offset))
    }

    /// The last record's line.
    pub(crate) fn last(&self) -> u64 {
        self.first + self.offsets.last().copied().map_or(0, u64::from)
    }
}

/// Cuts what a [`RecordReader`] reads into [`Chunk`]s of about `target`
/// bytes (a single larger record makes a chunk of its own).
pub(crate) struct Chunker {
    reader: RecordReader,
    target: usize,
    /// Mixed into every key: the same bytes sent another way (another
    /// mode, another format) are another request.
    salt: String,
}

impl Chunker {
    pub(crate) fn new(reader: RecordReader, target: usize, mode: &str) -> Chunker {
        let salt = format!("{}:{mode}", reader.format().name());
        Chunker {
            reader,
            target,
            salt,
        }
    }

    pub(crate) fn next_chunk(&mut self) -> anyhow::Result<Option<Chunk>> {
        let start = self.reader.offset();
        let format = self.reader.format();
        let mut body = Vec::with_capacity(self.target + self.target / 8);
        match format {
            Format::Csv => body.extend_from_slice(self.reader.header()),
            Format::Json => body.push(b'['),
            Format::Ndjson => {}
        }
        let mut first = 0;
        let mut offsets: Vec<u32> = Vec::new();
        while body.len() < self.target {
            let mark = body.len();
            if format == Format::Json && !offsets.is_empty() {
                body.extend_from_slice(b"\n,");
            }
            match self.reader.next_record(&mut body)? {
                Some(record) => {
                    if offsets.is_empty() {
                        first = record.line;
                    }
                    // A chunk spans at most a few million lines.
                    offsets.push(u32::try_from(record.line - first).unwrap_or(u32::MAX));
                }
                None => {
                    body.truncate(mark);
                    break;
                }
            }
        }
        if offsets.is_empty() {
            return Ok(None);
        }
        if format == Format::Json {
            body.push(b']');
        }
        let key = idempotency_key(
            &self.reader.digest_so_far(),
            &self.salt,
            start,
            self.reader.offset(),
        );
        Ok(Some(Chunk {
            body,
            key,
            lines: RecordLines { first, offsets },
        }))
    }
}

/// `sluice-push-<hash>-<start>-<end>`: the hash of everything read up to
/// the chunk's end (so of the chunk and all before it) and of the salt, and
/// the chunk's byte range in the decompressed input.
fn idempotency_key(digest_to_end: &[u8; 32], salt: &str, start: u64, end: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(digest_to_end);
    hasher.update(salt.as_bytes());
    let hash = hasher.finalize();
    format!("sluice-push-{}-{start}-{end}", hex::encode(&hash[..16]))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::cli::input::Input;

    fn chunks(format: Format, text: &str, target: usize) -> Vec<Chunk> {
        let reader = RecordReader::new(Input {
            name: "f".into(),
            format,
            size: None,
            consumed: Arc::new(AtomicU64::new(0)),
            reader: Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
        })
        .unwrap();
        let mut chunker = Chunker::new(reader, target, "all_or_nothing");
        std::iter::from_fn(|| chunker.next_chunk().unwrap()).collect()
    }

    #[test]
    fn csv_chunks_repeat_the_header_and_know_their_lines() {
        let found = chunks(Format::Csv, "a,b\n1,2\n3,4\n\n5,6\n", 10);
        let bodies: Vec<&[u8]> = found.iter().map(|c| c.body.as_slice()).collect();
        assert_eq!(bodies, [&b"a,b\n1,2\n3,4\n"[..], b"a,b\n5,6\n"]);
        assert_eq!(found[0].lines.of_record(1), Some(3));
        assert_eq!(found[1].lines.of_record(0), Some(5));
        assert_eq!(found[1].lines.of_record(1), None);
    }

    #[test]
    fn json_chunks_are_arrays() {
        let found = chunks(Format::Json, "[{\"a\":1},\n{\"a\":2},{\"a\":3}]", 12);
        let bodies: Vec<&[u8]> = found.iter().map(|c| c.body.as_slice()).collect();
        assert_eq!(bodies, [&b"[{\"a\":1}\n,{\"a\":2}]"[..], b"[{\"a\":3}]"]);
    }

    #[test]
    fn keys_are_the_same_for_the_same_content_and_change_after_any_change() {
        let keys = |text: &str| -> Vec<String> {
            chunks(Format::Ndjson, text, 8)
                .into_iter()
                .map(|c| c.key)
                .collect()
        };
        let first = keys("{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        assert_eq!(first.len(), 3);
        assert_eq!(first, keys("{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"));
        let changed = keys("{\"a\":1}\n{\"a\":9}\n{\"a\":3}\n");
        assert_eq!(
            changed[0], first[0],
            "what comes before a change keeps its key"
        );
        assert_ne!(changed[1], first[1]);
        assert_ne!(changed[2], first[2], "and everything after it changes");
        assert!(first[0].starts_with("sluice-push-") && first[0].ends_with("-0-8"));
        assert!(
            first
                .iter()
                .all(|k| k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        );
    }
}
