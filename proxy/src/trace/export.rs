//! The span exporter: OTLP/HTTP with the binary protobuf encoding
//! (`application/x-protobuf`, an `ExportTraceServiceRequest` of the `opentelemetry-proto`
//! crate's generated messages), POSTed by a background task to `[tracing] otlp_endpoint`. Requests only offer
//! a finished span to a bounded queue; when the queue is full the span is dropped and
//! counted (`mesh_spans_dropped_total`). The task sends batches of up to [`BATCH`] spans,
//! at least every [`INTERVAL`]; a batch the collector does not take within [`TIMEOUT`] (down,
//! slow, an error status) is dropped and counted too: nothing waits for the collector but
//! the task.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio::sync::mpsc;

/// Spans waiting for the exporter at most.
pub const QUEUE: usize = 4096;
/// Spans per export request at most.
pub const BATCH: usize = 512;
/// A partial batch is sent after this long.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// One export request may take this long, then its spans are dropped.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A finished span, as exported.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// The caller's span.
    pub parent_id: Option<[u8; 8]>,
    /// The incoming `tracestate`.
    pub tracestate: Option<String>,
    /// The span's name: `<direction> <route or service>`.
    pub name: String,
    /// `outbound` (OTLP kind client) or `inbound` (server).
    pub direction: &'static str,
    /// Start, in Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// End (the response head), in Unix nanoseconds.
    pub end_unix_nanos: u64,
    /// The response status.
    pub status: u16,
    /// Attributes: string values.
    pub strings: Vec<(&'static str, String)>,
    /// Attributes: integer values.
    pub ints: Vec<(&'static str, i64)>,
}

impl SpanRecord {
    fn to_proto(&self) -> Span {
        let mut attributes: Vec<KeyValue> = self
            .strings
            .iter()
            .map(|(k, v)| attribute(k, Value::StringValue(v.clone())))
            .collect();
        attributes.extend(
            self.ints
                .iter()
                .map(|(k, v)| attribute(k, Value::IntValue(*v))),
        );
        let kind = if self.direction == "inbound" {
            SpanKind::Server
        } else {
            SpanKind::Client
        };
        let code = if self.status >= 500 {
            StatusCode::Error
        } else {
            StatusCode::Unset
        };
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            trace_state: self.tracestate.clone().unwrap_or_default(),
            // W3C trace flags: sampled.
            flags: 1,
            name: self.name.clone(),
            kind: kind as i32,
            start_time_unix_nano: self.start_unix_nanos,
            end_time_unix_nano: self.end_unix_nanos,
            attributes,
            status: Some(Status {
                code: code as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// The sending side, shared by every request.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<SpanRecord>,
    /// Spans dropped: the queue was full, or their export failed.
    pub dropped: Counter,
    /// Spans the collector accepted.
    pub exported: Counter,
}

impl Exporter {
    /// Starts the export task (on the current runtime) for `endpoint`
    /// (`http://host:port/v1/traces`); `service` is the resource's `service.name`.
    pub fn start(endpoint: http::Uri, service: &str) -> Exporter {
        let (tx, rx) = mpsc::channel(QUEUE);
        let exporter = Exporter {
            tx,
            dropped: Counter::default(),
            exported: Counter::default(),
        };
        tokio::spawn(run(
            rx,
            endpoint,
            service.to_string(),
            exporter.dropped.clone(),
            exporter.exported.clone(),
        ));
        exporter
    }

    /// Offers a finished span; drops and counts it if the queue is full.
    pub fn offer(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

/// The `ExportTraceServiceRequest` of `spans`.
pub fn encode(service: &str, spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute(
                    "service.name",
                    Value::StringValue(service.to_string()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "mesh-proxy".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans: spans.iter().map(SpanRecord::to_proto).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn run(
    mut rx: mpsc::Receiver<SpanRecord>,
    endpoint: http::Uri,
    service: String,
    dropped: Counter,
    exported: Counter,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(TIMEOUT));
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Wait for the first span, then gather more until the batch is full or the
        // interval has passed.
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + INTERVAL;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let body = encode(&service, &batch).encode_to_vec();
        batch.clear();
        let request = http::Request::post(endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else {
            dropped.inc_by(n);
            continue;
        };
        let sent = tokio::time::timeout(TIMEOUT, async {
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            // Read the answer so the connection can be reused.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        })
        .await;
        match sent {
            Ok(Ok(())) => {
                exported.inc_by(n);
            }
            Ok(Err(error)) => {
                dropped.inc_by(n);
                tracing::debug!(%error, spans = n, "span export failed; spans dropped");
            }
            Err(_) => {
                dropped.inc_by(n);
                tracing::debug!(spans = n, "span export timed out; spans dropped");
            }
        }
    }
}
