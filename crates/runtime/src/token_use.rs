//! When each token was last used, kept cheaply: a successful check notes
//! the time in memory (one short lock, no I/O), and every service reports
//! what it noted at most once per `SLUICE_TOKEN_USE_INTERVAL` on a core
//! NATS subject, which the control plane stores in PostgreSQL in one
//! statement per report. Nothing on a request's path writes anywhere.
//!
//! A report lost (no control plane listening, NATS down) only leaves
//! `last_used_at` older than it could be; the next use reports again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{TokenUse, TokenUses};

/// Uses of one report message at most, so that it stays far below NATS's
/// largest payload (each is some 80 bytes of JSON).
const USES_PER_MESSAGE: usize = 1_000;

/// Tokens used since the last report, with their latest use. It holds at
/// most one entry per token that exists.
#[derive(Debug, Default)]
pub struct TokenUseLog {
    used: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl TokenUseLog {
    pub fn record(&self, token: Uuid, at: DateTime<Utc>) {
        if token.is_nil() {
            return;
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.insert(token, at);
    }

    fn take(&self) -> Vec<TokenUse> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *used)
            .into_iter()
            .map(|(token, at)| TokenUse { token, at })
            .collect()
    }
}

/// Reports `log` on `subject` every `interval`, and once more at shutdown.
pub async fn report_uses(
    log: Arc<TokenUseLog>,
    client: async_nats::Client,
    subject: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(interval) => false,
        };
        let uses = log.take();
        for chunk in uses.chunks(USES_PER_MESSAGE) {
            let report = TokenUses {
                uses: chunk.to_vec(),
            };
            let Ok(payload) = serde_json::to_vec(&report) else {
                continue;
            };
            if let Err(error) = client.publish(subject.clone(), payload.into()).await {
                tracing::warn!(%error, "reporting token uses failed");
            }
        }
        if stopping {
            let _ = client.flush().await;
            return;
        }
    }
}
