//! What every scenario needs: the programs, the two CPUs, the run's directories, waiting
//! for an idle machine, vnetd's command line and control socket, CPU figures.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use testbed::dpdk;

use super::probe::{
    clk_tck, foreign_processes, pingpong_ns, proc_ticks, CpuUse, SystemTicks, Ticks,
};
use super::proc::{sleep, Proc, TempDir};
use super::{target_dir, Args, BUSY_REWAIT_SECS, FOREIGN_CPU_LIMIT, IDLE_WINDOW, TAG};
use crate::util::warn;

/// Suffix of a `--modes` entry that runs vnetd with tenant isolation on (`poll+isolated`).
pub(super) const ISOLATED: &str = "+isolated";
/// The isolation options of those runs: port security (each port sends from its `mac=`),
/// an access VLAN, ingress and egress limits of 100 Mpps, storm control at 1 Mpps; all far
/// above what the generator offers, so only their cost shows.
const ISOLATION: &str = ",vlan=10,ingress-kpps=100000,egress-kpps=100000,flood-kpps=1000";

/// What the bench needs everywhere.
#[derive(Debug)]
pub(super) struct Ctx {
    /// `dpdk-testpmd`.
    pub(super) testpmd: PathBuf,
    /// The release vnetd and vnetctl the bench built.
    pub(super) vnetd: PathBuf,
    pub(super) vnetctl: PathBuf,
    /// This vnetd has `--datapath` (event / poll modes).
    pub(super) vnetd_has_datapath: bool,
    /// The generator's CPU.
    pub(super) cpu_gen: usize,
    /// The CPU of the switch under test.
    pub(super) cpu_switch: usize,
    /// Seconds of each measurement window (`--secs`).
    pub(super) secs: f64,
    /// Clock ticks per second of /proc times.
    pub(super) clk_tck: f64,
    /// Sockets of the current run live here (short paths: unix socket names are limited).
    pub(super) sock_dir: TempDir,
    /// Every process's output, kept.
    pub(super) logs: PathBuf,
    /// Runs so far: numbers their files.
    pub(super) seq: std::cell::Cell<usize>,
    /// The last wait for an idle machine timed out.
    pub(super) gave_up: std::cell::Cell<bool>,
    /// The shortest core-to-core round trip seen, ns: the host's best placement.
    pub(super) best_pingpong: std::cell::Cell<f64>,
}

impl Ctx {
    pub(super) fn new(args: &Args, logs: PathBuf) -> Result<Ctx> {
        let release = target_dir().join("release");
        let vnetd = release.join("vnetd");
        let help = Command::new(&vnetd)
            .arg("--help")
            .output()
            .with_context(|| format!("cannot run {} --help", vnetd.display()))?;
        let vnetd_has_datapath = String::from_utf8_lossy(&help.stdout).contains("--datapath");
        let cpus = dpdk::allowed_cpus();
        if cpus.len() < 2 {
            bail!("the bench needs two CPUs (generator, switch); this process may use {cpus:?}");
        }
        let sock_dir = std::env::temp_dir().join(format!("{TAG}{}", std::process::id()));
        fs::create_dir_all(&sock_dir)
            .with_context(|| format!("cannot create {}", sock_dir.display()))?;
        Ok(Ctx {
            testpmd: dpdk::which(dpdk::TESTPMD).context("dpdk-testpmd is not on PATH")?,
            vnetctl: release.join("vnetctl"),
            vnetd,
            vnetd_has_datapath,
            cpu_gen: cpus[0],
            cpu_switch: cpus[1],
            secs: args.secs,
            clk_tck: clk_tck(),
            sock_dir: TempDir(sock_dir),
            logs,
            seq: std::cell::Cell::new(0),
            gave_up: std::cell::Cell::new(false),
            best_pingpong: std::cell::Cell::new(f64::INFINITY),
        })
    }

    /// A fresh name for a run's files: `03-vnetd-event`.
    pub(super) fn next(&self, what: &str) -> String {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        format!("{n:02}-{}", what.replace(' ', "-"))
    }

