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
use serde_json::{json, Value};

use super::common::{
    self, anomaly_lines, check_placement_all, failed_lines, idle_json, idle_line, median,
    medians_json, mode_of, na, rate_cell, ratio, render_table, run_json, run_record, summary_tail,
    vnetd_label, vnetd_labels, RunRecord, Tally, Window,
};
use super::{proc_ticks, Args, Ctx, Only, Proc, SystemTicks, TempDir, TAG, WARMUP};
use crate::util::{self, cargo, warn};

/// The generator: an example of the `vnet-frontend` crate.
const GEN_PACKAGE: &str = "vnet-frontend";
const GEN_EXAMPLE: &str = "tso_gen";
/// TSO frames in flight per direction. Each takes 16 of the receiver's 4096-byte rx
/// buffers (1024 per ring: room for 64) and one of the sender's 64 tx slots.
const WINDOW: u64 = 16;
/// Per run, as the generator builds it: Ethernet + IPv4 + TCP headers and 45 x 1448
/// bytes of payload (IP total length 65200), gso_size 1448.
const FRAME_BYTES: u64 = 65214;
const MSS: u64 = 1448;
/// net_vhost arguments of the anchor: TSO offered to the guests (HOST_TSO4/6; without
/// `tso=1` the guest may not send TSO frames at all); the legacy offload flags, with
/// which the vhost library turns the guest's GSO header into TX_TCP_SEG on the mbuf and
/// back into a GSO header for the receiving guest; and external buffers, so that a 64 KiB
/// frame lands in one buffer rather than a chain of ~32 2 KiB mbufs (more than twice the
/// rate in a probe on the development machine; docs/bench.md).
const ANCHOR_DEVARGS: &str = "tso=1,legacy-ol-flags=1,ext-buffer=1";
/// DPDK's default offload flags (RTE_VHOST_USER_NET_COMPLIANT_OL_FLAGS): the mbuf gets
/// RX_LRO, the receiving guest a plain frame, and net_vhost completes the TCP checksum in
/// software because testpmd did not enable the port's rx checksum offload.
const DEFAULT_DEVARGS: &str = "tso=1";

/// Builds the generator (release). Called before any measurement.
pub(super) fn build() -> Result<()> {
    util::run(cargo().args([
        "build",
        "--release",
        "-p",
        GEN_PACKAGE,
        "--example",
        GEN_EXAMPLE,
    ]))
}

fn gen_path() -> PathBuf {
    super::target_dir()
        .join("release")
        .join("examples")
        .join(GEN_EXAMPLE)
}

/// The switch of one run.
#[derive(Debug, Clone, PartialEq)]
enum TsoSwitch {
    /// vnetd, with `--datapath MODE` when it has the option.
    Vnetd(Option<String>),
    /// testpmd io between two net_vhost ports, [`ANCHOR_DEVARGS`].
    Dpdk,
    /// The same with [`DEFAULT_DEVARGS`].
    DpdkDefault,
}

impl TsoSwitch {
    fn label(&self) -> String {
        match self {
            TsoSwitch::Vnetd(mode) => vnetd_label(mode.as_deref()),
            TsoSwitch::Dpdk => "dpdk".into(),
            TsoSwitch::DpdkDefault => "dpdk default-ol-flags".into(),
        }
    }
}

