//! What the scenarios share: the bookkeeping of a run (attempts, placement, disturbances),
//! the retry loop around it, medians, and the pieces of the printed and JSON reports.
//!
//! Every scenario's run record has the same bookkeeping fields under the same names
//! (`switch`, `run`, `attempts`, `pingpong_ns`, `placed_apart`, `unstable`, `busy`,
//! `anomalies`, `error`, and `foreign_cpu`, `steal_cpu`, `anchor_drops`, `features`);
//! [`run_record!`] makes it a [`RunRecord`]. Every scenario module ([`super::vm2vm`],
//! [`super::tap`], [`super::tso`], and [`super::ovs`] through the VM-to-VM records) uses
//! these, and [`super::runner`] drives them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use super::ctx::{vnetd_drop_delta, Ctx};
use super::probe::foreign_processes;
use super::proc::sleep;
use super::{
    APART_FACTOR, APART_MIN_NS, FOREIGN_CPU_LIMIT, IDLE_WINDOW, UNSTABLE_FRACTION, WARMUP,
};

/// The bookkeeping fields of a run record, to write.
pub(super) struct Marks<'a> {
    pub(super) switch: &'a mut String,
    pub(super) run: &'a mut u32,
    pub(super) attempts: &'a mut u32,
    pub(super) pingpong_ns: &'a mut [Option<f64>; 2],
    pub(super) placed_apart: &'a mut bool,
    pub(super) unstable: &'a mut bool,
    pub(super) busy: &'a mut bool,
    pub(super) anomalies: &'a mut Vec<String>,
}

/// The bookkeeping fields of a run record, read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Flags {
    pub(super) placed_apart: bool,
    pub(super) unstable: bool,
    pub(super) busy: bool,
    pub(super) attempts: u32,
    pub(super) failed: bool,
}

/// The result of one run of any scenario.
pub(super) trait RunRecord {
    fn marks(&mut self) -> Marks<'_>;
    fn flags(&self) -> Flags;
    fn anomalies(&self) -> &[String];
    fn error(&self) -> Option<&str>;
    /// The line printed after the run.
    fn summary(&self) -> String;
    /// The JSON keys every scenario's run has: bookkeeping, the CPU others used, the
    /// anchor's drops, the features negotiated.
    fn record_json(&self) -> Value;
    /// The switch's CPU (%) with both ports attached and no traffic, when the run
    /// measured it.
    fn idle_cpu(&self) -> Option<f64>;

    /// Neither other work nor the host's placement of our vCPUs disturbed it.
    fn clean(&self) -> bool {
        let f = self.flags();
        !f.busy && !f.placed_apart && !f.unstable
    }

    /// Flags the run if a core-to-core probe around it was slow against `best` (ns).
    fn check_placement(&mut self, best: f64) {
        self.marks().check_placement(best);
    }
}

/// Implements [`RunRecord`] for a struct with the bookkeeping fields, `foreign_cpu`,
/// `steal_cpu`, `anchor_drops`, `features` and `idle_cpu`, and an inherent `summary(&self) -> String`.
macro_rules! run_record {
    ($t:ty) => {
        impl $crate::bench::common::RunRecord for $t {
            fn marks(&mut self) -> $crate::bench::common::Marks<'_> {
                $crate::bench::common::Marks {
                    switch: &mut self.switch,
                    run: &mut self.run,
                    attempts: &mut self.attempts,
                    pingpong_ns: &mut self.pingpong_ns,
                    placed_apart: &mut self.placed_apart,
                    unstable: &mut self.unstable,
                    busy: &mut self.busy,
                    anomalies: &mut self.anomalies,
                }
            }

            fn flags(&self) -> $crate::bench::common::Flags {
                $crate::bench::common::Flags {
                    placed_apart: self.placed_apart,
                    unstable: self.unstable,
                    busy: self.busy,
                    attempts: self.attempts,
                    failed: self.error.is_some(),
                }
            }

            fn anomalies(&self) -> &[String] {
                &self.anomalies
            }

            fn error(&self) -> Option<&str> {
                self.error.as_deref()
            }

            fn summary(&self) -> String {
                <$t>::summary(self)
            }

            fn idle_cpu(&self) -> Option<f64> {
                self.idle_cpu
            }

            fn record_json(&self) -> serde_json::Value {
                serde_json::json!({
                    "switch": self.switch,
                    "run": self.run,
                    "other_cpu_pct": self.foreign_cpu,
                    "steal_cpu_pct": self.steal_cpu,
                    "core_to_core_round_trip_ns": self.pingpong_ns,
                    "vcpus_placed_apart": self.placed_apart,
                    "unstable": self.unstable,
                    "attempt": self.attempts,
                    "anchor_drops_whole_run": self.anchor_drops,
                    "features": self.features,
                    "busy": self.busy,
                    "anomalies": self.anomalies,
                    "error": self.error,
                })
            }
        }
    };
}
pub(super) use run_record;

