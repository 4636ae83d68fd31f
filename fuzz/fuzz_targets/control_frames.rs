//! The control stream's frame decoder and the control plane's per-kind limits, with arbitrary chunk boundaries (fuzz/harness/frames.rs).
#![no_main]

#[path = "../harness/frames.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::control_frames(data);
});
