//! Replays the saved corpus of the `control_frames` fuzz target (`fuzz/corpora/control_frames/`, minimized with
//! `cargo fuzz cmin`) through the same function the target runs, so CI checks every input
//! the fuzzer kept without nightly or cargo-fuzz (see `fuzz/README.md`).

#[path = "../../fuzz/harness/frames.rs"]
mod harness;

#[path = "../../fuzz/harness/replay.rs"]
mod replay;

#[test]
fn control_frames_corpus_replays() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "control_frames", |data| {
        harness::control_frames(data);
    });
}
