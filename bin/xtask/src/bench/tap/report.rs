//! The TAP scenario's run records and its part of the report.

use serde_json::{json, Value};

use super::super::common::{
    anomaly_lines, check_placement_all, failed_lines, medians, medians_json, mode_of, ratio,
    ratio_cell, render_table, row_cells, run_json, run_record, side_cells, summary_tail,
    table_header, Medians, Record, Tally,
};
use super::super::runner::{table_rows, Switch};
use super::super::vm2vm::{gbits, MAC_A};
use super::super::WARMUP;
use super::{Dir, IfCounters, GUEST_IP, HOST_IP, IF_PREFIX, MAC_TAP};

/// The result of one run.
#[derive(Debug, Default)]
pub(super) struct TapRun {
    pub(super) dir: Dir,
    pub(super) size: u32,
    /// None when the run failed.
    pub(super) mpps: Option<f64>,
    pub(super) half_mpps: [f64; 2],
    /// Seconds of each window.
    pub(super) secs: f64,
    /// What was offered: the guest's TX-packets rate (guest to host), or what the sender
    /// put on the TAP, taken or dropped (host to guest).
    pub(super) offered_mpps: Option<f64>,
    /// The TAP's counters over the window.
    pub(super) tap: IfCounters,
    pub(super) switch_cpu: f64,
    /// The guest's testpmd and the host-side sender, both on the generator CPU.
    pub(super) guest_cpu: f64,
    pub(super) sender_cpu: f64,
    /// The bookkeeping every scenario's runs have.
    pub(super) rec: Record,
}

impl TapRun {
    /// CPU time of the switch per frame moved, ns: what a frame costs it, whatever the
    /// bottleneck was.
    fn ns_per_frame(&self) -> Option<f64> {
        let mpps = self.mpps?;
        (mpps > 0.0).then(|| self.switch_cpu / 100.0 / mpps * 1000.0)
    }

    fn summary(&self) -> String {
        let Some(mpps) = self.mpps else {
            return format!("failed: {}", self.rec.error.as_deref().unwrap_or("?"));
        };
        let mut s = format!(
            "{mpps:.3} Mpps (halves {:.3}, {:.3}), switch CPU {:.1} % ({}), guest {:.1} %, \
             sender {:.1} %, others {:.1} % over {:.2} s",
            self.half_mpps[0],
            self.half_mpps[1],
            self.switch_cpu,
            self.ns_per_frame()
                .map_or_else(|| "-".into(), |ns| format!("{ns:.0} ns/frame")),
            self.guest_cpu,
            self.sender_cpu,
            self.rec.foreign_cpu,
            self.secs
        );
        if let Some(offered) = self.offered_mpps {
            s += &format!("; offered {offered:.3} Mpps");
        }
        s + &summary_tail(self.rec.pingpong_ns, &self.rec.anomalies)
    }

    fn json(&self) -> Value {
        let own = json!({
            "direction": self.dir.label(),
            "size": self.size,
            "mpps": self.mpps,
            "gbits": self.mpps.map(|m| gbits(m, self.size)),
            "offered_mpps": self.offered_mpps,
            "half_window_mpps": self.half_mpps,
            "secs": self.secs,
            "tap_counters_in_window": {
                "rx_packets": self.tap.rx_packets,
                "rx_dropped": self.tap.rx_dropped,
                "tx_packets": self.tap.tx_packets,
                "tx_dropped": self.tap.tx_dropped,
            },
            "switch_cpu_pct": self.switch_cpu,
            "switch_cpu_ns_per_frame": self.ns_per_frame(),
            "guest_cpu_pct": self.guest_cpu,
            "sender_cpu_pct": self.sender_cpu,
        });
        run_json(self, own)
    }
}

run_record!(TapRun);

/// Everything the scenario measured.
#[derive(Debug)]
pub(in crate::bench) struct TapReport {
    /// Every run kept.
    pub(super) runs: Vec<TapRun>,
    /// The switches measured.
    pub(super) switches: Vec<Switch>,
    /// Frame sizes, and runs per cell and switch.
    pub(super) sizes: Vec<u32>,
    pub(super) runs_per_cell: u32,
    /// Seconds of each window.
    pub(super) secs: f64,
    /// The guest's virtio-user devargs.
    pub(super) devargs: String,
    /// The namespace of the TAPs.
    pub(super) netns: String,
    /// The scenario could not be set up (or stopped half way).
    pub(super) error: Option<String>,
}

impl TapReport {
    /// Judges every run against the best placement seen over the whole bench.
    pub(in crate::bench) fn check_placement(&mut self, best: f64) {
        check_placement_all(&mut self.runs, best);
    }

