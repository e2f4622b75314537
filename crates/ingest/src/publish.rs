//! Putting one request's chunks on the records stream, and waiting for the
//! read API to report them stored.

use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::{self, ErrorCode, message::PublishMessage};
use futures::StreamExt;
use sluice_runtime::bus::{StoredNotice, headers};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::IngestError;
use crate::idempotency::message_id;

/// The longest a whole request's publishing may take. Each ack already has
/// the JetStream context's timeout; this also bounds the wait for an
/// in-flight permit, so a request never hangs on a stalled bus.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

/// What every message of one request carries in its headers.
pub(crate) struct Envelope<'a> {
    pub connector: Uuid,
    pub schema_version: i64,
    pub batch_id: Uuid,
    pub request_id: Option<&'a str>,
    /// Whether the batch id derives from an `Idempotency-Key`.
    pub idempotent: bool,
}

/// How the stream took a request's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    /// At least one chunk is new in the stream.
    New,
    /// Every chunk was already there: a retry of an idempotent request.
    AllDuplicates,
}

/// Publishes every chunk without waiting in between, then awaits every ack.
/// `Ok` means every chunk is durable in the stream; any error or timeout
/// means the request must not be reported as accepted.
///
/// Losing the connection to NATS meanwhile ends the wait at once (an ack
/// cannot come over a connection that is gone): the answer is 503, and a
/// retry with the same `Idempotency-Key` stores nothing twice, whichever
/// chunks did reach the stream.
pub(crate) async fn publish_chunks(
    client: &async_nats::Client,
    js: &jetstream::Context,
    subject: &str,
    envelope: &Envelope<'_>,
    chunks: Vec<Vec<u8>>,
) -> Result<Published, IngestError> {
    let started = Instant::now();
    let work = async {
        let mut acks = Vec::with_capacity(chunks.len());
        for (chunk, payload) in chunks.into_iter().enumerate() {
            let mut message = PublishMessage::build()
                .payload(payload.into())
                .header(headers::CONNECTOR_ID, envelope.connector.to_string())
                .header(headers::SCHEMA_VERSION, envelope.schema_version.to_string())
                .header(headers::BATCH_ID, envelope.batch_id.to_string())
                .header(headers::CHUNK, chunk.to_string());
            if let Some(request_id) = envelope.request_id {
                message = message.header(headers::REQUEST_ID, request_id);
            }
            // Only idempotent requests are deduplicated: two distinct
            // requests with the same body are two batches.
            if envelope.idempotent {
                message = message.message_id(message_id(envelope.batch_id, chunk));
            }
            let ack = js
                .send_publish(subject.to_owned(), message)
                .await
                .map_err(|e| IngestError::BusUnavailable(format!("publish: {e}")))?;
            acks.push(ack);
        }
        let (mut new, mut duplicates) = (0usize, 0usize);
        for ack in acks {
            let ack = ack.await.map_err(|e| {
                if stream_is_full(&e) {
                    IngestError::StreamFull
                } else {
                    IngestError::BusUnavailable(format!("publish ack: {e}"))
                }
            })?;
            if ack.duplicate {
                duplicates += 1;
            } else {
                new += 1;
            }
        }
        if duplicates > 0 && new > 0 {
            // The retry was cut differently from the first attempt (its
            // schema changed in between, or the first attempt failed part
            // way): the new chunks are stored, the known ones are not.
            tracing::warn!(new, duplicates, "idempotent retry partly deduplicated");
        }
        Ok(if new == 0 {
            Published::AllDuplicates
        } else {
            Published::New
        })
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(PUBLISH_DEADLINE, work) => outcome.unwrap_or_else(|_| {
            Err(IngestError::BusUnavailable(
                "publishing took longer than its deadline".to_owned(),
            ))
        }),
        () = disconnected(client) => Err(IngestError::BusUnavailable(
            "the connection to NATS was lost while publishing".to_owned(),
        )),
    };
    let result = if outcome.is_ok() { "ok" } else { "error" };
    metrics::histogram!("sluice_ingest_publish_duration_seconds", "result" => result)
        .record(started.elapsed().as_secs_f64());
    outcome
}

/// Whether JetStream refused a message because the stream is at its
/// `max_bytes`: a stream that discards new messages answers "maximum bytes
/// exceeded" as a store failure.
fn stream_is_full(error: &PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|error| {
            error.error_code() == ErrorCode::STREAM_STORE_FAILED
                && error.to_string().contains("maximum bytes")
        })
}

/// How often a request waiting for acks looks at the connection.
const CONNECTION_CHECK: Duration = Duration::from_millis(20);

/// Resolves once `client` is not connected. The client offers no way to
/// await its state, so it is looked at every few milliseconds, only while
/// a request waits for its acks.
async fn disconnected(client: &async_nats::Client) {
    while client.connection_state() == async_nats::connection::State::Connected {
        tokio::time::sleep(CONNECTION_CHECK).await;
    }
}

/// Waits until the read API has announced every chunk of `batch_id` stored.
/// `false` when `patience` ran out (or the process is shutting down) first.
pub(crate) async fn wait_until_stored(
    mut notices: async_nats::Subscriber,
    batch_id: Uuid,
    chunks: usize,
    patience: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let mut stored = vec![false; chunks];
    let mut missing = chunks;
    let deadline = tokio::time::Instant::now() + patience;
    while missing > 0 {
        let message = tokio::select! {
            message = notices.next() => message,
            _ = tokio::time::sleep_until(deadline) => return false,
            _ = shutdown.cancelled() => return false,
        };
        let Some(message) = message else {
            return false;
        };
        // Notices of other batches of this connector share the subject.
        let Ok(notice) = serde_json::from_slice::<StoredNotice>(&message.payload) else {
            continue;
        };
        if notice.batch_id != batch_id {
            continue;
        }
        if let Some(seen) = stored.get_mut(notice.chunk as usize)
            && !*seen
        {
            *seen = true;
            missing -= 1;
        }
    }
    let _ = notices.unsubscribe().await;
    true
}
