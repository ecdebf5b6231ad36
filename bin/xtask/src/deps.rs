//! `cargo xtask deps`: install the system packages the tests need and reserve hugepages.
//!
//! Idempotent and silent when everything is present. Installing needs root; when something
//! is missing and we are not root, it says what and stops.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{self, has_command, is_root, warn};

/// Something the tests need from the system.
#[derive(Debug, Clone, Copy)]
struct Requirement {
    /// A program looked up like `command -v` does, or an absolute path to a file whose last
    /// component may hold one `*` (`/boot/vmlinuz-*-cloud-amd64`).
    probe: &'static str,
    /// The Debian package that provides it.
    package: &'static str,
    /// Why the tests need it, printed when it gets installed.
    reason: &'static str,
}

const fn need(probe: &'static str, package: &'static str, reason: &'static str) -> Requirement {
    Requirement {
        probe,
        package,
        reason,
    }
}

/// The table: one line per requirement.
#[rustfmt::skip]
const REQUIREMENTS: &[Requirement] = &[
    need("dpdk-testpmd", "dpdk-dev", "dpdk-testpmd drives vnetd as a third-party virtio-user frontend"),
    need("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk", "openvswitch-switch-dpdk", "OVS-DPDK is the second anchor of the VM-to-VM bench (a private instance; the system service is stopped)"),
    need("ip", "iproute2", "ip sets up TAP devices and network namespaces in tests"),
    need("ethtool", "ethtool", "ethtool reads and sets offloads of TAP devices in tests"),
    need("ping", "iputils-ping", "ping from a test network namespace reaches a frontend through a TAP port"),
    need("python3", "python3-minimal", "a python3 one-liner injects GSO frames with PACKET_VNET_HDR in the TAP tests"),
    need("qemu-system-x86_64", "qemu-system-x86", "QEMU boots the Linux guests of the end-to-end tests (tests/guests.rs) on vnetd"),
    need("busybox", "busybox-static", "the static busybox is the guest image's userland (shell, ip, ping, insmod)"),
    need("iperf3", "iperf3", "iperf3 and its libraries are copied into the guest image for throughput tests"),
    need("tcpdump", "tcpdump", "tcpdump reads the pcapng of `vnetctl capture` in tests/tap.rs"),
    need("libvirtd", "libvirt-daemon-system", "a libvirt domain with a vhostuser interface boots on vnetd in tests/libvirt.rs (README's recipe)"),
    need("virsh", "libvirt-clients", "virsh creates and destroys that domain"),
    need("prometheus", "prometheus", "a real Prometheus server scrapes vnetd's /metrics in tests/metrics.rs (a private instance on loopback)"),
];

/// DPDK's EAL takes its memory from 2 MiB hugepages; 1024 of them is 2 GiB.
const HUGEPAGES: u64 = 1024;
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const HUGETLBFS_MOUNT: &str = "/dev/hugepages";

/// How long to wait for another apt/dpkg process to release its lock.
const APT_LOCK_WAIT: Duration = Duration::from_secs(5 * 60);
const APT_LOCK_POLL: Duration = Duration::from_secs(5);

/// Runs the command.
pub fn run() -> Result<()> {
    install_packages()?;
    reserve_hugepages();
    mount_hugetlbfs();
    Ok(())
}

fn install_packages() -> Result<()> {
    let missing: Vec<Requirement> = REQUIREMENTS
        .iter()
        .copied()
        .filter(|req| !probe_present(req.probe))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = Vec::new();
    for req in &missing {
        if !packages.contains(&req.package) {
            packages.push(req.package);
        }
    }

    if !is_root() {
        let mut message = String::from("missing system packages, and not running as root:");
        for req in &missing {
            message += &format!(
                "\n  {} ({} not found): {}",
                req.package, req.probe, req.reason
            );
        }
        message += &format!(
            "\nrun `cargo xtask deps` as root, or install them yourself:\
             \n  sudo apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        );
        bail!(message);
    }

    for req in &missing {
        println!("installing {}: {}", req.package, req.reason);
    }
    apt_get(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&packages);
    apt_get(&install)?;
    if packages.contains(&"openvswitch-switch-dpdk") {
        stop_system_ovs();
    }

    let still_missing: Vec<String> = missing
        .iter()
        .filter(|req| !probe_present(req.probe))
        .map(|req| format!("{} (from {})", req.probe, req.package))
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "installed, but still not found: {}",
            still_missing.join(", ")
        );
    }
    Ok(())
}

