//! The host against hand-written proxy-wasm modules (WAT): headers, local responses, the
//! sandbox (time, memory, traps), `http_call`, metrics, properties, shared data, ticks,
//! WASI, loading errors and the module cache.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mesh_wasm::{FailureReason, LoadError, MetricKind, Step, Stream, Verdict};
use support::{host, host_with, info, module, plugin, request, spec, MockCaller};

/// Every `env` import the test modules use.
const IMPORTS: &str = r#"
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $sset (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $sget (param i32 i32 i32 i32 i32) (result i32)))
"#;

fn wat(body: &str) -> String {
    module(IMPORTS, body)
}

/// A response head with `status`.
fn response_head(status: u16) -> http::response::Parts {
    let mut head = http::Response::new(()).into_parts().0;
    head.status = http::StatusCode::from_u16(status).expect("a valid status");
    head
}

fn failure_count(host: &mesh_wasm::Host, filter: &str, reason: FailureReason) -> u64 {
    host.failures()
        .into_iter()
        .filter(|(f, r, _)| &**f == filter && *r == reason)
        .map(|(_, _, n)| n)
        .sum()
}

const HEADERS: &str = r#"
  (data (i32.const 100) "x-added")
  (data (i32.const 120) "yes")
  (data (i32.const 140) ":path")
  (data (i32.const 160) "x-path")
  (data (i32.const 180) "/rewritten")
  (data (i32.const 220) "x\0ay")
  (data (i32.const 240) ":status")
  (data (i32.const 250) "201")
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param i32) (result i32)
    ;; The serialized map starts with its pair count: the num_headers argument.
    (if (i32.ne (call $pairs (i32.const 0) (i32.const 260) (i32.const 264)) (i32.const 0)) (then unreachable))
    (if (i32.ne (i32.load (i32.load (i32.const 260))) (local.get $n)) (then unreachable))
    ;; A key outside memory: INVALID_MEMORY_ACCESS (6), not a host panic.
    (if (i32.ne (call $get (i32.const 0) (i32.const 0x7ffffff0) (i32.const 64) (i32.const 200) (i32.const 204)) (i32.const 6))
      (then unreachable))
    (drop (call $add (i32.const 0) (i32.const 100) (i32.const 7) (i32.const 120) (i32.const 3)))
    (if (i32.ne (call $get (i32.const 0) (i32.const 140) (i32.const 5) (i32.const 200) (i32.const 204)) (i32.const 0))
      (then unreachable))
    (drop (call $add (i32.const 0) (i32.const 160) (i32.const 6) (i32.load (i32.const 200)) (i32.load (i32.const 204))))
    (drop (call $replace (i32.const 0) (i32.const 140) (i32.const 5) (i32.const 180) (i32.const 10)))
    ;; A value with a newline is refused with BAD_ARGUMENT (2), not a panic.
    (if (i32.ne (call $add (i32.const 0) (i32.const 100) (i32.const 7) (i32.const 220) (i32.const 3)) (i32.const 2))
      (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $replace (i32.const 2) (i32.const 240) (i32.const 7) (i32.const 250) (i32.const 3)))
    (i32.const 0))
"#;

#[tokio::test]
async fn a_filter_adds_headers_reads_and_rewrites_the_path_and_the_status() {
    let host = host();
    let plugin = plugin(&host, &wat(HEADERS), spec("headers"));
    let stream = plugin.start(info()).expect("start");
    let mut parts = request("/orig?q=1");
    let verdict = stream
        .request_headers(&mut parts, true)
        .await
        .expect("runs");
    assert!(matches!(verdict, Verdict::Continue), "{verdict:?}");
    assert_eq!(parts.headers["x-added"], "yes");
    assert_eq!(parts.headers.get_all("x-added").iter().count(), 1);
    assert_eq!(parts.headers["x-path"], "/orig?q=1");
    assert_eq!(parts.uri.path(), "/rewritten");
    assert_eq!(parts.headers["host"], "payments");

    let mut resp = response_head(200);
    let verdict = stream
        .response_headers(&mut resp, true)
        .await
        .expect("runs");
    assert!(matches!(verdict, Verdict::Continue));
    assert_eq!(resp.status, 201);
}

const LOCAL_RESPONSE: &str = r#"
  (data (i32.const 100) "policy")
  (data (i32.const 120) "denied")
  (data (i32.const 140) "\01\00\00\00\05\00\00\00\03\00\00\00x-why\00bad\00")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $respond (i32.const 403) (i32.const 100) (i32.const 6) (i32.const 120) (i32.const 6)
      (i32.const 140) (i32.const 22) (i32.const -1)))
    (i32.const 1))
"#;

#[tokio::test]
async fn send_local_response_answers_instead_of_the_upstream() {
    let host = host();
    let plugin = plugin(&host, &wat(LOCAL_RESPONSE), spec("deny"));
    let stream = plugin.start(info()).expect("start");
    let verdict = stream
        .request_headers(&mut request("/x"), false)
        .await
        .expect("runs");
    let Verdict::Respond(r) = verdict else {
        panic!("expected a local response, got {verdict:?}");
    };
    assert_eq!(r.status, 403);
    assert_eq!(r.headers, vec![("x-why".to_string(), b"bad".to_vec())]);
    assert_eq!(&r.body[..], b"denied");
    assert_eq!(r.details, "policy");
}

/// Filter `spin`, whose request headers callback loops forever, with a 5 ms time limit.
fn spinning(host: &Arc<mesh_wasm::Host>) -> Arc<mesh_wasm::Plugin> {
    spinning_for(host, Duration::from_millis(5))
}

/// Filter `spin` with time limit `limit`.
fn spinning_for(host: &Arc<mesh_wasm::Host>, limit: Duration) -> Arc<mesh_wasm::Plugin> {
    let body = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (loop $l (br $l)) (i32.const 0))"#;
    let mut s = spec("spin");
    s.time_limit = limit;
    plugin(host, &wat(body), s)
}

/// Runs the stream's request headers phase, which must time out; how long it ran.
async fn timed_out(stream: &mesh_wasm::Stream) -> Duration {
    let began = Instant::now();
    let failure = stream
        .request_headers(&mut request("/"), true)
        .await
        .expect_err("must time out");
    assert_eq!(failure.reason, FailureReason::Timeout, "{failure}");
    began.elapsed()
}

#[tokio::test]
async fn a_callback_that_loops_forever_times_out_and_the_next_start_gets_a_fresh_instance() {
    let host = host();
    let plugin = spinning(&host);
    let stream = plugin.start(info()).expect("start");
    let created = host.instances_created();
    let elapsed = timed_out(&stream).await;
    assert!(elapsed < Duration::from_millis(55), "took {elapsed:?}");
    assert_eq!(failure_count(&host, "spin", FailureReason::Timeout), 1);

    // The filter failed on this stream: it is not run again for it...
    let again = stream.request_headers(&mut request("/"), true).await;
    assert_eq!(
        again.expect_err("failed").reason,
        FailureReason::Unavailable
    );
    assert_eq!(
        host.instances_created(),
        created,
        "not moved to a fresh instance"
    );
    // ...while a new start makes a fresh one.
    let fresh = plugin.start(info()).expect("a fresh instance");
    assert_eq!(host.instances_created(), created + 1);
    drop(fresh);
}

