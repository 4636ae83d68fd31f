//! The tries of one request, within the route's timeout: pick an endpoint, send, and on a
//! failure the route lists (`retry { on [...] }`) try again on another endpoint after a
//! jittered backoff, while attempts, the retry budget and the deadline allow. A failure the
//! request cannot have caused — its pooled connection closed before it was written (the
//! keep-alive race) — is retried at once whatever the route says. Every try reports to the
//! endpoint's latency estimate and outlier detector.

pub mod backoff;
pub mod budget;
pub mod replay;
pub mod whole;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Method, Response};
use mesh_table::{RetryOn, RetryPolicy};

use crate::cluster::{Cluster, Endpoint, InFlight};
use crate::errors::{Failure, ProxyError};
use crate::forward::{Destination, Message, Target};
use crate::upstream::Upstreams;
use whole::Received;

/// The response header that says how many times the proxy retried the request.
pub const RETRIES_HEADER: &str = "x-mesh-retries";

/// Connection-race retries one request may take.
const MAX_RECONNECTS: u32 = 2;

/// What the tries of one request came to (request-scoped; the access log reads it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tries {
    /// Retries under the route's policy (tries after the first).
    pub retries: u32,
    /// Tries repeated because the connection closed before the request was processed.
    pub reconnects: u32,
    /// The endpoint of the last try.
    pub endpoint: Option<SocketAddr>,
    /// Whether the retry budget refused a retry.
    pub budget_exhausted: bool,
}

/// What a try came to, in the terms of `retry { on [...] }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// No connection, or nothing of the request left.
    ConnectFailure,
    /// The server refused the request unprocessed (REFUSED_STREAM, GOAWAY).
    RefusedStream,
    /// Reset or closed once the request may have been processed.
    Reset,
    /// The per-try timeout passed (matched by `reset`, `5xx` and `504`, as in Envoy).
    Timeout,
    /// A response head, with its `grpc-status` when it has one (trailers-only responses).
    Response {
        /// The HTTP status.
        status: u16,
        /// The gRPC status in the head.
        grpc: Option<u8>,
    },
}

/// gRPC UNAVAILABLE: the server did not act on the call.
const GRPC_UNAVAILABLE: u8 = 14;

/// Whether `policy` retries a try that came to `condition`, for a request whose method is
/// `idempotent` or not (attempts, budget and body aside). Failures where the request was
/// never processed are always safe; the others repeat a POST or PATCH only with
/// `non_idempotent true`.
pub fn allows(policy: &RetryPolicy, condition: Condition, idempotent: bool) -> bool {
    let listed = policy.on.iter().any(|on| lists(*on, condition));
    let never_processed = matches!(
        condition,
        Condition::ConnectFailure
            | Condition::RefusedStream
            | Condition::Response {
                grpc: Some(GRPC_UNAVAILABLE),
                ..
            }
    );
    listed && (never_processed || idempotent || policy.non_idempotent)
}

fn lists(on: RetryOn, condition: Condition) -> bool {
    match (on, condition) {
        (RetryOn::ConnectFailure, Condition::ConnectFailure)
        | (RetryOn::RefusedStream, Condition::RefusedStream)
        | (RetryOn::Reset, Condition::Reset | Condition::Timeout) => true,
        (RetryOn::Status(m), Condition::Timeout) => m.matches(504),
        (RetryOn::Status(m), Condition::Response { status, .. }) => m.matches(status),
        (RetryOn::Grpc(code), Condition::Response { grpc: Some(g), .. }) => code == g,
        _ => false,
    }
}

/// Whether RFC 9110 lets the method be repeated (unknown methods: no).
pub fn is_idempotent(method: &Method) -> bool {
    mesh_table::Method::parse(method.as_str()).is_some_and(mesh_table::Method::is_idempotent)
}

/// Sends `message` to `to` within its timeout, retrying as its policy says. Returns the
/// response with the guard that counts it in flight at its endpoint until it ends.
pub async fn send(
    upstreams: &Upstreams,
    to: &Destination<'_>,
    message: &Message,
    tries: &mut Tries,
) -> Result<(Response<Received>, Option<InFlight>), ProxyError> {
    // The route's timeout bounds everything: every try and every pause between them.
    let deadline = tokio::time::Instant::now() + to.timeout;
    match tokio::time::timeout_at(deadline, run(upstreams, to, message, tries, deadline)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout(millis(to.timeout))),
    }
}

