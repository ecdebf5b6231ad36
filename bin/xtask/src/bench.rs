//! `cargo xtask bench`: VM-to-VM forwarding rate of vnetd, against DPDK's own vhost as the
//! anchor, with the method DPDK uses for its vhost numbers (no VM, one core each). The
//! VM-to-host scenario through a TAP port lives in [`tap`] (`--scenarios`).
//!
//! One `dpdk-testpmd`, the generator, plays both VMs: it holds two `net_virtio_user` ports,
//! A and B, and forwards in `mac` mode with `--port-topology=paired`, each port addressing the
//! other's MAC, after `start tx_first` has put bursts of `--txpkts`-sized frames on both.
//! Frames then circulate through the switch under test: A -> switch -> B -> testpmd -> A ...
//! (`io` mode would send frames back out of A still addressed to A: a hairpin that vnetd
//! drops; `mac` rewrites the addresses, at a small cost to the generator.)
//!
//! The switch under test is either vnetd (two vhost-user ports, `taskset` to its own CPU) or
//! the anchor: a second testpmd with two `net_vhost` ports forwarding `io`, its lcores on that
//! same CPU. The generator's lcores share the other CPU. The generator is the same in both
//! cases, so the ratio of the two rates compares the switches.
//!
//! `vm2vm-2q` is the same with two queue pairs on every port: the generator's virtio-user
//! ports `queues=2` with `--rxq=2 --txq=2`, vnetd's ports `queues=2`, the anchor's
//! `net_vhost` ports `queues=2` with `--rxq=2 --txq=2`.
//!
//! Rates come from the generator's port counters (`show port stats all`), sampled after a
//! warm-up, half way and `--secs` later; the RX packets of both ports over the time between
//! the first and last samples, as measured here, is the rate. The switch's CPU use is its
//! process's utime + stime over the same window (/proc/PID/stat). Runs of vnetd and of the
//! anchor alternate, `--runs` times each; the table shows medians. The first run of each
//! switch also measures its CPU with both ports attached and no traffic.
//!
//! Measurements wait for a machine without other QEMU or testpmd processes (up to
//! `--wait-idle` seconds) and report CPU time used by anything else during each window. On a
//! VM the host also moves our two vCPUs between cores that share a cache and cores that do
//! not, which halves the rates for a while: a cache-line ping-pong between the two CPUs
//! before and after each run, and the rates of the window's two halves, show it. Disturbed
//! runs are measured again (see docs/bench.md).
//!
//! Cleanup: every child is a guard that stops it and removes its sockets, DPDK runtime
//! directory and hugepage files on drop (errors and panics included). Children stay in our
//! process group, so Ctrl-C reaches them too (vnetd and testpmd exit on SIGINT); files a
//! killed run leaves behind are removed by the next run (they carry the dead PID).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::deps;
use crate::util::{self, cargo, has_command, warn};
use common::{
    anomaly_lines, check_placement_all, failed_lines, idle_json, idle_line, median, medians_json,
    mode_of, na, rate_cell, ratio, render_table, run_json, run_record, summary_tail, vnetd_label,
    vnetd_labels, RunRecord, Tally, Window,
};

mod common;
pub mod ovs;
pub mod tap;
pub mod tso;

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios: `vm2vm` (two guests through the switch), `vm2vm-2q` (the same with two
    /// queue pairs per port; not in the default set), `tap` (a guest and the host
    /// through a TAP port, both directions, with DPDK's net_tap and a bare TAP loop as anchors)
    /// and `tso` (64 KiB TSO frames VM to VM from vnet-frontend; not in the default set).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "vm2vm,tap")]
    scenarios: Vec<Scenario>,
    /// Runs of each switch per frame size and generator variant; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Seconds of measured traffic per run (after a warm-up).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Frame sizes in bytes, without FCS (1514: a full 1500-MTU frame).
    #[arg(long, value_delimiter = ',', default_value = "64,1514")]
    sizes: Vec<u32>,
    /// Measure only vnetd, or only the anchors (DPDK; OVS-DPDK in the VM-to-VM scenarios).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// vnetd datapath modes, one table row each (used when `vnetd --help` has `--datapath`).
    #[arg(long, value_delimiter = ',', default_value = "event,poll")]
    modes: Vec<String>,
    /// virtio-user devargs of the generator's ports, one group of rows each; repeat the
    /// option for several. `default` is DPDK's defaults (in-order and mergeable RX buffers
    /// requested).
    #[arg(long = "devargs", default_values = ["in_order=0", "default"])]
    devargs: Vec<String>,
    /// Seconds to wait, before each run, for other QEMU or testpmd processes to finish.
    #[arg(long, default_value_t = 300)]
    wait_idle: u64,
}

/// A scenario of `--scenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// VM to VM: two virtio-user ports of one generator through the switch.
    Vm2vm,
    /// VM to VM with two queue pairs on every port (generator, vnetd and anchor).
    #[value(name = "vm2vm-2q")]
    Vm2vm2q,
    /// VM to host through a TAP port, both directions (bench/tap.rs).
    Tap,
    /// 64 KiB TSO frames VM to VM, generated by vnet-frontend (bench/tso.rs).
    Tso,
}

impl Scenario {
    /// Queue pairs per port of a VM-to-VM scenario; None for the others.
    fn vm2vm_queue_pairs(self) -> Option<u16> {
        match self {
            Scenario::Vm2vm => Some(1),
            Scenario::Vm2vm2q => Some(2),
            Scenario::Tap | Scenario::Tso => None,
        }
    }
}

/// Which switch `--only` keeps (in the TAP scenario `dpdk` keeps the bare loop too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    Vnetd,
    Dpdk,
}

