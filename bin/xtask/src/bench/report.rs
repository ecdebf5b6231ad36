//! The printed and saved report: the machine, the VM-to-VM table, the TAP and TSO
//! scenarios' parts, and the time stamp that names the files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::common::Medians;
use super::common::{
    anomaly_lines, failed_lines, idle_json, idle_line, mode_of, ratio, ratio_cell, render_table,
    row_cells, side_cells, table_header, vnetd_labels, Tally,
};
use super::placement::{self, Placed, Placement, PlacementRow};
use super::runner::Switch;
use super::vm2vm::{gbits, medians_json_of, medians_of, Case, Load, RunResult, TX_FIRST_BURSTS};
use super::{chart, latency, ovs, tap, tso, APART_FACTOR, WARMUP};

/// Everything the bench prints and saves.
#[derive(Debug)]
pub(super) struct Report {
    /// The machine, version and command ([`super::probe::machine_info`]).
    pub(super) info: BTreeMap<&'static str, String>,
    /// Every VM-to-VM run kept.
    pub(super) runs: Vec<RunResult>,
    /// Each switch's CPU (%) with both ports attached and no traffic.
    pub(super) idle: Vec<(String, f64)>,
    /// The switches of the VM-to-VM scenarios.
    pub(super) switches: Vec<Switch>,
    /// `--runs`, `--secs`, `--sizes` and `--devargs`.
    pub(super) args_runs: u32,
    pub(super) secs: f64,
    pub(super) sizes: Vec<u32>,
    pub(super) devargs: Vec<String>,
    /// Where the logs are.
    pub(super) logs: PathBuf,
    /// The shortest core-to-core round trip seen, ns.
    pub(super) best_pingpong: f64,
    /// Generator's and switch's CPUs.
    pub(super) cpus: (usize, usize),
    /// Queue pairs of the VM-to-VM scenarios that ran (`vm2vm`: 1, `vm2vm-2q`: 2).
    pub(super) vm2vm: Vec<Load>,
    /// The TAP scenario's results, when it ran.
    pub(super) tap: Option<tap::TapReport>,
    /// The TSO scenario's results, when it ran.
    pub(super) tso: Option<tso::TsoReport>,
    /// The latency scenario's results, when it ran.
    pub(super) latency: Option<latency::LatencyReport>,
    /// Why the OVS-DPDK anchor was left out, when it could not start.
    pub(super) ovs_skipped: Option<String>,
}

/// What the generator-busy column says, under the table.
const GEN_BUSY_NOTE: &str = "gen busy %: the share of the window the generator spent forwarding \
     frames (testpmd --record-core-cycles; empty polls not counted); near 100 the generator, \
     not the switch, set that rate, and no switch could have shown more\n";

/// The generator's busy % of each side's medians, `a/b[/c]` (a dash for a side without).
fn busy_cell(sides: &[Option<Medians>]) -> String {
    sides
        .iter()
        .map(|m| {
            m.and_then(|m| m.extra)
                .map_or_else(|| "-".into(), |b| format!("{b:.0}"))
        })
        .collect::<Vec<String>>()
        .join("/")
}

/// One row of the table: a case and a vnetd mode (or the anchor alone).
#[derive(Debug)]
pub(super) struct Row {
    pub(super) scenario: String,
    pub(super) queues: u16,
    pub(super) size: u32,
    pub(super) mode: String,
    pub(super) vnetd: Option<Medians>,
    pub(super) dpdk: Option<Medians>,
    /// The OVS-DPDK anchor, when it ran.
    pub(super) ovs: Option<Medians>,
    /// The cell and vnetd's label (empty: the anchors alone).
    pub(super) case: Case,
    pub(super) label: String,
}

impl Report {
    pub(super) fn rows(&self) -> Vec<Row> {
        let labels = vnetd_labels(
            self.switches
                .iter()
                .filter(|s| matches!(s, Switch::Vnetd(_)))
                .map(Switch::label)
                .collect(),
        );
        let mut rows = Vec::new();
        for load in &self.vm2vm {
            for devargs in &self.devargs {
                for &size in &self.sizes {
                    let case = Case {
                        devargs: devargs.clone(),
                        size,
                        queues: load.queues,
                        bursts: load.bursts,
                    };
                    let scenario = case.scenario();
                    let dpdk = medians_of(&self.runs, "dpdk", &case);
                    let ovs = medians_of(&self.runs, &Switch::Ovs.label(), &case);
                    for label in &labels {
                        rows.push(Row {
                            scenario: scenario.clone(),
                            queues: case.queue_pairs(),
                            size,
                            mode: mode_of(label),
                            vnetd: (!label.is_empty())
                                .then(|| medians_of(&self.runs, label, &case))
                                .flatten(),
                            dpdk,
                            ovs,
                            case: case.clone(),
                            label: label.clone(),
                        });
                    }
                }
            }
        }
        rows
    }

    pub(super) fn render(&self) -> String {
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
        if let Some(latency) = &self.latency {
            out += &latency.render();
        }
        out += &format!("logs: {}", self.logs.display());
        out
    }

