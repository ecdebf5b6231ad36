//! `cargo xtask guest-image`: build (or find up to date) the Linux guest the end-to-end tests
//! and the demo boot: Debian's cloud kernel and a busybox initramfs (crates/testbed).

use anyhow::{Context, Result};

use crate::deps;

/// Runs the command: installs what is missing, then builds the image.
pub fn run() -> Result<()> {
    deps::run()?;
    build()
}

/// Builds the image unless it is up to date, and says where it is.
pub fn build() -> Result<()> {
    let target = testbed::default_target_dir();
    let image = testbed::ensure_image(&target).context("cannot build the guest image")?;
    for (what, path) in [("kernel", &image.kernel), ("initrd", &image.initrd)] {
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        println!("{what}: {} ({})", path.display(), human_size(size));
    }
    println!("from {}", image.kernel_package);
    Ok(())
}

/// `12.3 MiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes;
    let mut tenths = 0;
    let mut unit = 0;
    while value >= 1024 && unit + 1 < UNITS.len() {
        tenths = (value % 1024) * 10 / 1024;
        value /= 1024;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{value}.{tenths} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_ls_h() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(7 << 20), "7.0 MiB");
    }
}
