//! The hot path allocates nothing: route and authorize decisions on normalized paths are
//! counted by a global allocator.

mod support;

use std::sync::Arc;

use mesh_engine::{Engine, Peer, RouteDecision};
use mesh_table::{Action, HeaderMatch, HeaderValueMatch, Method, PathMatch, Principal};
use support::*;

/// Allocations made by `f`, counted by allocation-counter's global allocator (the workspace
/// forbids `unsafe`, which writing one here would need).
fn allocations_during(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

#[test]
fn decisions_allocate_nothing() {
    let tenant = HeaderMatch {
        name: "x-tenant".into(),
        value: HeaderValueMatch::Regex("t[0-9]+".into()),
    };
    let routes = vec![
        route(
            "exact",
            0,
            matcher(Some(PathMatch::Exact("/v1/x".into())), &[], vec![]),
        ),
        route(
            "charge",
            0,
            matcher(prefix("/v1/charge"), &[Method::Post], vec![tenant.clone()]),
        ),
        route(
            "regex",
            0,
            matcher(Some(PathMatch::Regex("/n/[0-9]+".into())), &[], vec![]),
        ),
    ];
    let rules = vec![
        rule(
            Action::Deny,
            vec![Principal::Any],
            matcher(prefix("/internal"), &[], vec![]),
        ),
        rule(
            Action::Allow,
            vec![Principal::Service(1)],
            matcher(prefix("/v1"), &[Method::Post], vec![tenant]),
        ),
    ];
    let engine = Engine::new(Arc::new(table(
        &["payments", "frontend"],
        routes,
        vec![authorization(0, rules, Action::Deny)],
    )))
    .expect("engine");
    let headers = [("x-tenant", "t42"), ("x-request-id", "abc")];
    // Warm up anything lazily initialised (regex caches per thread).
    let _ = engine.route("payments", "POST", "/v1/charge/1", &headers);
    let _ = engine.authorize(0, Peer::Service(1), "POST", "/v1/charge/1", &headers);
    let _ = engine.route("payments", "GET", "/n/12", &headers);

    let count = allocations_during(|| {
        for _ in 0..1000 {
            let decision = engine.route("payments:9000", "POST", "/v1/charge/1?q=1", &headers);
            assert!(
                matches!(decision, RouteDecision::Matched { route, .. } if route.name == "charge")
            );
            let decision = engine.route("payments", "GET", "/n/12", &headers);
            assert!(
                matches!(decision, RouteDecision::Matched { route, .. } if route.name == "regex")
            );
            let decision = engine.authorize(0, Peer::Service(1), "POST", "/v1/charge/1", &headers);
            assert_eq!(decision.map(|d| d.action), Ok(Action::Allow));
            let decision = engine.authorize(0, Peer::Service(1), "GET", "/internal/x", &headers);
            assert_eq!(decision.map(|d| d.action), Ok(Action::Deny));
        }
    });
    assert_eq!(
        count, 0,
        "route/authorize allocated {count} times in 4,000 decisions"
    );
}