    fn medians(&self, dir: Dir, size: u32, switch: &str) -> Option<Medians> {
        medians(
            &self.runs,
            |r| r.dir == dir && r.size == size && r.rec.switch == switch,
            |r| r.offered_mpps,
        )
    }

    fn rows(&self) -> Vec<TapRow> {
        let cells: Vec<(Dir, u32)> = [Dir::ToHost, Dir::ToGuest]
            .iter()
            .flat_map(|&dir| self.sizes.iter().map(move |&size| (dir, size)))
            .collect();
        table_rows(&cells, &self.switches)
            .into_iter()
            .map(|((dir, size), label)| TapRow {
                dir,
                size,
                mode: mode_of(&label),
                vnetd: (!label.is_empty())
                    .then(|| self.medians(dir, size, &label))
                    .flatten(),
                dpdk: self.medians(dir, size, &Switch::Dpdk.label()),
                bare: self.medians(dir, size, &Switch::Bare.label()),
            })
            .collect()
    }

    /// The scenario's part of the printed report.
    pub(in crate::bench) fn render(&self) -> String {
        let mut out = String::new();
        out += &format!(
            "\nVM to host through a TAP port (namespace {}): guest = dpdk-testpmd, 1 \
             virtio-user port ({}), on the generator CPU\n",
            self.netns, self.devargs
        );
        out += "  guest->host: guest txonly -> switch -> TAP; rate = the TAP's kernel \
                rx_packets in the namespace\n";
        out += "  host->guest: AF_PACKET sender in the namespace (generator CPU, with the \
                guest) -> TAP -> switch -> guest rxonly; rate = the guest's RX-packets \
                (bare loop: the TAP's tx_packets)\n";
        out += &format!(
            "  medians of {} run(s) x {} s; DPDK = testpmd io net_vhost <-> net_tap; bare loop \
             = write()/read() on a TAP fd, nothing else; CPU % of the switch CPU's process; \
             target: vnetd >= DPDK and >= 0.95 x bare loop\n\n",
            self.runs_per_cell, self.secs
        );
        if let Some(err) = &self.error {
            out += &format!("  the scenario stopped: {err}\n");
        }
        let mut header = table_header("size", &["vnetd", "DPDK", "bare"], false);
        header.extend(["vnetd/DPDK", "vnetd/bare", "target"].map(String::from));
        let last = header.len() - 1;
        let mut table: Vec<Vec<String>> = vec![header];
        let ratio =
            |a: Option<Medians>, b: Option<Medians>| ratio(a.map(|m| m.mpps), b.map(|m| m.mpps));
        for row in self.rows() {
            let side = |m| side_cells(m, 3, None);
            let mut cells = row_cells(
                format!("TAP {}", row.dir.label()),
                row.size.to_string(),
                &row.mode,
                vec![side(row.vnetd), side(row.dpdk), side(row.bare)],
            );
            cells.push(ratio_cell(row.vnetd, row.dpdk));
            cells.push(ratio_cell(row.vnetd, row.bare));
            cells.push(target(
                ratio(row.vnetd, row.dpdk),
                ratio(row.vnetd, row.bare),
            ));
            table.push(cells);
        }
        out += &render_table(&table, |c| c == 0 || c == 2 || c == last);
        out += "\n";
        // Host to guest the sender, on the generator CPU with the guest, is usually the
        // limit: what it offered tells whether a switch kept up.
        for &size in &self.sizes {
            let mut offered = Vec::new();
            for switch in &self.switches {
                let label = switch.label();
                if let Some(o) = self
                    .medians(Dir::ToGuest, size, &label)
                    .and_then(|m| m.extra)
                {
                    offered.push(format!("{label} {o:.3}"));
                }
            }
            if !offered.is_empty() {
                out += &format!(
                    "host->guest {size} B, offered by the sender (frames onto the TAP, taken or \
                     dropped), Mpps: {}\n",
                    offered.join(", ")
                );
            }
        }
        let name = |r: &TapRun| {
            format!(
                "{} {} {} B run {}",
                r.dir.label(),
                r.rec.switch,
                r.size,
                r.rec.run
            )
        };
        out += &failed_lines(&self.runs, "TAP ", |r| format!("TAP {}", name(r)));
        let t = Tally::of(&self.runs);
        if let Some(busy) = t.busy_line(self.runs.len(), "TAP ") {
            out += &format!("{busy}\n");
        }
        out += &format!(
            "TAP runs kept: {} ({} with the vCPUs placed apart, {} changed rate within the \
             window); {} disturbed attempt(s) measured again\n",
            self.runs.len(),
            t.apart,
            t.unstable,
            t.repeated
        );
        let rows = self.rows();
        if rows
            .iter()
            .any(|r| [r.vnetd, r.dpdk, r.bare].iter().flatten().any(|m| !m.clean))
        {
            out += "* no clean run: the median of disturbed runs\n";
        }
        out += &anomaly_lines(&self.runs, "TAP anomalies:", name);
        out
    }

