//! Hand-built tables for tests, here and in crates that consume tables (feature `testing`).

use crate::model::{
    AccessLog, AccessLogFormat, Action, Authorization, AuthzRule, Balance, Endpoints, FailureMode,
    Filter, HeaderEdit, HeaderMatch, HeaderValueMatch, HealthCheck, Limits, MeshInfo, Method,
    MtlsMode, Observe, Outlier, PathMatch, Ppm, Principal, Protocol, RequestMatch, RetryOn,
    RetryPolicy, Route, Service, ServiceId, SourceLoc, StatusMatch, Table, WeightedTarget,
};

/// Index of `api` in [`sample_table`].
pub const API: ServiceId = 0;
/// Index of `cart` in [`sample_table`].
pub const CART: ServiceId = 1;
/// Index of `checkout` in [`sample_table`].
pub const CHECKOUT: ServiceId = 2;
/// Index of `payments` in [`sample_table`].
pub const PAYMENTS: ServiceId = 3;
/// Index of `payments-canary` in [`sample_table`].
pub const PAYMENTS_CANARY: ServiceId = 4;
/// Index of `web` in [`sample_table`].
pub const WEB: ServiceId = 5;

/// A source location in file `file` of the sample tables.
pub fn loc(file: u32, line: u32, column: u32) -> SourceLoc {
    SourceLoc { file, line, column }
}

/// The smallest valid table: a mesh with one service and nothing else.
pub fn minimal_table() -> Table {
    Table {
        mesh: MeshInfo {
            name: "tiny".to_owned(),
            trust_domain: "tiny.local".to_owned(),
            loc: loc(0, 1, 1),
        },
        files: vec!["mesh.policy".to_owned()],
        services: vec![Service {
            name: "echo".to_owned(),
            port: 8080,
            protocol: Protocol::Http1,
            endpoints: Endpoints::Registry,
            balance: Balance::RoundRobin,
            health: None,
            outlier: None,
            mtls: MtlsMode::Strict,
            filters: vec![],
            limits: Limits::DEFAULT,
            loc: loc(0, 3, 1),
        }],
        routes: vec![],
        authorizations: vec![],
        observes: vec![],
        filters: vec![],
    }
}

/// A realistic shop mesh: six services, five routes (with a canary split, retries, header
/// matchers and edits), two authorizations, an observe block and two WASM filters.
///
/// It passes [`validate`](crate::validate); the service indices are [`API`] to [`WEB`].
pub fn sample_table() -> Table {
    Table {
        mesh: MeshInfo {
            name: "shop".to_owned(),
            trust_domain: "shop.example.org".to_owned(),
            loc: loc(0, 1, 1),
        },
        files: vec![
            "mesh.policy".to_owned(),
            "services/shop.policy".to_owned(),
            "filters.policy".to_owned(),
        ],
        services: sample_services(),
        routes: sample_routes(),
        authorizations: sample_authorizations(),
        observes: vec![Observe {
            service: PAYMENTS,
            access_log: Some(AccessLog {
                format: AccessLogFormat::Json,
                sample: Ppm(10_000),
            }),
            trace_sample: Some(Ppm(1_000)),
            latency_buckets_ms: vec![5, 10, 25, 50, 100, 250, 1_000],
            loc: loc(1, 80, 1),
        }],
        filters: vec![
            Filter {
                name: "auth-jwt".to_owned(),
                module: "filters/auth_jwt.wasm".to_owned(),
                sha256: [0xa5; 32],
                config_json: r#"{"audience":"shop","issuer":"https://id.example.org"}"#.to_owned(),
                failure: FailureMode::Closed,
                memory_bytes: 16 << 20,
                time_limit_ms: 5,
                loc: loc(2, 1, 1),
            },
            Filter {
                name: "rate-limit".to_owned(),
                module: "filters/rate_limit.wasm".to_owned(),
                sha256: [0x5a; 32],
                config_json: r#"{"burst":50,"rps":100}"#.to_owned(),
                failure: FailureMode::Open,
                memory_bytes: 4 << 20,
                time_limit_ms: 2,
                loc: loc(2, 9, 1),
            },
        ],
    }
}