/// Stops and disables the system's Open vSwitch, which installing `openvswitch-switch-dpdk`
/// may have started: the bench runs a private OVS of its own, and nothing else should use
/// the CPUs or hugepages. Only called right after installing it, so that it was not in use.
fn stop_system_ovs() {
    let quiet = |cmd: &mut Command| {
        let _ = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    if has_command("systemctl") {
        quiet(Command::new("systemctl").args([
            "disable",
            "--now",
            "openvswitch-switch.service",
            "ovs-vswitchd.service",
            "ovsdb-server.service",
        ]));
    }
    if Path::new("/etc/init.d/openvswitch-switch").exists() {
        quiet(Command::new("/etc/init.d/openvswitch-switch").arg("stop"));
    }
}

/// Whether a [`Requirement::probe`] finds what it looks for.
fn probe_present(probe: &str) -> bool {
    if !probe.starts_with('/') {
        return has_command(probe);
    }
    let path = Path::new(probe);
    let pattern = path.file_name().map(|name| name.to_string_lossy());
    match (pattern, path.parent()) {
        (Some(pattern), Some(dir)) if pattern.contains('*') => {
            let (prefix, suffix) = pattern.split_once('*').unwrap_or((&pattern, ""));
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries.filter_map(Result::ok).any(|entry| {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    name.len() >= prefix.len() + suffix.len()
                        && name.starts_with(prefix)
                        && name.ends_with(suffix)
                })
            })
        }
        _ => path.exists(),
    }
}

