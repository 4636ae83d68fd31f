//! Bare postcard payloads (no header, no checksum): the payload decoder and the validator (fuzz/harness/table.rs).
#![no_main]

#[path = "../harness/table.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::table_payload(data);
});