fn service(name: &str, port: u16, line: u32) -> Service {
    Service {
        name: name.to_owned(),
        port,
        protocol: Protocol::Http1,
        endpoints: Endpoints::Registry,
        balance: Balance::RoundRobin,
        health: None,
        outlier: None,
        mtls: MtlsMode::Strict,
        filters: vec![],
        limits: Limits::DEFAULT,
        loc: loc(1, line, 1),
    }
}

fn sample_services() -> Vec<Service> {
    let health = HealthCheck {
        path: "/healthz".to_owned(),
        interval_ms: 5_000,
        timeout_ms: 1_000,
        unhealthy_after: 3,
        healthy_after: 2,
    };
    vec![
        Service {
            endpoints: Endpoints::Static(vec![
                "10.0.0.1:15006".to_owned(),
                "[fd00::1]:15006".to_owned(),
                "api-2.pods.local:15006".to_owned(),
            ]),
            balance: Balance::LeastRequest,
            health: Some(health.clone()),
            filters: vec![0, 1],
            ..service("api", 8080, 1)
        },
        Service {
            balance: Balance::RingHash {
                header: "x-user-id".to_owned(),
            },
            ..service("cart", 8080, 10)
        },
        Service {
            protocol: Protocol::Http2,
            balance: Balance::Ewma,
            ..service("checkout", 8443, 20)
        },
        Service {
            protocol: Protocol::Grpc,
            endpoints: Endpoints::Dns {
                host: "payments.internal".to_owned(),
                port: 15006,
            },
            health: Some(health),
            outlier: Some(Outlier {
                consecutive_5xx: 5,
                eject_for_ms: 30_000,
                max_ejected: Ppm(200_000),
            }),
            filters: vec![1],
            limits: Limits {
                max_requests: 100,
                max_pending: 0,
            },
            ..service("payments", 9000, 30)
        },
        Service {
            protocol: Protocol::Grpc,
            balance: Balance::Random,
            ..service("payments-canary", 9000, 40)
        },
        Service {
            mtls: MtlsMode::Permissive,
            ..service("web", 3000, 50)
        },
    ]
}

fn route(name: &str, service: ServiceId, target: ServiceId, line: u32) -> Route {
    Route {
        name: name.to_owned(),
        service,
        matcher: RequestMatch::default(),
        targets: vec![WeightedTarget {
            service: target,
            weight: Ppm::FULL,
        }],
        timeout_ms: None,
        idle_timeout_ms: None,
        stream_timeout_ms: None,
        retry: None,
        request_headers: vec![],
        response_headers: vec![],
        filters: vec![],
        loc: loc(1, line, 3),
    }
}

