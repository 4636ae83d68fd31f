//! Route and authorization decisions at 10, 1,000 and 10,000 rules per service.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mesh_engine::{Engine, Peer};
use mesh_table::{Action, HeaderMatch, HeaderValueMatch, Method, PathMatch, Principal};

#[path = "../tests/support/mod.rs"]
mod support;
use support::*;

const CALLERS: u32 = 100;

/// One service `svc` with `n` routes and `n` authorization rules of realistic shapes:
/// prefixes of several depths, some with methods and headers, a few exact paths and regexes.
fn engine(n: usize) -> Engine {
    let mut services: Vec<String> = vec!["svc".into()];
    services.extend((0..CALLERS).map(|i| format!("caller{i}")));
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let routes = (0..n)
        .map(|i| {
            let path = match i % 10 {
                0 => Some(PathMatch::Exact(format!("/api/v{}/items/{i}", i % 7))),
                1 if i % 100 == 1 => Some(PathMatch::Regex(format!("/rx{i}/[0-9]+"))),
                _ => Some(PathMatch::Prefix(format!("/api/v{}/items{i}", i % 7))),
            };
            let methods = if i % 3 == 0 {
                vec![Method::Get, Method::Head]
            } else {
                vec![]
            };
            let headers = if i % 4 == 0 {
                vec![HeaderMatch {
                    name: "x-tenant".into(),
                    value: HeaderValueMatch::Exact(format!("t{i}")),
                }]
            } else {
                vec![]
            };
            route(&format!("r{i}"), 0, matcher(path, &methods, headers))
        })
        .collect();
    let rules = (0..n)
        .map(|i| {
            let action = if i % 10 == 0 {
                Action::Deny
            } else {
                Action::Allow
            };
            let from = vec![Principal::Service(1 + (i as u32 % CALLERS))];
            let path = Some(PathMatch::Prefix(format!("/api/v{}/items{i}", i % 7)));
            rule(
                action,
                from,
                matcher(path, &[Method::Get, Method::Post], vec![]),
            )
        })
        .collect();
    let t = table(&names, routes, vec![authorization(0, rules, Action::Deny)]);
    Engine::new(Arc::new(t)).expect("engine")
}

fn decisions(c: &mut Criterion) {
    let mut route_group = c.benchmark_group("route");
    for n in [10usize, 1_000, 10_000] {
        let e = engine(n);
        let hit = n / 2 + 2; // a plain prefix route in the middle of the table
        let path = format!("/api/v{}/items{hit}/42", hit % 7);
        let headers = [("x-request-id", "abc"), ("x-tenant", "t0")];
        route_group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                e.route(
                    black_box("svc"),
                    black_box("GET"),
                    black_box(&path),
                    black_box(&headers),
                )
            })
        });
    }
    route_group.finish();

    let mut authz_group = c.benchmark_group("authorize");
    for n in [10usize, 1_000, 10_000] {
        let e = engine(n);
        let hit = n / 2 + 3;
        let path = format!("/api/v{}/items{hit}/42", hit % 7);
        let peer = Peer::Service(1 + (hit as u32 % CALLERS));
        let headers = [("x-request-id", "abc")];
        authz_group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                e.authorize(
                    black_box(0),
                    black_box(peer),
                    black_box("GET"),
                    black_box(&path),
                    black_box(&headers),
                )
            })
        });
    }
    authz_group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
