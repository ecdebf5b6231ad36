//! libFuzzer target; the same harness runs under `cargo test -p vnet-fuzz-harness`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::vhost_user::fuzz_messages(data));