/// Runs the scenario: `--runs` rounds of every switch. Never fails: a set-up error is
/// reported in the result.
pub(super) fn run(ctx: &Ctx, args: &Args, modes: &[Option<String>]) -> TsoReport {
    let vnetd = modes.iter().cloned().map(TsoSwitch::Vnetd);
    let dpdk = [TsoSwitch::Dpdk, TsoSwitch::DpdkDefault];
    let switches: Vec<TsoSwitch> = match args.only {
        Some(Only::Dpdk) => dpdk.to_vec(),
        Some(Only::Vnetd) => vnetd.collect(),
        None => vnetd.chain(dpdk).collect(),
    };
    let mut report = TsoReport {
        runs: Vec::new(),
        switches,
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
    for run_no in 1..=args.runs {
        for switch in &report.switches.clone() {
            let label = switch.label();
            let idle_check = !report.idle.iter().any(|(l, _)| *l == label);
            let result = attempt(ctx, args, switch, run_no, idle_check);
            if let Some(cpu) = result.idle_cpu {
                report.idle.push((label, cpu));
            }
            report.runs.push(result);
        }
    }
    report
}

/// One run, once the machine is idle, and again if something disturbed it.
fn attempt(ctx: &Ctx, args: &Args, switch: &TsoSwitch, run_no: u32, idle_check: bool) -> TsoRun {
    let label = switch.label();
    let what = format!("TSO {label}, {FRAME_BYTES}-byte TSO frames");
    common::attempt(ctx, args, &what, &label, run_no, || {
        run_switch(ctx, switch, idle_check).unwrap_or_else(|err| TsoRun::failed(format!("{err:#}")))
    })
}

/// One run of `switch`.
fn run_switch(ctx: &Ctx, switch: &TsoSwitch, idle_check: bool) -> Result<TsoRun> {
    let label = switch.label();
    let name = ctx.next(&format!("tso-{label}"));
    let dir = TempDir::create(ctx.sock_dir.0.join(&name))?;
    let (sa, sb, ctl) = (
        dir.0.join("a.sock"),
        dir.0.join("b.sock"),
        dir.0.join("ctl.sock"),
    );
    let log = ctx.logs.join(format!("{name}.log"));
    let mut result = TsoRun::default();
    let (mut sw, ctl) = match switch {
        TsoSwitch::Vnetd(mode) => {
            let cmd = ctx.vnetd_command(&dir.0, mode.as_deref(), 1);
            let mut vnetd = Proc::spawn("vnetd", cmd, &log, None)?;
            vnetd.wait_sockets(&[&sa, &sb, &ctl], &log)?;
            (vnetd, Some(ctl))
        }
        TsoSwitch::Dpdk | TsoSwitch::DpdkDefault => {
            let devargs = if *switch == TsoSwitch::Dpdk {
                ANCHOR_DEVARGS
            } else {
                DEFAULT_DEVARGS
            };
            let prefix = format!("{TAG}{}-{name}", std::process::id());
            let vdevs = [
                format!("net_vhost0,iface={},queues=1,{devargs}", sa.display()),
                format!("net_vhost1,iface={},queues=1,{devargs}", sb.display()),
            ];
            let app = ["--forward-mode=io", "--port-topology=paired"];
            let cmd = ctx.testpmd_command(ctx.cpu_switch, &prefix, &vdevs, &app);
            let mut anchor = Proc::spawn("anchor testpmd", cmd, &log, Some(prefix))?;
            anchor.wait_forwarding()?;
            if !(sa.exists() && sb.exists()) {
                bail!(
                    "the anchor created no vhost-user sockets; see {}",
                    log.display()
                );
            }
            (anchor, None)
        }
    };
    let mut gen = TsoGen::start(ctx, &format!("{name}-gen"), [&sa, &sb])?;
    let mut features = format!("generator: {}", gen.ready);
    if let Some(ctl) = &ctl {
        features += &format!("; vnetd: {}", ctx.wait_ports_up(ctl, &mut sw, ["a", "b"])?);
    }
    result.features = features;

    let window = measure(ctx, &mut gen, &sw, ctl.as_deref())?;
    gen.ask("stop", "stopped")?;
    if idle_check {
        result.idle_cpu = Some(ctx.idle_cpu(&sw)?);
    }
    gen.quit()?;

    match switch {
        TsoSwitch::Vnetd(_) => {
            result.anomalies.extend(sw.stop_vnetd(&log)?);
        }
        TsoSwitch::Dpdk | TsoSwitch::DpdkDefault => {
            let (dropped, anomalies) = sw.stop_anchor()?;
            result.anomalies.extend(anomalies);
            result.anchor_drops = Some(dropped);
            if dropped > 0 {
                result.anomalies.push(format!(
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
        self.proc.send("quit")?;
        let status = self.proc.wait_exit(Duration::from_secs(20))?;
        if !status.success() {
            bail!(
                "the TSO generator exited with {status}; see {}",
                self.proc.log.display()
            );
        }
        Ok(())
    }
}

/// The offload-related names among feature bits `f`.
fn virtio_features(f: u64) -> String {
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

/// The generator's counters of one direction.
#[derive(Debug, Clone, Default)]
struct DirCounters {
    frames: u64,
    bytes: u64,
    gso: u64,
    needs_csum: u64,
    lost: u64,
    bad: u64,
    min_len: u64,
    max_len: u64,
    first: String,
}

impl DirCounters {
    fn of(v: &Value) -> DirCounters {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        DirCounters {
            frames: n("frames"),
            bytes: n("bytes"),
            gso: n("gso"),
            needs_csum: n("needs_csum"),
            lost: n("lost"),
            bad: n("bad"),
            min_len: n("min_len"),
            max_len: n("max_len"),
            first: v["first"].as_str().unwrap_or("").to_string(),
        }
    }
}

/// Counters and CPU times at one instant.
#[derive(Debug)]
struct Snap {
    at: Instant,
    /// The generator's clock, ns.
    t_ns: u64,
    /// A to B, B to A.
    dirs: [DirCounters; 2],
    switch_ticks: u64,
    gen_ticks: u64,
    system: SystemTicks,
}

fn snapshot(gen: &mut TsoGen, switch: &Proc) -> Result<Snap> {
    let at = Instant::now();
    let switch_ticks = proc_ticks(switch.pid())?;
    let gen_ticks = proc_ticks(gen.proc.pid())?;
    let system = SystemTicks::read()?;
    let v = gen.ask("stats", "stats")?;
    Ok(Snap {
        at,
        t_ns: v["t_ns"].as_u64().unwrap_or(0),
        dirs: [DirCounters::of(&v["a_to_b"]), DirCounters::of(&v["b_to_a"])],
        switch_ticks,
        gen_ticks,
        system,
    })
}

/// Starts the traffic, waits for the warm-up, and measures a window of `--secs`.
fn measure(ctx: &Ctx, gen: &mut TsoGen, switch: &Proc, ctl: Option<&Path>) -> Result<Window<Snap>> {
    gen.ask("start", "started")?;
    let ours = [switch.pid(), gen.proc.pid()];
    Window::measure(ctx, ctl, &ours, || snapshot(gen, switch), |s| s.at)
}

/// The result of one run.
#[derive(Debug, Default)]
struct TsoRun {
    switch: String,
    run: u32,
    attempts: u32,
    /// Frames received per second, both directions, in millions; None when the run failed.
    mpps: Option<f64>,
    /// Bytes of those frames x 8, Gbit/s.
    gbits: f64,
    /// Per direction (A to B, B to A).
    dir_mpps: [f64; 2],
    dir_gbits: [f64; 2],
    half_mpps: [f64; 2],
    secs: f64,
    /// Frames received in the window per direction, and their bytes.
    frames: [u64; 2],
    bytes: [u64; 2],
    /// Of those, with a GSO header, and with NEEDS_CSUM.
    gso: [u64; 2],
    needs_csum: [u64; 2],
    /// Shortest and longest frame received (whole run, both directions).
    len_range: [u64; 2],
    /// How the first frame of each direction arrived.
    delivered: [String; 2],
    switch_cpu: f64,
    gen_cpu: f64,
    foreign_cpu: f64,
    steal_cpu: f64,
    idle_cpu: Option<f64>,
    pingpong_ns: [Option<f64>; 2],
    placed_apart: bool,
    unstable: bool,
    busy: bool,
    anchor_drops: Option<u64>,
    features: String,
    anomalies: Vec<String>,
    error: Option<String>,
}

impl TsoRun {
    fn failed(error: String) -> TsoRun {
        TsoRun {
            error: Some(error),
            ..TsoRun::default()
        }
    }

    /// Computes the figures of a window and notes anything odd in it.
    fn fill(&mut self, ctx: &Ctx, w: &Window<Snap>) {
        let gen_secs = |a: &Snap, b: &Snap| b.t_ns.saturating_sub(a.t_ns) as f64 / 1e9;
        let secs = gen_secs(&w.first, &w.last);
        self.secs = secs;
        let frames = |a: &Snap, b: &Snap| -> u64 {
            (0..2)
                .map(|d| b.dirs[d].frames.saturating_sub(a.dirs[d].frames))
                .sum()
        };
        for d in 0..2 {
            let (a, b) = (&w.first.dirs[d], &w.last.dirs[d]);
            self.frames[d] = b.frames.saturating_sub(a.frames);
            self.bytes[d] = b.bytes.saturating_sub(a.bytes);
            self.gso[d] = b.gso.saturating_sub(a.gso);
            self.needs_csum[d] = b.needs_csum.saturating_sub(a.needs_csum);
            self.dir_mpps[d] = self.frames[d] as f64 / secs / 1e6;
            self.dir_gbits[d] = self.bytes[d] as f64 * 8.0 / secs / 1e9;
            self.len_range = if d == 0 {
                [b.min_len, b.max_len]
            } else {
                [
                    self.len_range[0].min(b.min_len),
                    self.len_range[1].max(b.max_len),
                ]
            };
            self.delivered[d] = b.first.clone();
            let lost = b.lost.saturating_sub(a.lost);
            if lost > 0 {
                self.anomalies.push(format!(
                    "{} frame(s) {} lost in the window (nothing came back for 100 ms)",
                    lost,
                    ["A to B", "B to A"][d]
                ));
            }
            if b.bad > 0 {
                self.anomalies.push(format!(
                    "{} of the first frames {} arrived different from what was sent: {}",
                    b.bad,
                    ["A to B", "B to A"][d],
                    b.first
                ));
            }
            if self.frames[d] == 0 {
                self.anomalies.push(format!(
                    "no frames {} in the window",
                    ["A to B", "B to A"][d]
                ));
            }
        }
        let mpps = self.dir_mpps.iter().sum::<f64>();
        self.mpps = Some(mpps);
        self.gbits = self.dir_gbits.iter().sum();
        let half = |a: &Snap, b: &Snap| frames(a, b) as f64 / gen_secs(a, b) / 1e6;
        self.half_mpps = [half(&w.first, &w.mid), half(&w.mid, &w.last)];
        let halves = self.half_mpps;
        self.marks().check_halves(halves, 4);
        let wall = w.last.at - w.first.at;
        let switch = w.last.switch_ticks.saturating_sub(w.first.switch_ticks);
        let gen = w.last.gen_ticks.saturating_sub(w.first.gen_ticks);
        self.switch_cpu = ctx.percent(switch, wall);
        self.gen_cpu = ctx.percent(gen, wall);
        let busy = w.last.system.busy.saturating_sub(w.first.system.busy);
        self.foreign_cpu = ctx.percent(busy.saturating_sub(switch + gen), wall);
        self.steal_cpu = ctx.percent(
            w.last.system.steal.saturating_sub(w.first.system.steal),
            wall,
        );
        self.marks().note_vnetd_drops(&w.vnetd_drops);
        let (foreign, steal) = (self.foreign_cpu, self.steal_cpu);
        self.marks().note_load(&w.busy, foreign, steal);
    }

    fn summary(&self) -> String {
        let Some(mpps) = self.mpps else {
            return format!("failed: {}", self.error.as_deref().unwrap_or("?"));
        };
        let mut s = format!(
            "{mpps:.4} Mpps (A->B {:.4}, B->A {:.4}; halves {:.4}, {:.4}), {:.2} Gbit/s, \
             switch CPU {:.1} %, generator {:.1} %, others {:.1} % over {:.2} s; \
             GSO header on {} of {} frames",
            self.dir_mpps[0],
            self.dir_mpps[1],
            self.half_mpps[0],
            self.half_mpps[1],
            self.gbits,
            self.switch_cpu,
            self.gen_cpu,
            self.foreign_cpu,
            self.secs,
            self.gso.iter().sum::<u64>(),
            self.frames.iter().sum::<u64>()
        );
        if let Some(idle) = self.idle_cpu {
            s += &format!("; idle CPU {idle:.1} %");
        }
        s + &summary_tail(self.pingpong_ns, &self.anomalies)
    }

    fn json(&self) -> Value {
        let dir = |d: usize| {
            json!({
                "mpps": self.dir_mpps[d],
                "gbits": self.dir_gbits[d],
                "frames": self.frames[d],
                "bytes": self.bytes[d],
                "gso_frames": self.gso[d],
                "needs_csum_frames": self.needs_csum[d],
                "first_frame": self.delivered[d],
            })
        };
        let own = json!({
            "mpps": self.mpps,
            "gbits": self.mpps.map(|_| self.gbits),
            "a_to_b": dir(0),
            "b_to_a": dir(1),
            "frame_len_min_max": self.len_range,
            "half_window_mpps": self.half_mpps,
            "secs": self.secs,
            "switch_cpu_pct": self.switch_cpu,
            "generator_cpu_pct": self.gen_cpu,
            "idle_cpu_pct": self.idle_cpu,
        });
        run_json(self, own)
    }
}

run_record!(TsoRun);

/// Medians of one switch's successful runs: of its clean runs, or of all when none was.
#[derive(Debug, Clone, Copy)]
struct TsoMedians {
    mpps: f64,
    gbits: f64,
    cpu: f64,
    runs: usize,
    clean: bool,
}

impl TsoMedians {
    fn json(&self) -> Value {
        medians_json(self.mpps, self.gbits, self.cpu, self.runs, self.clean)
    }
}

/// Everything the scenario measured.
#[derive(Debug)]
pub(super) struct TsoReport {
    runs: Vec<TsoRun>,
    switches: Vec<TsoSwitch>,
    runs_per_cell: u32,
    secs: f64,
    /// The switch's CPU with both ports attached and no traffic, first run of each.
    idle: Vec<(String, f64)>,
    error: Option<String>,
}

impl TsoReport {
    /// Judges every run against the best placement seen over the whole bench.
    pub(super) fn check_placement(&mut self, best: f64) {
        check_placement_all(&mut self.runs, best);
    }

    fn medians(&self, switch: &str) -> Option<TsoMedians> {
        let ok: Vec<&TsoRun> = self
            .runs
            .iter()
            .filter(|r| r.switch == switch && r.mpps.is_some())
            .collect();
        let (used, all_clean) = common::clean_or_all(ok)?;
        Some(TsoMedians {
            mpps: median(used.iter().filter_map(|r| r.mpps).collect()),
            gbits: median(used.iter().map(|r| r.gbits).collect()),
            cpu: median(used.iter().map(|r| r.switch_cpu).collect()),
            runs: used.len(),
            clean: all_clean,
        })
    }

    /// vnetd mode labels, or one empty label when only DPDK ran.
    fn vnetd_labels(&self) -> Vec<String> {
        vnetd_labels(
            self.switches
                .iter()
                .filter(|s| matches!(s, TsoSwitch::Vnetd(_)))
                .map(TsoSwitch::label)
                .collect(),
        )
    }

    /// How the frames of `switch` arrived (its first successful run).
    fn delivered(&self, switch: &str) -> Option<String> {
        let r = self
            .runs
            .iter()
            .find(|r| r.switch == switch && r.mpps.is_some())?;
        let gso: u64 = r.gso.iter().sum();
        let frames: u64 = r.frames.iter().sum();
        Some(format!(
            "{} (GSO header on {gso} of {frames} frames in the window)",
            r.delivered[0]
        ))
    }

    /// The scenario's part of the printed report.
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        out += &format!(
            "\n64 KiB TSO frames VM to VM: generator = {GEN_EXAMPLE} (vnet-frontend), 2 \
             busy-polling virtio-net frontends on the generator CPU, {WINDOW} frames in flight \
             per direction, both directions\n"
        );
        out += &format!(
            "  each frame {FRAME_BYTES} bytes Ethernet/IPv4/TCP with virtio_net_hdr NEEDS_CSUM + \
             GSO_TCPV4 gso_size {MSS} (one = {} MSS-sized segments on a wire); ports negotiate \
             CSUM GUEST_CSUM HOST_TSO4 GUEST_TSO4 MRG_RXBUF\n",
            (FRAME_BYTES - 54).div_ceil(MSS)
        );
        out += &format!(
            "  medians of {} run(s) x {} s; Mpps = frames received per s, both directions; \
             Gbit/s = bytes of those frames (all headers, no virtio header) x 8; CPU % of \
             the switch; DPDK = testpmd io between 2 net_vhost ports {ANCHOR_DEVARGS}\n\n",
            self.runs_per_cell, self.secs
        );
        if let Some(err) = &self.error {
            out += &format!("  the scenario did not run: {err}\n");
        }
        let header = [
            "scenario",
            "frame",
            "vnetd mode",
            "vnetd Mpps",
            "vnetd Gbit/s",
            "vnetd CPU %",
            "DPDK Mpps",
            "DPDK Gbit/s",
            "DPDK CPU %",
            "vnetd/DPDK",
        ];
        let cells = |m: Option<TsoMedians>| match m {
            Some(m) => (
                rate_cell(m.mpps, 4, m.clean),
                format!("{:.2}", m.gbits),
                format!("{:.0}", m.cpu),
            ),
            None => (na(), na(), na()),
        };
        let mpps = |m: Option<TsoMedians>| m.map(|m| m.mpps);
        let dpdk = self.medians("dpdk");
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for label in self.vnetd_labels() {
            let vnetd = (!label.is_empty()).then(|| self.medians(&label)).flatten();
            let (vm, vg, vc) = cells(vnetd);
            let (dm, dg, dc) = cells(dpdk);
            let ratio = ratio(mpps(vnetd), mpps(dpdk)).map_or_else(na, |r| format!("{r:.2}"));
            let mode = mode_of(&label);
            table.push(vec![
                "TSO VM-to-VM".into(),
                FRAME_BYTES.to_string(),
                if mode.is_empty() { na() } else { mode },
                vm,
                vg,
                vc,
                dm,
                dg,
                dc,
                ratio,
            ]);
        }
        out += &render_table(&table, |c| c == 0 || c == 2);
        let default = TsoSwitch::DpdkDefault.label();
        if let Some(m) = self.medians(&default) {
            out += &format!(
                "\nDPDK with its default offload flags (net_vhost {DEFAULT_DEVARGS}): {} Mpps, \
                 {:.2} Gbit/s, CPU {:.0} %\n",
                rate_cell(m.mpps, 4, m.clean),
                m.gbits,
                m.cpu
            );
        }
        out += "\nwhat the receiving frontend got (first frame A->B):\n";
        for s in &self.switches {
            let label = s.label();
            if let Some(d) = self.delivered(&label) {
                out += &format!("  {label}: {d}\n");
            }
        }
        if let Some(idle) = idle_line(&self.idle) {
            out += &idle;
        }
        let gen: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.mpps.is_some())
            .map(|r| r.gen_cpu)
            .collect();
        if !gen.is_empty() {
            out += &format!(
                "generator CPU: median {:.0} % (it busy-polls: ~100 % whatever the rate)\n",
                median(gen)
            );
        }
        let Tally {
            busy,
            apart,
            unstable,
            repeated,
        } = Tally::of(&self.runs);
        if busy > 0 {
            out += &format!(
                "MACHINE BUSY: {busy} of {} TSO run(s) shared the CPUs with other work\n",
                self.runs.len()
            );
        }
        out += &format!(
            "runs kept: {apart} with the vCPUs placed apart, {unstable} changed rate within the \
             window; {repeated} disturbed attempt(s) measured again\n"
        );
        if self
            .switches
            .iter()
            .filter_map(|s| self.medians(&s.label()))
            .any(|m| !m.clean)
        {
            out += "* no clean run: the median of disturbed runs\n";
        }
        let name = |r: &TsoRun| format!("{} run {}", r.switch, r.run);
        out += &failed_lines(&self.runs, "TSO ", name);
        out += &anomaly_lines(&self.runs, "TSO anomalies:", name);
        out
    }

    /// The scenario's part of the JSON report.
    pub(super) fn json(&self) -> Value {
        let dpdk = self.medians("dpdk");
        let rows: Vec<Value> = self
            .vnetd_labels()
            .into_iter()
            .map(|label| {
                let vnetd = (!label.is_empty()).then(|| self.medians(&label)).flatten();
                json!({
                    "scenario": "TSO VM-to-VM",
                    "frame_bytes": FRAME_BYTES,
                    "vnetd_mode": mode_of(&label),
                    "vnetd": vnetd.map(|m| m.json()),
                    "dpdk": dpdk.map(|m| m.json()),
                    "ratio": ratio(vnetd.map(|m| m.mpps), dpdk.map(|m| m.mpps)),
                })
            })
            .collect();
        let delivered: serde_json::Map<String, Value> = self
            .switches
            .iter()
            .filter_map(|s| Some((s.label(), json!(self.delivered(&s.label())?))))
            .collect();
        let idle = idle_json(&self.idle);
        json!({
            "method": {
                "generator": format!("{GEN_EXAMPLE} (crates/frontend/examples/{GEN_EXAMPLE}.rs): \
                    2 vnet-frontend virtio-net drivers, busy polling, closed loop per direction"),
                "window_frames_per_direction": WINDOW,
                "frame_bytes": FRAME_BYTES,
                "gso_size": MSS,
                "virtio_net_hdr": "NEEDS_CSUM, GSO_TCPV4, hdr_len 54, csum_start 34, csum_offset 16",
                "tx_layout": "4096-byte descriptors in an indirect table",
                "rx": "1024-entry rings of 4096-byte mergeable buffers",
                "warmup_secs": WARMUP.as_secs_f64(),
                "secs": self.secs,
                "runs": self.runs_per_cell,
                "anchor": format!("dpdk-testpmd --forward-mode=io, 2 net_vhost ports {ANCHOR_DEVARGS}"),
                "dpdk_default_ol_flags": format!("the same with net_vhost {DEFAULT_DEVARGS}"),
                "rate": "frames (and their bytes) received by both frontends / the generator's time between samples",
            },
            "rows": rows,
            "dpdk_default_ol_flags": self.medians(&TsoSwitch::DpdkDefault.label()).map(|m| m.json()),
            "delivered": delivered,
            "idle_cpu_pct": idle,
            "runs": self.runs.iter().map(TsoRun::json).collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_features() {
        assert_eq!(TsoSwitch::Vnetd(Some("poll".into())).label(), "vnetd poll");
        assert_eq!(TsoSwitch::Dpdk.label(), "dpdk");
        assert_eq!(
            virtio_features(1 | 2 | 1 << 7 | 1 << 11 | 1 << 15),
            "0x8883 (CSUM GUEST_CSUM GUEST_TSO4 HOST_TSO4 MRG_RXBUF)"
        );
        let d = DirCounters::of(&json!({"frames": 3, "bytes": 9, "first": "x"}));
        assert_eq!((d.frames, d.bytes, d.first.as_str()), (3, 9, "x"));
    }

    #[test]
    fn medians_prefer_clean_runs() {
        let run = |switch: &str, mpps: f64, busy: bool| TsoRun {
            switch: switch.into(),
            mpps: Some(mpps),
            gbits: mpps * 500.0,
            busy,
            ..TsoRun::default()
        };
        let report = TsoReport {
            runs: vec![
                run("dpdk", 0.1, false),
                run("dpdk", 0.5, true),
                run("vnetd poll", 0.2, true),
            ],
            switches: vec![TsoSwitch::Vnetd(Some("poll".into())), TsoSwitch::Dpdk],
            runs_per_cell: 1,
            secs: 1.0,
            idle: Vec::new(),
            error: None,
        };
        let d = report.medians("dpdk").unwrap();
        assert!((d.mpps - 0.1).abs() < 1e-9 && d.clean);
        let v = report.medians("vnetd poll").unwrap();
        assert!((v.mpps - 0.2).abs() < 1e-9 && !v.clean);
        let text = report.render();
        assert!(text.contains("TSO VM-to-VM"), "{text}");
        assert!(text.contains("2.00"), "ratio 0.2/0.1: {text}");
        assert_eq!(report.json()["rows"][0]["ratio"], json!(2.0));
    }
}
