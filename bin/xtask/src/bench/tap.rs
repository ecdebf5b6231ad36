//! The "VM to host through a TAP port" scenario of `cargo xtask bench`, both directions.
//!
//! The host is a network namespace the bench creates (`vnet-bench-<pid>`); each run gives
//! it a fresh TAP interface (`vnbtap<n>`, 198.18.0.1/24, MAC [`MAC_TAP`]). Three things
//! move frames between that TAP and the other CPU, one run each, interleaved:
//!
//! - vnetd, alone on the switch CPU, with a vhost-user port `a` and a TAP port `h`;
//! - the DPDK anchor: testpmd on the switch CPU forwarding `io` between a `net_vhost` port
//!   and a `net_tap` port (run inside the namespace, so that its TAP is created there);
//! - the bare loop: a helper process (this binary, `bench-helper`) on the switch CPU doing
//!   nothing but `write()` (guest to host) or `read()` (host to guest) on a plain TAP fd
//!   (`IFF_TAP | IFF_NO_PI`): the syscall-bound rate of one CPU on a TAP.
//!
//! Guest to host: the guest is testpmd with one `net_virtio_user` port in `txonly` mode on
//! the generator CPU, frames of `--txpkts` bytes, Ethernet/IPv4/UDP 198.18.0.2:9 ->
//! 198.18.0.1:9 addressed to the TAP's MAC. What reaches the host is the TAP interface's
//! kernel `rx_packets` counter in the namespace (read from `/proc/<pid>/net/dev` of a
//! process living there, the same counters as `/sys/class/net/<if>/statistics`). The kernel
//! counts a frame there when the writer injects it, before the stack drops it (no socket
//! listens on port 9, and ICMP errors are switched off in the namespace, so nothing comes
//! back). The bare loop writes the same frame itself.
//!
//! Host to guest: a sender process in the namespace, pinned to the generator CPU with the
//! guest's testpmd (`rxonly`), puts prebuilt frames 198.18.0.1:9 -> 198.18.0.2:9 onto the
//! TAP as fast as it can: an `AF_PACKET` socket bound to the TAP, `PACKET_QDISC_BYPASS`,
//! `sendmmsg` batches. Frames the reader does not take in time overflow the TAP's queue
//! (the interface's `tx_dropped`; its `txqueuelen` is raised to [`TAP_TXQUEUELEN`]). The
//! rate is the guest's `RX-packets` (vnetd, DPDK) or, for the bare loop, the TAP's
//! `tx_packets` (what the reader read). The sender and the polling guest share the
//! generator CPU, so the sender offers about what half a CPU can push through AF_PACKET,
//! and that, not the reader, is usually the limit: in the bare-loop run a spinning helper
//! takes the guest's place, so that the sender offers the same in all three, and the
//! switch's CPU % tells what the same rate costs each.
//!
//! Frames only ever go to 198.18.0.1 (the namespace's TAP) and 198.18.0.2 (the guest);
//! the helpers refuse to touch a network device unless they run inside a namespace named
//! `vnet-bench-*`. The namespace, and with it every TAP, goes when the bench ends (also
//! on errors); namespaces of bench processes that died are removed by the next bench.

use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::common::{
    self, anomaly_lines, check_placement_all, failed_lines, kill_netns, median, medians_json,
    mode_of, na, rate_cell, ratio, render_table, run_json, run_record, summary_tail,
    sweep_stale_netns, vnetd_label, vnetd_labels, RunRecord, Tally, Window,
};
use super::{
    gbits, parse_blocks, port_macs, proc_ticks, sleep, stale_owner, Args, Block, BlockKind, Ctx,
    Generator, Only, Proc, SystemTicks, TempDir, MAC_A, TAG, WARMUP,
};
use crate::util::{has_command, warn};

/// The MAC address of the host's TAP interface (vnetd's `--tap mac=`, net_tap's `mac=`).
const MAC_TAP: &str = "52:54:00:be:00:fe";
/// The host (the TAP in the namespace) and the guest (the generator's port, MAC [`MAC_A`]).
const HOST_IP: [u8; 4] = [198, 18, 0, 1];
const GUEST_IP: [u8; 4] = [198, 18, 0, 2];
/// UDP port of every frame, both ends (discard).
const UDP_PORT: u16 = 9;
/// testpmd's txonly addresses: from the guest to the host.
const TX_IP: &str = "--tx-ip=198.18.0.2,198.18.0.1";
/// TAP interfaces are `vnbtap<n>`; the helpers touch no other.
const IF_PREFIX: &str = "vnbtap";
/// The TAP's queue towards its reader (`txqueuelen`, the kernel's default for a TAP is
/// 500): room for what the host-side sender produces while the guest, which shares the
/// generator CPU with it, is not scheduled, so that the two taking turns on that CPU (in
/// slices of milliseconds) does not decide the host-to-guest rate.
const TAP_TXQUEUELEN: u32 = 10_000;
/// Frames per `sendmmsg` of the host-side sender.
const SEND_BATCH: usize = 64;
/// Frames the host sends before a guest-to-host run, so that the switch learns the TAP's
/// MAC (vnetd floods unknown destinations; a learned one is the usual case).
const PRIME_FRAMES: u32 = 4;

/// Direction of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Dir {
    /// The guest transmits, the host (the TAP) receives.
    #[default]
    ToHost,
    /// The host transmits on the TAP, the guest receives.
    ToGuest,
}

impl Dir {
    fn label(self) -> &'static str {
        match self {
            Dir::ToHost => "guest->host",
            Dir::ToGuest => "host->guest",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Dir::ToHost => "g2h",
            Dir::ToGuest => "h2g",
        }
    }
}

/// What moves frames between the TAP and the guest in one run.
#[derive(Debug, Clone, PartialEq)]
enum TapSwitch {
    /// vnetd, with `--datapath MODE` when it has the option.
    Vnetd(Option<String>),
    /// testpmd forwarding `io` between `net_vhost` and `net_tap`.
    Dpdk,
    /// A bare write() or read() loop on a TAP fd.
    Bare,
}