#[tokio::test]
async fn a_long_time_limit_is_kept_at_the_fine_tick_pace() {
    // The ticker slows down when no callback hurries it: a callback with a long limit must
    // keep hurrying it, or its budget would be looked at only every idle tick (a 100 ms
    // limit stopped after about 340 ms). Generous bound; the bench measures it precisely.
    // Counted in this thread's CPU time (the callback runs on it), so a busy machine that
    // preempts the thread does not make the test fail.
    let host = host();
    let plugin = spinning_for(&host, Duration::from_millis(100));
    let stream = plugin.start(info()).expect("start");
    let cpu = || cpu_time::ThreadTime::now().as_duration();
    let before = cpu();
    let elapsed = timed_out(&stream).await;
    let spent = cpu().saturating_sub(before);
    assert!(
        elapsed >= Duration::from_millis(100) && spent >= Duration::from_millis(100),
        "never stopped early: {elapsed:?} ({spent:?} of CPU)"
    );
    assert!(
        spent < Duration::from_millis(250),
        "took {spent:?} of CPU ({elapsed:?})"
    );
}

#[tokio::test]
async fn growing_memory_past_the_cap_is_a_memory_failure() {
    let host = host();
    let body = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (loop $l
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
          (br $l))
        (i32.const 0))"#;
    let mut s = spec("hog");
    s.memory_bytes = 2 << 20;
    let plugin = plugin(&host, &wat(body), s);
    let stream = plugin.start(info()).expect("start");
    let failure = stream
        .request_headers(&mut request("/"), true)
        .await
        .expect_err("must run out");
    assert_eq!(failure.reason, FailureReason::Memory, "{failure}");
}

const TRAP: &str = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    unreachable)"#;

#[tokio::test]
async fn a_trap_is_a_counted_trap_failure() {
    let host = host();
    let plugin = plugin(&host, &wat(TRAP), spec("trap"));
    let stream = plugin.start(info()).expect("start");
    let failure = stream
        .request_headers(&mut request("/"), true)
        .await
        .expect_err("traps");
    assert_eq!(failure.reason, FailureReason::Trap);
    assert!(
        failure.message.contains("unreachable"),
        "{}",
        failure.message
    );
    assert_eq!(&*failure.filter, "trap");
    assert_eq!(failure_count(&host, "trap", FailureReason::Trap), 1);
}

#[tokio::test]
async fn a_request_started_with_its_request_phase_runs_it_once_and_a_trap_fails_it() {
    let host = host();
    let headers = plugin(&host, &wat(HEADERS), spec("headers"));
    let mut parts = request("/orig?q=1");
    let (stream, step) =
        Stream::begin_request(&headers, info(), &mut parts, true, true, true).expect("runs");
    assert!(matches!(step, Step::Done(Verdict::Continue)), "{step:?}");
    assert_eq!(
        parts.headers.get_all("x-added").iter().count(),
        1,
        "one call"
    );
    assert_eq!(parts.uri.path(), "/rewritten");
    let mut response = response_head(200);
    stream
        .response_headers_after(&mut parts, &mut response, true)
        .await
        .expect("runs");
    assert_eq!(response.status, 201);

    let trap = plugin(&host, &wat(TRAP), spec("trap"));
    let failure = Stream::begin_request(&trap, info(), &mut request("/"), true, true, true)
        .expect_err("traps");
    assert_eq!(failure.reason, FailureReason::Trap, "{failure}");
    assert_eq!(failure_count(&host, "trap", FailureReason::Trap), 1);
    // The failed instance was discarded: the next request gets a fresh one.
    let created = host.instances_created();
    Stream::begin_request(&trap, info(), &mut request("/"), true, true, true)
        .expect_err("traps again");
    assert_eq!(host.instances_created(), created + 1);
}

#[tokio::test]
async fn ten_thousand_trapping_streams_do_not_leak_instances() {
    let host = host();
    let plugin = plugin(&host, &wat(TRAP), spec("trap"));
    for _ in 0..10_000 {
        let stream = plugin.start(info()).expect("start");
        let failure = stream
            .request_headers(&mut request("/"), true)
            .await
            .expect_err("traps");
        assert_eq!(failure.reason, FailureReason::Trap);
    }
    assert_eq!(failure_count(&host, "trap", FailureReason::Trap), 10_000);
    assert!(host.instances_created() >= 10_000);
    // Every discarded instance went back: at most one per slot is alive...
    assert!(host.live_instances() <= 2, "{} live", host.live_instances());
    // ...and the pool (128 instances) still hands out new ones, to another plugin too.
    let other = support::plugin(&host, &wat(HEADERS), spec("headers"));
    let stream = other.start(info()).expect("start");
    let mut parts = request("/a");
    stream
        .request_headers(&mut parts, true)
        .await
        .expect("runs");
    assert_eq!(parts.headers["x-added"], "yes");
}

const HTTP_CALL: &str = r#"
  (data (i32.const 100) "auth")
  (data (i32.const 200) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\04\00\00\00:method\00GET\00:path\00/check\00:authority\00auth\00")
  (data (i32.const 400) ":status")
  (data (i32.const 420) "x-auth")
  (data (i32.const 430) "ok")
  (data (i32.const 440) "forbidden")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $call (i32.const 100) (i32.const 4) (i32.const 200) (i32.const 69)
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 300))
        (i32.const 0))
      (then unreachable))
    (i32.const 1))
  (func (export "proxy_on_http_call_response") (param $ctx i32) (param $tok i32) (param i32 i32 i32)
    (if (i32.ne (local.get $tok) (i32.load (i32.const 300))) (then unreachable))
    (if (i32.ne (call $get (i32.const 6) (i32.const 400) (i32.const 7) (i32.const 310) (i32.const 314)) (i32.const 0))
      (then unreachable))
    (if (i32.eq (i32.load8_u (i32.load (i32.const 310))) (i32.const 50))
      (then
        (drop (call $add (i32.const 0) (i32.const 420) (i32.const 6) (i32.const 430) (i32.const 2)))
        (drop (call $continue (i32.const 0))))
      (else
        (drop (call $respond (i32.const 403) (i32.const 440) (i32.const 9) (i32.const 440) (i32.const 9)
          (i32.const 0) (i32.const 0) (i32.const -1))))))
"#;

#[tokio::test]
async fn http_call_pauses_then_continues_or_answers_by_the_calls_status() {
    let caller = Arc::new(MockCaller::default());
    let host = host_with(caller.clone(), Duration::from_secs(5));
    let plugin = plugin(&host, &wat(HTTP_CALL), spec("authz"));

    *caller.status.lock().expect("lock") = "200".into();
    let stream = plugin.start(info()).expect("start");
    let mut parts = request("/pay");
    let verdict = stream
        .request_headers(&mut parts, true)
        .await
        .expect("runs");
    assert!(matches!(verdict, Verdict::Continue), "{verdict:?}");
    assert_eq!(parts.headers["x-auth"], "ok");
    {
        let seen = caller.seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].upstream, "auth");
        assert_eq!(&*seen[0].filter, "authz");
        assert!(seen[0]
            .headers
            .contains(&(":path".to_string(), b"/check".to_vec())));
        assert_eq!(seen[0].timeout, Duration::from_secs(1));
    }

    *caller.status.lock().expect("lock") = "500".into();
    let stream = plugin.start(info()).expect("start");
    let mut parts = request("/pay");
    let verdict = stream
        .request_headers(&mut parts, true)
        .await
        .expect("runs");
    let Verdict::Respond(r) = verdict else {
        panic!("expected 403, got {verdict:?}");
    };
    assert_eq!(r.status, 403);
    assert_eq!(&r.body[..], b"forbidden");
    assert!(parts.headers.get("x-auth").is_none());
}

