//! Replays the saved corpus of the `http1_ingress` fuzz target (`fuzz/corpora/http1_ingress/`, minimized with
//! `cargo fuzz cmin`) through the same function the target runs, so CI checks every input
//! the fuzzer kept without nightly or cargo-fuzz (see `fuzz/README.md`).

#[path = "../../fuzz/harness/http1.rs"]
mod harness;

#[path = "../../fuzz/harness/replay.rs"]
mod replay;

#[test]
fn http1_ingress_corpus_replays() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "http1_ingress", |data| {
        harness::http1_ingress(data);
    });
}

/// The fuzz target reaches the backend: a well-formed request is routed and forwarded, and
/// answered by the backend's `200 ok` (else the target would fuzz only the proxy's refusals).
#[test]
fn the_ingress_reaches_the_backend() {
    let answer = harness::http1_ingress(b"GET /hello HTTP/1.1\r\nhost: greeter\r\n\r\n");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
}
