use super::*;
use crate::model::{
    AccessLog, AccessLogFormat, Authorization, Endpoints, HeaderEdit, HeaderMatch,
    HeaderValueMatch, PathMatch, Ppm, Principal, RetryOn, StatusMatch, WeightedTarget,
};
use crate::testing::{loc, minimal_table, sample_table, API, CART, PAYMENTS};

/// Validates the sample table after `mutate`, expecting an error; returns its message.
fn error_after(mutate: impl FnOnce(&mut Table)) -> String {
    let mut table = sample_table();
    mutate(&mut table);
    validate(&table)
        .expect_err("the mutation should make the table invalid")
        .to_string()
}

/// Asserts that `mutate` makes the sample invalid with a message containing every `needle`.
#[track_caller]
fn assert_invalid(mutate: impl FnOnce(&mut Table), needles: &[&str]) {
    let message = error_after(mutate);
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} does not mention {needle:?}"
        );
    }
}

/// Asserts that `mutate` keeps the sample valid.
#[track_caller]
fn assert_valid(mutate: impl FnOnce(&mut Table)) {
    let mut table = sample_table();
    mutate(&mut table);
    if let Err(err) = validate(&table) {
        panic!("unexpected validation error: {err}");
    }
}

#[test]
fn samples_are_valid() {
    assert_eq!(validate(&sample_table()), Ok(()));
    assert_eq!(validate(&minimal_table()), Ok(()));
}

#[test]
fn error_exposes_place_and_problem() {
    let mut table = sample_table();
    table.routes[2].targets[0].service = 17;
    let err = validate(&table).expect_err("out of range");
    assert_eq!(err.place(), "route #2 (`charge`)");
    assert_eq!(
        err.problem(),
        "target #0: service index 17 out of range (table has 6 services)"
    );
    assert_eq!(
        err.to_string(),
        "route #2 (`charge`): target #0: service index 17 out of range (table has 6 services)"
    );
}

#[test]
fn route_service_indices() {
    assert_invalid(
        |t| t.routes[1].service = 6,
        &[
            "route #1 (`checkout`)",
            "service index 6 out of range",
            "6 services",
        ],
    );
    assert_invalid(
        |t| t.routes[0].targets[0].service = u32::MAX,
        &[
            "route #0 (`cart`)",
            "target #0",
            "index 4294967295 out of range",
        ],
    );
}

#[test]
fn authorization_and_observe_service_indices() {
    assert_invalid(
        |t| t.authorizations[1].service = 40,
        &["authorization #1", "service index 40 out of range"],
    );
    assert_invalid(
        |t| t.authorizations[1].rules[1].from[1] = Principal::Service(9),
        &[
            "authorization #1 (service `payments`)",
            "rule #1: principal #1: service index 9",
        ],
    );
    assert_invalid(
        |t| t.observes[0].service = 6,
        &["observe #0", "service index 6 out of range"],
    );
}

#[test]
fn filter_indices() {
    assert_invalid(
        |t| t.services[3].filters.push(2),
        &[
            "service #3 (`payments`)",
            "filter #1: filter index 2 out of range (table has 2 filters)",
        ],
    );
    assert_invalid(
        |t| {
            t.filters.pop();
            t.routes[1].filters = vec![0, 1];
            t.services[0].filters = vec![0];
            t.services[3].filters.clear();
        },
        &[
            "route #1 (`checkout`)",
            "filter #1: filter index 1 out of range (table has 1 filter)",
        ],
    );
}

#[test]
fn file_indices_in_every_loc() {
    let bad = loc(3, 1, 1);
    type Mutation = Box<dyn FnOnce(&mut Table)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(move |t| t.mesh.loc = bad), "mesh"),
        (
            Box::new(move |t| t.services[2].loc = bad),
            "service #2 (`checkout`)",
        ),
        (
            Box::new(move |t| t.routes[4].loc = bad),
            "route #4 (`default`)",
        ),
        (
            Box::new(move |t| t.authorizations[0].loc = bad),
            "authorization #0 (service `api`)",
        ),
        (
            Box::new(move |t| t.authorizations[1].default_loc = bad),
            "default: source location",
        ),
        (
            Box::new(move |t| t.authorizations[1].rules[0].loc = bad),
            "rule #0: source location",
        ),
        (
            Box::new(move |t| t.observes[0].loc = bad),
            "observe #0 (service `payments`)",
        ),
        (
            Box::new(move |t| t.filters[1].loc = bad),
            "filter #1 (`rate-limit`)",
        ),
    ];
    for (mutate, place) in cases {
        assert_invalid(
            mutate,
            &[
                place,
                "source file index 3 out of range (table has 3 files)",
            ],
        );
    }
}

