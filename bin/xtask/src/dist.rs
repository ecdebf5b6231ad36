//! `cargo xtask dist`: a Debian package of vnet, `target/dist/vnet_<version>_<arch>.deb`:
//!
//! | path                                           | what                                 |
//! |------------------------------------------------|--------------------------------------|
//! | `/usr/bin/vnetd`, `/usr/bin/vnetctl`            | the binaries (release build)         |
//! | `/lib/systemd/system/vnetd.service`            | `dist/vnetd.service`                 |
//! | `/etc/vnet/vnetd.toml`                         | `dist/vnetd.toml` (a conffile)       |
//! | `/usr/share/man/man1/{vnetd,vnetctl}.1.gz`     | from the clap definitions (clap_mangen) |
//! | bash, zsh and fish completions                 | from the clap definitions (clap_complete) |
//! | `/usr/share/doc/vnet/`                         | README, copyright                    |
//!
//! `postinst` creates the system user `vnet` (group `vnet`) the unit runs vnetd as, and
//! reloads systemd when it runs; `dpkg -r` leaves only the conffile (`dpkg -P` removes it).
//! Built with `dpkg-deb --root-owner-group`; no other packaging tool is needed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::util::{cargo, run, workspace_root};

/// `cargo xtask dist` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Package the debug build (target/debug) instead of a release build.
    #[arg(long)]
    pub debug: bool,
}

/// Builds the binaries and the package; prints its path.
pub fn run_dist(args: &Args) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "-p", "vnetd", "-p", "vnetctl"]);
    if !args.debug {
        build.arg("--release");
    }
    run(&mut build)?;
    let profile = if args.debug { "debug" } else { "release" };
    let deb = package(&workspace_root().join("target").join(profile))?;
    println!("{}", deb.display());
    Ok(())
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn gzip(path: &Path) -> Result<()> {
    let st = Command::new("gzip")
        .args(["-9n", "-f"])
        .arg(path)
        .status()?;
    if !st.success() {
        bail!("gzip {} failed", path.display());
    }
    Ok(())
}

