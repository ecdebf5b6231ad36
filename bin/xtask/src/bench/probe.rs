//! Machine probes: the core-to-core round trip of the two CPUs, CPU times of processes and
//! of the whole machine (/proc), other QEMU or testpmd processes, what the machine is
//! (kernel, CPU, DPDK, commit), and what killed benches left behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::Stamp;
use super::TAG;
use crate::util;

/// Measures the round trip of a cache line between two CPUs: two threads, each pinned to
/// one CPU (`taskset -p` on its thread id), take turns incrementing a shared counter.
/// Returns ns per round trip.
pub(super) fn pingpong_ns(cpu_a: usize, cpu_b: usize) -> Result<f64> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    pub(super) const ROUNDS: u64 = 100_000;
    pub(super) const GIVE_UP: Duration = Duration::from_secs(2);

    let counter = Arc::new(AtomicU64::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(std::sync::Barrier::new(2));
    // Player `me` (0 or 1) moves the counter from odd/even to the next value.
    let player = |cpu: usize, me: u64| {
        let (counter, abort, ready) = (counter.clone(), abort.clone(), ready.clone());
        std::thread::spawn(move || -> Result<Duration> {
            let pinned = pin_this_thread(cpu);
            if pinned.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            ready.wait();
            pinned?;
            let started = Instant::now();
            let mut spins = 0u32;
            for round in 0..ROUNDS {
                let mine = 2 * round + me;
                while counter.load(Ordering::Acquire) != mine {
                    std::hint::spin_loop();
                    spins = spins.wrapping_add(1);
                    if spins % 4096 == 0
                        && (abort.load(Ordering::Relaxed) || started.elapsed() > GIVE_UP)
                    {
                        abort.store(true, Ordering::Relaxed);
                        bail!("the other CPU does not answer");
                    }
                }
                counter.store(mine + 1, Ordering::Release);
            }
            Ok(started.elapsed())
        })
    };
    let a = player(cpu_a, 0);
    let b = player(cpu_b, 1);
    let a = a
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))?;
    let b = b
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))?;
    let elapsed = a?.max(b?);
    Ok(elapsed.as_secs_f64() * 1e9 / ROUNDS as f64)
}

/// Pins the calling thread to `cpu`, with `taskset -p` on its thread id.
pub(super) fn pin_this_thread(cpu: usize) -> Result<()> {
    // /proc/thread-self -> "<pid>/task/<tid>"
    let link = fs::read_link("/proc/thread-self").context("cannot read /proc/thread-self")?;
    let tid = link
        .file_name()
        .context("unexpected /proc/thread-self")?
        .to_string_lossy()
        .into_owned();
    let status = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run taskset")?;
    if !status.success() {
        bail!("taskset -p -c {cpu} {tid} failed: {status}");
    }
    Ok(())
}

/// utime + stime of a process (all its threads), in clock ticks.
pub(super) fn proc_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_proc_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat: {stat}"))
}

pub(super) fn parse_proc_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU times at one instant, in clock ticks: the switch's process, each group of our other
/// processes (generator, guest, sender...), and the whole machine.
#[derive(Debug, Clone)]
pub(super) struct Ticks {
    switch: u64,
    groups: Vec<u64>,
    system: SystemTicks,
}

impl Ticks {
    /// Reads the times of process `switch` and of each group of `groups` (the sum of its
    /// processes), then the machine's.
    pub(super) fn read(switch: u32, groups: &[&[u32]]) -> Result<Ticks> {
        let switch = proc_ticks(switch)?;
        let groups = groups
            .iter()
            .map(|pids| pids.iter().map(|&p| proc_ticks(p)).sum::<Result<u64>>())
            .collect::<Result<Vec<u64>>>()?;
        Ok(Ticks {
            switch,
            groups,
            system: SystemTicks::read()?,
        })
    }
}

/// CPU use from one [`Ticks`] to a later one, % of one CPU.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CpuUse {
    /// The switch.
    pub(super) switch: f64,
    /// Each group of our other processes, in the order read.
    pub(super) groups: Vec<f64>,
    /// Everything else the machine ran.
    pub(super) foreign: f64,
    /// What the hypervisor stole.
    pub(super) steal: f64,
}

impl CpuUse {
    /// The use from `a` to `b`, `wall` apart; `percent` turns ticks over a wall time into %
    /// of one CPU.
    pub(super) fn between(
        a: &Ticks,
        b: &Ticks,
        wall: Duration,
        percent: impl Fn(u64, Duration) -> f64,
    ) -> CpuUse {
        let switch = b.switch.saturating_sub(a.switch);
        let groups: Vec<u64> = b
            .groups
            .iter()
            .zip(&a.groups)
            .map(|(b, a)| b.saturating_sub(*a))
            .collect();
        let ours = switch + groups.iter().sum::<u64>();
        let busy = b.system.busy.saturating_sub(a.system.busy);
        CpuUse {
            switch: percent(switch, wall),
            groups: groups.iter().map(|&t| percent(t, wall)).collect(),
            foreign: percent(busy.saturating_sub(ours), wall),
            steal: percent(b.system.steal.saturating_sub(a.system.steal), wall),
        }
    }
}