#[test]
fn loc_lines_and_columns_are_one_based() {
    assert_invalid(
        |t| t.routes[0].loc = loc(1, 0, 3),
        &["route #0 (`cart`)", "line is 0"],
    );
    assert_invalid(
        |t| t.filters[0].loc = loc(2, 4, 0),
        &["filter #0 (`auth-jwt`)", "column is 0"],
    );
}

#[test]
fn services_sorted_and_unique() {
    assert_invalid(
        |t| t.services.swap(1, 2),
        &[
            "service #2 (`cart`)",
            "services are not sorted by name",
            "`checkout`",
        ],
    );
    assert_invalid(
        |t| t.services[2].name = "cart".to_owned(),
        &["service #2 (`cart`)", "duplicate service name `cart`"],
    );
}

#[test]
fn filters_sorted_and_unique() {
    assert_invalid(
        |t| t.filters.swap(0, 1),
        &["filter #1 (`auth-jwt`)", "filters are not sorted by name"],
    );
    assert_invalid(
        |t| t.filters[1].name = "auth-jwt".to_owned(),
        &["duplicate filter name `auth-jwt`"],
    );
}

#[test]
fn route_names_unique_per_service() {
    assert_invalid(
        |t| t.routes[3].name = "charge".to_owned(),
        &[
            "route #3 (`charge`)",
            "service `payments` has two routes named `charge`",
        ],
    );
    // The same name under another service is fine.
    assert_valid(|t| t.routes[4].name = "cart".to_owned());
}

#[test]
fn routes_grouped_by_service_and_sorted_by_name() {
    assert_invalid(
        |t| t.routes.swap(2, 3),
        &[
            "route #3 (`charge`)",
            "routes of service `payments` are not sorted by name: `charge` comes after `refund`",
        ],
    );
    assert_invalid(
        |t| t.routes.swap(1, 2),
        &[
            "route #2 (`checkout`)",
            "routes are not grouped by service: a route of service `api` comes after one of \
             service `payments`",
        ],
    );
}

#[test]
fn per_service_blocks_sorted_by_service() {
    assert_invalid(
        |t| t.authorizations.swap(0, 1),
        &[
            "authorization #1 (service `api`)",
            "authorizations are not sorted by service: service `api` comes after service `payments`",
        ],
    );
}

#[test]
fn names_are_dns_labels() {
    assert_invalid(
        |t| t.services[0].name = "Api".to_owned(),
        &[
            "service #0 (`Api`)",
            "does not start with a lower-case letter",
        ],
    );
    assert_invalid(
        |t| t.routes[0].name = "cart_v2".to_owned(),
        &["route #0 (`cart_v2`)", "not a DNS label", "'_'"],
    );
    assert_invalid(
        |t| t.filters[0].name = "a".repeat(64),
        &["filter #0", "64 bytes long, more than a DNS label's 63"],
    );
    assert_invalid(|t| t.routes[0].name = "9lives".to_owned(), &["`9lives`"]);
    assert_valid(|t| {
        t.routes[0].name = format!("a{}", "-9".repeat(31));
    });
}

#[test]
fn split_weights() {
    assert_invalid(
        |t| t.routes[2].targets[1].weight = Ppm(99_999),
        &[
            "route #2 (`charge`)",
            "weights sum to 999999 ppm, not 100% (1000000 ppm)",
        ],
    );
    assert_invalid(
        |t| t.routes[2].targets.clear(),
        &["route #2 (`charge`): no targets"],
    );
    assert_invalid(
        |t| {
            t.routes[0].targets = vec![
                WeightedTarget {
                    service: CART,
                    weight: Ppm(2_000_000),
                },
                WeightedTarget {
                    service: API,
                    weight: Ppm(0),
                },
            ];
        },
        &["target #0: weight is 2000000 ppm, more than 100%"],
    );
    // Weights that would overflow a u32 sum are still rejected, not wrapped.
    assert_invalid(
        |t| {
            t.routes[0].targets = vec![
                WeightedTarget {
                    service: CART,
                    weight: Ppm::FULL
                };
                5000
            ];
        },
        &["sum to 5000000000 ppm"],
    );
    // A zero-weight target is allowed (a canary at 0%).
    assert_valid(|t| {
        t.routes[2].targets[0].weight = Ppm::FULL;
        t.routes[2].targets[1].weight = Ppm(0);
    });
}

