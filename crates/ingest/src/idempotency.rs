//! `Idempotency-Key` (SPEC 7): a retry within 10 minutes stores nothing twice
//! and answers as the first did.
//!
//! Correctness comes from the read API, not from this process: the batch id
//! derives from the connector, the key and the schema version, and chunking
//! is deterministic, so a retry of the same body, served by any gateway,
//! publishes chunks of the same (batch, chunk) identities, which the read
//! API stores once (`applied_chunks`), and computes the same answer
//! (`accepted`, `rejected`, `batch_id`, `schema_version`). Each message also
//! carries a `Nats-Msg-Id` of that identity, so JetStream drops most
//! retries before they reach the read API: a saving, not the guarantee (a
//! restarted server forgets the ids of messages it no longer holds).
//!
//! A retry after a schema edit may be cut into other chunks; it is a new
//! batch then (the version is part of its id), stored whole: duplicates of
//! what its first attempt stored, rather than a chunk of it taken for one
//! already stored and lost.
//!
//! [`RecentAnswers`] is only a fast path on top: the gateway that served the
//! first request answers a retry from memory, and refuses the key reused for
//! another body (which JetStream alone could not tell apart from a retry).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use sluice_runtime::bus::DUPLICATE_WINDOW;
use uuid::Uuid;

use crate::error::IngestError;

pub(crate) const HEADER: &str = "idempotency-key";

/// A checked `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IdempotencyKey(String);

impl IdempotencyKey {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, IngestError> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(IngestError::InvalidIdempotencyKey);
        }
        IdempotencyKey::parse(value.as_bytes()).map(Some)
    }

    fn parse(bytes: &[u8]) -> Result<IdempotencyKey, IngestError> {
        let visible = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
        if bytes.is_empty() || bytes.len() > 255 || !visible {
            return Err(IngestError::InvalidIdempotencyKey);
        }
        Ok(IdempotencyKey(
            String::from_utf8(bytes.to_vec()).map_err(|_| IngestError::InvalidIdempotencyKey)?,
        ))
    }

    /// The request's batch id, the same for every retry under the same
    /// schema version: a UUID (version 8, "custom") made of the first bytes
    /// of a SHA-256 of the connector, the version and the key (which may
    /// hold characters awkward in ids, and need not be stored anywhere).
    pub(crate) fn batch_id(&self, connector: Uuid, schema_version: i64) -> Uuid {
        let mut hash = Sha256::new();
        hash.update(connector.as_bytes());
        hash.update(schema_version.to_le_bytes());
        hash.update(self.0.as_bytes());
        let digest: [u8; 32] = hash.finalize().into();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

/// `Nats-Msg-Id` of chunk `chunk` of an idempotent request's batch.
pub(crate) fn message_id(batch_id: Uuid, chunk: usize) -> String {
    format!("{}.{chunk}", batch_id.simple())
}

/// What a request was, to tell a retry from a reuse of its key.
pub(crate) fn request_digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// Answers given to idempotent requests in the last [`DUPLICATE_WINDOW`],
/// bounded in number so that it cannot grow without limit.
pub(crate) struct RecentAnswers<A> {
    inner: Mutex<Recent<A>>,
    window: Duration,
    capacity: usize,
}

struct Recent<A> {
    by_key: HashMap<(Uuid, IdempotencyKey), Remembered<A>>,
    /// Insertion order, for expiry.
    order: VecDeque<(Instant, (Uuid, IdempotencyKey))>,
}

struct Remembered<A> {
    request: [u8; 32],
    answer: A,
    at: Instant,
}

/// What [`RecentAnswers::lookup`] knows about a key.
pub(crate) enum Seen<A> {
    New,
    /// The same request: here is its answer.
    Retry(A),
    /// The key was used for another request.
    Reused,
}

impl<A: Clone> RecentAnswers<A> {
    pub(crate) fn new(capacity: usize) -> RecentAnswers<A> {
        RecentAnswers {
            inner: Mutex::new(Recent {
                by_key: HashMap::new(),
                order: VecDeque::new(),
            }),
            window: DUPLICATE_WINDOW,
            capacity,
        }
    }

    pub(crate) fn lookup(
        &self,
        connector: Uuid,
        key: &IdempotencyKey,
        request: &[u8; 32],
    ) -> Seen<A> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(self.window);
        match inner.by_key.get(&(connector, key.clone())) {
            None => Seen::New,
            Some(known) if known.request == *request => Seen::Retry(known.answer.clone()),
            Some(_) => Seen::Reused,
        }
    }

    pub(crate) fn remember(
        &self,
        connector: Uuid,
        key: IdempotencyKey,
        request: [u8; 32],
        answer: A,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(self.window);
        if inner.by_key.len() >= self.capacity {
            // Full of recent keys: the fast path is skipped, JetStream still
            // deduplicates.
            return;
        }
        let now = Instant::now();
        let id = (connector, key);
        inner.order.push_back((now, id.clone()));
        inner.by_key.insert(
            id,
            Remembered {
                request,
                answer,
                at: now,
            },
        );
    }
}

impl<A> Recent<A> {
    fn expire(&mut self, window: Duration) {
        let now = Instant::now();
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            let Some((at, id)) = self.order.pop_front() else {
                break;
            };
            // Only if not remembered again since.
            if self.by_key.get(&id).is_some_and(|r| r.at == at) {
                self.by_key.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> IdempotencyKey {
        IdempotencyKey::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(b"order-42/retry~!").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 256]).is_err());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(b"with space").is_err());
        assert!(IdempotencyKey::parse("caf\u{e9}".as_bytes()).is_err());
        assert!(IdempotencyKey::parse(b"tab\t").is_err());
    }

    #[test]
    fn ids_are_deterministic_and_specific_to_connector_version_key_and_chunk() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(key("k").batch_id(a, 1), key("k").batch_id(a, 1));
        assert_ne!(key("k").batch_id(a, 1), key("k").batch_id(b, 1));
        assert_ne!(key("k").batch_id(a, 1), key("k").batch_id(a, 2));
        assert_ne!(key("k").batch_id(a, 1), key("l").batch_id(a, 1));
        assert_eq!(key("k").batch_id(a, 1).get_version_num(), 8);
        let batch = key("k").batch_id(a, 1);
        assert_eq!(message_id(batch, 0), message_id(batch, 0));
        assert_ne!(message_id(batch, 0), message_id(batch, 1));
    }

    #[test]
    fn recent_answers_tell_retries_from_reuse_and_stay_bounded() {
        let recent = RecentAnswers::new(2);
        let c = Uuid::now_v7();
        let (one, two) = (request_digest(&[b"one"]), request_digest(&[b"two"]));
        assert!(matches!(recent.lookup(c, &key("a"), &one), Seen::New));
        recent.remember(c, key("a"), one, 1);
        assert!(matches!(recent.lookup(c, &key("a"), &one), Seen::Retry(1)));
        assert!(matches!(recent.lookup(c, &key("a"), &two), Seen::Reused));
        recent.remember(c, key("b"), two, 2);
        recent.remember(c, key("c"), two, 3);
        assert!(matches!(recent.lookup(c, &key("c"), &two), Seen::New));
    }

    #[test]
    fn recent_answers_expire() {
        let mut recent = RecentAnswers::new(10);
        recent.window = Duration::ZERO;
        let c = Uuid::now_v7();
        let one = request_digest(&[b"one"]);
        recent.remember(c, key("a"), one, 1);
        assert!(matches!(recent.lookup(c, &key("a"), &one), Seen::New));
    }
}