#[tokio::test]
async fn a_filter_paused_with_nothing_pending_fails_after_max_pause() {
    let host = host_with(Arc::new(MockCaller::default()), Duration::from_millis(50));
    let body = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (i32.const 1))"#;
    let plugin = plugin(&host, &wat(body), spec("stuck"));
    let stream = plugin.start(info()).expect("start");
    let began = Instant::now();
    let failure = stream
        .request_headers(&mut request("/"), true)
        .await
        .expect_err("paused too long");
    assert_eq!(failure.reason, FailureReason::Paused);
    assert!(began.elapsed() >= Duration::from_millis(50));
}

const METRICS: &str = r#"
  (data (i32.const 100) "requests")
  (data (i32.const 120) "sizes")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const 8) (i32.const 200)))
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const 8) (i32.const 204)))
    ;; The same name and type give the same id.
    (if (i32.ne (i32.load (i32.const 200)) (i32.load (i32.const 204))) (then unreachable))
    (drop (call $define (i32.const 2) (i32.const 120) (i32.const 5) (i32.const 208)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $inc (i32.load (i32.const 200)) (i64.const 1)) (i32.const 0)) (then unreachable))
    (if (i32.ne (call $record (i32.load (i32.const 208)) (i64.const 5)) (i32.const 0)) (then unreachable))
    (i32.const 0))
"#;

#[tokio::test]
async fn metrics_are_defined_once_and_counted_in_the_host() {
    let host = host();
    let plugin = plugin(&host, &wat(METRICS), spec("counting"));
    for _ in 0..3 {
        let stream = plugin.start(info()).expect("start");
        stream
            .request_headers(&mut request("/"), true)
            .await
            .expect("runs");
    }
    let metrics = host.metrics();
    let requests = metrics
        .iter()
        .find(|m| m.name == "requests")
        .expect("defined");
    assert_eq!(&*requests.filter, "counting");
    assert_eq!(requests.kind, MetricKind::Counter);
    assert_eq!(requests.value, 3);
    let sizes = metrics.iter().find(|m| m.name == "sizes").expect("defined");
    assert_eq!(sizes.kind, MetricKind::Histogram);
    assert_eq!((sizes.value, sizes.sum), (3, 15));
    assert_eq!(metrics.len(), 2);
}

const PROPERTIES: &str = r#"
  (func $p2h (param $pp i32) (param $pl i32) (param $hp i32) (param $hl i32)
    (if (i32.ne (call $prop (local.get $pp) (local.get $pl) (i32.const 200) (i32.const 204)) (i32.const 0))
      (then unreachable))
    (drop (call $add (i32.const 0) (local.get $hp) (local.get $hl) (i32.load (i32.const 200)) (i32.load (i32.const 204)))))
  (data (i32.const 300) "request\00path")
  (data (i32.const 320) "x-p-path")
  (data (i32.const 340) "mesh\00direction")
  (data (i32.const 360) "x-p-dir")
  (data (i32.const 380) "source\00principal")
  (data (i32.const 400) "x-p-peer")
  (data (i32.const 420) "plugin_name")
  (data (i32.const 440) "x-p-name")
  (data (i32.const 460) "my\00prop")
  (data (i32.const 470) "v1")
  (data (i32.const 480) "x-p-mine")
  (data (i32.const 500) "source\00port")
  (data (i32.const 520) "no\00such")
  (data (i32.const 540) "request\00url_path")
  (data (i32.const 560) "x-p-url")
  (data (i32.const 580) "connection\00mtls")
  (data (i32.const 600) "request\00id")
  (data (i32.const 620) "x-p-id")
  (data (i32.const 640) "route_name")
  (data (i32.const 660) "x-p-route")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $p2h (i32.const 300) (i32.const 12) (i32.const 320) (i32.const 8))
    (call $p2h (i32.const 340) (i32.const 14) (i32.const 360) (i32.const 7))
    (call $p2h (i32.const 380) (i32.const 16) (i32.const 400) (i32.const 8))
    (call $p2h (i32.const 420) (i32.const 11) (i32.const 440) (i32.const 8))
    (drop (call $set_prop (i32.const 460) (i32.const 7) (i32.const 470) (i32.const 2)))
    (call $p2h (i32.const 460) (i32.const 7) (i32.const 480) (i32.const 8))
    (call $p2h (i32.const 540) (i32.const 16) (i32.const 560) (i32.const 7))
    (call $p2h (i32.const 600) (i32.const 10) (i32.const 620) (i32.const 6))
    (call $p2h (i32.const 640) (i32.const 10) (i32.const 660) (i32.const 9))
    ;; source.port: a u64, little-endian, as Envoy.
    (if (i32.ne (call $prop (i32.const 500) (i32.const 11) (i32.const 200) (i32.const 204)) (i32.const 0))
      (then unreachable))
    (if (i32.ne (i32.load (i32.const 204)) (i32.const 8)) (then unreachable))
    (if (i64.ne (i64.load (i32.load (i32.const 200))) (i64.const 1234)) (then unreachable))
    ;; connection.mtls: one byte.
    (if (i32.ne (call $prop (i32.const 580) (i32.const 15) (i32.const 200) (i32.const 204)) (i32.const 0))
      (then unreachable))
    (if (i32.ne (i32.load8_u (i32.load (i32.const 200))) (i32.const 1)) (then unreachable))
    ;; Unknown: NOT_FOUND (1).
    (if (i32.ne (call $prop (i32.const 520) (i32.const 7) (i32.const 200) (i32.const 204)) (i32.const 1))
      (then unreachable))
    (i32.const 0))
"#;

#[tokio::test]
async fn properties_expose_the_request_the_peer_and_the_plugin() {
    let host = host();
    let plugin = plugin(&host, &wat(PROPERTIES), spec("props"));
    let stream = plugin.start(info()).expect("start");
    let mut parts = request("/v1/charge?amount=3");
    let verdict = stream
        .request_headers(&mut parts, true)
        .await
        .expect("runs");
    assert!(matches!(verdict, Verdict::Continue));
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    assert_eq!(h("x-p-path").as_deref(), Some("/v1/charge?amount=3"));
    assert_eq!(h("x-p-url").as_deref(), Some("/v1/charge"));
    assert_eq!(h("x-p-dir").as_deref(), Some("inbound"));
    assert_eq!(
        h("x-p-peer").as_deref(),
        Some("spiffe://mesh/ns/default/sa/web")
    );
    assert_eq!(h("x-p-name").as_deref(), Some("props"));
    assert_eq!(h("x-p-mine").as_deref(), Some("v1"));
    assert_eq!(h("x-p-id").as_deref(), Some("req-1"));
    assert_eq!(h("x-p-route").as_deref(), Some("charge"));
}

