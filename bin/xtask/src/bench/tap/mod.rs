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
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testbed::netns::{self, Netns};
use wire::{Ipv4Addr, MacAddr};

use super::ctx::Ctx;
use super::probe::Ticks;
use super::proc::{sleep, Proc};
use super::runner::{run_all, Outcome, Scenario, Switch};
use super::testpmd::Block;
use super::{Args, TAG};
use crate::util::{has_command, warn};
pub use helper::{helper, HelperArgs};
pub(super) use report::TapReport;
use report::TapRun;
use run::Running;

mod helper;
mod report;
mod run;

/// The MAC address of the host's TAP interface (vnetd's `--tap mac=`, net_tap's `mac=`).
pub(super) const MAC_TAP: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xbe, 0x00, 0xfe]);
/// The host (the TAP in the namespace) and the guest (the generator's port, MAC
/// [`super::vm2vm::MAC_A`]).
pub(super) const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub(super) const GUEST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// UDP port of every frame, both ends (discard).
pub(super) const UDP_PORT: u16 = 9;
/// testpmd's txonly addresses: from the guest to the host.
const TX_IP: &str = "--tx-ip=198.18.0.2,198.18.0.1";
/// TAP interfaces are `vnbtap<n>`; the helpers touch no other.
pub(super) const IF_PREFIX: &str = "vnbtap";
/// The TAP's queue towards its reader (`txqueuelen`, the kernel's default for a TAP is
/// 500): room for what the host-side sender produces while the guest, which shares the
/// generator CPU with it, is not scheduled, so that the two taking turns on that CPU (in
/// slices of milliseconds) does not decide the host-to-guest rate.
const TAP_TXQUEUELEN: u32 = 10_000;
/// Frames per `sendmmsg` of the host-side sender.
pub(super) const SEND_BATCH: usize = 64;
/// Frames the host sends before a guest-to-host run, so that the switch learns the TAP's
/// MAC (vnetd floods unknown destinations; a learned one is the usual case).
const PRIME_FRAMES: u32 = 4;
/// Direction of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Dir {
    /// The guest transmits, the host (the TAP) receives.
    #[default]
    ToHost,
    /// The host transmits on the TAP, the guest receives.
    ToGuest,
}
impl Dir {
    pub(super) fn label(self) -> &'static str {
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

/// Runs the scenario: every direction, size, run and switch, interleaved. Never fails: a
/// set-up error is reported in the result.
pub(super) fn run(ctx: &Ctx, args: &Args, modes: &[Option<String>]) -> TapReport {
    let switches = Switch::list(modes, &[Switch::Dpdk, Switch::Bare], args.only);
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
    if let Err(err) = measure(ctx, args, &mut report) {
        warn(format!("TAP scenario: {err:#}"));
        report.error = Some(format!("{err:#}"));
    }
    report
}

/// Sets the scenario up (its namespace) and runs it, the runs going into `report`.
fn measure(ctx: &Ctx, args: &Args, report: &mut TapReport) -> Result<()> {
    for prog in ["ip", "sysctl", "cat"] {
        if !has_command(prog) {
            bail!("`{prog}` is not on PATH (iproute2, procps, coreutils)");
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing");
    }
    for name in netns::sweep_stale(TAG, |_| true) {
        eprintln!("removed network namespace {name} (left by a bench process that is gone)");
    }
    let ns = TapNetns::create(&ctx.logs)?;
    report.netns = ns.ns.name().to_string();
    eprintln!(
        "bench: VM to host through a TAP port in namespace {}, devargs {}",
        report.netns, report.devargs
    );
    let scenario = Tap {
        ns: &ns,
        switches: report.switches.clone(),
        sizes: report.sizes.clone(),
        devargs: report.devargs.clone(),
    };
    let Outcome { runs, .. } = run_all(ctx, args, &scenario);
    report.runs = runs;
    Ok(())
}

/// The scenario: cells are (direction, frame size).
struct Tap<'a> {
    ns: &'a TapNetns,
    switches: Vec<Switch>,
    sizes: Vec<u32>,
    devargs: String,
}

impl Scenario for Tap<'_> {
    type Cell = (Dir, u32);
    type Run = TapRun;

    fn cells(&self) -> Vec<(Dir, u32)> {
        [Dir::ToHost, Dir::ToGuest]
            .iter()
            .flat_map(|&dir| self.sizes.iter().map(move |&size| (dir, size)))
            .collect()
    }

    fn switches(&self) -> &[Switch] {
        &self.switches
    }