#[test]
fn ppm_values_at_most_full() {
    let over = Ppm(1_000_001);
    assert_invalid(
        |t| t.services[3].outlier.as_mut().expect("sample").max_ejected = over,
        &[
            "service #3 (`payments`)",
            "outlier detection: max ejected is 1000001 ppm",
        ],
    );
    assert_invalid(
        |t| t.routes[0].retry.as_mut().expect("sample").budget = over,
        &["route #0 (`cart`)", "retry: budget is 1000001 ppm"],
    );
    assert_invalid(
        |t| {
            t.observes[0].access_log = Some(AccessLog {
                format: AccessLogFormat::Json,
                sample: over,
            });
        },
        &["observe #0", "access log: sample is 1000001 ppm"],
    );
    assert_invalid(
        |t| t.observes[0].trace_sample = Some(over),
        &["observe #0", "trace sample is 1000001 ppm"],
    );
    assert_valid(|t| t.observes[0].trace_sample = Some(Ppm::FULL));
}

#[test]
fn paths_start_with_slash() {
    assert_invalid(
        |t| t.routes[0].matcher.path = Some(PathMatch::Prefix("cart".to_owned())),
        &[
            "route #0 (`cart`)",
            "match: path: path `cart` does not start with '/'",
        ],
    );
    assert_invalid(
        |t| t.authorizations[1].rules[0].to.path = Some(PathMatch::Exact("/a b".to_owned())),
        &["rule #0: match: path", "contains a space"],
    );
    assert_invalid(
        |t| t.services[0].health.as_mut().expect("sample").path = "healthz".to_owned(),
        &["service #0 (`api`)", "health check: path `healthz`"],
    );
}

#[test]
fn regexes_compile() {
    assert_invalid(
        |t| t.routes[1].matcher.path = Some(PathMatch::Regex("/checkout/(".to_owned())),
        &[
            "route #1 (`checkout`)",
            "match: path: regex `/checkout/(` does not compile",
            "unclosed group",
        ],
    );
    assert_invalid(
        |t| {
            t.routes[3].matcher.headers[1].value = HeaderValueMatch::Regex("[z-a]".to_owned());
        },
        &[
            "route #3 (`refund`)",
            "header #1: regex `[z-a]` does not compile",
        ],
    );
    assert_invalid(
        |t| t.routes[1].matcher.path = Some(PathMatch::Regex("a".repeat(1025))),
        &["regex is 1025 characters long, more than 1024"],
    );
    // The limit counts characters, as the compiler does.
    assert_valid(|t| t.routes[1].matcher.path = Some(PathMatch::Regex("é".repeat(1024))));
    assert_invalid(
        |t| t.routes[1].matcher.path = Some(PathMatch::Regex(r"\w{500}\w{500}".to_owned())),
        &["compiles to more than 262144 bytes"],
    );
    // Anchoring must not turn a broken pattern into a valid one: `^(?:a)|(b)$`.
    assert_invalid(
        |t| t.routes[1].matcher.path = Some(PathMatch::Regex("/a)|(/b".to_owned())),
        &["regex `/a)|(/b` does not compile: unopened group"],
    );
}

#[test]
fn header_names_are_lower_case_tokens() {
    let with_header = |name: &str| {
        let name = name.to_owned();
        move |t: &mut Table| {
            t.routes[1].matcher.headers[0].name = name;
        }
    };
    assert_invalid(
        with_header("X-User-Tier"),
        &[
            "route #1 (`checkout`)",
            "header #0: header name `X-User-Tier` is not lower case",
        ],
    );
    assert_invalid(with_header(""), &["header #0: empty header name"]);
    assert_invalid(
        with_header("x user"),
        &["header name `x user` is not an HTTP token: a space is not allowed"],
    );
    assert_invalid(with_header(":authority"), &["':' is not allowed"]);
    assert_invalid(with_header("x-é"), &["'é' is not allowed"]);
    assert_valid(with_header("x-!#$%&'*+-.^_`|~09az"));
    assert_invalid(
        |t| t.routes[0].response_headers = vec![HeaderEdit::Remove("Server".to_owned())],
        &["response headers: edit #0: header name `Server` is not lower case"],
    );
    assert_invalid(
        |t| {
            t.services[1].balance = crate::model::Balance::RingHash {
                header: "X-User".to_owned(),
            };
        },
        &["service #1 (`cart`)", "ring hash: header name `X-User`"],
    );
}

