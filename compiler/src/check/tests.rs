//! Checker tests on whole policies: the example policies compile; elaboration gives the table.

use std::path::PathBuf;

use mesh_table::{Action, Balance, Endpoints, Method, PathMatch, Ppm, Principal, RetryOn};

use super::{check, CheckOptions, Checked};
use crate::source::SourceFile;

/// The smallest valid WebAssembly module: the header alone.
pub(crate) const EMPTY_WASM: &[u8] = b"\0asm\x01\0\0\0";

fn module_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["ratelimit.wasm", "audit.wasm"] {
        std::fs::write(dir.path().join(name), EMPTY_WASM).expect("write module");
    }
    dir
}

fn example_policy(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/../examples/policies/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn check_files(paths: &[PathBuf], module_path: &std::path::Path) -> Checked {
    let files = crate::load::load(paths).expect("load");
    check(
        &files,
        &CheckOptions {
            module_paths: vec![module_path.to_path_buf()],
        },
    )
}

#[test]
fn the_example_policies_check_without_diagnostics() {
    let modules = module_dir();
    for name in ["hello.mesh", "shop.mesh"] {
        let checked = check_files(&[example_policy(name)], modules.path());
        assert!(
            checked.diagnostics.is_empty(),
            "{name}: {:#?}",
            checked.diagnostics
        );
        assert!(checked.table.is_some(), "{name}");
    }
}

#[test]
fn shop_elaborates_into_the_expected_table() {
    let modules = module_dir();
    let checked = check_files(&[example_policy("shop.mesh")], modules.path());
    let table = checked.table.expect("table");
    assert_eq!(table.mesh.trust_domain, "shop.example");
    let names: Vec<&str> = table.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "frontend",
            "inventory",
            "ops",
            "payments",
            "payments-canary"
        ]
    );
    let payments = table.service_id("payments").expect("payments");
    let canary = table.service_id("payments-canary").expect("canary");
    let inventory = &table.services[table.service_id("inventory").expect("inventory") as usize];
    assert_eq!(
        inventory.balance,
        Balance::RingHash {
            header: "x-user".into()
        }
    );
    assert_eq!(inventory.endpoints, Endpoints::Registry);
    let charge = table
        .routes
        .iter()
        .find(|r| r.name == "charge")
        .expect("charge");
    assert_eq!(charge.service, payments);
    assert_eq!(
        charge.matcher.path,
        Some(PathMatch::Prefix("/v1/charge".into()))
    );
    assert_eq!(charge.matcher.methods, [Method::Post]);
    assert_eq!(charge.targets.len(), 2);
    assert_eq!(charge.targets[1].service, canary);
    assert_eq!(charge.targets[1].weight, Ppm(100_000));
    assert_eq!(charge.timeout_ms, Some(2_000));
    let retry = charge.retry.as_ref().expect("retry");
    assert_eq!(
        (
            retry.attempts,
            retry.per_try_timeout_ms,
            retry.backoff_base_ms,
            retry.backoff_max_ms
        ),
        (2, Some(500), 25, 250)
    );
    assert_eq!(retry.on, [RetryOn::ConnectFailure]);
    assert_eq!((charge.loc.line, charge.loc.column), (51, 7));
    let stock = table
        .routes
        .iter()
        .find(|r| r.name == "stock")
        .expect("stock");
    assert_eq!(
        stock.retry.as_ref().map(|r| r.on.clone()),
        Some(vec![RetryOn::Grpc(14)])
    );
    let authz = table
        .authorizations
        .iter()
        .find(|a| a.service == payments)
        .expect("authz");
    assert_eq!(authz.rules.len(), 4);
    assert_eq!(authz.rules[0].action, Action::Deny);
    assert_eq!(authz.rules[0].from, [Principal::Any]);
    assert_eq!(authz.rules[3].to.headers.len(), 1);
    let ratelimit = &table.filters[1];
    assert_eq!(ratelimit.name, "ratelimit");
    assert_eq!(
        ratelimit.config_json,
        r#"{"burst":20,"requests_per_second":100}"#
    );
    assert_eq!(ratelimit.memory_bytes, 16 << 20);
    assert_eq!(
        table.observes[0].latency_buckets_ms,
        [5, 10, 25, 50, 100, 250, 500, 1000]
    );
    mesh_table::validate(&table).expect("the compiler's table passes the decoder's validation");
}

