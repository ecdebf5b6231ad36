//! What the scenarios share: the bookkeeping of a run (attempts, placement, disturbances),
//! measurement windows, medians, and the pieces of the printed and JSON reports.
//!
//! Every scenario's run record holds the same bookkeeping, a [`Record`] in its field `rec`;
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

/// The bookkeeping every run record has, whatever the scenario: which switch and run it
/// was, how it went (attempts, placement, disturbances, anomalies, the error of a failed
/// run) and the figures every scenario reports alike.
#[derive(Debug, Clone, Default)]
pub(super) struct Record {
    /// The switch's label.
    pub(super) switch: String,
    /// The run number (1..=`--runs`).
    pub(super) run: u32,
    /// Which attempt this is (earlier ones were disturbed).
    pub(super) attempts: u32,
    /// Core-to-core round trip (ns) just before and just after the run.
    pub(super) pingpong_ns: [Option<f64>; 2],
    /// A probe found the vCPUs apart (see [`APART_FACTOR`]).
    pub(super) placed_apart: bool,
    /// The two halves of the window differ by more than [`UNSTABLE_FRACTION`].
    pub(super) unstable: bool,
    /// Other work shared the CPUs.
    pub(super) busy: bool,
    /// What was odd about the run, one line each.
    pub(super) anomalies: Vec<String>,
    /// Why the run failed; None when it did not.
    pub(super) error: Option<String>,
    /// CPU used by everything but our processes, % of one CPU.
    pub(super) foreign_cpu: f64,
    /// CPU the hypervisor stole, % of one CPU.
    pub(super) steal_cpu: f64,
    /// The switch's CPU (%) with both ports attached and no traffic, when measured.
    pub(super) idle_cpu: Option<f64>,
    /// Frames the anchor dropped over the whole run, warm-up included.
    pub(super) anchor_drops: Option<u64>,
    /// The features the ports negotiated.
    pub(super) features: String,
}

/// The result of one run of any scenario: its [`Record`] and its own figures.
pub(super) trait RunRecord {
    /// The bookkeeping.
    fn rec(&self) -> &Record;
    /// The bookkeeping, to write.
    fn rec_mut(&mut self) -> &mut Record;
    /// The line printed after the run.
    fn summary(&self) -> String;
    /// The rate, Mpps; None when the run failed.
    fn mpps(&self) -> Option<f64>;
    /// The switch's CPU, % of one CPU.
    fn switch_cpu(&self) -> f64;
}

/// Implements [`RunRecord`] for a struct with a `rec: Record` field, `mpps: Option<f64>`,
/// `switch_cpu: f64` and an inherent `summary(&self) -> String`.
macro_rules! run_record {
    ($t:ty) => {
        impl $crate::bench::common::RunRecord for $t {
            fn rec(&self) -> &$crate::bench::common::Record {
                &self.rec
            }

            fn rec_mut(&mut self) -> &mut $crate::bench::common::Record {
                &mut self.rec
            }

            fn summary(&self) -> String {
                <$t>::summary(self)
            }

            fn mpps(&self) -> Option<f64> {
                self.mpps
            }

            fn switch_cpu(&self) -> f64 {
                self.switch_cpu
            }
        }
    };
}
pub(super) use run_record;

impl Record {
    /// Neither other work nor the host's placement of our vCPUs disturbed it.
    pub(super) fn clean(&self) -> bool {
        !self.busy && !self.placed_apart && !self.unstable
    }