const SHARED: &str = r#"
  (data (i32.const 100) "k")
  (data (i32.const 110) "v1")
  (data (i32.const 120) "x-shared")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $sset (i32.const 100) (i32.const 1) (i32.const 110) (i32.const 2) (i32.const 0)) (i32.const 0))
      (then unreachable))
    ;; A stale CAS is refused with CAS_MISMATCH (8).
    (if (i32.ne (call $sset (i32.const 100) (i32.const 1) (i32.const 110) (i32.const 2) (i32.const 999)) (i32.const 8))
      (then unreachable))
    (if (i32.ne (call $sget (i32.const 100) (i32.const 1) (i32.const 200) (i32.const 204) (i32.const 208)) (i32.const 0))
      (then unreachable))
    (drop (call $add (i32.const 0) (i32.const 120) (i32.const 8) (i32.load (i32.const 200)) (i32.load (i32.const 204))))
    (i32.const 0))
"#;

const SHARED_OTHER: &str = r#"
  (data (i32.const 100) "k")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; Another filter's key is not there: NOT_FOUND (1).
    (if (i32.ne (call $sget (i32.const 100) (i32.const 1) (i32.const 200) (i32.const 204) (i32.const 208)) (i32.const 1))
      (then unreachable))
    (i32.const 0))
"#;

#[tokio::test]
async fn shared_data_is_shared_within_a_filter_only() {
    let host = host();
    let plugin = plugin(&host, &wat(SHARED), spec("sharer"));
    let stream = plugin.start(info()).expect("start");
    let mut parts = request("/");
    stream
        .request_headers(&mut parts, true)
        .await
        .expect("runs");
    assert_eq!(parts.headers["x-shared"], "v1");

    let other = support::plugin(&host, &wat(SHARED_OTHER), spec("other"));
    let stream = other.start(info()).expect("start");
    stream
        .request_headers(&mut request("/"), true)
        .await
        .expect("the other filter sees nothing");
}

const TICKS: &str = r#"
  (data (i32.const 100) "ticks")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 200)))
    (drop (call $tick (i32.const 5)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (drop (call $inc (i32.load (i32.const 200)) (i64.const 1))))
"#;

#[tokio::test]
async fn ticks_call_proxy_on_tick_periodically() {
    let host = host();
    let plugin = plugin(&host, &wat(TICKS), spec("ticker"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ticks = host
        .metrics()
        .into_iter()
        .find(|m| m.name == "ticks")
        .expect("defined")
        .value;
    assert!(ticks >= 3, "{ticks} ticks");
    drop(plugin);
}

const BODY: &str = r#"
  (import "env" "proxy_get_buffer_bytes" (func $getbuf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $setbuf (param i32 i32 i32 i32 i32) (result i32)))
"#;

#[tokio::test]
async fn body_phases_buffer_until_the_end_and_may_rewrite_the_body() {
    let host = host();
    let body = r#"
      (data (i32.const 100) "[redacted]")
      (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
        (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
        ;; Reads the whole body, then replaces its first 6 bytes.
        (if (i32.ne (call $getbuf (i32.const 0) (i32.const 0) (local.get $size) (i32.const 200) (i32.const 204)) (i32.const 0))
          (then unreachable))
        (if (i32.ne (i32.load (i32.const 204)) (local.get $size)) (then unreachable))
        (drop (call $setbuf (i32.const 0) (i32.const 0) (i32.const 6) (i32.const 100) (i32.const 10)))
        (i32.const 0))"#;
    let plugin = plugin(
        &host,
        &module(&format!("{IMPORTS}{BODY}"), body),
        spec("body"),
    );
    let stream = plugin.start(info()).expect("start");
    assert!(
        stream.wants_request_body(),
        "it has a request body callback"
    );
    let mut buf = BytesMut::from(&b"secret"[..]);
    assert!(matches!(
        stream.request_body(&mut buf, false).expect("runs"),
        Verdict::Buffer
    ));
    buf.extend_from_slice(b" rest");
    assert!(matches!(
        stream.request_body(&mut buf, true).expect("runs"),
        Verdict::Continue
    ));
    assert_eq!(&buf[..], b"[redacted] rest");
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wasip1_module_starts_and_its_stdout_reaches_the_log() {
    let imports = r#"
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
    "#;
    let body = r#"
      (data (i32.const 100) "hello from wasi\n")
      (func (export "_initialize")
        (i32.store (i32.const 200) (i32.const 100))
        (i32.store (i32.const 204) (i32.const 16))
        (if (i32.ne (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 208)) (i32.const 0))
          (then unreachable))
        (if (i32.ne (i32.load (i32.const 208)) (i32.const 16)) (then unreachable))
        (if (i32.ne (call $clock (i32.const 0) (i64.const 1) (i32.const 216)) (i32.const 0)) (then unreachable))
        (if (i64.eqz (i64.load (i32.const 216))) (then unreachable))
        (if (i32.ne (call $random (i32.const 300) (i32.const 16)) (i32.const 0)) (then unreachable))
        ;; No preopened directories: EBADF (8).
        (if (i32.ne (call $prestat (i32.const 3) (i32.const 400)) (i32.const 8)) (then unreachable)))"#;
    let host = host();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let module = host
        .compile(module(imports, body).as_bytes())
        .expect("compiles");
    tracing::subscriber::with_default(subscriber, || {
        host.plugin(&module, spec("wasip1")).expect("starts");
    });
    let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(log.contains("hello from wasi"), "log: {log}");
    assert!(log.contains("mesh_wasm::guest"), "log: {log}");
    assert!(log.contains("wasip1"), "log: {log}");
}

#[test]
fn an_unknown_import_is_an_abi_error_naming_it() {
    let host = host();
    let imports = r#"(import "env" "proxy_does_not_exist" (func (param i32) (result i32)))"#;
    let err = host
        .compile(module(imports, "").as_bytes())
        .expect_err("refused");
    let LoadError::Abi(message) = err else {
        panic!("expected an ABI error, got {err:?}");
    };
    assert!(message.contains("env.proxy_does_not_exist"), "{message}");
}

#[test]
fn a_module_without_the_abi_exports_is_an_abi_error() {
    let host = host();
    let err = host
        .compile(br#"(module (memory (export "memory") 1))"#)
        .expect_err("refused");
    assert!(matches!(err, LoadError::Abi(_)), "{err:?}");
}

#[test]
fn garbage_is_a_compile_error() {
    let host = host();
    let err = host
        .compile(&[0x00, 0x61, 0x73, 0x6d, 0xff, 0xff, 0x00, 0x13])
        .expect_err("refused");
    assert!(matches!(err, LoadError::Compile(_)), "{err:?}");
}

#[test]
fn the_same_bytes_compile_once() {
    let host = host();
    let text = wat(HEADERS);
    let a = host.compile(text.as_bytes()).expect("compiles");
    let b = host.compile(text.as_bytes()).expect("compiles");
    assert_eq!(a.sha256(), b.sha256());
    assert_eq!(host.compiled_modules(), 1);
    host.compile(wat(TRAP).as_bytes()).expect("compiles");
    assert_eq!(host.compiled_modules(), 2);
}

#[test]
fn host_plugin_and_stream_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<mesh_wasm::Host>();
    send_sync::<mesh_wasm::Plugin>();
    send_sync::<mesh_wasm::Stream>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let host = host();
    let plugin = plugin(&host, &wat(HEADERS), spec("send"));
    let stream = plugin.start(info()).expect("start");
    let mut parts = request("/");
    let fut = stream.request_headers(&mut parts, true);
    send(&fut);
    let verdict = rt.block_on(fut).expect("runs");
    assert!(matches!(verdict, Verdict::Continue));
}

#[tokio::test]
async fn a_stream_paused_in_an_instance_that_fails_is_unavailable_at_once() {
    let caller = Arc::new(MockCaller::default());
    caller
        .delay_ms
        .store(10_000, std::sync::atomic::Ordering::Relaxed);
    let host = host_with(caller, Duration::from_secs(5));
    let body = format!(
        "{HTTP_CALL}{}",
        r#"(func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) unreachable)"#
    );
    let plugin = plugin(&host, &wat(&body), spec("authz"));
    let paused = plugin.start(info()).expect("start");
    let trapping = plugin.start(info()).expect("start");
    let began = Instant::now();
    let mut parts = request("/");
    let wait = paused.request_headers(&mut parts, true);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        trapping.request_body(&mut BytesMut::new(), true)
    };
    let (waited, killed) = tokio::join!(wait, kill);
    assert_eq!(killed.expect_err("traps").reason, FailureReason::Trap);
    assert_eq!(
        waited.expect_err("instance gone").reason,
        FailureReason::Unavailable
    );
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
}

/// `proxy_on_log`, `proxy_on_done` and `proxy_on_delete` add 1, 10 and 100 to the metric
/// whose id is at address 200.
const COUNT_FINISHING: &str = r#"
  (func (export "proxy_on_log") (param i32)
    (drop (call $inc (i32.load (i32.const 200)) (i64.const 1))))
  (func (export "proxy_on_done") (param i32) (result i32)
    (drop (call $inc (i32.load (i32.const 200)) (i64.const 10)))
    (i32.const 1))
  (func (export "proxy_on_delete") (param i32)
    (drop (call $inc (i32.load (i32.const 200)) (i64.const 100))))
"#;

const FINISH: &str = r#"
  (data (i32.const 100) "finished")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const 8) (i32.const 200)))
    (i32.const 1))
