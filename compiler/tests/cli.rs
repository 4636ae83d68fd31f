//! End-to-end tests of the `meshc` binary: exit statuses, output formats, files written.
//!
//! Tests whose name starts with `needs_checker_` depend on the real checker behind
//! `meshc::check` (finding errors and warnings, building the table); the others need only
//! the command line itself and hold even with a stub checker.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The smallest example policy (examples/policies/hello.mesh): valid, no warnings, no filters.
const HELLO: &str = r#"// The smallest useful mesh: one caller, one service, mTLS-only access.
mesh "hello" { trust_domain "hello.local" }

service client {
  port 8080
  protocol http1
  endpoints ["127.0.0.1:15101"]
}

service greeter {
  port 8081
  protocol http1
  endpoints ["127.0.0.1:15201"]
}

route hello on greeter {
  match { path prefix "/hello" }
  to greeter
  timeout 1s
}

authorize greeter {
  allow from client to path prefix "/hello"
}
"#;

/// `HELLO` with a typo in a service name: one `mesh::unknown-service` error.
fn unknown_service() -> String {
    HELLO.replace("route hello on greeter", "route hello on greter")
}

/// `HELLO` with a retry policy whose tries outlast the route's timeout: a warning only.
fn warning_only() -> String {
    HELLO.replace(
        "  timeout 1s\n",
        "  timeout 1s\n  retry {\n    attempts 3\n    per_try_timeout 500ms\n    on [connect_failure]\n  }\n",
    )
}

fn meshc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("meshc runs")
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("meshc exits normally")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(output)))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write fixture");
    path
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

// ---------------------------------------------------------------------------------------------
// Usage

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["check"][..],
        &["check", "--format", "xml", "x.mesh"][..],
        &["check", "--color", "sometimes", "x.mesh"][..],
        &["compile", "x.mesh"][..],
        &["inspect"][..],
        &["explain"][..],
        &["frobnicate"][..],
    ] {
        let out = meshc(args);
        assert_eq!(status(&out), 2, "meshc {args:?}: {}", stderr(&out));
    }
}

#[test]
fn help_and_version_exit_0() {
    let out = meshc(&["--help"]);
    assert_eq!(status(&out), 0);
    for sub in ["check", "compile", "inspect", "explain", "fmt"] {
        assert!(stdout(&out).contains(sub), "{sub} missing from --help");
    }
    let out = meshc(&["--version"]);
    assert_eq!(status(&out), 0);
    assert!(stdout(&out).starts_with("meshc "));
}

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_a_valid_policy_exits_0_and_prints_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", HELLO);
    let out = meshc(&["check", s(&policy)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
}

#[test]
fn check_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "hello.mesh", HELLO);
    write(dir.path(), "notes.txt", "not a policy");
    let out = meshc(&["check", s(dir.path())]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
}

#[test]
fn check_json_is_a_document_even_without_diagnostics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", HELLO);
    let out = meshc(&["check", "--format", "json", s(&policy)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["diagnostics"], Value::Array(Vec::new()));
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["warnings"], 0);
}

#[test]
fn check_sarif_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", HELLO);
    let out = meshc(&["check", "--format", "sarif", s(&policy)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["version"], "2.1.0");
    assert_eq!(doc["runs"][0]["tool"]["driver"]["name"], "meshc");
}

