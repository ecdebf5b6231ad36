//! What the scenarios share: the bookkeeping of a run (attempts, placement, disturbances),
//! the retry loop around it, medians, and the pieces of the printed and JSON reports.
//!
//! Every scenario's run record has the same bookkeeping fields under the same names
//! (`switch`, `run`, `attempts`, `pingpong_ns`, `placed_apart`, `unstable`, `busy`,
//! `anomalies`, `error`, and `foreign_cpu`, `steal_cpu`, `anchor_drops`, `features`);
//! [`run_record!`] makes it a [`RunRecord`]. The scenario modules ([`super::tap`],
//! [`super::tso`], [`super::ovs`]) and the VM-to-VM code in `bench.rs` use these; this module
//! uses only `bench.rs`'s process and probe helpers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use super::{
    foreign_processes, signal, sleep, stale_owner, vnetd_drop_delta, Args, Ctx, APART_FACTOR,
    APART_MIN_NS, FOREIGN_CPU_LIMIT, IDLE_WINDOW, RETRIES, UNSTABLE_FRACTION, WARMUP,
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
/// `steal_cpu`, `anchor_drops` and `features`, and an inherent `summary(&self) -> String`.
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

/// One run of `switch` (`label`), once the machine is idle, and again (a few times) if
/// other work or the host's placement of our vCPUs disturbed it. `what` describes the run
/// in the `-->` line; `run` measures once (a failure is a result too).
pub(super) fn attempt<R: RunRecord>(
    ctx: &Ctx,
    args: &Args,
    what: &str,
    label: &str,
    run_no: u32,
    mut run: impl FnMut() -> R,
) -> R {
    let mut attempt = 1;
    loop {
        let busy_before = ctx.wait_idle(args.wait_idle);
        eprintln!(
            "--> {what}, run {run_no}/{}{}",
            args.runs,
            if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            }
        );
        let before = ctx.pingpong();
        let mut result = run();
        let after = ctx.pingpong();
        let mut m = result.marks();
        *m.pingpong_ns = [before, after];
        *m.switch = label.to_string();
        *m.run = run_no;
        *m.attempts = attempt;
        if let Some(busy) = &busy_before {
            m.anomalies
                .push(format!("machine busy before the run: {busy}"));
            *m.busy = true;
        }
        m.check_placement(ctx.best_pingpong.get());
        eprintln!("    {}", result.summary());
        let f = result.flags();
        if attempt >= RETRIES || f.failed {
            return result;
        }
        // Something else started during the window: again once the machine is idle
        // (unless it never was).
        if f.busy && busy_before.is_none() {
            eprintln!("    the machine got busy during the run: again");
        } else if f.placed_apart || f.unstable {
            eprintln!("    the host moved our vCPUs (apart): again in a few seconds");
            sleep(Duration::from_secs(5));
        } else {
            return result;
        }
        attempt += 1;
    }
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