    /// The VM-to-VM table and its notes.
    pub(super) fn render_vm2vm(&self) -> String {
        let mut out = String::new();
        let with_ovs = self.switches.contains(&Switch::Ovs);
        out += &format!(
            "medians of {} run(s) x {} s; Gbit/s = Mpps x frame bytes x 8 (no FCS, preamble or \
             gap); CPU % of one CPU; DPDK = testpmd io between 2 net_vhost ports{}{}{}\n\n",
            self.args_runs,
            self.secs,
            if with_ovs {
                "; OVS = OVS-DPDK, 2 dpdkvhostuserclient ports, flows in_port=1->2, 2->1"
            } else {
                ""
            },
            if self.vm2vm.iter().any(|l| l.queues > 1) {
                "; Nq = N queue pairs on every port (generator --rxq/--txq N, vnetd queues=N, \
                 anchor net_vhost queues=N)"
            } else {
                ""
            },
            if self.vm2vm.iter().any(|l| l.bursts < TX_FIRST_BURSTS) {
                "; light = 64 frames in flight per port (tx_first 2) instead of 1024"
            } else {
                ""
            }
        );
        let mut header = table_header("size", &["vnetd", "DPDK"], true);
        header.push("vnetd/DPDK".into());
        if with_ovs {
            header.extend(["OVS Mpps", "OVS CPU %", "vnetd/OVS"].map(String::from));
        }
        header.push(if with_ovs {
            "gen busy % vnetd/DPDK/OVS".into()
        } else {
            "gen busy % vnetd/DPDK".into()
        });
        let mut table: Vec<Vec<String>> = vec![header];
        for row in self.rows() {
            let gbits_of = |m: &Medians| gbits(m.mpps, row.size);
            let side = |m| side_cells(m, 3, Some(&gbits_of));
            let mut cells = row_cells(
                row.scenario.clone(),
                row.size.to_string(),
                &row.mode,
                vec![side(row.vnetd), side(row.dpdk)],
            );
            cells.push(ratio_cell(row.vnetd, row.dpdk));
            if with_ovs {
                cells.extend(side_cells(row.ovs, 3, None));
                cells.push(ratio_cell(row.vnetd, row.ovs));
            }
            let mut sides = vec![row.vnetd, row.dpdk];
            if with_ovs {
                sides.push(row.ovs);
            }
            cells.push(busy_cell(&sides));
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
                r.rec.switch,
                r.case.size,
                r.case.label(),
                r.rec.run
            )
        };
        let failed = failed_lines(&self.runs, "", name);
        if !failed.is_empty() {
            out += "\n";
            out += &failed;
        }
        let t = Tally::of(&self.runs);
        match t.busy_line(self.runs.len(), "") {
            Some(busy) => out += &format!("\n{busy}; their figures are not clean\n"),
            None => {
                out += "\nmachine idle: no other QEMU or testpmd, other CPU use below 5 % in \
                        every window\n";
            }
        }
        let Tally {
            apart,
            unstable,
            repeated,
            ..
        } = t;
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
        out += GEN_BUSY_NOTE;
        out += &anomaly_lines(&self.runs, "anomalies:", name);
        out += &placement::render(&self.placement_rows());
        out
    }

    /// The rows of the table by vCPU placement (those of the main table with a vnetd mode).
    pub(super) fn placement_rows(&self) -> Vec<PlacementRow> {
        self.rows()
            .into_iter()
            .filter(|row| !row.label.is_empty())
            .map(|row| PlacementRow {
                by: Placement::ALL.map(|p| Placed::of(&self.runs, &row.label, &row.case, p)),
                scenario: row.scenario,
                size: row.size,
                mode: row.mode,
            })
            .collect()
    }

    /// The chart's panels: the VM-to-VM rates, then the latency percentiles.
    pub(super) fn chart_panels(&self) -> Vec<chart::Panel> {
        let mut rate = chart::Panel {
            title: "VM-to-VM forwarding rate (medians)".into(),
            unit: "Mpps".into(),
            series: vec!["vnetd".into(), "DPDK vhost".into(), "OVS-DPDK".into()],
            groups: Vec::new(),
        };
        for row in self.rows() {
            let label = format!(
                "{} {} B {}",
                row.scenario.trim_start_matches("VM-to-VM "),
                row.size,
                row.mode
            );
            let m = |x: Option<Medians>| x.map(|m| m.mpps);
            rate.groups
                .push((label, vec![m(row.vnetd), m(row.dpdk), m(row.ovs)]));
        }
        let mut panels = vec![rate];
        if let Some(l) = &self.latency {
            panels.push(l.chart_panel());
        }
        panels
    }

    pub(super) fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|row| {
                let side = |m: Option<Medians>| m.map(|m| medians_json_of(&m, row.size));
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
                "queue_pairs": self.vm2vm.iter().map(|l| l.queues).collect::<Vec<_>>(),
                "frames_in_flight_per_port": self
                    .vm2vm
                    .iter()
                    .map(|l| 32 * l.bursts)
                    .collect::<Vec<_>>(),
                "queue_pairs_note": "N > 1: generator virtio-user queues=N with --rxq=N --txq=N, \
                                     vnetd ports queues=N, anchor net_vhost queues=N with \
                                     --rxq=N --txq=N",
                "rate": "sum of both generator ports' RX-packets deltas / wall time between samples",
            },
            "rows": rows,
            "by_placement": self
                .placement_rows()
                .iter()
                .map(placement::row_json)
                .collect::<Vec<_>>(),
            "idle_cpu_pct": idle,
            "ovs_skipped": self.ovs_skipped,
            "runs": self.runs.iter().map(RunResult::json).collect::<Vec<_>>(),
            "vm2vm": !self.vm2vm.is_empty(),
            "tap": self.tap.as_ref().map(tap::TapReport::json),
            "tso": self.tso.as_ref().map(tso::TsoReport::json),
            "latency": self.latency.as_ref().map(latency::LatencyReport::json),
            "logs": self.logs.display().to_string(),
        })
    }
}