    pub(in crate::bench) fn json(&self) -> Value {
        let side = |m: Option<Medians>, size: u32| {
            m.map(|m| {
                let mut v = medians_json(m.mpps, gbits(m.mpps, size), m.cpu, m.runs, m.clean);
                v["cpu_ns_per_frame"] =
                    json!((m.mpps > 0.0).then(|| m.cpu / 100.0 / m.mpps * 1000.0));
                v["offered_mpps"] = json!(m.extra);
                v
            })
        };
        let ratio =
            |a: Option<Medians>, b: Option<Medians>| ratio(a.map(|m| m.mpps), b.map(|m| m.mpps));
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|row| {
                json!({
                    "scenario": format!("TAP {}", row.dir.label()),
                    "direction": row.dir.label(),
                    "size": row.size,
                    "vnetd_mode": row.mode,
                    "vnetd": side(row.vnetd, row.size),
                    "dpdk": side(row.dpdk, row.size),
                    "bare_loop": side(row.bare, row.size),
                    "vnetd_over_dpdk": ratio(row.vnetd, row.dpdk),
                    "vnetd_over_bare_loop": ratio(row.vnetd, row.bare),
                })
            })
            .collect();
        json!({
            "netns": self.netns,
            "method": {
                "guest": format!("dpdk-testpmd -i, 1 net_virtio_user port ({}), mac {MAC_A}, \
                                  ip {GUEST_IP}", self.devargs),
                "host": format!("TAP {IF_PREFIX}<n> in network namespace {}, {HOST_IP}/24, mac \
                                 {MAC_TAP}, IPv6 and ICMP errors off", self.netns),
                "guest_to_host": "guest txonly (--tx-ip=198.18.0.2,198.18.0.1, UDP 9->9, \
                                  eth-peer = TAP mac); rate = TAP rx_packets (kernel, in the \
                                  namespace, /proc/<pid>/net/dev)",
                "host_to_guest": "AF_PACKET sender bound to the TAP (PACKET_QDISC_BYPASS, \
                                  sendmmsg of 64) on the generator CPU; guest rxonly; rate = \
                                  guest RX-packets; bare loop: TAP tx_packets",
                "dpdk": "dpdk-testpmd in the namespace, net_vhost0 + net_tap0, \
                         --forward-mode=io, on the switch CPU",
                "bare_loop": "write() (guest->host) or read() (host->guest) on an \
                              IFF_TAP|IFF_NO_PI fd, one frame per syscall, on the switch \
                              CPU; host->guest: a spinner stands in for the guest on the \
                              generator CPU",
                "runs": self.runs_per_cell,
                "secs": self.secs,
                "sizes": self.sizes,
                "warmup_secs": WARMUP.as_secs_f64(),
            },
            "rows": rows,
            "runs": self.runs.iter().map(TapRun::json).collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}

/// The share of the bare loop's rate vnetd must reach (issue 13: TAP I/O in batches).
const BARE_TARGET: f64 = 0.95;

/// Whether a row meets the targets: vnetd at least DPDK, and at least [`BARE_TARGET`] of
/// the bare loop.
fn target(vs_dpdk: Option<f64>, vs_bare: Option<f64>) -> String {
    let mut missed = Vec::new();
    if vs_dpdk.is_some_and(|r| r < 1.0) {
        missed.push("< DPDK");
    }
    if vs_bare.is_some_and(|r| r < BARE_TARGET) {
        missed.push("< 0.95 bare");
    }
    match (vs_dpdk, vs_bare) {
        (None, None) => "-".into(),
        _ if missed.is_empty() => "met".into(),
        _ => missed.join(", "),
    }
}

#[derive(Debug)]
struct TapRow {
    dir: Dir,
    size: u32,
    mode: String,
    vnetd: Option<Medians>,
    dpdk: Option<Medians>,
    bare: Option<Medians>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target(Some(1.2), Some(0.95)), "met");
        assert_eq!(target(Some(0.8), Some(0.95)), "< DPDK");
        assert_eq!(target(Some(1.5), Some(0.5)), "< 0.95 bare");
        assert_eq!(target(Some(1.5), Some(0.93)), "< 0.95 bare");
        assert_eq!(target(None, None), "-");
    }
}
