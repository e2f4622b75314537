//! A live copy of every connector's definition, for the services that must
//! keep serving while the control plane is down (SPEC 1).
//!
//! The copy is loaded from the key-value bucket at start and kept current by
//! watching it, so an edit, a token rotation or a deletion reaches every
//! gateway and reader within milliseconds of the control plane's write.
//!
//! It trails the bucket by the time a watch update takes, so a client that
//! uses a connector right after the control plane created it or rotated a
//! token could be refused by a service that has not seen the change yet.
//! When the copy would refuse with 401 or 404, [`Catalog::authorize`]
//! therefore reads the connector's entry from the bucket itself before
//! answering: the control plane writes it before it answers, so what a
//! client was just told is honoured by the gateway and the read API alike.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::ConnectorDoc;
use crate::throttle::{AuthAttempt, TooManyFailedAttempts};
use crate::token::{TokenHash, TokenKind};

/// How long a refusal may wait on the bucket; past it, the copy's answer
/// stands.
const BUCKET_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a token may not use a connector's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessDenied {
    /// 401: no such token.
    Unauthorized,
    /// 403: a real token, for another connector or of the other kind.
    Forbidden,
    /// 404: the operator (or the connector's own token) and no connector.
    NotFound,
}

/// Why a request may not use a connector's route, as [`Catalog::authorize`]
/// decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Denied(AccessDenied),
    /// 429: the client sent too many missing or unknown tokens.
    Throttled(TooManyFailedAttempts),
}

impl From<AccessDenied> for Refused {
    fn from(denied: AccessDenied) -> Refused {
        Refused::Denied(denied)
    }
}

impl From<TooManyFailedAttempts> for Refused {
    fn from(throttled: TooManyFailedAttempts) -> Refused {
        Refused::Throttled(throttled)
    }
}

#[derive(Clone)]
pub struct Catalog {
    inner: Arc<RwLock<Inner>>,
    /// The bucket the copy follows, read directly when the copy refuses.
    bucket: kv::Store,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    /// Token hash to the connector and kind it belongs to, to tell an unknown
    /// token (401) from a known one used in the wrong place (403).
    tokens: HashMap<TokenHash, (Uuid, TokenKind)>,
}

impl Inner {
    fn set(&mut self, id: Uuid, entry: Entry) {
        if let Some(old) = self.entries.get(&id).and_then(|e| e.doc.as_ref()) {
            self.tokens.remove(&old.write_token_hash);
            self.tokens.remove(&old.read_token_hash);
        }
        if let Some(doc) = &entry.doc {
            self.tokens
                .insert(doc.write_token_hash.clone(), (id, TokenKind::Write));
            self.tokens
                .insert(doc.read_token_hash.clone(), (id, TokenKind::Read));
        }
        self.entries.insert(id, entry);
    }
}

/// Who a bearer token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOwner {
    Operator,
    Connector(Uuid, TokenKind),
    Unknown,
}

struct Entry {
    revision: u64,
    /// `None` once deleted; the revision is kept so an older put that arrives
    /// late cannot bring the connector back.
    doc: Option<Arc<ConnectorDoc>>,
}

impl Catalog {
    /// Loads the bucket, then keeps watching it until `shutdown`.
    pub async fn start(bucket: kv::Store, shutdown: CancellationToken) -> anyhow::Result<Catalog> {
        // Watch first, then load: an update made during the load is then
        // seen by the watch, and revisions put the two in order.
        let watch = bucket.watch_all().await?;
        let catalog = Catalog {
            inner: Arc::default(),
            bucket,
        };
        catalog.load().await?;
        let keeper = catalog.clone();
        tokio::spawn(async move { keeper.follow(watch, shutdown).await });
        Ok(catalog)
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<ConnectorDoc>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.entries.get(&id).and_then(|e| e.doc.clone())
    }

    /// Whose token this is. The operator's is compared in constant time;
    /// connector tokens are found by their SHA-256, which reveals nothing
    /// usable about a token that is not already known. A token not of a
    /// connector token's form is not even hashed.
    pub fn token_owner(&self, token: &str, admin: Option<&TokenHash>) -> TokenOwner {
        if admin.is_some_and(|admin| admin.matches(token)) {
            return TokenOwner::Operator;
        }
        if TokenKind::of_secret(token).is_none() {
            return TokenOwner::Unknown;
        }
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match inner.tokens.get(&TokenHash::of(token)) {
            Some(&(id, kind)) => TokenOwner::Connector(id, kind),
            None => TokenOwner::Unknown,
        }
    }

