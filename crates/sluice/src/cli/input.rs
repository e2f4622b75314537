//! Opening what a command reads: a file or stdin, gzip-compressed or not
//! (told by its first bytes, not its name), and its format (told by its
//! name, else by its first byte).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use flate2::read::MultiGzDecoder;
use sluice_schema::Format;

/// Bytes read from the source at a time.
const READ_BUFFER: usize = 256 * 1024;

/// An opened input, decompressed, ready for a [`super::records::RecordReader`].
pub(crate) struct Input {
    /// How messages name it: the path, or `stdin`.
    pub(crate) name: String,
    pub(crate) format: Format,
    /// The size of the file as stored (compressed, if it is), when known.
    pub(crate) size: Option<u64>,
    /// Bytes of the file read so far, as stored: progress against `size`.
    pub(crate) consumed: Arc<AtomicU64>,
    pub(crate) reader: Box<dyn BufRead + Send>,
}

/// Opens `path` (`-` is stdin); `format` overrides the guess.
pub(crate) fn open(path: &Path, format: Option<Format>) -> anyhow::Result<Input> {
    let consumed = Arc::new(AtomicU64::new(0));
    let stdin = path.as_os_str() == "-";
    let (name, size, source): (String, Option<u64>, Box<dyn Read + Send>) = if stdin {
        ("stdin".to_owned(), None, Box::new(std::io::stdin()))
    } else {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (path.display().to_string(), size, Box::new(file))
    };
    let counted = Counted {
        inner: source,
        count: consumed.clone(),
    };
    let mut raw = BufReader::with_capacity(READ_BUFFER, counted);
    let head = raw.fill_buf().with_context(|| format!("reading {name}"))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead + Send> = if gzip {
        Box::new(BufReader::with_capacity(
            READ_BUFFER,
            MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    let format = match format.or_else(|| format_of_name(&name)) {
        Some(format) => format,
        None => {
            let head = reader
                .fill_buf()
                .with_context(|| format!("reading {name}"))?;
            format_of_content(head)
        }
    };
    Ok(Input {
        name,
        format,
        size,
        consumed,
        reader,
    })
}

/// `.csv`, `.ndjson`, `.jsonl`, `.json`, each also with `.gz`.
fn format_of_name(name: &str) -> Option<Format> {
    let name = name.to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let extension = name.rsplit_once('.')?.1;
    match extension {
        "csv" => Some(Format::Csv),
        "ndjson" | "jsonl" => Some(Format::Ndjson),
        "json" => Some(Format::Json),
        _ => None,
    }
}

/// By the first byte that is not blank: `[` a JSON array, `{` NDJSON,
/// anything else CSV.
fn format_of_content(head: &[u8]) -> Format {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Format::Json,
        Some(b'{') => Format::Ndjson,
        _ => Format::Csv,
    }
}

/// Counts the bytes read through it.
struct Counted {
    inner: Box<dyn Read + Send>,
    count: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// `--format`'s parser: the names of [`Format`].
pub(crate) fn parse_format(name: &str) -> Result<Format, String> {
    Format::from_name(name).ok_or_else(|| format!("{name:?} is not one of json, ndjson, csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_name_then_the_content() {
        assert_eq!(format_of_name("a/b.CSV.gz"), Some(Format::Csv));
        assert_eq!(format_of_name("x.jsonl"), Some(Format::Ndjson));
        assert_eq!(format_of_name("x.json"), Some(Format::Json));
        assert_eq!(format_of_name("x.txt"), None);
        assert_eq!(format_of_name("stdin"), None);
        assert_eq!(format_of_content(b"\xEF\xBB\xBF  [{}]"), Format::Json);
        assert_eq!(format_of_content(b"\n{\"a\":1}\n"), Format::Ndjson);
        assert_eq!(format_of_content(b"a,b\n1,2\n"), Format::Csv);
    }
}
