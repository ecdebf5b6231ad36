//! libFuzzer target; the same harness runs under `cargo test -p vnet-fuzz-harness`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::ring::fuzz_packed(data));
