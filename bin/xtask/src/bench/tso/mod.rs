//! The "64 KiB TSO frames VM to VM" scenario of `cargo xtask bench` (`--scenarios tso`).
//!
//! The generator is not testpmd but our own userspace virtio-net driver, `vnet-frontend`:
//! `crates/frontend/examples/tso_gen.rs`, built in release by the bench. One process on
//! the generator CPU holds two frontends, A and B, busy polling, both negotiating what a
//! Linux guest asks for (MRG_RXBUF, CSUM, GUEST_CSUM, HOST_TSO4, GUEST_TSO4, ...). Each
//! direction is a closed loop: [`WINDOW`] TSO frames in flight, one more sent for every one
//! received. Every frame is 65214 bytes of Ethernet/IPv4/TCP with a `virtio_net_hdr` as
//! Linux sends it (NEEDS_CSUM, GSO_TCPV4, gso_size 1448).
//!
//! Switches, interleaved, `--runs` times each: every vnetd mode (`--modes`), the DPDK
//! anchor (testpmd `io` between two `net_vhost` ports with
//! `tso=1,legacy-ol-flags=1,ext-buffer=1`: the TSO frame reaches the other guest as a TSO
//! frame, as with vnetd) and DPDK with its default offload flags (`tso=1` only: the frame
//! arrives as one 64 KiB frame without GSO header, its TCP checksum completed in software
//! by net_vhost). What arrived, and how, is counted either way.
//!
//! The generator answers `stats` on stdin with its counters (frames and bytes received
//! per direction, with its own clock); the bench samples it after a warm-up, half way and
//! at the end of `--secs`, with the switch's and the machine's CPU times, as the other
//! scenarios do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::common::Window;
use super::ctx::Ctx;
use super::probe::Ticks;
use super::proc::Proc;
use super::runner::{run_all, Outcome, Scenario, Switch};
use super::vm2vm::PORTS_AB;
use super::{frontend_example, Args};
use crate::util::warn;
pub(super) use report::TsoReport;
use report::TsoRun;

mod report;

/// The generator: an example of the `vnet-frontend` crate.
pub(super) const GEN_EXAMPLE: &str = "tso_gen";
/// TSO frames in flight per direction. Each takes 16 of the receiver's 4096-byte rx
/// buffers (1024 per ring: room for 64) and one of the sender's 64 tx slots.
pub(super) const WINDOW: u64 = 16;
/// Per run, as the generator builds it: Ethernet + IPv4 + TCP headers and 45 x 1448
/// bytes of payload (IP total length 65200), gso_size 1448.
pub(super) const FRAME_BYTES: u64 = 65214;
pub(super) const MSS: u64 = 1448;
/// net_vhost arguments of the anchor: TSO offered to the guests (HOST_TSO4/6; without
/// `tso=1` the guest may not send TSO frames at all); the legacy offload flags, with
/// which the vhost library turns the guest's GSO header into TX_TCP_SEG on the mbuf and
/// back into a GSO header for the receiving guest; and external buffers, so that a 64 KiB
/// frame lands in one buffer rather than a chain of ~32 2 KiB mbufs (more than twice the
/// rate in a probe on the development machine; docs/bench.md).
pub(super) const ANCHOR_DEVARGS: &str = "tso=1,legacy-ol-flags=1,ext-buffer=1";
/// DPDK's default offload flags (RTE_VHOST_USER_NET_COMPLIANT_OL_FLAGS): the mbuf gets
/// RX_LRO, the receiving guest a plain frame, and net_vhost completes the TCP checksum in
/// software because testpmd did not enable the port's rx checksum offload.
pub(super) const DEFAULT_DEVARGS: &str = "tso=1";

fn gen_path() -> PathBuf {
    frontend_example(GEN_EXAMPLE)
}

/// Runs the scenario: `--runs` rounds of every switch. Never fails: a set-up error is
/// reported in the result.
pub(super) fn run(ctx: &Ctx, args: &Args, modes: &[Option<String>]) -> TsoReport {
    let scenario = Tso {
        switches: Switch::list(modes, &[Switch::Dpdk, Switch::DpdkDefaultOl], args.only),
    };
    let mut report = TsoReport {
        runs: Vec::new(),
        switches: scenario.switches.clone(),
        runs_per_cell: args.runs,
        secs: args.secs,
        idle: Vec::new(),
        error: None,
    };
    if !gen_path().exists() {
        let err = format!("{} is missing", gen_path().display());
        warn(format!("TSO scenario: {err}"));
        report.error = Some(err);
        return report;
    }
    eprintln!(
        "bench: 64 KiB TSO frames VM to VM, generator {} ({WINDOW} frames in flight per \
         direction)",
        gen_path().display()
    );
    let Outcome { runs, idle } = run_all(ctx, args, &scenario);
    report.runs = runs;
    report.idle = idle;
    report
}

