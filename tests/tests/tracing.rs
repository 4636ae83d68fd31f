//! Distributed tracing through real sidecars: W3C `traceparent` propagation (the app sees
//! the inbound sidecar's span as its parent), sampling by the target's `observe { trace
//! sample }` and by an incoming sampled flag, spans exported over OTLP/HTTP (protobuf) to a
//! receiver in the test with the right parent/child links, and a collector that is down or
//! slow does not slow requests (measured).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_tests::backend::Backend;
use mesh_tests::body::empty;
use mesh_tests::client::{h1_request, H1};
use mesh_tests::mesh::Mesh;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
service zero { port 8002 endpoints ["{{zero}}"] }
service plain { port 8003 endpoints ["{{plain}}"] }
route a on web { match { path prefix "/a" } }
observe web { trace sample 100% }
observe zero { trace sample 0% }
"#;

/// The two tests measure time: they run one after the other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The spans of an export request as JSON (OTLP's JSON mapping: hex ids, 64-bit integers
/// as strings), for easy assertions.
fn to_json(request: &ExportTraceServiceRequest) -> Value {
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    fn attributes(list: &[KeyValue]) -> Value {
        list.iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => json!({ "stringValue": s }),
                    Some(any_value::Value::IntValue(i)) => json!({ "intValue": i.to_string() }),
                    other => json!({ "other": format!("{other:?}") }),
                };
                json!({ "key": kv.key, "value": value })
            })
            .collect()
    }
    let resource_spans: Vec<Value> = request
        .resource_spans
        .iter()
        .map(|rs| {
            let scope_spans: Vec<Value> = rs
                .scope_spans
                .iter()
                .map(|ss| {
                    let spans: Vec<Value> = ss
                        .spans
                        .iter()
                        .map(|s| {
                            let mut span = json!({
                                "traceId": hex(&s.trace_id),
                                "spanId": hex(&s.span_id),
                                "name": s.name,
                                "kind": s.kind,
                                "startTimeUnixNano": s.start_time_unix_nano.to_string(),
                                "endTimeUnixNano": s.end_time_unix_nano.to_string(),
                                "attributes": attributes(&s.attributes),
                                "traceState": s.trace_state,
                            });
                            if !s.parent_span_id.is_empty() {
                                span["parentSpanId"] = hex(&s.parent_span_id).into();
                            }
                            span
                        })
                        .collect();
                    json!({ "spans": spans })
                })
                .collect();
            json!({
                "resource": {
                    "attributes": attributes(
                        rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..])
                    )
                },
                "scopeSpans": scope_spans,
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

/// An OTLP/HTTP receiver: decodes every POSTed body (protobuf), answering after `delay`.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start(delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&bodies);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let protobuf = request
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .is_some_and(|c| c == "application/x-protobuf");
                            let body = request.into_body().collect().await?.to_bytes();
                            tokio::time::sleep(delay).await;
                            assert!(protobuf, "OTLP/HTTP protobuf expected");
                            let decoded = ExportTraceServiceRequest::decode(body)
                                .expect("an ExportTraceServiceRequest");
                            seen.lock().expect("lock").push(to_json(&decoded));
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(
                                b"{}",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Receiver { addr, bodies }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received: (service.name of its resource, span).
    fn spans(&self) -> Vec<(String, Value)> {
        let bodies = self.bodies.lock().expect("lock");
        let mut out = Vec::new();
        for body in bodies.iter() {
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or_default()
                    .to_string();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    fn trace(&self, trace_id: &str) -> Vec<(String, Value)> {
        self.spans()
            .into_iter()
            .filter(|(_, s)| s["traceId"] == trace_id)
            .collect()
    }

    /// Waits until `trace_id` has at least `n` spans.
    async fn wait_trace(&self, trace_id: &str, n: usize) -> Vec<(String, Value)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.trace(trace_id);
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn attribute(span: &Value, key: &str) -> Option<String> {
    let a = span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?;
    let v = &a["value"];
    v["stringValue"]
        .as_str()
        .or_else(|| v["intValue"].as_str())
        .map(str::to_string)
}

/// (trace id, parent id, sampled) of a traceparent.
fn parse_traceparent(value: &str) -> (String, String, bool) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value}");
    assert_eq!(parts[0], "00", "traceparent {value}");
    assert_eq!(parts[1].len(), 32, "traceparent {value}");
    assert_eq!(parts[2].len(), 16, "traceparent {value}");
    (parts[1].to_string(), parts[2].to_string(), parts[3] == "01")
}

async fn get(conn: &mut H1, host: &str, path: &str, traceparent: Option<&str>) -> (u16, String) {
    let mut request = h1_request(Method::GET, host, path);
    if let Some(tp) = traceparent {
        request = request
            .header("traceparent", tp)
            .header("tracestate", "vendor=1");
    }
    let reply = conn.fetch(request.body(empty()).expect("request")).await;
    let seen = reply
        .echoed_header("traceparent")
        .unwrap_or_else(|| panic!("the app saw no traceparent: {}", reply.text()));
    (reply.status.as_u16(), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_cross_both_sidecars_with_parent_links_and_honour_sampling() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start(Duration::ZERO).await;
    let apps = [
        Backend::start("client").await,
        Backend::start("web").await,
        Backend::start("zero").await,
        Backend::start("plain").await,
    ];
    let mesh = Mesh::builder(POLICY)
        .proxy("client", apps[0].addr())
        .proxy("web", apps[1].addr())
        .proxy("zero", apps[2].addr())
        .proxy("plain", apps[3].addr())
        .extra_config(&format!(
            "[tracing]\notlp_endpoint = \"{}\"",
            receiver.endpoint()
        ))
        .start()
        .await;
    let mut conn = H1::open(mesh.outbound("client")).await;

    // 1. No traceparent, a 100% service: a new sampled trace, two spans.
    let (status, seen) = get(&mut conn, "web", "/a/1", None).await;
    assert_eq!(status, 200);
    let (trace_id, app_parent, sampled) = parse_traceparent(&seen);
    assert!(sampled, "the app's traceparent is sampled: {seen}");
    let spans = receiver.wait_trace(&trace_id, 2).await;
    assert_eq!(spans.len(), 2, "two spans of trace {trace_id}: {spans:#?}");
    let outbound = spans
        .iter()
        .find(|(_, s)| s["kind"] == 3)
        .unwrap_or_else(|| panic!("no client (outbound) span: {spans:#?}"));
    let inbound = spans
        .iter()
        .find(|(_, s)| s["kind"] == 2)
        .unwrap_or_else(|| panic!("no server (inbound) span: {spans:#?}"));
    assert_eq!(
        outbound.0, "client",
        "the outbound span comes from the caller's sidecar"
    );
    assert_eq!(
        inbound.0, "web",
        "the inbound span comes from web's sidecar"
    );
    let (outbound, inbound) = (&outbound.1, &inbound.1);
    assert!(
        outbound
            .get("parentSpanId")
            .is_none_or(|p| p == "" || p.is_null()),
        "the outbound span is the root: {outbound}"
    );
    assert_eq!(
        inbound["parentSpanId"], outbound["spanId"],
        "inbound's parent is outbound"
    );
    assert_eq!(
        inbound["spanId"],
        app_parent.as_str(),
        "the app's parent is the inbound span"
    );
    for span in [outbound, inbound] {
        assert_eq!(
            attribute(span, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(
            attribute(span, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(attribute(span, "url.path").as_deref(), Some("/a/1"));
        assert_eq!(attribute(span, "mesh.retries").as_deref(), Some("0"));
        let start: u64 = span["startTimeUnixNano"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("start");
        let end: u64 = span["endTimeUnixNano"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("end");
        assert!(start > 0 && end >= start, "times: {span}");
    }
    assert_eq!(attribute(outbound, "mesh.route").as_deref(), Some("a"));
    assert_eq!(
        attribute(outbound, "mesh.direction").as_deref(),
        Some("outbound")
    );
    assert_eq!(
        attribute(inbound, "mesh.direction").as_deref(),
        Some("inbound")
    );
    assert_eq!(
        attribute(outbound, "mesh.peer").as_deref(),
        Some("spiffe://e2e.local/web")
    );
    assert_eq!(
        attribute(inbound, "mesh.peer").as_deref(),
        Some("spiffe://e2e.local/client")
    );
    println!(
        "sampled trace {trace_id}: outbound {} → inbound {} → app",
        outbound["spanId"], inbound["spanId"]
    );

    // 2. An incoming sampled traceparent: the trace continues under the caller's span.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (_, seen) = get(
        &mut conn,
        "web",
        "/a/2",
        Some(&format!("00-{caller_trace}-{caller_span}-01")),
    )
    .await;
    let (seen_trace, _, sampled) = parse_traceparent(&seen);
    assert_eq!(seen_trace, caller_trace, "the trace continues");
    assert!(sampled);
    let spans = receiver.wait_trace(caller_trace, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let outbound = &spans
        .iter()
        .find(|(_, s)| s["kind"] == 3)
        .expect("outbound span")
        .1;
    assert_eq!(
        outbound["parentSpanId"], caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(outbound["traceState"], "vendor=1", "tracestate kept");

    // 3. An incoming unsampled traceparent on a 100% service: propagated, no spans.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let (_, seen) = get(
        &mut conn,
        "web",
        "/a/3",
        Some(&format!("00-{unsampled_trace}-b7ad6b7169203331-00")),
    )
    .await;
    let (seen_trace, _, sampled) = parse_traceparent(&seen);
    assert_eq!(seen_trace, unsampled_trace);
    assert!(!sampled, "an unsampled caller stays unsampled: {seen}");

    // 4. `trace sample 0%` and no observe block: a traceparent with flag 00, no spans.
    let mut quiet = vec![unsampled_trace.to_string()];
    for service in ["zero", "plain"] {
        for i in 0..5 {
            let (status, seen) = get(&mut conn, service, &format!("/{i}"), None).await;
            assert_eq!(status, 200);
            let (trace, _, sampled) = parse_traceparent(&seen);
            assert!(!sampled, "{service} is not sampled: {seen}");
            quiet.push(trace);
        }
    }
    // One more sampled request, sent after the unsampled ones: once its spans arrive, the
    // exporters' queues have passed the unsampled requests too.
    let (_, seen) = get(&mut conn, "web", "/a/4", None).await;
    let (last, _, _) = parse_traceparent(&seen);
    assert_eq!(receiver.wait_trace(&last, 2).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for trace in &quiet {
        assert!(
            receiver.trace(trace).is_empty(),
            "unsampled trace {trace} has spans"
        );
    }
    let total = receiver.spans().len();
    assert_eq!(
        total,
        6,
        "exactly the sampled requests' spans: {:#?}",
        receiver.spans()
    );
}

/// 200 requests on one connection through client → web; returns the time they took.
async fn run_200(mesh: &Mesh) -> Duration {
    let mut conn = H1::open(mesh.outbound("client")).await;
    for i in 0..20 {
        let reply = conn.get("web", &format!("/a/warm{i}")).await;
        assert_eq!(reply.status, 200);
    }
    let started = Instant::now();
    for i in 0..200 {
        let reply = conn.get("web", &format!("/a/{i}")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    started.elapsed()
}

async fn start_mesh(apps: &[Backend; 2], extra: Option<String>) -> Mesh {
    let mut builder = Mesh::builder(
        r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route a on web { match { path prefix "/a" } }
observe web { trace sample 100% }
"#,
    )
    .proxy("client", apps[0].addr())
    .proxy("web", apps[1].addr());
    if let Some(extra) = extra {
        builder = builder.extra_config(&extra);
    }
    builder.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_slow_does_not_slow_requests() {
    let _serial = SERIAL.lock().await;
    let apps = [Backend::start("client").await, Backend::start("web").await];
    // Bound but not listening: connections are refused, and no one else can take the port.
    let (_held, closed) = mesh_tests::mesh::down_endpoint();
    let slow = Receiver::start(Duration::from_secs(5)).await;
    let config = |endpoint: String| Some(format!("[tracing]\notlp_endpoint = \"{endpoint}\""));
    let baseline = start_mesh(&apps, None).await;
    let down = start_mesh(&apps, config(format!("http://{closed}/v1/traces"))).await;
    let slowed = start_mesh(&apps, config(slow.endpoint())).await;

    let without = run_200(&baseline).await;
    let with_down = run_200(&down).await;
    let with_slow = run_200(&slowed).await;
    let without_again = run_200(&baseline).await;
    let base = without.max(without_again);
    let limit = base.mul_f64(1.5) + Duration::from_millis(200);
    println!(
        "200 requests: without tracing {without:?} / {without_again:?}; collector down {with_down:?}; \
         collector answering after 5 s {with_slow:?}; limit {limit:?}"
    );
    assert!(
        with_down <= limit,
        "collector down: {with_down:?} > {limit:?}"
    );
    assert!(
        with_slow <= limit,
        "slow collector: {with_slow:?} > {limit:?}"
    );

    // The spans that did not get through are counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = down.admin_get("client", "/metrics").await.text();
        let dropped: f64 = text
            .lines()
            .find(|l| l.starts_with("mesh_spans_dropped_total"))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        if dropped > 0.0 {
            println!("collector down: mesh_spans_dropped_total {dropped} (client sidecar)");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dropped spans counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
