//! The TSO scenario's run records and its part of the report.

use serde_json::{json, Value};

use super::super::common::{
    anomaly_lines, check_placement_all, failed_lines, idle_json, idle_line, median, medians,
    medians_json, mode_of, rate_cell, ratio, ratio_cell, render_table, row_cells, run_json,
    run_record, side_cells, summary_tail, table_header, vnetd_labels, Medians, Record, Tally,
    Window,
};
use super::super::ctx::Ctx;
use super::super::runner::Switch;
use super::super::WARMUP;
use super::{Snap, ANCHOR_DEVARGS, DEFAULT_DEVARGS, FRAME_BYTES, GEN_EXAMPLE, MSS, WINDOW};

/// The result of one run.
#[derive(Debug, Default)]
pub(super) struct TsoRun {
    /// Frames received per second, both directions, in millions; None when the run failed.
    pub(super) mpps: Option<f64>,
    /// Bytes of those frames x 8, Gbit/s.
    pub(super) gbits: f64,
    /// Per direction (A to B, B to A).
    pub(super) dir_mpps: [f64; 2],
    pub(super) dir_gbits: [f64; 2],
    pub(super) half_mpps: [f64; 2],
    pub(super) secs: f64,
    /// Frames received in the window per direction, and their bytes.
    pub(super) frames: [u64; 2],
    pub(super) bytes: [u64; 2],
    /// Of those, with a GSO header, and with NEEDS_CSUM.
    pub(super) gso: [u64; 2],
    pub(super) needs_csum: [u64; 2],
    /// Shortest and longest frame received (whole run, both directions).
    pub(super) len_range: [u64; 2],
    /// How the first frame of each direction arrived.
    pub(super) delivered: [String; 2],
    pub(super) switch_cpu: f64,
    pub(super) gen_cpu: f64,
    /// The bookkeeping every scenario's runs have.
    pub(super) rec: Record,
}

