//! The rate limiter on the SDK's mock host.

use std::time::Duration;

use filters_sdk::testing::{Harness, TestRequest};

use super::RateLimit;

fn limiter(config: &str) -> Harness<RateLimit> {
    Harness::new(config).expect("the config is accepted")
}

#[test]
fn rejects_after_the_burst() {
    let mut h = limiter(r#"{"requests_per_second": 1, "burst": 3}"#);
    for i in 0..3 {
        assert!(h.request(TestRequest::get("/")).forwarded(), "request {i}");
    }
    let ex = h.request(TestRequest::get("/"));
    let answer = ex.local_response().expect("the fourth is answered");
    assert_eq!(answer.status, 429);
    assert_eq!(answer.body_text(), "rate limited");
    assert_eq!(answer.header("x-ratelimit-limit"), Some("1"));
    drop(ex);
    assert_eq!(h.metric("ratelimit_rejected"), Some(1));
}

#[test]
fn refills_with_time() {
    let mut h = limiter(r#"{"requests_per_second": 2, "burst": 1}"#);
    assert!(h.request(TestRequest::get("/")).forwarded());
    assert!(!h.request(TestRequest::get("/")).forwarded());
    h.advance(Duration::from_millis(250));
    assert!(
        !h.request(TestRequest::get("/")).forwarded(),
        "half a token"
    );
    h.advance(Duration::from_millis(250));
    assert!(
        h.request(TestRequest::get("/")).forwarded(),
        "a whole token"
    );
    assert!(!h.request(TestRequest::get("/")).forwarded());
    assert_eq!(h.metric("ratelimit_rejected"), Some(3));
}

#[test]
fn the_bucket_is_in_shared_data() {
    let mut h = limiter(r#"{"requests_per_second": 5, "burst": 5}"#);
    drop(h.request(TestRequest::get("/")));
    let state = h
        .shared("ratelimit/ratelimit")
        .expect("the bucket is shared");
    let tokens = u64::from_le_bytes(state[..8].try_into().expect("8 bytes"));
    assert_eq!(tokens, 4000, "4 of 5 tokens left (milli-tokens)");
}

#[test]
fn a_bucket_per_policy_filter() {
    let config = r#"{"requests_per_second": 1, "burst": 1}"#;
    let mut h = Harness::<RateLimit>::named("edge", config).expect("accepted");
    assert!(h.request(TestRequest::get("/")).forwarded());
    assert!(h.shared("ratelimit/edge").is_some());
    assert!(h.shared("ratelimit/ratelimit").is_none());
}

#[test]
fn bad_configs_are_refused() {
    for config in [
        r#"{"requests_per_second": 0, "burst": 1}"#,
        r#"{"requests_per_second": 1}"#,
        r#"{"requests_per_second": "ten", "burst": 1}"#,
        r#"{"requests_per_second": 1, "burst": 1, "bust": 2}"#,
        "not json",
    ] {
        let refused = Harness::<RateLimit>::new(config).expect_err(config);
        assert!(
            refused.logs.iter().any(|l| l.contains("config refused")),
            "{config}: {refused}"
        );
    }
}

#[test]
fn the_schema_is_json() {
    let schema: serde_json::Value = serde_json::from_str(super::CONFIG_SCHEMA).expect("JSON");
    assert_eq!(
        schema["required"],
        serde_json::json!(["requests_per_second", "burst"])
    );
}
