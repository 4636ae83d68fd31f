//! The bad-policy suite: one small, complete policy per mistake, each asserting the
//! diagnostic's code, the line and column of its primary label, its help and (where it
//! is deterministic) that nothing else went wrong. Every code in [`Code::ALL`] has at
//! least one case, so a new code without a test fails [`the_cases_cover_every_code`].

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use meshc::diag::Label;
use meshc::source::SourceFile;
use meshc::{check, CheckOptions, Checked, Code, Diagnostic, Severity};

/// The name of a single-file case's file.
const FILE: &str = "policy.mesh";

/// A mesh and two services: lines 1–3 of most cases, so the case's own text starts on line 4.
const PRELUDE: &str = r#"mesh "m" { trust_domain "m.local" }
service frontend { port 80 }
service payments { port 81 }
"#;

/// A whole policy written as a raw string that opens with a line break (dropped, so the
/// policy's first line is the one after `r#"`).
fn text(policy: &str) -> String {
    policy.strip_prefix('\n').unwrap_or(policy).to_string()
}

/// The prelude followed by `body`, whose first line is then line 4.
fn p(body: &str) -> String {
    format!("{PRELUDE}{}", text(body))
}

/// The codes written by the policy-wide analyses (`src/check/analysis/`).
const ANALYSIS_CODES: &[Code] = &[
    Code::AmbiguousRoute,
    Code::UnreachableRoute,
    Code::DeadAllow,
    Code::PointlessAllow,
    Code::RetryExceedsTimeout,
    Code::UnsafeRetry,
    Code::UnusedFilter,
    Code::Confusable,
    Code::Bidi,
];

/// Diagnostics that may legitimately come without a `help:` line, by code and message
/// substring. Empty: every diagnostic this suite provokes can say how to fix it.
const NO_HELP_EXCEPTIONS: &[(Code, &str)] = &[];