"#;

/// The value of the host's metric `name` (which must be defined).
fn metric_value(host: &mesh_wasm::Host, name: &str) -> i64 {
    host.metrics()
        .into_iter()
        .find(|m| m.name == name)
        .expect("defined")
        .value
}

#[tokio::test]
async fn the_last_clone_dropped_finishes_the_context() {
    let host = host();
    let plugin = plugin(
        &host,
        &wat(&format!("{FINISH}{COUNT_FINISHING}")),
        spec("finish"),
    );
    let stream = plugin.start(info()).expect("start");
    let clone = stream.clone();
    stream
        .request_headers(&mut request("/"), true)
        .await
        .expect("runs");
    drop(stream);
    assert_eq!(metric_value(&host, "finished"), 0, "a clone is still alive");
    drop(clone);
    assert_eq!(
        metric_value(&host, "finished"),
        111,
        "on_log, on_done and on_delete once each"
    );
}

const FOREIGN: &str = r#"
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
"#;

/// Declares the response body and `on_log`/`on_done` unused through the host's foreign
/// function, yet counts every call it gets (with `COUNT_FINISHING`: 1 log, 10 done, 100
/// delete; 1000 a response body).
const UNUSED_HOOKS: &str = r#"
  (data (i32.const 100) "calls")
  (data (i32.const 120) "mesh_unused_hooks")
  (data (i32.const 140) "\50\00\00\00")
  (data (i32.const 150) "no_such_function")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 200)))
    ;; An unknown name is NOT_FOUND (1), as in Envoy; a short argument BAD_ARGUMENT (2).
    (if (i32.ne (call $foreign (i32.const 150) (i32.const 16) (i32.const 140) (i32.const 4) (i32.const 210) (i32.const 214)) (i32.const 1))
      (then unreachable))
    (if (i32.ne (call $foreign (i32.const 120) (i32.const 17) (i32.const 140) (i32.const 2) (i32.const 210) (i32.const 214)) (i32.const 2))
      (then unreachable))
    ;; 0x50 = response body (16) | log and done (64).
    (if (i32.ne (call $foreign (i32.const 120) (i32.const 17) (i32.const 140) (i32.const 4) (i32.const 210) (i32.const 214)) (i32.const 0))
      (then unreachable))
    (i32.const 1))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (drop (call $inc (i32.load (i32.const 200)) (i64.const 1000)))
    (i32.const 0))
"#;

#[tokio::test]
async fn callbacks_a_filter_declares_unused_are_skipped_and_the_rest_still_run() {
    let host = host();
    let plugin = plugin(
        &host,
        &module(
            &format!("{IMPORTS}{FOREIGN}"),
            &format!("{UNUSED_HOOKS}{COUNT_FINISHING}"),
        ),
        spec("unused"),
    );
    let stream = plugin.start(info()).expect("start");
    assert!(
        !stream.wants_response_body(),
        "the body callback is declared unused"
    );
    assert!(
        !stream.wants_request_body() && !stream.wants_response_trailers(),
        "callbacks the module does not export are unused"
    );
    let mut body = BytesMut::from(&b"data"[..]);
    assert!(matches!(
        stream.response_body(&mut body, true).expect("runs"),
        Verdict::Continue
    ));
    assert_eq!(&body[..], b"data");
    drop(stream);
    assert_eq!(
        metric_value(&host, "calls"),
        100,
        "only proxy_on_delete ran"
    );
}

/// Declares `proxy_on_context_create` for requests unused (mask 0x80), as our SDK does with
/// one root context, and counts the request contexts it is asked to create (`created`) and
/// the request head phases it gets (`phases`).
/// A module that declares `mask` (a WAT data string: the u32's four bytes) unused when
/// configured and defines two counters, `first` (its id at 200) and `second` (at 204),
/// followed by `funcs`.
fn declaring_module(mask: &str, first: &str, second: &str, funcs: &str) -> String {
    format!(
        r#"(module
  {IMPORTS}{FOREIGN}
  (memory (export "memory") 1)
  (data (i32.const 100) "{first}")
  (data (i32.const 110) "{second}")
  (data (i32.const 120) "mesh_unused_hooks")
  (data (i32.const 140) "{mask}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const {}) (i32.const 200)))
    (drop (call $define (i32.const 0) (i32.const 110) (i32.const {}) (i32.const 204)))
    (drop (call $foreign (i32.const 120) (i32.const 17) (i32.const 140) (i32.const 4) (i32.const 210) (i32.const 214)))
    (i32.const 1))
  {funcs}
)"#,
        first.len(),
        second.len(),
    )
}

fn lazy_create_module() -> String {
    declaring_module(
        "\\80\\00\\00\\00",
        "created",
        "phases",
        r#"(func (export "proxy_on_context_create") (param $id i32) (param $parent i32)
    (if (i32.ne (local.get $parent) (i32.const 0))
      (then (drop (call $inc (i32.load (i32.const 200)) (i64.const 1))))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $inc (i32.load (i32.const 204)) (i64.const 1)))
    (i32.const 0))"#,
    )
}

#[tokio::test]
async fn a_filter_that_makes_its_contexts_itself_is_not_asked_to_create_them() {
    let host = host();
    let plugin = plugin(&host, &lazy_create_module(), spec("lazy"));
    for _ in 0..3 {
        let stream = plugin.start(info()).expect("start");
        stream
            .request_headers(&mut request("/"), true)
            .await
            .expect("runs");
    }
    assert_eq!(metric_value(&host, "phases"), 3, "every request ran");
    assert_eq!(
        metric_value(&host, "created"),
        0,
        "no proxy_on_context_create for a request"
    );
}

