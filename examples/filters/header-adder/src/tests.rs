//! The header adder on the SDK's mock host.

use filters_sdk::testing::{Harness, TestRequest, TestResponse};

use super::HeaderAdder;

#[test]
fn adds_the_request_header_and_appends_to_the_chain() {
    let config = r#"{"name": "x-added", "value": "1"}"#;
    let mut h = Harness::<HeaderAdder>::named("second", config).expect("accepted");
    let mut ex = h.request(TestRequest::get("/").header("x-added", "0"));
    assert_eq!(
        ex.request_header("x-added").as_deref(),
        Some("1"),
        "replaced"
    );
    ex.respond(TestResponse::new(200).header("x-filter-chain", "first"));
    assert_eq!(
        ex.response_header_values("x-filter-chain"),
        ["first, second"]
    );
}

#[test]
fn starts_the_chain() {
    let config = r#"{"name": "x-a", "value": "v", "label": "a"}"#;
    let mut h = Harness::<HeaderAdder>::named("ignored", config).expect("accepted");
    let mut ex = h.request(TestRequest::get("/"));
    ex.respond(TestResponse::new(204));
    assert_eq!(ex.response_header("x-filter-chain").as_deref(), Some("a"));
}

#[test]
fn without_a_name_the_label_is_the_header() {
    let mut h = Harness::<HeaderAdder>::new(r#"{"name": "x-b", "value": "v"}"#).expect("ok");
    let mut ex = h.request(TestRequest::get("/"));
    ex.respond(TestResponse::new(200));
    assert_eq!(ex.response_header("x-filter-chain").as_deref(), Some("x-b"));
}

#[test]
fn bad_configs_are_refused() {
    for config in [r#"{"value": "v"}"#, r#"{"name": "", "value": "v"}"#, "[]"] {
        assert!(Harness::<HeaderAdder>::new(config).is_err(), "{config}");
    }
}
