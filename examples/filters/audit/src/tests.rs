//! The audit filter on the SDK's mock host.

use filters_sdk::testing::{Harness, TestRequest, TestResponse};

use super::Audit;

#[test]
fn adds_an_id_and_echoes_it() {
    let mut h = Harness::<Audit>::new(r#"{"header": "x-audit-id"}"#).expect("accepted");
    let mut ex = h.request(TestRequest::post("/v1/charge").peer("spiffe://mesh/ns/shop/sa/web"));
    assert!(ex.forwarded());
    let id = ex
        .request_header("x-audit-id")
        .expect("the id header is added");
    assert_eq!(id.len(), 25, "{id}");
    ex.respond(TestResponse::new(201));
    assert_eq!(
        ex.response_header("x-audit-id").as_deref(),
        Some(id.as_str())
    );
    ex.finish();
    let lines = h.log_messages();
    assert_eq!(
        lines,
        [format!(
            "audit id={id} method=POST path=/v1/charge peer=spiffe://mesh/ns/shop/sa/web status=201"
        )]
    );
}

#[test]
fn keeps_the_callers_id() {
    let mut h = Harness::<Audit>::new("{}").expect("the default header");
    let mut ex = h.request(TestRequest::get("/").header("x-audit-id", "abc"));
    assert_eq!(ex.request_header("x-audit-id").as_deref(), Some("abc"));
    ex.respond(TestResponse::new(200));
    assert_eq!(ex.response_header("x-audit-id").as_deref(), Some("abc"));
}

#[test]
fn ids_differ() {
    let mut h = Harness::<Audit>::new(r#"{"header": "x-req"}"#).expect("accepted");
    let a = h.request(TestRequest::get("/")).request_header("x-req");
    let b = h.request(TestRequest::get("/")).request_header("x-req");
    assert!(a.is_some() && b.is_some());
    assert_ne!(a, b);
}

#[test]
fn logs_requests_that_got_no_response() {
    let mut h = Harness::<Audit>::new("{}").expect("accepted");
    drop(h.request(TestRequest::get("/gone")));
    let lines = h.log_messages();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].ends_with("path=/gone peer=- status=-"),
        "{}",
        lines[0]
    );
}

#[test]
fn bad_configs_are_refused() {
    for config in [
        r#"{"header": "X Audit"}"#,
        r#"{"header": 3}"#,
        r#"{"heder": "x"}"#,
    ] {
        let refused = Harness::<Audit>::new(config).expect_err(config);
        assert!(refused.to_string().contains("config refused"), "{refused}");
    }
}
