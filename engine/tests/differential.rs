//! The engine and the reference evaluator agree on every decision: random tables, random
//! requests, thousands of cases per run.

mod support;

use std::sync::Arc;

use mesh_engine::{reference, Engine, Peer};
use mesh_table::{
    Action, Authorization, HeaderMatch, HeaderValueMatch, Method, PathMatch, Principal,
    RequestMatch, Route, Table,
};
use proptest::prelude::*;
use support::*;

const SERVICES: [&str; 4] = ["s0", "s1", "s2", "s3"];
const PATHS: [&str; 10] = [
    "/", "/a", "/a/", "/a/b", "/a/b/c", "/b", "/ab", "/a/b/", "/a/bc", "/c/d",
];
const REGEXES: [&str; 5] = ["/a/.*", "/[ab]+", "/a/b/[0-9]+", ".*", "/(a|c)/.+"];

fn path_match() -> impl Strategy<Value = Option<PathMatch>> {
    prop_oneof![
        Just(None),
        prop::sample::select(&PATHS[..]).prop_map(|p| Some(PathMatch::Exact(p.into()))),
        prop::sample::select(&PATHS[..]).prop_map(|p| Some(PathMatch::Prefix(p.into()))),
        prop::sample::select(&REGEXES[..]).prop_map(|r| Some(PathMatch::Regex(r.into()))),
    ]
}

fn header_match() -> impl Strategy<Value = HeaderMatch> {
    prop_oneof![
        Just(HeaderMatch {
            name: "x-a".into(),
            value: HeaderValueMatch::Exact("1".into())
        }),
        Just(HeaderMatch {
            name: "x-a".into(),
            value: HeaderValueMatch::Prefix("1".into())
        }),
        Just(HeaderMatch {
            name: "x-a".into(),
            value: HeaderValueMatch::Regex("[0-9]+".into())
        }),
        Just(HeaderMatch {
            name: "x-b".into(),
            value: HeaderValueMatch::Present
        }),
        Just(HeaderMatch {
            name: "x-a".into(),
            value: HeaderValueMatch::Exact("1, 2".into())
        }),
        Just(HeaderMatch {
            name: "x-b".into(),
            value: HeaderValueMatch::Exact("".into())
        }),
    ]
}

fn request_match() -> impl Strategy<Value = RequestMatch> {
    (
        path_match(),
        prop::sample::subsequence(vec![Method::Get, Method::Post, Method::Put], 0..=2),
        prop::collection::vec(header_match(), 0..=2),
    )
        .prop_map(|(path, methods, headers)| RequestMatch {
            path,
            methods,
            headers,
        })
}

fn routes() -> impl Strategy<Value = Vec<Route>> {
    prop::collection::vec((0u32..4, request_match()), 0..14).prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (service, m))| route(&format!("r{i}"), service, m))
            .collect()
    })
}

fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        (0u32..4).prop_map(Principal::Service),
        Just(Principal::Any),
        Just(Principal::Anyone)
    ]
}

fn authorizations() -> impl Strategy<Value = Vec<Authorization>> {
    let rule = (
        any::<bool>(),
        prop::collection::vec(principal(), 1..=2),
        request_match(),
    )
        .prop_map(|(deny, from, to)| {
            rule(if deny { Action::Deny } else { Action::Allow }, from, to)
        });
    let block = (prop::collection::vec(rule, 0..10), any::<bool>());
    prop::collection::vec(prop::option::of(block), 4).prop_map(|blocks| {
        blocks
            .into_iter()
            .enumerate()
            .filter_map(|(service, block)| {
                let (rules, allow) = block?;
                Some(authorization(
                    u32::try_from(service).ok()?,
                    rules,
                    if allow { Action::Allow } else { Action::Deny },
                ))
            })
            .collect()
    })
}

fn request_path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&PATHS[..]).prop_map(str::to_string),
        (
            prop::sample::select(&PATHS[..]),
            prop::sample::select(
                &[
                    "", "/", "/7", "/12", "?q=/x", "//", "/./", "/../", "/%61", "/%2f", "/x/..",
                    ";x", "/..;", "/%2e%2e", "/%00", "%20", "/%252e",
                ][..]
            )
        )
            .prop_map(|(p, s)| format!("{p}{s}")),
        "/[abc0-9/]{0,8}",
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let a = prop::option::of(prop::sample::select(&["1", "12", "a", ""][..]));
    let b = prop::option::of(prop::sample::select(&["", "x"][..]));
    // A second `x-a`, after or before `x-b`: repeated headers are read joined.
    let again = prop::option::of((prop::sample::select(&["1", "2", ""][..]), any::<bool>()));
    (a, b, any::<bool>(), again).prop_map(|(a, b, upper, again)| {
        let mut h = Vec::new();
        if let Some(a) = a {
            h.push((if upper { "X-A" } else { "x-a" }.to_string(), a.to_string()));
        }
        if let Some((value, _)) = again.filter(|(_, early)| *early) {
            h.push(("x-a".to_string(), value.to_string()));
        }
        if let Some(b) = b {
            h.push(("x-b".to_string(), b.to_string()));
        }
        if let Some((value, _)) = again.filter(|(_, early)| !*early) {
            h.push(("x-a".to_string(), value.to_string()));
        }
        h
    })
}

fn request() -> impl Strategy<Value = (String, String, String, Vec<(String, String)>)> {
    (
        prop::sample::select(&["s0", "s1", "S2:80", "s3", "nope"][..]).prop_map(str::to_string),
        prop::sample::select(&["GET", "POST", "PUT", "DELETE", "PROPFIND"][..])
            .prop_map(str::to_string),
        request_path(),
        headers(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn engine_and_reference_agree(
        routes in routes(),
        authorizations in authorizations(),
        requests in prop::collection::vec(request(), 1..12),
    ) {
        let t: Table = table(&SERVICES, routes, authorizations);
        let engine = Engine::new(Arc::new(t.clone())).expect("engine builds");
        for (authority, method, path, headers) in &requests {
            let fast = engine.route(authority, method, path, headers.as_slice());
            let slow = reference::route(&t, authority, method, path, headers.as_slice());
            prop_assert_eq!(fast, slow, "route {} {} {} {:?}", authority, method, path, headers);
            for service in 0..4u32 {
                for peer in [Peer::Plaintext, Peer::Service(0), Peer::Service(service), Peer::OtherMeshIdentity] {
                    let fast = engine.authorize(service, peer, method, path, headers.as_slice()).ok();
                    let slow = reference::authorize(&t, service, peer, method, path, headers.as_slice());
                    prop_assert_eq!(fast, slow, "authorize s{} {:?} {} {} {:?}", service, peer, method, path, headers);
                }
            }
        }
    }
}
