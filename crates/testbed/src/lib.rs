//! Real Linux guests on vnetd: end-to-end tests and demos.
//!
//! * [`image`]: builds (once, cached under `target/guest/`) a guest of Debian's cloud kernel
//!   and a busybox initramfs with the virtio-net modules, iperf3 and an init script that
//!   configures `eth0` from `vnet.*` kernel parameters, runs tests and reports them on the
//!   serial console as `VNET-*` lines.
//! * [`qemu`]: boots such a guest in QEMU (TCG) with a vhost-user virtio-net device, reads
//!   its console, parses its results, resets it through the monitor.
//! * [`GuestArgs`]: the `vnet.*` parameters, typed.
//! * [`netns`]: network namespaces the tests and benches create and delete.
//! * [`dpdk`]: `dpdk-testpmd` command lines, hugepages and clean-up.
//!
//! MAC addresses are [`MacAddr`] (the `wire` crate's) everywhere.
//!
//! ```no_run
//! use std::time::Duration;
//! use vnet_testbed::{ensure_image, GuestArgs, Role, Vm, VmConfig};
//!
//! let image = ensure_image(&vnet_testbed::default_target_dir())?;
//! let mut cfg = VmConfig::new("vm2", &image, "/tmp/vm2.sock", "/tmp/logs");
//! cfg.mac = vnet_testbed::MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, 0x02]);
//! cfg.cmdline = GuestArgs::client("198.18.0.2/24", "198.18.0.1", &["ping"]).to_cmdline();
//! let mut vm = Vm::boot(&cfg)?;
//! vm.wait_ready(Duration::from_secs(60))?;
//! let results = vm.wait_done(Duration::from_secs(120))?;
//! assert!(results.iter().all(|r| r.ok));
//! # Ok::<(), vnet_testbed::Error>(())
//! ```
//!
//! Guests use addresses from 198.18.0.0/15 (RFC 2544 benchmarking) and have no network
//! device besides the vhost-user one.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cpio;
pub mod dpdk;
mod error;
pub mod image;
pub mod netns;
pub mod qemu;
pub mod skip;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use image::{ensure_image, GuestImage};
pub use netns::Netns;
pub use qemu::{Ready, TestResult, Vm, VmConfig};
pub use skip::skip;
pub use wire::MacAddr;

/// What the guest's init does after bringing `eth0` up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs `iperf3 -s` and answers pings until stopped (`vnet.stop_peer=1` on the client,
    /// `vnet.duration`, or the harness killing the VM).
    Server,
    /// Runs the tests against the peer, prints the results and `VNET-DONE`.
    Client,
    /// Only configures the interface, then stays up.
    Idle,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
            Role::Idle => "idle",
        }
    }
}

/// The `vnet.*` kernel parameters the init script reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestArgs {
    /// `vnet.ip`: the address with its prefix length, e.g. `198.18.0.1/24`.
    pub ip: String,
    /// `vnet.peer`: the address the client tests talk to.
    pub peer: Option<String>,
    /// `vnet.mtu`: set on eth0 (else the device's, or 1500).
    pub mtu: Option<u32>,
    /// `vnet.role`.
    pub role: Role,
    /// `vnet.tests`: `ping`, `ping_big` (a full-MTU ping), `iperf_tx`, `iperf_rx`, and
    /// `iperf_tx_p2`, `iperf_rx_p2` (two parallel streams).
    pub tests: Vec<String>,
    /// `vnet.iperf_secs`: how long each iperf3 test runs.
    pub iperf_secs: u32,
    /// `vnet.wait`: how long a client waits for its peer to answer pings.
    pub wait_secs: u32,
    /// `vnet.duration`: how long a server serves at most.
    pub duration_secs: Option<u32>,
    /// `vnet.stop_peer=1`: the client tells its server to finish when done.
    pub stop_peer: bool,
    /// `vnet.after=stay`: stay up after `VNET-DONE` (e.g. for [`Vm::reset`]) instead of
    /// powering off.
    pub stay: bool,
}