    fn describe(&self, switch: &Switch, &(dir, size): &(Dir, u32)) -> String {
        format!("TAP {} {}, {size} bytes", dir.label(), switch.label())
    }

    fn run_once(
        &self,
        ctx: &Ctx,
        switch: &Switch,
        &(dir, size): &(Dir, u32),
        _: bool,
    ) -> Result<TapRun> {
        let running = Running {
            ctx,
            ns: self.ns,
            dir,
            switch,
            ifname: format!("{IF_PREFIX}{}", ctx.seq.get() + 1),
        };
        running.run(size, &self.devargs)
    }

    fn note_cell(&self, run: &mut TapRun, &(dir, size): &(Dir, u32)) {
        run.dir = dir;
        run.size = size;
    }
}

/// The scenario's network namespace ([`Netns`]), with a process living in it (`cat`, which exits when
/// its stdin closes) whose `/proc/<pid>/net/dev` shows the namespace's counters. Dropping it
/// stops everything left in it and deletes it, and with it every TAP in it.
#[derive(Debug)]
struct TapNetns {
    /// Declared first: it goes before the namespace.
    holder: Option<Proc>,
    ns: Netns,
}

impl TapNetns {
    fn create(logs: &Path) -> Result<TapNetns> {
        let ns = Netns::create(&format!("{TAG}{}", std::process::id()))?;
        // Quiet: IPv6 is off (no router solicitations, DAD, MLD), and no ICMP errors (port
        // unreachable for the guest's UDP frames): nothing but the bench's frames moves.
        ns.sysctl(&[
            "net.ipv4.icmp_ratelimit=3600000",
            "net.ipv4.icmp_msgs_per_sec=0",
        ])?;
        let mut holder = Proc::spawn(
            "namespace holder",
            ns.wrap(&Command::new("cat")),
            &logs.join("netns-holder.log"),
            None,
        )?;
        // `ip netns exec` has entered the namespace once the process has its network.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ns.holds(holder.pid()) {
            holder.check_alive()?;
            if Instant::now() > deadline {
                bail!("the namespace holder did not enter {}", ns.name());
            }
            sleep(Duration::from_millis(10));
        }
        Ok(TapNetns {
            holder: Some(holder),
            ns,
        })
    }

    /// `cmd` run inside the namespace (`ip netns exec NS ...`, which execs it: same pid).
    fn exec(&self, cmd: &Command) -> Command {
        self.ns.wrap(cmd)
    }

    /// The counters of `ifname` in the namespace, now.
    fn counters(&self, ifname: &str) -> Result<IfCounters> {
        let pid = self.holder.as_ref().context("no namespace holder")?.pid();
        let text = fs::read_to_string(format!("/proc/{pid}/net/dev"))
            .with_context(|| format!("cannot read /proc/{pid}/net/dev"))?;
        parse_net_dev(&text, ifname)
            .with_context(|| format!("no interface {ifname} in namespace {}", self.ns.name()))
    }

    /// Waits until `ifname` exists in the namespace, while `owner` (which creates it) lives.
    fn wait_link(&self, ifname: &str, owner: &mut Proc) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.counters(ifname).is_err() {
            owner.check_alive()?;
            if Instant::now() > deadline {
                bail!("{ifname} did not appear in namespace {}", self.ns.name());
            }
            sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The host side of the TAP: our MAC, up, 198.18.0.1/24.
    fn configure(&self, ifname: &str) -> Result<()> {
        let ns = self.ns.name();
        let qlen = TAP_TXQUEUELEN.to_string();
        netns::ip(&[
            "-n",
            ns,
            "link",
            "set",
            "dev",
            ifname,
            "address",
            &MAC_TAP.to_string(),
            "txqueuelen",
            &qlen,
            "up",
        ])?;
        let addr = format!("{HOST_IP}/24");
        netns::ip(&["-n", ns, "addr", "add", &addr, "dev", ifname])?;
        Ok(())
    }
}

/// An interface's counters (`/proc/net/dev`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct IfCounters {
    /// Frames the host received (from the switch).
    pub(super) rx_packets: u64,
    /// Of those, dropped.
    pub(super) rx_dropped: u64,
    /// Frames the host sent (taken by the switch).
    pub(super) tx_packets: u64,
    /// Frames the TAP's queue had no room for.
    pub(super) tx_dropped: u64,
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
    /// When it was taken.
    at: Instant,
    /// The TAP's counters.
    tap: IfCounters,
    /// The guest's port statistics, when there is a guest.
    guest: Option<Block>,
    /// CPU times of the switch, then of the guest's testpmd (or its stand-in, the
    /// spinner), then of the host-side sender.
    ticks: Ticks,
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
}
