//! A live copy of every connector's definition, for the services that must
//! keep serving while the control plane is down (SPEC 1).
//!
//! The copy is loaded from the key-value bucket at start and kept current by
//! watching it, so an edit, a token rotation or a deletion reaches every
//! gateway and reader within milliseconds of the control plane's write.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::ConnectorDoc;
use crate::token::{TokenHash, TokenKind};

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

#[derive(Clone, Default)]
pub struct Catalog {
    inner: Arc<RwLock<Inner>>,
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
        let catalog = Catalog::default();
        // Watch first, then load: an update made during the load is then
        // seen by the watch, and revisions put the two in order.
        let watch = bucket.watch_all().await?;
        catalog.load(&bucket).await?;
        let keeper = catalog.clone();
        tokio::spawn(async move { keeper.follow(bucket, watch, shutdown).await });
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
    /// the check, so a connector's existence is not revealed to strangers.
    pub fn authorize(
        &self,
        token: &str,
        admin: Option<&TokenHash>,
        connector: Uuid,
        kind: TokenKind,
    ) -> Result<Arc<ConnectorDoc>, AccessDenied> {
        match self.token_owner(token, admin) {
            TokenOwner::Unknown => Err(AccessDenied::Unauthorized),
            TokenOwner::Connector(id, k) if id != connector || k != kind => {
                Err(AccessDenied::Forbidden)
            }
            TokenOwner::Operator | TokenOwner::Connector(..) => {
                self.get(connector).ok_or(AccessDenied::NotFound)
            }
        }
    }

    /// Reads every key; a connector missing from the bucket is forgotten,
    /// since its deletion may have happened while the watch was down.
    async fn load(&self, bucket: &kv::Store) -> anyhow::Result<()> {
        let mut present = std::collections::HashSet::new();
        let mut keys = bucket.keys().await?;
        while let Some(key) = keys.next().await {
            let key = key?;
            if let Some(entry) = bucket.entry(&key).await? {
                self.apply(&entry);
                present.extend(key.parse::<Uuid>().ok());
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

    async fn follow(&self, bucket: kv::Store, mut watch: kv::Watch, shutdown: CancellationToken) {
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
                            match bucket.watch_all().await {
                                Ok(w) => match self.load(&bucket).await {
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
        let Ok(id) = entry.key.parse::<Uuid>() else {
            tracing::warn!(key = %entry.key, "ignoring a bucket key that is not a connector id");
            return;
        };
        let doc = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<ConnectorDoc>(&entry.value) {
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