impl TsoRun {
    /// Computes the figures of a window and notes anything odd in it.
    pub(super) fn fill(&mut self, ctx: &Ctx, w: &Window<Snap>) {
        let gen_secs = |a: &Snap, b: &Snap| b.t_ns.saturating_sub(a.t_ns) as f64 / 1e9;
        let secs = gen_secs(&w.first, &w.last);
        self.secs = secs;
        let frames = |a: &Snap, b: &Snap| -> u64 {
            (0..2)
                .map(|d| b.dirs[d].n("frames").saturating_sub(a.dirs[d].n("frames")))
                .sum()
        };
        for d in 0..2 {
            let (a, b) = (&w.first.dirs[d], &w.last.dirs[d]);
            self.frames[d] = b.n("frames").saturating_sub(a.n("frames"));
            self.bytes[d] = b.n("bytes").saturating_sub(a.n("bytes"));
            self.gso[d] = b.n("gso").saturating_sub(a.n("gso"));
            self.needs_csum[d] = b.n("needs_csum").saturating_sub(a.n("needs_csum"));
            self.dir_mpps[d] = self.frames[d] as f64 / secs / 1e6;
            self.dir_gbits[d] = self.bytes[d] as f64 * 8.0 / secs / 1e9;
            self.len_range = if d == 0 {
                [b.n("min_len"), b.n("max_len")]
            } else {
                [
                    self.len_range[0].min(b.n("min_len")),
                    self.len_range[1].max(b.n("max_len")),
                ]
            };
            self.delivered[d] = b.first().to_string();
            let lost = b.n("lost").saturating_sub(a.n("lost"));
            if lost > 0 {
                self.rec.anomalies.push(format!(
                    "{} frame(s) {} lost in the window (nothing came back for 100 ms)",
                    lost,
                    ["A to B", "B to A"][d]
                ));
            }
            if b.n("bad") > 0 {
                self.rec.anomalies.push(format!(
                    "{} of the first frames {} arrived different from what was sent: {}",
                    b.n("bad"),
                    ["A to B", "B to A"][d],
                    b.first()
                ));
            }
            if self.frames[d] == 0 {
                self.rec.anomalies.push(format!(
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
        self.rec.check_halves(halves, 4);
        let wall = w.last.at - w.first.at;
        let cpu = ctx.cpu_use(&w.first.ticks, &w.last.ticks, wall);
        self.switch_cpu = cpu.switch;
        self.gen_cpu = cpu.groups[0];
        (self.rec.foreign_cpu, self.rec.steal_cpu) = (cpu.foreign, cpu.steal);
        self.rec.note_vnetd_drops(&w.vnetd_drops);
        self.rec.note_load(&w.busy);
    }

    fn summary(&self) -> String {
        let Some(mpps) = self.mpps else {
            return format!("failed: {}", self.rec.error.as_deref().unwrap_or("?"));
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
            self.rec.foreign_cpu,
            self.secs,
            self.gso.iter().sum::<u64>(),
            self.frames.iter().sum::<u64>()
        );
        if let Some(idle) = self.rec.idle_cpu {
            s += &format!("; idle CPU {idle:.1} %");
        }
        s + &summary_tail(self.rec.pingpong_ns, &self.rec.anomalies)
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
            "idle_cpu_pct": self.rec.idle_cpu,
        });
        run_json(self, own)
    }
}

run_record!(TsoRun);

/// The JSON of the medians of TSO runs.
fn medians_json_of(m: &Medians) -> Value {
    medians_json(m.mpps, m.extra.unwrap_or(0.0), m.cpu, m.runs, m.clean)
}

/// Everything the scenario measured.
#[derive(Debug)]
pub(in crate::bench) struct TsoReport {
    /// Every run kept.
    pub(super) runs: Vec<TsoRun>,
    /// The switches measured.
    pub(super) switches: Vec<Switch>,
    /// Runs per switch, seconds of each window.
    pub(super) runs_per_cell: u32,
    pub(super) secs: f64,
    /// The switch's CPU with both ports attached and no traffic, first run of each.
    pub(super) idle: Vec<(String, f64)>,
    /// Why the scenario did not run.
    pub(super) error: Option<String>,
}

impl TsoReport {
    /// Judges every run against the best placement seen over the whole bench.
    pub(in crate::bench) fn check_placement(&mut self, best: f64) {
        check_placement_all(&mut self.runs, best);
    }

    /// The medians of `switch`'s runs, with Gbit/s as their `extra`.
    fn medians(&self, switch: &str) -> Option<Medians> {
        medians(&self.runs, |r| r.rec.switch == switch, |r| Some(r.gbits))
    }

    /// vnetd mode labels, or one empty label when only DPDK ran.
    fn vnetd_labels(&self) -> Vec<String> {
        vnetd_labels(
            self.switches
                .iter()
                .filter(|s| s.is_vnetd())
                .map(Switch::label)
                .collect(),
        )
    }

    /// How the frames of `switch` arrived (its first successful run).
    fn delivered(&self, switch: &str) -> Option<String> {
        let r = self
            .runs
            .iter()
            .find(|r| r.rec.switch == switch && r.mpps.is_some())?;
        let gso: u64 = r.gso.iter().sum();
        let frames: u64 = r.frames.iter().sum();
        Some(format!(
            "{} (GSO header on {gso} of {frames} frames in the window)",
            r.delivered[0]
        ))
    }

    /// The scenario's part of the printed report.
    pub(in crate::bench) fn render(&self) -> String {
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
        let mut header = table_header("frame", &["vnetd", "DPDK"], true);
        header.push("vnetd/DPDK".into());
        let gbits_of = |m: &Medians| m.extra.unwrap_or(0.0);
        let side = |m| side_cells(m, 4, Some(&gbits_of));
        let dpdk = self.medians("dpdk");
        let mut table: Vec<Vec<String>> = vec![header];
        for label in self.vnetd_labels() {
            let vnetd = (!label.is_empty()).then(|| self.medians(&label)).flatten();
            let mut cells = row_cells(
                "TSO VM-to-VM".into(),
                FRAME_BYTES.to_string(),
                &mode_of(&label),
                vec![side(vnetd), side(dpdk)],
            );
            cells.push(ratio_cell(vnetd, dpdk));
            table.push(cells);
        }
        out += &render_table(&table, |c| c == 0 || c == 2);
        let default = Switch::DpdkDefaultOl.label();
        if let Some(m) = self.medians(&default) {
            out += &format!(
                "\nDPDK with its default offload flags (net_vhost {DEFAULT_DEVARGS}): {} Mpps, \
                 {:.2} Gbit/s, CPU {:.0} %\n",
                rate_cell(m.mpps, 4, m.clean),
                m.extra.unwrap_or(0.0),
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
        let t = Tally::of(&self.runs);
        if let Some(busy) = t.busy_line(self.runs.len(), "TSO ") {
            out += &format!("{busy}\n");
        }
        out += &format!(
            "runs kept: {} with the vCPUs placed apart, {} changed rate within the window; {} \
             disturbed attempt(s) measured again\n",
            t.apart, t.unstable, t.repeated
        );
        if self
            .switches
            .iter()
            .filter_map(|s| self.medians(&s.label()))
            .any(|m| !m.clean)
        {
            out += "* no clean run: the median of disturbed runs\n";
        }
        let name = |r: &TsoRun| format!("{} run {}", r.rec.switch, r.rec.run);
        out += &failed_lines(&self.runs, "TSO ", name);
        out += &anomaly_lines(&self.runs, "TSO anomalies:", name);
        out
    }

    /// The scenario's part of the JSON report.
    pub(in crate::bench) fn json(&self) -> Value {
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
                    "vnetd": vnetd.map(|m| medians_json_of(&m)),
                    "dpdk": dpdk.map(|m| medians_json_of(&m)),
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
            "dpdk_default_ol_flags": self.medians(&Switch::DpdkDefaultOl.label()).map(|m| medians_json_of(&m)),
            "delivered": delivered,
            "idle_cpu_pct": idle,
            "runs": self.runs.iter().map(TsoRun::json).collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::virtio_features;
    use super::super::DirCounters;
    use super::*;

    #[test]
    fn labels_and_features() {
        assert_eq!(
            virtio_features(1 | 2 | 1 << 7 | 1 << 11 | 1 << 15),
            "0x8883 (CSUM GUEST_CSUM GUEST_TSO4 HOST_TSO4 MRG_RXBUF)"
        );
        let d = DirCounters::of(&json!({"frames": 3, "bytes": 9, "first": "x"}));
        assert_eq!(
            (d.n("frames"), d.n("bytes"), d.n("gso"), d.first()),
            (3, 9, 0, "x")
        );
    }

    #[test]
    fn medians_prefer_clean_runs() {
        let run = |switch: &str, mpps: f64, busy: bool| TsoRun {
            rec: Record {
                switch: switch.into(),
                busy,
                ..Record::default()
            },
            mpps: Some(mpps),
            gbits: mpps * 500.0,
            ..TsoRun::default()
        };
        let report = TsoReport {
            runs: vec![
                run("dpdk", 0.1, false),
                run("dpdk", 0.5, true),
                run("vnetd poll", 0.2, true),
            ],
            switches: vec![Switch::Vnetd(Some("poll".into())), Switch::Dpdk],
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
