//! The VM-to-VM rates by where the host had the two vCPUs. This machine's host moves them
//! between cores that share a cache (a cache line goes from one to the other in tens of
//! nanoseconds) and cores that do not (hundreds), often within seconds; a switch whose
//! frames wait on those transfers loses more than one that overlaps them. The main table
//! takes the runs with the vCPUs close when there are any; this one gives each placement
//! its own medians and ratio, from the runs kept. A run a probe (before or after it) found
//! apart is measured again, up to the bench's attempts; one still apart at its last attempt
//! is kept and counts as apart here.

use serde_json::{json, Value};

use super::common::{median, na, render_table};
use super::vm2vm::{Case, RunResult};

/// Where the two vCPUs were during a run, as the core-to-core probe before and after it
/// found them (see [`super::APART_FACTOR`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// Sharing a cache.
    Close,
    /// Not sharing one.
    Apart,
}

impl Placement {
    pub(super) const ALL: [Placement; 2] = [Placement::Close, Placement::Apart];

    fn of(r: &RunResult) -> Placement {
        if r.rec.placed_apart {
            Placement::Apart
        } else {
            Placement::Close
        }
    }

    fn name(self) -> &'static str {
        match self {
            Placement::Close => "close",
            Placement::Apart => "apart",
        }
    }
}

/// The median rate (Mpps) of `switch`'s successful runs of `case` with the vCPUs at
/// `placement`, and how many runs that is; None when there is none. Runs that shared the
/// CPUs with other work or changed rate within their window are left out.
pub(super) fn placed_median(
    runs: &[RunResult],
    switch: &str,
    case: &Case,
    placement: Placement,
) -> Option<(f64, usize)> {
    let rates: Vec<f64> = runs
        .iter()
        .filter(|r| r.rec.switch == switch && r.case == *case)
        .filter(|r| !r.rec.busy && !r.rec.unstable && Placement::of(r) == placement)
        .filter_map(|r| r.mpps)
        .collect();
    let n = rates.len();
    (n > 0).then(|| (median(rates), n))
}

/// One table row's figures for one placement: vnetd's and DPDK's medians (with their run
/// counts) and their ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Placed {
    pub(super) vnetd: Option<(f64, usize)>,
    pub(super) dpdk: Option<(f64, usize)>,
}

impl Placed {
    pub(super) fn of(runs: &[RunResult], label: &str, case: &Case, p: Placement) -> Placed {
        Placed {
            vnetd: placed_median(runs, label, case, p),
            dpdk: placed_median(runs, "dpdk", case, p),
        }
    }

    /// vnetd / DPDK, when both ran at this placement.
    pub(super) fn ratio(&self) -> Option<f64> {
        match (self.vnetd, self.dpdk) {
            (Some((v, _)), Some((d, _))) if d > 0.0 => Some(v / d),
            _ => None,
        }
    }

    fn cells(&self) -> [String; 3] {
        let side = |m: Option<(f64, usize)>| m.map_or_else(na, |(x, n)| format!("{x:.2} ({n})"));
        [
            side(self.vnetd),
            side(self.dpdk),
            self.ratio().map_or_else(na, |r| format!("{r:.2}")),
        ]
    }

    fn json(&self) -> Value {
        let side =
            |m: Option<(f64, usize)>| m.map(|(mpps, runs)| json!({"mpps": mpps, "runs": runs}));
        json!({
            "vnetd": side(self.vnetd),
            "dpdk": side(self.dpdk),
            "ratio": self.ratio(),
        })
    }
}

/// One row of the placement table: what the main table's row is, and each placement's
/// figures.
#[derive(Debug)]
pub(super) struct PlacementRow {
    pub(super) scenario: String,
    pub(super) size: u32,
    pub(super) mode: String,
    pub(super) by: [Placed; 2],
}

