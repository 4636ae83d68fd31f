//! The last stage of a request's path: log and metrics. An [`Observation`] starts with the
//! request, learns what the route and authorization stages decided, and at the response
//! head counts the request (status, retries, timeouts, overload); the response body is then
//! wrapped so its bytes are counted as they stream, and when it ends (last byte, cut by a
//! stream timeout, or abandoned) the latency is observed, the span ends and the access-log
//! line, when sampled, is offered.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Frame;
use mesh_table::ServiceId;
use prometheus_client::metrics::counter::Counter;

use crate::access_log::{sampled, AccessLog};
use crate::body::{Body, BoxError};
use crate::errors::MESH_ERROR;
use crate::metrics::requests::{CutLabels, RequestLabels, RouteLabels};
use crate::metrics::Metrics;
use crate::retry::Tries;
use crate::snapshot::Snapshot;
use crate::stream_timeout::StreamClock;
use crate::trace::{Exporter, SpanContext, SpanRecord};

mod line;

use line::{now_rfc3339, Line};

/// Request-scoped: what the stages decided, for metrics and the access log.
#[derive(Debug)]
pub struct Observation {
    started: Instant,
    direction: &'static str,
    method: Method,
    uri: Uri,
    trace_id: Option<TraceIdText>,
    /// The snapshot the request ran under (none: no table).
    pub snapshot: Option<Arc<Snapshot>>,
    /// The service the request is for.
    pub service: Option<ServiceId>,
    /// The route's index.
    pub route: Option<usize>,
    /// The target picked by the split.
    pub target: Option<ServiceId>,
    /// The caller, as a label value.
    pub peer: Option<Arc<str>>,
    /// The caller's identity for the access log (SPIFFE ID, or `plaintext`).
    pub peer_identity: Option<String>,
    /// The deciding authorization rule (`file:line:column`, or the default's).
    pub rule: Option<String>,
    /// Request body bytes, counted as they stream; only when the access log may want them
    /// (a `Counter` is an allocation).
    pub bytes_in: Option<Counter>,
    /// This hop's place in the trace, once `trace` decided it.
    pub span: Option<SpanContext>,
    /// The span's `mesh.peer`: inbound, the caller's SPIFFE ID or `plaintext`; outbound,
    /// the SPIFFE ID the target's sidecars must prove (or `plaintext`).
    pub span_peer: Option<String>,
    /// The stream timeouts' clock, once the route (outbound) or the caller's sidecar
    /// (inbound) set them: read at the body's end for why it was cut.
    pub clock: Option<Arc<StreamClock>>,
    started_unix_nanos: u64,
}

/// A trace id as the access log writes it: 32 hex digits.
type TraceIdText = [u8; 32];

/// The counters a request body's bytes go to (`forward::Destination::count_bytes`).
#[derive(Debug, Clone)]
pub struct CountBytes {
    /// The family's counter.
    pub family: Option<Counter>,
    /// The request's own count, for its access-log line.
    pub local: Option<Counter>,
}

impl CountBytes {
    /// `body`, counting its data bytes into both counters.
    pub fn wrap(self, body: Body) -> Body {
        Counted {
            body,
            family: self.family,
            shared: self.local,
            count: 0,
            end: None,
        }
        .boxed()
    }
}

