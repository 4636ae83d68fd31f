//! End-to-end tests of `meshc why`: the JSON verdict of several requests, plaintext callers,
//! bad paths, and the human account of every route.

use std::fs;
use std::process::Output;

use serde_json::{json, Value};

mod support;
use support::{meshc, modules, status, stdout};

/// `meshc why` on the shop policy.
fn shop(args: &[&str]) -> Output {
    let modules = modules();
    let dir = modules.path().to_str().expect("utf-8 path");
    let mut all = vec!["why", "examples/policies/shop.mesh", "--module-path", dir];
    all.extend_from_slice(args);
    meshc(&all)
}

/// The JSON object printed; the run must succeed.
fn verdict(output: &Output) -> Value {
    assert_eq!(
        status(output),
        0,
        "{}{}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

const SHOP: &str = "examples/policies/shop.mesh";

#[test]
fn json_verdicts_of_shop_requests() {
    let cases: [(&[&str], Value); 6] = [
        (
            &[
                "--from",
                "frontend",
                "--to",
                "payments",
                "POST",
                "/v1/charge",
            ],
            json!({
                "status": null, "route": "charge", "targets": ["payments", "payments-canary"],
                "decision": "allow", "rule": { "file": SHOP, "line": 121 },
            }),
        ),
        (
            &[
                "--from",
                "frontend",
                "--to",
                "payments",
                "POST",
                "/v1/charge",
                "-H",
                "x-canary: 1",
            ],
            json!({
                "status": null, "route": "canary-pin", "targets": ["payments-canary"],
                "decision": "allow", "rule": "default",
            }),
        ),
        (
            &[
                "--from",
                "frontend",
                "--to",
                "payments",
                "GET",
                "/v1/../internal",
            ],
            json!({
                "status": 403, "route": "payments-rest", "targets": ["payments"],
                "decision": "deny", "rule": { "file": SHOP, "line": 120 },
            }),
        ),
        (
            &[
                "--from",
                "ops",
                "--to",
                "payments",
                "GET",
                "/admin",
                "-H",
                "X-Oncall: true",
            ],
            json!({
                "status": null, "route": "payments-rest", "targets": ["payments"],
                "decision": "allow", "rule": { "file": SHOP, "line": 123 },
            }),
        ),
        (
            &["--from", "frontend", "--to", "inventory", "GET", "/nowhere"],
            json!({
                "status": 404, "route": null, "targets": [], "decision": null, "rule": null,
            }),
        ),
        (
            &[
                "--from",
                "spiffe://elsewhere.example/frontend",
                "--to",
                "payments",
                "POST",
                "/v1/charge",
            ],
            json!({
                "status": 403, "route": "charge", "targets": ["payments", "payments-canary"],
                "decision": "deny", "rule": "mtls",
            }),
        ),
    ];
    for (args, expected) in cases {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        assert_eq!(verdict(&shop(&all)), expected, "meshc why {args:?}");
    }
}

#[test]
fn a_bad_path_is_400() {
    let output = shop(&[
        "--from",
        "frontend",
        "--to",
        "payments",
        "GET",
        "/v1/%2Finternal",
        "--format",
        "json",
    ]);
    assert_eq!(
        verdict(&output),
        json!({ "status": 400, "route": null, "targets": [], "decision": null, "rule": null })
    );
    let human = shop(&["--to", "payments", "GET", "/../x"]);
    assert_eq!(status(&human), 0);
    assert!(stdout(&human).contains("result: 400"), "{}", stdout(&human));
}

#[test]
fn without_from_the_caller_is_plaintext() {
    let args = [
        "why",
        "examples/policies/hello.mesh",
        "--to",
        "greeter",
        "GET",
        "/hello",
    ];
    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    assert_eq!(
        verdict(&meshc(&json_args)),
        json!({
            "status": 403, "route": "hello", "targets": ["greeter"],
            "decision": "deny", "rule": "default",
        })
    );
    let human = stdout(&meshc(&args));
    assert!(human.contains("from a plaintext caller"), "{human}");
    assert!(human.contains("mtls strict"), "{human}");
    // A permissive service with an `anyone` rule admits the same caller.
    let bookinfo = meshc(&[
        "why",
        "examples/policies/bookinfo",
        "--to",
        "productpage",
        "GET",
        "/productpage",
        "--format",
        "json",
    ]);
    assert_eq!(
        verdict(&bookinfo),
        json!({
            "status": null, "route": null, "targets": ["productpage"],
            "decision": "allow", "rule": { "file": "policy.mesh", "line": 2 },
        })
    );
}

#[test]
fn the_human_account_explains_every_route_and_the_rule() {
    let output = shop(&[
        "--from",
        "frontend",
        "--to",
        "payments",
        "POST",
        "/v1/charge",
        "-H",
        "x-canary: 1",
    ]);
    assert_eq!(status(&output), 0);
    let out = stdout(&output);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for `{name}`: {out}"))
            .to_owned()
    };
    assert!(line("canary-pin").contains("chosen"), "{out}");
    assert!(
        line("charge").contains("matched, lost: more header matchers"),
        "{out}"
    );
    assert!(
        line("payments-rest").contains("matched, lost: longer prefix"),
        "{out}"
    );
    let receipts = line("receipts");
    assert!(receipts.contains("no match: path"), "{receipts}");
    assert!(
        receipts.contains("method: not one of [GET, HEAD]"),
        "{receipts}"
    );
    assert!(
        out.contains("route: `canary-pin` → payments-canary 100%"),
        "{out}"
    );
    assert!(out.contains("chosen route"), "{out}");
    assert!(out.contains("result: allowed"), "{out}");

    let denied = stdout(&shop(&[
        "--from",
        "frontend",
        "--to",
        "payments",
        "GET",
        "/v1/../internal",
    ]));
    assert!(denied.contains("path normalized to /internal"), "{denied}");
    assert!(
        denied.contains("examples/policies/shop.mesh:120"),
        "{denied}"
    );
    assert!(denied.contains("this rule decided: deny"), "{denied}");
    assert!(denied.contains("result: 403"), "{denied}");
}

#[test]
fn a_header_miss_names_the_header() {
    let out = stdout(&shop(&[
        "--from",
        "frontend",
        "--to",
        "payments",
        "POST",
        "/v1/charge",
        "-H",
        "x-canary: 2",
    ]));
    assert!(
        out.contains(r#"header: `x-canary: 2` is not header "x-canary" exact "1""#),
        "{out}"
    );
}

#[test]
fn unknown_services_and_bad_headers_are_usage_errors() {
    let to = shop(&["--to", "paymnets", "GET", "/"]);
    assert_eq!(status(&to), 2);
    assert!(String::from_utf8_lossy(&to.stderr).contains("did you mean `payments`?"));
    let from = shop(&["--from", "frontnd", "--to", "payments", "GET", "/"]);
    assert_eq!(status(&from), 2);
    assert!(String::from_utf8_lossy(&from.stderr).contains("did you mean `frontend`?"));
    let header = shop(&["--to", "payments", "GET", "/", "-H", "no-colon"]);
    assert_eq!(status(&header), 2);
}

#[test]
fn an_anyone_rule_does_not_let_plaintext_into_a_strict_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("strict.mesh");
    fs::write(
        &policy,
        "mesh \"m\" { trust_domain \"m.local\" }\n\
         service web {\n  port 8080\n  protocol http1\n  endpoints [\"127.0.0.1:15001\"]\n}\n\
         service open {\n  port 8081\n  protocol http1\n  endpoints [\"127.0.0.1:15002\"]\n  mtls permissive\n}\n\
         authorize web {\n  allow from anyone to path prefix \"/\"\n}\n\
         authorize open {\n  allow from anyone to path prefix \"/\"\n}\n",
    )
    .expect("write policy");
    let policy = policy.to_str().expect("utf-8 path");
    let why = |to: &str| {
        verdict(&meshc(&[
            "why", policy, "--to", to, "GET", "/", "--format", "json",
        ]))
    };
    assert_eq!(
        why("web"),
        json!({ "status": 403, "route": null, "targets": ["web"], "decision": "deny", "rule": "mtls" })
    );
    assert_eq!(
        why("open"),
        json!({
            "status": null, "route": null, "targets": ["open"], "decision": "allow",
            "rule": { "file": policy, "line": 17 },
        })
    );
}

/// The JSON verdict of `meshc why` on the shop policy for `args`.
fn json_of(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    verdict(&shop(&all))
}

#[test]
fn repeated_headers_decide_as_their_joined_value_in_either_order() {
    let base = [
        "--from",
        "frontend",
        "--to",
        "payments",
        "POST",
        "/v1/charge",
    ];
    let with = |values: &[&str]| {
        let mut args = base.to_vec();
        for v in values {
            args.extend(["-H", v]);
        }
        json_of(&args)
    };
    // `x-canary: 1` twice is `x-canary: 1, 1`: not canary-pin's exact "1".
    let joined = with(&["x-canary: 1, 1"]);
    assert_eq!(joined["route"], "charge", "{joined}");
    assert_eq!(with(&["x-canary: 1", "x-canary: 1"]), joined);
    let joined = with(&["x-canary: 1, 0"]);
    assert_eq!(with(&["x-canary: 1", "x-canary: 0"]), joined);
    assert_eq!(joined["route"], "charge", "{joined}");
    let joined = with(&["x-canary: 0, 1"]);
    assert_eq!(with(&["x-canary: 0", "X-Canary: 1"]), joined);
    assert_eq!(joined["route"], "charge", "{joined}");
    assert_eq!(with(&["x-canary: 1"])["route"], "canary-pin");

    // Authorization: `when header "x-oncall" exact "true"` holds for neither order.
    let ops = ["--from", "ops", "--to", "payments", "GET", "/admin/x"];
    let oncall = |values: &[&str]| {
        let mut args = ops.to_vec();
        for v in values {
            args.extend(["-H", v]);
        }
        json_of(&args)
    };
    assert_eq!(oncall(&["x-oncall: true"])["decision"], "allow");
    let joined = oncall(&["x-oncall: true, false"]);
    assert_eq!(joined["decision"], "deny", "{joined}");
    assert_eq!(oncall(&["x-oncall: true", "x-oncall: false"]), joined);
    let joined = oncall(&["x-oncall: false, true"]);
    assert_eq!(oncall(&["x-oncall: false", "x-oncall: true"]), joined);
    assert_eq!(joined["decision"], "deny", "{joined}");

    let human = stdout(&shop(&[
        "--from",
        "frontend",
        "--to",
        "payments",
        "POST",
        "/v1/charge",
        "-H",
        "x-canary: 1",
        "-H",
        "x-canary: 0",
    ]));
    assert!(
        human.contains("header x-canary is repeated: matchers read it as `1, 0`"),
        "{human}"
    );
}

/// Every way of writing a path under `/internal` that an application could read as one is
/// refused (400) or denied by `deny from any to path prefix "/internal"` (shop.mesh:120).
#[test]
fn no_path_form_escapes_a_path_deny() {
    let refused = [
        "/internal;x/y",
        "/internal;jsessionid=1",
        "/v1/..;/internal/x",
        "/v1/.;/../internal",
        "/internal%3bx",
        "/internal%00",
        "/internal%00.json",
        "/internal%0a",
        "/internal%0d%0a",
        "/internal%7f",
        "/v1%2f..%2finternal",
        "/v1/..%2finternal",
        "/v1/..%5cinternal",
        "/v1\\..\\internal",
        "/%2e%2e/internal",
        "/%252e%252e/internal",
        "/%c0%ae%c0%ae/internal",
        "/internal%20",
        "/internal%",
    ];
    for path in refused {
        let v = json_of(&["--from", "frontend", "--to", "payments", "GET", path]);
        assert_eq!(v["status"], 400, "{path}: {v}");
        let human = stdout(&shop(&["--to", "payments", "GET", path]));
        assert!(human.contains("result: 400 (path-"), "{path}: {human}");
    }
    let denied = [
        "/internal",
        "//internal",
        "/./internal/x",
        "/v1/../internal",
        "/v1/%2e%2e/internal",
        "/v1/%2E./internal",
        "/v1/.%2e/internal/x",
        "/%69nternal",
        "///internal//x",
        "/internal?x=/../v1",
    ];
    for path in denied {
        let v = json_of(&["--from", "frontend", "--to", "payments", "GET", path]);
        assert_eq!(v["status"], 403, "{path}: {v}");
        assert_eq!(
            v["rule"],
            json!({ "file": SHOP, "line": 120 }),
            "{path}: {v}"
        );
    }
}
