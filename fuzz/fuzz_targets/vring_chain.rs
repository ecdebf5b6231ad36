//! libFuzzer target; the same harness runs under `cargo test` via proptest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vring::fuzz::fuzz_ring(data));
