//! The latency scenario of `cargo xtask bench` (`--scenarios latency`): round trips
//! through the switch with one frame in flight.
//!
//! The generator is `crates/frontend/examples/latency_gen.rs`, built in release by the
//! bench, on the generator CPU: two `vnet-frontend` ports, A and B, on one thread, spinning
//! on their used rings. A sends a 64-byte frame to B; B answers as soon as it has it; the
//! round trip ends when A has the answer (two crossings of the switch). After a warm-up it
//! measures for `--secs` and reports the round trips' percentiles.
//!
//! Switches, interleaved, `--runs` times each, on split and on packed virtqueues: vnetd in
//! every `--modes` mode (event mode sleeps on the kick eventfd: its wake-up is part of what
//! is measured) and the DPDK anchor (testpmd `io` between two `net_vhost` ports, always
//! polling), on the switch CPU as in the other scenarios. The table shows the medians over
//! the runs of p50, p99 and p99.9, and vnetd's p99 over DPDK's.
//!
//! Each ring layout is measured idle and loaded (`+load`): the switch then has two more
//! ports, C and D, and before each request the generator's C sends a burst of
//! [`LOAD_BURST`] frames to D, which the switch forwards while the request follows (the
//! same worker, the same CPU: what a busy neighbour costs an interactive guest). The
//! background rate D received is in the table.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::common::{
    anomaly_lines, check_placement_all, median, render_table, run_json, run_record, Record,
};
use super::ctx::Ctx;
use super::proc::Proc;
use super::runner::{run_all, table_rows, Outcome, Scenario, Switch};
use super::vm2vm::PORTS_AB;
use super::{frontend_example, Args};
use crate::util::warn;

/// The generator: an example of the `vnet-frontend` crate.
pub(super) const GEN_EXAMPLE: &str = "latency_gen";
/// Frame size of the round trips.
const SIZE: u32 = 64;
/// Frames C sends D before each request in the loaded cells.
const LOAD_BURST: u32 = 32;
/// The background ports' MACs (the generator's C and D).
const MAC_C: wire::MacAddr = wire::MacAddr([0x52, 0x54, 0x00, 0xbe, 0x00, 0x0c]);
const MAC_D: wire::MacAddr = wire::MacAddr([0x52, 0x54, 0x00, 0xbe, 0x00, 0x0d]);

fn gen_path() -> PathBuf {
    frontend_example(GEN_EXAMPLE)
}

/// One cell: the ring layout, idle or with a background load on two other ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Rings {
    packed: bool,
    loaded: bool,
}

impl Rings {
    /// Every cell, in table order.
    const ALL: [Rings; 4] = [
        Rings {
            packed: false,
            loaded: false,
        },
        Rings {
            packed: true,
            loaded: false,
        },
        Rings {
            packed: false,
            loaded: true,
        },
        Rings {
            packed: true,
            loaded: true,
        },
    ];

    fn name(self) -> &'static str {
        match (self.packed, self.loaded) {
            (false, false) => "split",
            (true, false) => "packed",
            (false, true) => "split+load",
            (true, true) => "packed+load",
        }
    }
}

/// The result of one run.
#[derive(Debug, Default)]
pub(super) struct LatencyRun {
    pub(super) rings: Rings,
    /// Round trips per second in millions (what [`run_record`] calls the rate); None when
    /// the run failed.
    pub(super) mpps: Option<f64>,
    pub(super) round_trips: u64,
    pub(super) p50_ns: f64,
    pub(super) p90_ns: f64,
    pub(super) p99_ns: f64,
    pub(super) p999_ns: f64,
    pub(super) min_ns: f64,
    pub(super) max_ns: f64,
    pub(super) lost: u64,
    /// Background frames per second D received (loaded cells), in millions.
    pub(super) background_mpps: f64,
    /// Not measured in this scenario (the generator measures itself).
    pub(super) switch_cpu: f64,
    pub(super) rec: Record,
}

run_record!(LatencyRun);