/// Runs `apt-get` non-interactively, waiting while another apt or dpkg holds the lock.
fn apt_get(args: &[&str]) -> Result<()> {
    let deadline = Instant::now() + APT_LOCK_WAIT;
    let mut first = true;
    loop {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let shown = util::display(&cmd);
        if first {
            eprintln!("$ {shown}");
            first = false;
        }
        let output = cmd
            .spawn()
            .and_then(|child| child.wait_with_output())
            .with_context(|| format!("cannot run `{shown}`"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            eprint!("{stderr}");
            return Ok(());
        }
        let now = Instant::now();
        if is_lock_error(&stderr) && now < deadline {
            let left = deadline.duration_since(now).as_secs();
            let holder = stderr
                .lines()
                .find(|line| line.contains("lock"))
                .unwrap_or("another apt or dpkg holds its lock")
                .trim_start_matches("E: ");
            eprintln!("apt is busy ({holder}); retrying, giving up in {left} s");
            std::thread::sleep(APT_LOCK_POLL);
            continue;
        }
        eprint!("{stderr}");
        bail!("`{shown}` failed: {}", output.status);
    }
}

fn is_lock_error(stderr: &str) -> bool {
    [
        "Could not get lock",
        "Unable to acquire the dpkg frontend lock",
        "Unable to lock",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

/// Raises `vm.nr_hugepages` to [`HUGEPAGES`]; failure is a warning (tests needing DPDK then
/// skip, or fail under `VNET_REQUIRE_DPDK=1`).
fn reserve_hugepages() {
    let current = match read_nr_hugepages() {
        Ok(n) => n,
        Err(err) => {
            warn(format!("cannot read {NR_HUGEPAGES}: {err:#}"));
            return;
        }
    };
    if current >= HUGEPAGES {
        return;
    }
    println!(
        "reserving {HUGEPAGES} hugepages (was {current}): DPDK's testpmd takes its memory from hugepages"
    );
    if let Err(err) = std::fs::write(NR_HUGEPAGES, HUGEPAGES.to_string()) {
        let hint = if is_root() { "" } else { " (not root)" };
        warn(format!("cannot write {NR_HUGEPAGES}{hint}: {err}"));
        return;
    }
    match read_nr_hugepages() {
        Ok(n) if n < HUGEPAGES => {
            warn(format!(
                "the kernel reserved only {n} of {HUGEPAGES} hugepages"
            ));
        }
        Ok(_) => {}
        Err(err) => warn(format!("cannot read {NR_HUGEPAGES}: {err:#}")),
    }
}

fn read_nr_hugepages() -> Result<u64> {
    let text = std::fs::read_to_string(NR_HUGEPAGES)?;
    text.trim()
        .parse()
        .with_context(|| format!("unexpected contents {text:?}"))
}

/// Mounts hugetlbfs at [`HUGETLBFS_MOUNT`] unless it is there; failure is a warning.
fn mount_hugetlbfs() {
    let mounts = match std::fs::read_to_string("/proc/mounts") {
        Ok(mounts) => mounts,
        Err(err) => {
            warn(format!("cannot read /proc/mounts: {err}"));
            return;
        }
    };
    if hugetlbfs_mounted(&mounts, HUGETLBFS_MOUNT) {
        return;
    }
    println!("mounting hugetlbfs at {HUGETLBFS_MOUNT}: DPDK maps its hugepages from there");
    if let Err(err) = std::fs::create_dir_all(HUGETLBFS_MOUNT) {
        warn(format!("cannot create {HUGETLBFS_MOUNT}: {err}"));
        return;
    }
    let mut mount = Command::new("mount");
    mount.args(["-t", "hugetlbfs", "nodev", HUGETLBFS_MOUNT]);
    if let Err(err) = util::run(&mut mount) {
        let hint = if is_root() { "" } else { " (not root)" };
        warn(format!("cannot mount hugetlbfs{hint}: {err:#}"));
    }
}

/// Whether `/proc/mounts` text has a hugetlbfs at `mountpoint`.
fn hugetlbfs_mounted(mounts: &str, mountpoint: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next(), fields.next(), fields.next());
        target == Some(mountpoint) && fstype == Some("hugetlbfs")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_commands_paths_and_patterns() {
        assert!(probe_present("sh"));
        assert!(!probe_present("vnet-no-such-program"));
        assert!(probe_present("/proc/self/status"));
        assert!(!probe_present("/proc/self/vnet-no-such-file"));
        assert!(probe_present("/proc/self/sta*"));
        assert!(probe_present("/proc/self/*tus"));
        assert!(!probe_present("/proc/self/status*x"));
        assert!(!probe_present("/vnet-no-such-dir/*"));
    }

    #[test]
    fn table_is_well_formed() {
        for req in REQUIREMENTS {
            assert!(!req.probe.is_empty() && !req.package.is_empty() && !req.reason.is_empty());
            assert!(!req.package.contains(' '), "one package per line: {req:?}");
        }
    }

    #[test]
    fn recognises_apt_lock_errors() {
        assert!(is_lock_error(
            "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42 (apt-get)"
        ));
        assert!(is_lock_error(
            "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?"
        ));
        assert!(!is_lock_error("E: Unable to locate package dpdk-dev"));
    }

    #[test]
    fn finds_hugetlbfs_in_proc_mounts() {
        let mounts =
            "proc /proc proc rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,pagesize=2M 0 0\n";
        assert!(hugetlbfs_mounted(mounts, "/dev/hugepages"));
        assert!(!hugetlbfs_mounted(
            "tmpfs /dev/hugepages tmpfs rw 0 0\n",
            "/dev/hugepages"
        ));
        assert!(!hugetlbfs_mounted("", "/dev/hugepages"));
    }
}
