//! The proxy's metrics, served on the admin listener's `/metrics` in the Prometheus text
//! format (`prometheus-client`). One file per family group: `requests` (what the request
//! path counts), `authz` (denials by deciding rule), `state` (read from the proxy's state at
//! scrape time: endpoints, TLS handshakes, tables, open connections). Every metric and its
//! labels are documented in `docs/metrics.md`.
//!
//! Labels come from the table (service and route names) and from small fixed sets; never
//! from raw paths or headers, so the number of series stays bounded by the policy.

pub mod authz;
pub mod filters;
pub mod requests;
pub mod state;

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::snapshot::Registries;
use crate::table_watch::Tables;
use crate::tls::Transport;

/// The content type of `/metrics` (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric family of one proxy.
#[derive(Debug)]
pub struct Metrics {
    /// What the request path records.
    pub requests: requests::RequestMetrics,
    /// Authorization denials.
    pub authz: authz::AuthzMetrics,
    /// Open downstream connections per listener.
    pub connections: state::Connections,
    /// Whether the request path records the request families (`[admin] request_metrics`).
    pub record_requests: bool,
    registry: Registry,
}

impl Metrics {
    /// The families, registered; `state` is read from the proxy at every scrape.
    pub fn new(
        tables: Arc<Tables>,
        registries: Arc<Registries>,
        transport: Arc<Transport>,
    ) -> Metrics {
        let mut registry = Registry::default();
        let requests = requests::RequestMetrics::default();
        requests.register(&mut registry);
        let authz = authz::AuthzMetrics::default();
        authz.register(&mut registry);
        let connections = state::Connections::default();
        registry.register_collector(Box::new(state::StateCollector {
            tables,
            registries,
            transport,
            connections: connections.clone(),
        }));
        Metrics {
            requests,
            authz,
            connections,
            record_requests: true,
            registry,
        }
    }

    /// Registers the access log's counters (`mesh_access_log_dropped_total`,
    /// `mesh_access_log_lines_total`).
    pub fn register_access_log(&mut self, log: &crate::access_log::AccessLog) {
        self.registry.register(
            "mesh_access_log_dropped",
            "Access-log lines dropped because the writer fell behind (the queue was full)",
            log.dropped.clone(),
        );
        self.registry.register(
            "mesh_access_log_lines",
            "Access-log lines written",
            log.written.clone(),
        );
    }

    /// Registers the span exporter's counters (`mesh_spans_dropped_total`,
    /// `mesh_spans_exported_total`).
    pub fn register_tracing(&mut self, exporter: &crate::trace::Exporter) {
        self.registry.register(
            "mesh_spans_dropped",
            "Spans dropped: the export queue was full, or the collector did not take them in time",
            exporter.dropped.clone(),
        );
        self.registry.register(
            "mesh_spans_exported",
            "Spans the collector accepted",
            exporter.exported.clone(),
        );
    }

    /// Registers the WASM filter families (`mesh_filter_*`).
    pub fn register_filters(&mut self, store: Arc<crate::filters::FilterStore>) {
        self.registry
            .register_collector(Box::new(filters::FiltersCollector { store }));
    }

    /// The connection metrics of `listener` (`inbound`, `outbound`, `admin`): open,
    /// refused beyond `max_connections`, closed for HTTP/2 errors.
    pub fn open_connections(&self, listener: &'static str) -> state::ListenerStats {
        self.connections.get(listener)
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(%error, "cannot encode the metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests;