#[test]
fn check_github_of_a_valid_policy_prints_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", HELLO);
    let out = meshc(&["check", "--format", "github", s(&policy)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn check_a_missing_path_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.mesh");
    let out = meshc(&["check", s(&missing)]);
    assert_eq!(status(&out), 2);
    assert!(
        stderr(&out).starts_with("error: cannot read"),
        "{}",
        stderr(&out)
    );
    // Even in a machine format: nothing was checked, so there is no document.
    let out = meshc(&["check", "--format", "json", s(&missing)]);
    assert_eq!(status(&out), 2);
    assert_eq!(stdout(&out), "");
}

#[test]
fn check_an_empty_directory_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = meshc(&["check", s(dir.path())]);
    assert_eq!(status(&out), 2);
    assert!(
        stderr(&out).contains("no `.mesh` files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_a_file_that_is_not_utf8_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.mesh");
    fs::write(&path, b"service caf\xe9 { port 1 }\n").expect("write");
    let out = meshc(&["check", s(&path)]);
    assert_eq!(status(&out), 2);
    assert!(stderr(&out).contains("UTF-8"), "{}", stderr(&out));
}

#[test]
fn needs_checker_unknown_service_exits_1_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", &unknown_service());

    let out = meshc(&["check", s(&policy)]);
    assert_eq!(status(&out), 1, "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("mesh::unknown-service"), "{text}");
    assert!(text.contains("route hello on greter"), "{text}");
    assert!(text.contains("did you mean `greeter`?"), "{text}");
    assert!(
        text.contains("error: could not compile policy: 1 error emitted"),
        "{text}"
    );
    assert_eq!(stdout(&out), "", "human output goes to stderr");

    let out = meshc(&["check", "--format", "json", s(&policy)]);
    assert_eq!(status(&out), 1);
    let doc = json(&out);
    assert_eq!(doc["errors"], 1);
    let first = &doc["diagnostics"][0];
    assert_eq!(first["code"], "mesh::unknown-service");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["labels"][0]["line"], 16);
    assert_eq!(first["labels"][0]["column"], 16);

    let out = meshc(&["check", "--format", "sarif", s(&policy)]);
    assert_eq!(status(&out), 1);
    let doc = json(&out);
    assert_eq!(
        doc["runs"][0]["results"][0]["ruleId"],
        "mesh::unknown-service"
    );

    let out = meshc(&["check", "--format", "github", s(&policy)]);
    assert_eq!(status(&out), 1);
    let line = stdout(&out);
    assert!(line.starts_with("::error file="), "{line}");
    assert!(line.contains(",line=16,col=16,"), "{line}");
    assert!(line.contains("title=mesh%3A%3Aunknown-service::"), "{line}");
}

#[test]
fn needs_checker_a_syntax_error_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "broken.mesh",
        &HELLO.replace("port 8081\n", "port 8081\n  endpoints [\"127.0.0.1:1\"\n"),
    );
    let out = meshc(&["check", s(&policy)]);
    assert_eq!(status(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("mesh::syntax"), "{}", stderr(&out));
}

#[test]
fn needs_checker_warnings_pass_unless_denied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", &warning_only());

    let out = meshc(&["check", s(&policy)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("mesh::retry-exceeds-timeout"), "{text}");
    assert!(text.contains("warning: 1 warning emitted"), "{text}");

    let out = meshc(&["check", "--deny-warnings", s(&policy)]);
    assert_eq!(status(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("--deny-warnings"), "{}", stderr(&out));

    let out = meshc(&["check", "--format", "json", "--deny-warnings", s(&policy)]);
    assert_eq!(status(&out), 1);
    assert_eq!(json(&out)["warnings"], 1);
}

// ---------------------------------------------------------------------------------------------
// compile

#[test]
fn compile_writes_nothing_on_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", &unknown_service());
    let table = dir.path().join("out/table.bin");
    let out = meshc(&["compile", s(&policy), "-o", s(&table)]);
    assert_ne!(status(&out), 0, "{}", stderr(&out));
    assert!(!table.exists());
    assert!(!dir.path().join("out/table.bin.tmp").exists());
}

#[test]
fn compile_a_missing_path_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = dir.path().join("table.bin");
    let out = meshc(&["compile", s(&dir.path().join("nope.mesh")), "-o", s(&table)]);
    assert_eq!(status(&out), 2);
    assert!(!table.exists());
}

#[test]
fn needs_checker_compile_errors_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", &unknown_service());
    let table = dir.path().join("table.bin");
    let out = meshc(&["compile", s(&policy), "-o", s(&table)]);
    assert_eq!(status(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("mesh::unknown-service"),
        "{}",
        stderr(&out)
    );
    assert!(!table.exists());
}

