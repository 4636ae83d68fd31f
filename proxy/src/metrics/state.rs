//! Families read from the proxy's state at scrape time rather than counted on the request
//! path: endpoints by state, TLS handshake failures (the `/tls` counters), the loaded
//! table, and open downstream connections per listener.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mesh_identity::RefusalReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;

use crate::snapshot::Registries;
use crate::table_watch::Tables;
use crate::tls::{Transport, PLAINTEXT_REFUSED};

/// The listeners whose connections are counted.
pub const LISTENERS: [&str; 3] = ["inbound", "outbound", "admin"];

/// The reasons of `mesh_downstream_h2_errors_total` (h2's GOAWAY error codes, lower case).
pub const H2_REASONS: [&str; 5] = [
    "enhance_your_calm",
    "protocol_error",
    "compression_error",
    "frame_size_error",
    "other",
];

/// One listener's connection metrics, moved by its accept loop.
#[derive(Debug, Default, Clone)]
pub struct ListenerStats {
    /// `mesh_open_connections{listener}`.
    pub open: Gauge,
    /// `mesh_connections_refused_total{listener}`: accepted beyond `[limits]
    /// max_connections` and closed at once.
    pub refused: Counter,
    /// `mesh_downstream_h2_errors_total{listener,reason}`: HTTP/2 connections the proxy
    /// closed with a GOAWAY for the client's error (floods: `enhance_your_calm`), by
    /// [`H2_REASONS`].
    pub h2_errors: [Counter; H2_REASONS.len()],
    /// `mesh_downstream_responses_cut_total{listener}`: responses whose body failed after
    /// the head had gone (the upstream reset or ended it early); the client's stream was
    /// cut (HTTP/1.1: closed before the length or the last chunk; HTTP/2: RST_STREAM).
    pub cut: Counter,
}

impl ListenerStats {
    /// Counts a connection closed for an HTTP/2 error of this GOAWAY code.
    pub fn h2_error(&self, reason: &str) {
        let i = H2_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(H2_REASONS.len() - 1);
        self.h2_errors[i].inc();
    }
}

/// The connection metrics of each listener, moved by the accept loops.
#[derive(Debug, Default, Clone)]
pub struct Connections([ListenerStats; LISTENERS.len()]);

impl Connections {
    /// The metrics of `listener` (an unknown name gets detached ones).
    pub fn get(&self, listener: &str) -> ListenerStats {
        LISTENERS
            .iter()
            .position(|l| *l == listener)
            .map_or_else(ListenerStats::default, |i| self.0[i].clone())
    }
}

/// Reads the proxy's state on every scrape.
#[derive(Debug)]
pub struct StateCollector {
    /// The current table and load counters.
    pub tables: Arc<Tables>,
    /// The clusters.
    pub registries: Arc<Registries>,
    /// The handshake counters.
    pub transport: Arc<Transport>,
    /// Open connections.
    pub connections: Connections,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    metric.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Endpoints: each in exactly one state (ejected before unhealthy before healthy).
        {
            let now = crate::clock::now_ms();
            let mut metric = encoder.encode_descriptor(
                "mesh_endpoints",
                "Endpoints of each service's cluster by state (healthy, unhealthy, ejected).",
                None,
                MetricType::Gauge,
            )?;
            for cluster in self.registries.clusters.all() {
                let mut counts = [0i64; 3];
                for e in &cluster.members().endpoints {
                    let i = if e.is_ejected(now) {
                        2
                    } else if e.is_healthy() {
                        0
                    } else {
                        1
                    };
                    counts[i] += 1;
                }
                for (state, count) in ["healthy", "unhealthy", "ejected"].iter().zip(counts) {
                    let labels = [("service", cluster.name()), ("state", *state)];
                    metric.encode_family(&labels)?.encode_gauge(&count)?;
                }
            }
        }
        // TLS handshake failures, from the `/tls` counters.
        {
            let stats = self.transport.stats();
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let mut metric = encoder.encode_descriptor(
                "mesh_tls_handshake_failures",
                "TLS handshakes refused or failed, by direction and reason (as on /tls).",
                None,
                MetricType::Counter,
            )?;
            let mut rows: Vec<(&str, &str, u64)> = Vec::new();
            for reason in RefusalReason::ALL {
                rows.push((
                    "inbound",
                    reason.as_str(),
                    stats.inbound_refused.get(reason),
                ));
                rows.push((
                    "outbound",
                    reason.as_str(),
                    stats.outbound_refused.get(reason),
                ));
            }
            rows.push(("inbound", PLAINTEXT_REFUSED, load(&stats.plaintext_refused)));
            rows.push(("inbound", "failed", load(&stats.inbound_failed)));
            rows.push(("outbound", "failed", load(&stats.outbound_failed)));
            for (direction, reason, value) in rows {
                let labels = [("direction", direction), ("reason", reason)];
                metric
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
        // The table.
        if let Some(snapshot) = self.tables.current() {
            let mut metric = encoder.encode_descriptor(
                "mesh_table_version_info",
                "The loaded rule table (value 1), by its SHA-256 checksum.",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("checksum", snapshot.checksum.as_str())];
            metric.encode_family(&labels)?.encode_gauge(&1i64)?;
        }
        counter(
            &mut encoder,
            "mesh_table_loads",
            "Rule tables loaded and applied since start.",
            self.tables.loads.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "mesh_table_load_failures",
            "Rule tables refused (unreadable, invalid, or without this service) since start.",
            self.tables.failures.load(Ordering::Relaxed),
        )?;
        // Open downstream connections.
        let mut metric = encoder.encode_descriptor(
            "mesh_open_connections",
            "Downstream connections open, by listener.",
            None,
            MetricType::Gauge,
        )?;
        for (listener, stats) in LISTENERS.iter().zip(&self.connections.0) {
            let labels = [("listener", *listener)];
            stats.open.encode(metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "mesh_connections_refused",
            "Connections accepted beyond [limits] max_connections and closed at once, by listener.",
            None,
            MetricType::Counter,
        )?;
        for (listener, stats) in LISTENERS.iter().zip(&self.connections.0) {
            let labels = [("listener", *listener)];
            stats.refused.encode(metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "mesh_downstream_responses_cut",
            "Responses whose body failed after the head was sent; the client's stream was cut, by listener.",
            None,
            MetricType::Counter,
        )?;
        for (listener, stats) in LISTENERS.iter().zip(&self.connections.0) {
            let labels = [("listener", *listener)];
            stats.cut.encode(metric.encode_family(&labels)?)?;
        }
        counter(
            &mut encoder,
            "mesh_upstream_bad_responses",
            "Application responses refused for their framing (Content-Length with Transfer-Encoding), answered 502 upstream-bad-response.",
            crate::upstream::BAD_RESPONSES.load(Ordering::Relaxed),
        )?;
        let mut metric = encoder.encode_descriptor(
            "mesh_downstream_h2_errors",
            "HTTP/2 connections closed with a GOAWAY for the client's error (floods: enhance_your_calm), by listener and error code.",
            None,
            MetricType::Counter,
        )?;
        for (listener, stats) in LISTENERS.iter().zip(&self.connections.0) {
            for (reason, counter) in H2_REASONS.iter().zip(&stats.h2_errors) {
                let labels = [("listener", *listener), ("reason", *reason)];
                counter.encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