/// A UTC time, to the second.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp {
    /// Seconds since the Unix epoch.
    secs: u64,
}

impl Stamp {
    pub(super) fn of(t: SystemTime) -> Stamp {
        Stamp {
            secs: t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }

    /// Year, month, day, hour, minute, second.
    fn parts(&self) -> (i64, u32, u32, u64, u64, u64) {
        let (year, month, day) = civil_from_days(self.secs / 86_400);
        let s = self.secs % 86_400;
        (year, month, day, s / 3600, s / 60 % 60, s % 60)
    }

    /// `2026-05-09T07:35:12Z`.
    pub(super) fn iso(&self) -> String {
        let (y, mo, d, h, m, s) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
    }

    /// `20260509T073512Z`, for file names.
    pub(super) fn compact(&self) -> String {
        let (y, mo, d, h, m, s) = self.parts();
        format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}Z")
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub(super) fn civil_from_days(days: u64) -> (i64, u32, u32) {
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
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let t = UNIX_EPOCH + Duration::from_secs(1_778_312_112);
        assert_eq!(Stamp::of(t).iso(), "2026-05-09T07:35:12Z");
        assert_eq!(Stamp::of(t).compact(), "20260509T073512Z");
    }

    #[test]
    fn vm2vm_table_and_json() {
        let case = Case {
            devargs: "in_order=0".into(),
            size: 64,
            queues: 1,
            bursts: TX_FIRST_BURSTS,
        };
        let run = |switch: &str, mpps: f64, cpu: f64, busy: Option<f64>| RunResult {
            case: case.clone(),
            mpps: Some(mpps),
            switch_cpu: cpu,
            gen_busy: busy,
            rec: crate::bench::common::Record {
                switch: switch.into(),
                run: 1,
                attempts: 1,
                ..Default::default()
            },
            ..RunResult::default()
        };
        let info = ["date", "kernel", "cpu", "cpus", "dpdk", "commit", "command"]
            .into_iter()
            .map(|k| (k, format!("<{k}>")))
            .collect();
        let report = Report {
            info,
            runs: vec![
                run("vnetd event", 3.0, 100.0, Some(71.4)),
                run("dpdk", 2.0, 100.0, None),
            ],
            idle: vec![("dpdk".into(), 100.0)],
            switches: vec![Switch::Vnetd(Some("event".into())), Switch::Dpdk],
            args_runs: 1,
            secs: 5.0,
            sizes: vec![64],
            devargs: vec!["in_order=0".into()],
            logs: PathBuf::from("/tmp/logs"),
            best_pingpong: 100.0,
            cpus: (0, 1),
            vm2vm: vec![Load::SATURATED],
            tap: None,
            tso: None,
            latency: None,
            ovs_skipped: None,
        };
        let text = report.render();
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("scenario"))
            .unwrap();
        let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[header]).join(" "),
            "scenario size vnetd mode vnetd Mpps vnetd Gbit/s vnetd CPU % DPDK Mpps DPDK \
             Gbit/s DPDK CPU % vnetd/DPDK gen busy % vnetd/DPDK"
        );
        assert_eq!(
            cells(lines[header + 2]).join(" "),
            "VM-to-VM in_order=0 64 event 3.000 1.54 100 2.000 1.02 100 1.50 71/-"
        );
        assert!(
            text.contains("gen busy %: the share of the window"),
            "{text}"
        );
        assert!(
            text.contains("machine idle: no other QEMU or testpmd"),
            "{text}"
        );
        assert!(text.ends_with("logs: /tmp/logs"), "{text}");
        let json = report.json();
        let row = &json["rows"][0];
        assert_eq!(row["vnetd_mode"], "event");
        assert_eq!(row["ratio"], 1.5);
        assert_eq!(row["vnetd"]["mpps"], 3.0);
        assert_eq!(row["dpdk"]["runs"], 1);
        assert_eq!(row["vnetd"]["generator_busy_pct"], 71.4);
        assert!(row["dpdk"]["generator_busy_pct"].is_null());
        assert_eq!(json["runs"][0]["generator_busy_pct"], 71.4);
        assert_eq!(json["runs"][0]["switch"], "vnetd event");
        assert_eq!(json["idle_cpu_pct"]["dpdk"], 100.0);
    }
}
