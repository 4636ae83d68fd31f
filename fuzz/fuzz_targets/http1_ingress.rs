//! Bytes on one connection into the sidecar's outbound listener, through the real server path (fuzz/harness/http1.rs).
#![no_main]

#[path = "../harness/http1.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::http1_ingress(data);
});