impl GuestArgs {
    /// A server at `ip`.
    pub fn server(ip: &str) -> Self {
        Self {
            ip: ip.to_string(),
            peer: None,
            mtu: None,
            role: Role::Server,
            tests: Vec::new(),
            iperf_secs: 3,
            wait_secs: 60,
            duration_secs: None,
            stop_peer: false,
            stay: false,
        }
    }

    /// A client at `ip` running `tests` against `peer`.
    pub fn client(ip: &str, peer: &str, tests: &[&str]) -> Self {
        Self {
            peer: Some(peer.to_string()),
            role: Role::Client,
            tests: tests.iter().map(ToString::to_string).collect(),
            ..Self::server(ip)
        }
    }

    /// The kernel command line words.
    pub fn to_cmdline(&self) -> String {
        let mut words = vec![
            format!("vnet.ip={}", self.ip),
            format!("vnet.role={}", self.role.as_str()),
            format!("vnet.iperf_secs={}", self.iperf_secs),
            format!("vnet.wait={}", self.wait_secs),
        ];
        if let Some(peer) = &self.peer {
            words.push(format!("vnet.peer={peer}"));
        }
        if let Some(mtu) = self.mtu {
            words.push(format!("vnet.mtu={mtu}"));
        }
        if !self.tests.is_empty() {
            words.push(format!("vnet.tests={}", self.tests.join(",")));
        }
        if let Some(d) = self.duration_secs {
            words.push(format!("vnet.duration={d}"));
        }
        if self.stop_peer {
            words.push("vnet.stop_peer=1".to_string());
        }
        if self.stay {
            words.push("vnet.after=stay".to_string());
        }
        words.join(" ")
    }
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (relative to the workspace root) or
/// `<workspace>/target`.
pub fn default_target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The workspace root: this crate lives in `<root>/crates/testbed`.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// What is missing on this host to build the image and boot guests, one entry per thing
/// with the Debian package that provides it; empty when all is there.
pub fn missing_prerequisites() -> Vec<String> {
    let qemu = std::env::var("VNET_QEMU").unwrap_or_else(|_| qemu::QEMU.to_string());
    let mut missing = Vec::new();
    for (program, package) in [
        (qemu.as_str(), "qemu-system-x86"),
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
        ("ldd", "libc-bin"),
        ("iperf3", "iperf3"),
    ] {
        if !has_program(program) {
            missing.push(format!("{program} (package {package})"));
        }
    }
    missing
}

/// Whether `program` is a path to a file or found on `$PATH`.
fn has_program(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .any(|dir| dir.join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_args_to_cmdline() {
        let mut a = GuestArgs::client("198.18.0.2/24", "198.18.0.1", &["ping", "iperf_tx"]);
        a.mtu = Some(9000);
        a.stop_peer = true;
        assert_eq!(
            a.to_cmdline(),
            "vnet.ip=198.18.0.2/24 vnet.role=client vnet.iperf_secs=3 vnet.wait=60 \
             vnet.peer=198.18.0.1 vnet.mtu=9000 vnet.tests=ping,iperf_tx vnet.stop_peer=1"
        );
        let s = GuestArgs::server("198.18.0.1/24").to_cmdline();
        assert_eq!(
            s,
            "vnet.ip=198.18.0.1/24 vnet.role=server vnet.iperf_secs=3 vnet.wait=60"
        );
    }

    #[test]
    fn init_script_reads_every_parameter() {
        for key in [
            "vnet.ip=",
            "vnet.peer=",
            "vnet.mtu=",
            "vnet.role=",
            "vnet.tests=",
            "vnet.iperf_secs=",
            "vnet.wait=",
            "vnet.duration=",
            "vnet.stop_peer=",
            "vnet.after=",
        ] {
            assert!(image::INIT_SCRIPT.contains(&format!("{key}*)")), "{key}");
        }
    }

    #[test]
    fn target_dir_is_in_the_workspace() {
        assert!(workspace_root().join("Cargo.toml").is_file());
    }
}
