//! The VM-to-VM scenarios of `cargo xtask bench` (`vm2vm`, `vm2vm-2q`): forwarding rate of vnetd, against DPDK's own vhost as the
//! anchor, with the method DPDK uses for its vhost numbers (no VM, one core each).
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

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use testbed::MacAddr;

use super::common::{
    medians, medians_json, run_json, run_record, summary_tail, Medians, Record, Window,
};
use super::ctx::Ctx;
use super::ovs;
use super::probe::Ticks;
use super::proc::Proc;
use super::runner::{Scenario, Switch};
use super::testpmd::{Block, BlockKind, BusyCycles, Generator};
use super::Args;

/// The generator's ports, A and B, and the MACs vnetd's devices present (the same).
pub(super) const MAC_A: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xbe, 0x00, 0x0a]);
pub(super) const MAC_B: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xbe, 0x00, 0x0b]);
/// The switch's two ports in most scenarios: name and MAC.
pub(super) const PORTS_AB: [(&str, MacAddr); 2] = [("a", MAC_A), ("b", MAC_B)];
/// Bursts (of 32 frames) `start tx_first` puts on each port: what then circulates. Enough
/// to keep both rings busy; the excess is dropped at once and does not come back.
pub(super) const TX_FIRST_BURSTS: u32 = 32;
/// The same in the lightly loaded scenario: 64 frames per port, never a full ring.
pub(super) const LIGHT_BURSTS: u32 = 2;

/// How a VM-to-VM scenario loads the switch: queue pairs per port and the bursts of 32
/// frames put in flight on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Load {
    pub(super) queues: u16,
    pub(super) bursts: u32,
}

impl Load {
    /// `vm2vm`: as many frames as the rings hold and more.
    pub(super) const SATURATED: Load = Load {
        queues: 1,
        bursts: TX_FIRST_BURSTS,
    };
    /// `vm2vm-light`: 64 frames in flight per port (guests that do not saturate).
    pub(super) const LIGHT: Load = Load {
        queues: 1,
        bursts: LIGHT_BURSTS,
    };
}

/// One cell of the table: generator devargs, frame size, queue pairs per port and frames
/// in flight.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Case {
    pub(super) devargs: String,
    pub(super) size: u32,
    /// Queue pairs of every port: generator, vnetd and anchor (`vm2vm-2q`: 2).
    pub(super) queues: u16,
    /// Bursts of 32 frames put in flight per port (0: [`TX_FIRST_BURSTS`]).
    pub(super) bursts: u32,
}

impl Case {
    /// Queue pairs per port (at least one).
    pub(super) fn queue_pairs(&self) -> u16 {
        self.queues.max(1)
    }

    /// Bursts of 32 frames `start tx_first` puts on each port.
    pub(super) fn tx_first_bursts(&self) -> u32 {
        if self.bursts == 0 {
            TX_FIRST_BURSTS
        } else {
            self.bursts
        }
    }

    /// The scenario's name in the table: `VM-to-VM in_order=0`, `VM-to-VM 2q default`,
    /// `VM-to-VM light default`.
    pub(super) fn scenario(&self) -> String {
        let light = if self.tx_first_bursts() < TX_FIRST_BURSTS {
            "light "
        } else {
            ""
        };
        match self.queue_pairs() {
            1 => format!("VM-to-VM {light}{}", self.devargs),
            q => format!("VM-to-VM {q}q {light}{}", self.devargs),
        }
    }

    /// Devargs and queue pairs, for run lines: `in_order=0` or `2q in_order=0`.
    pub(super) fn label(&self) -> String {
        self.scenario().trim_start_matches("VM-to-VM ").to_string()
    }

    /// testpmd's `--rxq=N --txq=N` for more than one queue pair (none for one).
    pub(super) fn queue_args(&self) -> Vec<String> {
        match self.queue_pairs() {
            1 => Vec::new(),
            q => vec![format!("--rxq={q}"), format!("--txq={q}")],
        }
    }

    /// Devargs appended to each virtio-user port (empty for DPDK's defaults).
    pub(super) fn extra_devargs(&self) -> &str {
        if self.devargs == "default" {
            ""
        } else {
            &self.devargs
        }
    }
}