/// Declares bit 256 (it forgets a request after a callback flagged last) with every
/// callback after the response headers unused (2, 4, 16, 32, 64); counts the response
/// headers callbacks flagged last (`flagged`) and its `proxy_on_delete`s (`deletes`). A
/// response head without `end_of_stream` pauses and resumes itself in the same callback
/// (so it does not forget the request: it did not continue by itself).
fn forgetting_module() -> String {
    declaring_module(
        "\\76\\01\\00\\00",
        "flagged",
        "deletes",
        r#"(func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_response_headers") (param $id i32) (param $n i32) (param $flags i32) (result i32)
    (drop (call $inc (i32.load (i32.const 200))
      (i64.extend_i32_u (i32.and (i32.shr_u (local.get $flags) (i32.const 1)) (i32.const 1)))))
    (if (result i32) (i32.and (local.get $flags) (i32.const 1))
      (then (i32.const 0))
      (else (drop (call $continue (i32.const 1))) (i32.const 1))))
  (func (export "proxy_on_delete") (param i32)
    (drop (call $inc (i32.load (i32.const 204)) (i64.const 1))))"#,
    )
}

#[tokio::test]
async fn a_filter_that_forgets_a_request_after_its_last_callback_gets_no_delete_for_it() {
    let host = host();
    let plugin = plugin(&host, &forgetting_module(), spec("forgets"));
    for end_of_stream in [true, false] {
        let stream = plugin.start(info()).expect("start");
        stream
            .request_headers(&mut request("/"), true)
            .await
            .expect("runs");
        let mut response = response_head(200);
        stream.no_response_trailers();
        let verdict = stream
            .response_headers(&mut response, end_of_stream)
            .await
            .expect("runs");
        assert!(matches!(verdict, Verdict::Continue), "{verdict:?}");
        drop(stream);
    }
    assert_eq!(
        metric_value(&host, "flagged"),
        2,
        "both response heads were flagged last"
    );
    assert_eq!(
        metric_value(&host, "deletes"),
        1,
        "only the request resumed from a pause got proxy_on_delete"
    );
}

#[tokio::test]
async fn a_filter_that_keeps_timing_out_fails_only_the_requests_that_time_out() {
    let host = host();
    let plugin = spinning(&host);
    for _ in 0..5 {
        let stream = plugin.start(info()).expect("a fresh instance, every time");
        let failure = stream
            .request_headers(&mut request("/"), true)
            .await
            .expect_err("must time out");
        assert_eq!(failure.reason, FailureReason::Timeout, "{failure}");
    }
    // No rest after a run of timeouts: the next request still gets a fresh instance.
    let created = host.instances_created();
    let next = plugin.start(info()).expect("no filter-wide rest");
    assert_eq!(host.instances_created(), created + 1);
    drop(next);
    assert_eq!(failure_count(&host, "spin", FailureReason::Timeout), 5);
    assert_eq!(failure_count(&host, "spin", FailureReason::Unavailable), 0);
}

#[tokio::test]
async fn a_request_in_flight_when_another_times_out_continues_in_a_fresh_instance() {
    let host = host();
    // Spins in the request phase; the response phase says continue.
    let body = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (loop $l (br $l)) (i32.const 0))
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
        (i32.const 0))"#;
    let mut s = spec("spin");
    s.time_limit = Duration::from_millis(5);
    let plugin = plugin(&host, &wat(body), s);
    // Both in the one slot of this thread's instance.
    let innocent = plugin.start(info()).expect("start");
    let attacker = plugin.start(info()).expect("start");
    timed_out(&attacker).await;
    assert_eq!(host.streams_rebound(), 0);
    let verdict = innocent
        .response_headers(&mut response_head(200), true)
        .await
        .expect("the innocent request is not failed for the other's timeout");
    assert!(matches!(verdict, Verdict::Continue), "{verdict:?}");
    assert_eq!(host.streams_rebound(), 1, "it moved to a fresh instance");
    // The attacker's own stream stays failed.
    let again = attacker
        .response_headers(&mut response_head(200), true)
        .await
        .expect_err("its filter failed");
    assert_eq!(again.reason, FailureReason::Unavailable);
    assert_eq!(failure_count(&host, "spin", FailureReason::Timeout), 1);
    assert!(host.longest_instance_start() > Duration::ZERO);
    drop((innocent, attacker));
}

/// Calls `auth` without pausing, counts answers (`answers`), and declares its response
/// headers callback unused (mask 8): the answer must still be delivered, in that phase.
const FIRE_AND_FORGET: &str = r#"
  (data (i32.const 100) "auth")
  (data (i32.const 200) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\04\00\00\00:method\00GET\00:path\00/check\00:authority\00auth\00")
  (data (i32.const 500) "answers")
  (data (i32.const 520) "mesh_unused_hooks")
  (data (i32.const 540) "\08\00\00\00")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 500) (i32.const 7) (i32.const 600)))
    (drop (call $foreign (i32.const 520) (i32.const 17) (i32.const 540) (i32.const 4) (i32.const 610) (i32.const 614)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $call (i32.const 100) (i32.const 4) (i32.const 200) (i32.const 69)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 300)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (drop (call $inc (i32.load (i32.const 600)) (i64.const 1))))
"#;

#[tokio::test]
async fn an_unused_phase_still_runs_while_a_call_result_is_awaited() {
    let caller = Arc::new(MockCaller::default());
    *caller.status.lock().expect("lock") = "200".into();
    let host = host_with(caller.clone(), Duration::from_secs(5));
    let plugin = plugin(
        &host,
        &module(&format!("{IMPORTS}{FOREIGN}"), FIRE_AND_FORGET),
        spec("forget"),
    );
    let stream = plugin.start(info()).expect("start");
    let verdict = stream
        .request_headers(&mut request("/"), true)
        .await
        .expect("runs");
    assert!(matches!(verdict, Verdict::Continue), "it does not pause");
    // The mock answers after 5 ms; the response phase is where the answer is delivered.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut resp = http::Response::new(()).into_parts().0;
    stream
        .response_headers(&mut resp, true)
        .await
        .expect("runs");
    assert_eq!(
        metric_value(&host, "answers"),
        1,
        "the answer was delivered"
    );
    assert!(
        !stream.wants_response_body(),
        "nothing awaited: a callback the module lacks is not wanted"
    );
    // While a call is awaited, even callbacks the filter does not use count as wanted: one
    // of them may be where its answer is delivered.
    drop(stream);
    let stream = plugin.start(info()).expect("start");
    stream
        .request_headers(&mut request("/"), true)
        .await
        .expect("runs");
    assert!(stream.wants_response_body(), "a call is in flight");
}

/// `$h2h`: copies request header (or pseudo-header) `k` into response header `h`; traps if
/// the request has no `k`.
const H2H: &str = r#"
  (func $h2h (param $kp i32) (param $kl i32) (param $hp i32) (param $hl i32)
    (if (i32.ne (call $get (i32.const 0) (local.get $kp) (local.get $kl) (i32.const 400) (i32.const 404)) (i32.const 0))
      (then unreachable))
    (drop (call $add (i32.const 2) (local.get $hp) (local.get $hl) (i32.load (i32.const 400)) (i32.load (i32.const 404)))))
"#;

