//! Builders for small hand-made tables used by the engine's tests and benchmarks.
#![allow(dead_code, unreachable_pub)]

use mesh_table::*;

pub fn loc() -> SourceLoc {
    SourceLoc {
        file: 0,
        line: 1,
        column: 1,
    }
}

pub fn service(name: &str) -> Service {
    Service {
        name: name.into(),
        port: 8080,
        protocol: Protocol::Http1,
        endpoints: Endpoints::Registry,
        balance: Balance::RoundRobin,
        health: None,
        outlier: None,
        mtls: MtlsMode::Strict,
        filters: vec![],
        limits: Limits::DEFAULT,
        loc: loc(),
    }
}

pub fn route(name: &str, service: u32, matcher: RequestMatch) -> Route {
    Route {
        name: name.into(),
        service,
        matcher,
        targets: vec![WeightedTarget {
            service,
            weight: Ppm::FULL,
        }],
        timeout_ms: None,
        idle_timeout_ms: None,
        stream_timeout_ms: None,
        retry: None,
        request_headers: vec![],
        response_headers: vec![],
        filters: vec![],
        loc: loc(),
    }
}

pub fn table(services: &[&str], routes: Vec<Route>, authorizations: Vec<Authorization>) -> Table {
    Table {
        mesh: MeshInfo {
            name: "t".into(),
            trust_domain: "t.local".into(),
            loc: loc(),
        },
        files: vec!["t.mesh".into()],
        services: services.iter().map(|s| service(s)).collect(),
        routes,
        authorizations,
        observes: vec![],
        filters: vec![],
    }
}

pub fn prefix(p: &str) -> Option<PathMatch> {
    Some(PathMatch::Prefix(p.into()))
}

pub fn matcher(
    path: Option<PathMatch>,
    methods: &[Method],
    headers: Vec<HeaderMatch>,
) -> RequestMatch {
    RequestMatch {
        path,
        methods: methods.to_vec(),
        headers,
    }
}

pub fn rule(action: Action, from: Vec<Principal>, to: RequestMatch) -> AuthzRule {
    AuthzRule {
        action,
        from,
        to,
        loc: loc(),
    }
}

pub fn authorization(service: u32, rules: Vec<AuthzRule>, default: Action) -> Authorization {
    Authorization {
        service,
        rules,
        default,
        default_loc: loc(),
        loc: loc(),
    }
}