/// The generator's ports, A and B, and the MACs vnetd's devices present (the same).
const MAC_A: &str = "52:54:00:be:00:0a";
const MAC_B: &str = "52:54:00:be:00:0b";
/// Bursts (of 32 frames) `start tx_first` puts on each port: what then circulates. Enough
/// to keep both rings busy; the excess is dropped at once and does not come back.
const TX_FIRST_BURSTS: u32 = 32;
/// Traffic before the first sample.
const WARMUP: Duration = Duration::from_millis(1500);
/// How long the idle check measures.
const IDLE_WINDOW: Duration = Duration::from_secs(3);
/// Memory of each testpmd, MiB (`-m`), and what both need in 2 MiB hugepages.
const TESTPMD_MEM_MB: u32 = 256;
const HUGEPAGES_NEEDED: u64 = 2 * TESTPMD_MEM_MB as u64 / 2;
/// Buffers of each testpmd: all fit in the memory preallocated at start, so the memory
/// table virtio-user gives the switch does not change while traffic runs.
const MBUFS: u32 = 16384;
/// The names of our sockets directory, DPDK prefixes and hugepage files start with this,
/// then our PID.
const TAG: &str = "vnet-bench-";
/// Another process's CPU use above this (% of one CPU) during a window marks it busy.
const FOREIGN_CPU_LIMIT: f64 = 5.0;
/// Attempts at a run that other work or the vCPUs' placement disturbed.
const RETRIES: u32 = 4;
/// A core-to-core round trip this many times the best one seen, and above
/// [`APART_MIN_NS`], means the host runs our two vCPUs on distant cores (no shared cache):
/// the rings' cache lines then travel further and rates drop by up to half.
const APART_FACTOR: f64 = 2.5;
const APART_MIN_NS: f64 = 150.0;
/// Halves of a window whose rates differ by more than this fraction make the run unstable
/// (the host moved a vCPU during it).
const UNSTABLE_FRACTION: f64 = 0.15;
/// How long to wait for an idle machine once a whole `--wait-idle` did not bring one.
const BUSY_REWAIT_SECS: u64 = 20;

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    for &size in &args.sizes {
        if !(60..=1514).contains(&size) {
            bail!("frame size {size} is outside 60..=1514 (bytes without FCS, 1500 MTU)");
        }
    }
    if !(args.secs.is_finite() && args.secs >= 0.5) {
        bail!("--secs must be at least 0.5");
    }
    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    ensure_system()?;
    util::run(cargo().args(["build", "--release", "-p", "vnetd", "-p", "vnetctl"]))?;
    if args.scenarios.contains(&Scenario::Tso) {
        tso::build()?;
    }
    sweep_stale();

    let started = SystemTime::now();
    let stamp = Stamp::of(started);
    let bench_dir = target_dir().join("bench");
    let logs = bench_dir.join(stamp.compact());
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let ctx = Ctx::new(args, logs)?;
    let info = machine_info(&stamp, &command);
    // The best placement of our two vCPUs the host gives, as a reference.
    ctx.wait_idle(args.wait_idle);
    for _ in 0..5 {
        ctx.pingpong();
        sleep(Duration::from_millis(200));
    }

    let modes: Vec<Option<String>> = if ctx.vnetd_has_datapath {
        args.modes.iter().map(|m| Some(m.clone())).collect()
    } else {
        if args.modes != ["event", "poll"] {
            warn("this vnetd has no --datapath option: --modes is ignored");
        }
        vec![None]
    };
    let mut switches: Vec<Switch> = match args.only {
        Some(Only::Dpdk) => vec![Switch::Dpdk],
        Some(Only::Vnetd) => modes.iter().cloned().map(Switch::Vnetd).collect(),
        None => modes
            .iter()
            .cloned()
            .map(Switch::Vnetd)
            .chain([Switch::Dpdk])
            .collect(),
    };
    // OVS-DPDK, the second anchor of the VM-to-VM scenarios, if it can start here.
    let ovs_skipped = ovs::add_anchor(&ctx, args, &mut switches);

    eprintln!(
        "bench: generator on CPU {}, switch on CPU {}; {} run(s) x {} s per switch, size and \
         devargs; logs in {}",
        ctx.cpu_gen,
        ctx.cpu_switch,
        args.runs,
        args.secs,
        ctx.logs.display()
    );
    let mut runs: Vec<RunResult> = Vec::new();
    let mut idle: Vec<(String, f64)> = Vec::new();
    // Queue pairs of each VM-to-VM scenario asked for, in the order given.
    let mut vm2vm: Vec<u16> = Vec::new();
    for q in args.scenarios.iter().filter_map(|s| s.vm2vm_queue_pairs()) {
        if !vm2vm.contains(&q) {
            vm2vm.push(q);
        }
    }
    for &queues in &vm2vm {
        for devargs in &args.devargs {
            for &size in &args.sizes {
                let case = Case {
                    devargs: devargs.clone(),
                    size,
                    queues,
                };
                for run_no in 1..=args.runs {
                    for switch in &switches {
                        let label = switch.label();
                        let idle_check = !idle.iter().any(|(l, _)| *l == label);
                        let result = ctx.attempt_run(args, switch, &case, run_no, idle_check);
                        if let Some(cpu) = result.idle_cpu {
                            idle.push((label, cpu));
                        }
                        runs.push(result);
                    }
                }
            }
        }
    }

    let mut tap = args
        .scenarios
        .contains(&Scenario::Tap)
        .then(|| tap::run(&ctx, args, &modes));
    let mut tso = args
        .scenarios
        .contains(&Scenario::Tso)
        .then(|| tso::run(&ctx, args, &modes));

    // Judge every run against the best placement seen over the whole bench.
    check_placement_all(&mut runs, ctx.best_pingpong.get());
    if let Some(tap) = &mut tap {
        tap.check_placement(ctx.best_pingpong.get());
    }
    if let Some(tso) = &mut tso {
        tso.check_placement(ctx.best_pingpong.get());
    }
    let report = Report {
        info,
        runs,
        idle,
        switches,
        args_runs: args.runs,
        secs: args.secs,
        sizes: args.sizes.clone(),
        devargs: args.devargs.clone(),
        logs: ctx.logs.clone(),
        best_pingpong: ctx.best_pingpong.get(),
        cpus: (ctx.cpu_gen, ctx.cpu_switch),
        vm2vm,
        tap,
        tso,
        ovs_skipped,
    };
    let text = report.render();
    println!("{text}");
    let json = serde_json::to_string_pretty(&report.json())?;
    let path = bench_dir.join(format!("{}.json", stamp.compact()));
    fs::write(&path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    fs::write(bench_dir.join("latest.json"), &json)
        .with_context(|| format!("cannot write {}", bench_dir.join("latest.json").display()))?;
    println!("saved {} (and latest.json)", path.display());
    Ok(())
}

/// Installs DPDK and reserves hugepages (`cargo xtask deps`) unless they are there, and
/// checks the other programs the bench runs.
fn ensure_system() -> Result<()> {
    let ready = || {
        has_command("dpdk-testpmd")
            && !hugetlbfs_mounts().is_empty()
            && free_hugepages() >= HUGEPAGES_NEEDED
    };
    if !ready() {
        deps::run()?;
    }
    if !has_command("dpdk-testpmd") {
        bail!("dpdk-testpmd is not installed (cargo xtask deps)");
    }
    if hugetlbfs_mounts().is_empty() {
        bail!("no hugetlbfs is mounted (cargo xtask deps)");
    }
    let free = free_hugepages();
    if free < HUGEPAGES_NEEDED {
        bail!("{free} hugepages are free; the two testpmds need {HUGEPAGES_NEEDED}");
    }
    for prog in ["taskset", "stdbuf", "kill"] {
        if !has_command(prog) {
            bail!("`{prog}` is not on PATH (util-linux, coreutils, procps)");
        }
    }
    Ok(())
}

/// One cell of the table: generator devargs, frame size and queue pairs per port.
#[derive(Debug, Clone, Default, PartialEq)]
struct Case {
    devargs: String,
    size: u32,
    /// Queue pairs of every port: generator, vnetd and anchor (`vm2vm-2q`: 2).
    queues: u16,
}

impl Case {
    /// Queue pairs per port (at least one).
    fn queue_pairs(&self) -> u16 {
        self.queues.max(1)
    }

    /// The scenario's name in the table: `VM-to-VM in_order=0`, `VM-to-VM 2q default`.
    fn scenario(&self) -> String {
        match self.queue_pairs() {
            1 => format!("VM-to-VM {}", self.devargs),
            q => format!("VM-to-VM {q}q {}", self.devargs),
        }
    }

    /// Devargs and queue pairs, for run lines: `in_order=0` or `2q in_order=0`.
    fn label(&self) -> String {
        match self.queue_pairs() {
            1 => self.devargs.clone(),
            q => format!("{q}q {}", self.devargs),
        }
    }

    /// testpmd's `--rxq=N --txq=N` for more than one queue pair (none for one).
    fn queue_args(&self) -> Vec<String> {
        match self.queue_pairs() {
            1 => Vec::new(),
            q => vec![format!("--rxq={q}"), format!("--txq={q}")],
        }
    }

    /// Devargs appended to each virtio-user port (empty for DPDK's defaults).
    fn extra_devargs(&self) -> &str {
        if self.devargs == "default" {
            ""
        } else {
            &self.devargs
        }
    }
}

/// The switch under test in one run.
#[derive(Debug, Clone, PartialEq)]
enum Switch {
    /// vnetd, with `--datapath MODE` when it has the option.
    Vnetd(Option<String>),
    /// testpmd forwarding `io` between two `net_vhost` ports.
    Dpdk,
    /// OVS-DPDK: two `dpdkvhostuserclient` ports, in_port flows (bench/ovs.rs).
    Ovs,
}

impl Switch {
    fn label(&self) -> String {
        match self {
            Switch::Vnetd(mode) => vnetd_label(mode.as_deref()),
            Switch::Dpdk => "dpdk".into(),
            Switch::Ovs => "ovs-dpdk".into(),
        }
    }
}

/// What the bench needs everywhere.
#[derive(Debug)]
struct Ctx {
    testpmd: PathBuf,
    vnetd: PathBuf,
    vnetctl: PathBuf,
    vnetd_has_datapath: bool,
    cpu_gen: usize,
    cpu_switch: usize,
    secs: f64,
    clk_tck: f64,
    /// Sockets of the current run live here (short paths: unix socket names are limited).
    sock_dir: TempDir,
    /// Every process's output, kept.
    logs: PathBuf,
    seq: std::cell::Cell<usize>,
    /// The last wait for an idle machine timed out.
    gave_up: std::cell::Cell<bool>,
    /// The shortest core-to-core round trip seen, ns: the host's best placement.
    best_pingpong: std::cell::Cell<f64>,
}

