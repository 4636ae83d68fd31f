//! What the request path counts: requests by outcome, their latency (buckets from the
//! service's `observe { latency_buckets }`), body bytes as they stream, retries, budget
//! refusals, timeouts and connect failures.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The default latency buckets, in seconds (5 ms to 10 s).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where a request was going: the labels every per-request family shares. The values are
/// table names (shared `Arc<str>`s of the snapshot, so building a label set allocates
/// nothing) or fixed words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The service the request is for (outbound: the authority's; inbound: this sidecar's).
    pub service: Arc<str>,
    /// The route's name; `none` when no route decided (inbound, no-route, errors before).
    pub route: Arc<str>,
    /// The service picked by the route's split (`none` when nothing was picked).
    pub target: Arc<str>,
}

/// [`RouteLabels`] with the caller and the status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The destination.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// Who called: outbound, this sidecar's service (its application); inbound, the
    /// caller's service, `other-mesh-identity` or `plaintext`.
    pub peer: Arc<str>,
    /// The response status code.
    pub status: u16,
}

/// [`RouteLabels`] with why a stream was cut.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CutLabels {
    /// The destination.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// `idle-timeout` or `stream-timeout`.
    pub reason: &'static str,
}

/// The request-path families.
#[derive(Debug, Default, Clone)]
pub struct RequestMetrics {
    /// `mesh_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `mesh_request_duration_seconds`.
    pub durations: Durations,
    /// `mesh_request_bytes_total`.
    pub request_bytes: Family<RouteLabels, Counter>,
    /// `mesh_response_bytes_total`.
    pub response_bytes: Family<RouteLabels, Counter>,
    /// `mesh_retries_total`.
    pub retries: Family<RouteLabels, Counter>,
    /// `mesh_retries_refused_total`.
    pub retries_refused: Family<RouteLabels, Counter>,
    /// `mesh_timeouts_total`.
    pub timeouts: Family<RouteLabels, Counter>,
    /// `mesh_upstream_connect_errors_total`.
    pub connect_errors: Family<RouteLabels, Counter>,
    /// `mesh_overloaded_total`.
    pub overloaded: Family<RouteLabels, Counter>,
    /// `mesh_streams_cut_total`.
    pub streams_cut: Family<CutLabels, Counter>,
}

impl RequestMetrics {
    /// Registers every family.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mesh_requests",
            "Requests answered, by direction, service, route, target, peer and status code",
            self.requests.clone(),
        );
        registry.register_collector(Box::new(self.durations.clone()));
        registry.register(
            "mesh_request_bytes",
            "Request body bytes received from the caller, counted as they stream",
            self.request_bytes.clone(),
        );
        registry.register(
            "mesh_response_bytes",
            "Response body bytes sent to the caller, counted as they stream",
            self.response_bytes.clone(),
        );
        registry.register(
            "mesh_retries",
            "Retries under the route's retry policy",
            self.retries.clone(),
        );
        registry.register(
            "mesh_retries_refused",
            "Retries the route's retry budget refused",
            self.retries_refused.clone(),
        );
        registry.register(
            "mesh_timeouts",
            "Requests answered 504 timeout (the route's timeout or the last try's per-try timeout)",
            self.timeouts.clone(),
        );
        registry.register(
            "mesh_upstream_connect_errors",
            "Requests answered 502 because no connection (or no mTLS session) to the upstream could be made",
            self.connect_errors.clone(),
        );
        registry.register(
            "mesh_overloaded",
            "Requests answered 503 overloaded at once: the target service's limits (max_requests, max_pending) in this sidecar were full",
            self.overloaded.clone(),
        );
        registry.register(
            "mesh_streams_cut",
            "Streams cut after the response head because a body stalled (idle-timeout) or the stream outlived stream_timeout",
            self.streams_cut.clone(),
        );
    }
}

/// `mesh_request_duration_seconds`: one histogram per route label set, each with the
/// buckets of its service's `observe { latency_buckets }`. One family may hold series with
/// different bucket bounds in the text format, which `Family` (one constructor for all)
/// cannot express, hence this small map and its own encoder.
#[derive(Debug, Default, Clone)]
pub struct Durations(Arc<RwLock<HashMap<RouteLabels, Arc<Histogram>>>>);

impl Durations {
    /// The histogram of `labels`, created with `buckets` (seconds) on first use.
    pub fn get(&self, labels: &RouteLabels, buckets: &[f64]) -> Arc<Histogram> {
        if let Some(h) = self.0.read().ok().and_then(|m| m.get(labels).cloned()) {
            return h;
        }
        let Ok(mut map) = self.0.write() else {
            // A poisoned lock (a panic while inserting): record into a detached histogram.
            return Arc::new(Histogram::new(buckets.iter().copied()));
        };
        Arc::clone(
            map.entry(labels.clone())
                .or_insert_with(|| Arc::new(Histogram::new(buckets.iter().copied()))),
        )
    }
}

impl prometheus_client::collector::Collector for Durations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(map) = self.0.read() else {
            return Ok(());
        };
        let mut metric = encoder.encode_descriptor(
            "mesh_request_duration_seconds",
            "Time from the request's arrival to the end of the response body (its last byte sent, or the stream cut or abandoned), by direction, service, route and target.",
            None,
            MetricType::Histogram,
        )?;
        for (labels, histogram) in map.iter() {
            histogram.encode(metric.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// The service's latency buckets in seconds: its `latency_buckets` (ms), else the default.
pub fn buckets_seconds(latency_buckets_ms: &[u64]) -> Arc<[f64]> {
    if latency_buckets_ms.is_empty() {
        return DEFAULT_BUCKETS.into();
    }
    latency_buckets_ms
        .iter()
        .map(|ms| *ms as f64 / 1000.0)
        .collect()
}