/// The whole machine's CPU time, from /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(super) struct SystemTicks {
    /// user + nice + system + irq + softirq (guest time is inside user).
    pub(super) busy: u64,
    pub(super) steal: u64,
}

impl SystemTicks {
    pub(super) fn read() -> Result<SystemTicks> {
        let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        parse_system_ticks(&stat).context("unexpected /proc/stat")
    }
}

pub(super) fn parse_system_ticks(stat: &str) -> Option<SystemTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(SystemTicks {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        steal: at(7),
    })
}

/// Clock ticks per second of /proc times (`getconf CLK_TCK`; 100 on Linux).
pub(super) fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        })
        .map_or(100.0, f64::from)
}

/// Other QEMU or testpmd processes (not in `ours`), as `comm[pid]`.
pub(super) fn foreign_processes(ours: &[u32]) -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me || ours.contains(&pid) {
            continue;
        }
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm.starts_with("qemu-system") || comm.contains("testpmd") {
            found.push(format!("{comm}[{pid}]"));
        }
    }
    found
}

/// Removes sockets directories, DPDK runtime directories and hugepage files of earlier
/// bench processes that are gone (killed before they could clean up).
pub(super) fn sweep_stale() {
    let mut places: Vec<PathBuf> = testbed::dpdk::runtime_dirs();
    places.extend(testbed::dpdk::hugetlbfs_mounts());
    places.push(std::env::temp_dir());
    for place in places {
        for entry in fs::read_dir(&place).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = stale_owner(&name) else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = entry.path();
            eprintln!("removing {} (left by bench process {pid})", path.display());
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// The PID in a name we gave: `vnet-bench-<pid>` or `vnet-bench-<pid>-...`.
pub(super) fn stale_owner(name: &str) -> Option<u32> {
    testbed::netns::owner_pid(TAG, name)
}

/// The date, kernel, CPU, DPDK version, commit and command.
pub(super) fn machine_info(stamp: &Stamp, command: &str) -> BTreeMap<&'static str, String> {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let capture = |cmd: &mut Command| {
        cmd.stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let dpdk = capture(Command::new("dpkg-query").args(["-W", "-f=${Version}", "dpdk-dev"]))
        .or_else(|| capture(Command::new("pkg-config").args(["--modversion", "libdpdk"])))
        .unwrap_or_else(|| "unknown".into());
    let root = util::workspace_root();
    let commit =
        capture(
            Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(["rev-parse", "--short", "HEAD"]),
        )
        .unwrap_or_else(|| "unknown".into());
    let dirty = capture(Command::new("git").arg("-C").arg(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_some();
    let mut info = BTreeMap::new();
    info.insert("date", stamp.iso());
    info.insert(
        "kernel",
        read("/proc/sys/kernel/osrelease").trim().to_string(),
    );
    info.insert("cpu", cpu);
    info.insert("cpus", cpus.to_string());
    info.insert("dpdk", dpdk);
    info.insert(
        "commit",
        if dirty {
            format!("{commit} (with uncommitted changes)")
        } else {
            commit
        },
    );
    info.insert("command", command.to_string());
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_times() {
        let stat = "1234 (dpdk-testpmd (x)) S 1 1234 1 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 \
                    4 0 100 0 0";
        assert_eq!(parse_proc_ticks(stat), Some(325));
        let sys = parse_system_ticks("cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!((sys.busy, sys.steal), (21, 4));
    }

    #[test]
    fn cpu_use_between_samples() {
        let sys = |busy, steal| SystemTicks { busy, steal };
        let a = Ticks {
            switch: 100,
            groups: vec![10, 0],
            system: sys(1000, 5),
        };
        let b = Ticks {
            switch: 200,
            groups: vec![60, 20],
            system: sys(1300, 15),
        };
        let cpu = CpuUse::between(&a, &b, Duration::from_secs(1), |t, _| t as f64);
        assert_eq!(
            cpu,
            CpuUse {
                switch: 100.0,
                groups: vec![50.0, 20.0],
                foreign: 130.0,
                steal: 10.0
            }
        );
    }

    #[test]
    #[ignore = "spins two CPUs; run by hand"]
    fn pingpong_runs() {
        let cpus = testbed::dpdk::allowed_cpus();
        let ns = pingpong_ns(cpus[0], cpus[cpus.len() - 1]).unwrap();
        eprintln!("round trip {ns:.0} ns");
        assert!(ns > 1.0 && ns < 100_000.0, "{ns}");
    }

    #[test]
    fn stale_names() {
        assert_eq!(stale_owner("vnet-bench-42"), Some(42));
        assert_eq!(stale_owner("vnet-bench-42-03-dpdkmap_0"), Some(42));
        assert_eq!(stale_owner("vnet-bench-42x"), None);
        assert_eq!(stale_owner("vnet-test-42"), None);
    }
}
