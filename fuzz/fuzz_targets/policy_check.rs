//! Parser, checker and formatter on arbitrary text, every diagnostic rendered in every format (fuzz/harness/policy.rs).
#![no_main]

#[path = "../harness/policy.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::policy_check(data);
});