/// The scenario: one cell (the one frame size), its switches.
#[derive(Debug)]
struct Tso {
    switches: Vec<Switch>,
}

impl Scenario for Tso {
    type Cell = ();
    type Run = TsoRun;

    fn cells(&self) -> Vec<()> {
        vec![()]
    }

    fn switches(&self) -> &[Switch] {
        &self.switches
    }

    fn idle_check(&self) -> bool {
        true
    }

    fn describe(&self, switch: &Switch, (): &()) -> String {
        format!("TSO {}, {FRAME_BYTES}-byte TSO frames", switch.label())
    }

    fn run_once(&self, ctx: &Ctx, switch: &Switch, (): &(), idle_check: bool) -> Result<TsoRun> {
        run_switch(ctx, switch, idle_check)
    }
}

/// One run of `switch`.
fn run_switch(ctx: &Ctx, switch: &Switch, idle_check: bool) -> Result<TsoRun> {
    let run = ctx.run_dir(&format!("tso-{}", switch.label()))?;
    let (sa, sb, ctl) = (run.sock("a"), run.sock("b"), run.sock("ctl"));
    let mut result = TsoRun::default();
    let (mut sw, ctl) = match switch {
        Switch::Vnetd(mode) => (
            ctx.start_vnetd(&run, mode.as_deref(), 1, &PORTS_AB)?,
            Some(ctl),
        ),
        Switch::Dpdk => (
            ctx.start_vhost_anchor(&run, &["a", "b"], 1, ANCHOR_DEVARGS, &[])?,
            None,
        ),
        Switch::DpdkDefaultOl => (
            ctx.start_vhost_anchor(&run, &["a", "b"], 1, DEFAULT_DEVARGS, &[])?,
            None,
        ),
        other => bail!("{} is no TSO switch", other.label()),
    };
    let mut gen = TsoGen::start(ctx, &format!("{}-gen", run.name), [&sa, &sb])?;
    let mut features = format!("generator: {}", gen.ready);
    if let Some(ctl) = &ctl {
        features += &format!("; vnetd: {}", ctx.wait_ports_up(ctl, &mut sw, ["a", "b"])?);
    }
    result.rec.features = features;

    let window = measure(ctx, &mut gen, &sw, ctl.as_deref())?;
    gen.ask("stop", "stopped")?;
    if idle_check {
        result.rec.idle_cpu = Some(ctx.idle_cpu(&sw)?);
    }
    gen.quit()?;

    match switch {
        Switch::Vnetd(_) => {
            result.rec.anomalies.extend(sw.stop_vnetd(&run.log)?);
        }
        _ => {
            let (dropped, anomalies) = sw.stop_anchor()?;
            result.rec.anomalies.extend(anomalies);
            result.rec.anchor_drops = Some(dropped);
            if dropped > 0 {
                result.rec.anomalies.push(format!(
                    "the anchor dropped {dropped} frame(s) over the run"
                ));
            }
        }
    }
    result.fill(ctx, &window);
    Ok(result)
}

/// The generator process, answering one line per command.
struct TsoGen {
    proc: Proc,
    /// Its `ready` line: features negotiated on both ports.
    ready: String,
}

impl TsoGen {
    fn start(ctx: &Ctx, name: &str, socks: [&Path; 2]) -> Result<TsoGen> {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(ctx.cpu_gen.to_string())
            .arg(gen_path())
            .arg(socks[0])
            .arg(socks[1])
            .args(["--window", &WINDOW.to_string()]);
        let log = ctx.logs.join(format!("{name}.log"));
        let mut gen = TsoGen {
            proc: Proc::spawn("TSO generator", cmd, &log, None)?,
            ready: String::new(),
        };
        let ready = gen.answer(0, "ready", Duration::from_secs(60))?;
        let side = |s: &str| {
            let f = u64::from_str_radix(
                ready[s]["features"]
                    .as_str()
                    .unwrap_or("0")
                    .trim_start_matches("0x"),
                16,
            )
            .unwrap_or(0);
            format!("{s} {}", virtio_features(f))
        };
        gen.ready = format!("{}; {}", side("a"), side("b"));
        Ok(gen)
    }

