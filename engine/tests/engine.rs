//! The engine's decisions on hand-made tables: precedence, matching, authorization order.

mod support;

use std::sync::Arc;

use mesh_engine::{Decider, Engine, PathError, Peer, RouteDecision};
use mesh_table::{Action, HeaderMatch, HeaderValueMatch, Method, PathMatch, Principal};
use support::*;

fn routed<'e>(
    engine: &'e Engine,
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<&'e str> {
    match engine.route(authority, method, path, headers) {
        RouteDecision::Matched { route, .. } => Some(route.name.as_str()),
        _ => None,
    }
}

fn shop() -> Engine {
    let canary = HeaderMatch {
        name: "x-canary".into(),
        value: HeaderValueMatch::Exact("1".into()),
    };
    let routes = vec![
        route(
            "charge",
            0,
            matcher(prefix("/v1/charge"), &[Method::Post], vec![]),
        ),
        route(
            "canary-pin",
            0,
            matcher(prefix("/v1/charge"), &[Method::Post], vec![canary]),
        ),
        route(
            "receipts",
            0,
            matcher(prefix("/v1/receipts"), &[Method::Get, Method::Head], vec![]),
        ),
        route(
            "exact",
            0,
            matcher(
                Some(PathMatch::Exact("/v1/charge/special".into())),
                &[],
                vec![],
            ),
        ),
        route(
            "numbers",
            0,
            matcher(Some(PathMatch::Regex("/n/[0-9]+".into())), &[], vec![]),
        ),
        route("rest", 0, matcher(prefix("/"), &[], vec![])),
    ];
    Engine::new(Arc::new(table(&["payments", "plain"], routes, vec![]))).expect("engine")
}

#[test]
fn the_most_specific_route_wins_whatever_the_order() {
    let e = shop();
    assert_eq!(
        routed(&e, "payments", "POST", "/v1/charge", &[]),
        Some("charge")
    );
    assert_eq!(
        routed(
            &e,
            "payments",
            "POST",
            "/v1/charge/42",
            &[("X-Canary", "1")]
        ),
        Some("canary-pin")
    );
    assert_eq!(
        routed(&e, "payments", "POST", "/v1/charge", &[("x-canary", "2")]),
        Some("charge")
    );
    assert_eq!(
        routed(&e, "payments", "GET", "/v1/charge", &[]),
        Some("rest"),
        "method mismatch falls to the catch-all"
    );
    assert_eq!(
        routed(&e, "payments", "POST", "/v1/chargeback", &[]),
        Some("rest"),
        "prefixes match whole segments"
    );
    assert_eq!(
        routed(&e, "payments", "GET", "/v1/charge/special", &[]),
        Some("exact")
    );
    assert_eq!(
        routed(&e, "payments", "HEAD", "/v1/receipts/9", &[]),
        Some("receipts")
    );
    assert_eq!(
        routed(&e, "payments", "GET", "/n/123", &[]),
        Some("rest"),
        "a prefix (even /) beats a regex"
    );
}

#[test]
fn authorities_paths_and_unrouted_services() {
    let e = shop();
    assert_eq!(
        routed(&e, "PAYMENTS:9000", "POST", "/v1/./charge?x=1", &[]),
        Some("charge")
    );
    assert_eq!(
        routed(&e, "payments", "POST", "//v1//charge", &[]),
        Some("charge")
    );
    assert_eq!(
        e.route("nobody", "GET", "/", &[]),
        RouteDecision::UnknownService
    );
    assert_eq!(
        e.route("plain", "GET", "/x", &[]),
        RouteDecision::ToService { service: 1 }
    );
    assert_eq!(
        e.route("payments", "GET", "/a/%2f", &[]),
        RouteDecision::BadPath(PathError::EncodedSeparator)
    );
    assert_eq!(
        e.route("payments", "GET", "/..", &[]),
        RouteDecision::BadPath(PathError::AboveRoot)
    );
}

#[test]
fn a_service_with_routes_but_no_match_is_404() {
    let routes = vec![route("only", 0, matcher(prefix("/only"), &[], vec![]))];
    let e = Engine::new(Arc::new(table(&["s"], routes, vec![]))).expect("engine");
    assert_eq!(
        e.route("s", "GET", "/other", &[]),
        RouteDecision::NoRoute { service: 0 }
    );
}