impl Observation {
    /// Starts observing a request (`inbound` or `outbound`).
    pub fn start<B>(direction: &'static str, request: &http::Request<B>) -> Observation {
        let trace_id = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split('-').nth(1))
            .and_then(|id| TraceIdText::try_from(id.as_bytes()).ok())
            .filter(|id| id.iter().all(u8::is_ascii_hexdigit));
        Observation {
            started: Instant::now(),
            direction,
            method: request.method().clone(),
            uri: request.uri().clone(),
            trace_id,
            snapshot: None,
            service: None,
            route: None,
            target: None,
            peer: None,
            peer_identity: None,
            rule: None,
            bytes_in: None,
            span: None,
            span_peer: None,
            clock: None,
            started_unix_nanos: crate::trace::unix_nanos(),
        }
    }

    /// Continues or starts the trace (sampled at `ppm` when none came in) and sets the
    /// next hop's `traceparent` in `headers`, with this hop's span as its parent; and the
    /// request's id when it has none (made together: one allocation).
    pub fn trace(&mut self, ppm: u32, headers: &mut http::HeaderMap) {
        let span = SpanContext::propagate_with_request_id(headers, ppm, self.started_unix_nanos);
        if self.trace_id.is_none() && span.sampled {
            let mut text = [0; 32];
            crate::trace::hex_into(&span.trace_id, &mut text);
            self.trace_id = Some(text);
        }
        self.span = Some(span);
    }

    /// The span of a sampled request; it ends (`end_unix_nanos`) when the response body does.
    fn span_record(&self, snapshot: &Snapshot, status: u16, tries: &Tries) -> Option<SpanRecord> {
        let span = self.span.as_ref().filter(|s| s.sampled)?;
        let names = &snapshot.names;
        let route = self.route.map(|r| names.route(Some(r)).to_string());
        let service = names.service(self.service).to_string();
        let mut strings = vec![
            ("mesh.direction", self.direction.to_string()),
            ("mesh.service", service.clone()),
            ("http.request.method", self.method.as_str().to_string()),
            ("url.path", self.uri.path().to_string()),
            (
                "mesh.peer",
                self.span_peer.clone().unwrap_or_else(|| "plaintext".into()),
            ),
        ];
        if let Some(route) = &route {
            strings.push(("mesh.route", route.clone()));
        }
        if let Some(target) = self.target {
            strings.push(("mesh.target", names.service(Some(target)).to_string()));
        }
        if let Some(endpoint) = tries.endpoint {
            strings.push(("server.address", endpoint.to_string()));
        }
        Some(SpanRecord {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_id: span.parent_id,
            tracestate: span.tracestate.clone(),
            name: format!("{} {}", self.direction, route.unwrap_or(service)),
            direction: self.direction,
            start_unix_nanos: span.start_unix_nanos,
            end_unix_nanos: crate::trace::unix_nanos(),
            status,
            strings,
            ints: vec![
                ("http.response.status_code", i64::from(status)),
                ("mesh.retries", i64::from(tries.retries)),
            ],
        })
    }

    fn route_labels(&self, snapshot: &Snapshot) -> RouteLabels {
        let names = &snapshot.names;
        RouteLabels {
            direction: self.direction,
            service: names.service(self.service),
            route: names.route(self.route),
            target: names.service(self.target),
        }
    }

    /// The counters of the request body's bytes under this request's labels (call once the
    /// route and target are known); none when nothing would read them.
    pub fn count_request_bytes(&mut self, metrics: &Metrics) -> Option<CountBytes> {
        let snapshot = self.snapshot.as_ref()?;
        let family = metrics.record_requests.then(|| {
            let labels = self.route_labels(snapshot);
            metrics.requests.request_bytes.get_or_create_owned(&labels)
        });
        // The access log is the only reader of the request's own count.
        let logged = self
            .service
            .is_some_and(|s| snapshot.names.access_log_ppm(s) > 0);
        if logged {
            self.bytes_in = Some(Counter::default());
        }
        if family.is_none() && !logged {
            return None;
        }
        Some(CountBytes {
            family,
            local: self.bytes_in.clone(),
        })
    }

    /// Counts the answered request and returns its response, whose body counts its bytes
    /// and, when it ends, observes the latency, ends the span and offers the access-log line
    /// (when sampled).
    pub fn finish(
        self,
        metrics: &Metrics,
        access_log: Option<&AccessLog>,
        tracer: Option<&Exporter>,
        tries: &Tries,
        response: Response<Body>,
    ) -> Response<Body> {
        let status = response.status().as_u16();
        let reason = response
            .headers()
            .get(MESH_ERROR)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(snapshot) = self.snapshot.clone() else {
            // No table: nothing to label by; the access log needs the table's sampling too.
            return response;
        };
        let span = tracer.and_then(|tracer| {
            self.span_record(&snapshot, status, tries)
                .map(|span| (tracer.clone(), span))
        });
        let (family, recorded) = if metrics.record_requests {
            let (family, recorded) =
                self.record(metrics, &snapshot, status, reason.as_deref(), tries);
            (Some(family), Some(recorded))
        } else {
            // `[admin] request_metrics = false`: the body's bytes still reach the access log.
            (None, None)
        };
        let ppm = self
            .service
            .and_then(|s| snapshot.names.access_log_ppm.get(s as usize))
            .copied()
            .unwrap_or(0);
        let log = match access_log {
            Some(log) if sampled(ppm) => Some(Pending {
                log: log.clone(),
                line: self.line(&snapshot, status, reason, tries),
                bytes_in: self.bytes_in.clone(),
            }),
            _ => None,
        };
        let (parts, body) = response.into_parts();
        let body = Counted {
            body,
            family,
            shared: None,
            count: 0,
            end: Some(Ending {
                started: self.started,
                recorded,
                span,
                clock: self.clock,
                log,
            }),
        }
        .boxed();
        Response::from_parts(parts, body)
    }

    /// Counts the request in the request families; returns its response-bytes counter and
    /// what is recorded when the body ends.
    fn record(
        &self,
        metrics: &Metrics,
        snapshot: &Snapshot,
        status: u16,
        reason: Option<&str>,
        tries: &Tries,
    ) -> (Counter, Recorded) {
        let labels = self.route_labels(snapshot);
        let peer = self
            .peer
            .clone()
            .unwrap_or_else(|| Arc::clone(&snapshot.names.none));
        let m = &metrics.requests;
        m.requests
            .get_or_create(&RequestLabels {
                route: labels.clone(),
                peer,
                status,
            })
            .inc();
        let buckets = self
            .service
            .and_then(|s| snapshot.names.buckets.get(s as usize))
            .map_or(&crate::metrics::requests::DEFAULT_BUCKETS[..], |b| &b[..]);
        let duration = m.durations.get(&labels, buckets);
        if tries.retries > 0 {
            m.retries
                .get_or_create(&labels)
                .inc_by(u64::from(tries.retries));
        }
        if tries.budget_exhausted {
            m.retries_refused.get_or_create(&labels).inc();
        }
        match reason {
            Some("timeout") => {
                m.timeouts.get_or_create(&labels).inc();
            }
            Some("connect-failed" | "upstream-tls" | "upstream-identity") => {
                m.connect_errors.get_or_create(&labels).inc();
            }
            Some("overloaded") => {
                m.overloaded.get_or_create(&labels).inc();
            }
            _ => {}
        }
        let bytes = m.response_bytes.get_or_create_owned(&labels);
        let recorded = Recorded {
            duration,
            streams_cut: m.streams_cut.clone(),
            labels,
        };
        (bytes, recorded)
    }

    /// The access-log fields known at the response head: shared names and what the
    /// request already owns are moved or reference-counted, not copied into a map.
    fn line(
        &self,
        snapshot: &Snapshot,
        status: u16,
        reason: Option<String>,
        tries: &Tries,
    ) -> Line {
        let names = &snapshot.names;
        Line {
            time: now_rfc3339(),
            trace_id: self.trace_id,
            direction: self.direction,
            service: self.service.map(|s| names.service(Some(s))),
            route: self.route.map(|r| names.route(Some(r))),
            target: self.target.map(|s| names.service(Some(s))),
            endpoint: tries.endpoint,
            method: self.method.clone(),
            uri: self.uri.clone(),
            status,
            peer: self.peer_identity.clone(),
            rule: self.rule.clone(),
            retries: tries.retries,
            error: reason,
        }
    }
}