    /// Waits for the line `<word> {json}` in the output from byte `from` on.
    fn answer(&mut self, from: usize, word: &str, timeout: Duration) -> Result<Value> {
        let prefix = format!("{word} ");
        let out = self.proc.wait_output(from, timeout, word, |out| {
            out.lines().any(|l| l.starts_with("error ")) && out.ends_with('\n')
                || out
                    .split_inclusive('\n')
                    .any(|l| l.starts_with(&prefix) && l.ends_with('\n'))
        })?;
        if let Some(err) = out.lines().find_map(|l| l.strip_prefix("error ")) {
            bail!("the TSO generator: {err}");
        }
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .context("no answer")?;
        serde_json::from_str(line).with_context(|| format!("the generator's {word} line: {line}"))
    }

    /// Sends `command` and returns the JSON of its answer line `<word> {json}`.
    fn ask(&mut self, command: &str, word: &str) -> Result<Value> {
        let from = self.proc.output().len();
        self.proc.send(command)?;
        self.answer(from, word, Duration::from_secs(20))
    }

    fn quit(mut self) -> Result<()> {
        self.proc.quit("TSO generator")
    }
}

/// The offload-related names among feature bits `f`.
pub(super) fn virtio_features(f: u64) -> String {
    const NAMES: [(u32, &str); 9] = [
        (0, "CSUM"),
        (1, "GUEST_CSUM"),
        (7, "GUEST_TSO4"),
        (8, "GUEST_TSO6"),
        (11, "HOST_TSO4"),
        (12, "HOST_TSO6"),
        (15, "MRG_RXBUF"),
        (28, "INDIRECT_DESC"),
        (29, "EVENT_IDX"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| f & (1 << bit) != 0)
        .map(|(_, n)| *n)
        .collect();
    format!("{:#x} ({})", f, names.join(" "))
}

/// The generator's counters of one direction, as it reports them: `frames` received and
/// their `bytes`, of those with a GSO header (`gso`) and with NEEDS_CSUM (`needs_csum`),
/// frames `lost` (nothing came back in time), first frames that arrived changed (`bad`),
/// the shortest and longest frame (`min_len`, `max_len`), and how the `first` arrived.
#[derive(Debug, Clone, Default)]
pub(super) struct DirCounters(Value);

impl DirCounters {
    fn of(v: &Value) -> DirCounters {
        DirCounters(v.clone())
    }

    /// The counter `key` (0 when missing).
    pub(super) fn n(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or(0)
    }

    /// How the first frame arrived.
    pub(super) fn first(&self) -> &str {
        self.0["first"].as_str().unwrap_or("")
    }
}

/// Counters and CPU times at one instant.
#[derive(Debug)]
pub(super) struct Snap {
    /// When it was taken.
    pub(super) at: Instant,
    /// The generator's clock, ns.
    pub(super) t_ns: u64,
    /// A to B, B to A.
    pub(super) dirs: [DirCounters; 2],
    /// The switch's and the generator's CPU times.
    pub(super) ticks: Ticks,
}

fn snapshot(gen: &mut TsoGen, switch: &Proc) -> Result<Snap> {
    let at = Instant::now();
    let ticks = Ticks::read(switch.pid(), &[&[gen.proc.pid()]])?;
    let v = gen.ask("stats", "stats")?;
    Ok(Snap {
        at,
        t_ns: v["t_ns"].as_u64().unwrap_or(0),
        dirs: [DirCounters::of(&v["a_to_b"]), DirCounters::of(&v["b_to_a"])],
        ticks,
    })
}

/// Starts the traffic, waits for the warm-up, and measures a window of `--secs`.
fn measure(ctx: &Ctx, gen: &mut TsoGen, switch: &Proc, ctl: Option<&Path>) -> Result<Window<Snap>> {
    gen.ask("start", "started")?;
    let ours = [switch.pid(), gen.proc.pid()];
    Window::measure(ctx, ctl, &ours, || snapshot(gen, switch), |s| s.at)
}
