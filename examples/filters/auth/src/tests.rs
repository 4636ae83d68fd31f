//! The auth filter on the SDK's mock host.

use filters_sdk::testing::{Harness, TestRequest};

use super::Auth;

const CONFIG: &str = r#"{
  "tokens": { "reader": ["GET"], "writer": ["GET", "POST"], "admin": ["*"] }
}"#;

fn auth() -> Harness<Auth> {
    Harness::new(CONFIG).expect("accepted")
}

#[test]
fn missing_credentials_get_401_with_a_challenge() {
    let mut h = auth();
    let answer = h
        .request(TestRequest::get("/"))
        .local_response()
        .expect("answered");
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"mesh\"")
    );
}

#[test]
fn unknown_tokens_get_403() {
    let mut h = auth();
    for credential in ["Bearer nobody", "Basic reader", "reader", "Bearer readerx"] {
        let ex = h.request(TestRequest::get("/").header("authorization", credential));
        assert_eq!(
            ex.local_response().map(|r| r.status),
            Some(403),
            "{credential}"
        );
    }
}

#[test]
fn methods_are_per_token() {
    let mut h = auth();
    let ex = h.request(TestRequest::post("/").header("authorization", "Bearer reader"));
    assert_eq!(ex.local_response().map(|r| r.status), Some(403));
    drop(ex);
    for (method, token) in [("POST", "writer"), ("GET", "reader"), ("DELETE", "admin")] {
        let ex = h.request(
            TestRequest::new(method, "/").header("authorization", &format!("bearer {token}")),
        );
        assert!(ex.forwarded(), "{method} {token}");
        assert_eq!(ex.request_header("authorization"), None, "stripped");
    }
}

#[test]
fn the_credential_can_be_kept_and_come_in_another_header() {
    let config =
        r#"{"header": "x-api-key", "scheme": "", "strip": false, "tokens": {"k1": ["*"]}}"#;
    let mut h = Harness::<Auth>::new(config).expect("accepted");
    let ex = h.request(TestRequest::get("/").header("x-api-key", "k1"));
    assert!(ex.forwarded());
    assert_eq!(ex.request_header("x-api-key").as_deref(), Some("k1"));
    drop(ex);
    let ex = h.request(TestRequest::get("/").header("authorization", "Bearer k1"));
    assert_eq!(ex.local_response().map(|r| r.status), Some(401));
}

#[test]
fn bad_configs_are_refused() {
    for config in [
        "{}",
        r#"{"tokens": {}}"#,
        r#"{"tokens": {"t": []}}"#,
        r#"{"tokens": {"t": ["get"]}}"#,
        r#"{"tokens": {"t": "GET"}}"#,
        r#"{"tokens": {"t": ["GET"]}, "strp": true}"#,
    ] {
        let refused = Harness::<Auth>::new(config).expect_err(config);
        assert!(refused.to_string().contains("config refused"), "{refused}");
    }
}