impl Marks<'_> {
    /// Flags the run if a core-to-core probe around it was slow against `best` (ns).
    pub(super) fn check_placement(&mut self, best: f64) {
        if *self.placed_apart {
            return;
        }
        if let Some(anomaly) = placement_anomaly(*self.pingpong_ns, best) {
            *self.placed_apart = true;
            self.anomalies.push(anomaly);
        }
    }

    /// Flags the run if the rates of the window's two halves (Mpps) differ by more than
    /// [`UNSTABLE_FRACTION`]; `decimals` of the rates in the note.
    pub(super) fn check_halves(&mut self, [h1, h2]: [f64; 2], decimals: usize) {
        if (h1 - h2).abs() > UNSTABLE_FRACTION * h1.max(h2) {
            *self.unstable = true;
            self.anomalies.push(format!(
                "the rate changed within the window: {h1:.decimals$} Mpps, then {h2:.decimals$}"
            ));
        }
    }

    /// Notes the drops vnetd counted in the window.
    pub(super) fn note_vnetd_drops(&mut self, drops: &BTreeMap<String, u64>) {
        if !drops.is_empty() {
            let list: Vec<String> = drops.iter().map(|(k, n)| format!("{k}={n}")).collect();
            self.anomalies
                .push(format!("vnetd drops in the window: {}", list.join(", ")));
        }
    }

    /// Notes other work during the window: `others` (processes seen), `foreign_cpu` (%
    /// of a CPU they used), `steal_cpu` (% the hypervisor stole).
    pub(super) fn note_load(&mut self, others: &[String], foreign_cpu: f64, steal_cpu: f64) {
        if !others.is_empty() {
            *self.busy = true;
            self.anomalies.push(format!(
                "other processes ran during the window: {}",
                others.join(", ")
            ));
        }
        if foreign_cpu > FOREIGN_CPU_LIMIT {
            *self.busy = true;
            self.anomalies.push(format!(
                "other processes used {foreign_cpu:.1} % of a CPU during the window"
            ));
        }
        if steal_cpu > FOREIGN_CPU_LIMIT {
            self.anomalies.push(format!(
                "the hypervisor stole {steal_cpu:.1} % of a CPU during the window"
            ));
        }
    }
}

/// The note for a run whose core-to-core round trips (ns, before and after) were slow
/// against `best`, if they were.
fn placement_anomaly(pingpong_ns: [Option<f64>; 2], best: f64) -> Option<String> {
    let apart = pingpong_ns
        .iter()
        .flatten()
        .any(|&ns| ns > APART_MIN_NS && ns > best * APART_FACTOR);
    if !apart {
        return None;
    }
    let [a, b] = pingpong_ns.map(|ns| ns.unwrap_or(f64::NAN));
    Some(format!(
        "vCPUs placed apart by the host around this run: core-to-core round trip \
         {a:.0} ns before, {b:.0} ns after (best {best:.0} ns)"
    ))
}

