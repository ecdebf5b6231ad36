//! Tests that need something the machine may lack (DPDK, QEMU, root for TAP devices) skip
//! under a plain `cargo test` and fail under `cargo xtask test`, which sets their
//! `VNET_REQUIRE_*` variable. A skip is never silent: it is printed, and appended to the
//! file named by [`SKIP_LOG_ENV`] so that `cargo xtask test` can count it in its summary.

use std::io::Write;

/// Names a file each skipped test appends one line to (`<reason>`); set by `cargo xtask
/// test`.
pub const SKIP_LOG_ENV: &str = "VNET_SKIP_LOG";

/// A test cannot run because `why`. Panics when `require_env` is set to `1` (the
/// prerequisite is required: a missing one is a failure); otherwise reports the skip.
pub fn skip(require_env: &str, why: &str) {
    let required = std::env::var(require_env).is_ok_and(|v| v == "1");
    assert!(!required, "{require_env}=1 but {why}");
    eprintln!("skipping: {why} (set {require_env}=1 to make this a failure)");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let line = format!("{}\n", why.replace('\n', " "));
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}
