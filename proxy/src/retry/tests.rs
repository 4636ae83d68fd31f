//! Which failures a policy retries.

use mesh_table::{Ppm, RetryOn, RetryPolicy, StatusMatch};

use super::{allows, is_idempotent, Condition};

fn policy(on: &[RetryOn], non_idempotent: bool) -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        per_try_timeout_ms: None,
        on: on.to_vec(),
        backoff_base_ms: 25,
        backoff_max_ms: 250,
        budget: Ppm(200_000),
        non_idempotent,
    }
}

fn response(status: u16) -> Condition {
    Condition::Response { status, grpc: None }
}

fn grpc(code: u8) -> Condition {
    Condition::Response {
        status: 200,
        grpc: Some(code),
    }
}

#[test]
fn conditions_match_what_on_lists() {
    let p = policy(
        &[RetryOn::Status(StatusMatch::Code(503)), RetryOn::Grpc(14)],
        false,
    );
    assert!(allows(&p, response(503), true));
    assert!(!allows(&p, response(502), true));
    assert!(!allows(&p, response(200), true));
    assert!(allows(&p, grpc(14), true));
    assert!(!allows(&p, grpc(13), true));
    assert!(!allows(&p, Condition::ConnectFailure, true), "not listed");
    let p = policy(&[RetryOn::Status(StatusMatch::Class(5))], false);
    assert!(allows(&p, response(500), true) && allows(&p, response(599), true));
    assert!(!allows(&p, response(404), true));
}

#[test]
fn a_per_try_timeout_counts_as_a_reset_or_a_504() {
    for on in [
        RetryOn::Reset,
        RetryOn::Status(StatusMatch::Class(5)),
        RetryOn::Status(StatusMatch::Code(504)),
    ] {
        assert!(
            allows(&policy(&[on], false), Condition::Timeout, true),
            "{on:?}"
        );
    }
    for on in [
        RetryOn::ConnectFailure,
        RetryOn::Status(StatusMatch::Code(503)),
    ] {
        assert!(
            !allows(&policy(&[on], false), Condition::Timeout, true),
            "{on:?}"
        );
    }
}

#[test]
fn a_post_is_retried_after_it_was_sent_only_when_the_route_allows_it() {
    let all = [
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Reset,
        RetryOn::Status(StatusMatch::Class(5)),
        RetryOn::Grpc(13),
        RetryOn::Grpc(14),
    ];
    let strict = policy(&all, false);
    // Never processed: always safe.
    assert!(allows(&strict, Condition::ConnectFailure, false));
    assert!(allows(&strict, Condition::RefusedStream, false));
    assert!(allows(&strict, grpc(14), false));
    // Maybe processed: not for a POST...
    assert!(!allows(&strict, Condition::Reset, false));
    assert!(!allows(&strict, Condition::Timeout, false));
    assert!(!allows(&strict, response(503), false));
    assert!(!allows(&strict, grpc(13), false));
    // ...unless the route says the service deduplicates.
    let lenient = policy(&all, true);
    assert!(allows(&lenient, Condition::Reset, false));
    assert!(allows(&lenient, response(503), false));
    assert!(allows(&lenient, grpc(13), false));
}

#[test]
fn idempotent_methods_are_rfc_9110s() {
    for m in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
        assert!(is_idempotent(&m.parse().expect("method")), "{m}");
    }
    for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
        assert!(!is_idempotent(&m.parse().expect("method")), "{m}");
    }
}
