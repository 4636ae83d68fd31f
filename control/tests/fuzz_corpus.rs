//! Replays the saved corpus of the `control_frames` fuzz target (`fuzz/corpora/control_frames/`, minimized with
//! `cargo fuzz cmin`) through the same function the target runs, so CI checks every input
//! the fuzzer kept without nightly or cargo-fuzz (see `fuzz/README.md`).

use std::path::Path;

#[path = "../../fuzz/harness/frames.rs"]
mod harness;

#[test]
fn control_frames_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpora/control_frames");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no input", dir.display());
    for input in &inputs {
        // Printed first, so a failure names its input.
        println!("{}", input.display());
        let data = std::fs::read(input).expect("a corpus file");
        harness::control_frames(&data);
    }
}
