//! End-to-end tests of `meshc test`: the example test files pass, failures are explained,
//! bad test files exit 2 with their file and line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tempfile::TempDir;

mod support;
use support::{meshc, modules, root, status, stderr, stdout};

/// Runs `meshc test` on the shop policy with its modules, and `tests` (a path).
fn shop(tests: &Path, extra: &[&str]) -> Output {
    let modules = modules();
    let dir = modules.path().to_str().expect("utf-8 path");
    let tests = tests.to_str().expect("utf-8 path");
    let mut args = vec![
        "test",
        "examples/policies/shop.mesh",
        tests,
        "--module-path",
        dir,
    ];
    args.extend_from_slice(extra);
    meshc(&args)
}

fn write_tests(dir: &TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("cases.test.toml");
    fs::write(&path, text).expect("write tests");
    path
}

/// The closing line, `N passed, M failed`, alone on its line.
fn totals(output: &Output) -> (usize, usize) {
    let text = stdout(output);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let (passed, failed) = line
        .split_once(", ")
        .unwrap_or_else(|| panic!("no closing line: {text}"));
    let number = |s: &str, word: &str| -> usize {
        s.strip_suffix(word)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("bad closing line `{line}`"))
    };
    (number(passed, " passed"), number(failed, " failed"))
}

#[test]
fn the_example_test_files_pass() {
    let modules = modules();
    let dir = modules.path().to_str().expect("utf-8 path");
    let runs: [(&str, &str, &[&str]); 3] = [
        (
            "examples/policies/hello.mesh",
            "examples/policies/hello.test.toml",
            &[],
        ),
        (
            "examples/policies/shop.mesh",
            "examples/policies/shop.test.toml",
            &["--module-path", dir],
        ),
        (
            "examples/policies/bookinfo",
            "examples/policies/bookinfo.test.toml",
            &[],
        ),
    ];
    for (policy, tests, extra) in runs {
        let mut args = vec!["test", policy, tests];
        args.extend_from_slice(extra);
        let output = meshc(&args);
        assert_eq!(
            status(&output),
            0,
            "{tests}:\n{}\n{}",
            stdout(&output),
            stderr(&output)
        );
        let (passed, failed) = totals(&output);
        assert!(passed >= 8, "{tests}: only {passed} cases");
        assert_eq!(failed, 0);
        assert!(stdout(&output).contains(&format!("test result: ok. {passed} passed; 0 failed")));
    }
}

#[test]
fn every_example_policy_has_a_test_file() {
    let dir = root().join("examples/policies");
    for entry in fs::read_dir(&dir).expect("read examples") {
        let path = entry.expect("entry").path();
        let stem = match path.extension() {
            Some(ext) if ext == "mesh" => path.file_stem(),
            None if path.is_dir() => path.file_name(),
            _ => continue,
        };
        let stem = stem.and_then(|s| s.to_str()).expect("utf-8 name");
        assert!(
            dir.join(format!("{stem}.test.toml")).is_file(),
            "{} has no {stem}.test.toml",
            path.display()
        );
    }
}

#[test]
fn a_wrong_expectation_fails_with_the_deciding_rule_and_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tests = write_tests(
        &dir,
        r#"
[[case]]
name = "frontend reads the internal keys"
from = "frontend"
to = "payments"
path = "/v1/../internal/keys"
expect = { allow = true, rule = "shop.mesh:121" }

[[case]]
name = "frontend charges"
from = "frontend"
to = "payments"
method = "POST"
path = "/v1/charge"
expect.route = "charge"
"#,
    );
    let output = shop(&tests, &[]);
    let out = stdout(&output);
    assert_eq!(status(&output), 1, "{out}\n{}", stderr(&output));
    assert!(
        out.contains("test frontend reads the internal keys ... FAILED"),
        "{out}"
    );
    assert!(out.contains("test frontend charges ... ok"), "{out}");
    // The expectation, the decision, and what decided it, with its source.
    assert!(out.contains("expected allow"), "{out}");
    assert!(out.contains("decided deny at `payments`"), "{out}");
    assert!(out.contains("expected shop.mesh:121"), "{out}");
    assert!(out.contains("examples/policies/shop.mesh:120"), "{out}");
    assert!(
        out.contains(r#"deny  from any       to path prefix "/internal""#),
        "{out}"
    );
    assert!(out.contains("this rule decided: deny"), "{out}");
    assert!(out.contains("chosen route"), "{out}");
    assert!(
        out.contains("cases.test.toml:2"),
        "the case's own line: {out}"
    );
    assert!(
        out.contains("test result: FAILED. 1 passed; 1 failed"),
        "{out}"
    );
    assert_eq!(totals(&output), (1, 1));
}