impl Ctx {
    fn new(args: &Args, logs: PathBuf) -> Result<Ctx> {
        let release = target_dir().join("release");
        let vnetd = release.join("vnetd");
        let help = Command::new(&vnetd)
            .arg("--help")
            .output()
            .with_context(|| format!("cannot run {} --help", vnetd.display()))?;
        let vnetd_has_datapath = String::from_utf8_lossy(&help.stdout).contains("--datapath");
        let cpus = allowed_cpus();
        if cpus.len() < 2 {
            bail!("the bench needs two CPUs (generator, switch); this process may use {cpus:?}");
        }
        let sock_dir = std::env::temp_dir().join(format!("{TAG}{}", std::process::id()));
        fs::create_dir_all(&sock_dir)
            .with_context(|| format!("cannot create {}", sock_dir.display()))?;
        Ok(Ctx {
            testpmd: which("dpdk-testpmd").context("dpdk-testpmd is not on PATH")?,
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
    fn next(&self, what: &str) -> String {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        format!("{n:02}-{}", what.replace(' ', "-"))
    }

    /// Waits until no other QEMU or testpmd runs, at most `limit_secs`; says what kept the
    /// machine busy if it still is.
    fn wait_idle(&self, limit_secs: u64) -> Option<String> {
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
    fn machine_load(&self, window: Duration) -> Result<f64> {
        let (t0, a) = (Instant::now(), SystemTicks::read()?);
        sleep(window);
        let (t1, b) = (Instant::now(), SystemTicks::read()?);
        Ok(self.percent(b.busy.saturating_sub(a.busy), t1 - t0))
    }

    /// The vnetd command line of one run: ports a and b with their sockets in `dir` and
    /// `queues` queue pairs each, pinned to the switch CPU. The one place that says how vnetd
    /// runs; a mode is a table row.
    fn vnetd_command(&self, dir: &Path, mode: Option<&str>, queues: u16) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(self.cpu_switch.to_string())
            .arg(&self.vnetd)
            .arg("--control")
            .arg(dir.join("ctl.sock"));
        for (name, mac) in [("a", MAC_A), ("b", MAC_B)] {
            let mut spec = format!(
                "name={name},socket={},mac={mac}",
                dir.join(format!("{name}.sock")).display()
            );
            if queues > 1 {
                spec += &format!(",queues={queues}");
            }
            cmd.arg("--vhost-user").arg(spec);
        }
        if let Some(mode) = mode {
            cmd.args(["--datapath", mode]);
        }
        cmd.env("VNET_LOG", "info");
        cmd
    }

    /// A testpmd command: lcores `0@main,1@fwd`, our file prefix, the vdevs, then the
    /// application arguments.
    fn testpmd_command(&self, cpu: usize, prefix: &str, vdevs: &[String], app: &[&str]) -> Command {
        // Line-buffered stdout: the bench reads testpmd's answers as they come.
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL").arg(&self.testpmd).args([
            format!("--lcores=0@{cpu},1@{cpu}"),
            "--no-pci".into(),
            "--no-telemetry".into(),
            "--single-file-segments".into(),
            "-m".into(),
            TESTPMD_MEM_MB.to_string(),
            format!("--file-prefix={prefix}"),
        ]);
        for vdev in vdevs {
            cmd.arg(format!("--vdev={vdev}"));
        }
        cmd.arg("--")
            .arg(format!("--total-num-mbufs={MBUFS}"))
            .args(app);
        cmd
    }

    /// Starts the generator on the two sockets and waits for its prompt.
    fn start_generator(&self, name: &str, socks: [&Path; 2], case: &Case) -> Result<Generator> {
        let prefix = format!("{TAG}{}-{name}", std::process::id());
        let vdevs: Vec<String> = socks
            .iter()
            .zip([MAC_A, MAC_B])
            .enumerate()
            .map(|(i, (sock, mac))| {
                let mut spec = format!(
                    "net_virtio_user{i},path={},queues={},mac={mac}",
                    sock.display(),
                    case.queue_pairs()
                );
                if !case.extra_devargs().is_empty() {
                    spec.push(',');
                    spec.push_str(case.extra_devargs());
                }
                spec
            })
            .collect();
        let peer0 = format!("--eth-peer=0,{MAC_B}");
        let peer1 = format!("--eth-peer=1,{MAC_A}");
        let txpkts = format!("--txpkts={}", case.size);
        let queue_args = case.queue_args();
        let mut app = vec![
            "-i",
            "--forward-mode=mac",
            "--port-topology=paired",
            &peer0,
            &peer1,
            &txpkts,
        ];
        app.extend(queue_args.iter().map(String::as_str));
        let cmd = self.testpmd_command(self.cpu_gen, &prefix, &vdevs, &app);
        let log = self.logs.join(format!("{name}.log"));
        let proc = Proc::spawn(name, cmd, &log, Some(prefix))?;
        let mut gen = Generator { proc };
        gen.proc
            .wait_output(0, Duration::from_secs(60), "the testpmd prompt", |out| {
                out.contains("testpmd> ")
            })?;
        let ports = port_macs(&gen.proc.output());
        if ports.len() != 2 {
            bail!(
                "the generator has {} port(s), not 2 (see {})",
                ports.len(),
                log.display()
            );
        }
        Ok(gen)
    }

    /// One run of `switch` on `case`, once the machine is idle, and again (a few times) if
    /// other work or the host's placement of our vCPUs disturbed it.
    fn attempt_run(
        &self,
        args: &Args,
        switch: &Switch,
        case: &Case,
        run_no: u32,
        idle_check: bool,
    ) -> RunResult {
        let label = switch.label();
        let what = format!(
            "{label}, {} bytes, devargs {}, {} queue pair(s)",
            case.size,
            case.devargs,
            case.queue_pairs()
        );
        common::attempt(self, args, &what, &label, run_no, || {
            let mut result = self.run_switch(switch, case, idle_check);
            result.case = case.clone();
            result
        })
    }

    /// One run of `switch`; a failure is a result too.
    fn run_switch(&self, switch: &Switch, case: &Case, idle_check: bool) -> RunResult {
        let outcome = match switch {
            Switch::Vnetd(mode) => self.run_vnetd(case, mode.as_deref(), idle_check),
            Switch::Dpdk => self.run_dpdk(case, idle_check),
            Switch::Ovs => ovs::run(self, case, idle_check),
        };
        outcome.unwrap_or_else(|err| RunResult::failed(format!("{err:#}")))
    }

    /// One run with vnetd as the switch.
    fn run_vnetd(&self, case: &Case, mode: Option<&str>, idle_check: bool) -> Result<RunResult> {
        let label = Switch::Vnetd(mode.map(str::to_string)).label();
        let name = self.next(&label);
        let dir = TempDir::create(self.sock_dir.0.join(&name))?;
        let (sa, sb, ctl) = (
            dir.0.join("a.sock"),
            dir.0.join("b.sock"),
            dir.0.join("ctl.sock"),
        );
        let vlog = self.logs.join(format!("{name}.log"));
        let cmd = self.vnetd_command(&dir.0, mode, case.queue_pairs());
        let mut vnetd = Proc::spawn("vnetd", cmd, &vlog, None)?;
        vnetd.wait_sockets(&[&sa, &sb, &ctl], &vlog)?;
        let mut gen = self.start_generator(&format!("{name}-gen"), [&sa, &sb], case)?;
        let features = self.wait_ports_up(&ctl, &mut vnetd, ["a", "b"])?;

        let mut result = RunResult::default();
        let window = self.measure(&mut gen, &vnetd, Some(&ctl))?;
        gen.send_wait("stop")?;
        if idle_check {
            result.idle_cpu = Some(self.idle_cpu(&vnetd)?);
        }
        gen.quit()?;

        // The frontend is gone: vnetd should be quiet, then exit cleanly on SIGTERM.
        result.anomalies.extend(vnetd.stop_vnetd(&vlog)?);
        result.features = features;
        result.fill(self, &window);
        Ok(result)
    }

    /// One run with the DPDK anchor as the switch.
    fn run_dpdk(&self, case: &Case, idle_check: bool) -> Result<RunResult> {
        let name = self.next("dpdk");
        let dir = TempDir::create(self.sock_dir.0.join(&name))?;
        let (sa, sb) = (dir.0.join("a.sock"), dir.0.join("b.sock"));
        let prefix = format!("{TAG}{}-{name}", std::process::id());
        let q = case.queue_pairs();
        let vdevs = [
            format!("net_vhost0,iface={},queues={q}", sa.display()),
            format!("net_vhost1,iface={},queues={q}", sb.display()),
        ];
        let queue_args = case.queue_args();
        let mut app = vec!["--forward-mode=io", "--port-topology=paired"];
        app.extend(queue_args.iter().map(String::as_str));
        let cmd = self.testpmd_command(self.cpu_switch, &prefix, &vdevs, &app);
        let alog = self.logs.join(format!("{name}.log"));
        let mut anchor = Proc::spawn("anchor testpmd", cmd, &alog, Some(prefix))?;
        anchor.wait_forwarding()?;
        if !(sa.exists() && sb.exists()) {
            bail!(
                "the anchor created no vhost-user sockets; see {}",
                alog.display()
            );
        }
        let mut gen = self.start_generator(&format!("{name}-gen"), [&sa, &sb], case)?;

        let mut result = RunResult::default();
        let window = self.measure(&mut gen, &anchor, None)?;
        gen.send_wait("stop")?;
        if idle_check {
            result.idle_cpu = Some(self.idle_cpu(&anchor)?);
        }
        gen.quit()?;

        let (dropped, anomalies) = anchor.stop_anchor()?;
        result.anomalies.extend(anomalies);
        // Not an anomaly: `tx_first` puts more frames in flight than the rings hold.
        result.anchor_drops = Some(dropped);
        result.fill(self, &window);
        Ok(result)
    }

    /// Waits until vnetd has both `ports` up; returns the negotiated features of its ports.
    fn wait_ports_up(&self, ctl: &Path, vnetd: &mut Proc, ports: [&str; 2]) -> Result<String> {
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

    /// `vnetctl --control CTL <what> --json`, on the generator's CPU.
    fn vnetctl(&self, ctl: &Path, what: &str) -> Result<Value> {
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

    /// Starts the traffic, waits for the warm-up, and measures a window of `secs`.
    fn measure(
        &self,
        gen: &mut Generator,
        switch: &Proc,
        ctl: Option<&Path>,
    ) -> Result<Window<Snapshot>> {
        gen.send_wait(&format!("start tx_first {TX_FIRST_BURSTS}"))?;
        let ours = [switch.pid(), gen.proc.pid()];
        Window::measure(self, ctl, &ours, || self.snapshot(gen, switch), |s| s.at)
    }

    /// Counters and CPU times at one instant.
    fn snapshot(&self, gen: &mut Generator, switch: &Proc) -> Result<Snapshot> {
        let at = Instant::now();
        let switch_ticks = proc_ticks(switch.pid())?;
        let gen_ticks = proc_ticks(gen.proc.pid())?;
        let system = SystemTicks::read()?;
        let blocks = gen.stats()?;
        Ok(Snapshot {
            at,
            switch_ticks,
            gen_ticks,
            system,
            blocks,
        })
    }

    /// Round trip of a cache line between the generator's and the switch's CPU, in ns, or
    /// None if the probe cannot run. The two CPUs are vCPUs in a VM: the host may place them
    /// on cores that share a cache or not, and move them; rings bounce their cache lines
    /// between the two, so forwarding rates follow this figure (bimodal on some hosts).
    fn pingpong(&self) -> Option<f64> {
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
    fn idle_cpu(&self, switch: &Proc) -> Result<f64> {
        sleep(Duration::from_millis(500));
        let (t0, c0) = (Instant::now(), proc_ticks(switch.pid())?);
        sleep(IDLE_WINDOW);
        let (t1, c1) = (Instant::now(), proc_ticks(switch.pid())?);
        Ok(self.percent(c1.saturating_sub(c0), t1 - t0))
    }

    /// `ticks` of CPU time over `wall`, in % of one CPU.
    fn percent(&self, ticks: u64, wall: Duration) -> f64 {
        ticks as f64 / self.clk_tck / wall.as_secs_f64() * 100.0
    }
}

#[derive(Debug)]
struct Snapshot {
    at: Instant,
    switch_ticks: u64,
    gen_ticks: u64,
    system: SystemTicks,
    blocks: Vec<Block>,
}

impl Snapshot {
    fn figure(&self, kind: BlockKind, port: usize, key: &str) -> u64 {
        self.blocks
            .iter()
            .find(|b| b.kind == kind && b.port == port)
            .map_or(0, |b| b.get(key))
    }
}

/// The result of one run.
#[derive(Debug, Default)]
struct RunResult {
    switch: String,
    case: Case,
    run: u32,
    /// None when the run failed.
    mpps: Option<f64>,
    /// Per generator port (A, B) received Mpps.
    port_mpps: [f64; 2],
    /// testpmd's own `Rx-pps` sum for the window (a cross-check of `mpps`).
    testpmd_mpps: f64,
    secs: f64,
    switch_cpu: f64,
    gen_cpu: f64,
    /// CPU used by everything but the switch and the generator, % of one CPU.
    foreign_cpu: f64,
    steal_cpu: f64,
    idle_cpu: Option<f64>,
    /// Core-to-core round trip (ns) just before and just after the run.
    pingpong_ns: [Option<f64>; 2],
    /// A probe found the vCPUs apart (see [`APART_FACTOR`]).
    placed_apart: bool,
    /// Which attempt this is (earlier ones were disturbed).
    attempts: u32,
    /// Mpps of the first and the second half of the window.
    half_mpps: [f64; 2],
    /// The two halves differ by more than [`UNSTABLE_FRACTION`].
    unstable: bool,
    /// Frames the anchor dropped over the whole run, warm-up included.
    anchor_drops: Option<u64>,
    features: String,
    busy: bool,
    anomalies: Vec<String>,
    error: Option<String>,
}

impl RunResult {
    fn failed(error: String) -> RunResult {
        RunResult {
            error: Some(error),
            ..RunResult::default()
        }
    }

    /// Computes the figures of a window and notes anything odd in it.
    fn fill(&mut self, ctx: &Ctx, w: &Window<Snapshot>) {
        let wall = w.last.at - w.first.at;
        self.secs = wall.as_secs_f64();
        let delta = |kind, port, key| {
            w.last
                .figure(kind, port, key)
                .saturating_sub(w.first.figure(kind, port, key))
        };
        let mut total = 0;
        for port in 0..2 {
            let rx = delta(BlockKind::Nic, port, "RX-packets");
            total += rx;
            self.port_mpps[port] = rx as f64 / self.secs / 1e6;
            // Since the previous `show port stats`: the second half.
            self.testpmd_mpps += w.last.figure(BlockKind::Nic, port, "Rx-pps") as f64 / 1e6;
        }
        let mpps = total as f64 / self.secs / 1e6;
        self.mpps = Some(mpps);
        let half_rate = |a: &Snapshot, b: &Snapshot| {
            let rx: u64 = (0..2)
                .map(|port| {
                    b.figure(BlockKind::Nic, port, "RX-packets")
                        .saturating_sub(a.figure(BlockKind::Nic, port, "RX-packets"))
                })
                .sum();
            rx as f64 / (b.at - a.at).as_secs_f64() / 1e6
        };
        self.half_mpps = [half_rate(&w.first, &w.mid), half_rate(&w.mid, &w.last)];
        let halves = self.half_mpps;
        self.marks().check_halves(halves, 3);
        let h2 = halves[1];
        self.switch_cpu = ctx.percent(
            w.last.switch_ticks.saturating_sub(w.first.switch_ticks),
            wall,
        );
        self.gen_cpu = ctx.percent(w.last.gen_ticks.saturating_sub(w.first.gen_ticks), wall);
        let busy = w.last.system.busy.saturating_sub(w.first.system.busy);
        let ours = w.last.switch_ticks.saturating_sub(w.first.switch_ticks)
            + w.last.gen_ticks.saturating_sub(w.first.gen_ticks);
        self.foreign_cpu = ctx.percent(busy.saturating_sub(ours), wall);
        self.steal_cpu = ctx.percent(
            w.last.system.steal.saturating_sub(w.first.system.steal),
            wall,
        );

        if total == 0 {
            self.anomalies.push("no frames forwarded".into());
        }
        for port in 0..2 {
            for key in ["RX-missed", "RX-errors", "RX-nombuf", "TX-errors"] {
                let n = delta(BlockKind::Nic, port, key);
                if n > 0 {
                    self.anomalies
                        .push(format!("generator port {port} {key} +{n} in the window"));
                }
            }
            for key in ["RX-dropped", "TX-dropped"] {
                let n = delta(BlockKind::Fwd, port, key);
                if n > 0 {
                    self.anomalies
                        .push(format!("generator port {port} {key} +{n} in the window"));
                }
            }
        }
        self.marks().note_vnetd_drops(&w.vnetd_drops);
        if self.testpmd_mpps > 0.0 && (self.testpmd_mpps - h2).abs() / h2 > 0.02 {
            self.anomalies.push(format!(
                "testpmd's own Rx-pps says {:.3} Mpps for the second half, the counters {h2:.3}",
                self.testpmd_mpps
            ));
        }
        let (foreign, steal) = (self.foreign_cpu, self.steal_cpu);
        self.marks().note_load(&w.busy, foreign, steal);
    }

    fn summary(&self) -> String {
        let Some(mpps) = self.mpps else {
            return format!("failed: {}", self.error.as_deref().unwrap_or("?"));
        };
        let mut s = format!(
            "{mpps:.3} Mpps (halves {:.3}, {:.3}), {:.2} Gbit/s, switch CPU {:.1} %, generator \
             {:.1} %, others {:.1} % over {:.2} s",
            self.half_mpps[0],
            self.half_mpps[1],
            gbits(mpps, self.case.size),
            self.switch_cpu,
            self.gen_cpu,
            self.foreign_cpu,
            self.secs
        );
        if let Some(idle) = self.idle_cpu {
            s += &format!("; idle CPU {idle:.1} %");
        }
        s + &summary_tail(self.pingpong_ns, &self.anomalies)
    }

    fn json(&self) -> Value {
        let own = json!({
            "devargs": self.case.devargs,
            "queue_pairs": self.case.queue_pairs(),
            "size": self.case.size,
            "mpps": self.mpps,
            "gbits": self.mpps.map(|m| gbits(m, self.case.size)),
            "port_mpps": self.port_mpps,
            "testpmd_rx_pps_mpps": self.testpmd_mpps,
            "secs": self.secs,
            "switch_cpu_pct": self.switch_cpu,
            "generator_cpu_pct": self.gen_cpu,
            "idle_cpu_pct": self.idle_cpu,
            "half_window_mpps": self.half_mpps,
        });
        run_json(self, own)
    }
}

run_record!(RunResult);

/// Gbit/s of `mpps` frames of `size` bytes (no FCS, preamble or gap).
fn gbits(mpps: f64, size: u32) -> f64 {
    mpps * f64::from(size) * 8.0 / 1000.0
}

/// Medians of one switch's successful runs of one case: of its clean runs (machine idle,
/// vCPUs close), or of all when none was clean.
#[derive(Debug, Clone, Copy)]
struct Medians {
    mpps: f64,
    cpu: f64,
    runs: usize,
    /// Only clean runs went in.
    clean: bool,
}

impl Medians {
    fn json(&self, size: u32) -> Value {
        medians_json(
            self.mpps,
            gbits(self.mpps, size),
            self.cpu,
            self.runs,
            self.clean,
        )
    }
}

fn medians(runs: &[RunResult], switch: &str, case: &Case) -> Option<Medians> {
    let ok: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.switch == switch && r.case == *case && r.mpps.is_some())
        .collect();
    let (used, all_clean) = common::clean_or_all(ok)?;
    Some(Medians {
        mpps: median(used.iter().filter_map(|r| r.mpps).collect()),
        cpu: median(used.iter().map(|r| r.switch_cpu).collect()),
        runs: used.len(),
        clean: all_clean,
    })
}

/// Everything the bench prints and saves.
#[derive(Debug)]
struct Report {
    info: BTreeMap<&'static str, String>,
    runs: Vec<RunResult>,
    idle: Vec<(String, f64)>,
    switches: Vec<Switch>,
    args_runs: u32,
    secs: f64,
    sizes: Vec<u32>,
    devargs: Vec<String>,
    logs: PathBuf,
    /// The shortest core-to-core round trip seen, ns.
    best_pingpong: f64,
    /// Generator's and switch's CPUs.
    cpus: (usize, usize),
    /// Queue pairs of the VM-to-VM scenarios that ran (`vm2vm`: 1, `vm2vm-2q`: 2).
    vm2vm: Vec<u16>,
    /// The TAP scenario's results, when it ran.
    tap: Option<tap::TapReport>,
    /// The TSO scenario's results, when it ran.
    tso: Option<tso::TsoReport>,
    /// Why the OVS-DPDK anchor was left out, when it could not start.
    ovs_skipped: Option<String>,
}

/// One row of the table: a case and a vnetd mode (or the anchor alone).
#[derive(Debug)]
struct Row {
    scenario: String,
    queues: u16,
    size: u32,
    mode: String,
    vnetd: Option<Medians>,
    dpdk: Option<Medians>,
    /// The OVS-DPDK anchor, when it ran.
    ovs: Option<Medians>,
}

impl Report {
    fn rows(&self) -> Vec<Row> {
        let labels = vnetd_labels(
            self.switches
                .iter()
                .filter(|s| matches!(s, Switch::Vnetd(_)))
                .map(Switch::label)
                .collect(),
        );
        let mut rows = Vec::new();
        for &queues in &self.vm2vm {
            for devargs in &self.devargs {
                for &size in &self.sizes {
                    let case = Case {
                        devargs: devargs.clone(),
                        size,
                        queues,
                    };
                    let scenario = case.scenario();
                    let dpdk = medians(&self.runs, "dpdk", &case);
                    let ovs = medians(&self.runs, &Switch::Ovs.label(), &case);
                    for label in &labels {
                        rows.push(Row {
                            scenario: scenario.clone(),
                            queues: case.queue_pairs(),
                            size,
                            mode: mode_of(label),
                            vnetd: (!label.is_empty())
                                .then(|| medians(&self.runs, label, &case))
                                .flatten(),
                            dpdk,
                            ovs,
                        });
                    }
                }
            }
        }
        rows
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let i = &self.info;
        if !self.vm2vm.is_empty() {
            out += "\nvnet bench: VM-to-VM, one dpdk-testpmd generator (2 virtio-user ports, mac \
                    forwarding) on one CPU, the switch under test alone on the other\n";
        } else {
            out += "\nvnet bench: the generator on one CPU, the switch under test alone on the \
                    other\n";
        }
        out += &format!(
            "date {}  kernel {}  cpu {} ({} CPUs)  dpdk {}  vnetd {}\n",
            i["date"], i["kernel"], i["cpu"], i["cpus"], i["dpdk"], i["commit"]
        );
        out += &format!("command: {}\n", i["command"]);
        if !self.vm2vm.is_empty() {
            out += &self.render_vm2vm();
        }
        if let Some(tap) = &self.tap {
            out += &tap.render();
        }
        if let Some(tso) = &self.tso {
            out += &tso.render();
        }
        out += &format!("logs: {}", self.logs.display());
        out
    }

    /// The VM-to-VM table and its notes.
    fn render_vm2vm(&self) -> String {
        let mut out = String::new();
        let with_ovs = self.switches.contains(&Switch::Ovs);
        out += &format!(
            "medians of {} run(s) x {} s; Gbit/s = Mpps x frame bytes x 8 (no FCS, preamble or \
             gap); CPU % of one CPU; DPDK = testpmd io between 2 net_vhost ports{}{}\n\n",
            self.args_runs,
            self.secs,
            if with_ovs {
                "; OVS = OVS-DPDK, 2 dpdkvhostuserclient ports, flows in_port=1->2, 2->1"
            } else {
                ""
            },
            if self.vm2vm.iter().any(|q| *q > 1) {
                "; Nq = N queue pairs on every port (generator --rxq/--txq N, vnetd queues=N, \
                 anchor net_vhost queues=N)"
            } else {
                ""
            }
        );
        let mut header = vec![
            "scenario",
            "size",
            "vnetd mode",
            "vnetd Mpps",
            "vnetd Gbit/s",
            "vnetd CPU %",
            "DPDK Mpps",
            "DPDK Gbit/s",
            "DPDK CPU %",
            "vnetd/DPDK",
        ];
        if with_ovs {
            header.extend(["OVS Mpps", "OVS CPU %", "vnetd/OVS"]);
        }
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        let side = |m: Option<Medians>, size: u32| match m {
            Some(m) => [
                rate_cell(m.mpps, 3, m.clean),
                format!("{:.2}", gbits(m.mpps, size)),
                format!("{:.0}", m.cpu),
            ],
            None => [na(), na(), na()],
        };
        for row in self.rows() {
            let [vm, vg, vc] = side(row.vnetd, row.size);
            let [dm, dg, dc] = side(row.dpdk, row.size);
            let mpps = |m: Option<Medians>| m.map(|m| m.mpps);
            let show = |r: Option<f64>| r.map_or_else(na, |r| format!("{r:.2}"));
            let ratio_dpdk = show(ratio(mpps(row.vnetd), mpps(row.dpdk)));
            let mode = if row.mode.is_empty() { na() } else { row.mode };
            let mut cells = vec![
                row.scenario,
                row.size.to_string(),
                mode,
                vm,
                vg,
                vc,
                dm,
                dg,
                dc,
                ratio_dpdk,
            ];
            if with_ovs {
                cells.extend(match row.ovs {
                    Some(o) => [
                        rate_cell(o.mpps, 3, o.clean),
                        format!("{:.0}", o.cpu),
                        show(ratio(mpps(row.vnetd), Some(o.mpps))),
                    ],
                    None => [na(), na(), na()],
                });
            }
            table.push(cells);
        }
        out += &render_table(&table, |c| c < 3 && c != 1);
        if let Some(idle) = idle_line(&self.idle) {
            out += "\n";
            out += &idle;
        }
        if let Some(why) = &self.ovs_skipped {
            out += &format!("\nOVS-DPDK left out (it cannot start here): {why}\n");
        }
        let name = |r: &RunResult| {
            format!(
                "{} {} B {} run {}",
                r.switch,
                r.case.size,
                r.case.label(),
                r.run
            )
        };
        let failed = failed_lines(&self.runs, "", name);
        if !failed.is_empty() {
            out += "\n";
            out += &failed;
        }
        let Tally {
            busy,
            apart,
            unstable,
            repeated,
        } = Tally::of(&self.runs);
        if busy > 0 {
            out += &format!(
                "\nMACHINE BUSY: {busy} of {} run(s) shared the CPUs with other work; their \
                 figures are not clean\n",
                self.runs.len()
            );
        } else {
            out += "\nmachine idle: no other QEMU or testpmd, other CPU use below 5 % in every \
                    window\n";
        }
        let (a, b) = self.cpus;
        out += &format!(
            "CPU {a} <-> CPU {b} cache-line round trip: best {:.0} ns; in the runs kept, {apart} \
             had the vCPUs placed apart by the host (round trip > {APART_FACTOR} x best: \
             slower), {unstable} changed rate within the window\n",
            self.best_pingpong
        );
        if repeated > 0 {
            out += &format!("{repeated} disturbed attempt(s) were measured again and left out\n");
        }
        if self
            .rows()
            .iter()
            .any(|r| [r.vnetd, r.dpdk, r.ovs].iter().flatten().any(|m| !m.clean))
        {
            out += "* no clean run: the median of disturbed runs\n";
        }
        out += &anomaly_lines(&self.runs, "anomalies:", name);
        out
    }

    fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|row| {
                let side = |m: Option<Medians>| m.map(|m| m.json(row.size));
                let mpps = |m: Option<Medians>| m.map(|m| m.mpps);
                json!({
                    "scenario": row.scenario,
                    "queue_pairs": row.queues,
                    "size": row.size,
                    "vnetd_mode": row.mode,
                    "vnetd": side(row.vnetd),
                    "dpdk": side(row.dpdk),
                    "ratio": ratio(mpps(row.vnetd), mpps(row.dpdk)),
                    "ovs": side(row.ovs),
                    "ratio_ovs": ratio(mpps(row.vnetd), mpps(row.ovs)),
                })
            })
            .collect();
        let idle = idle_json(&self.idle);
        json!({
            "info": self.info,
            "best_core_to_core_round_trip_ns": self.best_pingpong,
            "method": {
                "generator": "dpdk-testpmd -i, 2 net_virtio_user ports, --forward-mode=mac \
                              --port-topology=paired, eth-peers crossed, start tx_first",
                "tx_first_bursts": TX_FIRST_BURSTS,
                "warmup_secs": WARMUP.as_secs_f64(),
                "secs": self.secs,
                "runs": self.args_runs,
                "sizes": self.sizes,
                "devargs": self.devargs,
                "anchor": "dpdk-testpmd, 2 net_vhost ports, --forward-mode=io",
                "anchor_ovs": ovs::DESCRIPTION,
                "queue_pairs": self.vm2vm,
                "queue_pairs_note": "N > 1: generator virtio-user queues=N with --rxq=N --txq=N, \
                                     vnetd ports queues=N, anchor net_vhost queues=N with \
                                     --rxq=N --txq=N",
                "rate": "sum of both generator ports' RX-packets deltas / wall time between samples",
            },
            "rows": rows,
            "idle_cpu_pct": idle,
            "ovs_skipped": self.ovs_skipped,
            "runs": self.runs.iter().map(RunResult::json).collect::<Vec<_>>(),
            "vm2vm": !self.vm2vm.is_empty(),
            "tap": self.tap.as_ref().map(tap::TapReport::json),
            "tso": self.tso.as_ref().map(tso::TsoReport::json),
            "logs": self.logs.display().to_string(),
        })
    }
}

/// The generator testpmd, interactive.
#[derive(Debug)]
struct Generator {
    proc: Proc,
}

impl Generator {
    /// Sends a command and waits for the next prompt.
    fn send_wait(&mut self, command: &str) -> Result<String> {
        let from = self.proc.output().len();
        self.proc.send(command)?;
        self.proc
            .wait_output(from, Duration::from_secs(20), command, |out| {
                out.matches("testpmd> ").count() >= 1
            })
    }