impl TapSwitch {
    fn label(&self) -> String {
        match self {
            TapSwitch::Vnetd(mode) => vnetd_label(mode.as_deref()),
            TapSwitch::Dpdk => "dpdk".into(),
            TapSwitch::Bare => "bare loop".into(),
        }
    }
}

/// Runs the scenario: every direction, size, run and switch, interleaved. Never fails: a
/// set-up error is reported in the result.
pub(super) fn run(ctx: &Ctx, args: &Args, modes: &[Option<String>]) -> TapReport {
    let switches: Vec<TapSwitch> = match args.only {
        Some(Only::Dpdk) => vec![TapSwitch::Dpdk, TapSwitch::Bare],
        Some(Only::Vnetd) => modes.iter().cloned().map(TapSwitch::Vnetd).collect(),
        None => modes
            .iter()
            .cloned()
            .map(TapSwitch::Vnetd)
            .chain([TapSwitch::Dpdk, TapSwitch::Bare])
            .collect(),
    };
    // One generator variant: the first `--devargs` (by default in_order=0, like Linux guests).
    let devargs = args
        .devargs
        .first()
        .cloned()
        .unwrap_or_else(|| "in_order=0".into());
    let mut report = TapReport {
        runs: Vec::new(),
        switches,
        sizes: args.sizes.clone(),
        runs_per_cell: args.runs,
        secs: args.secs,
        devargs,
        netns: String::new(),
        error: None,
    };
    if let Err(err) = report.measure(ctx, args) {
        warn(format!("TAP scenario: {err:#}"));
        report.error = Some(format!("{err:#}"));
    }
    report
}

/// The scenario's network namespace, with a process living in it (`cat`, which exits when
/// its stdin closes) whose `/proc/<pid>/net/dev` shows the namespace's counters. Dropping it
/// stops everything left in it and deletes it, and with it every TAP in it.
#[derive(Debug)]
struct Netns {
    name: String,
    holder: Option<Proc>,
}

impl Netns {
    fn create(logs: &Path) -> Result<Netns> {
        let name = format!("{TAG}{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name])?;
        let mut ns = Netns { name, holder: None };
        // Quiet: no IPv6 (router solicitations, DAD, MLD) and no ICMP errors (port
        // unreachable for the guest's UDP frames): nothing but the bench's frames moves.
        let mut sysctl = Command::new("sysctl");
        sysctl.args([
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.icmp_ratelimit=3600000",
            "net.ipv4.icmp_msgs_per_sec=0",
        ]);
        let out = ns
            .exec(&sysctl)
            .output()
            .context("cannot run sysctl in the namespace")?;
        if !out.status.success() {
            bail!(
                "sysctl in namespace {} failed: {}",
                ns.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let holder = Proc::spawn(
            "namespace holder",
            ns.exec(&Command::new("cat")),
            &logs.join("netns-holder.log"),
            None,
        )?;
        let pid = holder.pid();
        ns.holder = Some(holder);
        // `ip netns exec` has entered the namespace once the process has its network.
        let want = fs::metadata(format!("/run/netns/{}", ns.name))
            .with_context(|| format!("no /run/netns/{}", ns.name))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = fs::metadata(format!("/proc/{pid}/ns/net"));
            if now.is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev()) {
                break;
            }
            if let Some(h) = ns.holder.as_mut() {
                h.check_alive()?;
            }
            if Instant::now() > deadline {
                bail!("the namespace holder did not enter {}", ns.name);
            }
            sleep(Duration::from_millis(10));
        }
        Ok(ns)
    }

    /// `cmd` run inside the namespace (`ip netns exec NS ...`, which execs it: same pid).
    fn exec(&self, cmd: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => c.env(key, v),
                None => c.env_remove(key),
            };
        }
        c
    }

    /// The counters of `ifname` in the namespace, now.
    fn counters(&self, ifname: &str) -> Result<IfCounters> {
        let pid = self.holder.as_ref().context("no namespace holder")?.pid();
        let text = fs::read_to_string(format!("/proc/{pid}/net/dev"))
            .with_context(|| format!("cannot read /proc/{pid}/net/dev"))?;
        parse_net_dev(&text, ifname)
            .with_context(|| format!("no interface {ifname} in namespace {}", self.name))
    }

    /// Waits until `ifname` exists in the namespace, while `owner` (which creates it) lives.
    fn wait_link(&self, ifname: &str, owner: &mut Proc) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.counters(ifname).is_err() {
            owner.check_alive()?;
            if Instant::now() > deadline {
                bail!("{ifname} did not appear in namespace {}", self.name);
            }
            sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The host side of the TAP: our MAC, up, 198.18.0.1/24.
    fn configure(&self, ifname: &str) -> Result<()> {
        let ns = self.name.as_str();
        let qlen = TAP_TXQUEUELEN.to_string();
        ip(&[
            "-n",
            ns,
            "link",
            "set",
            "dev",
            ifname,
            "address",
            MAC_TAP,
            "txqueuelen",
            &qlen,
            "up",
        ])?;
        let addr = format!("{}/24", ipv4(HOST_IP));
        ip(&["-n", ns, "addr", "add", &addr, "dev", ifname])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.holder.take());
        kill_netns(&self.name);
    }
}

/// `ip ARGS`, failing with its message.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ipv4(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// An interface's counters (`/proc/net/dev`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct IfCounters {
    rx_packets: u64,
    rx_dropped: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

impl IfCounters {
    fn since(&self, earlier: &IfCounters) -> IfCounters {
        IfCounters {
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(earlier.rx_dropped),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            tx_dropped: self.tx_dropped.saturating_sub(earlier.tx_dropped),
        }
    }
}

/// `ifname`'s line of `/proc/net/dev`: `name: rx_bytes rx_packets rx_errs rx_drop ... |
/// tx_bytes tx_packets tx_errs tx_drop ...`.
fn parse_net_dev(text: &str, ifname: &str) -> Option<IfCounters> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        (v.len() >= 12).then(|| IfCounters {
            rx_packets: v[1],
            rx_dropped: v[3],
            tx_packets: v[9],
            tx_dropped: v[11],
        })
    })
}