/// An access-log line waiting for the body's end.
struct Pending {
    log: AccessLog,
    line: Line,
    bytes_in: Option<Counter>,
}

/// The request's metrics that wait for the body's end.
struct Recorded {
    duration: Arc<prometheus_client::metrics::histogram::Histogram>,
    streams_cut: prometheus_client::metrics::family::Family<CutLabels, Counter>,
    labels: RouteLabels,
}

/// What is done once, when the response body ends.
struct Ending {
    started: Instant,
    recorded: Option<Recorded>,
    span: Option<(Exporter, SpanRecord)>,
    clock: Option<Arc<StreamClock>>,
    log: Option<Pending>,
}

/// A body that counts its data bytes (into the family, a count shared with the access log,
/// and its own) and, when it ends (its last frame, an error such as a
/// stream timeout's cut, or dropped unfinished), observes the latency, ends the span and
/// offers its access-log line.
struct Counted {
    body: Body,
    family: Option<Counter>,
    shared: Option<Counter>,
    count: u64,
    end: Option<Ending>,
}

impl Counted {
    fn end(&mut self) {
        let Some(end) = self.end.take() else {
            return;
        };
        let elapsed = end.started.elapsed();
        let cut = end
            .clock
            .as_ref()
            .and_then(|c| c.cut())
            .map(crate::stream_timeout::Cut::reason);
        if let Some(recorded) = end.recorded {
            recorded.duration.observe(elapsed.as_secs_f64());
            if let Some(reason) = cut {
                recorded
                    .streams_cut
                    .get_or_create(&CutLabels {
                        route: recorded.labels,
                        reason,
                    })
                    .inc();
            }
        }
        if let Some((tracer, mut span)) = end.span {
            span.end_unix_nanos = crate::trace::unix_nanos();
            if let Some(reason) = cut {
                span.strings.push(("mesh.error", reason.to_string()));
            }
            tracer.offer(span);
        }
        if let Some(mut pending) = end.log {
            if let Some(reason) = cut {
                pending.line.error = Some(reason.to_string());
            }
            let ms = elapsed.as_secs_f64() * 1000.0;
            let line = pending.line.render(
                (ms * 1000.0).round() / 1000.0,
                pending.bytes_in.as_ref().map_or(0, Counter::get),
                self.count,
            );
            pending.log.offer(line);
        }
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if let Some(family) = &self.family {
                        family.inc_by(n);
                    }
                    if let Some(shared) = &self.shared {
                        shared.inc_by(n);
                    }
                    self.count += n;
                }
                if self.body.is_end_stream() {
                    self.end();
                }
            }
            Poll::Ready(_) => self.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.end();
    }
}