    /// Port and forwarding statistics of both ports, now.
    fn stats(&mut self) -> Result<Vec<Block>> {
        let from = self.proc.output().len();
        self.proc.send("show port stats all\nshow fwd stats all")?;
        let out =
            self.proc
                .wait_output(from, Duration::from_secs(20), "port statistics", |out| {
                    out.matches("testpmd> ").count() >= 2
                })?;
        let blocks = parse_blocks(&out);
        for kind in [BlockKind::Nic, BlockKind::Fwd] {
            for port in 0..2 {
                if !blocks.iter().any(|b| b.kind == kind && b.port == port) {
                    bail!("no {kind:?} statistics for port {port} in testpmd's answer:\n{out}");
                }
            }
        }
        Ok(blocks)
    }

    /// Quits testpmd and waits for it.
    fn quit(mut self) -> Result<()> {
        self.proc.send("quit")?;
        let status = self.proc.wait_exit(Duration::from_secs(20))?;
        if !status.success() {
            bail!(
                "the generator exited with {status}; see {}",
                self.proc.log.display()
            );
        }
        Ok(())
    }
}

/// A child process with its output captured (and logged), stopped and cleaned up on drop.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    /// What it wrote to stdout and to stderr, kept apart: testpmd writes its prompt one
    /// character at a time, and its stderr must not land in the middle.
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    log: PathBuf,
    /// The `--file-prefix` of a DPDK process: its runtime and hugepage files go on drop.
    dpdk_prefix: Option<String>,
}