#[test]
fn header_values_have_no_cr_lf_nul() {
    assert_invalid(
        |t| {
            t.routes[0].request_headers = vec![HeaderEdit::Set(
                "x-a".to_owned(),
                "1\r\nx-evil: 1".to_owned(),
            )];
        },
        &[
            "request headers: edit #0",
            "contains CR (U+000D)",
            "`1\\r\\nx-evil: 1`",
        ],
    );
    assert_invalid(
        |t| {
            t.routes[2].request_headers =
                vec![HeaderEdit::Add("x-a".to_owned(), "a\nb".to_owned())];
        },
        &["contains LF"],
    );
    assert_invalid(
        |t| {
            t.authorizations[1].rules[1].to.headers = vec![HeaderMatch {
                name: "x-a".to_owned(),
                value: HeaderValueMatch::Prefix("a\0".to_owned()),
            }];
        },
        &["rule #1: match: header #0", "contains NUL"],
    );
    assert_valid(|t| {
        t.routes[0].request_headers = vec![HeaderEdit::Set("x-a".to_owned(), "a\tb c".to_owned())];
    });
}

#[test]
fn static_endpoints() {
    let with_addr = |addr: &str| {
        let addr = addr.to_owned();
        move |t: &mut Table| t.services[0].endpoints = Endpoints::Static(vec![addr])
    };
    assert_invalid(
        with_addr("10.0.0.1"),
        &["service #0 (`api`)", "endpoints: address #0", "has no port"],
    );
    assert_invalid(with_addr(":8080"), &["empty host"]);
    assert_invalid(with_addr("h:0"), &["port is 0"]);
    assert_invalid(
        with_addr("h:65536"),
        &["port `65536` is not a number in 1..=65535"],
    );
    assert_invalid(with_addr("h:+80"), &["port `+80`"]);
    assert_invalid(with_addr("h:"), &["port ``"]);
    assert_invalid(with_addr("::1:80"), &["must be bracketed"]);
    assert_invalid(with_addr("[::1]"), &["is not `[ipv6]:port`"]);
    assert_invalid(with_addr("[zz::1]:80"), &["`zz::1` is not an IPv6 address"]);
    assert_invalid(with_addr("bad host:80"), &["contains a space"]);
    assert_valid(with_addr("[::1]:80"));
    assert_valid(with_addr("api-0.api.default.svc.cluster.local:65535"));
    assert_valid(|t| t.services[0].endpoints = Endpoints::Static(vec![]));
}

#[test]
fn dns_endpoints() {
    assert_invalid(
        |t| {
            t.services[3].endpoints = Endpoints::Dns {
                host: String::new(),
                port: 80,
            }
        },
        &["service #3 (`payments`)", "dns host: empty host"],
    );
    assert_invalid(
        |t| {
            t.services[3].endpoints = Endpoints::Dns {
                host: "p.internal".to_owned(),
                port: 0,
            }
        },
        &["dns port is 0"],
    );
    assert_invalid(
        |t| t.services[4].port = 0,
        &["service #4 (`payments-canary`): port is 0"],
    );
}

#[test]
fn retry_policies() {
    assert_invalid(
        |t| t.routes[0].retry.as_mut().expect("sample").attempts = 0,
        &["route #0 (`cart`): retry: attempts must be greater than 0"],
    );
    assert_invalid(
        |t| {
            let retry = t.routes[2].retry.as_mut().expect("sample");
            retry.backoff_base_ms = 101;
        },
        &["backoff base 101 ms is above backoff max 100 ms"],
    );
    assert_invalid(
        |t| {
            let retry = t.routes[2].retry.as_mut().expect("sample");
            retry.on.push(RetryOn::Status(StatusMatch::Code(600)));
        },
        &["condition #4: status code 600"],
    );
    assert_invalid(
        |t| t.routes[2].retry.as_mut().expect("sample").on = vec![RetryOn::Grpc(17)],
        &["gRPC status 17"],
    );
    assert_invalid(
        |t| t.routes[0].timeout_ms = Some(0),
        &["route #0 (`cart`): timeout must be greater than 0"],
    );
}