fn sample_routes() -> Vec<Route> {
    vec![
        Route {
            matcher: RequestMatch {
                path: Some(PathMatch::Prefix("/cart".to_owned())),
                methods: vec![Method::Get, Method::Put, Method::Delete],
                headers: vec![],
            },
            timeout_ms: Some(2_000),
            idle_timeout_ms: Some(1_000),
            stream_timeout_ms: Some(30_000),
            retry: Some(RetryPolicy {
                attempts: 3,
                per_try_timeout_ms: Some(500),
                on: vec![
                    RetryOn::ConnectFailure,
                    RetryOn::Reset,
                    RetryOn::Status(StatusMatch::Code(503)),
                ],
                backoff_base_ms: 25,
                backoff_max_ms: 250,
                budget: Ppm(200_000),
                non_idempotent: true,
            }),
            request_headers: vec![HeaderEdit::Set(
                "x-mesh-route".to_owned(),
                "cart".to_owned(),
            )],
            response_headers: vec![HeaderEdit::Remove("server".to_owned())],
            ..route("cart", API, CART, 5)
        },
        Route {
            matcher: RequestMatch {
                path: Some(PathMatch::Regex("/checkout/[0-9]+".to_owned())),
                methods: vec![Method::Post],
                headers: vec![HeaderMatch {
                    name: "x-user-tier".to_owned(),
                    value: HeaderValueMatch::Prefix("gold".to_owned()),
                }],
            },
            filters: vec![0],
            ..route("checkout", API, CHECKOUT, 12)
        },
        Route {
            matcher: RequestMatch {
                path: Some(PathMatch::Exact("/v1/charge".to_owned())),
                methods: vec![Method::Post],
                headers: vec![HeaderMatch {
                    name: "content-type".to_owned(),
                    value: HeaderValueMatch::Exact("application/grpc".to_owned()),
                }],
            },
            targets: vec![
                WeightedTarget {
                    service: PAYMENTS,
                    weight: Ppm(900_000),
                },
                WeightedTarget {
                    service: PAYMENTS_CANARY,
                    weight: Ppm(100_000),
                },
            ],
            timeout_ms: Some(10_000),
            retry: Some(RetryPolicy {
                attempts: 2,
                per_try_timeout_ms: None,
                on: vec![
                    RetryOn::ConnectFailure,
                    RetryOn::RefusedStream,
                    RetryOn::Grpc(14),
                    RetryOn::Status(StatusMatch::Class(5)),
                ],
                backoff_base_ms: 10,
                backoff_max_ms: 100,
                budget: Ppm(100_000),
                non_idempotent: false,
            }),
            request_headers: vec![HeaderEdit::Add(
                "x-mesh-split".to_owned(),
                "charge".to_owned(),
            )],
            ..route("charge", PAYMENTS, PAYMENTS, 60)
        },
        Route {
            matcher: RequestMatch {
                path: Some(PathMatch::Prefix("/v1/refunds".to_owned())),
                methods: vec![],
                headers: vec![
                    HeaderMatch {
                        name: "x-request-id".to_owned(),
                        value: HeaderValueMatch::Present,
                    },
                    HeaderMatch {
                        name: "x-tenant".to_owned(),
                        value: HeaderValueMatch::Regex("[a-z]{3,8}".to_owned()),
                    },
                ],
            },
            ..route("refund", PAYMENTS, PAYMENTS, 68)
        },
        Route {
            matcher: RequestMatch {
                path: Some(PathMatch::Prefix("/".to_owned())),
                ..RequestMatch::default()
            },
            ..route("default", WEB, API, 52)
        },
    ]
}

fn sample_authorizations() -> Vec<Authorization> {
    vec![
        Authorization {
            service: API,
            rules: vec![AuthzRule {
                action: Action::Allow,
                from: vec![Principal::Service(WEB), Principal::Any],
                // Every method spelled out (the same as none), so the codec tests cover them.
                to: RequestMatch {
                    methods: Method::ALL.to_vec(),
                    ..RequestMatch::default()
                },
                loc: loc(1, 7, 3),
            }],
            default: Action::Deny,
            default_loc: loc(1, 6, 1),
            loc: loc(1, 6, 1),
        },
        Authorization {
            service: PAYMENTS,
            rules: vec![
                AuthzRule {
                    action: Action::Deny,
                    from: vec![Principal::Anyone],
                    to: RequestMatch {
                        path: Some(PathMatch::Prefix("/admin".to_owned())),
                        ..RequestMatch::default()
                    },
                    loc: loc(1, 71, 3),
                },
                AuthzRule {
                    action: Action::Allow,
                    from: vec![Principal::Service(CHECKOUT), Principal::Service(API)],
                    to: RequestMatch {
                        path: Some(PathMatch::Prefix("/v1".to_owned())),
                        methods: vec![Method::Post, Method::Get],
                        headers: vec![HeaderMatch {
                            name: "x-api-version".to_owned(),
                            value: HeaderValueMatch::Exact("2".to_owned()),
                        }],
                    },
                    loc: loc(1, 72, 3),
                },
            ],
            default: Action::Deny,
            default_loc: loc(1, 75, 3),
            loc: loc(1, 70, 1),
        },
    ]
}