    /// SPEC 3 for the routes of one connector: the operator, or a token of
    /// `kind` of that very connector. A missing connector is reported after
    /// the check, so a connector's existence is not revealed to strangers;
    /// `None` is a route whose id names no connector.
    ///
    /// A missing or unknown token is a failed attempt of the client's
    /// (`attempt`), counted before the bucket is read (and given back if
    /// the bucket knows the token), so that a client that failed too often
    /// is answered 429 without a read, however many requests it sends at
    /// once. A token that cannot be a connector's is never looked for there.
    #[tracing::instrument(skip_all)]
    pub async fn authorize(
        &self,
        token: &str,
        admin: Option<&TokenHash>,
        connector: Option<Uuid>,
        kind: TokenKind,
        attempt: &AuthAttempt,
    ) -> Result<Arc<ConnectorDoc>, Refused> {
        let denied = match self.authorize_in_memory(token, admin, connector, kind) {
            Ok(doc) => return Ok(doc),
            Err(AccessDenied::Forbidden) => return Err(AccessDenied::Forbidden.into()),
            Err(denied) => denied,
        };
        let unknown = denied == AccessDenied::Unauthorized;
        if unknown {
            attempt.fail()?;
        }
        // The operator was recognised in memory; what the bucket may still
        // know is a connector (or its tokens) the watch has not brought yet.
        let Some(id) = connector else {
            return Err(denied.into());
        };
        if unknown && TokenKind::of_secret(token).is_none() {
            return Err(denied.into());
        }
        if let Some(entry) = self.read_from_bucket(id).await {
            // Taken in as the watch would, revisions deciding.
            self.apply(&entry);
        }
        let decided = self.authorize_in_memory(token, admin, connector, kind);
        if unknown && !matches!(decided, Err(AccessDenied::Unauthorized)) {
            attempt.forgive();
        }
        decided.map_err(Refused::from)
    }

    /// [`Catalog::authorize`] from the copy alone.
    fn authorize_in_memory(
        &self,
        token: &str,
        admin: Option<&TokenHash>,
        connector: Option<Uuid>,
        kind: TokenKind,
    ) -> Result<Arc<ConnectorDoc>, AccessDenied> {
        match self.token_owner(token, admin) {
            TokenOwner::Unknown => Err(AccessDenied::Unauthorized),
            TokenOwner::Connector(id, k) if Some(id) != connector || k != kind => {
                Err(AccessDenied::Forbidden)
            }
            TokenOwner::Operator | TokenOwner::Connector(..) => connector
                .and_then(|id| self.get(id))
                .ok_or(AccessDenied::NotFound),
        }
    }

    /// Connector `id`'s latest entry in the bucket, a deletion included;
    /// `None` if there is none or the bucket does not answer in time.
    async fn read_from_bucket(&self, id: Uuid) -> Option<kv::Entry> {
        let read = tokio::time::timeout(
            BUCKET_READ_TIMEOUT,
            self.bucket.entry(ConnectorDoc::key(id)),
        )
        .await;
        match read {
            Ok(Ok(entry)) => entry,
            Ok(Err(error)) => {
                tracing::warn!(connector = %id, %error, "reading a connector from the bucket failed");
                None
            }
            Err(_) => {
                tracing::warn!(connector = %id, "reading a connector from the bucket timed out");
                None
            }
        }
    }

    /// Reads every key; a connector missing from the bucket is forgotten,
    /// since its deletion may have happened while the watch was down.
    async fn load(&self) -> anyhow::Result<()> {
        let mut present = std::collections::HashSet::new();
        let mut keys = self.bucket.keys().await?;
        while let Some(key) = keys.next().await {
            let key = key?;
            if let Some(entry) = self.bucket.entry(&key).await? {
                self.apply(&entry);
                present.extend(ConnectorDoc::id_of_key(&key));
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(Uuid, u64)> = inner
            .entries
            .iter()
            .filter(|(id, e)| e.doc.is_some() && !present.contains(*id))
            .map(|(id, e)| (*id, e.revision))
            .collect();
        for (id, revision) in gone {
            inner.set(
                id,
                Entry {
                    revision,
                    doc: None,
                },
            );
        }
        Ok(())
    }

    async fn follow(&self, mut watch: kv::Watch, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = watch.next() => match next {
                    Some(Ok(entry)) => self.apply(&entry),
                    other => {
                        if let Some(Err(error)) = other {
                            tracing::warn!(%error, "connector watch failed; reloading");
                        }
                        watch = loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                            match self.bucket.watch_all().await {
                                Ok(w) => match self.load().await {
                                    Ok(()) => break w,
                                    Err(error) => tracing::warn!(%error, "connector reload failed"),
                                },
                                Err(error) => tracing::warn!(%error, "connector watch failed"),
                            }
                        };
                    }
                },
            }
        }
    }

    /// Takes in a definition its caller has just written to the bucket at
    /// `revision`, so that the writer's own copy does not trail its write.
    /// The watch brings the same entry later, and revisions keep the newer.
    pub fn remember(&self, id: Uuid, revision: u64, doc: Arc<ConnectorDoc>) {
        self.keep_if_newer(id, revision, Some(doc));
    }

    fn apply(&self, entry: &kv::Entry) {
        let Some(id) = ConnectorDoc::id_of_key(&entry.key) else {
            tracing::warn!(key = %entry.key, "ignoring a bucket key that is not a connector id");
            return;
        };
        let doc = match entry.operation {
            kv::Operation::Put => match ConnectorDoc::decode(&entry.value) {
                Ok(doc) => Some(Arc::new(doc)),
                Err(error) => {
                    tracing::error!(%id, %error, "ignoring an unreadable connector definition");
                    return;
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        self.keep_if_newer(id, entry.revision, doc);
    }

    fn keep_if_newer(&self, id: Uuid, revision: u64, doc: Option<Arc<ConnectorDoc>>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let current = inner.entries.get(&id).map_or(0, |e| e.revision);
        if revision >= current {
            inner.set(id, Entry { revision, doc });
        }
    }
}