/// Counters and CPU times at one instant.
#[derive(Debug)]
struct Snap {
    at: Instant,
    tap: IfCounters,
    /// The guest's port statistics, when there is a guest.
    guest: Option<Block>,
    switch_ticks: u64,
    /// The guest's testpmd (or its stand-in, the spinner).
    guest_ticks: u64,
    /// The host-side sender.
    sender_ticks: u64,
    system: SystemTicks,
}

/// The result of one run.
#[derive(Debug, Default)]
struct TapRun {
    dir: Dir,
    size: u32,
    switch: String,
    run: u32,
    attempts: u32,
    /// None when the run failed.
    mpps: Option<f64>,
    half_mpps: [f64; 2],
    secs: f64,
    /// What was offered: the guest's TX-packets rate (guest to host), or what the sender
    /// put on the TAP, taken or dropped (host to guest).
    offered_mpps: Option<f64>,
    /// The TAP's counters over the window.
    tap: IfCounters,
    switch_cpu: f64,
    /// The guest's testpmd and the host-side sender, both on the generator CPU.
    guest_cpu: f64,
    sender_cpu: f64,
    foreign_cpu: f64,
    steal_cpu: f64,
    pingpong_ns: [Option<f64>; 2],
    placed_apart: bool,
    unstable: bool,
    busy: bool,
    /// Frames the DPDK anchor dropped over the whole run.
    anchor_drops: Option<u64>,
    features: String,
    anomalies: Vec<String>,
    error: Option<String>,
}

impl TapRun {
    fn failed(error: String) -> TapRun {
        TapRun {
            error: Some(error),
            ..TapRun::default()
        }
    }

    /// CPU time of the switch per frame moved, ns: what a frame costs it, whatever the
    /// bottleneck was.
    fn ns_per_frame(&self) -> Option<f64> {
        let mpps = self.mpps?;
        (mpps > 0.0).then(|| self.switch_cpu / 100.0 / mpps * 1000.0)
    }

    fn summary(&self) -> String {
        let Some(mpps) = self.mpps else {
            return format!("failed: {}", self.error.as_deref().unwrap_or("?"));
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
            self.foreign_cpu,
            self.secs
        );
        if let Some(offered) = self.offered_mpps {
            s += &format!("; offered {offered:.3} Mpps");
        }
        s + &summary_tail(self.pingpong_ns, &self.anomalies)
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
pub(super) struct TapReport {
    runs: Vec<TapRun>,
    switches: Vec<TapSwitch>,
    sizes: Vec<u32>,
    runs_per_cell: u32,
    secs: f64,
    devargs: String,
    netns: String,
    /// The scenario could not be set up (or stopped half way).
    error: Option<String>,
}

/// What one run has running.
struct Running<'a> {
    ctx: &'a Ctx,
    ns: &'a Netns,
    dir: Dir,
    switch: &'a TapSwitch,
    ifname: String,
}

impl TapReport {
    fn measure(&mut self, ctx: &Ctx, args: &Args) -> Result<()> {
        for prog in ["ip", "sysctl", "cat"] {
            if !has_command(prog) {
                bail!("`{prog}` is not on PATH (iproute2, procps, coreutils)");
            }
        }
        if !Path::new("/dev/net/tun").exists() {
            bail!("/dev/net/tun is missing");
        }
        sweep_stale_netns(|_| true);
        let ns = Netns::create(&ctx.logs)?;
        self.netns = ns.name.clone();
        eprintln!(
            "bench: VM to host through a TAP port in namespace {}, devargs {}",
            ns.name, self.devargs
        );
        for dir in [Dir::ToHost, Dir::ToGuest] {
            for &size in &self.sizes.clone() {
                for run_no in 1..=args.runs {
                    for switch in &self.switches.clone() {
                        let result = self.attempt(ctx, args, &ns, dir, switch, size, run_no);
                        self.runs.push(result);
                    }
                }
            }
        }
        Ok(())
    }

    /// One run, once the machine is idle, and again if something disturbed it.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        ctx: &Ctx,
        args: &Args,
        ns: &Netns,
        dir: Dir,
        switch: &TapSwitch,
        size: u32,
        run_no: u32,
    ) -> TapRun {
        let label = switch.label();
        let what = format!("TAP {} {label}, {size} bytes", dir.label());
        common::attempt(ctx, args, &what, &label, run_no, || {
            let running = Running {
                ctx,
                ns,
                dir,
                switch,
                ifname: format!("{IF_PREFIX}{}", ctx.seq.get() + 1),
            };
            let mut result = running
                .run(size, &self.devargs)
                .unwrap_or_else(|err| TapRun::failed(format!("{err:#}")));
            result.dir = dir;
            result.size = size;
            result
        })
    }

    /// Judges every run against the best placement seen over the whole bench.
    pub(super) fn check_placement(&mut self, best: f64) {
        check_placement_all(&mut self.runs, best);
    }

    fn medians(&self, dir: Dir, size: u32, switch: &str) -> Option<TapMedians> {
        let ok: Vec<&TapRun> = self
            .runs
            .iter()
            .filter(|r| r.dir == dir && r.size == size && r.switch == switch && r.mpps.is_some())
            .collect();
        let (used, all_clean) = common::clean_or_all(ok)?;
        let offered: Vec<f64> = used.iter().filter_map(|r| r.offered_mpps).collect();
        Some(TapMedians {
            mpps: median(used.iter().filter_map(|r| r.mpps).collect()),
            cpu: median(used.iter().map(|r| r.switch_cpu).collect()),
            offered: (!offered.is_empty()).then(|| median(offered)),
            runs: used.len(),
            clean: all_clean,
        })
    }

    fn rows(&self) -> Vec<TapRow> {
        let labels = vnetd_labels(
            self.switches
                .iter()
                .filter(|s| matches!(s, TapSwitch::Vnetd(_)))
                .map(TapSwitch::label)
                .collect(),
        );
        let mut rows = Vec::new();
        for dir in [Dir::ToHost, Dir::ToGuest] {
            for &size in &self.sizes {
                let dpdk = self.medians(dir, size, "dpdk");
                let bare = self.medians(dir, size, "bare loop");
                for label in &labels {
                    rows.push(TapRow {
                        dir,
                        size,
                        mode: mode_of(label),
                        vnetd: (!label.is_empty())
                            .then(|| self.medians(dir, size, label))
                            .flatten(),
                        dpdk,
                        bare,
                    });
                }
            }
        }
        rows
    }