impl LatencyRun {
    fn summary(&self) -> String {
        match self.mpps {
            None => format!("failed: {}", self.rec.error.as_deref().unwrap_or("?")),
            Some(_) => format!(
                "{} round trips ({} rings): p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} \
                 us, min {:.1} us, max {:.1} us, lost {}, background {:.3} Mpps",
                self.round_trips,
                self.rings.name(),
                self.p50_ns / 1e3,
                self.p90_ns / 1e3,
                self.p99_ns / 1e3,
                self.p999_ns / 1e3,
                self.min_ns / 1e3,
                self.max_ns / 1e3,
                self.lost,
                self.background_mpps
            ),
        }
    }

    fn fill(&mut self, v: &Value) {
        let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
        self.round_trips = v["round_trips"].as_u64().unwrap_or(0);
        let secs = n("secs");
        self.mpps = (secs > 0.0).then(|| self.round_trips as f64 / secs / 1e6);
        self.p50_ns = n("p50_ns");
        self.p90_ns = n("p90_ns");
        self.p99_ns = n("p99_ns");
        self.p999_ns = n("p999_ns");
        self.min_ns = n("min_ns");
        self.max_ns = n("max_ns");
        self.lost = v["lost"].as_u64().unwrap_or(0);
        self.background_mpps = n("background_mpps");
        if self.lost > 0 {
            self.rec.anomalies.push(format!(
                "{} frame(s) lost (nothing back in 100 ms)",
                self.lost
            ));
        }
    }

    fn json(&self) -> Value {
        run_json(
            self,
            json!({
                "rings": self.rings.name(),
                "round_trips": self.round_trips,
                "p50_ns": self.p50_ns,
                "p90_ns": self.p90_ns,
                "p99_ns": self.p99_ns,
                "p999_ns": self.p999_ns,
                "min_ns": self.min_ns,
                "max_ns": self.max_ns,
                "lost": self.lost,
                "background_mpps": self.background_mpps,
            }),
        )
    }
}

struct Latency {
    switches: Vec<Switch>,
    secs: f64,
}

impl Scenario for Latency {
    type Cell = Rings;
    type Run = LatencyRun;

    fn cells(&self) -> Vec<Rings> {
        Rings::ALL.to_vec()
    }

    fn switches(&self) -> &[Switch] {
        &self.switches
    }

    fn describe(&self, switch: &Switch, cell: &Rings) -> String {
        format!(
            "latency {}, {SIZE}-byte request and response, {} rings",
            switch.label(),
            cell.name()
        )
    }

    fn run_once(&self, ctx: &Ctx, switch: &Switch, cell: &Rings, _: bool) -> Result<LatencyRun> {
        run_switch(ctx, switch, *cell, self.secs)
    }

    fn note_cell(&self, run: &mut LatencyRun, cell: &Rings) {
        run.rings = *cell;
    }
}

