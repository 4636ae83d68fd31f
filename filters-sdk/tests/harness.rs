//! The SDK through its public API on the mock host: every kind of host call a filter
//! makes, and the harness's view of it.

use std::time::Duration;

use filters_sdk::metrics::{Counter, Gauge, Histogram};
use filters_sdk::testing::{Harness, TestRequest, TestResponse};
use filters_sdk::{
    log, shared, time, Action, CallResponse, Filter, HttpFilter, Request, Response, Stream,
};

/// A filter that exercises the API as its config says.
#[derive(Debug)]
struct Probe {
    config: ProbeConfig,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeConfig {
    #[serde(default)]
    call: Option<String>,
    #[serde(default)]
    shout: bool,
    #[serde(default)]
    tick_ms: u64,
}

impl Filter for Probe {
    type Config = ProbeConfig;
    type Http = ProbeHttp;

    fn configure(config: ProbeConfig) -> Result<Self, String> {
        if config.call.as_deref() == Some("") {
            return Err("call must name a service".into());
        }
        if config.tick_ms > 0 {
            time::set_tick_period(Duration::from_millis(config.tick_ms))
                .map_err(|e| e.to_string())?;
        }
        Ok(Probe { config })
    }

    fn http(&mut self, stream: &Stream) -> ProbeHttp {
        ProbeHttp {
            config: self.config.clone(),
            id: stream.id(),
            done: 0,
        }
    }

    fn on_tick(&mut self) {
        log::info("tick");
    }
}

#[derive(Debug)]
struct ProbeHttp {
    config: ProbeConfig,
    id: u32,
    done: u32,
}

impl HttpFilter for ProbeHttp {
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
        let mut headers = req.headers();
        let path = headers.get(":path").ok().flatten().unwrap_or_default();
        let _ = headers.set("x-seen-path", &path);
        let _ = headers.add("x-multi", "1");
        let _ = headers.add("x-multi", "2");
        let _ = headers.remove("x-drop");
        if let Ok(Some(peer)) = req.peer_identity() {
            let _ = req.headers().set("x-peer", &peer);
        }
        if let Ok(Some(route)) = req.route_name() {
            let _ = req.headers().set("x-route", &route);
        }
        let Some(upstream) = self.config.call.clone() else {
            return Action::Continue;
        };
        let call = req.http_call(
            &upstream,
            &[
                (":method", "POST"),
                (":path", "/check"),
                (":authority", &upstream),
            ],
            path.as_bytes(),
            Duration::from_millis(250),
        );
        match call {
            Ok(_) => Action::Pause,
            Err(e) => {
                let _ = req.send_response(500, &[], e.as_str().as_bytes());
                Action::Pause
            }
        }
    }

