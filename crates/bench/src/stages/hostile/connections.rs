//! The attacks on connections themselves, by hand-written HTTP: clients
//! that send half a request and stall, and early refusals on keep-alive
//! connections.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_testkit::ADMIN_TOKEN;
use tokio::io::AsyncReadExt as _;

use super::Services;
use super::wire::{self, Connection};
use crate::services::ServiceProcess;

/// How much later than its timeout a service may close a stalled
/// connection and still count as closing it.
pub(crate) const CLOSE_SLACK: Duration = Duration::from_secs(5);

/// Stalled connections to one service, and when it closed them.
#[derive(Debug, Serialize)]
pub(crate) struct Stalled {
    pub service: &'static str,
    pub what: &'static str,
    pub connections: usize,
    /// Connections that could not even be opened.
    pub refused: usize,
    /// Closed by the service within the wait.
    pub closed: usize,
    /// From the stall to the close, slowest connection.
    pub slowest_close_seconds: f64,
    pub timeout_seconds: f64,
    /// The answers the service sent before closing (none for a head).
    pub statuses: BTreeMap<u16, u64>,
}

impl Stalled {
    pub fn held(&self) -> bool {
        self.refused == 0
            && self.closed == self.connections
            && self.slowest_close_seconds <= (self.timeout_seconds + CLOSE_SLACK.as_secs_f64())
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {}: {}/{} closed, slowest after {:.1} s",
            self.service, self.what, self.closed, self.connections, self.slowest_close_seconds
        )
    }
}

/// Attack 3.
#[derive(Debug, Serialize)]
pub(crate) struct SlowClients {
    pub header_timeout_seconds: f64,
    pub body_timeout_seconds: f64,
    /// Whether the services ran with timeouts shorter than their defaults.
    pub shortened: bool,
    pub stalled: Vec<Stalled>,
}

impl SlowClients {
    pub fn held(&self) -> bool {
        self.stalled.iter().all(Stalled::held)
    }
}

/// What became of one stalled connection: when it closed (after the
/// stall), and the answer it carried if any.
struct Fate {
    closed_after: Option<Duration>,
    status: Option<u16>,
}

/// Sends `prefix` on a new connection, then waits up to `wait` for the
/// service to answer and close.
async fn stall(
    from: IpAddr,
    service: &ServiceProcess,
    prefix: Vec<u8>,
    wait: Duration,
) -> Option<Fate> {
    let mut connection = Connection::open(from, service.addr).await.ok()?;
    if connection.send(&prefix).await.is_err() {
        return Some(Fate {
            closed_after: Some(Duration::ZERO),
            status: None,
        });
    }
    let stalled = Instant::now();
    let outcome = tokio::time::timeout(wait, async {
        let status = connection.answer().await.ok().map(|answer| answer.status);
        // Then the close itself (after an answer, or a close instead of one).
        let mut rest = [0u8; 4096];
        while matches!(connection.reader.read(&mut rest).await, Ok(n) if n > 0) {}
        status
    })
    .await;
    Some(match outcome {
        Ok(status) => Fate {
            closed_after: Some(stalled.elapsed()),
            status,
        },
        Err(_) => Fate {
            closed_after: None,
            status: None,
        },
    })
}

async fn stall_many(
    from: IpAddr,
    service: &ServiceProcess,
    what: &'static str,
    connections: usize,
    prefix: Vec<u8>,
    timeout: Duration,
) -> Stalled {
    let wait = timeout + CLOSE_SLACK * 2;
    let fates = futures::future::join_all(
        (0..connections).map(|_| stall(from, service, prefix.clone(), wait)),
    )
    .await;
    let mut result = Stalled {
        service: service.kind.name(),
        what,
        connections,
        refused: 0,
        closed: 0,
        slowest_close_seconds: 0.0,
        timeout_seconds: timeout.as_secs_f64(),
        statuses: BTreeMap::new(),
    };
    for fate in fates {
        let Some(fate) = fate else {
            result.refused += 1;
            continue;
        };
        match fate.closed_after {
            Some(after) => {
                result.closed += 1;
                result.slowest_close_seconds =
                    result.slowest_close_seconds.max(after.as_secs_f64());
            }
            None => result.slowest_close_seconds = wait.as_secs_f64(),
        }
        if let Some(status) = fate.status {
            *result.statuses.entry(status).or_default() += 1;
        }
    }
    result
}

/// Attack 3: `heads` connections to each service sending half a request
/// head, and `uploads` to the gateway declaring `declared` bytes of body
/// and sending `sent` of them; all at once, all then stalled.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn slow_clients(
    services: &Services<'_>,
    from: IpAddr,
    heads: usize,
    uploads: usize,
    declared: usize,
    sent: usize,
    timeouts: &sluice_runtime::settings::HttpLimits,
    shortened: bool,
) -> SlowClients {
    let half_head = b"POST /v1/connectors HTTP/1.1\r\nHost: sluice.bench\r\nContent-Ty".to_vec();
    let mut upload = wire::head(
        "POST",
        &format!("/v1/connectors/{}/records", services.bulk.id),
        &[
            (
                "Authorization",
                format!("Bearer {}", services.bulk.write_token),
            ),
            ("Content-Type", "application/json".to_owned()),
            ("Content-Length", declared.to_string()),
        ],
    );
    // A valid start of a JSON array, so nothing refuses it before the end.
    upload.push(b'[');
    upload.resize(upload.len() + sent.saturating_sub(1), b' ');
    let mut attacks: Vec<_> = services
        .all()
        .into_iter()
        .map(|service| {
            Box::pin(stall_many(
                from,
                service,
                "half heads",
                heads,
                half_head.clone(),
                timeouts.header_timeout,
            ))
        })
        .collect();
    attacks.push(Box::pin(stall_many(
        from,
        services.gateway,
        "half uploads",
        uploads,
        upload,
        timeouts.body_timeout,
    )));
    SlowClients {
        header_timeout_seconds: timeouts.header_timeout.as_secs_f64(),
        body_timeout_seconds: timeouts.body_timeout.as_secs_f64(),
        shortened,
        stalled: futures::future::join_all(attacks).await,
    }
}