fn run_switch(ctx: &Ctx, switch: &Switch, rings: Rings, secs: f64) -> Result<LatencyRun> {
    let run = ctx.run_dir(&format!("latency-{}-{}", switch.label(), rings.name()))?;
    let (sa, sb, ctl) = (run.sock("a"), run.sock("b"), run.sock("ctl"));
    let mut ports = PORTS_AB.to_vec();
    if rings.loaded {
        ports.extend([("c", MAC_C), ("d", MAC_D)]);
    }
    let names: Vec<&str> = ports.iter().map(|p| p.0).collect();
    let mut sw = match switch {
        Switch::Vnetd(mode) => ctx.start_vnetd(&run, mode.as_deref(), 1, &ports)?,
        Switch::Dpdk => ctx.start_vhost_anchor(&run, &names, 1, "", &[])?,
        other => bail!("{} is no latency switch", other.label()),
    };
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(ctx.cpu_gen.to_string())
        .arg(gen_path())
        .arg(&sa)
        .arg(&sb)
        .args(["--secs", &secs.to_string(), "--size", &SIZE.to_string()]);
    if rings.packed {
        cmd.arg("--packed");
    }
    if rings.loaded {
        cmd.arg("--load")
            .arg(run.sock("c"))
            .arg(run.sock("d"))
            .args(["--load-burst", &LOAD_BURST.to_string()]);
    }
    let log = ctx.logs.join(format!("{}-gen.log", run.name));
    let mut gen = Proc::spawn("latency generator", cmd, &log, None)?;
    let mut result = LatencyRun {
        rings,
        ..LatencyRun::default()
    };
    if switch.is_vnetd() {
        result.rec.features = ctx.wait_ports_up(&ctl, &mut sw, ["a", "b"])?;
        if rings.loaded {
            ctx.wait_ports_up(&ctl, &mut sw, ["c", "d"])?;
        }
    }
    let timeout = Duration::from_secs_f64(secs + 60.0);
    let out = gen.wait_output(0, timeout, "result", |out| {
        out.lines().any(|l| l.starts_with("result ")) && out.ends_with('\n')
    })?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .context("no result line")?;
    let v: Value =
        serde_json::from_str(line).with_context(|| format!("the generator's result: {line}"))?;
    result.fill(&v);
    gen.wait_exit(Duration::from_secs(10))?;
    match switch {
        Switch::Vnetd(_) => result.rec.anomalies.extend(sw.stop_vnetd(&run.log)?),
        _ => {
            let (dropped, anomalies) = sw.stop_anchor()?;
            result.rec.anomalies.extend(anomalies);
            result.rec.anchor_drops = Some(dropped);
        }
    }
    Ok(result)
}

/// What the scenario measured.
#[derive(Debug)]
pub(super) struct LatencyReport {
    runs: Vec<LatencyRun>,
    switches: Vec<Switch>,
    runs_per_cell: u32,
    secs: f64,
    error: Option<String>,
}

/// Runs the scenario; never fails (a set-up error is reported in the result).
pub(super) fn run(ctx: &Ctx, args: &Args, modes: &[Option<String>]) -> LatencyReport {
    let scenario = Latency {
        switches: Switch::list(modes, &[Switch::Dpdk], args.only),
        secs: args.secs,
    };
    let mut report = LatencyReport {
        runs: Vec::new(),
        switches: scenario.switches.clone(),
        runs_per_cell: args.runs,
        secs: args.secs,
        error: None,
    };
    if !gen_path().exists() {
        let err = format!("{} is missing", gen_path().display());
        warn(format!("latency scenario: {err}"));
        report.error = Some(err);
        return report;
    }
    eprintln!(
        "bench: round-trip latency, one {SIZE}-byte frame in flight, generator {}",
        gen_path().display()
    );
    let Outcome { runs, .. } = run_all(ctx, args, &scenario);
    report.runs = runs;
    report
}

/// Medians over the clean runs (all runs when none is clean) of one switch and cell.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    /// Background Mpps D received.
    load: f64,
}

impl LatencyReport {
    /// Judges every run against the best placement seen over the whole bench.
    pub(in crate::bench) fn check_placement(&mut self, best: f64) {
        check_placement_all(&mut self.runs, best);
    }

    fn percentiles(&self, switch: &str, rings: Rings) -> Option<Percentiles> {
        let ok: Vec<&LatencyRun> = self
            .runs
            .iter()
            .filter(|r| r.rec.switch == switch && r.rings == rings && r.mpps.is_some())
            .collect();
        let clean: Vec<&LatencyRun> = ok.iter().copied().filter(|r| r.rec.clean()).collect();
        let pick = if clean.is_empty() { ok } else { clean };
        if pick.is_empty() {
            return None;
        }
        let m = |f: fn(&LatencyRun) -> f64| median(pick.iter().map(|r| f(r)).collect());
        Some(Percentiles {
            p50: m(|r| r.p50_ns),
            p99: m(|r| r.p99_ns),
            p999: m(|r| r.p999_ns),
            load: m(|r| r.background_mpps),
        })
    }

    fn rows(&self) -> Vec<(Rings, String)> {
        table_rows(&Rings::ALL, &self.switches)
    }