    /// Waits until no other QEMU or testpmd runs, at most `limit_secs`; says what kept the
    /// machine busy if it still is.
    pub(super) fn wait_idle(&self, limit_secs: u64) -> Option<String> {
        // Once the machine stayed busy for a whole wait, do not wait that long before every
        // run: a short wait until it is idle again.
        let limit_secs = if self.gave_up.get() {
            limit_secs.min(BUSY_REWAIT_SECS)
        } else {
            limit_secs
        };
        let deadline = Instant::now() + Duration::from_secs(limit_secs);
        let mut said = false;
        loop {
            let mut others = foreign_processes(&[]);
            if others.is_empty() {
                match self.machine_load(Duration::from_secs(1)) {
                    Ok(load) if load > FOREIGN_CPU_LIMIT => {
                        others.push(format!("{load:.0} % of a CPU in use"));
                    }
                    _ => {
                        self.gave_up.set(false);
                        return None;
                    }
                }
            }
            if Instant::now() >= deadline {
                let list = others.join(", ");
                warn(format!(
                    "still busy after {limit_secs} s ({list}); measuring anyway"
                ));
                self.gave_up.set(true);
                return Some(list);
            }
            if !said {
                eprintln!(
                    "waiting for an idle machine (up to {limit_secs} s): {}",
                    others.join(", ")
                );
                said = true;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// CPU time the whole machine uses over `window`, in % of one CPU.
    pub(super) fn machine_load(&self, window: Duration) -> Result<f64> {
        let (t0, a) = (Instant::now(), SystemTicks::read()?);
        sleep(window);
        let (t1, b) = (Instant::now(), SystemTicks::read()?);
        Ok(self.percent(b.busy.saturating_sub(a.busy), t1 - t0))
    }

    /// The vnetd command line of one run (`mode` may end in [`ISOLATED`]): `ports` (name
    /// and MAC; a and b in most scenarios) with their sockets in `dir` and `queues` queue
    /// pairs each, pinned to the switch CPU. The one place that says how vnetd runs; a
    /// mode is a table row.
    pub(super) fn vnetd_command(
        &self,
        dir: &Path,
        mode: Option<&str>,
        queues: u16,
        ports: &[(&str, wire::MacAddr)],
    ) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(self.cpu_switch.to_string())
            .arg(&self.vnetd)
            .arg("--control")
            .arg(dir.join("ctl.sock"));
        // `MODE+isolated`: the same mode with tenant isolation on both ports (source MACs
        // checked, an access VLAN, rate limits far above the offered load); the plain rows
        // check nothing.
        let (mode, isolated) = match mode.and_then(|m| m.strip_suffix(ISOLATED)) {
            Some(m) => (Some(m), true),
            None => (mode, false),
        };
        for &(name, mac) in ports {
            let mut spec = format!(
                "name={name},socket={},mac={mac}",
                dir.join(format!("{name}.sock")).display()
            );
            if queues > 1 {
                spec += &format!(",queues={queues}");
            }
            spec += if isolated { ISOLATION } else { ",spoofchk=off" };
            cmd.arg("--vhost-user").arg(spec);
        }
        if let Some(mode) = mode.filter(|m| !m.is_empty()) {
            cmd.args(["--datapath", mode]);
        }
        cmd.env("VNET_LOG", "info");
        cmd
    }

    /// Waits until vnetd has both `ports` up; returns the negotiated features of its ports.
    pub(super) fn wait_ports_up(
        &self,
        ctl: &Path,
        vnetd: &mut Proc,
        ports: [&str; 2],
    ) -> Result<String> {
        let [p0, p1] = ports;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            vnetd.check_alive()?;
            let ports = self.vnetctl(ctl, "ports")?;
            let ports = ports.as_array().cloned().unwrap_or_default();
            let up = |name: &str| {
                ports
                    .iter()
                    .any(|p| p["name"] == name && p["state"].as_str().is_some_and(|s| s == "up"))
            };
            if up(p0) && up(p1) {
                let features: Vec<String> = ports
                    .iter()
                    .map(|p| {
                        format!(
                            "{}: {}",
                            p["name"].as_str().unwrap_or("?"),
                            p["features"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                return Ok(features.join("; "));
            }
            if Instant::now() > deadline {
                bail!("vnetd's ports did not come up: {ports:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fresh directory for a run's sockets, and its log's name (see [`Ctx::next`]).
    pub(super) fn run_dir(&self, what: &str) -> Result<RunDir> {
        let name = self.next(what);
        Ok(RunDir {
            dir: TempDir::create(self.sock_dir.0.join(&name))?,
            log: self.logs.join(format!("{name}.log")),
            name,
        })
    }

    /// Starts vnetd as [`Ctx::vnetd_command`] says with `ports` (name and MAC; most
    /// scenarios: [`PORTS_AB`](super::vm2vm::PORTS_AB)), its sockets in `run`'s
    /// directory, and waits for them.
    pub(super) fn start_vnetd(
        &self,
        run: &RunDir,
        mode: Option<&str>,
        queues: u16,
        ports: &[(&str, wire::MacAddr)],
    ) -> Result<Proc> {
        let cmd = self.vnetd_command(&run.dir.0, mode, queues, ports);
        let mut vnetd = Proc::spawn("vnetd", cmd, &run.log, None)?;
        let mut socks: Vec<PathBuf> = ports.iter().map(|(n, _)| run.sock(n)).collect();
        socks.push(run.sock("ctl"));
        let socks: Vec<&Path> = socks.iter().map(PathBuf::as_path).collect();
        vnetd.wait_sockets(&socks, &run.log)?;
        Ok(vnetd)
    }

    /// `vnetctl --control CTL <what> --json`, on the generator's CPU.
    pub(super) fn vnetctl(&self, ctl: &Path, what: &str) -> Result<Value> {
        let out = Command::new("taskset")
            .arg("-c")
            .arg(self.cpu_gen.to_string())
            .arg(&self.vnetctl)
            .arg("--control")
            .arg(ctl)
            .args([what, "--json"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run vnetctl")?;
        if !out.status.success() {
            bail!(
                "vnetctl {what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("vnetctl printed no JSON")
    }

    /// Round trip of a cache line between the generator's and the switch's CPU, in ns, or
    /// None if the probe cannot run. The two CPUs are vCPUs in a VM: the host may place them
    /// on cores that share a cache or not, and move them; rings bounce their cache lines
    /// between the two, so forwarding rates follow this figure (bimodal on some hosts).
    pub(super) fn pingpong(&self) -> Option<f64> {
        match pingpong_ns(self.cpu_gen, self.cpu_switch) {
            Ok(ns) => {
                self.best_pingpong.set(self.best_pingpong.get().min(ns));
                Some(ns)
            }
            Err(err) => {
                warn(format!("core-to-core probe: {err:#}"));
                None
            }
        }
    }

    /// CPU use (%) of the switch over [`IDLE_WINDOW`], with the generator attached and
    /// stopped.
    pub(super) fn idle_cpu(&self, switch: &Proc) -> Result<f64> {
        sleep(Duration::from_millis(500));
        let (t0, c0) = (Instant::now(), proc_ticks(switch.pid())?);
        sleep(IDLE_WINDOW);
        let (t1, c1) = (Instant::now(), proc_ticks(switch.pid())?);
        Ok(self.percent(c1.saturating_sub(c0), t1 - t0))
    }

    /// CPU use (% of one CPU) from sample `a` to sample `b`, `wall` apart.
    pub(super) fn cpu_use(&self, a: &Ticks, b: &Ticks, wall: Duration) -> CpuUse {
        CpuUse::between(a, b, wall, |ticks, wall| self.percent(ticks, wall))
    }

    /// `ticks` of CPU time over `wall`, in % of one CPU.
    pub(super) fn percent(&self, ticks: u64, wall: Duration) -> f64 {
        ticks as f64 / self.clk_tck / wall.as_secs_f64() * 100.0
    }
}

/// Where one run keeps its files: its name (`03-vnetd-event`), its sockets directory
/// (removed with it) and its log.
#[derive(Debug)]
pub(super) struct RunDir {
    pub(super) name: String,
    pub(super) dir: TempDir,
    pub(super) log: PathBuf,
}

impl RunDir {
    /// The socket `<port>.sock` in the directory (`ctl` for vnetd's control socket).
    pub(super) fn sock(&self, port: &str) -> PathBuf {
        self.dir.0.join(format!("{port}.sock"))
    }
}

/// Drop counters of `vnetctl stats --json` that grew from `a` to `b`: `port.reason` -> n.
pub(super) fn vnetd_drop_delta(a: &Value, b: &Value) -> BTreeMap<String, u64> {
    let drops = |v: &Value| -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for port in v.as_array().into_iter().flatten() {
            let name = port["name"].as_str().unwrap_or("?");
            for (reason, n) in port["drops"].as_object().into_iter().flatten() {
                m.insert(format!("{name}.{reason}"), n.as_u64().unwrap_or(0));
            }
        }
        m
    };
    let before = drops(a);
    drops(b)
        .into_iter()
        .filter_map(|(k, n)| {
            let d = n.saturating_sub(before.get(&k).copied().unwrap_or(0));
            (d > 0).then_some((k, d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vnetd_drops_that_moved() {
        let a = json!([{"name": "a", "drops": {"no_rx_buffer": 5}}, {"name": "b", "drops": {}}]);
        let b = json!([{"name": "a", "drops": {"no_rx_buffer": 9, "hairpin": 0}},
                       {"name": "b", "drops": {"no_rx_buffer": 2}}]);
        let d = vnetd_drop_delta(&a, &b);
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            [
                ("a.no_rx_buffer".to_string(), 4),
                ("b.no_rx_buffer".to_string(), 2)
            ]
        );
    }
}