/// One bad policy and the diagnostic it must produce.
struct Case {
    name: &'static str,
    /// The policy's files, by name.
    files: Vec<(&'static str, String)>,
    code: Code,
    /// The file, line and column of the primary label.
    file: &'static str,
    at: (u32, u32),
    /// A substring the help must contain; `Some("")` requires a help without pinning its
    /// wording; `None` only where no help is possible.
    help: Option<&'static str>,
    /// A substring the message must contain.
    message: Option<&'static str>,
    /// Other spans the diagnostic must label: (file, line, column).
    labels: Vec<(&'static str, u32, u32)>,
    /// The number of error-severity diagnostics of the whole check: one for an error code
    /// (the one under test, so nothing cascades), none for a warning.
    errors: usize,
}

/// A single-file case: the diagnostic under test and, for an error code, no other error.
fn case(
    name: &'static str,
    code: Code,
    at: (u32, u32),
    help: Option<&'static str>,
    policy: impl Into<String>,
) -> Case {
    Case {
        name,
        files: vec![(FILE, policy.into())],
        code,
        file: FILE,
        at,
        help,
        message: None,
        labels: Vec::new(),
        errors: usize::from(code.severity() == Severity::Error),
    }
}

impl Case {
    fn message(mut self, substring: &'static str) -> Case {
        self.message = Some(substring);
        self
    }

    /// Another span the diagnostic labels, in the primary file.
    fn label(mut self, line: u32, column: u32) -> Case {
        self.labels.push((self.file, line, column));
        self
    }

    /// Another span the diagnostic labels, in `file`.
    fn label_in(mut self, file: &'static str, line: u32, column: u32) -> Case {
        self.labels.push((file, line, column));
        self
    }

    /// Replaces the single file with several; the primary label is in `primary`.
    fn files(mut self, files: Vec<(&'static str, String)>, primary: &'static str) -> Case {
        self.files = files;
        self.file = primary;
        self
    }
}

/// Every bad policy, grouped by what goes wrong. Unless a case says otherwise, the policy
/// is the prelude (lines 1–3) and the body below it (from line 4).
fn cases() -> Vec<Case> {
    vec![
        // ---- syntax ----
        case(
            "a clause without its value",
            Code::Syntax,
            (4, 31),
            Some("keyword followed by its value"),
            p(r#"
route r on payments { timeout }
"#),
        )
        .message("expected"),
        case(
            "an unclosed brace before the next declaration",
            Code::Syntax,
            (5, 1),
            Some("`}`"),
            p(r#"
service orders { port 82
route r on payments { to payments }
"#),
        ),
        case(
            "a misspelt keyword at the start of the file",
            Code::Syntax,
            (1, 1),
            Some("did you mean `service`?"),
            text(
                r#"
servce orders { port 82 }
mesh "m" { trust_domain "m.local" }
"#,
            ),
        ),
        case(
            "a misspelt keyword after a declaration",
            Code::Syntax,
            (4, 1),
            Some("did you mean `service`?"),
            p(r#"
servce orders { port 82 }
"#),
        ),
        case(
            "a stray token in a block",
            Code::Syntax,
            (4, 26),
            Some(""),
            p(r#"
service orders { port 82 @ }
"#),
        )
        .message("found `@`"),
        case(
            "a path without exact, prefix or regex",
            Code::Syntax,
            (4, 36),
            Some(r#"path prefix "/v1""#),
            p(r#"
route r on payments { match { path "/v1" } }
"#),
        ),
        // ---- strings ----
        case(
            "invalid escape `\\q`",
            Code::InvalidEscape,
            (4, 53),
            Some("for a backslash"),
            p(r#"
route r on payments { request_headers { set "x-a" "a\qb" } }
"#),
        )
        .message("`\\q`"),
        case(
            "invalid escape `\\u12`",
            Code::InvalidEscape,
            (4, 52),
            Some("four hex digits"),
            p(r#"
route r on payments { request_headers { set "x-a" "\u12" } }
"#),
        ),
        // ---- fields ----
        case(
            "unknown field `timout`",
            Code::UnknownField,
            (4, 23),
            Some("did you mean `timeout`?"),
            p(r#"
route r on payments { timout 2s }
"#),
        )
        .message("unknown field `timout`"),
        case(
            "`port` in a route",
            Code::UnknownField,
            (4, 23),
            Some("`port` belongs in `service`"),
            p(r#"
route r on payments { port 80 }
"#),
        ),
        case(
            "`port` twice",
            Code::DuplicateField,
            (4, 26),
            Some("keep one `port`"),
            p(r#"
service orders { port 82 port 83 }
"#),
        )
        .label(4, 18),
        case(
            "a key twice in a filter's config",
            Code::DuplicateField,
            (4, 55),
            Some("keep one"),
            p(r#"
filter audit { module "ok.wasm" config { header: "a", header: "b" } }
service orders { port 82 filters [audit] }
"#),
        )
        .message("`header` is given twice"),
        case(
            "a service twice in a split",
            Code::DuplicateField,
            (4, 44),
            Some("one weight"),
            p(r#"
route r on payments { split { payments 50% payments 50% } }
"#),
        ),
        case(
            "no `port`",
            Code::MissingField,
            (4, 9),
            Some("add `port 8080`"),
            p(r#"
service orders { protocol http1 }
"#),
        ),
        case(
            "no `trust_domain`",
            Code::MissingField,
            (1, 6),
            Some(r#"trust_domain "example.org""#),
            text(
                r#"
mesh "m" { }
service frontend { port 80 }
"#,
            ),
        ),
        case(
            "a retry without `attempts`",
            Code::MissingField,
            (4, 23),
            Some("attempts 2"),
            p(r#"
route r on payments { retry { per_try_timeout 1s } }
"#),
        ),
        case(
            "a filter without `module`",
            Code::MissingField,
            (4, 8),
            Some(r#"module "filter.wasm""#),
            p(r#"
filter audit { failure open }
service orders { port 82 filters [audit] }
"#),
        ),
        case(
            "`ring_hash` without a header",
            Code::MissingField,
            (4, 34),
            Some(r#"header "x-user""#),
            p(r#"
service orders { port 82 balance ring_hash }
"#),
        ),
        case(
            "`to` and `split`",
            Code::ConflictingFields,
            (4, 35),
            Some("use `split` alone"),
            p(r#"
route r on payments { to payments split { payments 100% } }
"#),
        )
        .label(4, 23),
        case(
            "`endpoints` and `discovery`",
            Code::ConflictingFields,
            (7, 3),
            Some("static list or the DNS"),
            p(r#"
service orders {
  port 82
  endpoints ["127.0.0.1:15000"]
  discovery dns "orders.internal:82"
}
"#),
        )
        .label(6, 3),
        // ---- names ----
        case(
            "a name in upper case",
            Code::InvalidName,
            (4, 9),
            Some("`orders`"),
            p(r#"
service Orders { port 82 }
"#),
        )
        .message("lower-case letter"),
        case(
            "a name of 64 characters",
            Code::InvalidName,
            (4, 9),
            Some("DNS label"),
            p(&format!("service {} {{ port 82 }}\n", "x".repeat(64))),
        )
        .message("64 characters long"),
        case(
            "a name ending in `-`",
            Code::InvalidName,
            (4, 9),
            Some("`orders`"),
            p(r#"
service orders- { port 82 }
"#),
        )
        .message("must not end with `-`"),
        case(
            "a service named like the control plane",
            Code::ReservedName,
            (4, 9),
            Some("choose another name"),
            p(r#"
service mesh-control { port 82 }
"#),
        )
        .message("reserved for the control plane"),
        case(
            "a service declared in two files",
            Code::DuplicateName,
            (1, 9),
            Some("rename or merge"),
            "",
        )
        .files(
            vec![
                ("a.mesh", PRELUDE.to_string()),
                ("b.mesh", "service payments { port 90 }\n".to_string()),
            ],
            "b.mesh",
        )
        .label_in("a.mesh", 3, 9),
        case(
            "two routes with one name",
            Code::DuplicateName,
            (5, 7),
            Some("rename or merge"),
            p(r#"
route r on payments { to payments }
route r on frontend { to frontend }
"#),
        )
        .label(4, 7),
        case(
            "two authorize blocks for one service",
            Code::DuplicateName,
            (5, 11),
            Some(""),
            p(r#"
authorize payments { default deny }
authorize payments { default deny }
"#),
        )
        .label(4, 11),
        case(
            "no mesh",
            Code::MeshDeclaration,
            (1, 1),
            Some(r#"add `mesh "name""#),
            text(
                r#"
service frontend { port 80 }
"#,
            ),
        ),
        case(
            "two meshes",
            Code::MeshDeclaration,
            (4, 1),
            Some("remove one"),
            p(r#"
mesh "n" { trust_domain "n.local" }
"#),
        )
        .label(1, 1),
        case(
            "an unknown service after `on`",
            Code::UnknownService,
            (4, 12),
            Some("did you mean `payments`?"),
            p(r#"
route r on paymnets { }
"#),
        )
        .message("unknown service `paymnets`"),
        case(
            "an unknown service after `to`",
            Code::UnknownService,
            (4, 26),
            Some("did you mean `frontend`?"),
            p(r#"
route r on payments { to frontnd }
"#),
        ),
        case(
            "an unknown principal",
            Code::UnknownService,
            (4, 33),
            Some("did you mean `frontend`?"),
            p(r#"
authorize payments { allow from frontent }
"#),
        ),
        case(
            "an unknown service, nothing near",
            Code::UnknownService,
            (4, 9),
            Some("service inventory"),
            p(r#"
observe inventory { trace sample 1% }
"#),
        ),
        case(
            "an unknown filter",
            Code::UnknownFilter,
            (4, 35),
            Some("filter ratelimit"),
            p(r#"
service orders { port 82 filters [ratelimit] }
"#),
        ),
        case(
            "an unknown filter near one",
            Code::UnknownFilter,
            (5, 35),
            Some("did you mean `ratelimit`?"),
            p(r#"
filter ratelimit { module "ok.wasm" }
service orders { port 82 filters [ratelimt] }
"#),
        ),
        // ---- types and units ----
        case(
            "`timeout 3`",
            Code::TypeMismatch,
            (4, 31),
            Some("did you mean `3s`?"),
            p(r#"
route r on payments { timeout 3 }
"#),
        )
        .message("expected a duration"),
        case(
            "a quoted duration",
            Code::TypeMismatch,
            (4, 31),
            Some("remove the quotes"),
            p(r#"
route r on payments { timeout "2s" }
"#),
        )
        .message("found a string"),
        case(
            "a percentage without `%`",
            Code::TypeMismatch,
            (4, 48),
            Some("did you mean `50%`?"),
            p(r#"
service orders { port 82 outlier { max_ejected 50 } }
"#),
        ),
        case(
            "a quoted port",
            Code::TypeMismatch,
            (4, 23),
            Some("remove the quotes"),
            p(r#"
service orders { port "82" }
"#),
        ),
        case(
            "a fractional port",
            Code::TypeMismatch,
            (4, 23),
            Some("whole number"),
            p(r#"
service orders { port 80.5 }
"#),
        ),
        case(
            "`yes` for a bool",
            Code::TypeMismatch,
            (4, 57),
            Some("`true`"),
            p(r#"
route r on payments { retry { attempts 2 non_idempotent yes } }
"#),
        ),
        case(
            "a quoted service name",
            Code::TypeMismatch,
            (4, 26),
            Some("without quotes"),
            p(r#"
route r on payments { to "frontend" }
"#),
        ),
        // `audit` is then unused: a warning, not an error.
        case(
            "a quoted filter name",
            Code::TypeMismatch,
            (5, 35),
            Some("without quotes"),
            p(r#"
filter audit { module "ok.wasm" }
service orders { port 82 filters ["audit"] }
"#),
        ),
        case(
            "a mesh named by a number",
            Code::TypeMismatch,
            (1, 6),
            Some(r#"mesh "shop""#),
            text(
                r#"
mesh 3 { trust_domain "m.local" }
"#,
            ),
        ),
        case(
            "`5sec`",
            Code::UnknownUnit,
            (4, 31),
            Some("did you mean `5s`?"),
            p(r#"
route r on payments { timeout 5sec }
"#),
        )
        .message("`sec` is not a duration unit"),
        case(
            "`10MB`",
            Code::UnknownUnit,
            (4, 40),
            Some("did you mean `10MiB`?"),
            p(r#"
filter audit { module "ok.wasm" memory 10MB }
service orders { port 82 filters [audit] }
"#),
        ),
        // ---- ranges ----
        case(
            "port 70000",
            Code::OutOfRange,
            (4, 23),
            Some("65535"),
            p(r#"
service orders { port 70000 }
"#),
        ),
        case(
            "150%",
            Code::OutOfRange,
            (4, 48),
            Some("100%"),
            p(r#"
service orders { port 82 outlier { max_ejected 150% } }
"#),
        ),
        case(
            "attempts 0",
            Code::OutOfRange,
            (4, 40),
            Some("attempts"),
            p(r#"
route r on payments { retry { attempts 0 } }
"#),
        ),
        case(
            "timeout 0s",
            Code::OutOfRange,
            (4, 31),
            Some(""),
            p(r#"
route r on payments { timeout 0s }
"#),
        ),
        case(
            "status class `6xx`",
            Code::OutOfRange,
            (4, 46),
            Some("5xx"),
            p(r#"
route r on payments { retry { attempts 2 on [6xx] } }
"#),
        ),
        case(
            "memory below one page",
            Code::OutOfRange,
            (4, 40),
            Some("64KiB"),
            p(r#"
filter audit { module "ok.wasm" memory 1KiB }
service orders { port 82 filters [audit] }
"#),
        ),
        case(
            "a filter time limit of 30s",
            Code::OutOfRange,
            (4, 44),
            Some("milliseconds"),
            p(r#"
filter audit { module "ok.wasm" time_limit 30s }
service orders { port 82 filters [audit] }
"#),
        ),
        case(
            "a health timeout above the interval",
            Code::OutOfRange,
            (6, 32),
            Some("shorten the timeout"),
            p(r#"
service orders {
  port 82
  health { interval 1s timeout 2s }
}
"#),
        ),
        case(
            "backoff low above high",
            Code::OutOfRange,
            (4, 59),
            Some("write `backoff 25ms to 250ms`"),
            p(r#"
route r on payments { retry { attempts 2 backoff 250ms to 25ms } }
"#),
        ),
        case(
            "latency buckets not ascending",
            Code::OutOfRange,
            (4, 43),
            Some("ascending order"),
            p(r#"
observe payments { latency_buckets [10ms, 5ms] }
"#),
        ),
        case(
            "a trust domain as a SPIFFE ID",
            Code::OutOfRange,
            (1, 25),
            Some(r#"only the domain: `"m.local"`"#),
            text(
                r#"
mesh "m" { trust_domain "spiffe://m.local/" }
"#,
            ),
        ),
        case(
            "CR LF in a header value",
            Code::OutOfRange,
            (4, 51),
            Some("remove"),
            p(r#"
route r on payments { request_headers { set "x-a" "a\r\nb" } }
"#),
        ),
        // ---- choices ----
        case(
            "`protocol http3`",
            Code::InvalidChoice,
            (4, 35),
            Some("one of: http1, http2, grpc"),
            p(r#"
service orders { port 82 protocol http3 }
"#),
        )
        .message("`http3` is not a protocol"),
        case(
            "`balance leastrequest`",
            Code::InvalidChoice,
            (4, 34),
            Some("did you mean `least_request`?"),
            p(r#"
service orders { port 82 balance leastrequest }
"#),
        ),
        case(
            "method `get`",
            Code::InvalidChoice,
            (4, 39),
            Some("`GET`"),
            p(r#"
route r on payments { match { method [get] } }
"#),
        ),
        case(
            "`mtls strickt`",
            Code::InvalidChoice,
            (4, 31),
            Some("did you mean `strict`?"),
            p(r#"
service orders { port 82 mtls strickt }
"#),
        ),
        case(
            "retry on `conect_failure`",
            Code::InvalidChoice,
            (4, 46),
            Some("did you mean `connect_failure`?"),
            p(r#"
route r on payments { retry { attempts 2 on [conect_failure] } }
"#),
        ),
        // ---- addresses ----
        case(
            "an address without a port",
            Code::InvalidAddress,
            (4, 37),
            Some("127.0.0.1:15206"),
            p(r#"
service orders { port 82 endpoints ["127.0.0.1"] }
"#),
        )
        .message("no port"),
        case(
            "an address with a bad host",
            Code::InvalidAddress,
            (4, 37),
            Some("payments.internal:9000"),
            p(r#"
service orders { port 82 endpoints ["pay_ments:80"] }
"#),
        )
        .message("not a host name"),
        case(
            "an address on port 0",
            Code::InvalidAddress,
            (4, 37),
            Some("127.0.0.1:15206"),
            p(r#"
service orders { port 82 endpoints ["127.0.0.1:0"] }
"#),
        )
        .message("`0` is not a port"),
        case(
            "a discovery target without a port",
            Code::InvalidAddress,
            (4, 40),
            Some("payments.internal:9000"),
            p(r#"
service orders { port 82 discovery dns "orders.internal" }
"#),
        ),
        // ---- paths ----
        case(
            "a path without a leading `/`",
            Code::InvalidPath,
            (4, 43),
            Some(r#"write `"/v1"`"#),
            p(r#"
route r on payments { match { path prefix "v1" } }
"#),
        ),
        case(
            "a path with `//`",
            Code::InvalidPath,
            (4, 43),
            Some("normalized form"),
            p(r#"
route r on payments { match { path prefix "/v1//x" } }
"#),
        )
        .message("empty segment"),
        case(
            "a path with `..`",
            Code::InvalidPath,
            (4, 42),
            Some("normalized form"),
            p(r#"
route r on payments { match { path exact "/v1/../x" } }
"#),
        )
        .message("`..`"),
        case(
            "a path with `%2F`",
            Code::InvalidPath,
            (4, 57),
            Some("normalized form"),
            p(r#"
authorize payments { allow from frontend to path prefix "/v1%2Fx" }
"#),
        )
        .message("path-encoded-separator"),
        case(
            "a path with `;` path parameters",
            Code::InvalidPath,
            (4, 43),
            Some("normalized form"),
            p(r#"
route r on payments { match { path prefix "/secret;x" } }
"#),
        )
        .message("path-parameter"),
        case(
            "a path with an encoded letter",
            Code::InvalidPath,
            (4, 42),
            Some("normalized form"),
            p(r#"
route r on payments { match { path exact "/%41pi" } }
"#),
        )
        .message("as `/Api`"),
        case(
            "a health path without a leading `/`",
            Code::InvalidPath,
            (4, 40),
            Some(r#"write `"/healthz"`"#),
            p(r#"
service orders { port 82 health { path "healthz" } }
"#),
        ),
        // ---- headers ----
        case(
            "a header name with a space",
            Code::InvalidHeaderName,
            (4, 38),
            Some("tokens"),
            p(r#"
route r on payments { match { header "x user" present } }
"#),
        ),
        case(
            "a pseudo-header name",
            Code::InvalidHeaderName,
            (4, 38),
            Some("pseudo-headers"),
            p(r#"
route r on payments { match { header ":path" exact "/x" } }
"#),
        ),
        case(
            "editing a hop-by-hop header",
            Code::InvalidHeaderName,
            (4, 48),
            Some("end-to-end"),
            p(r#"
route r on payments { request_headers { remove "connection" } }
"#),
        ),
        // ---- regexes ----
        case(
            "a regex that does not compile",
            Code::InvalidRegex,
            (4, 42),
            Some("RE2"),
            p(r#"
route r on payments { match { path regex "(unclosed" } }
"#),
        ),
        case(
            "a regex of 1,025 characters",
            Code::RegexTooLarge,
            (4, 42),
            Some("shorter regex"),
            p(&format!(
                "route r on payments {{ match {{ path regex \"/{}\" }} }}\n",
                "a".repeat(1024)
            )),
        )
        .message("1025 characters"),
        case(
            "a short regex that compiles huge",
            Code::RegexTooLarge,
            (4, 50),
            Some("bounded repetitions"),
            p(r#"
route r on payments { match { header "x-a" regex "(a{1000}){1000}" } }
"#),
        ),
        // ---- splits ----
        case(
            "split weights summing to 95%",
            Code::SplitSum,
            (5, 3),
            Some("add 5% to one of them"),
            p(r#"
route r on payments {
  split {
    payments 90%
    frontend 5%
  }
}
"#),
        )
        .message("95%")
        .label(6, 14)
        .label(7, 14),
        case(
            "an empty split",
            Code::SplitSum,
            (4, 23),
            Some("sum to 100%"),
            p(r#"
route r on payments { split { } }
"#),
        ),
        // ---- analyses: routes ----
        case(
            "two routes with one prefix",
            Code::AmbiguousRoute,
            (5, 7),
            Some(""),
            p(r#"
route first on payments { match { path prefix "/v1" } }
route second on payments { match { path prefix "/v1" } }
"#),
        )
        .label(4, 7),
        case(
            "two routes with one exact path and a shared method",
            Code::AmbiguousRoute,
            (5, 7),
            Some(""),
            p(r#"
route first on payments { match { path exact "/v1" method [GET] } }
route second on payments { match { path exact "/v1" method [GET, POST] } }
"#),
        )
        .label(4, 7),
        case(
            "a regex route behind a catch-all prefix",
            Code::UnreachableRoute,
            (5, 7),
            Some(""),
            p(r#"
route catch-all on payments { match { path prefix "/" } }
route versioned on payments { match { path regex "/v[0-9]+/.*" } }
"#),
        )
        .label(4, 7),
        case(
            "retries that outlast the timeout",
            Code::RetryExceedsTimeout,
            (6, 39),
            Some("per_try_timeout"),
            p(r#"
route r on payments {
  timeout 1s
  retry { attempts 3  per_try_timeout 500ms }
}
"#),
        )
        .label(5, 11)
        .label(6, 20),
        case(
            "a POST route retried on `reset`",
            Code::UnsafeRetry,
            (6, 43),
            Some("non_idempotent"),
            p(r#"
route r on payments {
  match { method [POST] }
  retry { attempts 2 on [connect_failure, reset] }
}
"#),
        )
        .label(5, 11),
        case(
            "a route open to every method retried on 5xx",
            Code::UnsafeRetry,
            (4, 45),
            Some("non_idempotent"),
            p(r#"
route r on payments { retry { attempts 2 on 5xx } }
"#),
        ),
        // ---- analyses: authorization ----
        case(
            "an allow a deny always covers",
            Code::DeadAllow,
            (6, 3),
            Some("`deny`"),
            p(r#"
authorize payments {
  deny from any to path prefix "/internal"
  allow from frontend to path prefix "/internal/metrics"
}
"#),
        )
        .label(5, 3),
        case(
            "`default allow` with an allow rule",
            Code::PointlessAllow,
            (6, 3),
            Some("`deny`"),
            p(r#"
authorize payments {
  allow from frontend to path prefix "/v1"
  default allow
}
"#),
        )
        .label(5, 3),
        // ---- analyses: filters and unicode ----
        case(
            "a filter nothing uses",
            Code::UnusedFilter,
            (4, 8),
            Some("filters [audit]"),
            p(r#"
filter audit { module "ok.wasm" }
"#),
        ),
        case(
            "a Cyrillic `о` in a service name",
            Code::Confusable,
            (4, 9),
            Some(""),
            p("
service \u{43e}rders { port 82 }
"),
        ),
        case(
            // The primary label is on the lookalike character (the second one of the name).
            "a service name that looks like a declared one",
            Code::Confusable,
            (4, 10),
            Some("`payments`"),
            p("
service p\u{430}yments { port 82 }
"),
        )
        .message("looks like the service `payments`")
        .label(3, 9),
        case(
            "a right-to-left override in a string",
            Code::Bidi,
            (4, 55),
            Some("remove"),
            p("
route r on payments { request_headers { set \"x-a\" \"abc\u{202e}def\" } }
"),
        ),
        // ---- filter modules ----
        case(
            "a module that is not there",
            Code::ModuleNotFound,
            (4, 23),
            Some("--module-path"),
            p(r#"
filter audit { module "missing.wasm" }
service orders { port 82 filters [audit] }
"#),
        )
        .message("`missing.wasm` not found"),
        case(
            "a module that is not WebAssembly",
            Code::InvalidModule,
            (4, 23),
            Some("wasm32"),
            p(r#"
filter audit { module "bad.wasm" }
service orders { port 82 filters [audit] }
"#),
        )
        .message("not a valid WebAssembly module"),
        // ---- filter config against the module's schema ----
        case(
            "a config that lacks a key the module's schema requires",
            Code::FilterConfig,
            (4, 44),
            Some("add `burst: ...`"),
            p(r#"
filter limit { module "schema.wasm" config { requests_per_second: 100 } }
service orders { port 82 filters [limit] }
"#),
        )
        .message("the config lacks `burst`"),
        case(
            "a misspelt config key",
            Code::FilterConfig,
            (4, 72),
            Some("did you mean `burst`?"),
            p(r#"
filter limit { module "schema.wasm" config { requests_per_second: 100, brust: 20 } }
service orders { port 82 filters [limit] }
"#),
        )
        .message("unknown key `brust`"),
        case(
            "a config value of the wrong type",
            Code::FilterConfig,
            (4, 79),
            Some("write an integer here"),
            p(r#"
filter limit { module "schema.wasm" config { requests_per_second: 100, burst: "many" } }
service orders { port 82 filters [limit] }
"#),
        )
        .message("`burst` must be an integer"),
        case(
            "a config value out of the schema's range",
            Code::FilterConfig,
            (4, 67),
            Some("schema"),
            p(r#"
filter limit { module "schema.wasm" config { requests_per_second: 0, burst: 5 } }
service orders { port 82 filters [limit] }
"#),
        ),
        case(
            "a module whose config schema is not JSON",
            Code::InvalidModule,
            (4, 23),
            Some("config_schema!"),
            p(r#"
filter limit { module "broken-schema.wasm" config { burst: 5 } }
service orders { port 82 filters [limit] }
"#),
        )
        .message("not valid JSON Schema"),
    ]
}

/// A directory of filter modules: `ok.wasm` (the empty module) and `bad.wasm` (not WebAssembly).
fn module_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ok.wasm"), b"\0asm\x01\0\0\0").expect("write ok.wasm");
    std::fs::write(dir.path().join("bad.wasm"), b"this is not \xff WebAssembly")
        .expect("write bad.wasm");
    std::fs::write(
        dir.path().join("schema.wasm"),
        support::module_with_schema(support::RATELIMIT_SCHEMA),
    )
    .expect("write schema.wasm");
    std::fs::write(
        dir.path().join("broken-schema.wasm"),
        support::module_with_schema("{ not json"),
    )
    .expect("write broken-schema.wasm");
    dir
}

fn run_case(case: &Case, modules: &Path) -> Checked {
    let files: Vec<_> = case
        .files
        .iter()
        .map(|(name, text)| SourceFile::new(*name, text.as_str()))
        .collect();
    check(
        &files,
        &CheckOptions {
            module_paths: vec![modules.to_path_buf()],
        },
    )
}

fn position(label: &Label) -> (String, u32, u32) {
    let (line, column) = label.loc.line_col();
    (label.loc.file.name.clone(), line, column)
}

fn describe(d: &Diagnostic) -> String {
    let at = d.primary().map_or_else(
        || "nowhere".to_string(),
        |l| format!("{}:{}:{}", l.file.name, l.line_col().0, l.line_col().1),
    );
    let others: Vec<String> = d
        .labels
        .iter()
        .skip(1)
        .map(|l| {
            let (file, line, column) = position(l);
            format!("{file}:{line}:{column}")
        })
        .collect();
    format!(
        "{} at {at} (also {others:?}): {} | help: {}",
        d.code.as_str(),
        d.message,
        d.help.as_deref().unwrap_or("<none>")
    )
}

/// What is wrong with a case's result, if anything.
fn verify(case: &Case, checked: &Checked) -> Result<(), String> {
    let with_code: Vec<&Diagnostic> = checked
        .diagnostics
        .iter()
        .filter(|d| d.code == case.code)
        .collect();
    let at_position = with_code.iter().find(|d| {
        d.primary()
            .is_some_and(|loc| loc.file.name == case.file && loc.line_col() == case.at)
    });
    let mut problems = Vec::new();
    match at_position {
        None if with_code.is_empty() => {
            problems.push(format!("no {} diagnostic", case.code.as_str()))
        }
        None => problems.push(format!(
            "no {} diagnostic at {}:{}:{}",
            case.code.as_str(),
            case.file,
            case.at.0,
            case.at.1
        )),
        Some(d) => {
            if d.severity != case.code.severity() {
                problems.push(format!(
                    "severity {:?}, expected {:?}",
                    d.severity,
                    case.code.severity()
                ));
            }
            match (case.help, &d.help) {
                (Some(want), Some(help)) if !help.contains(want) => {
                    problems.push(format!("help does not contain {want:?}"))
                }
                (Some(_), None) => problems.push("no help".to_string()),
                _ => {}
            }
            if let Some(want) = case.message {
                if !d.message.contains(want) {
                    problems.push(format!("message does not contain {want:?}"));
                }
            }
            let labelled: Vec<(String, u32, u32)> = d.labels.iter().map(position).collect();
            for (file, line, column) in &case.labels {
                if !labelled.contains(&(file.to_string(), *line, *column)) {
                    problems.push(format!("no label at {file}:{line}:{column}"));
                }
            }
        }
    }
    let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
    if errors != case.errors {
        problems.push(format!("{errors} errors, expected {}", case.errors));
    }
    if checked.table.is_some() == checked.diagnostics.iter().any(Diagnostic::is_error) {
        problems.push("a table must be returned exactly when there is no error".to_string());
    }
    if problems.is_empty() {
        return Ok(());
    }
    let got: Vec<String> = checked
        .diagnostics
        .iter()
        .map(|d| format!("    {}", describe(d)))
        .collect();
    Err(format!(
        "  {}: {}\n{}",
        case.name,
        problems.join("; "),
        got.join("\n")
    ))
}

/// Runs the cases `select` picks and fails with every broken one listed.
fn run_cases(select: impl Fn(&Case) -> bool) {
    let modules = module_dir();
    let all = cases();
    let selected: Vec<&Case> = all.iter().filter(|c| select(c)).collect();
    assert!(!selected.is_empty());
    let failures: Vec<String> = selected
        .iter()
        .filter_map(|case| verify(case, &run_case(case, modules.path())).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        selected.len(),
        failures.join("\n")
    );
}

#[test]
fn the_checker_reports_each_bad_policy() {
    run_cases(|c| !ANALYSIS_CODES.contains(&c.code));
}

#[test]
fn the_analyses_report_each_bad_policy() {
    run_cases(|c| ANALYSIS_CODES.contains(&c.code));
}

#[test]
fn every_diagnostic_has_a_message_a_label_and_a_help() {
    let modules = module_dir();
    let mut problems = Vec::new();
    for case in cases() {
        for d in run_case(&case, modules.path()).diagnostics {
            let excused = NO_HELP_EXCEPTIONS
                .iter()
                .any(|(code, m)| d.code == *code && d.message.contains(m));
            let mut wrong = Vec::new();
            if d.message.trim().is_empty() {
                wrong.push("an empty message");
            }
            if d.labels.is_empty() {
                wrong.push("no label");
            }
            if d.help.as_deref().is_none_or(|h| h.trim().is_empty()) && !excused {
                wrong.push("no help");
            }
            if !wrong.is_empty() {
                problems.push(format!(
                    "  {} ({}): {}\n    {}",
                    case.name,
                    wrong.join(", "),
                    d.code.as_str(),
                    describe(&d)
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} diagnostics are incomplete:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_cases_cover_every_code() {
    let covered: BTreeSet<Code> = cases().iter().map(|c| c.code).collect();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !covered.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a bad-policy case: {missing:?}"
    );
    assert!(cases().len() >= 45);
}

#[test]
fn the_case_names_are_unique() {
    let all = cases();
    let names: BTreeSet<&str> = all.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), all.len());
}