/// Stops what is left in network namespace `name` (only our processes live in the bench's
/// namespaces) and deletes it.
pub(super) fn kill_netns(name: &str) {
    if let Ok(out) = Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse() {
                signal(pid, "KILL");
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Deletes the network namespaces, among those `ours` picks, of bench processes that are
/// gone.
pub(super) fn sweep_stale_netns(ours: impl Fn(&str) -> bool) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !ours(name) {
            continue;
        }
        let Some(pid) = stale_owner(name) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing network namespace {name} (left by bench process {pid})");
            kill_netns(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Rec {
        switch: String,
        run: u32,
        attempts: u32,
        pingpong_ns: [Option<f64>; 2],
        placed_apart: bool,
        unstable: bool,
        busy: bool,
        anomalies: Vec<String>,
        error: Option<String>,
        foreign_cpu: f64,
        steal_cpu: f64,
        anchor_drops: Option<u64>,
        features: String,
        mpps: f64,
    }

    impl Rec {
        fn summary(&self) -> String {
            format!("{} {}", self.switch, self.mpps)
        }
    }

    run_record!(Rec);

    #[test]
    fn placement() {
        let mut r = Rec {
            pingpong_ns: [Some(100.0), Some(140.0)],
            ..Rec::default()
        };
        // Below the floor: never apart.
        r.check_placement(10.0);
        assert!(!r.placed_apart && r.clean());
        let mut r = Rec {
            pingpong_ns: [Some(100.0), Some(400.0)],
            ..Rec::default()
        };
        r.check_placement(100.0);
        assert!(r.placed_apart && !r.clean());
        assert_eq!(
            r.anomalies,
            [
                "vCPUs placed apart by the host around this run: core-to-core round trip 100 ns \
              before, 400 ns after (best 100 ns)"
            ]
        );
        // Once is enough.
        r.check_placement(10.0);
        assert_eq!(r.anomalies.len(), 1);
        let mut r = Rec {
            pingpong_ns: [None, Some(1000.0)],
            ..Rec::default()
        };
        r.check_placement(100.0);
        assert!(r.anomalies[0].contains("NaN ns before, 1000 ns after"));
    }

    #[test]
    fn window_notes() {
        let mut r = Rec::default();
        r.marks().check_halves([1.0, 1.1], 3);
        assert!(!r.unstable && r.anomalies.is_empty());
        r.marks().check_halves([1.0, 2.0], 4);
        assert!(r.unstable);
        assert_eq!(
            r.anomalies,
            ["the rate changed within the window: 1.0000 Mpps, then 2.0000"]
        );
        let mut r = Rec::default();
        r.marks().note_vnetd_drops(&BTreeMap::new());
        r.marks().note_load(&[], 1.0, 1.0);
        assert!(r.anomalies.is_empty() && !r.busy);
        let drops = BTreeMap::from([("a.rx_full".to_string(), 3), ("b.tx".to_string(), 1)]);
        r.marks().note_vnetd_drops(&drops);
        r.marks().note_load(&["qemu (1)".to_string()], 6.0, 7.5);
        assert!(r.busy);
        assert_eq!(
            r.anomalies,
            [
                "vnetd drops in the window: a.rx_full=3, b.tx=1",
                "other processes ran during the window: qemu (1)",
                "other processes used 6.0 % of a CPU during the window",
                "the hypervisor stole 7.5 % of a CPU during the window",
            ]
        );
        let mut r = Rec::default();
        r.marks().note_load(&[], 0.0, 9.0);
        assert!(!r.busy && r.anomalies.len() == 1);
    }

    #[test]
    fn summaries_and_tallies() {
        assert_eq!(summary_tail([Some(1.0), None], &[]), "");
        assert_eq!(
            summary_tail([Some(60.4), Some(70.6)], &["x".into(), "y".into()]),
            "; CPU{gen}<->CPU{switch} round trip 60 / 71 ns\n    ! x\n    ! y"
        );
        let runs = [
            Rec {
                busy: true,
                attempts: 1,
                ..Rec::default()
            },
            Rec {
                placed_apart: true,
                unstable: true,
                attempts: 3,
                ..Rec::default()
            },
            Rec {
                attempts: 1,
                ..Rec::default()
            },
        ];
        assert_eq!(
            Tally::of(&runs),
            Tally {
                busy: 1,
                apart: 1,
                unstable: 1,
                repeated: 2
            }
        );
    }

    #[test]
    fn medians_of_clean_runs_or_all() {
        let clean = Rec {
            mpps: 1.0,
            ..Rec::default()
        };
        let busy = Rec {
            busy: true,
            mpps: 2.0,
            ..Rec::default()
        };
        let (used, all_clean) = clean_or_all(vec![&clean, &busy]).unwrap();
        assert!(all_clean);
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].mpps, 1.0);
        let (used, all_clean) = clean_or_all(vec![&busy]).unwrap();
        assert!(!all_clean && used.len() == 1);
        assert!(clean_or_all::<Rec>(vec![]).is_none());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
    }

    #[test]
    fn run_lists_and_json() {
        let runs = [
            Rec {
                switch: "dpdk".into(),
                run: 1,
                anomalies: vec!["a".into(), "b".into()],
                ..Rec::default()
            },
            Rec {
                switch: "vnetd poll".into(),
                run: 2,
                error: Some("gone".into()),
                ..Rec::default()
            },
        ];
        let name = |r: &Rec| format!("{} run {}", r.switch, r.run);
        assert_eq!(failed_lines(&runs[..1], "X ", name), "");
        assert_eq!(
            failed_lines(&runs, "X ", name),
            "1 X run(s) failed and are left out of the medians:\n  vnetd poll run 2: gone\n"
        );
        assert_eq!(anomaly_lines(&runs[1..], "odd:", name), "");
        assert_eq!(
            anomaly_lines(&runs, "odd:", name),
            "odd:\n  dpdk run 1: a\n  dpdk run 1: b\n"
        );
        let v = run_json(&runs[1], json!({"mpps": null, "size": 64}));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "anchor_drops_whole_run",
                "anomalies",
                "attempt",
                "busy",
                "core_to_core_round_trip_ns",
                "error",
                "features",
                "mpps",
                "other_cpu_pct",
                "run",
                "size",
                "steal_cpu_pct",
                "switch",
                "unstable",
                "vcpus_placed_apart",
            ]
        );
        assert_eq!(v["switch"], "vnetd poll");
        assert_eq!(v["error"], "gone");
        assert_eq!(v["size"], 64);
    }

    #[test]
    fn cells_and_tables() {
        assert_eq!(vnetd_label(Some("poll")), "vnetd poll");
        assert_eq!(vnetd_label(None), "vnetd");
        assert_eq!(mode_of("vnetd poll"), "poll");
        assert_eq!(mode_of("vnetd"), "");
        assert_eq!(mode_of("dpdk"), "");
        assert_eq!(vnetd_labels(vec![]), [""]);
        assert_eq!(vnetd_labels(vec!["vnetd poll".into()]), ["vnetd poll"]);
        assert_eq!(rate_cell(1.23456, 3, true), "1.235");
        assert_eq!(rate_cell(1.23456, 4, false), "1.2346*");
        let table = vec![
            vec!["name".to_string(), "n".to_string(), "x".to_string()],
            vec!["a".to_string(), "100".to_string(), String::new()],
        ];
        assert_eq!(
            render_table(&table, |c| c == 0),
            "name    n  x\n------------\na     100\n"
        );
        assert_eq!(idle_line(&[]), None);
        let idle = [
            ("dpdk".to_string(), 100.0),
            ("vnetd event".to_string(), 0.26),
        ];
        assert_eq!(
            idle_line(&idle).unwrap(),
            "idle (both ports attached, no traffic, 3 s): CPU dpdk 100.0 %, vnetd event 0.3 %\n"
        );
        assert_eq!(
            Value::Object(idle_json(&idle)),
            json!({"dpdk": 100.0, "vnetd event": 0.26})
        );
    }
}
