//! Families read from the proxy's state at scrape time rather than counted on the request
//! path: endpoints by state, TLS handshake failures (the `/tls` counters), the loaded
//! table, and open downstream connections per listener.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mesh_identity::RefusalReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;

use crate::snapshot::Registries;
use crate::table_watch::Tables;
use crate::tls::{Transport, PLAINTEXT_REFUSED};

/// The listeners whose connections are counted.
pub const LISTENERS: [&str; 3] = ["inbound", "outbound", "admin"];

/// `mesh_open_connections{listener}`: one gauge per listener, moved by the accept loops.
#[derive(Debug, Default, Clone)]
pub struct Connections([Gauge; LISTENERS.len()]);

impl Connections {
    /// The gauge of `listener` (an unknown name gets a detached gauge).
    pub fn get(&self, listener: &str) -> Gauge {
        LISTENERS
            .iter()
            .position(|l| *l == listener)
            .map_or_else(Gauge::default, |i| self.0[i].clone())
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
        for (listener, gauge) in LISTENERS.iter().zip(&self.connections.0) {
            let labels = [("listener", *listener)];
            gauge.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