    pub(in crate::bench) fn render(&self) -> String {
        let mut out = format!(
            "\nround-trip latency: one {SIZE}-byte frame in flight, A -> switch -> B -> switch \
             -> A, frontends spinning; medians of {} run(s) x {} s; microseconds; +load: \
             ports C -> D get a burst of {LOAD_BURST} frames before each request\n\n",
            self.runs_per_cell, self.secs
        );
        if let Some(e) = &self.error {
            return out + &format!("not run: {e}\n");
        }
        let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", v / 1e3));
        let mut table = vec![[
            "rings",
            "vnetd mode",
            "vnetd p50",
            "vnetd p99",
            "vnetd p99.9",
            "DPDK p50",
            "DPDK p99",
            "DPDK p99.9",
            "vnetd/DPDK p99",
            "load Mpps vnetd/DPDK",
        ]
        .map(String::from)
        .to_vec()];
        for (rings, label) in self.rows() {
            let v = (!label.is_empty())
                .then(|| self.percentiles(&label, rings))
                .flatten();
            let d = self.percentiles("dpdk", rings);
            let ratio = match (v, d) {
                (Some(v), Some(d)) if d.p99 > 0.0 => format!("{:.2}", v.p99 / d.p99),
                _ => "-".into(),
            };
            table.push(vec![
                rings.name().into(),
                label.trim_start_matches("vnetd ").to_string(),
                us(v.map(|p| p.p50)),
                us(v.map(|p| p.p99)),
                us(v.map(|p| p.p999)),
                us(d.map(|p| p.p50)),
                us(d.map(|p| p.p99)),
                us(d.map(|p| p.p999)),
                ratio,
                match (rings.loaded, v, d) {
                    (true, Some(v), Some(d)) => format!("{:.2} / {:.2}", v.load, d.load),
                    (true, Some(v), None) => format!("{:.2} / -", v.load),
                    (true, None, Some(d)) => format!("- / {:.2}", d.load),
                    _ => "-".into(),
                },
            ]);
        }
        out += &render_table(&table, |c| c < 2);
        let name = |r: &LatencyRun| {
            format!(
                "{} {} rings run {}",
                r.rec.switch,
                r.rings.name(),
                r.rec.run
            )
        };
        out += &anomaly_lines(&self.runs, "latency anomalies:", name);
        out
    }

    /// The chart's latency panel: p50 and p99 of vnetd's modes and of DPDK per ring type.
    pub(in crate::bench) fn chart_panel(&self) -> super::chart::Panel {
        let mut panel = super::chart::Panel {
            title: format!("Round trip, one {SIZE}-byte frame in flight (medians)"),
            unit: "µs".into(),
            series: ["vnetd p50", "vnetd p99", "DPDK p50", "DPDK p99"]
                .map(String::from)
                .to_vec(),
            groups: Vec::new(),
        };
        for (rings, label) in self.rows() {
            let v = (!label.is_empty())
                .then(|| self.percentiles(&label, rings))
                .flatten();
            let d = self.percentiles("dpdk", rings);
            let us = |p: Option<Percentiles>, f: fn(Percentiles) -> f64| p.map(|p| f(p) / 1e3);
            panel.groups.push((
                format!("{} {}", rings.name(), label.trim_start_matches("vnetd ")),
                vec![
                    us(v, |p| p.p50),
                    us(v, |p| p.p99),
                    us(d, |p| p.p50),
                    us(d, |p| p.p99),
                ],
            ));
        }
        panel
    }

    pub(in crate::bench) fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|(rings, label)| {
                let p = |s: &str| {
                    self.percentiles(s, rings).map(|p| {
                        json!({"p50_ns": p.p50, "p99_ns": p.p99, "p999_ns": p.p999,
                                   "background_mpps": p.load})
                    })
                };
                json!({
                    "rings": rings.name(),
                    "vnetd_mode": label.trim_start_matches("vnetd "),
                    "vnetd": (!label.is_empty()).then(|| p(&label)).flatten(),
                    "dpdk": p("dpdk"),
                })
            })
            .collect();
        json!({
            "frame_size": SIZE,
            "rows": rows,
            "runs": self.runs.iter().map(LatencyRun::json).collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}
