//! Active health checking: who is fit. For each service with a `health` block, every
//! endpoint gets an HTTP GET of the policy's path each interval, sent like any request of
//! this proxy — over HTTP/2 (mTLS) to the endpoint's sidecar, with the service as authority — so
//! the sidecar forwards it to the application and the probe sees both. An endpoint turns
//! unhealthy after `unhealthy_after` failures in a row and healthy again after
//! `healthy_after` successes; endpoints start healthy, so a new table serves at once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Version};
use http_body_util::BodyExt;
use mesh_table::HealthCheck;
use tokio::task::JoinSet;

use crate::body::empty;
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

/// Probes the endpoints of `cluster` every interval until the cluster is gone (or the
/// task is aborted because the policy changed).
pub async fn run(cluster: Weak<Cluster>, upstreams: Arc<Upstreams>, policy: HealthCheck) {
    let interval = Duration::from_millis(policy.interval_ms.max(1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            probes.spawn(async move {
                let ok = probe(&upstreams, &service, &endpoint, &policy).await;
                record(&service, &endpoint, ok, &policy);
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

/// One probe: a 2xx within the timeout passes.
async fn probe(
    upstreams: &Upstreams,
    service: &str,
    endpoint: &Endpoint,
    policy: &HealthCheck,
) -> bool {
    let Ok(request) = Request::get(format!("http://{service}{}", policy.path))
        .version(Version::HTTP_2)
        .header(http::header::USER_AGENT, "mesh-proxy-health-check")
        .body(empty())
    else {
        return false;
    };
    let timeout = Duration::from_millis(policy.timeout_ms.max(1));
    let exchange = async {
        let response = upstreams
            .send_h2(endpoint.addr(), Remote::Sidecar(service), request)
            .await
            .ok()?;
        let ok = response.status().is_success();
        // Read the (small) body so the stream ends cleanly instead of being reset.
        response.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(timeout, exchange).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::{observe, Counts};
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
}