/// The VM-to-VM scenarios that run (`vm2vm`, `vm2vm-2q`): their cases and switches.
#[derive(Debug)]
pub(super) struct Vm2vm {
    /// The load of each VM-to-VM scenario asked for, in the order given; empty when none
    /// runs.
    pub(super) loads: Vec<Load>,
    devargs: Vec<String>,
    sizes: Vec<u32>,
    pub(super) switches: Vec<Switch>,
}

impl Vm2vm {
    /// The VM-to-VM scenarios of `args`, measuring `switches`.
    pub(super) fn new(args: &Args, switches: Vec<Switch>) -> Vm2vm {
        let mut loads: Vec<Load> = Vec::new();
        for l in args.scenarios.iter().filter_map(|s| s.vm2vm_load()) {
            if !loads.contains(&l) {
                loads.push(l);
            }
        }
        Vm2vm {
            loads,
            devargs: args.devargs.clone(),
            sizes: args.sizes.clone(),
            switches,
        }
    }
}

impl Scenario for Vm2vm {
    type Cell = Case;
    type Run = RunResult;

    fn cells(&self) -> Vec<Case> {
        cases(&self.loads, &self.devargs, &self.sizes)
    }

    fn switches(&self) -> &[Switch] {
        &self.switches
    }

    fn idle_check(&self) -> bool {
        true
    }

    fn describe(&self, switch: &Switch, case: &Case) -> String {
        format!(
            "{}, {} bytes, devargs {}, {} queue pair(s), {} frames in flight per port",
            switch.label(),
            case.size,
            case.devargs,
            case.queue_pairs(),
            32 * case.tx_first_bursts()
        )
    }

    fn run_once(
        &self,
        ctx: &Ctx,
        switch: &Switch,
        case: &Case,
        idle_check: bool,
    ) -> Result<RunResult> {
        match switch {
            Switch::Vnetd(mode) => run_vnetd(ctx, case, mode.as_deref(), idle_check),
            Switch::Dpdk => run_dpdk(ctx, case, idle_check),
            Switch::Ovs => ovs::run(ctx, case, idle_check),
            other => bail!("{} is no VM-to-VM switch", other.label()),
        }
    }

    fn note_cell(&self, run: &mut RunResult, case: &Case) {
        run.case = case.clone();
    }
}

/// The cases of the VM-to-VM table, in the order they run: by load, devargs, size.
pub(super) fn cases(loads: &[Load], devargs: &[String], sizes: &[u32]) -> Vec<Case> {
    let mut cases = Vec::new();
    for load in loads {
        for devargs in devargs {
            for &size in sizes {
                cases.push(Case {
                    devargs: devargs.clone(),
                    size,
                    queues: load.queues,
                    bursts: load.bursts,
                });
            }
        }
    }
    cases
}

/// One run with vnetd as the switch.
pub(super) fn run_vnetd(
    ctx: &Ctx,
    case: &Case,
    mode: Option<&str>,
    idle_check: bool,
) -> Result<RunResult> {
    let run = ctx.run_dir(&Switch::Vnetd(mode.map(str::to_string)).label())?;
    let mut vnetd = ctx.start_vnetd(&run, mode, case.queue_pairs(), &PORTS_AB)?;
    let (sa, sb, ctl) = (run.sock("a"), run.sock("b"), run.sock("ctl"));
    let mut gen = ctx.start_generator(&format!("{}-gen", run.name), [&sa, &sb], case)?;
    let features = ctx.wait_ports_up(&ctl, &mut vnetd, ["a", "b"])?;

    let mut result = RunResult::default();
    let window = measure(ctx, &mut gen, &vnetd, Some(&ctl), case)?;
    gen.send_wait("stop")?;
    if idle_check {
        result.rec.idle_cpu = Some(ctx.idle_cpu(&vnetd)?);
    }
    gen.quit()?;

    // The frontend is gone: vnetd should be quiet, then exit cleanly on SIGTERM.
    result.rec.anomalies.extend(vnetd.stop_vnetd(&run.log)?);
    result.rec.features = features;
    result.fill(ctx, &window);
    Ok(result)
}