#[test]
fn a_route_precedence_mistake_names_both_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tests = write_tests(
        &dir,
        r#"
[[case]]
name = "the canary header is ignored"
from = "frontend"
to = "payments"
method = "POST"
path = "/v1/charge"
headers = { x-canary = "1" }
expect = { route = "charge", targets = ["payments", "payments-canary"] }
"#,
    );
    let output = shop(&tests, &[]);
    let out = stdout(&output);
    assert_eq!(status(&output), 1, "{out}");
    assert!(out.contains("expected `charge`"), "{out}");
    assert!(out.contains("decided `canary-pin`"), "{out}");
    assert!(out.contains("route canary-pin on payments"), "{out}");
    assert!(out.contains("[`payments-canary`]"), "{out}");
}

#[test]
fn names_the_policy_lacks_fail_the_case_with_a_suggestion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tests = write_tests(
        &dir,
        "[[case]]\nname = \"typo\"\nfrom = \"frontnd\"\nto = \"payments\"\npath = \"/\"\n\n[[case]]\nname = \"route typo\"\nfrom = \"frontend\"\nto = \"payments\"\nmethod = \"POST\"\npath = \"/v1/charge\"\nexpect.route = \"chrage\"\n",
    );
    let output = shop(&tests, &[]);
    let out = stdout(&output);
    assert_eq!(status(&output), 1, "{out}");
    assert!(out.contains("did you mean `frontend`?"), "{out}");
    assert!(out.contains("cases.test.toml:3:8"), "{out}");
    assert!(out.contains("did you mean `charge`?"), "{out}");
    assert_eq!(totals(&output), (0, 2));
}

#[test]
fn bad_toml_exits_2_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tests = write_tests(&dir, "[[case]]\nto = \"payments\"\npath = \"/\n");
    let output = shop(&tests, &[]);
    assert_eq!(status(&output), 2);
    let err = stderr(&output);
    assert!(err.contains("cases.test.toml:3:"), "{err}");
    assert!(!stdout(&output).contains("test result"), "nothing ran");
}

#[test]
fn an_unknown_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tests = write_tests(
        &dir,
        "[[case]]\nto = \"payments\"\npath = \"/\"\nexpect.alow = true\n",
    );
    let output = shop(&tests, &[]);
    assert_eq!(status(&output), 2);
    let err = stderr(&output);
    assert!(err.contains("unknown field `alow`"), "{err}");
    assert!(err.contains("cases.test.toml:4:8"), "{err}");
    assert!(err.contains("expect.alow = true"), "{err}");
}

#[test]
fn invalid_expectations_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tests = write_tests(
        &dir,
        "[[case]]\nto = \"payments\"\npath = \"/\"\nexpect = { status = 200 }\n",
    );
    let output = shop(&tests, &[]);
    assert_eq!(status(&output), 2);
    assert!(stderr(&output).contains("400"), "{}", stderr(&output));
}

#[test]
fn an_unreadable_test_file_exits_2() {
    let output = meshc(&[
        "test",
        "examples/policies/hello.mesh",
        "no/such/file.test.toml",
    ]);
    assert_eq!(status(&output), 2);
    assert!(stderr(&output).contains("no/such/file.test.toml"));
}

