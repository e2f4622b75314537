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
//!
//! Operator tokens (other than `SLUICE_ADMIN_TOKEN`) come the same way from
//! a bucket of their own, followed and read alike. A token's expiry is
//! checked on every use, by this process's clock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{ConnectorDoc, OperatorTokenDoc, OperatorTokensDoc, TokenDoc};
use crate::principal::{Access, Principal};
use crate::throttle::{AuthAttempt, TooManyFailedAttempts};
use crate::token::{self, TokenHash, TokenKind};
use crate::token_use::TokenUseLog;

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
    /// The operator tokens' bucket, followed and read the same way.
    operators_bucket: kv::Store,
    /// When the tokens this process accepted were last used.
    uses: Arc<TokenUseLog>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    /// Token hash to the connector it belongs to and the token, to tell an
    /// unknown token (401) from a known one used in the wrong place (403).
    tokens: HashMap<TokenHash, (Uuid, TokenDoc)>,
    /// Operator tokens by hash, and the revision they were read at.
    operators: HashMap<TokenHash, OperatorTokenDoc>,
    operators_revision: u64,
}

impl Inner {
    fn set(&mut self, id: Uuid, entry: Entry) {
        if let Some(old) = self.entries.get(&id).and_then(|e| e.doc.as_ref()) {
            for token in &old.tokens {
                self.tokens.remove(&token.hash);
            }
        }
        if let Some(doc) = &entry.doc {
            for token in &doc.tokens {
                self.tokens.insert(token.hash.clone(), (id, token.clone()));
            }
        }
        self.entries.insert(id, entry);
    }
}

/// What [`Catalog::authorize`] lets through: the connector, and who called.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub doc: Arc<ConnectorDoc>,
    pub principal: Principal,
}

/// Who a bearer token belongs to, in short (see [`Principal`] for the
/// whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOwner {
    Operator,
    Connector(Uuid, TokenKind),
    Unknown,
}

/// Which bucket a watch follows.
#[derive(Debug, Clone, Copy)]
enum Followed {
    Connectors,
    Operators,
}

struct Entry {
    revision: u64,
    /// `None` once deleted; the revision is kept so an older put that arrives
    /// late cannot bring the connector back.
    doc: Option<Arc<ConnectorDoc>>,
}