/// Attack 5, one kind of refused request.
#[derive(Debug, Serialize)]
pub(crate) struct Refusals {
    pub service: &'static str,
    pub what: &'static str,
    pub rounds: usize,
    pub statuses: BTreeMap<u16, u64>,
    /// The refused request's own answer never arrived (a reset).
    pub answers_lost: u64,
    /// Answered with `Connection: close`: the client knows to reconnect.
    pub closed_with_notice: u64,
    /// Requests sent after the refusal on the same connection.
    pub follow_ups: u64,
    /// Of those, the ones that got no answer.
    pub follow_ups_failed: u64,
}

impl Refusals {
    pub fn held(&self) -> bool {
        self.answers_lost == 0 && self.follow_ups_failed == 0
    }

    pub fn describe(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| format!("{n}× {status}"))
            .collect();
        format!(
            "{} {}: {}; {} lost, {} closed with notice, {}/{} follow-ups failed",
            self.service,
            self.what,
            statuses.join(" "),
            self.answers_lost,
            self.closed_with_notice,
            self.follow_ups_failed,
            self.follow_ups
        )
    }
}

/// A refused request: its head and the body bytes sent before the answer
/// is read; the rest of the declared body is sent only if the connection
/// is to be reused.
struct Refused {
    head: Vec<u8>,
    sent: usize,
    declared: usize,
}

/// Sends `rounds` refused requests, each followed on the same connection
/// by `GET /healthz` unless the answer said `Connection: close`, as a
/// keep-alive client (or a proxy) would.
async fn refuse(
    from: IpAddr,
    service: &ServiceProcess,
    what: &'static str,
    rounds: usize,
    request: impl Fn(usize) -> Refused,
) -> Refusals {
    let mut result = Refusals {
        service: service.kind.name(),
        what,
        rounds,
        statuses: BTreeMap::new(),
        answers_lost: 0,
        closed_with_notice: 0,
        follow_ups: 0,
        follow_ups_failed: 0,
    };
    let follow_up = wire::head("GET", "/healthz", &[]);
    let mut open: Option<Connection> = None;
    for round in 0..rounds {
        let mut connection = match open.take() {
            Some(connection) => connection,
            None => match Connection::open(from, service.addr).await {
                Ok(connection) => connection,
                Err(_) => {
                    result.answers_lost += 1;
                    continue;
                }
            },
        };
        let refused = request(round);
        let mut bytes = refused.head;
        bytes.resize(bytes.len() + refused.sent, b' ');
        let answer = match connection.send(&bytes).await {
            Ok(()) => connection.answer().await,
            Err(error) => Err(error),
        };
        let Ok(answer) = answer else {
            result.answers_lost += 1;
            continue;
        };
        *result.statuses.entry(answer.status).or_default() += 1;
        if answer.close {
            result.closed_with_notice += 1;
            continue;
        }
        // Kept open: finish the body as HTTP requires, then reuse it.
        let rest = vec![b' '; refused.declared - refused.sent];
        result.follow_ups += 1;
        let reused = async {
            connection.send(&rest).await?;
            connection.send(&follow_up).await?;
            connection.answer().await
        }
        .await;
        match reused {
            Ok(answer) if answer.status == 200 && !answer.close => open = Some(connection),
            Ok(answer) if answer.status == 200 => {}
            _ => result.follow_ups_failed += 1,
        }
    }
    result
}

/// Attack 5: early refusals of requests with bodies, on keep-alive
/// connections: wrong tokens with a small and a large body (gateway and
/// control plane), and 413 by `Content-Length`.
pub(crate) async fn early_refusals(
    services: &Services<'_>,
    from: IpAddr,
    rounds: usize,
    max_body_bytes: usize,
) -> Vec<Refusals> {
    let records_path = format!("/v1/connectors/{}/records", services.bulk.id);
    let post = |path: &str, token: String, declared: usize, sent: usize| Refused {
        head: wire::head(
            "POST",
            path,
            &[
                ("Authorization", format!("Bearer {token}")),
                ("Content-Type", "application/json".to_owned()),
                ("Content-Length", declared.to_string()),
            ],
        ),
        sent,
        declared,
    };
    let wrong = |i: usize| format!("sluice_w_{:064x}", i + 1);
    let small = 8 * 1024;
    let large = 256 * 1024;
    vec![
        refuse(
            from,
            services.gateway,
            "wrong token, 8 KiB body",
            rounds,
            |i| post(&records_path, wrong(i), small, small),
        )
        .await,
        refuse(
            from,
            services.gateway,
            "wrong token, 256 KiB body",
            rounds,
            |i| post(&records_path, wrong(i), large, large),
        )
        .await,
        refuse(
            from,
            services.gateway,
            "413 by Content-Length",
            rounds,
            |_| {
                post(
                    &records_path,
                    services.bulk.write_token.clone(),
                    max_body_bytes + 1,
                    large,
                )
            },
        )
        .await,
        refuse(
            from,
            services.control,
            "wrong token, 8 KiB body",
            rounds,
            |i| {
                post(
                    "/v1/connectors",
                    format!("not-{ADMIN_TOKEN}-{i}"),
                    small,
                    small,
                )
            },
        )
        .await,
    ]
}