#[test]
fn health_checks() {
    assert_invalid(
        |t| t.services[3].health.as_mut().expect("sample").interval_ms = 0,
        &["service #3 (`payments`): health check: interval must be greater than 0"],
    );
    assert_invalid(
        |t| t.services[3].health.as_mut().expect("sample").timeout_ms = 0,
        &["health check: timeout must be greater than 0"],
    );
    assert_invalid(
        |t| t.services[0].health.as_mut().expect("sample").healthy_after = 0,
        &["healthy threshold must be greater than 0"],
    );
}

#[test]
fn latency_buckets_strictly_ascending() {
    assert_invalid(
        |t| t.observes[0].latency_buckets_ms = vec![5, 10, 10, 20],
        &[
            "observe #0 (service `payments`)",
            "bucket #2 is 10 ms after 10 ms",
        ],
    );
    assert_invalid(
        |t| t.observes[0].latency_buckets_ms = vec![50, 10],
        &["not strictly ascending"],
    );
    assert_valid(|t| t.observes[0].latency_buckets_ms.clear());
}

#[test]
fn one_authorization_and_observe_per_service() {
    assert_invalid(
        |t| {
            let again = Authorization {
                loc: loc(1, 90, 1),
                ..t.authorizations[1].clone()
            };
            t.authorizations.push(again);
        },
        &[
            "authorization #2 (service `payments`)",
            "second authorization for this service",
        ],
    );
    assert_invalid(
        |t| {
            let mut again = t.observes[0].clone();
            again.loc = loc(1, 99, 1);
            t.observes.push(again);
        },
        &["observe #1 (service `payments`): second observe block"],
    );
    assert_valid(|t| {
        let mut other = t.observes[0].clone();
        other.service = PAYMENTS + 1;
        t.observes.push(other);
    });
}

#[test]
fn filters() {
    assert_invalid(
        |t| t.filters[0].config_json = "{\"a\":".to_owned(),
        &[
            "filter #0 (`auth-jwt`): config: not valid JSON",
            "line 1 column 5",
        ],
    );
    assert_invalid(
        |t| t.filters[1].config_json = "[1, 2]".to_owned(),
        &["filter #1 (`rate-limit`): config: not a JSON object but an array"],
    );
    assert_invalid(
        |t| t.filters[1].memory_bytes = 0,
        &["memory limit must be greater than 0"],
    );
    assert_invalid(
        |t| t.filters[1].time_limit_ms = 0,
        &["time limit must be greater than 0"],
    );
    assert_invalid(
        |t| t.filters[0].module = "evil\u{7}.wasm".to_owned(),
        &["module: file name `evil\\u{7}.wasm` contains U+0007"],
    );
}

#[test]
fn files_and_trust_domain() {
    assert_invalid(
        |t| t.files[1] = String::new(),
        &["file #1: empty file name"],
    );
    assert_invalid(
        |t| t.files[0] = "a\nb".to_owned(),
        &["file #0: file name `a\\nb` contains LF"],
    );
    assert_invalid(|t| t.mesh.name = String::new(), &["mesh: name: empty name"]);
    assert_invalid(
        |t| t.mesh.name = "shop\u{1b}[2J".to_owned(),
        &["mesh: name: name `shop\\u{1b}[2J` contains U+001B"],
    );
    // The mesh name is a free-form string, not a DNS label.
    assert_valid(|t| t.mesh.name = "Shop (prod) – EU".to_owned());
    assert_invalid(
        |t| t.mesh.trust_domain = "Shop.example".to_owned(),
        &["mesh: trust domain: `Shop.example`: 'S' is not allowed"],
    );
}

#[test]
fn long_names_are_cut_in_messages() {
    let message = error_after(|t| t.services[0].name = "x".repeat(10_000));
    assert!(message.len() < 400, "{message}");
    assert!(message.contains('…'), "{message}");
}

#[test]
fn stream_timeouts_and_limits() {
    assert_invalid(
        |t| t.routes[0].idle_timeout_ms = Some(0),
        &["route #0 (`cart`): idle timeout must be greater than 0"],
    );
    assert_invalid(
        |t| t.routes[0].stream_timeout_ms = Some(0),
        &["route #0 (`cart`): stream timeout must be greater than 0"],
    );
    assert_invalid(
        |t| t.services[0].limits.max_requests = 0,
        &["limits", "max requests must be greater than 0"],
    );
    assert_valid(|t| t.services[0].limits.max_pending = 0);
}
