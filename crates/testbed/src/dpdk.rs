//! DPDK's `dpdk-testpmd` as tests and benches run it: finding it and the hugepages it
//! needs, its command line (EAL arguments, `net_virtio_user` ports), the port MACs it
//! prints, and removing what it leaves behind (runtime directory, hugepage files).
//!
//! Every testpmd gets its own `--file-prefix`; its hugepage files are named after it
//! (`<prefix>map_*`) and keep their pages reserved until deleted, so [`remove_files`]
//! must run when it is gone, also after a panic.

use std::path::{Path, PathBuf};

use wire::MacAddr;

/// The program.
pub const TESTPMD: &str = "dpdk-testpmd";
/// Hugepage memory of each testpmd, MiB (`-m`): all of it preallocated at start, so the
/// memory table a virtio-user port gives its backend does not change while traffic runs.
pub const MEM_MB: u32 = 256;
/// Buffers of each testpmd (`--total-num-mbufs`): they fit in [`MEM_MB`].
pub const MBUFS: u32 = 16384;

/// `prog` on `$PATH`.
pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Mount points of hugetlbfs file systems.
pub fn hugetlbfs_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "hugetlbfs").then(|| PathBuf::from(dir))
        })
        .collect()
}

/// Free hugepages of the default size (`HugePages_Free`).
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Why testpmd cannot run here with `pages` free 2 MiB hugepages, or None when it can.
pub fn unavailable(pages: u64) -> Option<String> {
    if which(TESTPMD).is_none() {
        return Some(format!("{TESTPMD} is not on PATH"));
    }
    if hugetlbfs_mounts().is_empty() {
        return Some("no hugetlbfs is mounted".into());
    }
    let free = free_hugepages();
    (free < pages).then(|| format!("only {free} hugepages are free"))
}

/// Where DPDK keeps runtime directories (`/var/run/dpdk` for root).
pub fn runtime_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/var/run/dpdk"), PathBuf::from("/tmp/dpdk")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(x).join("dpdk"));
    }
    dirs
}

/// Removes what a testpmd with this `--file-prefix` leaves behind: its runtime directory
/// and its hugepage files.
pub fn remove_files(prefix: &str) {
    for dir in runtime_dirs() {
        let _ = std::fs::remove_dir_all(dir.join(prefix));
    }
    let map = format!("{prefix}map_");
    for mount in hugetlbfs_mounts() {
        for entry in std::fs::read_dir(&mount).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&map) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// CPUs this process may run on (`Cpus_allowed_list`).
pub fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("");
    parse_cpu_list(list)
}

/// A CPU list as the kernel writes it: `0-1,4`.
pub fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|s| !s.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            cpus.extend(a..=b);
        }
    }
    cpus
}

/// testpmd's arguments: lcore 0 (main) on CPU `main`, lcore 1 (forwarding) on CPU `fwd`,
/// no PCI, [`MEM_MB`] of single-file hugepage segments under `prefix`, the `vdevs`, then
/// after `--` [`MBUFS`] buffers and the application arguments `app`.
pub fn testpmd_args(
    (main, fwd): (usize, usize),
    prefix: &str,
    vdevs: &[String],
    app: &[&str],
) -> Vec<String> {
    let mut args = vec![
        format!("--lcores=0@{main},1@{fwd}"),
        "--no-pci".into(),
        "--no-telemetry".into(),
        "--single-file-segments".into(),
        "-m".into(),
        MEM_MB.to_string(),
        format!("--file-prefix={prefix}"),
    ];
    args.extend(vdevs.iter().map(|v| format!("--vdev={v}")));
    args.push("--".into());
    args.push(format!("--total-num-mbufs={MBUFS}"));
    args.extend(app.iter().map(ToString::to_string));
    args
}

/// One `net_virtio_user` port of a testpmd: the guest side of a vhost-user socket.
#[derive(Debug, Clone, Copy)]
pub struct VirtioUser<'a> {
    /// The vhost-user socket.
    pub sock: &'a Path,
    /// The port's MAC address.
    pub mac: MacAddr,
    /// Queue pairs (`queues=`; more than one also needs testpmd's `--rxq` / `--txq`).
    pub queues: u16,
    /// More devargs, comma separated (e.g. `in_order=0`), or empty.
    pub extra: &'a str,
}

impl VirtioUser<'_> {
    /// The vdev of port `index`: `net_virtio_user<index>,path=...,queues=...,mac=...[,extra]`.
    pub fn vdev(&self, index: usize) -> String {
        let mut spec = format!(
            "net_virtio_user{index},path={},queues={},mac={}",
            self.sock.display(),
            self.queues,
            self.mac
        );
        if !self.extra.is_empty() {
            spec.push(',');
            spec.push_str(self.extra);
        }
        spec
    }
}

/// The `Port N: MAC` lines of testpmd's start-up output, in port order.
pub fn port_macs(out: &str) -> Vec<MacAddr> {
    let mut macs = Vec::new();
    for line in out.lines() {
        let Some(rest) = line.trim().strip_prefix("Port ") else {
            continue;
        };
        let Some((n, mac)) = rest.split_once(": ") else {
            continue;
        };
        if let (Ok(n), Ok(mac)) = (n.parse::<usize>(), mac.trim().parse::<MacAddr>()) {
            if n == macs.len() {
                macs.push(mac);
            }
        }
    }
    macs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_port_macs() {
        let out = "Configuring Port 0 (socket 0)\nPort 0: 52:54:00:BE:00:0A\n\
                   Configuring Port 1 (socket 0)\nPort 1: 52:54:00:BE:00:0B\n\
                   Port 1: link state change event\n";
        assert_eq!(
            port_macs(out),
            [
                MacAddr([0x52, 0x54, 0, 0xbe, 0, 0x0a]),
                MacAddr([0x52, 0x54, 0, 0xbe, 0, 0x0b])
            ]
        );
    }

    #[test]
    fn command_lines() {
        assert_eq!(parse_cpu_list("0-1\n"), [0, 1]);
        assert_eq!(parse_cpu_list("0,2-3"), [0, 2, 3]);
        let port = VirtioUser {
            sock: Path::new("/tmp/a.sock"),
            mac: MacAddr([0x52, 0x54, 0, 0, 0, 0x0a]),
            queues: 2,
            extra: "in_order=0",
        };
        assert_eq!(
            port.vdev(1),
            "net_virtio_user1,path=/tmp/a.sock,queues=2,mac=52:54:00:00:00:0a,in_order=0"
        );
        let args = testpmd_args((0, 1), "p", &[port.vdev(0)], &["-i"]);
        assert_eq!(
            args.join(" "),
            "--lcores=0@0,1@1 --no-pci --no-telemetry --single-file-segments -m 256 \
             --file-prefix=p --vdev=net_virtio_user0,path=/tmp/a.sock,queues=2,\
             mac=52:54:00:00:00:0a,in_order=0 -- --total-num-mbufs=16384 -i"
        );
    }
}
