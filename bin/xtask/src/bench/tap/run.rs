//! One run of the TAP scenario: the switch (vnetd, the DPDK anchor or the bare loop), the
//! guest, the host-side helpers, the measurement window and its figures.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::super::common::Window;
use super::super::ctx::Ctx;
use super::super::probe::Ticks;
use super::super::proc::{sleep, Proc, TempDir};
use super::super::runner::Switch;
use super::super::testpmd::{parse_blocks, Block, BlockKind, Generator};
use super::super::vm2vm::MAC_A;
use super::super::TAG;
use super::helper::helper_command;
use super::report::TapRun;
use super::{Dir, Snap, TapNetns, MAC_TAP, PRIME_FRAMES, TX_IP};

/// What one run has running.
pub(super) struct Running<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) ns: &'a TapNetns,
    pub(super) dir: Dir,
    pub(super) switch: &'a Switch,
    pub(super) ifname: String,
}

impl Running<'_> {
    /// One run; every process it starts is stopped when it returns, also on errors.
    pub(super) fn run(&self, size: u32, devargs: &str) -> Result<TapRun> {
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
            Switch::Bare => None,
            _ => Some(self.start_guest(&format!("{name}-guest"), &sock, size, devargs)?),
        };
        let mut result = TapRun::default();
        if let Switch::Vnetd(_) = self.switch {
            result.rec.features = ctx.wait_ports_up(&ctl, &mut switch, ["a", "h"])?;
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
        let vnetd_ctl = matches!(self.switch, Switch::Vnetd(_)).then_some(ctl.as_path());
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
            Switch::Vnetd(_) => {
                result.rec.anomalies.extend(switch.stop_vnetd(&log)?);
            }
            Switch::Dpdk => {
                let (dropped, anomalies) = switch.stop_anchor()?;
                result.rec.anomalies.extend(anomalies);
                result.rec.anchor_drops = Some(dropped);
            }
            _ => {
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
            Switch::Vnetd(mode) => {
                let cmd = self.vnetd_command(sock, ctl, mode.as_deref());
                let mut vnetd = Proc::spawn("vnetd", cmd, log, None)?;
                vnetd.wait_sockets(&[sock, ctl], log)?;
                Ok(vnetd)
            }
            Switch::Dpdk => {
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
            Switch::Bare => {
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
            other => bail!("{} is no TAP switch", other.label()),
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
                self.ifname,
                self.ns.ns.name()
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
        let ports = testbed::dpdk::port_macs(&guest.proc.output());
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
        // The spinner stands in for the guest.
        let guests: Vec<u32> = guest
            .as_ref()
            .map(|g| &g.proc)
            .into_iter()
            .chain(spinner)
            .map(Proc::pid)
            .collect();
        let senders: Vec<u32> = sender.iter().map(Proc::pid).collect();
        let ticks = Ticks::read(switch.pid(), &[&guests, &senders])?;
        let guest = guest.map(guest_stats).transpose()?;
        Ok(Snap {
            at,
            tap,
            guest,
            ticks,
        })
    }

    /// The frames counted at the receiving end.
    fn count(&self, s: &Snap) -> u64 {
        let guest = |key| s.guest.as_ref().map_or(0, |b| b.get(key));
        match (self.dir, self.switch) {
            (Dir::ToHost, _) => s.tap.rx_packets,
            (Dir::ToGuest, Switch::Bare) => s.tap.tx_packets,
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
        r.rec.check_halves(halves, 3);
        r.tap = last.tap.since(&first.tap);
        let guest_delta = |key: &str| {
            let get = |s: &Snap| s.guest.as_ref().map_or(0, |b| b.get(key));
            get(last).saturating_sub(get(first))
        };
        r.offered_mpps = match (self.dir, self.switch) {
            (Dir::ToHost, Switch::Bare) => None,
            (Dir::ToHost, _) => Some(guest_delta("TX-packets") as f64 / r.secs / 1e6),
            (Dir::ToGuest, _) => Some((r.tap.tx_packets + r.tap.tx_dropped) as f64 / r.secs / 1e6),
        };
        let cpu = ctx.cpu_use(&first.ticks, &last.ticks, wall);
        r.switch_cpu = cpu.switch;
        (r.guest_cpu, r.sender_cpu) = (cpu.groups[0], cpu.groups[1]);
        (r.rec.foreign_cpu, r.rec.steal_cpu) = (cpu.foreign, cpu.steal);

        if total == 0 {
            r.rec.anomalies.push("no frames arrived".into());
        }
        if r.tap.rx_dropped > 0 {
            r.rec.anomalies.push(format!(
                "the TAP's rx_dropped +{} in the window",
                r.tap.rx_dropped
            ));
        }
        if self.dir == Dir::ToGuest {
            for key in ["RX-missed", "RX-errors", "RX-nombuf"] {
                let n = guest_delta(key);
                if n > 0 {
                    r.rec
                        .anomalies
                        .push(format!("guest port {key} +{n} in the window"));
                }
            }
            // What the switch read from the TAP and did not deliver.
            if self.switch != &Switch::Bare {
                let lost = r.tap.tx_packets.saturating_sub(total);
                if lost as f64 > 0.01 * r.tap.tx_packets as f64 {
                    r.rec.anomalies.push(format!(
                        "{lost} of the {} frames read from the TAP did not reach the guest",
                        r.tap.tx_packets
                    ));
                }
            }
        }
        r.rec.note_vnetd_drops(&w.vnetd_drops);
        r.rec.note_load(&w.busy);
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
