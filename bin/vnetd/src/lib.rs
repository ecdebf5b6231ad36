//! vnetd as a library: only its command-line definition, for `cargo xtask dist` (man page,
//! shell completions). The daemon itself is `main.rs`.
#![forbid(unsafe_code)]

pub mod cli;
