//! How far storing is behind accepting: the records accepted by ingest and
//! not yet stored by the read API, per connector, read from the records
//! stream alone, so that it is right whether or not a read API runs.
//!
//! The stream is a work queue: a message leaves it once stored, so what it
//! holds under a connector's subject is exactly that connector's backlog,
//! and its first message there is the oldest one not yet stored. Measuring
//! costs one stream-info request (message counts per subject) and, per
//! connector with a backlog, one or two direct gets of a message; nothing
//! on the path of a POST or of the store.

use std::collections::HashMap;

use async_nats::jetstream::{self, message::StreamMessage, stream};
use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Deserialize;
use uuid::Uuid;

use crate::bus::Namespace;

/// Connectors whose ends are read at once.
const CONCURRENT_READS: usize = 8;

/// A connector's messages on the records stream, not yet stored.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Messages (chunks of accepted requests) not yet stored: exact.
    pub messages: u64,
    /// Records in them, estimated as `messages` times the mean of the
    /// oldest and the newest message's records, without reading those in
    /// between: exact for one or two messages, and for producers whose
    /// requests are alike.
    pub records_estimate: u64,
    /// When the oldest of them was accepted (JetStream's time).
    pub oldest_at: Option<DateTime<Utc>>,
}

impl Backlog {
    /// How long the oldest message has waited to be stored; 0 without one.
    pub fn seconds_behind(&self, now: DateTime<Utc>) -> f64 {
        self.oldest_at.map_or(0.0, |oldest| {
            ((now - oldest).num_milliseconds() as f64 / 1000.0).max(0.0)
        })
    }
}

/// Which connectors to measure.
#[derive(Debug, Clone, Copy)]
pub enum Connectors<'a> {
    /// Every connector with a backlog.
    All,
    One(Uuid),
    /// These, with a backlog (a page of the connectors list).
    Among(&'a [Uuid]),
}

impl Connectors<'_> {
    fn includes(self, id: Uuid) -> bool {
        match self {
            Connectors::All => true,
            Connectors::One(one) => one == id,
            Connectors::Among(ids) => ids.contains(&id),
        }
    }
}

/// The backlog of `which` connectors; a connector with none is absent.
pub async fn measure(
    js: &jetstream::Context,
    ns: &Namespace,
    which: Connectors<'_>,
) -> anyhow::Result<HashMap<Uuid, Backlog>> {
    let stream = js.get_stream_no_info(ns.records_stream()).await?;
    let filter = match which {
        Connectors::One(id) => ns.records_subject(id),
        Connectors::All | Connectors::Among(_) => ns.records_subjects(),
    };
    let counts: Vec<(Uuid, u64)> = stream
        .info_with_subjects(filter)
        .await?
        .try_filter_map(|(subject, messages)| async move {
            Ok(ns
                .connector_of_records_subject(&subject)
                .filter(|&id| messages > 0 && which.includes(id))
                .map(|id| (id, messages as u64)))
        })
        .try_collect()
        .await?;
    let stream = &stream;
    futures::stream::iter(counts)
        .map(|(id, messages)| async move {
            let backlog = ends(stream, &ns.records_subject(id), messages).await?;
            anyhow::Ok((id, backlog))
        })
        .buffer_unordered(CONCURRENT_READS)
        .try_filter_map(|(id, backlog)| async move {
            Ok((backlog.messages > 0).then_some((id, backlog)))
        })
        .try_collect()
        .await
}

/// The backlog of one subject holding `messages` messages, from its oldest
/// and newest one. Both may have been stored since they were counted.
async fn ends(
    stream: &stream::Stream<()>,
    subject: &str,
    messages: u64,
) -> anyhow::Result<Backlog> {
    let Some(oldest) = found(stream.direct_get_first_for_subject(subject).await)? else {
        return Ok(Backlog::default());
    };
    let oldest_rows = rows(&oldest);
    let newest_rows = if messages > 1 {
        found(stream.direct_get_last_for_subject(subject).await)?
            .map_or(oldest_rows, |newest| rows(&newest))
    } else {
        oldest_rows
    };
    let records_estimate = (u128::from(messages) * u128::from(oldest_rows + newest_rows))
        .div_ceil(2)
        .try_into()
        .unwrap_or(u64::MAX);
    let time = oldest.time;
    Ok(Backlog {
        messages,
        records_estimate,
        oldest_at: DateTime::from_timestamp(time.unix_timestamp(), time.nanosecond()),
    })
}

/// `None` for a message that is not there (any more).
fn found(
    got: Result<StreamMessage, stream::DirectGetError>,
) -> anyhow::Result<Option<StreamMessage>> {
    match got {
        Ok(message) => Ok(Some(message)),
        Err(error) if error.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The records a message carries: its batch's `rows`; 0 for a message that
/// does not decode (the store sets it aside as a dead letter).
fn rows(message: &StreamMessage) -> u64 {
    #[derive(Deserialize)]
    struct Rows {
        rows: u64,
    }
    serde_json::from_slice::<Rows>(&message.payload).map_or(0, |batch| batch.rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_behind_count_from_the_oldest_message() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:10.250Z")
            .unwrap()
            .to_utc();
        let oldest = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .to_utc();
        let backlog = Backlog {
            messages: 1,
            records_estimate: 5,
            oldest_at: Some(oldest),
        };
        assert_eq!(backlog.seconds_behind(now), 10.25);
        assert_eq!(Backlog::default().seconds_behind(now), 0.0);
        // A clock behind the server's never makes a negative lag.
        assert_eq!(
            backlog.seconds_behind(oldest - chrono::Duration::seconds(1)),
            0.0
        );
    }

    #[test]
    fn subjects_name_their_connector_in_their_namespace_only() {
        let ns = Namespace::new("ns1").unwrap();
        let id = Uuid::now_v7();
        assert_eq!(
            ns.connector_of_records_subject(&ns.records_subject(id)),
            Some(id)
        );
        let other = Namespace::new("ns").unwrap();
        assert_eq!(
            other.connector_of_records_subject(&ns.records_subject(id)),
            None
        );
        assert_eq!(ns.connector_of_records_subject("ns1.records.x"), None);
        assert_eq!(
            ns.connector_of_records_subject(&ns.dead_letter_subject("a")),
            None
        );
    }
}