#[test]
fn regexes_match_whole_paths_and_header_values() {
    let routes = vec![
        route(
            "n",
            0,
            matcher(Some(PathMatch::Regex("/n/[0-9]+".into())), &[], vec![]),
        ),
        route(
            "h",
            0,
            matcher(
                Some(PathMatch::Regex("/h".into())),
                &[],
                vec![HeaderMatch {
                    name: "x-v".into(),
                    value: HeaderValueMatch::Regex("v[0-9]".into()),
                }],
            ),
        ),
    ];
    let e = Engine::new(Arc::new(table(&["s"], routes, vec![]))).expect("engine");
    assert_eq!(routed(&e, "s", "GET", "/n/12", &[]), Some("n"));
    assert_eq!(routed(&e, "s", "GET", "/n/12/x", &[]), None);
    assert_eq!(routed(&e, "s", "GET", "/x/n/12", &[]), None);
    assert_eq!(routed(&e, "s", "GET", "/h", &[("x-v", "v1")]), Some("h"));
    assert_eq!(routed(&e, "s", "GET", "/h", &[("x-v", "v12")]), None);
}

fn payments_authz() -> Engine {
    let oncall = HeaderMatch {
        name: "x-oncall".into(),
        value: HeaderValueMatch::Exact("true".into()),
    };
    let rules = vec![
        rule(
            Action::Deny,
            vec![Principal::Any],
            matcher(prefix("/internal"), &[], vec![]),
        ),
        rule(
            Action::Allow,
            vec![Principal::Service(0)],
            matcher(prefix("/v1/charge"), &[Method::Post], vec![]),
        ),
        rule(
            Action::Allow,
            vec![Principal::Service(1)],
            matcher(prefix("/admin"), &[], vec![oncall]),
        ),
        rule(
            Action::Allow,
            vec![Principal::Anyone],
            matcher(
                Some(PathMatch::Exact("/public".into())),
                &[Method::Get],
                vec![],
            ),
        ),
    ];
    let authz = vec![authorization(2, rules, Action::Deny)];
    Engine::new(Arc::new(table(
        &["frontend", "ops", "payments", "other"],
        vec![],
        authz,
    )))
    .expect("engine")
}

#[test]
fn deny_first_then_allow_then_default() {
    let e = payments_authz();
    let frontend = Peer::Service(0);
    let ops = Peer::Service(1);
    let decide = |peer, method, path, headers: &[(&str, &str)]| {
        e.authorize(2, peer, method, path, headers)
            .expect("valid path")
    };
    let d = decide(frontend, "POST", "/v1/charge/1", &[]);
    assert_eq!((d.action, d.decider), (Action::Allow, Decider::Rule(1)));
    let d = decide(frontend, "POST", "/internal/x", &[]);
    assert_eq!((d.action, d.decider), (Action::Deny, Decider::Rule(0)));
    let d = decide(frontend, "GET", "/v1/charge", &[]);
    assert_eq!((d.action, d.decider), (Action::Deny, Decider::Default));
    let d = decide(ops, "GET", "/admin", &[("x-oncall", "true")]);
    assert_eq!((d.action, d.decider), (Action::Allow, Decider::Rule(2)));
    let d = decide(ops, "GET", "/admin", &[]);
    assert_eq!(d.action, Action::Deny);
    let d = decide(Peer::Plaintext, "GET", "/public", &[]);
    assert_eq!((d.action, d.decider), (Action::Allow, Decider::Rule(3)));
    let d = decide(Peer::Plaintext, "GET", "/internal", &[]);
    assert_eq!(
        (d.action, d.decider),
        (Action::Deny, Decider::Default),
        "`any` does not cover plaintext callers"
    );
    let d = decide(Peer::OtherMeshIdentity, "GET", "/internal", &[]);
    assert_eq!((d.action, d.decider), (Action::Deny, Decider::Rule(0)));
    // Normalization applies to authorization too: no way around the deny.
    let d = decide(frontend, "POST", "/v1/../internal/x", &[]);
    assert_eq!((d.action, d.decider), (Action::Deny, Decider::Rule(0)));
    let d = decide(frontend, "POST", "/%69nternal", &[]);
    assert_eq!((d.action, d.decider), (Action::Deny, Decider::Rule(0)));
}

#[test]
fn a_service_without_authorize_admits_mesh_identities_only() {
    let e = payments_authz();
    assert_eq!(
        e.authorize(3, Peer::Service(0), "GET", "/", &[])
            .map(|d| d.action),
        Ok(Action::Allow)
    );
    assert_eq!(
        e.authorize(3, Peer::Plaintext, "GET", "/", &[])
            .map(|d| d.action),
        Ok(Action::Deny)
    );
}

#[test]
fn spiffe_ids_map_to_peers() {
    let e = payments_authz();
    assert_eq!(
        e.peer_from_spiffe_id("spiffe://t.local/ops"),
        Some(Peer::Service(1))
    );
    assert_eq!(
        e.peer_from_spiffe_id("spiffe://t.local/batch"),
        Some(Peer::OtherMeshIdentity)
    );
    assert_eq!(e.peer_from_spiffe_id("spiffe://evil.local/ops"), None);
    assert_eq!(e.peer_from_spiffe_id("https://t.local/ops"), None);
}