#[test]
fn needs_checker_compile_writes_a_table_that_inspect_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", HELLO);
    let table = dir.path().join("build/tables/hello.table");
    let out = meshc(&["compile", s(&policy), "-o", s(&table)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let summary = stderr(&out);
    assert!(
        summary.starts_with("compiled 2 services, 1 route, 1 authorization rule, 0 filters into "),
        "{summary}"
    );
    assert!(summary.contains("sha256 "), "{summary}");

    let bytes = fs::read(&table).expect("table written");
    assert!(
        summary.contains(&format!("({} bytes, ", bytes.len())),
        "{summary}"
    );
    let decoded = mesh_table::decode(&bytes).expect("the table decodes");
    assert_eq!(decoded.mesh.trust_domain, "hello.local");
    assert!(!dir.path().join("build/tables/hello.table.tmp").exists());

    let out = meshc(&["inspect", s(&table)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["mesh"]["name"], "hello");
    assert_eq!(doc["services"].as_array().map(Vec::len), Some(2));

    // Byte-identical for identical input.
    let again = dir.path().join("again.table");
    let out = meshc(&["compile", s(&policy), "-o", s(&again)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(fs::read(&again).expect("second table"), bytes);
}

#[test]
fn needs_checker_compile_with_denied_warnings_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", &warning_only());
    let table = dir.path().join("table.bin");
    let out = meshc(&["compile", "--deny-warnings", s(&policy), "-o", s(&table)]);
    assert_eq!(status(&out), 1, "{}", stderr(&out));
    assert!(!table.exists());
    let out = meshc(&["compile", s(&policy), "-o", s(&table)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(table.exists());
}

// ---------------------------------------------------------------------------------------------
// inspect

/// `HELLO` with a filter on `greeter`, whose module is the smallest valid WebAssembly module.
fn with_filter(dir: &Path) -> PathBuf {
    // Magic number and version 1, nothing else: an empty module.
    fs::write(dir.join("audit.wasm"), b"\0asm\x01\0\0\0").expect("write module");
    let policy = HELLO.replace(
        "  endpoints [\"127.0.0.1:15201\"]\n",
        "  endpoints [\"127.0.0.1:15201\"]\n  filters [audit]\n",
    ) + "\nfilter audit {\n  module \"audit.wasm\"\n  config { header: \"x-audit-id\" }\n  failure closed\n  memory 1MiB\n  time_limit 1ms\n}\n";
    write(dir, "hello.mesh", &policy)
}

#[test]
fn needs_checker_inspect_prints_a_table_as_json_with_hex_digests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = with_filter(dir.path());
    let table = dir.path().join("hello.table");
    let out = meshc(&["compile", s(&policy), "-o", s(&table)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(", 1 filter into "),
        "{}",
        stderr(&out)
    );

    let out = meshc(&["inspect", s(&table)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("{\n  \"mesh\": {"),
        "fields in the model's order: {}",
        stdout(&out)
    );
    let doc = json(&out);
    assert_eq!(doc["mesh"]["name"], "hello");
    assert_eq!(doc["filters"][0]["name"], "audit");
    // SHA-256 of the 8-byte empty module.
    assert_eq!(
        doc["filters"][0]["sha256"],
        "93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476"
    );
}

#[test]
fn inspect_a_corrupt_table_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = write(
        dir.path(),
        "garbage.table",
        "this is not a rule table at all, not even close",
    );
    let out = meshc(&["inspect", s(&garbage)]);
    assert_eq!(status(&out), 1);
    assert!(
        stderr(&out).starts_with(&format!("error: {}: ", garbage.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn needs_checker_inspect_a_table_with_a_flipped_byte_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hello.mesh", HELLO);
    let table = dir.path().join("hello.table");
    let out = meshc(&["compile", s(&policy), "-o", s(&table)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let mut bytes = fs::read(&table).expect("read table");
    if let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    }
    fs::write(&table, bytes).expect("write");
    let out = meshc(&["inspect", s(&table)]);
    assert_eq!(status(&out), 1);
    assert!(stderr(&out).contains("checksum"), "{}", stderr(&out));
}

#[test]
fn inspect_a_missing_table_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = meshc(&["inspect", s(&dir.path().join("nope.table"))]);
    assert_eq!(status(&out), 2);
    assert!(
        stderr(&out).starts_with("error: cannot read"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// explain

#[test]
fn explain_prints_the_entry_with_or_without_the_prefix() {
    let out = meshc(&["explain", "mesh::unknown-service"]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("## mesh::unknown-service\n"), "{text}");
    assert!(text.contains("```mesh"), "{text}");
    assert!(
        !text.contains("## mesh::unknown-filter"),
        "only one entry: {text}"
    );

    let short = meshc(&["explain", "unknown-service"]);
    assert_eq!(status(&short), 0);
    assert_eq!(stdout(&short), text);
}

#[test]
fn explain_an_unknown_code_exits_2_with_the_nearest() {
    let out = meshc(&["explain", "mesh::unknown-servise"]);
    assert_eq!(status(&out), 2);
    let text = stderr(&out);
    assert!(text.contains("unknown diagnostic code"), "{text}");
    assert!(
        text.contains("did you mean `mesh::unknown-service`?"),
        "{text}"
    );
    assert_eq!(stdout(&out), "");

    let out = meshc(&["explain", "E0308"]);
    assert_eq!(status(&out), 2);
    assert!(
        stderr(&out).contains("mesh::syntax"),
        "lists the codes: {}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// fmt (these exercise `meshc::fmt::format_source`)

/// `HELLO` with its layout disturbed; the same declarations.
fn messy() -> String {
    HELLO
        .replace(
            "service client {\n  port 8080\n",
            "service   client {\n      port 8080\n",
        )
        .replace("  timeout 1s\n", "  timeout   1s\n")
}

#[test]
fn fmt_check_lists_unformatted_files_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "hello.mesh", &messy());
    let out = meshc(&["fmt", "--check", s(&path)]);
    assert_eq!(status(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", path.display()));
    assert_eq!(fs::read_to_string(&path).expect("read"), messy());
}

#[test]
fn fmt_rewrites_then_check_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "hello.mesh", &messy());
    let out = meshc(&["fmt", s(dir.path())]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("formatted "), "{}", stderr(&out));
    let formatted = fs::read_to_string(&path).expect("read");
    assert_ne!(formatted, messy());
    assert!(formatted.contains("service client {"), "{formatted}");
    assert!(!dir.path().join("hello.mesh.tmp").exists());

    let out = meshc(&["fmt", "--check", s(dir.path())]);
    assert_eq!(status(&out), 0, "{}", stdout(&out));
    assert_eq!(stdout(&out), "");
    // Formatting a formatted file changes nothing and says nothing.
    let out = meshc(&["fmt", s(&path)]);
    assert_eq!(status(&out), 0);
    assert_eq!(stderr(&out), "");
    assert_eq!(fs::read_to_string(&path).expect("read"), formatted);
}

#[test]
fn fmt_with_a_syntax_error_touches_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "a.mesh", &messy());
    let broken_text = "service broken {\n  port 8080\n  endpoints [\"127.0.0.1:1\"\n}\n";
    let broken = write(dir.path(), "b.mesh", broken_text);
    let out = meshc(&["fmt", s(dir.path())]);
    assert_eq!(status(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("mesh::syntax"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&good).expect("read"), messy());
    assert_eq!(fs::read_to_string(&broken).expect("read"), broken_text);
}

#[test]
fn fmt_a_missing_path_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = meshc(&["fmt", s(&dir.path().join("nope.mesh"))]);
    assert_eq!(status(&out), 2);
}

// ---------------------------------------------------------------------------------------------
// stream timeouts and service limits

#[test]
fn stream_timeouts_and_limits_compile_and_inspect_shows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = HELLO
        .replace(
            "  timeout 1s\n",
            "  timeout 1s\n  idle_timeout 10s\n  stream_timeout 2m\n",
        )
        .replace(
            "  endpoints [\"127.0.0.1:15201\"]\n",
            "  endpoints [\"127.0.0.1:15201\"]\n  limits { max_requests 64  max_pending 0 }\n",
        );
    let policy = write(dir.path(), "hello.mesh", &text);
    let table = dir.path().join("hello.table");
    let out = meshc(&["compile", s(&policy), "-o", s(&table)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let out = meshc(&["inspect", s(&table)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["routes"][0]["idle_timeout_ms"], 10_000);
    assert_eq!(doc["routes"][0]["stream_timeout_ms"], 120_000);
    let greeter = doc["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "greeter"))
        .expect("greeter");
    assert_eq!(greeter["limits"]["max_requests"], 64);
    assert_eq!(greeter["limits"]["max_pending"], 0);
}

#[test]
fn bad_stream_timeouts_and_limits_are_reported_in_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = HELLO
        .replace(
            "  timeout 1s\n",
            "  timeout 1s\n  idle_timeout 10\n  stream_timeout 500ms\n",
        )
        .replace(
            "  endpoints [\"127.0.0.1:15201\"]\n",
            "  endpoints [\"127.0.0.1:15201\"]\n  limits { max_requests 0  max_pendin 3 }\n",
        );
    let policy = write(dir.path(), "hello.mesh", &text);
    let out = meshc(&["check", "--format", "json", s(&policy)]);
    assert_eq!(status(&out), 1, "{}", stdout(&out));
    let doc = json(&out);
    let codes: Vec<&str> = doc["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert!(codes.contains(&"mesh::unknown-field"), "{codes:?}");
    assert!(codes.contains(&"mesh::type-mismatch"), "{codes:?}");
    assert!(codes.contains(&"mesh::out-of-range"), "{codes:?}");
    assert!(doc["errors"].as_u64().unwrap_or(0) >= 3, "{doc}");
}