impl Catalog {
    /// Loads both buckets, then keeps watching them until `shutdown`.
    pub async fn start(
        bucket: kv::Store,
        operators_bucket: kv::Store,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Catalog> {
        // Watch first, then load: an update made during the load is then
        // seen by the watch, and revisions put the two in order.
        let watch = bucket.watch_all().await?;
        let operators_watch = operators_bucket.watch_all().await?;
        let catalog = Catalog {
            inner: Arc::default(),
            bucket,
            operators_bucket,
            uses: Arc::default(),
        };
        catalog.load(Followed::Connectors).await?;
        catalog.load(Followed::Operators).await?;
        let keeper = catalog.clone();
        let keeper_shutdown = shutdown.clone();
        tokio::spawn(async move {
            keeper
                .follow(Followed::Connectors, watch, keeper_shutdown)
                .await
        });
        let keeper = catalog.clone();
        tokio::spawn(async move {
            keeper
                .follow(Followed::Operators, operators_watch, shutdown)
                .await
        });
        Ok(catalog)
    }

    /// When the tokens accepted here were last used, to be reported.
    pub fn uses(&self) -> Arc<TokenUseLog> {
        Arc::clone(&self.uses)
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<ConnectorDoc>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.entries.get(&id).and_then(|e| e.doc.clone())
    }

    /// Whose token this is. `admin` (`SLUICE_ADMIN_TOKEN`) is compared in
    /// constant time; other tokens are found by their SHA-256, which reveals
    /// nothing usable about a token that is not already known. A token not
    /// of a token's form (its checksum included) is not even hashed, and an
    /// expired one is nobody's.
    pub fn identify(&self, token: &str, admin: Option<&TokenHash>) -> Option<Principal> {
        if admin.is_some_and(|admin| admin.matches(token)) {
            return Some(Principal::bootstrap());
        }
        let operator = token::is_operator_secret(token);
        if !operator && TokenKind::of_secret(token).is_none() {
            return None;
        }
        let hash = TokenHash::of(token);
        let now = Utc::now();
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if operator {
            let found = inner.operators.get(&hash).filter(|t| t.is_live(now))?;
            return Some(Principal {
                token_id: Some(found.id),
                token_name: found.name.clone(),
                access: Access::Operator,
            });
        }
        let (connector, found) = inner.tokens.get(&hash).filter(|(_, t)| t.is_live(now))?;
        Some(Principal {
            token_id: Some(found.id),
            token_name: found.name.clone(),
            access: Access::Connector {
                connector: *connector,
                scope: found.scope,
            },
        })
    }

    /// [`Catalog::identify`], in short.
    pub fn token_owner(&self, token: &str, admin: Option<&TokenHash>) -> TokenOwner {
        match self.identify(token, admin).map(|p| p.access) {
            None => TokenOwner::Unknown,
            Some(Access::Operator) => TokenOwner::Operator,
            Some(Access::Connector { connector, scope }) => TokenOwner::Connector(connector, scope),
        }
    }

    /// [`Catalog::identify`], reading the operators bucket first when the
    /// copy does not know a token of an operator token's form: one the
    /// control plane has just created works at once (see the module's
    /// docs). A token found is noted as used.
    pub async fn principal(&self, token: &str, admin: Option<&TokenHash>) -> Option<Principal> {
        let mut found = self.identify(token, admin);
        if found.is_none() && token::is_operator_secret(token) {
            self.refresh_operators().await;
            found = self.identify(token, admin);
        }
        if let Some(principal) = &found {
            self.note_use(principal);
        }
        found
    }

    /// Notes that `principal`'s token was just accepted (see
    /// [`crate::token_use`]).
    pub fn note_use(&self, principal: &Principal) {
        if let Some(id) = principal.token_id {
            self.uses.record(id, Utc::now());
        }
    }

    async fn refresh_operators(&self) {
        let read = tokio::time::timeout(
            BUCKET_READ_TIMEOUT,
            self.operators_bucket.entry(OperatorTokensDoc::KEY),
        )
        .await;
        match read {
            Ok(Ok(Some(entry))) => self.apply_operators(&entry),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading the operator tokens from the bucket failed");
            }
            Err(_) => tracing::warn!("reading the operator tokens from the bucket timed out"),
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
    ) -> Result<Authorized, Refused> {
        let denied = match self.authorize_in_memory(token, admin, connector, kind) {
            Ok(authorized) => {
                self.note_use(&authorized.principal);
                return Ok(authorized);
            }
            Err(AccessDenied::Forbidden) => return Err(AccessDenied::Forbidden.into()),
            Err(denied) => denied,
        };
        let unknown = denied == AccessDenied::Unauthorized;
        if unknown {
            attempt.fail()?;
        }
        let operator_form = token::is_operator_secret(token);
        let connector_form = TokenKind::of_secret(token).is_some();
        if unknown && !operator_form && !connector_form {
            return Err(denied.into());
        }
        if unknown && operator_form {
            self.refresh_operators().await;
        }
        // What the bucket may still know is a connector (or its tokens) the
        // watch has not brought yet.
        if let Some(id) = connector
            && let Some(entry) = self.read_from_bucket(id).await
        {
            // Taken in as the watch would, revisions deciding.
            self.apply(&entry);
        }
        let decided = self.authorize_in_memory(token, admin, connector, kind);
        if unknown && !matches!(decided, Err(AccessDenied::Unauthorized)) {
            attempt.forgive();
        }
        let authorized = decided?;
        self.note_use(&authorized.principal);
        Ok(authorized)
    }

    /// [`Catalog::authorize`] from the copy alone.
    fn authorize_in_memory(
        &self,
        token: &str,
        admin: Option<&TokenHash>,
        connector: Option<Uuid>,
        kind: TokenKind,
    ) -> Result<Authorized, AccessDenied> {
        let principal = self
            .identify(token, admin)
            .ok_or(AccessDenied::Unauthorized)?;
        if let Access::Connector {
            connector: id,
            scope,
        } = principal.access
            && (Some(id) != connector || scope != kind)
        {
            return Err(AccessDenied::Forbidden);
        }
        let doc = connector
            .and_then(|id| self.get(id))
            .ok_or(AccessDenied::NotFound)?;
        Ok(Authorized { doc, principal })
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

    fn bucket_of(&self, followed: Followed) -> &kv::Store {
        match followed {
            Followed::Connectors => &self.bucket,
            Followed::Operators => &self.operators_bucket,
        }
    }

    async fn load(&self, followed: Followed) -> anyhow::Result<()> {
        match followed {
            Followed::Connectors => self.load_connectors().await,
            Followed::Operators => {
                match self.operators_bucket.entry(OperatorTokensDoc::KEY).await? {
                    Some(entry) => self.apply_operators(&entry),
                    None => {
                        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
                        inner.operators.clear();
                    }
                }
                Ok(())
            }
        }
    }

    /// Reads every key; a connector missing from the bucket is forgotten,
    /// since its deletion may have happened while the watch was down.
    async fn load_connectors(&self) -> anyhow::Result<()> {
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

    async fn follow(&self, followed: Followed, mut watch: kv::Watch, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = watch.next() => match next {
                    Some(Ok(entry)) => match followed {
                        Followed::Connectors => self.apply(&entry),
                        Followed::Operators => self.apply_operators(&entry),
                    },
                    other => {
                        if let Some(Err(error)) = other {
                            tracing::warn!(%error, "connector watch failed; reloading");
                        }
                        watch = loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                            match self.bucket_of(followed).watch_all().await {
                                Ok(w) => match self.load(followed).await {
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

    /// Takes in the operator tokens' document the caller has just written
    /// at `revision` (see [`Catalog::remember`]).
    pub fn remember_operators(&self, revision: u64, doc: &OperatorTokensDoc) {
        self.keep_operators_if_newer(revision, Some(doc));
    }

    fn apply_operators(&self, entry: &kv::Entry) {
        let doc = match entry.operation {
            kv::Operation::Put => match OperatorTokensDoc::decode(&entry.value) {
                Ok(doc) => Some(doc),
                Err(error) => {
                    tracing::error!(%error, "ignoring an unreadable operator tokens document");
                    return;
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        self.keep_operators_if_newer(entry.revision, doc.as_ref());
    }

    fn keep_operators_if_newer(&self, revision: u64, doc: Option<&OperatorTokensDoc>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if revision < inner.operators_revision {
            return;
        }
        inner.operators_revision = revision;
        inner.operators = doc
            .map(|doc| {
                doc.tokens
                    .iter()
                    .map(|t| (t.hash.clone(), t.clone()))
                    .collect()
            })
            .unwrap_or_default();
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