/// The man page of a command.
fn man(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

/// A shell's completion script for a command.
fn completion(shell: Shell, mut cmd: clap::Command, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

fn arch() -> Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("dpkg --print-architecture")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Stages everything under `target/dist/stage` and builds the package from the binaries
/// in `bin_dir`. Returns the package's path.
pub fn package(bin_dir: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    let version = env!("CARGO_PKG_VERSION");
    let arch = arch()?;
    let out_dir = root.join("target/dist");
    let stage = out_dir.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    for bin in ["vnetd", "vnetctl"] {
        let src = bin_dir.join(bin);
        let bytes =
            std::fs::read(&src).with_context(|| format!("{} (build it first)", src.display()))?;
        write(&stage.join("usr/bin").join(bin), &bytes, 0o755)?;
    }
    let file = |p: &str| std::fs::read(root.join(p)).with_context(|| p.to_string());
    write(
        &stage.join("lib/systemd/system/vnetd.service"),
        &file("dist/vnetd.service")?,
        0o644,
    )?;
    write(
        &stage.join("etc/vnet/vnetd.toml"),
        &file("dist/vnetd.toml")?,
        0o644,
    )?;
    let doc = stage.join("usr/share/doc/vnet");
    write(&doc.join("README.md"), &file("README.md")?, 0o644)?;
    write(
        &doc.join("copyright"),
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: vnet\n\nFiles: *\nLicense: {}\n",
            env!("CARGO_PKG_LICENSE")
        )
        .as_bytes(),
        0o644,
    )?;
    let commands = [
        ("vnetd", vnetd::cli::Args::command()),
        ("vnetctl", vnetctl::cli::Cli::command()),
    ];
    for (name, cmd) in &commands {
        let page = stage.join(format!("usr/share/man/man1/{name}.1"));
        write(&page, &man(cmd.clone())?, 0o644)?;
        gzip(&page)?;
        for (shell, path) in [
            (
                Shell::Bash,
                format!("usr/share/bash-completion/completions/{name}"),
            ),
            (
                Shell::Zsh,
                format!("usr/share/zsh/vendor-completions/_{name}"),
            ),
            (
                Shell::Fish,
                format!("usr/share/fish/vendor_completions.d/{name}.fish"),
            ),
        ] {
            write(
                &stage.join(path),
                &completion(shell, cmd.clone(), name),
                0o644,
            )?;
        }
    }
    let debian = stage.join("DEBIAN");
    write(
        &debian.join("control"),
        format!(
            "Package: vnet\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: vnet developers <vnet@localhost>\n\
             Depends: libc6, adduser\n\
             Section: net\n\
             Priority: optional\n\
             Description: vhost-user virtio-net backend and L2 virtual switch for VMs\n \
             vnetd attaches VMs (QEMU, Cloud Hypervisor, DPDK virtio-user) by vhost-user\n \
             sockets and switches their frames, guest to guest in one copy, and to the host\n \
             through TAP ports; vnetctl operates it.\n"
        )
        .as_bytes(),
        0o644,
    )?;
    write(&debian.join("conffiles"), b"/etc/vnet/vnetd.toml\n", 0o644)?;
    write(
        &debian.join("postinst"),
        b"#!/bin/sh\n\
          set -e\n\
          if [ \"$1\" = configure ]; then\n\
          \tgetent passwd vnet >/dev/null || adduser --system --group --no-create-home \\\n\
          \t\t--home /nonexistent --quiet vnet\n\
          \tif [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n\
          fi\n",
        0o755,
    )?;
    write(
        &debian.join("postrm"),
        b"#!/bin/sh\n\
          set -e\n\
          if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n",
        0o755,
    )?;
    let deb = out_dir.join(format!("vnet_{version}_{arch}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb)
        .stdout(std::process::Stdio::null())
        .status()
        .context("dpkg-deb")?;
    if !st.success() {
        bail!("dpkg-deb --build failed");
    }
    let _ = std::io::stdout().flush();
    Ok(deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a command; (success, stdout + stderr).
    fn sh(cmd: &mut Command) -> (bool, String) {
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Purges the package whatever happens.
    struct Purge;
    impl Drop for Purge {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["-P", "vnet"]).output();
        }
    }

    #[test]
    fn the_package_installs_works_and_leaves_nothing_behind() {
        let bins = workspace_root().join("target/debug");
        let ready = crate::util::is_root()
            && crate::util::has_command("dpkg-deb")
            && bins.join("vnetd").exists()
            && bins.join("vnetctl").exists();
        if !ready {
            testbed::skip(
                "VNET_REQUIRE_TAP",
                "package test: needs root, dpkg-deb and target/debug/{vnetd,vnetctl} \
                 (cargo xtask test builds them)",
            );
            return;
        }
        // Never over a vnet installed by hand.
        let (installed, _) = sh(Command::new("dpkg-query").args(["-W", "vnet"]));
        if installed {
            testbed::skip(
                "VNET_REQUIRE_TAP",
                "package test: a vnet package is installed",
            );
            return;
        }
        let deb = package(&bins).unwrap();
        let _purge = Purge;
        let (ok, out) = sh(Command::new("dpkg").arg("-i").arg(&deb));
        assert!(ok, "dpkg -i: {out}");
        let (ok, out) = sh(Command::new("/usr/bin/vnetd").arg("--version"));
        assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
        let (ok, out) = sh(Command::new("man")
            .args(["-P", "cat", "vnetd"])
            .env("MANWIDTH", "100"));
        assert!(ok && out.contains("vhost-user"), "man vnetd: {out}");
        let (ok, out) = sh(Command::new("man").args(["-w", "vnetctl"]));
        assert!(ok && out.contains("vnetctl.1"), "{out}");
        let (ok, out) =
            sh(Command::new("systemd-analyze")
                .args(["verify", "/lib/systemd/system/vnetd.service"]));
        assert!(ok, "systemd-analyze verify: {out}");
        let (ok, out) = sh(Command::new("getent").args(["passwd", "vnet"]));
        assert!(ok, "postinst created the vnet user: {out}");
        // The example configuration is one vnetd reads.
        let (ok, out) = sh(Command::new("/usr/bin/vnetd").args([
            "--config",
            "/etc/vnet/vnetd.toml",
            "--workers",
            "0",
        ]));
        assert!(
            !ok && out.contains("workers"),
            "the file parses, the flag is refused: {out}"
        );
        let (ok, files) = sh(Command::new("dpkg").args(["-L", "vnet"]));
        assert!(ok, "{files}");
        // `dpkg -r` leaves only the configuration (a conffile), `dpkg -P` that too. Every
        // path of ours has "vnet" in it; shared directories (/usr/bin...) stay.
        let (ok, out) = sh(Command::new("dpkg").args(["-r", "vnet"]));
        assert!(ok, "dpkg -r: {out}");
        let conf = "/etc/vnet/vnetd.toml";
        for f in files.lines().filter(|f| f.contains("vnet")) {
            if !conf.starts_with(f) {
                assert!(!Path::new(f).exists(), "{f} left behind by dpkg -r");
            }
        }
        assert!(Path::new(conf).exists(), "dpkg -r keeps the configuration");
        let (ok, out) = sh(Command::new("dpkg").args(["-P", "vnet"]));
        assert!(ok, "dpkg -P: {out}");
        for f in files.lines().filter(|f| f.contains("vnet")) {
            assert!(!Path::new(f).exists(), "{f} left behind by dpkg -P");
        }
    }
}