    /// The scenario's part of the printed report.
    pub(super) fn render(&self) -> String {
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
             target: vnetd >= DPDK and >= 0.90 x bare loop\n\n",
            self.runs_per_cell, self.secs
        );
        if let Some(err) = &self.error {
            out += &format!("  the scenario stopped: {err}\n");
        }
        let header = [
            "scenario",
            "size",
            "vnetd mode",
            "vnetd Mpps",
            "vnetd CPU %",
            "DPDK Mpps",
            "DPDK CPU %",
            "bare Mpps",
            "bare CPU %",
            "vnetd/DPDK",
            "vnetd/bare",
            "target",
        ];
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        let cells = |m: Option<TapMedians>| match m {
            Some(m) => (rate_cell(m.mpps, 3, m.clean), format!("{:.0}", m.cpu)),
            None => (na(), na()),
        };
        let ratio = |a: Option<TapMedians>, b: Option<TapMedians>| {
            ratio(a.map(|m| m.mpps), b.map(|m| m.mpps))
        };
        for row in self.rows() {
            let (vm, vc) = cells(row.vnetd);
            let (dm, dc) = cells(row.dpdk);
            let (bm, bc) = cells(row.bare);
            let vs_dpdk = ratio(row.vnetd, row.dpdk);
            let vs_bare = ratio(row.vnetd, row.bare);
            let show = |r: Option<f64>| r.map_or_else(na, |r| format!("{r:.2}"));
            table.push(vec![
                format!("TAP {}", row.dir.label()),
                row.size.to_string(),
                if row.mode.is_empty() {
                    na()
                } else {
                    row.mode.clone()
                },
                vm,
                vc,
                dm,
                dc,
                bm,
                bc,
                show(vs_dpdk),
                show(vs_bare),
                target(vs_dpdk, vs_bare),
            ]);
        }
        let last = header.len() - 1;
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
                    .and_then(|m| m.offered)
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
        let name =
            |r: &TapRun| format!("{} {} {} B run {}", r.dir.label(), r.switch, r.size, r.run);
        out += &failed_lines(&self.runs, "TAP ", |r| format!("TAP {}", name(r)));
        let Tally {
            busy,
            apart,
            unstable,
            repeated,
        } = Tally::of(&self.runs);
        if busy > 0 {
            out += &format!(
                "MACHINE BUSY: {busy} of {} TAP run(s) shared the CPUs with other work\n",
                self.runs.len()
            );
        }
        out += &format!(
            "TAP runs kept: {} ({apart} with the vCPUs placed apart, {unstable} changed rate \
             within the window); {repeated} disturbed attempt(s) measured again\n",
            self.runs.len()
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

    pub(super) fn json(&self) -> Value {
        let side = |m: Option<TapMedians>, size: u32| {
            m.map(|m| {
                let mut v = medians_json(m.mpps, gbits(m.mpps, size), m.cpu, m.runs, m.clean);
                v["cpu_ns_per_frame"] =
                    json!((m.mpps > 0.0).then(|| m.cpu / 100.0 / m.mpps * 1000.0));
                v["offered_mpps"] = json!(m.offered);
                v
            })
        };
        let ratio = |a: Option<TapMedians>, b: Option<TapMedians>| {
            ratio(a.map(|m| m.mpps), b.map(|m| m.mpps))
        };
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
                                  ip {}", self.devargs, ipv4(GUEST_IP)),
                "host": format!("TAP {IF_PREFIX}<n> in network namespace {}, {}/24, mac \
                                 {MAC_TAP}, IPv6 and ICMP errors off", self.netns,
                                 ipv4(HOST_IP)),
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

/// Whether a row meets the targets: vnetd at least DPDK, and at least 90 % of the bare loop.
fn target(vs_dpdk: Option<f64>, vs_bare: Option<f64>) -> String {
    let mut missed = Vec::new();
    if vs_dpdk.is_some_and(|r| r < 1.0) {
        missed.push("< DPDK");
    }
    if vs_bare.is_some_and(|r| r < 0.9) {
        missed.push("< 0.9 bare");
    }
    match (vs_dpdk, vs_bare) {
        (None, None) => "-".into(),
        _ if missed.is_empty() => "met".into(),
        _ => missed.join(", "),
    }
}

#[derive(Debug, Clone, Copy)]
struct TapMedians {
    mpps: f64,
    cpu: f64,
    /// What the sender offered (host to guest) or the guest sent (guest to host).
    offered: Option<f64>,
    runs: usize,
    clean: bool,
}

#[derive(Debug)]
struct TapRow {
    dir: Dir,
    size: u32,
    mode: String,
    vnetd: Option<TapMedians>,
    dpdk: Option<TapMedians>,
    bare: Option<TapMedians>,
}

impl Running<'_> {
    /// One run; every process it starts is stopped when it returns, also on errors.
    fn run(&self, size: u32, devargs: &str) -> Result<TapRun> {
        let ctx = self.ctx;
        let label = self.switch.label();
        let name = ctx.next(&format!("tap-{}-{label}", self.dir.key()));
        let tmp = TempDir::create(ctx.sock_dir.0.join(&name))?;
        let (sock, ctl) = (tmp.0.join("a.sock"), tmp.0.join("ctl.sock"));
        let log = ctx.logs.join(format!("{name}.log"));

        let mut switch = self.start_switch(&name, &sock, &ctl, &log, size)?;
        self.ns.wait_link(&self.ifname, &mut switch)?;
        self.ns.configure(&self.ifname)?;
        let mut guest = match self.switch {
            TapSwitch::Bare => None,
            _ => Some(self.start_guest(&format!("{name}-guest"), &sock, size, devargs)?),
        };
        let mut result = TapRun::default();
        if let TapSwitch::Vnetd(_) = self.switch {
            result.features = ctx.wait_ports_up(&ctl, &mut switch, ["a", "h"])?;
        }

        // The generator CPU's helpers: the host-side sender, the guest's stand-in.
        let mut sender: Option<Proc> = None;
        let mut spinner: Option<Proc> = None;
        match self.dir {
            Dir::ToHost => {
                if let Some(guest) = guest.as_mut() {
                    self.prime(&name)?;
                    guest.send_wait("start")?;
                } else {
                    switch.send("go")?;
                }
            }
            Dir::ToGuest => {
                if let Some(guest) = guest.as_mut() {
                    // One burst from the guest: the switch learns its MAC.
                    guest.send_wait("start tx_first 1")?;
                } else {
                    // The polling guest's stand-in: the sender gets the same share of the
                    // generator CPU as with a guest.
                    let cmd = helper_command(ctx.cpu_gen, "spin", "", size, &[])?;
                    let log = ctx.logs.join(format!("{name}-spinner.log"));
                    spinner = Some(Proc::spawn("spinner", cmd, &log, None)?);
                }
                let cmd = self.ns.exec(&helper_command(
                    ctx.cpu_gen,
                    "send",
                    &self.ifname,
                    size,
                    &[],
                )?);
                let log = ctx.logs.join(format!("{name}-sender.log"));
                let mut p = Proc::spawn("sender", cmd, &log, None)?;
                p.wait_output(0, Duration::from_secs(20), "the sender's ready line", |o| {
                    o.contains("ready")
                })?;
                sender = Some(p);
            }
        }

        let mut ours: Vec<u32> = vec![switch.pid()];
        ours.extend(guest.as_ref().map(|g| g.proc.pid()));
        ours.extend(sender.iter().chain(&spinner).map(Proc::pid));
        let vnetd_ctl = matches!(self.switch, TapSwitch::Vnetd(_)).then_some(ctl.as_path());
        let window = Window::measure(
            ctx,
            vnetd_ctl,
            &ours,
            || self.snapshot(&switch, guest.as_mut(), [&sender, &spinner]),
            |s| s.at,
        )?;
        for p in sender.iter_mut().chain(&mut spinner) {
            p.check_alive()?;
        }
        drop(sender);
        drop(spinner);

        if let Some(mut guest) = guest {
            guest.send_wait("stop")?;
            guest.quit()?;
        }
        match self.switch {
            TapSwitch::Vnetd(_) => {
                result.anomalies.extend(switch.stop_vnetd(&log)?);
            }
            TapSwitch::Dpdk => {
                let (dropped, anomalies) = switch.stop_anchor()?;
                result.anomalies.extend(anomalies);
                result.anchor_drops = Some(dropped);
            }
            TapSwitch::Bare => {
                switch.check_alive()?;
            }
        }
        drop(switch);

        self.fill(&mut result, &window);
        Ok(result)
    }

    /// Starts what moves the frames: vnetd, the DPDK anchor or the bare loop.
    fn start_switch(
        &self,
        name: &str,
        sock: &Path,
        ctl: &Path,
        log: &Path,
        size: u32,
    ) -> Result<Proc> {
        let ctx = self.ctx;
        match self.switch {
            TapSwitch::Vnetd(mode) => {
                let cmd = self.vnetd_command(sock, ctl, mode.as_deref());
                let mut vnetd = Proc::spawn("vnetd", cmd, log, None)?;
                vnetd.wait_sockets(&[sock, ctl], log)?;
                Ok(vnetd)
            }
            TapSwitch::Dpdk => {
                let prefix = format!("{TAG}{}-{name}", std::process::id());
                let vdevs = [
                    format!("net_vhost0,iface={},queues=1", sock.display()),
                    format!("net_tap0,iface={},mac={MAC_TAP}", self.ifname),
                ];
                // All its threads on the switch CPU: net_tap signals (SIGIO) every frame it
                // queues, and DPDK's control threads would otherwise run on the other CPU.
                let testpmd = ctx.testpmd_command(
                    ctx.cpu_switch,
                    &prefix,
                    &vdevs,
                    &["--forward-mode=io", "--port-topology=paired"],
                );
                let mut pinned = Command::new("taskset");
                pinned
                    .arg("-c")
                    .arg(ctx.cpu_switch.to_string())
                    .arg(testpmd.get_program())
                    .args(testpmd.get_args());
                let cmd = self.ns.exec(&pinned);
                let mut anchor = Proc::spawn("anchor testpmd", cmd, log, Some(prefix))?;
                anchor.wait_forwarding()?;
                if !sock.exists() {
                    bail!(
                        "the anchor created no vhost-user socket; see {}",
                        log.display()
                    );
                }
                Ok(anchor)
            }
            TapSwitch::Bare => {
                let job = match self.dir {
                    Dir::ToHost => "tap-write",
                    Dir::ToGuest => "tap-read",
                };
                let cmd = self.ns.exec(&helper_command(
                    ctx.cpu_switch,
                    job,
                    &self.ifname,
                    size,
                    &[],
                )?);
                let mut bare = Proc::spawn("bare loop", cmd, log, None)?;
                bare.wait_output(
                    0,
                    Duration::from_secs(20),
                    "the bare loop's ready line",
                    |o| o.contains("ready"),
                )?;
                Ok(bare)
            }
        }
    }

    /// The vnetd command line of a TAP run: vhost-user port `a` (the guest) and TAP port
    /// `h` in the bench's namespace, pinned to the switch CPU. The one place that says how
    /// vnetd runs in this scenario.
    fn vnetd_command(&self, sock: &Path, ctl: &Path, mode: Option<&str>) -> Command {
        let ctx = self.ctx;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(ctx.cpu_switch.to_string())
            .arg(&ctx.vnetd)
            .arg("--control")
            .arg(ctl)
            .arg("--vhost-user")
            .arg(format!("name=a,socket={},mac={MAC_A}", sock.display()))
            .arg("--tap")
            .arg(format!(
                "name=h,ifname={},netns={},mac={MAC_TAP}",
                self.ifname, self.ns.name
            ));
        if let Some(mode) = mode {
            cmd.args(["--datapath", mode]);
        }
        cmd.env("VNET_LOG", "info");
        cmd
    }

    /// The guest: testpmd with one virtio-user port on the generator CPU, txonly (guest to
    /// host) or rxonly (host to guest), waiting at its prompt.
    fn start_guest(&self, name: &str, sock: &Path, size: u32, devargs: &str) -> Result<Generator> {
        let ctx = self.ctx;
        let prefix = format!("{TAG}{}-{name}", std::process::id());
        let mut spec = format!(
            "net_virtio_user0,path={},queues=1,mac={MAC_A}",
            sock.display()
        );
        if devargs != "default" && !devargs.is_empty() {
            spec.push(',');
            spec.push_str(devargs);
        }
        let mode = match self.dir {
            Dir::ToHost => "--forward-mode=txonly",
            Dir::ToGuest => "--forward-mode=rxonly",
        };
        let peer = format!("--eth-peer=0,{MAC_TAP}");
        let txpkts = format!("--txpkts={size}");
        let cmd = ctx.testpmd_command(
            ctx.cpu_gen,
            &prefix,
            &[spec],
            &["-i", mode, "--port-topology=loop", &peer, &txpkts, TX_IP],
        );
        let log = ctx.logs.join(format!("{name}.log"));
        let proc = Proc::spawn(name, cmd, &log, Some(prefix))?;
        let mut guest = Generator { proc };
        guest
            .proc
            .wait_output(0, Duration::from_secs(60), "the testpmd prompt", |out| {
                out.contains("testpmd> ")
            })?;
        let ports = port_macs(&guest.proc.output());
        if ports.len() != 1 {
            bail!(
                "the guest has {} port(s), not 1 (see {})",
                ports.len(),
                log.display()
            );
        }
        Ok(guest)
    }

    /// A few frames from the host to the guest before guest-to-host traffic, so that the
    /// switch knows where the TAP's MAC is.
    fn prime(&self, name: &str) -> Result<()> {
        let count = PRIME_FRAMES.to_string();
        let cmd = self.ns.exec(&helper_command(
            self.ctx.cpu_gen,
            "send",
            &self.ifname,
            64,
            &["--count", &count],
        )?);
        let log = self.ctx.logs.join(format!("{name}-prime.log"));
        let mut p = Proc::spawn("primer", cmd, &log, None)?;
        let status = p.wait_exit(Duration::from_secs(20))?;
        if !status.success() {
            bail!(
                "sending {count} frames from the host failed ({status}); see {}",
                log.display()
            );
        }
        sleep(Duration::from_millis(50));
        Ok(())
    }

    fn snapshot(
        &self,
        switch: &Proc,
        guest: Option<&mut Generator>,
        [sender, spinner]: [&Option<Proc>; 2],
    ) -> Result<Snap> {
        let at = Instant::now();
        let tap = self.ns.counters(&self.ifname)?;
        let switch_ticks = proc_ticks(switch.pid())?;
        let ticks = |p: Option<&Proc>| p.map_or(Ok(0), |p| proc_ticks(p.pid()));
        let sender_ticks = ticks(sender.as_ref())?;
        // The spinner stands in for the guest.
        let guest_ticks = ticks(guest.as_ref().map(|g| &g.proc))? + ticks(spinner.as_ref())?;
        let system = SystemTicks::read()?;
        let guest = guest.map(guest_stats).transpose()?;
        Ok(Snap {
            at,
            tap,
            guest,
            switch_ticks,
            guest_ticks,
            sender_ticks,
            system,
        })
    }

    /// The frames counted at the receiving end.
    fn count(&self, s: &Snap) -> u64 {
        let guest = |key| s.guest.as_ref().map_or(0, |b| b.get(key));
        match (self.dir, self.switch) {
            (Dir::ToHost, _) => s.tap.rx_packets,
            (Dir::ToGuest, TapSwitch::Bare) => s.tap.tx_packets,
            (Dir::ToGuest, _) => guest("RX-packets"),
        }
    }

    /// Computes the figures of a window and notes anything odd in it.
    fn fill(&self, r: &mut TapRun, w: &Window<Snap>) {
        let ctx = self.ctx;
        let (first, mid, last) = (&w.first, &w.mid, &w.last);
        let wall = last.at - first.at;
        r.secs = wall.as_secs_f64();
        let total = self.count(last).saturating_sub(self.count(first));
        let mpps = total as f64 / r.secs / 1e6;
        r.mpps = Some(mpps);
        let rate = |a: &Snap, b: &Snap| {
            self.count(b).saturating_sub(self.count(a)) as f64 / (b.at - a.at).as_secs_f64() / 1e6
        };
        r.half_mpps = [rate(first, mid), rate(mid, last)];
        let halves = r.half_mpps;
        r.marks().check_halves(halves, 3);
        r.tap = last.tap.since(&first.tap);
        let guest_delta = |key: &str| {
            let get = |s: &Snap| s.guest.as_ref().map_or(0, |b| b.get(key));
            get(last).saturating_sub(get(first))
        };
        r.offered_mpps = match (self.dir, self.switch) {
            (Dir::ToHost, TapSwitch::Bare) => None,
            (Dir::ToHost, _) => Some(guest_delta("TX-packets") as f64 / r.secs / 1e6),
            (Dir::ToGuest, _) => Some((r.tap.tx_packets + r.tap.tx_dropped) as f64 / r.secs / 1e6),
        };
        let switch_ticks = last.switch_ticks.saturating_sub(first.switch_ticks);
        let guest_ticks = last.guest_ticks.saturating_sub(first.guest_ticks);
        let sender_ticks = last.sender_ticks.saturating_sub(first.sender_ticks);
        let side_ticks = guest_ticks + sender_ticks;
        r.switch_cpu = ctx.percent(switch_ticks, wall);
        r.guest_cpu = ctx.percent(guest_ticks, wall);
        r.sender_cpu = ctx.percent(sender_ticks, wall);
        let busy_ticks = last.system.busy.saturating_sub(first.system.busy);
        r.foreign_cpu = ctx.percent(busy_ticks.saturating_sub(switch_ticks + side_ticks), wall);
        r.steal_cpu = ctx.percent(last.system.steal.saturating_sub(first.system.steal), wall);

        if total == 0 {
            r.anomalies.push("no frames arrived".into());
        }
        if r.tap.rx_dropped > 0 {
            r.anomalies.push(format!(
                "the TAP's rx_dropped +{} in the window",
                r.tap.rx_dropped
            ));
        }
        if self.dir == Dir::ToGuest {
            for key in ["RX-missed", "RX-errors", "RX-nombuf"] {
                let n = guest_delta(key);
                if n > 0 {
                    r.anomalies
                        .push(format!("guest port {key} +{n} in the window"));
                }
            }
            // What the switch read from the TAP and did not deliver.
            if self.switch != &TapSwitch::Bare {
                let lost = r.tap.tx_packets.saturating_sub(total);
                if lost as f64 > 0.01 * r.tap.tx_packets as f64 {
                    r.anomalies.push(format!(
                        "{lost} of the {} frames read from the TAP did not reach the guest",
                        r.tap.tx_packets
                    ));
                }
            }
        }
        r.marks().note_vnetd_drops(&w.vnetd_drops);
        let (foreign, steal) = (r.foreign_cpu, r.steal_cpu);
        r.marks().note_load(&w.busy, foreign, steal);
    }
}

/// The guest's port 0 statistics, now.
fn guest_stats(guest: &mut Generator) -> Result<Block> {
    let from = guest.proc.output().len();
    guest.proc.send("show port stats 0")?;
    let out = guest
        .proc
        .wait_output(from, Duration::from_secs(20), "port statistics", |out| {
            out.contains("testpmd> ")
        })?;
    parse_blocks(&out)
        .into_iter()
        .find(|b| b.kind == BlockKind::Nic && b.port == 0)
        .with_context(|| format!("no statistics for port 0 in the guest's answer:\n{out}"))
}

/// This program, for the helper processes (bare loops, the host-side sender): a hard link
/// to it taken once, so a `cargo build` that replaces `target/debug/xtask` while the bench
/// runs does not take the helpers' executable away.
fn helper_exe() -> Result<PathBuf> {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(p) = EXE.get() {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Links of earlier benches (their programs may be replaced since) are not needed.
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(".xtask-bench-helper-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    let link = dir.join(format!(".xtask-bench-helper-{}", std::process::id()));
    let chosen = if fs::hard_link(&exe, &link).is_ok() {
        link
    } else {
        exe
    };
    Ok(EXE.get_or_init(|| chosen).clone())
}

/// A helper process (this program's `bench-helper JOB`) pinned to `cpu`.
fn helper_command(
    cpu: usize,
    job: &str,
    ifname: &str,
    size: u32,
    extra: &[&str],
) -> Result<Command> {
    let exe = helper_exe()?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(exe).args([
        "bench-helper",
        job,
        "--size",
        &size.to_string(),
    ]);
    if !ifname.is_empty() {
        cmd.args(["--ifname", ifname]);
    }
    cmd.args(extra);
    Ok(cmd)
}

/// Options of the hidden `cargo xtask bench-helper`: the bench's own traffic helpers.
#[derive(Debug, clap::Args)]
pub struct HelperArgs {
    /// What to do.
    #[arg(value_enum)]
    job: Job,
    /// The TAP interface, in the bench's namespace (`vnbtap<n>`).
    #[arg(long, default_value = "")]
    ifname: String,
    /// Frame size in bytes, without FCS.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(60..=1514))]
    size: u32,
    /// `send`: this many frames, then exit (0: until stdin closes).
    #[arg(long, default_value_t = 0)]
    count: u32,
}

/// A helper's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Job {
    /// Open the TAP, say `ready`, wait for `go` on stdin, then write() frames to the host
    /// in a loop.
    TapWrite,
    /// Open the TAP, say `ready`, then read() frames in a loop.
    TapRead,
    /// Send frames to the guest on the TAP through an AF_PACKET socket, in a loop.
    Send,
    /// Spin: the CPU a polling guest takes.
    Spin,
}

/// Runs a helper until its stdin closes (the bench drops it) or, for `send --count`, the
/// frames are out.
pub fn helper(args: &HelperArgs) -> Result<()> {
    let go = Arc::new(AtomicBool::new(false));
    {
        let go = go.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "go" => go.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            std::process::exit(0);
        });
    }
    if args.job == Job::Spin {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    // Network jobs only on our interfaces, only inside a namespace of the bench.
    if !args.ifname.starts_with(IF_PREFIX) {
        bail!("refusing interface {:?}: not a bench TAP", args.ifname);
    }
    let ns = bench_netns()?;
    let size = usize::try_from(args.size)?;
    let mac_tap = parse_mac(MAC_TAP)?;
    let mac_guest = parse_mac(MAC_A)?;
    let ready = || -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready ({} in {ns})", args.ifname)?;
        out.flush()?;
        Ok(())
    };
    match args.job {
        Job::TapWrite => {
            let mut tap = sys::open_tap(&args.ifname)
                .with_context(|| format!("cannot open TAP {}", args.ifname))?;
            ready()?;
            while !go.load(Ordering::Acquire) {
                sleep(Duration::from_millis(1));
            }
            let frame = udp_frame(size, mac_tap, mac_guest, GUEST_IP, HOST_IP);
            loop {
                tap.write_all(&frame).context("write to the TAP")?;
            }
        }
        Job::TapRead => {
            let mut tap = sys::open_tap(&args.ifname)
                .with_context(|| format!("cannot open TAP {}", args.ifname))?;
            ready()?;
            let mut buf = vec![0u8; 65536];
            loop {
                tap.read(&mut buf).context("read from the TAP")?;
            }
        }
        Job::Send => {
            let sock = sys::PacketSocket::bind(&args.ifname)
                .with_context(|| format!("cannot open an AF_PACKET socket on {}", args.ifname))?;
            let frame = udp_frame(size, mac_guest, mac_tap, HOST_IP, GUEST_IP);
            if args.count > 0 {
                for _ in 0..args.count {
                    sock.send_batch(&frame, 1).context("send")?;
                }
                return Ok(());
            }
            ready()?;
            loop {
                match sock.send_batch(&frame, SEND_BATCH) {
                    Ok(_) => {}
                    // The device's queue is full: try again.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(e) => return Err(e).context("sendmmsg"),
                }
            }
        }
        Job::Spin => unreachable!("spins above"),
    }
}

/// The name of the bench namespace this process runs in, or an error outside one.
fn bench_netns() -> Result<String> {
    let me = fs::metadata("/proc/self/ns/net").context("cannot stat /proc/self/ns/net")?;
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if stale_owner(&name).is_none() {
            continue;
        }
        if let Ok(m) = fs::metadata(entry.path()) {
            if m.ino() == me.ino() && m.dev() == me.dev() {
                return Ok(name);
            }
        }
    }
    bail!("not inside a network namespace of the bench ({TAG}<pid>): refusing to send")
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC address {s}");
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC address {s}"))?;
    }
    Ok(mac)
}

