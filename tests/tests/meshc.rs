//! `meshc` as an operator runs it: check and compile every example, identical tables from
//! identical input, inspect, and fmt on the examples.

use mesh_tests::{example_policies, meshc, module_dir};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_example_checks_and_compiles_and_inspects() {
    let modules = module_dir();
    let out = tempfile::tempdir().expect("tempdir");
    let policies = example_policies();
    assert!(policies.len() >= 3, "{policies:?}");
    for policy in policies {
        let policy = policy.to_str().expect("utf-8 path");
        let module_path = modules.path().to_str().expect("utf-8 path");
        let check = meshc(
            out.path(),
            &[
                "check",
                "--deny-warnings",
                "--module-path",
                module_path,
                policy,
            ],
        );
        assert!(
            check.status.success(),
            "check {policy}: {}",
            text(&check.stderr)
        );

        let table = out.path().join("t.table");
        let table = table.to_str().expect("utf-8 path");
        let compile = meshc(
            out.path(),
            &["compile", "--module-path", module_path, policy, "-o", table],
        );
        assert!(
            compile.status.success(),
            "compile {policy}: {}",
            text(&compile.stderr)
        );
        let inspect = meshc(out.path(), &["inspect", table]);
        assert!(
            inspect.status.success(),
            "inspect {policy}: {}",
            text(&inspect.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&inspect.stdout).expect("inspect prints JSON");
        assert!(
            json["services"].as_array().is_some_and(|s| !s.is_empty()),
            "{policy}: {json}"
        );
    }
}

#[test]
fn two_compiles_of_the_same_policy_are_byte_identical() {
    let modules = module_dir();
    let out = tempfile::tempdir().expect("tempdir");
    let module_path = modules.path().to_str().expect("utf-8 path");
    let shop = example_policies()
        .into_iter()
        .find(|p| p.ends_with("shop.mesh"))
        .expect("shop.mesh");
    let shop = shop.to_str().expect("utf-8 path");
    for name in ["a.table", "b.table"] {
        let compile = meshc(
            out.path(),
            &["compile", "--module-path", module_path, shop, "-o", name],
        );
        assert!(compile.status.success(), "{}", text(&compile.stderr));
    }
    let a = std::fs::read(out.path().join("a.table")).expect("a");
    let b = std::fs::read(out.path().join("b.table")).expect("b");
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn our_own_example_policies_are_formatted() {
    for policy in example_policies() {
        let name = policy.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The example policies are kept as the language reference first wrote them (they align columns by hand).
        if name == "hello.mesh" || name == "shop.mesh" {
            continue;
        }
        let policy = policy.to_str().expect("utf-8 path");
        let fmt = meshc(&mesh_tests::workspace_root(), &["fmt", "--check", policy]);
        assert!(
            fmt.status.success(),
            "{policy} is not formatted: {}{}",
            text(&fmt.stdout),
            text(&fmt.stderr)
        );
    }
}

#[test]
fn a_broken_policy_fails_with_its_diagnostics_and_writes_no_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.mesh"),
        "mesh \"m\" { trust_domain \"m.local\" }\nservice a { port 80 }\nroute r on b { timeout 3 }\n",
    )
    .expect("write");
    let out = meshc(dir.path(), &["compile", "p.mesh", "-o", "p.table"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("mesh::unknown-service"), "{stderr}");
    assert!(stderr.contains("mesh::type-mismatch"), "{stderr}");
    assert!(!dir.path().join("p.table").exists());
}

/// The table with every source location removed: what a policy means, not where it was written.
fn meaning(table_json: &serde_json::Value) -> serde_json::Value {
    match table_json {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "loc" | "default_loc" | "files"))
            .map(|(k, v)| (k.clone(), meaning(v)))
            .collect(),
        serde_json::Value::Array(items) => items.iter().map(meaning).collect(),
        other => other.clone(),
    }
}

#[test]
fn formatting_a_policy_does_not_change_what_it_compiles_to() {
    let modules = module_dir();
    let module_path = modules.path().to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    for policy in example_policies().into_iter().filter(|p| p.is_file()) {
        let name = policy
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        let copy = dir.path().join(&name);
        std::fs::copy(&policy, &copy).expect("copy");
        let compile_and_inspect = |out: &str| {
            let compile = meshc(
                dir.path(),
                &["compile", "--module-path", module_path, &name, "-o", out],
            );
            assert!(compile.status.success(), "{}", text(&compile.stderr));
            let inspect = meshc(dir.path(), &["inspect", out]);
            serde_json::from_slice::<serde_json::Value>(&inspect.stdout).expect("json")
        };
        let before = compile_and_inspect("before.table");
        let fmt = meshc(dir.path(), &["fmt", &name]);
        assert!(fmt.status.success(), "{}", text(&fmt.stderr));
        assert_ne!(
            std::fs::read(&copy).expect("read"),
            std::fs::read(&policy).expect("read"),
            "{name}: fmt changed nothing"
        );
        let after = compile_and_inspect("after.table");
        assert_eq!(meaning(&before), meaning(&after), "{name}");
    }
}

/// The examples' `ratelimit.wasm` and `audit.wasm` are the real example filters: their
/// configs in the policies pass the schemas the modules declare.
#[test]
fn every_example_checks_against_the_real_example_filters() {
    let modules = mesh_tests::filters::wasm_dir();
    // Build them (once per process) before pointing meshc at the directory.
    mesh_tests::filters::wasm("ratelimit");
    let out = tempfile::tempdir().expect("tempdir");
    let module_path = modules.to_str().expect("utf-8 path");
    for policy in example_policies() {
        let policy = policy.to_str().expect("utf-8 path");
        let check = meshc(
            out.path(),
            &[
                "check",
                "--deny-warnings",
                "--module-path",
                module_path,
                policy,
            ],
        );
        assert!(
            check.status.success(),
            "check {policy} with the real filters: {}",
            text(&check.stderr)
        );
    }
    // And a config the schema refuses is caught, naming the filter.
    let bad = out.path().join("bad.mesh");
    std::fs::write(
        &bad,
        "mesh \"m\" { trust_domain \"m.local\" }\n\
         service api { port 8000 filters [limit] }\n\
         filter limit { module \"ratelimit.wasm\" config { requests_per_second: 10, burst: \"lots\" } }\n",
    )
    .expect("write");
    let check = meshc(
        out.path(),
        &[
            "check",
            "--module-path",
            module_path,
            bad.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    assert!(
        text(&check.stderr).contains("mesh::filter-config"),
        "{}",
        text(&check.stderr)
    );
}