#[test]
fn a_directory_is_one_namespace_across_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.mesh"),
        "mesh \"m\" { trust_domain \"m.local\" }\nroute r on b { to b }\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("b.mesh"), "service b { port 80 }\n").expect("write");
    let checked = check_files(&[dir.path().to_path_buf()], dir.path());
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    let table = checked.table.expect("table");
    assert_eq!(table.files, ["a.mesh", "b.mesh"]);
    assert_eq!(table.routes[0].loc.file, 0);
    assert_eq!(table.services[0].loc.file, 1);
}

#[test]
fn several_errors_are_reported_together() {
    let file = SourceFile::new(
        "p.mesh",
        "mesh \"m\" { trust_domain \"m.local\" }\nservice a { port 3s }\nroute r on b { timeout 3 }\n",
    );
    let checked = check(&[file], &CheckOptions::default());
    let codes: Vec<&str> = checked
        .diagnostics
        .iter()
        .map(|d| d.code.as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "mesh::type-mismatch",
            "mesh::unknown-service",
            "mesh::type-mismatch"
        ]
    );
    assert!(checked.table.is_none());
}

fn check_text(text: &str) -> Checked {
    check(&[SourceFile::new("p.mesh", text)], &CheckOptions::default())
}

fn codes_of(checked: &Checked) -> Vec<&str> {
    checked
        .diagnostics
        .iter()
        .map(|d| d.code.as_str())
        .collect()
}

const STREAMS_MESH: &str = "mesh \"m\" { trust_domain \"m.local\" }\nservice a { port 80 }\n";

#[test]
fn idle_and_stream_timeouts_reach_the_route() {
    let checked = check_text(&format!(
        "{STREAMS_MESH}route r on a {{ timeout 2s idle_timeout 1500ms stream_timeout 1m }}\nroute d on a {{ match {{ path prefix \"/d\" }} }}\n"
    ));
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    let table = checked.table.expect("table");
    let r = table.routes.iter().find(|r| r.name == "r").expect("r");
    assert_eq!(r.idle_timeout_ms, Some(1_500));
    assert_eq!(r.stream_timeout_ms, Some(60_000));
    // Omitted: the proxy's defaults (5 minutes idle, no stream bound).
    let d = table.routes.iter().find(|r| r.name == "d").expect("d");
    assert_eq!((d.idle_timeout_ms, d.stream_timeout_ms), (None, None));
}

#[test]
fn bad_idle_and_stream_timeouts_are_reported() {
    let checked = check_text(&format!(
        "{STREAMS_MESH}route r on a {{ idle_timeout 5 }}\nroute s on a {{ match {{ path prefix \"/s\" }} idle_timeout 0s stream_timeout \"5s\" }}\nroute t on a {{ match {{ path prefix \"/t\" }} timeout 2s stream_timeout 1s }}\nroute u on a {{ match {{ path prefix \"/u\" }} idle_timeout 1s idle_timeout 2s }}\nservice b {{ port 81 idle_timeout 1s }}\n"
    ));
    assert_eq!(
        codes_of(&checked),
        [
            "mesh::type-mismatch",
            "mesh::out-of-range",
            "mesh::type-mismatch",
            "mesh::out-of-range",
            "mesh::duplicate-field",
            "mesh::unknown-field",
        ],
        "{:#?}",
        checked.diagnostics
    );
    assert!(checked.table.is_none());
}

#[test]
fn service_limits_reach_the_table_with_envoy_defaults() {
    let checked = check_text(
        "mesh \"m\" { trust_domain \"m.local\" }\nservice a { port 80 limits { max_requests 100 max_pending 0 } }\nservice b { port 81 limits { max_requests 7 } }\nservice c { port 82 }\n",
    );
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    let table = checked.table.expect("table");
    let limits: Vec<(u32, u32)> = table
        .services
        .iter()
        .map(|s| (s.limits.max_requests, s.limits.max_pending))
        .collect();
    assert_eq!(limits, [(100, 0), (7, 1024), (1024, 1024)]);
}

#[test]
fn bad_service_limits_are_reported() {
    let checked = check_text(
        "mesh \"m\" { trust_domain \"m.local\" }\nservice a { port 80 limits { max_requests 0 max_pending 3s } }\nservice b { port 81 limits { max_request 5 } }\nroute r on a { limits { max_requests 1 } }\n",
    );
    assert_eq!(
        codes_of(&checked),
        [
            "mesh::out-of-range",
            "mesh::type-mismatch",
            "mesh::unknown-field",
            "mesh::unknown-field",
        ],
        "{:#?}",
        checked.diagnostics
    );
    let help = checked.diagnostics[2].help.as_deref().unwrap_or_default();
    assert!(help.contains("max_requests"), "{help}");
}