/// One run with the DPDK anchor as the switch.
pub(super) fn run_dpdk(ctx: &Ctx, case: &Case, idle_check: bool) -> Result<RunResult> {
    let run = ctx.run_dir("dpdk")?;
    let mut anchor = ctx.start_vhost_anchor(
        &run,
        &["a", "b"],
        case.queue_pairs(),
        "",
        &case.queue_args(),
    )?;
    let (sa, sb) = (run.sock("a"), run.sock("b"));
    let mut gen = ctx.start_generator(&format!("{}-gen", run.name), [&sa, &sb], case)?;

    let mut result = RunResult::default();
    let window = measure(ctx, &mut gen, &anchor, None, case)?;
    gen.send_wait("stop")?;
    if idle_check {
        result.rec.idle_cpu = Some(ctx.idle_cpu(&anchor)?);
    }
    gen.quit()?;

    let (dropped, anomalies) = anchor.stop_anchor()?;
    result.rec.anomalies.extend(anomalies);
    // Not an anomaly: `tx_first` puts more frames in flight than the rings hold.
    result.rec.anchor_drops = Some(dropped);
    result.fill(ctx, &window);
    Ok(result)
}

/// Starts the traffic (`case`'s frames in flight), waits for the warm-up, and measures a
/// window of `secs`.
pub(super) fn measure(
    ctx: &Ctx,
    gen: &mut Generator,
    switch: &Proc,
    ctl: Option<&Path>,
    case: &Case,
) -> Result<Window<Snapshot>> {
    gen.send_wait(&format!("start tx_first {}", case.tx_first_bursts()))?;
    let ours = [switch.pid(), gen.proc.pid()];
    Window::measure(ctx, ctl, &ours, || snapshot(gen, switch), |s| s.at)
}

/// Counters and CPU times at one instant.
fn snapshot(gen: &mut Generator, switch: &Proc) -> Result<Snapshot> {
    let at = Instant::now();
    let ticks = Ticks::read(switch.pid(), &[&[gen.proc.pid()]])?;
    let (blocks, busy) = gen.stats()?;
    Ok(Snapshot {
        at,
        ticks,
        blocks,
        busy,
    })
}

#[derive(Debug)]
pub(super) struct Snapshot {
    /// When it was taken.
    pub(super) at: Instant,
    /// The switch's and the generator's CPU times.
    pub(super) ticks: Ticks,
    /// The generator's statistics.
    pub(super) blocks: Vec<Block>,
    /// The generator's busy cycles (none before its first frame).
    pub(super) busy: Option<BusyCycles>,
}

impl Snapshot {
    pub(super) fn figure(&self, kind: BlockKind, port: usize, key: &str) -> u64 {
        self.blocks
            .iter()
            .find(|b| b.kind == kind && b.port == port)
            .map_or(0, |b| b.get(key))
    }
}

/// The result of one run.
#[derive(Debug, Default)]
pub(super) struct RunResult {
    pub(super) case: Case,
    /// None when the run failed.
    pub(super) mpps: Option<f64>,
    /// Per generator port (A, B) received Mpps.
    pub(super) port_mpps: [f64; 2],
    /// testpmd's own `Rx-pps` sum for the window (a cross-check of `mpps`).
    pub(super) testpmd_mpps: f64,
    pub(super) secs: f64,
    pub(super) switch_cpu: f64,
    pub(super) gen_cpu: f64,
    /// The share of the window the generator spent on iterations that received frames, %
    /// ([`BusyCycles`]): near 100, the generator set the rate, not the switch.
    pub(super) gen_busy: Option<f64>,
    /// Mpps of the first and the second half of the window.
    pub(super) half_mpps: [f64; 2],
    /// The bookkeeping every scenario's runs have.
    pub(super) rec: Record,
}

impl RunResult {
    /// Computes the figures of a window and notes anything odd in it.
    pub(super) fn fill(&mut self, ctx: &Ctx, w: &Window<Snapshot>) {
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
        self.rec.check_halves(halves, 3);
        let h2 = halves[1];
        let cpu = ctx.cpu_use(&w.first.ticks, &w.last.ticks, wall);
        self.switch_cpu = cpu.switch;
        self.gen_cpu = cpu.groups[0];
        self.gen_busy = match (&w.first.busy, &w.last.busy) {
            (Some(a), Some(b)) => b.busy_pct(a, self.secs),
            _ => None,
        };
        (self.rec.foreign_cpu, self.rec.steal_cpu) = (cpu.foreign, cpu.steal);

        if total == 0 {
            self.rec.anomalies.push("no frames forwarded".into());
        }
        for port in 0..2 {
            for key in ["RX-missed", "RX-errors", "RX-nombuf", "TX-errors"] {
                let n = delta(BlockKind::Nic, port, key);
                if n > 0 {
                    self.rec
                        .anomalies
                        .push(format!("generator port {port} {key} +{n} in the window"));
                }
            }
            for key in ["RX-dropped", "TX-dropped"] {
                let n = delta(BlockKind::Fwd, port, key);
                if n > 0 {
                    self.rec
                        .anomalies
                        .push(format!("generator port {port} {key} +{n} in the window"));
                }
            }
        }
        self.rec.note_vnetd_drops(&w.vnetd_drops);
        if self.testpmd_mpps > 0.0 && (self.testpmd_mpps - h2).abs() / h2 > 0.02 {
            self.rec.anomalies.push(format!(
                "testpmd's own Rx-pps says {:.3} Mpps for the second half, the counters {h2:.3}",
                self.testpmd_mpps
            ));
        }
        self.rec.note_load(&w.busy);
    }

