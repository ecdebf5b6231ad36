//! Fuzz harnesses for the crates that read what a guest or a frontend writes, callable
//! from `cargo test` (proptest, stable Rust) and from the libFuzzer targets in `fuzz/`
//! (`cargo +nightly fuzz`). Each takes arbitrary bytes, drives public APIs only, and
//! asserts invariants: a failed assertion is a bug in the crate under test, never in the
//! input.
//!
//! * [`ring`]: hostile split rings for `vring` ([`ring::fuzz_ring`]).
//! * [`vhost_user`]: bytes on the vhost-user socket and hostile handler calls for
//!   `port-vhost` ([`vhost_user::fuzz_messages`], [`vhost_user::fuzz_handler`]).
//! * [`net`]: segmentation, checksum completion and offload rules of `virtio-net`
//!   ([`net::fuzz_gso`], [`net::fuzz_csum`], [`net::fuzz_offload`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod input;
pub mod net;
pub mod ring;
pub mod vhost_user;

#[cfg(test)]
mod tests;