/// What one measurement window saw: samples (`S`) at its start, half way and at its end.
#[derive(Debug)]
pub(super) struct Window<S> {
    pub(super) first: S,
    pub(super) mid: S,
    pub(super) last: S,
    /// vnetd's drop counters that moved during the window, `port.reason` -> frames.
    pub(super) vnetd_drops: BTreeMap<String, u64>,
    /// Other QEMU or testpmd processes running at the end of the window.
    pub(super) busy: Vec<String>,
}

impl<S> Window<S> {
    /// Waits for the warm-up (the traffic started), then samples a window of `--secs`:
    /// `sample` takes a sample, `at` says when it was taken. vnetd's counters are read (through
    /// its control socket `ctl`, when vnetd is the switch) at the start and at the end; at the
    /// end, other work than the processes `ours` is looked for.
    pub(super) fn measure(
        ctx: &Ctx,
        ctl: Option<&Path>,
        ours: &[u32],
        mut sample: impl FnMut() -> Result<S>,
        at: impl Fn(&S) -> Instant,
    ) -> Result<Window<S>> {
        sleep(WARMUP);
        let first = sample()?;
        let vnetd_first = ctl.map(|c| ctx.vnetctl(c, "stats")).transpose()?;
        // A sample half way too: a rate that changes within the window shows.
        sleep(Duration::from_secs_f64(ctx.secs / 2.0).saturating_sub(at(&first).elapsed()));
        let mid = sample()?;
        sleep(Duration::from_secs_f64(ctx.secs).saturating_sub(at(&first).elapsed()));
        let last = sample()?;
        let vnetd_last = ctl.map(|c| ctx.vnetctl(c, "stats")).transpose()?;
        let mut busy = foreign_processes(ours);
        busy.sort();
        Ok(Window {
            first,
            mid,
            last,
            vnetd_drops: match (vnetd_first, vnetd_last) {
                (Some(a), Some(b)) => vnetd_drop_delta(&a, &b),
                _ => BTreeMap::new(),
            },
            busy,
        })
    }
}

/// The JSON of a run: its [`RunRecord::record_json`] keys and the scenario's own `keys` (an
/// object).
pub(super) fn run_json<R: RunRecord>(run: &R, keys: Value) -> Value {
    let mut v = run.record_json();
    if let (Value::Object(all), Value::Object(own)) = (&mut v, keys) {
        all.extend(own);
    }
    v
}

/// The failed runs, one line each (`name` names a run), under a line that counts them
/// (`kind`: what runs, with a space, or nothing); empty when none failed.
pub(super) fn failed_lines<R: RunRecord>(
    runs: &[R],
    kind: &str,
    name: impl Fn(&R) -> String,
) -> String {
    let failed: Vec<&R> = runs.iter().filter(|r| r.error().is_some()).collect();
    if failed.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "{} {kind}run(s) failed and are left out of the medians:\n",
        failed.len()
    );
    for r in failed {
        out += &format!("  {}: {}\n", name(r), r.error().unwrap_or(""));
    }
    out
}