#[test]
fn a_policy_with_errors_exits_1_with_its_diagnostics() {
    // Without --module-path the shop's filter modules are missing.
    let output = meshc(&[
        "test",
        "examples/policies/shop.mesh",
        "examples/policies/shop.test.toml",
    ]);
    assert_eq!(status(&output), 1);
    assert!(stderr(&output).contains("mesh::module-not-found"));
    assert!(!stdout(&output).contains("test result"));
}

#[test]
fn json_reports_every_case_and_each_split_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tests = write_tests(
        &dir,
        r#"
[[case]]
name = "ops charges"
from = "ops"
to = "payments"
method = "POST"
path = "/v1/charge"
expect = { allow = true }

[[case]]
name = "nothing here"
from = "frontend"
to = "inventory"
path = "/nowhere"
expect = { status = 404 }
"#,
    );
    let output = shop(&tests, &["--format", "json"]);
    assert_eq!(status(&output), 1);
    let cases: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let cases = cases.as_array().expect("an array");
    assert_eq!(cases.len(), 2);
    let split = &cases[0];
    assert_eq!(split["name"], "ops charges");
    assert_eq!(split["line"], 2);
    assert_eq!(split["passed"], false);
    assert_eq!(split["result"]["status"], 403);
    assert_eq!(split["result"]["decision"], "deny");
    assert_eq!(split["result"]["rule"], "default");
    assert_eq!(
        split["result"]["authorizations"],
        serde_json::json!([
            { "target": "payments", "decision": "deny", "rule": "default" },
            { "target": "payments-canary", "decision": "allow", "rule": "default" },
        ])
    );
    assert_eq!(split["failures"][0]["expectation"], "decision");
    assert_eq!(split["failures"][0]["expected"], "allow");
    let missing = &cases[1];
    assert_eq!(missing["passed"], true);
    assert_eq!(missing["result"]["status"], 404);
    assert_eq!(missing["result"]["decision"], Value::Null);
}

#[test]
fn a_directory_of_test_files_runs_them_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["a.toml", "b.toml"] {
        fs::write(
            dir.path().join(name),
            "[[case]]\nfrom = \"client\"\nto = \"greeter\"\npath = \"/hello\"\nexpect.allow = true\n",
        )
        .expect("write");
    }
    let output = meshc(&[
        "test",
        "examples/policies/hello.mesh",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(status(&output), 0, "{}", stdout(&output));
    assert_eq!(totals(&output), (2, 0));
}

#[test]
fn a_header_given_as_a_list_is_repeated_and_read_joined() {
    let dir = TempDir::new().expect("temp dir");
    let tests = write_tests(
        &dir,
        r#"
[[case]]
name = "one x-canary pins"
from = "frontend"
to = "payments"
method = "POST"
path = "/v1/charge"
headers = { x-canary = "1" }
expect.route = "canary-pin"

[[case]]
name = "x-canary twice is 1, 1"
from = "frontend"
to = "payments"
method = "POST"
path = "/v1/charge"
headers = { x-canary = ["1", "1"] }
expect.route = "charge"

[[case]]
name = "either order of x-oncall is denied like the joined value"
from = "ops"
to = "payments"
path = "/admin"
headers = { x-oncall = ["false", "true"] }
expect.deny = true
expect.rule = "default"

[[case]]
name = "path parameters are refused"
from = "frontend"
to = "payments"
path = "/internal;x/y"
expect.status = 400

[[case]]
name = "encoded dot segments are resolved before the deny"
from = "frontend"
to = "payments"
path = "/v1/%2e%2e/internal"
expect.deny = true
expect.rule = "shop.mesh:120"
"#,
    );
    let output = shop(&tests, &[]);
    assert_eq!(status(&output), 0, "{}{}", stdout(&output), stderr(&output));
    assert_eq!(totals(&output), (5, 0), "{}", stdout(&output));
    let json = shop(&tests, &["--format", "json"]);
    let report: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(
        report[1]["request"]["headers"]["x-canary"],
        serde_json::json!(["1", "1"])
    );
}
