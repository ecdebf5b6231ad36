//! The one scenario abstraction and its runner loop.
//!
//! A scenario ([`Scenario`]) says which switches it measures ([`Switch`], the same kinds in
//! every scenario), the cells of its table (what varies besides the switch: frame size,
//! generator devargs, queue pairs, direction...) and how one run of one switch on one cell
//! goes. [`run_all`] runs every cell `--runs` times, every switch in turn within a round (so
//! that slow drifts of the machine spread over all of them), each run once the machine is
//! idle and again when something disturbed it ([`attempt`]), and measures each switch's
//! idle CPU on its first run when the scenario asks for it. [`table_rows`] lays out the rows
//! every scenario's table has: per cell, one per vnetd mode.

use std::time::Duration;

use anyhow::Result;

use super::common::{vnetd_label, vnetd_labels, RunRecord};
use super::ctx::Ctx;
use super::proc::sleep;
use super::{Args, Only, RETRIES};

/// What moves the frames in one run: vnetd, or one of the anchors it is measured against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Switch {
    /// vnetd, with `--datapath MODE` when it has the option.
    Vnetd(Option<String>),
    /// testpmd forwarding `io` between its vhost-user (and TAP) ports.
    Dpdk,
    /// The same with DPDK's default offload flags (TSO scenario).
    DpdkDefaultOl,
    /// OVS-DPDK: two `dpdkvhostuserclient` ports, in_port flows (VM-to-VM, bench/ovs.rs).
    Ovs,
    /// A bare `write()` or `read()` loop on a TAP fd (TAP scenario).
    Bare,
}

impl Switch {
    /// Its name in tables, run lines and JSON.
    pub(super) fn label(&self) -> String {
        match self {
            Switch::Vnetd(mode) => vnetd_label(mode.as_deref()),
            Switch::Dpdk => "dpdk".into(),
            Switch::DpdkDefaultOl => "dpdk default-ol-flags".into(),
            Switch::Ovs => "ovs-dpdk".into(),
            Switch::Bare => "bare loop".into(),
        }
    }

    /// Whether this is vnetd.
    pub(super) fn is_vnetd(&self) -> bool {
        matches!(self, Switch::Vnetd(_))
    }

    /// The switches a scenario measures: vnetd in each of `modes`, then its `anchors`, as
    /// `--only` keeps them.
    pub(super) fn list(
        modes: &[Option<String>],
        anchors: &[Switch],
        only: Option<Only>,
    ) -> Vec<Switch> {
        let vnetd = modes.iter().cloned().map(Switch::Vnetd);
        match only {
            Some(Only::Dpdk) => anchors.to_vec(),
            Some(Only::Vnetd) => vnetd.collect(),
            None => vnetd.chain(anchors.iter().cloned()).collect(),
        }
    }
}

/// One scenario of the bench.
pub(super) trait Scenario {
    /// One cell of its table: what varies besides the switch and the run number.
    type Cell: Clone;
    /// The result of one run (a default one, with its error, for a run that failed).
    type Run: RunRecord + Default;

    /// The cells, in the order they run.
    fn cells(&self) -> Vec<Self::Cell>;
    /// The switches, in the order they run within a round.
    fn switches(&self) -> &[Switch];
    /// Whether the first run of each switch also measures its CPU with no traffic.
    fn idle_check(&self) -> bool {
        false
    }
    /// The run's description in the `-->` line.
    fn describe(&self, switch: &Switch, cell: &Self::Cell) -> String;
    /// One run of `switch` on `cell`; every process it starts is stopped when it returns.
    fn run_once(
        &self,
        ctx: &Ctx,
        switch: &Switch,
        cell: &Self::Cell,
        idle_check: bool,
    ) -> Result<Self::Run>;
    /// Notes in `run` which cell it is of (a failed run too).
    fn note_cell(&self, run: &mut Self::Run, cell: &Self::Cell) {
        let _ = (run, cell);
    }
}

/// What [`run_all`] measured: every run kept, and the idle CPU (%) of each switch label
/// when the scenario measures it.
#[derive(Debug)]
pub(super) struct Outcome<R> {
    pub(super) runs: Vec<R>,
    pub(super) idle: Vec<(String, f64)>,
}

/// Runs `scenario`: for each cell, `--runs` rounds of every switch.
pub(super) fn run_all<S: Scenario>(ctx: &Ctx, args: &Args, scenario: &S) -> Outcome<S::Run> {
    let mut out = Outcome {
        runs: Vec::new(),
        idle: Vec::new(),
    };
    for cell in scenario.cells() {
        for run_no in 1..=args.runs {
            for switch in scenario.switches() {
                let label = switch.label();
                let idle_check =
                    scenario.idle_check() && !out.idle.iter().any(|(l, _)| *l == label);
                let what = scenario.describe(switch, &cell);
                let result = attempt(ctx, args, &what, &label, run_no, || {
                    let mut run = scenario
                        .run_once(ctx, switch, &cell, idle_check)
                        .unwrap_or_else(|err| {
                            let mut failed = S::Run::default();
                            failed.rec_mut().error = Some(format!("{err:#}"));
                            failed
                        });
                    scenario.note_cell(&mut run, &cell);
                    run
                });
                if let Some(cpu) = result.rec().idle_cpu {
                    out.idle.push((label, cpu));
                }
                out.runs.push(result);
            }
        }
    }
    out
}

/// The rows of a scenario's table: for each of `cells`, one per vnetd mode among
/// `switches` (one with an empty label when vnetd did not run, for the anchors' figures).
pub(super) fn table_rows<C: Clone>(cells: &[C], switches: &[Switch]) -> Vec<(C, String)> {
    let labels = vnetd_labels(
        switches
            .iter()
            .filter(|s| s.is_vnetd())
            .map(Switch::label)
            .collect(),
    );
    cells
        .iter()
        .flat_map(|c| labels.iter().map(move |l| (c.clone(), l.clone())))
        .collect()
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
        let rec = result.rec_mut();
        rec.pingpong_ns = [before, after];
        rec.switch = label.to_string();
        rec.run = run_no;
        rec.attempts = attempt;
        if let Some(busy) = &busy_before {
            rec.anomalies
                .push(format!("machine busy before the run: {busy}"));
            rec.busy = true;
        }
        rec.check_placement(ctx.best_pingpong.get());
        eprintln!("    {}", result.summary());
        let f = result.rec();
        if attempt >= RETRIES || f.error.is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_and_rows() {
        let modes = [Some("event".to_string()), Some("poll".to_string())];
        let anchors = [Switch::Dpdk, Switch::Bare];
        let all = Switch::list(&modes, &anchors, None);
        let labels: Vec<String> = all.iter().map(Switch::label).collect();
        assert_eq!(labels, ["vnetd event", "vnetd poll", "dpdk", "bare loop"]);
        assert_eq!(Switch::list(&modes, &anchors, Some(Only::Dpdk)), anchors);
        assert_eq!(Switch::list(&modes, &anchors, Some(Only::Vnetd)).len(), 2);
        assert_eq!(Switch::DpdkDefaultOl.label(), "dpdk default-ol-flags");
        assert_eq!(Switch::Ovs.label(), "ovs-dpdk");
        assert_eq!(
            table_rows(&[64, 1514], &all),
            [
                (64, "vnetd event".to_string()),
                (64, "vnetd poll".to_string()),
                (1514, "vnetd event".to_string()),
                (1514, "vnetd poll".to_string())
            ]
        );
        assert_eq!(table_rows(&[1], &anchors), [(1, String::new())]);
    }
}