    /// The JSON keys every scenario's run has.
    pub(super) fn json(&self) -> Value {
        json!({
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

    /// Flags the run if a core-to-core probe around it was slow against `best` (ns).
    pub(super) fn check_placement(&mut self, best: f64) {
        if self.placed_apart {
            return;
        }
        if let Some(anomaly) = placement_anomaly(self.pingpong_ns, best) {
            self.placed_apart = true;
            self.anomalies.push(anomaly);
        }
    }

    /// Flags the run if the rates of the window's two halves (Mpps) differ by more than
    /// [`UNSTABLE_FRACTION`]; `decimals` of the rates in the note.
    pub(super) fn check_halves(&mut self, [h1, h2]: [f64; 2], decimals: usize) {
        if (h1 - h2).abs() > UNSTABLE_FRACTION * h1.max(h2) {
            self.unstable = true;
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

    /// Notes other work during the window: `others` (processes seen), and the CPU they
    /// used (`foreign_cpu`) and the hypervisor stole (`steal_cpu`), once filled in.
    pub(super) fn note_load(&mut self, others: &[String]) {
        let (foreign_cpu, steal_cpu) = (self.foreign_cpu, self.steal_cpu);
        if !others.is_empty() {
            self.busy = true;
            self.anomalies.push(format!(
                "other processes ran during the window: {}",
                others.join(", ")
            ));
        }
        if foreign_cpu > FOREIGN_CPU_LIMIT {
            self.busy = true;
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

/// The JSON of a run: its [`Record::json`] keys and the scenario's own `keys` (an object).
pub(super) fn run_json<R: RunRecord>(run: &R, keys: Value) -> Value {
    let mut v = run.rec().json();
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
    let failed: Vec<&R> = runs.iter().filter(|r| r.rec().error.is_some()).collect();
    if failed.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "{} {kind}run(s) failed and are left out of the medians:\n",
        failed.len()
    );
    for r in failed {
        out += &format!(
            "  {}: {}\n",
            name(r),
            r.rec().error.as_deref().unwrap_or("")
        );
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
        for a in &r.rec().anomalies {
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

/// Medians of one switch's successful runs of one cell: of its clean runs (machine idle,
/// vCPUs close), or of all when none was clean.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Medians {
    /// Frames per second, millions.
    pub(super) mpps: f64,
    /// The switch's CPU, % of one CPU.
    pub(super) cpu: f64,
    /// A figure of the scenario's own, when its runs have it (TAP: the offered rate; TSO:
    /// Gbit/s).
    pub(super) extra: Option<f64>,
    /// How many runs went in.
    pub(super) runs: usize,
    /// Only clean runs went in.
    pub(super) clean: bool,
}

/// The [`Medians`] of the successful runs among `runs` that `keep` picks, with `extra` the
/// scenario's own figure of a run; None when none succeeded.
pub(super) fn medians<'a, R: RunRecord + 'a>(
    runs: impl IntoIterator<Item = &'a R>,
    keep: impl Fn(&R) -> bool,
    extra: impl Fn(&R) -> Option<f64>,
) -> Option<Medians> {
    let ok: Vec<&R> = runs
        .into_iter()
        .filter(|r| keep(r) && r.mpps().is_some())
        .collect();
    let (used, clean) = clean_or_all(ok)?;
    let extra: Vec<f64> = used.iter().filter_map(|r| extra(r)).collect();
    Some(Medians {
        mpps: median(used.iter().filter_map(|r| r.mpps()).collect()),
        cpu: median(used.iter().map(|r| r.switch_cpu()).collect()),
        extra: (!extra.is_empty()).then(|| median(extra)),
        runs: used.len(),
        clean,
    })
}

/// What the medians are taken of: the clean runs among `ok` (the successful ones), or all of
/// them when none is clean (then false); None when there are none.
pub(super) fn clean_or_all<R: RunRecord>(ok: Vec<&R>) -> Option<(Vec<&R>, bool)> {
    let clean: Vec<&R> = ok.iter().copied().filter(|r| r.rec().clean()).collect();
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
    /// Runs that shared the CPUs with other work.
    pub(super) busy: usize,
    /// Runs with the vCPUs placed apart.
    pub(super) apart: usize,
    /// Runs whose rate changed within the window.
    pub(super) unstable: usize,
    /// Disturbed attempts measured again.
    pub(super) repeated: u32,
}

impl Tally {
    /// `MACHINE BUSY: <n> of <total> <kind>run(s) shared the CPUs with other work`, when
    /// other work disturbed any run.
    pub(super) fn busy_line(&self, total: usize, kind: &str) -> Option<String> {
        (self.busy > 0).then(|| {
            format!(
                "MACHINE BUSY: {} of {total} {kind}run(s) shared the CPUs with other work",
                self.busy
            )
        })
    }

    pub(super) fn of<R: RunRecord>(runs: &[R]) -> Tally {
        let mut t = Tally::default();
        for r in runs.iter().map(RunRecord::rec) {
            t.busy += usize::from(r.busy);
            t.apart += usize::from(r.placed_apart);
            t.unstable += usize::from(r.unstable);
            t.repeated += r.attempts.saturating_sub(1);
        }
        t
    }
}

/// Judges every run against the best placement seen over the whole bench.
pub(super) fn check_placement_all<R: RunRecord>(runs: &mut [R], best: f64) {
    for run in runs {
        run.rec_mut().check_placement(best);
    }
}

/// The first columns of a scenario's table: `scenario`, `what` (the cell: `size`, `frame`),
/// `vnetd mode`, then for each of `sides` its Mpps, Gbit/s (if `gbits`) and CPU %.
pub(super) fn table_header(what: &str, sides: &[&str], gbits: bool) -> Vec<String> {
    let mut header: Vec<String> = ["scenario", what, "vnetd mode"].map(String::from).to_vec();
    for side in sides {
        header.push(format!("{side} Mpps"));
        if gbits {
            header.push(format!("{side} Gbit/s"));
        }
        header.push(format!("{side} CPU %"));
    }
    header
}

/// The cells of one switch's medians in a table row: its Mpps with `decimals` (starred
/// when not of clean runs only), its Gbit/s when `gbits` says them, its CPU %; dashes when
/// it has none.
pub(super) fn side_cells(
    m: Option<Medians>,
    decimals: usize,
    gbits: Option<&dyn Fn(&Medians) -> f64>,
) -> Vec<String> {
    let n = if gbits.is_some() { 3 } else { 2 };
    let Some(m) = m else {
        return vec![na(); n];
    };
    let mut cells = vec![rate_cell(m.mpps, decimals, m.clean)];
    cells.extend(gbits.map(|g| format!("{:.2}", g(&m))));
    cells.push(format!("{:.0}", m.cpu));
    cells
}

/// The first cells of a table row: the scenario, the cell (`what`), the vnetd mode (a
/// dash for none), then the `sides`' cells ([`side_cells`]).
pub(super) fn row_cells(
    scenario: String,
    what: String,
    mode: &str,
    sides: Vec<Vec<String>>,
) -> Vec<String> {
    let mode = if mode.is_empty() {
        na()
    } else {
        mode.to_string()
    };
    let mut cells = vec![scenario, what, mode];
    cells.extend(sides.into_iter().flatten());
    cells
}

/// The ratio of two medians' rates, as a cell (a dash when one is missing).
pub(super) fn ratio_cell(a: Option<Medians>, b: Option<Medians>) -> String {
    ratio(a.map(|m| m.mpps), b.map(|m| m.mpps)).map_or_else(na, |r| format!("{r:.2}"))
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