    fn on_request_body(&mut self, req: &mut Request<'_>) -> Action {
        if self.config.shout {
            let body = req.body().unwrap_or_default().to_ascii_uppercase();
            let _ = req.set_body(&body);
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Action {
        let status = resp.status().ok().flatten().unwrap_or(0);
        let _ = resp.headers().set("x-status-seen", &status.to_string());
        Action::Continue
    }

    fn on_response_body(&mut self, resp: &mut Response<'_>) -> Action {
        if self.config.shout {
            let mut body = resp.body().unwrap_or_default();
            body.extend_from_slice(b"!");
            let _ = resp.set_body(&body);
        }
        Action::Continue
    }

    fn on_http_call_response(&mut self, stream: &mut Stream, response: &CallResponse) -> Action {
        if response.status == Some(200) {
            let verdict = response.header("x-verdict").unwrap_or("none").to_owned();
            let _ = stream.request_headers().set("x-verdict", &verdict);
            return Action::Continue;
        }
        let _ = stream.send_response(403, &[("x-denied-by", "probe")], &response.body);
        Action::Pause
    }

    fn on_done(&mut self, _stream: &mut Stream) {
        self.done += 1;
        let mut line = String::from("done ");
        line.push_str(&self.id.to_string());
        line.push(' ');
        line.push_str(&self.done.to_string());
        log::info(&line);
    }
}

fn probe(config: &str) -> Harness<Probe> {
    Harness::new(config).expect("the probe's config is accepted")
}

#[test]
fn headers_are_read_set_added_and_removed() {
    let mut h = probe("{}");
    let ex = h.request(
        TestRequest::get("/a?b=c")
            .header("x-drop", "gone")
            .peer("spiffe://mesh/sa/web")
            .property(&["route_name"], "checkout"),
    );
    assert!(ex.forwarded());
    assert_eq!(ex.request_header("x-seen-path").as_deref(), Some("/a?b=c"));
    assert_eq!(ex.request_header("x-drop"), None);
    assert_eq!(
        ex.request_header("x-peer").as_deref(),
        Some("spiffe://mesh/sa/web")
    );
    assert_eq!(ex.request_header("x-route").as_deref(), Some("checkout"));
    let multi: Vec<String> = ex
        .request_headers()
        .into_iter()
        .filter(|(n, _)| n == "x-multi")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(multi, ["1", "2"]);
}

#[test]
fn properties_are_per_request() {
    let mut h = probe("{}");
    let first = h.request(TestRequest::get("/").peer("spiffe://a"));
    assert_eq!(
        first.request_header("x-peer").as_deref(),
        Some("spiffe://a")
    );
    drop(first);
    let second = h.request(TestRequest::get("/"));
    assert_eq!(
        second.request_header("x-peer"),
        None,
        "no peer on the second"
    );
}

#[test]
fn bodies_are_read_and_replaced() {
    let mut h = probe(r#"{"shout": true}"#);
    let mut ex = h.request(TestRequest::post("/").body("hello"));
    assert!(ex.forwarded());
    assert_eq!(ex.request_body_bytes(), b"HELLO");
    ex.respond(TestResponse::new(201).body("made"));
    assert_eq!(ex.response_body_bytes(), b"made!");
    assert_eq!(ex.response_header("x-status-seen").as_deref(), Some("201"));
}

#[test]
fn http_calls_pause_and_an_answer_resumes() {
    let mut h = probe(r#"{"call": "authz", "shout": true}"#);
    let mut ex = h.request(TestRequest::post("/pay").body("x"));
    assert!(ex.paused());
    assert!(!ex.forwarded());
    assert_eq!(
        ex.request_body_bytes(),
        b"x",
        "the body phase waits for the call"
    );
    let calls = ex.http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.upstream, "authz");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.body, b"/pay");
    assert_eq!(call.timeout, Duration::from_millis(250));
    ex.answer_call(
        call.token,
        TestResponse::new(200).header("x-verdict", "yes"),
    );
    assert!(ex.forwarded());
    assert_eq!(ex.request_header("x-verdict").as_deref(), Some("yes"));
    assert_eq!(ex.request_body_bytes(), b"X", "then the body phase ran");
}

#[test]
fn a_refusing_answer_becomes_a_local_response() {
    let mut h = probe(r#"{"call": "authz"}"#);
    let mut ex = h.request(TestRequest::get("/"));
    let token = ex.http_calls()[0].token;
    ex.answer_call(token, TestResponse::new(401).body("nope"));
    let answer = ex.local_response().expect("answered");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.header("x-denied-by"), Some("probe"));
    assert_eq!(answer.body, b"nope");
    assert!(!ex.forwarded());
}

#[test]
fn a_failed_call_has_no_status() {
    let mut h = probe(r#"{"call": "authz"}"#);
    let mut ex = h.request(TestRequest::get("/"));
    let token = ex.http_calls()[0].token;
    ex.fail_call(token);
    assert_eq!(ex.local_response().map(|r| r.status), Some(403));
}

#[test]
fn host_errors_are_values_not_panics() {
    #[derive(Debug)]
    struct BadCall;
    #[derive(Debug)]
    struct BadCallHttp;
    impl Filter for BadCall {
        type Config = serde_json::Value;
        type Http = BadCallHttp;
        fn configure(_: serde_json::Value) -> Result<Self, String> {
            Ok(BadCall)
        }
        fn http(&mut self, _: &Stream) -> BadCallHttp {
            BadCallHttp
        }
    }
    impl HttpFilter for BadCallHttp {
        fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
            // No :authority: the host refuses the call.
            let call = req.http_call(
                "authz",
                &[(":method", "GET"), (":path", "/")],
                b"",
                Duration::ZERO,
            );
            let missing = shared::get("never-set");
            let counter = Counter::define("c").and_then(|c| c.increment(1));
            let _ = req.headers().set(
                "x-results",
                &format!("{:?} {:?} {:?}", call.map(|_| ()), missing, counter),
            );
            Action::Continue
        }
    }
    let mut h = Harness::<BadCall>::new("null").expect("accepted");
    let ex = h.request(TestRequest::get("/"));
    assert_eq!(
        ex.request_header("x-results").as_deref(),
        Some("Err(BadArgument) Ok(None) Ok(())")
    );
}

#[test]
fn on_done_runs_once() {
    let mut h = probe("{}");
    let mut ex = h.request(TestRequest::get("/"));
    ex.respond(TestResponse::new(200));
    ex.finish();
    let done: Vec<String> = h
        .log_messages()
        .into_iter()
        .filter(|l| l.starts_with("done"))
        .collect();
    assert_eq!(done, ["done 2 1"]);
}

#[test]
fn configs_that_do_not_parse_are_refused_with_the_reason() {
    let refused = Harness::<Probe>::new(r#"{"shout": "yes"}"#).expect_err("a string for a bool");
    assert!(
        refused.logs[0].starts_with("filter config refused"),
        "{refused}"
    );
    assert!(refused.logs[0].contains("invalid type"), "{refused}");
    let refused = Harness::<Probe>::new(r#"{"call": ""}"#).expect_err("configure refuses");
    assert_eq!(
        refused.logs,
        ["filter config refused: call must name a service"]
    );
    let refused = Harness::<Probe>::new(r#"{"unknown": 1}"#).expect_err("unknown field");
    assert!(refused.logs[0].contains("unknown field"), "{refused}");
}

#[test]
fn an_empty_config_is_an_empty_object() {
    let mut h = probe("");
    assert!(h.request(TestRequest::get("/")).forwarded());
}

#[test]
fn ticks_and_time() {
    let mut h = probe(r#"{"tick_ms": 500}"#);
    assert_eq!(h.tick_period(), Duration::from_millis(500));
    h.tick();
    assert_eq!(h.logs(), ["INFO tick"]);
    let before = h.now_nanos();
    h.advance(Duration::from_secs(2));
    assert_eq!(h.now_nanos() - before, 2_000_000_000);
}

#[test]
fn shared_data_compare_and_swap() {
    #[derive(Debug)]
    struct Shared;
    #[derive(Debug)]
    struct SharedHttp;
    impl Filter for Shared {
        type Config = ();
        type Http = SharedHttp;
        fn configure((): ()) -> Result<Self, String> {
            Ok(Shared)
        }
        fn http(&mut self, _: &Stream) -> SharedHttp {
            SharedHttp
        }
    }
    impl HttpFilter for SharedHttp {
        fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
            shared::set("k", b"1", None).expect("set");
            let (_, stale) = shared::get("k").expect("get").expect("present");
            shared::set("k", b"2", None).expect("set again");
            let mismatch = shared::set("k", b"3", Some(stale));
            // An update racing another writer: the first attempt loses, the second wins.
            let mut attempts = 0;
            let result = shared::update("k", 4, |current| {
                attempts += 1;
                if attempts == 1 {
                    shared::set("k", b"9", None).expect("the other writer");
                }
                let mut next = current.unwrap_or_default().to_vec();
                next.push(b'+');
                (next, attempts)
            });
            let _ = req
                .headers()
                .set("x-cas", &format!("{mismatch:?} {result:?}"));
            Action::Continue
        }
    }
    let mut h = Harness::<Shared>::new("").expect("null config");
    let ex = h.request(TestRequest::get("/"));
    assert_eq!(
        ex.request_header("x-cas").as_deref(),
        Some("Err(CasMismatch) Ok(2)")
    );
    drop(ex);
    assert_eq!(h.shared("k").as_deref(), Some(&b"9+"[..]));
}

#[test]
fn metrics_and_log_levels() {
    #[derive(Debug)]
    struct Metered;
    #[derive(Debug)]
    struct MeteredHttp;
    impl Filter for Metered {
        type Config = ();
        type Http = MeteredHttp;
        fn configure((): ()) -> Result<Self, String> {
            let counter = Counter::define("requests").map_err(|e| e.to_string())?;
            counter.increment(0).map_err(|e| e.to_string())?;
            Ok(Metered)
        }
        fn http(&mut self, _: &Stream) -> MeteredHttp {
            MeteredHttp
        }
    }
    impl HttpFilter for MeteredHttp {
        fn on_request_headers(&mut self, _: &mut Request<'_>) -> Action {
            let _ = Counter::define("requests").and_then(|c| c.increment(2));
            let gauge = Gauge::define("in_flight").expect("gauge");
            let _ = gauge.set(5);
            let _ = gauge.increment(-2);
            let _ = Histogram::define("sizes").and_then(|h| h.record(10));
            log::warn("careful");
            log::debug("detail");
            Action::Continue
        }
    }
    let mut h = Harness::<Metered>::new("").expect("accepted");
    drop(h.request(TestRequest::get("/")));
    drop(h.request(TestRequest::get("/")));
    assert_eq!(h.metric("requests"), Some(4));
    assert_eq!(h.metric("in_flight"), Some(3));
    assert_eq!(h.metric("sizes"), Some(2), "two values recorded");
    assert_eq!(h.metric("nothing"), None);
    assert_eq!(h.logs()[..2], ["WARN careful", "DEBUG detail"]);
}