impl Proc {
    fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        dpdk_prefix: Option<String>,
    ) -> Result<Proc> {
        let shown = util::display(&cmd);
        let mut file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        writeln!(file, "$ {shown}")?;
        let file = Arc::new(Mutex::new(file));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let streams: [(Box<dyn Read + Send>, _); 2] = [
            (
                Box::new(child.stdout.take().context("no stdout")?),
                stdout.clone(),
            ),
            (
                Box::new(child.stderr.take().context("no stderr")?),
                stderr.clone(),
            ),
        ];
        for (mut stream, output) in streams {
            let file = file.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    lock(&output).push_str(&text);
                    let _ = lock(&file).write_all(text.as_bytes());
                }
            });
        }
        Ok(Proc {
            name: name.to_string(),
            pid: child.id(),
            stdin: child.stdin.take(),
            child: Some(child),
            stdout,
            stderr,
            log: log.to_path_buf(),
            dpdk_prefix,
        })
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// What it wrote to stdout so far.
    fn output(&self) -> String {
        lock(&self.stdout).clone()
    }

    /// What it wrote to stderr so far.
    fn errors(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// The end of both its outputs, for error messages.
    fn tail(&self) -> String {
        format!(
            "{}
(stderr:)
{}",
            tail(&self.output(), 15),
            tail(&self.errors(), 10)
        )
    }

    /// Writes `line` and a newline to its stdin.
    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("cannot write to {}", self.name))
    }

    /// Fails (with the end of its output) if it exited.
    fn check_alive(&mut self) -> Result<()> {
        let child = self.child.as_mut().context("already stopped")?;
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited early with {status}; the end of its output ({}):\n{}",
                self.name,
                self.log.display(),
                self.tail()
            );
        }
        Ok(())
    }

    /// Waits until its output from byte `from` on satisfies `done`, and returns that part.
    fn wait_output(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            let new = out.get(from..).unwrap_or("");
            if done(new) {
                return Ok(new.to_string());
            }
            self.check_alive()
                .with_context(|| format!("waiting for {what}"))?;
            if Instant::now() > deadline {
                bail!(
                    "{} gave no {what} within {timeout:?}; the end of its output ({}):\n{}",
                    self.name,
                    self.log.display(),
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for it to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("already stopped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                // Let the reader threads catch up with the last output.
                sleep(Duration::from_millis(50));
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} does not exit", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for the exit.
    fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        signal(self.pid, "TERM");
        self.wait_exit(timeout)
    }

    /// Waits (up to 10 s) until this vnetd has created its sockets `socks`; its log is `log`.
    fn wait_sockets(&mut self, socks: &[&Path], log: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socks.iter().all(|p| p.exists()) {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("vnetd did not create its sockets; see {}", log.display());
            }
            sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits until this anchor testpmd forwards.
    fn wait_forwarding(&mut self) -> Result<String> {
        self.wait_output(0, Duration::from_secs(60), "anchor forwarding", |out| {
            out.contains("Press enter to exit")
        })
    }

    /// Stops this vnetd with SIGTERM, its frontends gone: it should be quiet, then exit
    /// cleanly. Returns what was not right, as anomalies: its exit status, warning and error
    /// lines in its log `log`.
    fn stop_vnetd(&mut self, log: &Path) -> Result<Vec<String>> {
        let mut anomalies = Vec::new();
        let status = self.terminate(Duration::from_secs(10))?;
        if !status.success() {
            anomalies.push(format!("vnetd exited with {status} on SIGTERM"));
        }
        let complaints: Vec<String> = self
            .errors()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains("ERROR") || l.contains("panicked"))
            .map(str::to_string)
            .collect();
        if !complaints.is_empty() {
            anomalies.push(format!(
                "{} warning/error line(s) in {}: {}",
                complaints.len(),
                log.display(),
                complaints[0].trim()
            ));
        }
        Ok(anomalies)
    }

    /// Stops this anchor testpmd (enter at its prompt). Returns the frames it dropped over
    /// the whole run, warm-up included (its forward statistics), and, as anomalies, an
    /// unclean exit.
    fn stop_anchor(&mut self) -> Result<(u64, Vec<String>)> {
        let mut anomalies = Vec::new();
        let from = self.output().len();
        self.send("")?;
        let status = self.wait_exit(Duration::from_secs(20))?;
        if !status.success() {
            anomalies.push(format!("anchor testpmd exited with {status}"));
        }
        let out = self.output();
        let dropped: u64 = parse_blocks(&out[from.min(out.len())..])
            .iter()
            .filter(|b| b.kind == BlockKind::Fwd)
            .map(|b| b.get("RX-dropped") + b.get("TX-dropped"))
            .sum();
        Ok((dropped, anomalies))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // testpmd exits on EOF, vnetd on SIGTERM; whatever is left, SIGKILL.
            drop(self.stdin.take());
            let exited = |child: &mut Child, wait: Duration| {
                let deadline = Instant::now() + wait;
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                false
            };
            if !exited(&mut child, Duration::from_secs(2)) {
                signal(self.pid, "TERM");
                if !exited(&mut child, Duration::from_secs(3)) {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
        if let Some(prefix) = &self.dpdk_prefix {
            remove_dpdk_files(prefix);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends SIGname to one process (`kill -NAME PID`).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A directory removed (with its contents) on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn create(path: PathBuf) -> Result<TempDir> {
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Which statistics block of testpmd's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    /// `NIC statistics for port N` (`show port stats`).
    Nic,
    /// `Forward statistics for port N` (`show fwd stats`, `stop`).
    Fwd,
}

/// One port's statistics block: every `Key: number` in it.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    kind: BlockKind,
    port: usize,
    figures: BTreeMap<String, u64>,
}

impl Block {
    fn get(&self, key: &str) -> u64 {
        self.figures.get(key).copied().unwrap_or(0)
    }
}

/// The complete per-port statistics blocks in testpmd's output.
fn parse_blocks(out: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in out.lines() {
        let t = line.trim();
        let header = [
            ("NIC statistics for port ", BlockKind::Nic),
            ("Forward statistics for port ", BlockKind::Fwd),
        ]
        .iter()
        .find_map(|(marker, kind)| {
            let rest = &t[t.find(marker)? + marker.len()..];
            let port = rest.split_whitespace().next()?.parse().ok()?;
            Some(Block {
                kind: *kind,
                port,
                figures: BTreeMap::new(),
            })
        });
        if header.is_some() || t.contains("Accumulated forward statistics") {
            current = header;
            continue;
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        // A rule of `#`, `-` or `+` closes the block.
        if t.len() >= 20 && t.chars().all(|c| "#-+".contains(c)) {
            blocks.extend(current.take());
            continue;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        for pair in words.windows(2) {
            if let (Some(key), Ok(value)) = (pair[0].strip_suffix(':'), pair[1].parse()) {
                block.figures.insert(key.to_string(), value);
            }
        }
    }
    blocks
}

/// `Port N: MAC` lines of testpmd's start-up output, in port order.
fn port_macs(out: &str) -> Vec<String> {
    let mut macs = Vec::new();
    for line in out.lines() {
        let Some(rest) = line.trim().strip_prefix("Port ") else {
            continue;
        };
        let Some((n, mac)) = rest.split_once(": ") else {
            continue;
        };
        let is_mac = mac.len() == 17 && mac.split(':').all(|b| b.len() == 2);
        if n.parse::<usize>().ok() == Some(macs.len()) && is_mac {
            macs.push(mac.to_string());
        }
    }
    macs
}

/// Drop counters of `vnetctl stats --json` that grew from `a` to `b`: `port.reason` -> n.
fn vnetd_drop_delta(a: &Value, b: &Value) -> BTreeMap<String, u64> {
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

/// Measures the round trip of a cache line between two CPUs: two threads, each pinned to
/// one CPU (`taskset -p` on its thread id), take turns incrementing a shared counter.
/// Returns ns per round trip.
fn pingpong_ns(cpu_a: usize, cpu_b: usize) -> Result<f64> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const ROUNDS: u64 = 100_000;
    const GIVE_UP: Duration = Duration::from_secs(2);

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
fn pin_this_thread(cpu: usize) -> Result<()> {
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
fn proc_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_proc_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat: {stat}"))
}

fn parse_proc_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The whole machine's CPU time, from /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct SystemTicks {
    /// user + nice + system + irq + softirq (guest time is inside user).
    busy: u64,
    steal: u64,
}

impl SystemTicks {
    fn read() -> Result<SystemTicks> {
        let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        parse_system_ticks(&stat).context("unexpected /proc/stat")
    }
}

fn parse_system_ticks(stat: &str) -> Option<SystemTicks> {
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
fn clk_tck() -> f64 {
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
fn foreign_processes(ours: &[u32]) -> Vec<String> {
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

/// CPUs this process may run on (`Cpus_allowed_list`).
fn allowed_cpus() -> Vec<usize> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("");
    parse_cpu_list(list)
}

fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|s| !s.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            cpus.extend(a..=b);
        }
    }
    cpus
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Cargo's target directory.
fn target_dir() -> PathBuf {
    let root = util::workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn hugetlbfs_mounts() -> Vec<PathBuf> {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "hugetlbfs").then(|| PathBuf::from(dir))
        })
        .collect()
}

fn free_hugepages() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Where DPDK keeps runtime directories (`/var/run/dpdk` for root).
fn dpdk_runtime_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/var/run/dpdk"), PathBuf::from("/tmp/dpdk")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(x).join("dpdk"));
    }
    dirs
}

/// Removes what a testpmd with this `--file-prefix` leaves behind: its runtime directory
/// and its hugepage files (which keep the pages reserved until deleted).
fn remove_dpdk_files(prefix: &str) {
    for dir in dpdk_runtime_dirs() {
        let _ = fs::remove_dir_all(dir.join(prefix));
    }
    let map = format!("{prefix}map_");
    for mount in hugetlbfs_mounts() {
        for entry in fs::read_dir(&mount).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&map) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Removes sockets directories, DPDK runtime directories and hugepage files of earlier
/// bench processes that are gone (killed before they could clean up).
fn sweep_stale() {
    let mut places: Vec<PathBuf> = dpdk_runtime_dirs();
    places.extend(hugetlbfs_mounts());
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
fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TAG)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    if after.is_empty() || after.starts_with('-') {
        digits.parse().ok()
    } else {
        None
    }
}

/// The date, kernel, CPU, DPDK version, commit and command.
fn machine_info(stamp: &Stamp, command: &str) -> BTreeMap<&'static str, String> {
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

/// A UTC time, to the second.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    year: i64,
    month: u32,
    day: u32,
    secs_of_day: u64,
}

impl Stamp {
    fn of(t: SystemTime) -> Stamp {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (year, month, day) = civil_from_days(secs / 86_400);
        Stamp {
            year,
            month,
            day,
            secs_of_day: secs % 86_400,
        }
    }

    fn hms(&self) -> (u64, u64, u64) {
        let s = self.secs_of_day;
        (s / 3600, s / 60 % 60, s % 60)
    }

    /// `2026-05-09T07:35:12Z`.
    fn iso(&self) -> String {
        let (h, m, s) = self.hms();
        format!(
            "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}Z",
            self.year, self.month, self.day
        )
    }

    /// `20260509T073512Z`, for file names.
    fn compact(&self) -> String {
        let (h, m, s) = self.hms();
        format!(
            "{:04}{:02}{:02}T{h:02}{m:02}{s:02}Z",
            self.year, self.month, self.day
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (i64, u32, u32) {
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    (year, small(month), small(day))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "\
testpmd> show port stats all

  ######################## NIC statistics for port 0  ########################
  RX-packets: 25953568   RX-missed: 0          RX-bytes:  1661028352
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 25954592   TX-errors: 0          TX-bytes:  1661094912

  Throughput (since last show)
  Rx-pps:     12907307          Rx-bps:   6608541400
  Tx-pps:     12907328          Tx-bps:   6608549584
  ############################################################################

  ######################## NIC statistics for port 1  ########################
  RX-packets: 25953600   RX-missed: 3          RX-bytes:  1661030400
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 25954592   TX-errors: 0          TX-bytes:  1661093888

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
testpmd> show fwd stats all

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 25953568       RX-dropped: 0             RX-total: 25953568
  TX-packets: 25954592       TX-dropped: 7             TX-total: 25954599
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 25953600       RX-dropped: 0             RX-total: 25953600
  TX-packets: 25954592       TX-dropped: 0             TX-total: 25954592
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 51907168       RX-dropped: 0             RX-total: 51907168
  TX-packets: 51909184       TX-dropped: 0             TX-total: 51909184
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
testpmd> ";

    #[test]
    fn parses_port_and_forward_statistics() {
        let blocks = parse_blocks(STATS);
        assert_eq!(blocks.len(), 4, "{blocks:?}");
        let nic1 = &blocks[1];
        assert_eq!((nic1.kind, nic1.port), (BlockKind::Nic, 1));
        assert_eq!(nic1.get("RX-packets"), 25_953_600);
        assert_eq!(nic1.get("RX-missed"), 3);
        assert_eq!(nic1.get("TX-bytes"), 1_661_093_888);
        assert_eq!(blocks[0].get("Rx-pps"), 12_907_307);
        let fwd0 = &blocks[2];
        assert_eq!((fwd0.kind, fwd0.port), (BlockKind::Fwd, 0));
        assert_eq!(fwd0.get("TX-dropped"), 7);
        // The accumulated block is no port's.
        assert!(blocks.iter().all(|b| b.get("RX-packets") != 51_907_168));
    }

    #[test]
    fn incomplete_blocks_are_left_out() {
        let cut = &STATS[..STATS.find("Throughput").unwrap()];
        assert!(parse_blocks(cut).is_empty());
    }

    #[test]
    fn finds_port_macs() {
        let out = "Configuring Port 0 (socket 0)\nPort 0: 52:54:00:BE:00:0A\n\
                   Configuring Port 1 (socket 0)\nPort 1: 52:54:00:BE:00:0B\n\
                   Port 1: link state change event\n";
        assert_eq!(port_macs(out), ["52:54:00:BE:00:0A", "52:54:00:BE:00:0B"]);
    }

    #[test]
    fn reads_proc_times() {
        let stat = "1234 (dpdk-testpmd (x)) S 1 1234 1 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 \
                    4 0 100 0 0";
        assert_eq!(parse_proc_ticks(stat), Some(325));
        let sys = parse_system_ticks("cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!((sys.busy, sys.steal), (21, 4));
    }

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

    #[test]
    fn two_queue_pair_scenario() {
        use clap::ValueEnum;
        assert_eq!(Scenario::from_str("vm2vm-2q", false), Ok(Scenario::Vm2vm2q));
        assert_eq!(Scenario::Vm2vm2q.vm2vm_queue_pairs(), Some(2));
        assert_eq!(Scenario::Vm2vm.vm2vm_queue_pairs(), Some(1));
        assert_eq!(Scenario::Tap.vm2vm_queue_pairs(), None);
        let two = Case {
            devargs: "in_order=0".into(),
            size: 64,
            queues: 2,
        };
        assert_eq!(two.scenario(), "VM-to-VM 2q in_order=0");
        assert_eq!(two.label(), "2q in_order=0");
        assert_eq!(two.queue_args(), ["--rxq=2", "--txq=2"]);
        let one = Case {
            queues: 1,
            ..two.clone()
        };
        assert_eq!(one.scenario(), "VM-to-VM in_order=0");
        assert!(one.queue_args().is_empty());
        assert_ne!(one, two, "rows and medians keep the two apart");
    }

    #[test]
    fn medians_and_rates() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((gbits(1.0, 1514) - 12.112).abs() < 1e-9);
    }

    #[test]
    #[ignore = "spins two CPUs; run by hand"]
    fn pingpong_runs() {
        let cpus = allowed_cpus();
        let ns = pingpong_ns(cpus[0], cpus[cpus.len() - 1]).unwrap();
        eprintln!("round trip {ns:.0} ns");
        assert!(ns > 1.0 && ns < 100_000.0, "{ns}");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let t = UNIX_EPOCH + Duration::from_secs(1_778_312_112);
        assert_eq!(Stamp::of(t).iso(), "2026-05-09T07:35:12Z");
        assert_eq!(Stamp::of(t).compact(), "20260509T073512Z");
    }

    #[test]
    fn cpu_lists_and_stale_names() {
        assert_eq!(parse_cpu_list("0-1\n"), [0, 1]);
        assert_eq!(parse_cpu_list("0,2-3"), [0, 2, 3]);
        assert_eq!(stale_owner("vnet-bench-42"), Some(42));
        assert_eq!(stale_owner("vnet-bench-42-03-dpdkmap_0"), Some(42));
        assert_eq!(stale_owner("vnet-bench-42x"), None);
        assert_eq!(stale_owner("vnet-test-42"), None);
    }
}
