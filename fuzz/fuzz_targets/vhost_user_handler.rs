//! libFuzzer target; the same harness runs under `cargo test` via proptest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| port_vhost::fuzz::fuzz_handler(data));