/// Every anomaly of every run, one line each (`name` names a run), under `heading`; empty
/// when there are none.
pub(super) fn anomaly_lines<R: RunRecord>(
    runs: &[R],
    heading: &str,
    name: impl Fn(&R) -> String,
) -> String {
    let mut out = String::new();
    for r in runs {
        for a in r.anomalies() {
            out += &format!("  {}: {a}\n", name(r));
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("{heading}\n{out}")
    }
}

/// The end of a run's summary line: the core-to-core round trips, then one line per
/// anomaly.
pub(super) fn summary_tail(pingpong_ns: [Option<f64>; 2], anomalies: &[String]) -> String {
    let mut s = String::new();
    if let [Some(a), Some(b)] = pingpong_ns {
        s += &format!("; CPU{{gen}}<->CPU{{switch}} round trip {a:.0} / {b:.0} ns");
    }
    for a in anomalies {
        s += &format!("\n    ! {a}");
    }
    s
}

/// What the medians are taken of: the clean runs among `ok` (the successful ones), or all of
/// them when none is clean (then false); None when there are none.
pub(super) fn clean_or_all<R: RunRecord>(ok: Vec<&R>) -> Option<(Vec<&R>, bool)> {
    let clean: Vec<&R> = ok.iter().copied().filter(|r| r.clean()).collect();
    let (used, all_clean) = if clean.is_empty() {
        (ok, false)
    } else {
        (clean, true)
    };
    (!used.is_empty()).then_some((used, all_clean))
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `a / b` (rates), when both are there and `b` is not 0.
pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The JSON of one switch's medians in a table row.
pub(super) fn medians_json(mpps: f64, gbits: f64, cpu: f64, runs: usize, clean: bool) -> Value {
    json!({
        "mpps": mpps,
        "gbits": gbits,
        "cpu_pct": cpu,
        "runs": runs,
        "clean_runs_only": clean,
    })
}

/// How many runs were disturbed, and how.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) struct Tally {
    pub(super) busy: usize,
    pub(super) apart: usize,
    pub(super) unstable: usize,
    /// Disturbed attempts measured again.
    pub(super) repeated: u32,
}

impl Tally {
    pub(super) fn of<R: RunRecord>(runs: &[R]) -> Tally {
        let mut t = Tally::default();
        for f in runs.iter().map(RunRecord::flags) {
            t.busy += usize::from(f.busy);
            t.apart += usize::from(f.placed_apart);
            t.unstable += usize::from(f.unstable);
            t.repeated += f.attempts.saturating_sub(1);
        }
        t
    }
}

/// Judges every run against the best placement seen over the whole bench.
pub(super) fn check_placement_all<R: RunRecord>(runs: &mut [R], best: f64) {
    for run in runs {
        run.check_placement(best);
    }
}

/// The labels of the vnetd modes that ran, or one empty label when none did (the anchors'
/// figures still get a row).
pub(super) fn vnetd_labels(mut labels: Vec<String>) -> Vec<String> {
    if labels.is_empty() {
        labels.push(String::new());
    }
    labels
}

/// The label of vnetd run with `--datapath MODE`, or without the option.
pub(super) fn vnetd_label(mode: Option<&str>) -> String {
    match mode {
        Some(mode) => format!("vnetd {mode}"),
        None => "vnetd".into(),
    }
}

/// The vnetd mode of a switch label (`vnetd poll` -> `poll`), empty for an anchor.
pub(super) fn mode_of(label: &str) -> String {
    label.strip_prefix("vnetd").unwrap_or("").trim().to_string()
}

/// An empty cell.
pub(super) fn na() -> String {
    "-".to_string()
}

/// A median rate with `decimals`, starred when it is not of clean runs only.
pub(super) fn rate_cell(mpps: f64, decimals: usize, clean: bool) -> String {
    format!("{mpps:.decimals$}{}", if clean { "" } else { "*" })
}

/// A table: columns as wide as their widest cell, two spaces apart, left-aligned where
/// `left(column)` says so and right-aligned elsewhere, a dashed line under the first row.
pub(super) fn render_table(table: &[Vec<String>], left: impl Fn(usize) -> bool) -> String {
    let columns = table.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if left(c) {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out += "\n";
        if n == 0 {
            out += &"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1));
            out += "\n";
        }
    }
    out
}

/// The line on the switches' idle CPU (`label`, %), if any was measured.
pub(super) fn idle_line(idle: &[(String, f64)]) -> Option<String> {
    if idle.is_empty() {
        return None;
    }
    let list: Vec<String> = idle
        .iter()
        .map(|(label, cpu)| format!("{label} {cpu:.1} %"))
        .collect();
    Some(format!(
        "idle (both ports attached, no traffic, {} s): CPU {}\n",
        IDLE_WINDOW.as_secs(),
        list.join(", ")
    ))
}

/// The switches' idle CPU (`label`, %) as a JSON object.
pub(super) fn idle_json(idle: &[(String, f64)]) -> serde_json::Map<String, Value> {
    idle.iter()
        .map(|(label, cpu)| (label.clone(), json!(cpu)))
        .collect()
}

#[cfg(test)]
mod tests;
