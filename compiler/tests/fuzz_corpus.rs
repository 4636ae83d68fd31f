//! Replays the saved corpus of the `policy_check` fuzz target (`fuzz/corpora/policy_check/`, minimized with
//! `cargo fuzz cmin`) through the same function the target runs, so CI checks every input
//! the fuzzer kept without nightly or cargo-fuzz (see `fuzz/README.md`).

#[path = "../../fuzz/harness/policy.rs"]
mod harness;

#[path = "../../fuzz/harness/replay.rs"]
mod replay;

#[test]
fn policy_check_corpus_replays() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "policy_check", |data| {
        harness::policy_check(data);
    });
}