/// The request phase adds `x-seen: a`, `x-seen: b` and rewrites the path; the response
/// phase copies what it reads of the request into the response; `on_log` records the
/// status it reads (`response.code`) in the gauge `logged_status`, and counts in `logged_header`
/// whether the response's `x-req-seen` is still visible there.
const LATER_PHASES: &str = r#"
  (data (i32.const 100) "x-seen")
  (data (i32.const 110) "a")
  (data (i32.const 112) "b")
  (data (i32.const 120) "X-Seen")
  (data (i32.const 130) "x-req-seen")
  (data (i32.const 144) ":path")
  (data (i32.const 150) "x-req-path")
  (data (i32.const 164) "/rewritten?q=1")
  (data (i32.const 180) "request\00url_path")
  (data (i32.const 200) "x-req-url")
  (data (i32.const 212) "request\00method")
  (data (i32.const 230) "x-req-method")
  (data (i32.const 250) "response\00code")
  (data (i32.const 270) "logged_status")
  (data (i32.const 290) "logged_header")
  (func $p2h (param $pp i32) (param $pl i32) (param $hp i32) (param $hl i32)
    (if (i32.ne (call $prop (local.get $pp) (local.get $pl) (i32.const 400) (i32.const 404)) (i32.const 0))
      (then unreachable))
    (drop (call $add (i32.const 2) (local.get $hp) (local.get $hl) (i32.load (i32.const 400)) (i32.load (i32.const 404)))))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 1) (i32.const 270) (i32.const 13) (i32.const 410)))
    (drop (call $define (i32.const 0) (i32.const 290) (i32.const 13) (i32.const 414)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 100) (i32.const 6) (i32.const 110) (i32.const 1)))
    (drop (call $add (i32.const 0) (i32.const 100) (i32.const 6) (i32.const 112) (i32.const 1)))
    (drop (call $replace (i32.const 0) (i32.const 144) (i32.const 5) (i32.const 164) (i32.const 14)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $h2h (i32.const 120) (i32.const 6) (i32.const 130) (i32.const 10))
    (call $h2h (i32.const 144) (i32.const 5) (i32.const 150) (i32.const 10))
    (call $p2h (i32.const 180) (i32.const 16) (i32.const 200) (i32.const 9))
    (call $p2h (i32.const 212) (i32.const 14) (i32.const 230) (i32.const 12))
    ;; The request's pairs: 4 pseudo-headers, host, x-request-id and two x-seen.
    (if (i32.ne (call $pairs (i32.const 0) (i32.const 400) (i32.const 404)) (i32.const 0)) (then unreachable))
    (if (i32.ne (i32.load (i32.load (i32.const 400))) (i32.const 8)) (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (if (i32.ne (call $prop (i32.const 250) (i32.const 13) (i32.const 400) (i32.const 404)) (i32.const 0))
      (then unreachable))
    (drop (call $record (i32.load (i32.const 410)) (i64.load (i32.load (i32.const 400)))))
    (if (i32.eq (call $get (i32.const 2) (i32.const 130) (i32.const 10) (i32.const 400) (i32.const 404)) (i32.const 0))
      (then (drop (call $inc (i32.load (i32.const 414)) (i64.const 1))))))
"#;

#[tokio::test]
async fn later_phases_read_the_heads_as_their_own_phases_left_them() {
    let host = host();
    let plugin = plugin(&host, &wat(&format!("{H2H}{LATER_PHASES}")), spec("later"));
    let stream = plugin.start(info()).expect("start");
    let mut parts = request("/original");
    stream
        .request_headers(&mut parts, true)
        .await
        .expect("request phase");
    assert_eq!(parts.uri, "/rewritten?q=1");
    let mut response = http::Response::builder()
        .status(202)
        .body(())
        .expect("response")
        .into_parts()
        .0;
    stream
        .response_headers(&mut response, true)
        .await
        .expect("response phase");
    let h = |n: &str| response.headers.get(n).map(|v| v.to_str().expect("ascii"));
    assert_eq!(
        h("x-req-seen"),
        Some("a,b"),
        "repeated headers joined, any case"
    );
    assert_eq!(h("x-req-path"), Some("/rewritten?q=1"));
    assert_eq!(h("x-req-url"), Some("/rewritten"));
    assert_eq!(h("x-req-method"), Some("GET"));
    drop(stream);
    assert_eq!(metric_value(&host, "logged_status"), 202);
    assert_eq!(metric_value(&host, "logged_header"), 1);
}

/// The response phase copies the request's `x-request-id` and `:path` into the response
/// (`x-req-id`, `x-req-path`); it traps if it cannot read them. Nothing else: no `on_log`.
const SENT_REQUEST: &str = r#"
  (data (i32.const 100) "x-request-id")
  (data (i32.const 120) "x-req-id")
  (data (i32.const 144) ":path")
  (data (i32.const 150) "x-req-path")
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $h2h (i32.const 100) (i32.const 12) (i32.const 120) (i32.const 8))
    (call $h2h (i32.const 144) (i32.const 5) (i32.const 150) (i32.const 10))
    (i32.const 0))
"#;

#[tokio::test]
async fn a_response_phase_lent_the_sent_request_reads_it_as_sent() {
    let host = host();
    let plugin = plugin(&host, &wat(&format!("{H2H}{SENT_REQUEST}")), spec("sent"));
    let response_phase = |stream: mesh_wasm::Stream, mut sent: Option<http::request::Parts>| async move {
        let mut response = http::Response::new(()).into_parts().0;
        match &mut sent {
            Some(sent) => {
                stream
                    .response_headers_after(sent, &mut response, true)
                    .await
            }
            None => stream.response_headers(&mut response, true).await,
        }
        .expect("the response phase reads the request");
        let h = |n: &str| {
            response
                .headers
                .get(n)
                .map(|v| v.to_str().expect("ascii").to_string())
        };
        (h("x-req-id"), h("x-req-path"))
    };

    // Lent: the request as the proxy sent it (its own request id, a rewritten path).
    let stream = plugin.start(info()).expect("start");
    stream.will_lend_sent_request();
    let mut parts = request("/asked");
    stream
        .request_headers(&mut parts, true)
        .await
        .expect("request phase");
    parts
        .headers
        .insert("x-request-id", http::HeaderValue::from_static("sent-1"));
    parts.uri = http::Uri::from_static("/sent?x=1");
    assert_eq!(
        response_phase(stream, Some(parts)).await,
        (Some("sent-1".into()), Some("/sent?x=1".into()))
    );

    // Not lent: the copy the request phase kept, as the filter left it.
    let stream = plugin.start(info()).expect("start");
    stream
        .request_headers(&mut request("/asked"), true)
        .await
        .expect("request phase");
    assert_eq!(
        response_phase(stream, None).await,
        (Some("req-1".into()), Some("/asked".into()))
    );
    assert_eq!(failure_count(&host, "sent", FailureReason::Trap), 0);
}