    pub(super) fn summary(&self) -> String {
        let Some(mpps) = self.mpps else {
            return format!("failed: {}", self.rec.error.as_deref().unwrap_or("?"));
        };
        let mut s = format!(
            "{mpps:.3} Mpps (halves {:.3}, {:.3}), {:.2} Gbit/s, switch CPU {:.1} %, generator \
             {:.1} %, others {:.1} % over {:.2} s",
            self.half_mpps[0],
            self.half_mpps[1],
            gbits(mpps, self.case.size),
            self.switch_cpu,
            self.gen_cpu,
            self.rec.foreign_cpu,
            self.secs
        );
        if let Some(busy) = self.gen_busy {
            s += &format!("; generator busy {busy:.0} %");
        }
        if let Some(idle) = self.rec.idle_cpu {
            s += &format!("; idle CPU {idle:.1} %");
        }
        s + &summary_tail(self.rec.pingpong_ns, &self.rec.anomalies)
    }

    pub(super) fn json(&self) -> Value {
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
            "generator_busy_pct": self.gen_busy,
            "idle_cpu_pct": self.rec.idle_cpu,
            "half_window_mpps": self.half_mpps,
        });
        run_json(self, own)
    }
}

run_record!(RunResult);

/// Gbit/s of `mpps` frames of `size` bytes (no FCS, preamble or gap).
pub(super) fn gbits(mpps: f64, size: u32) -> f64 {
    mpps * f64::from(size) * 8.0 / 1000.0
}

/// The JSON of the medians of a VM-to-VM cell of frame `size`.
pub(super) fn medians_json_of(m: &Medians, size: u32) -> Value {
    let mut v = medians_json(m.mpps, gbits(m.mpps, size), m.cpu, m.runs, m.clean);
    v["generator_busy_pct"] = json!(m.extra);
    v
}

/// The medians of `switch`'s runs of `case`.
pub(super) fn medians_of(runs: &[RunResult], switch: &str, case: &Case) -> Option<Medians> {
    medians(
        runs,
        |r| r.rec.switch == switch && r.case == *case,
        |r| r.gen_busy,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_queue_pair_scenario() {
        use super::super::ScenarioName;
        use clap::ValueEnum;
        assert_eq!(
            ScenarioName::from_str("vm2vm-2q", false),
            Ok(ScenarioName::Vm2vm2q)
        );
        assert_eq!(ScenarioName::Vm2vm2q.vm2vm_queue_pairs(), Some(2));
        assert_eq!(ScenarioName::Vm2vm.vm2vm_queue_pairs(), Some(1));
        assert_eq!(ScenarioName::Tap.vm2vm_queue_pairs(), None);
        let two = Load {
            queues: 2,
            ..Load::SATURATED
        };
        assert_eq!(
            cases(&[Load::SATURATED, two], &["a".into()], &[64, 1514]).len(),
            4
        );
        assert_eq!(
            cases(&[Load::SATURATED, two], &["a".into()], &[64])[1].queues,
            2
        );
        let light = &cases(&[Load::LIGHT], &["default".into()], &[64])[0];
        assert_eq!(light.tx_first_bursts(), 2);
        assert_eq!(light.scenario(), "VM-to-VM light default");
        let two = Case {
            devargs: "in_order=0".into(),
            size: 64,
            queues: 2,
            bursts: 0,
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
        use super::super::common::median;
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((gbits(1.0, 1514) - 12.112).abs() < 1e-9);
    }
}
