//! Active health checking: who is fit. For each service with a `health` block, every
//! endpoint gets a probe each interval, sent like any request of this proxy — over HTTP/2
//! (mTLS) to the endpoint's sidecar, with the service as authority — so the sidecar forwards
//! it to the application and the probe sees both. The probe is an HTTP GET of the policy's
//! path (a 2xx passes) or, for a `protocol grpc` service, gRPC's health-checking protocol:
//! `grpc.health.v1.Health/Check` for the server as a whole (service `""`), which passes when it
//! answers SERVING with status OK, as Envoy's `grpc_health_check` does. An endpoint turns
//! unhealthy after `unhealthy_after` failures in a row and healthy again after
//! `healthy_after` successes. The first round starts as soon as the cluster does (at its
//! service's first request, which waits for it, see `cluster::demand`): an endpoint whose
//! first probe is refused or answered unhealthy is out at once, as Envoy's hosts fail
//! active health checking until their first one passes (a first probe that only ran out
//! of time counts as one failure); endpoints not probed yet count as healthy.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Version};
use http_body_util::BodyExt;
use mesh_table::{HealthCheck, Protocol, Service};
use tokio::task::JoinSet;

use crate::body::{empty, full};
use crate::cluster::{Cluster, Endpoint};
use crate::upstream::{Remote, Upstreams};

/// Consecutive probe results of one endpoint.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    successes: u32,
    failures: u32,
}

/// Feeds one probe result (`ok`) to an endpoint that is `healthy` now; returns its new
/// verdict when this result changes it.
pub fn observe(healthy: bool, counts: &mut Counts, ok: bool, policy: &HealthCheck) -> Option<bool> {
    if ok {
        counts.failures = 0;
        counts.successes = counts.successes.saturating_add(1);
        (!healthy && counts.successes >= policy.healthy_after.max(1)).then_some(true)
    } else {
        counts.successes = 0;
        counts.failures = counts.failures.saturating_add(1);
        (healthy && counts.failures >= policy.unhealthy_after.max(1)).then_some(false)
    }
}

/// Applies one probe result to `endpoint`, logging a change of verdict.
pub fn record(service: &str, endpoint: &Endpoint, ok: bool, policy: &HealthCheck) {
    let changed = {
        let mut counts = endpoint.health();
        let changed = observe(endpoint.is_healthy(), &mut counts, ok, policy);
        if let Some(healthy) = changed {
            endpoint.set_healthy(healthy);
        }
        changed
    };
    match changed {
        Some(false) => tracing::warn!(
            %service,
            endpoint = %endpoint.addr(),
            failures = policy.unhealthy_after,
            "endpoint failed its health checks: unhealthy, no traffic until it passes again"
        ),
        Some(true) => tracing::info!(
            %service,
            endpoint = %endpoint.addr(),
            successes = policy.healthy_after,
            "endpoint passes its health checks again: healthy"
        ),
        None => {}
    }
}

/// The path of gRPC's health check.
pub const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// How a service's endpoints are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET` of the policy's path; a 2xx passes.
    Http,
    /// gRPC `Health/Check`; SERVING passes.
    Grpc,
}

impl Probe {
    /// The probe of a service speaking `protocol`.
    pub fn of(protocol: Protocol) -> Probe {
        match protocol {
            Protocol::Grpc => Probe::Grpc,
            Protocol::Http1 | Protocol::Http2 => Probe::Http,
        }
    }
}

/// Whether a request for `service` is the health probe its callers' sidecars send: what the
/// inbound side admits from any mesh identity. `path` is normalized, `target` as sent.
pub fn is_probe(service: &Service, method: &Method, path: &str, target: &str) -> bool {
    let Some(health) = &service.health else {
        return false;
    };
    match Probe::of(service.protocol) {
        Probe::Grpc => method == Method::POST && path == GRPC_HEALTH_CHECK,
        Probe::Http => method == Method::GET && (health.path == path || health.path == target),
    }
}