/// The table, with a line saying which placements had no run at all.
pub(super) fn render(rows: &[PlacementRow]) -> String {
    let mut header: Vec<String> = ["scenario", "size", "vnetd mode"]
        .map(String::from)
        .to_vec();
    for p in Placement::ALL {
        let n = p.name();
        header.extend([
            format!("{n}: vnetd Mpps (runs)"),
            format!("{n}: DPDK Mpps (runs)"),
            format!("{n}: vnetd/DPDK"),
        ]);
    }
    let mut table = vec![header];
    for row in rows {
        let mut cells = vec![row.scenario.clone(), row.size.to_string(), row.mode.clone()];
        for placed in &row.by {
            cells.extend(placed.cells());
        }
        table.push(cells);
    }
    let mut out = String::from(
        "\nby vCPU placement (close: the two CPUs share a cache; apart: they do not), medians \
         of the runs kept at each:\n",
    );
    out += &render_table(&table, |c| c < 3 && c != 1);
    for (i, p) in Placement::ALL.iter().enumerate() {
        if rows
            .iter()
            .all(|r| r.by[i].vnetd.is_none() && r.by[i].dpdk.is_none())
        {
            out += &format!(
                "no run was kept with the vCPUs {}: the host did not place them so (or moved \
                 them during every such run)\n",
                p.name()
            );
        }
    }
    out
}

/// The JSON of one row.
pub(super) fn row_json(row: &PlacementRow) -> Value {
    let mut m = serde_json::Map::new();
    for (p, placed) in Placement::ALL.iter().zip(&row.by) {
        m.insert(p.name().into(), placed.json());
    }
    json!({
        "scenario": row.scenario,
        "size": row.size,
        "vnetd_mode": row.mode,
        "placements": m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(switch: &str, size: u32, mpps: Option<f64>, apart: bool) -> RunResult {
        let mut r = RunResult {
            case: Case {
                devargs: "default".into(),
                size,
                ..Case::default()
            },
            mpps,
            ..RunResult::default()
        };
        r.rec.switch = switch.into();
        r.rec.placed_apart = apart;
        r
    }

    #[test]
    fn each_placement_gets_its_own_medians_and_ratio() {
        let mut runs = vec![
            run("vnetd poll", 64, Some(15.0), false),
            run("vnetd poll", 64, Some(16.0), false),
            run("vnetd poll", 64, Some(14.0), false),
            run("vnetd poll", 64, Some(5.0), true),
            run("dpdk", 64, Some(12.0), false),
            run("dpdk", 64, Some(11.0), true),
            run("dpdk", 64, Some(13.0), true),
            // Another size, a failed run, a busy run and one that changed rate: not counted.
            run("vnetd poll", 1514, Some(10.0), false),
            run("vnetd poll", 64, None, false),
            run("vnetd poll", 64, Some(99.0), false),
            run("vnetd poll", 64, Some(98.0), true),
        ];
        runs[9].rec.busy = true;
        runs[10].rec.unstable = true;
        let case = runs[0].case.clone();
        let close = Placed::of(&runs, "vnetd poll", &case, Placement::Close);
        assert_eq!(close.vnetd, Some((15.0, 3)));
        assert_eq!(close.dpdk, Some((12.0, 1)));
        assert_eq!(close.ratio(), Some(1.25));
        let apart = Placed::of(&runs, "vnetd poll", &case, Placement::Apart);
        assert_eq!(apart.vnetd, Some((5.0, 1)));
        assert_eq!(apart.dpdk, Some((12.0, 2)));
        assert!((apart.ratio().unwrap() - 5.0 / 12.0).abs() < 1e-9);

        let row = PlacementRow {
            scenario: "VM-to-VM default".into(),
            size: 64,
            mode: "poll".into(),
            by: [close, apart],
        };
        let text = render(std::slice::from_ref(&row));
        assert!(text.contains("15.00 (3)"), "{text}");
        assert!(text.contains("0.42"), "{text}");
        assert!(!text.contains("no run was kept"), "{text}");
        let j = row_json(&row);
        assert_eq!(j["placements"]["apart"]["dpdk"]["runs"], 2);
        assert_eq!(j["placements"]["close"]["ratio"], 1.25);
    }

    #[test]
    fn a_placement_without_runs_says_so() {
        let runs = vec![
            run("vnetd poll", 64, Some(15.0), false),
            run("dpdk", 64, Some(12.0), false),
        ];
        let case = runs[0].case.clone();
        let by = Placement::ALL.map(|p| Placed::of(&runs, "vnetd poll", &case, p));
        assert_eq!(by[1].ratio(), None);
        let row = PlacementRow {
            scenario: "VM-to-VM default".into(),
            size: 64,
            mode: "poll".into(),
            by,
        };
        let text = render(&[row]);
        assert!(
            text.contains("no run was kept with the vCPUs apart"),
            "{text}"
        );
        assert!(
            !text.contains("no run was kept with the vCPUs close"),
            "{text}"
        );
    }
}