#[tokio::test]
async fn trailers_a_message_cannot_carry_and_a_body_after_end_of_stream_are_not_wanted() {
    let host = host();
    let body = r#"
      (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))
      (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))
      (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) (i32.const 0))
      (func (export "proxy_on_response_trailers") (param i32 i32) (result i32) (i32.const 0))"#;
    let plugin = plugin(&host, &wat(body), spec("trailers"));
    let stream = plugin.start(info()).expect("start");
    assert!(stream.wants_request_trailers() && stream.wants_response_trailers());
    stream.no_response_trailers();
    assert!(!stream.wants_response_trailers());
    assert!(
        stream.wants_request_trailers(),
        "the other side is unchanged"
    );
    stream
        .request_headers(&mut request("/"), false)
        .await
        .expect("runs");
    assert!(stream.wants_request_body(), "a body follows");
    let mut response = http::Response::new(()).into_parts().0;
    stream
        .response_headers(&mut response, true)
        .await
        .expect("runs");
    assert!(
        !stream.wants_response_body(),
        "nothing follows a head at end of stream"
    );
    let other = plugin.start(info()).expect("start");
    assert!(
        other.wants_response_trailers(),
        "ruled out per request only"
    );
}

/// Counts `proxy_on_delete` (100 each) in `finished`; with `proxy_on_response_headers`.
const DELETE_ONLY: &str = r#"
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_delete") (param i32)
    (drop (call $inc (i32.load (i32.const 200)) (i64.const 100))))
"#;

#[tokio::test]
async fn a_context_with_nothing_left_to_run_finishes_with_its_response_head() {
    let host = host();
    let plugin = plugin(
        &host,
        &wat(&format!("{FINISH}{DELETE_ONLY}")),
        spec("early"),
    );
    let stream = plugin.start(info()).expect("start");
    stream
        .request_headers(&mut request("/"), true)
        .await
        .expect("runs");
    let mut response = http::Response::new(()).into_parts().0;
    stream
        .response_headers(&mut response, false)
        .await
        .expect("runs");
    assert_eq!(
        metric_value(&host, "finished"),
        100,
        "no body, trailers or log callback can follow: finished at once"
    );
    drop(stream);
    assert_eq!(metric_value(&host, "finished"), 100, "and only once");

    // A request body callback may still run after the response head (a server may answer
    // before it has read the body): the context lives until the stream drops.
    let body =
        r#"(func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))"#;
    let host = support::host();
    let plugin = support::plugin(
        &host,
        &wat(&format!("{FINISH}{DELETE_ONLY}{body}")),
        spec("late"),
    );
    let stream = plugin.start(info()).expect("start");
    stream
        .request_headers(&mut request("/"), false)
        .await
        .expect("runs");
    stream
        .response_headers(&mut response, false)
        .await
        .expect("runs");
    assert_eq!(metric_value(&host, "finished"), 0, "not yet");
    drop(stream);
    assert_eq!(metric_value(&host, "finished"), 100);
}

/// Replaces the request's headers with `:path: /new`, `x-a: 1`, `x-a: 2` (twice: the second
/// time the names and values come from the instance's cache); on the response, a map with
/// a bad value is refused (BAD_ARGUMENT, 2).
const SET_PAIRS: &str = r#"
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
"#;
const SET_PAIRS_BODY: &str = r#"
  (data (i32.const 100) "\03\00\00\00\05\00\00\00\04\00\00\00\03\00\00\00\01\00\00\00\03\00\00\00\01\00\00\00:path\00/new\00x-a\001\00x-a\002\00")
  (data (i32.const 200) "\01\00\00\00\03\00\00\00\03\00\00\00x-b\00a\nb\00")
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $set_pairs (i32.const 2) (i32.const 200) (i32.const 20)) (i32.const 2))
      (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $set_pairs (i32.const 0) (i32.const 100) (i32.const 51)) (i32.const 0))
      (then unreachable))
    (if (i32.ne (call $set_pairs (i32.const 0) (i32.const 100) (i32.const 51)) (i32.const 0))
      (then unreachable))
    (i32.const 0))
"#;

#[tokio::test]
async fn set_header_map_pairs_replaces_the_whole_map_or_nothing() {
    let host = host();
    let plugin = plugin(
        &host,
        &module(&format!("{IMPORTS}{SET_PAIRS}"), SET_PAIRS_BODY),
        spec("pairs"),
    );
    for _ in 0..2 {
        let stream = plugin.start(info()).expect("start");
        let mut parts = request("/old");
        stream
            .request_headers(&mut parts, true)
            .await
            .expect("runs");
        assert_eq!(parts.uri, "/new");
        let values: Vec<_> = parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(parts.headers.get("x-request-id").is_none(), "replaced");
        let mut response = http::Response::builder()
            .header("x-kept", "yes")
            .body(())
            .expect("response")
            .into_parts()
            .0;
        stream
            .response_headers(&mut response, true)
            .await
            .expect("runs");
        assert_eq!(
            response.headers["x-kept"], "yes",
            "the bad map changed nothing"
        );
        assert!(response.headers.get("x-b").is_none());
    }
}

/// Dispatches an `http_call` in the response phase and continues without waiting for it.
const CALL_IN_RESPONSE: &str = r#"
  (data (i32.const 300) "auth")
  (data (i32.const 320) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\04\00\00\00:method\00GET\00:path\00/check\00:authority\00auth\00")
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $call (i32.const 300) (i32.const 4) (i32.const 320) (i32.const 69)
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 500))
        (i32.const 0))
      (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32))
  (func (export "proxy_on_delete") (param i32)
    (drop (call $inc (i32.load (i32.const 200)) (i64.const 100))))
"#;

#[tokio::test]
async fn a_call_made_in_the_response_phase_keeps_its_context_alive() {
    let host = host();
    let plugin = plugin(
        &host,
        &wat(&format!("{FINISH}{CALL_IN_RESPONSE}")),
        spec("caller"),
    );
    let stream = plugin.start(info()).expect("start");
    stream
        .request_headers(&mut request("/"), true)
        .await
        .expect("runs");
    let mut response = http::Response::new(()).into_parts().0;
    stream
        .response_headers(&mut response, false)
        .await
        .expect("runs");
    assert_eq!(
        metric_value(&host, "finished"),
        0,
        "a call is in flight: its answer needs the context"
    );
    drop(stream);
    assert_eq!(metric_value(&host, "finished"), 100);
}

#[tokio::test]
async fn a_filter_that_keeps_timing_out_gets_a_tight_limit_and_other_callbacks_still_run() {
    // Loops only when the request ends with its headers (end_of_stream = 1).
    let host = host();
    let body = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (if (local.get 2) (then (loop $l (br $l)))) (i32.const 0))"#;
    let mut s = spec("spin");
    s.time_limit = Duration::from_millis(20);
    let plugin = plugin(&host, &wat(body), s);
    let first = timed_out(&plugin.start(info()).expect("start")).await;
    assert!(
        first >= Duration::from_millis(20),
        "the first gets the whole limit: {first:?}"
    );

    // Strained: the next looping requests are stopped after about the tight limit (wall
    // time here, so the fastest of a few: a busy machine may preempt any one of them).
    let mut later = Vec::new();
    for _ in 0..5 {
        later.push(timed_out(&plugin.start(info()).expect("start")).await);
    }
    let fastest = later.iter().min().copied().unwrap_or_default();
    assert!(
        fastest < Duration::from_millis(10),
        "strained callbacks stop early: {later:?}"
    );
    assert_eq!(failure_count(&host, "spin", FailureReason::Timeout), 6);

    // A request that does not loop still runs through the strained filter.
    let fine = plugin.start(info()).expect("a fresh instance starts");
    let verdict = fine
        .request_headers(&mut request("/"), false)
        .await
        .expect("runs within the tight limit");
    assert!(matches!(verdict, Verdict::Continue), "{verdict:?}");
}