/// An Ethernet/IPv4/UDP frame of `size` bytes (no FCS), UDP port 9 to 9, zero payload, a
/// valid IPv4 header checksum and no UDP checksum.
fn udp_frame(size: usize, dst: [u8; 6], src: [u8; 6], ip_src: [u8; 4], ip_dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; size.max(42)];
    let len = f.len();
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = u16::try_from(len - 14).unwrap_or(u16::MAX);
    let udp_len = u16::try_from(len - 34).unwrap_or(u16::MAX);
    {
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&ip_src);
        ip[16..20].copy_from_slice(&ip_dst);
        let sum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&UDP_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&UDP_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    f
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// The syscalls the helpers need that std does not offer: TUNSETIFF and AF_PACKET.
#[allow(unsafe_code)]
mod sys {
    use std::ffi::CString;
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// Opens `/dev/net/tun` and creates (or attaches to) TAP `ifname` with
    /// `IFF_TAP | IFF_NO_PI`: plain frames, no virtio-net header, one queue.
    pub fn open_tap(ifname: &str) -> io::Result<File> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let name = ifname.as_bytes();
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        // SAFETY: ifreq is plain data, for which all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name) {
            *dst = libc::c_char::from_ne_bytes([*src]);
        }
        req.ifr_ifru.ifru_flags = libc::c_short::try_from(libc::IFF_TAP | libc::IFF_NO_PI)
            .map_err(|_| io::Error::other("flags"))?;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which lives on this stack frame for
        // the whole call; the fd is open and ours.
        let rc = unsafe {
            libc::ioctl(
                tun.as_raw_fd(),
                libc::TUNSETIFF,
                std::ptr::from_mut(&mut req),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(tun)
    }

    /// An AF_PACKET socket bound to one interface, for sending only.
    #[derive(Debug)]
    pub struct PacketSocket(OwnedFd);

    impl PacketSocket {
        /// A raw packet socket on `ifname` (protocol 0: it receives nothing), bypassing the
        /// qdisc.
        pub fn bind(ifname: &str) -> io::Result<PacketSocket> {
            let cname = CString::new(ifname).map_err(|_| io::Error::other("NUL in name"))?;
            // SAFETY: a NUL-terminated string that outlives the call.
            let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if index == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: socket(2) with constant arguments; the fd is owned right below.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data, for which all zeroes is a valid value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = u16::try_from(libc::AF_PACKET).map_err(io::Error::other)?;
            addr.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
            let addr_len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
                .map_err(io::Error::other)?;
            // SAFETY: bind reads `addr_len` bytes of `addr`, which lives for the call.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
                    addr_len,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            let one: libc::c_int = 1;
            let one_len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
                .map_err(io::Error::other)?;
            // SAFETY: setsockopt reads one c_int, which lives for the call.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    std::ptr::from_ref(&one).cast::<libc::c_void>(),
                    one_len,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(PacketSocket(fd))
        }

        /// Sends `frame` `n` times (at most 1024) with one sendmmsg; returns how many went.
        pub fn send_batch(&self, frame: &[u8], n: usize) -> io::Result<usize> {
            let n = n.clamp(1, 1024);
            let mut iov = libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast::<libc::c_void>(),
                iov_len: frame.len(),
            };
            let iov_ptr = std::ptr::from_mut(&mut iov);
            let mut msgs: Vec<libc::mmsghdr> = (0..n)
                .map(|_| {
                    // SAFETY: mmsghdr is plain data, for which all zeroes is a valid value.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = iov_ptr;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            let vlen = libc::c_uint::try_from(n).map_err(io::Error::other)?;
            // SAFETY: every header points at `iov`, which points at `frame`; all outlive the
            // call. The kernel reads them and writes only the headers' msg_len.
            let rc = unsafe { libc::sendmmsg(self.0.as_raw_fd(), msgs.as_mut_ptr(), vlen, 0) };
            usize::try_from(rc).map_err(|_| io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_net_dev() {
        let text =
            "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    \
                    packets errs drop fifo colls carrier compressed\n    lo:       0       0    \
                    0    0    0     0          0         0        0       0    0    0    0     \
                    0       0          0\nvnbtap3: 6400 100 0 2 0 0 0 0 1280 20 0 7 0 0 0 0\n";
        let c = parse_net_dev(text, "vnbtap3").unwrap();
        assert_eq!(
            c,
            IfCounters {
                rx_packets: 100,
                rx_dropped: 2,
                tx_packets: 20,
                tx_dropped: 7
            }
        );
        assert!(parse_net_dev(text, "vnbtap").is_none());
    }

    #[test]
    fn builds_valid_frames() {
        let f = udp_frame(64, [2; 6], [4; 6], GUEST_IP, HOST_IP);
        assert_eq!(f.len(), 64);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        // A header with its checksum sums to 0xffff.
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50);
        assert_eq!(&f[26..30], &GUEST_IP);
        assert_eq!(&f[30..34], &HOST_IP);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
        let big = udp_frame(1514, [2; 6], [4; 6], HOST_IP, GUEST_IP);
        assert_eq!(ipv4_checksum(&big[14..34]), 0);
        assert_eq!(parse_mac(MAC_TAP).unwrap(), [0x52, 0x54, 0, 0xbe, 0, 0xfe]);
    }

    #[test]
    fn targets() {
        assert_eq!(target(Some(1.2), Some(0.95)), "met");
        assert_eq!(target(Some(0.8), Some(0.95)), "< DPDK");
        assert_eq!(target(Some(1.5), Some(0.5)), "< 0.9 bare");
        assert_eq!(target(None, None), "-");
    }
}