/// Probes the endpoints of `cluster` every interval until the cluster is gone (or the
/// task is aborted because the policy changed).
pub async fn run(
    cluster: Weak<Cluster>,
    upstreams: Arc<Upstreams>,
    policy: HealthCheck,
    kind: Probe,
) {
    let interval = Duration::from_millis(policy.interval_ms.max(1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first round decides at once: one definite failure (refused, reset, an unhealthy
    // answer) is enough. A probe that ran out of time counts as one failure of the usual
    // `unhealthy_after`: a slow first connection (a handshake on a loaded machine) is no
    // verdict on the endpoint.
    let first_round = HealthCheck {
        unhealthy_after: 1,
        ..policy.clone()
    };
    let mut first = true;
    loop {
        ticker.tick().await;
        let Some(strong) = cluster.upgrade() else {
            return;
        };
        let service: Arc<str> = Arc::from(strong.name());
        let members = strong.members();
        drop(strong);
        let mut probes = JoinSet::new();
        for endpoint in &members.endpoints {
            let (upstreams, endpoint) = (Arc::clone(&upstreams), Arc::clone(endpoint));
            let (service, policy) = (Arc::clone(&service), policy.clone());
            let first_round = first.then(|| first_round.clone());
            probes.spawn(async move {
                let outcome = probe(&upstreams, &service, &endpoint, &policy, kind).await;
                let counted = match (&first_round, outcome) {
                    (Some(strict), Outcome::Failed) => strict,
                    _ => &policy,
                };
                record(&service, &endpoint, outcome == Outcome::Passed, counted);
            });
        }
        while probes.join_next().await.is_some() {}
        first = false;
        if let Some(cluster) = cluster.upgrade() {
            cluster.usage().set_probed();
        }
    }
}

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A 2xx (gRPC: SERVING) within the timeout.
    Passed,
    /// Refused, reset, or answered as not healthy.
    Failed,
    /// No answer within the timeout.
    TimedOut,
}

/// One probe: a 2xx (gRPC: SERVING) within the timeout passes.
async fn probe(
    upstreams: &Upstreams,
    service: &str,
    endpoint: &Endpoint,
    policy: &HealthCheck,
    kind: Probe,
) -> Outcome {
    let Some(request) = request(service, policy, kind) else {
        return Outcome::Failed;
    };
    let timeout = Duration::from_millis(policy.timeout_ms.max(1));
    let exchange = async {
        let response = upstreams
            .send_h2(endpoint.addr(), Remote::Sidecar(service), request)
            .await
            .ok()?;
        let (head, body) = response.into_parts();
        // Read the (small) body so the stream ends cleanly instead of being reset.
        let body = body.collect().await.ok()?;
        Some(match kind {
            Probe::Http => head.status.is_success(),
            Probe::Grpc => {
                // The status is in the trailers, or in the head of a trailers-only answer.
                let status = body
                    .trailers()
                    .and_then(|t| t.get("grpc-status"))
                    .or_else(|| head.headers.get("grpc-status"));
                head.status.is_success()
                    && status.is_some_and(|s| s == "0")
                    && grpc_serving(&body.to_bytes())
            }
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Some(true)) => Outcome::Passed,
        Ok(_) => Outcome::Failed,
        Err(_) => Outcome::TimedOut,
    }
}

/// The probe's request.
fn request(service: &str, policy: &HealthCheck, kind: Probe) -> Option<Request<crate::body::Body>> {
    let builder = Request::builder()
        .version(Version::HTTP_2)
        .header(http::header::USER_AGENT, "mesh-proxy-health-check");
    match kind {
        Probe::Http => builder
            .method(Method::GET)
            .uri(format!("http://{service}{}", policy.path))
            .body(empty()),
        // An empty HealthCheckRequest (service "": the server as a whole), framed.
        Probe::Grpc => builder
            .method(Method::POST)
            .uri(format!("http://{service}{GRPC_HEALTH_CHECK}"))
            .header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            )
            .header(http::header::TE, HeaderValue::from_static("trailers"))
            .body(full(Bytes::from_static(&[0, 0, 0, 0, 0]))),
    }
    .ok()
}

/// Whether a gRPC body is one uncompressed `HealthCheckResponse` saying SERVING (field 1,
/// the enum `status`, equal to 1; the last occurrence wins, as protobuf decoders read it).
pub fn grpc_serving(body: &[u8]) -> bool {
    let Some((&[0, a, b, c, d], message)) = body.split_first_chunk::<5>() else {
        return false;
    };
    if message.len() != u32::from_be_bytes([a, b, c, d]) as usize {
        return false;
    }
    let mut rest = message;
    let mut status = 0;
    while !rest.is_empty() {
        let Some(key) = varint(&mut rest) else {
            return false;
        };
        let skip = match key & 7 {
            0 => match varint(&mut rest) {
                Some(value) if key >> 3 == 1 => {
                    status = value;
                    0
                }
                Some(_) => 0,
                None => return false,
            },
            1 => 8,
            2 => match varint(&mut rest).and_then(|n| usize::try_from(n).ok()) {
                Some(n) => n,
                None => return false,
            },
            5 => 4,
            _ => return false,
        };
        let Some(after) = rest.get(skip..) else {
            return false;
        };
        rest = after;
    }
    status == 1
}

/// Reads one protobuf varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{grpc_serving, observe, Counts};
    use mesh_table::HealthCheck;

    fn policy() -> HealthCheck {
        HealthCheck {
            path: "/healthz".into(),
            interval_ms: 1000,
            timeout_ms: 100,
            unhealthy_after: 3,
            healthy_after: 2,
        }
    }

    #[test]
    fn unhealthy_after_n_failures_in_a_row_and_back_after_m_successes() {
        let p = policy();
        let mut c = Counts::default();
        let mut healthy = true;
        let mut apply = |ok: bool, healthy: &mut bool| {
            if let Some(h) = observe(*healthy, &mut c, ok, &p) {
                *healthy = h;
            }
            *healthy
        };
        // Two failures, a success: the run starts over.
        assert!(apply(false, &mut healthy));
        assert!(apply(false, &mut healthy));
        assert!(apply(true, &mut healthy));
        assert!(apply(false, &mut healthy));
        assert!(apply(false, &mut healthy));
        assert!(!apply(false, &mut healthy), "third failure in a row");
        assert!(!apply(false, &mut healthy));
        assert!(!apply(true, &mut healthy), "one success is not enough");
        assert!(!apply(false, &mut healthy));
        assert!(!apply(true, &mut healthy));
        assert!(apply(true, &mut healthy), "second success in a row");
    }

    #[test]
    fn verdicts_are_reported_only_when_they_change() {
        let p = policy();
        let mut c = Counts::default();
        assert_eq!(observe(true, &mut c, true, &p), None);
        assert_eq!(observe(true, &mut c, false, &p), None);
        assert_eq!(observe(true, &mut c, false, &p), None);
        assert_eq!(observe(true, &mut c, false, &p), Some(false));
        assert_eq!(observe(false, &mut c, false, &p), None);
        assert_eq!(observe(false, &mut c, true, &p), None);
        assert_eq!(observe(false, &mut c, true, &p), Some(true));
    }

    #[test]
    fn grpc_health_answers_pass_only_when_serving() {
        // HealthCheckResponse { status: SERVING } and { status: NOT_SERVING }.
        assert!(grpc_serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 2, 0x08, 2]));
        // UNKNOWN (0) is the empty message; SERVICE_UNKNOWN is 3.
        assert!(!grpc_serving(&[0, 0, 0, 0, 0]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 2, 0x08, 3]));
        // Unknown fields are skipped; the last status wins.
        assert!(grpc_serving(&[
            0, 0, 0, 0, 7, 0x12, 1, b'x', 0x08, 2, 0x08, 1
        ]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 4, 0x08, 1, 0x08, 2]));
        // Compressed, cut short, a wrong length, nothing: not healthy.
        assert!(!grpc_serving(&[1, 0, 0, 0, 2, 0x08, 1]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 3, 0x08, 1]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 2, 0x08]));
        assert!(!grpc_serving(&[]));
    }
}