async fn run(
    upstreams: &Upstreams,
    to: &Destination<'_>,
    message: &Message,
    tries: &mut Tries,
    deadline: tokio::time::Instant,
) -> Result<(Response<Received>, Option<InFlight>), ProxyError> {
    let policy = to.retry;
    let attempts = policy.map_or(1, |p| p.attempts.max(1));
    let per_try = policy
        .and_then(|p| p.per_try_timeout_ms)
        .map(Duration::from_millis);
    let idempotent = is_idempotent(&message.method);
    let mut rng = fastrand::Rng::new();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut attempt = 1;
    if let (Some(_), Some(budget)) = (policy, to.budget) {
        budget.deposit();
    }
    loop {
        let (addr, endpoint) = to.target.pick(&tried)?;
        tries.endpoint = Some(addr);
        let request = message.request(to.hop, to.authority)?;
        let in_flight = endpoint.as_ref().map(Endpoint::start);
        let started = Instant::now();
        // Where a reset of this try could still be retried, a small response is read
        // whole within the try (see `whole`).
        let read_whole = policy
            .is_some_and(|p| attempt < attempts && allows(p, Condition::Reset, idempotent))
            && message.body.can_replay();
        let sent = async {
            let response = upstreams
                .send(to.hop, addr, to.target.remote(), request)
                .await?;
            if read_whole && whole::wanted(&response) {
                whole::read(response).await
            } else {
                Ok(response.map(Received::Streaming))
            }
        };
        let outcome = match per_try {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(result) => Outcome::from(result),
                Err(_) => Outcome::TimedOut(limit),
            },
            None => Outcome::from(sent.await),
        };
        if let (Target::Cluster { cluster, .. }, Some(endpoint)) = (&to.target, &endpoint) {
            outcome.report(cluster, endpoint, started);
        }
        if tries.reconnects < MAX_RECONNECTS
            && outcome.is_connection_race(idempotent)
            && message.body.can_replay()
        {
            tries.reconnects += 1;
            tracing::debug!(endpoint = %addr, "connection closed before the request was processed; sending it again");
            continue;
        }
        let Some(condition) = outcome.condition() else {
            return outcome.into_result(in_flight);
        };
        if let Some(policy) = policy.filter(|p| {
            attempt < attempts && allows(p, condition, idempotent) && message.body.can_replay()
        }) {
            let pause = backoff::delay(
                policy.backoff_base_ms,
                policy.backoff_max_ms,
                attempt,
                &mut rng,
            );
            // A retry that cannot start before the deadline would only turn this answer
            // into a timeout.
            if tokio::time::Instant::now() + pause < deadline {
                if to.budget.is_none_or(|b| b.try_withdraw()) {
                    drop(outcome);
                    drop(in_flight);
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                    tries.retries += 1;
                    tried.push(addr);
                    tracing::debug!(endpoint = %addr, ?condition, attempt, "retrying");
                    continue;
                }
                tries.budget_exhausted = true;
            }
        }
        return outcome.into_result(in_flight);
    }
}

/// One try's result.
enum Outcome {
    Response(Response<Received>),
    Failed(ProxyError),
    TimedOut(Duration),
}

impl From<Result<Response<Received>, ProxyError>> for Outcome {
    fn from(result: Result<Response<Received>, ProxyError>) -> Outcome {
        match result {
            Ok(response) => Outcome::Response(response),
            Err(error) => Outcome::Failed(error),
        }
    }
}

impl Outcome {
    /// The try in the terms of `retry { on }`; `None` for failures no retry can help.
    fn condition(&self) -> Option<Condition> {
        match self {
            Outcome::Response(response) => Some(Condition::Response {
                status: response.status().as_u16(),
                grpc: response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            }),
            Outcome::TimedOut(_) => Some(Condition::Timeout),
            // A refused TLS handshake sent nothing: another endpoint may be the right one.
            Outcome::Failed(ProxyError::Connect { .. } | ProxyError::UpstreamTls { .. }) => {
                Some(Condition::ConnectFailure)
            }
            Outcome::Failed(ProxyError::Upstream { failure, .. }) => Some(match failure {
                Failure::NotSent => Condition::ConnectFailure,
                Failure::GoAway | Failure::Refused => Condition::RefusedStream,
                Failure::Closed | Failure::Reset => Condition::Reset,
            }),
            Outcome::Failed(_) => None,
        }
    }

    /// A pooled connection that closed under the request before it was processed: the
    /// request was not written, a GOAWAY excluded it, or (for a method that may be
    /// repeated) the connection closed before any response.
    fn is_connection_race(&self, idempotent: bool) -> bool {
        match self {
            Outcome::Failed(ProxyError::Upstream { failure, .. }) => match failure {
                Failure::NotSent | Failure::GoAway => true,
                Failure::Closed => idempotent,
                Failure::Refused | Failure::Reset => false,
            },
            _ => false,
        }
    }

    /// Feeds the try to the endpoint's latency estimate and the outlier detector. Failures
    /// to connect do not feed the latency: a fast failure must not look like a fast endpoint.
    fn report(&self, cluster: &Cluster, endpoint: &Endpoint, started: Instant) {
        let failed = match self {
            Outcome::Response(response) => {
                endpoint.observe_latency(started.elapsed(), Instant::now());
                response.status().is_server_error()
            }
            Outcome::TimedOut(_) => {
                endpoint.observe_latency(started.elapsed(), Instant::now());
                true
            }
            Outcome::Failed(ProxyError::Upstream {
                failure: Failure::NotSent | Failure::GoAway,
                ..
            }) => return,
            Outcome::Failed(
                ProxyError::Connect { .. }
                | ProxyError::UpstreamTls { .. }
                | ProxyError::Upstream { .. },
            ) => true,
            Outcome::Failed(_) => return,
        };
        cluster.observe(endpoint, failed);
    }

    fn into_result(
        self,
        in_flight: Option<InFlight>,
    ) -> Result<(Response<Received>, Option<InFlight>), ProxyError> {
        match self {
            Outcome::Response(response) => Ok((response, in_flight)),
            Outcome::Failed(error) => Err(error),
            Outcome::TimedOut(limit) => Err(ProxyError::Timeout(millis(limit))),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
