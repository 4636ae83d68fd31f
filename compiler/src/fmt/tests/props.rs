//! Property test: random policies, laid out badly and full of comments, format stably.

use proptest::prelude::*;

use super::check_all;

/// Declaration heads and the clauses their blocks may hold; tokens are separated by spaces
/// (so no snippet has a space inside a string), and each space becomes random layout.
const DECLS: &[(&str, &[&str])] = &[
    ("mesh \"m\\u00e9\"", &["trust_domain \"m.example\""]),
    (
        "service a",
        &[
            "port 9000",
            "protocol http2",
            "endpoints [ \"127.0.0.1:1\" , \"127.0.0.1:2\" , ]",
            "balance ring_hash header \"x-user\"",
            "balance least_request",
            "health { path \"/healthz\" interval 5s timeout 1s }",
            "outlier { }",
            "mtls strict",
            "filters [ audit ]",
            "discovery dns \"a:1\"",
        ],
    ),
    (
        "route r on a",
        &[
            "match { path prefix \"/v1\" method [ GET , POST ] header \"x-c\" exact \"1\" header \"x-d\" present }",
            "split { a 90% b-canary 10% }",
            "to a",
            "timeout 2s",
            "retry { attempts 3 per_try_timeout 500ms on [ connect_failure , 5xx ] backoff 25ms to 250ms budget 20% }",
            "request_headers { set \"x-a\" \"b\" add \"x-c\" \"d\\\"e\" remove \"x-e\" }",
            "tiemout 3s",
            "wat { port 1 }",
        ],
    ),
    (
        "authorize a",
        &[
            "deny from any to path prefix \"/internal\"",
            "allow from b to method [ POST ] path regex \"/v1/.*\" when header \"x\" exact \"1\"",
            "allow from c",
            "allow from d when header \"y\" present",
            "default deny",
        ],
    ),
    (
        "observe a",
        &[
            "access_log json sample 10%",
            "access_log json",
            "trace sample 1%",
            "latency_buckets [ 5ms , 1s ]",
        ],
    ),
    (
        "filter f",
        &[
            "module \"f.wasm\"",
            "config { a : 1 , \"b-c\" : \"x\" , d : [ 1 , 2 ] , e : { } }",
            "config { }",
            "failure open",
            "memory 16MiB",
            "time_limit 2ms",
        ],
    ),
];

/// Layouts put between tokens; `#` becomes a fresh number so every comment is distinct.
const SEPARATORS: &[&str] = &[
    " ",
    " ",
    "\n",
    "\n  ",
    "\t ",
    "\n\n    ",
    "\r\n",
    " /* c# */ ",
    "/*c#*/",
    " // c#\n",
    " // c#  \r\n",
    "\n// c#\n\n",
    "\n\n/* c#\n   more\n*/\n",
    "  //c#\n  // d#\n",
];

/// Lays `tokens` out with the separators picked by `picks` (cycled).
fn lay_out(tokens: &[&str], picks: &[usize]) -> String {
    let mut text = String::new();
    for (n, token) in tokens.iter().enumerate() {
        let pick = picks.get(n % picks.len().max(1)).copied().unwrap_or(0);
        let separator = SEPARATORS[pick % SEPARATORS.len()].replace('#', &n.to_string());
        text.push_str(&separator);
        text.push_str(token);
    }
    text.push_str(
        &SEPARATORS[picks.first().copied().unwrap_or(0) % SEPARATORS.len()].replace('#', "end"),
    );
    text
}

fn policy(decls: &[(usize, Vec<usize>)], picks: &[usize]) -> String {
    let mut tokens = Vec::new();
    for (decl, clauses) in decls {
        let (head, choices) = DECLS[decl % DECLS.len()];
        tokens.extend(head.split(' '));
        tokens.push("{");
        for clause in clauses {
            tokens.extend(choices[clause % choices.len()].split(' '));
        }
        tokens.push("}");
    }
    lay_out(&tokens, picks)
}

proptest! {
    #[test]
    fn random_policies_format_stably(
        decls in prop::collection::vec((0..DECLS.len(), prop::collection::vec(0..64usize, 0..6)), 0..5),
        picks in prop::collection::vec(0..SEPARATORS.len(), 1..40),
    ) {
        let text = policy(&decls, &picks);
        check_all(&text);
    }
}

#[test]
fn the_generator_makes_comments() {
    let text = policy(&[(1, vec![0, 5]), (3, vec![1])], &[7, 9, 12, 13]);
    assert!(text.contains("/* c") && text.contains("// c"), "{text}");
    check_all(&text);
}
