//! The testpmd generator: the command lines of the bench's testpmds, the interactive
//! generator (two virtio-user ports, or one for the TAP guest) and the statistics blocks of
//! its output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use testbed::dpdk;

use super::ctx::{Ctx, RunDir};
use super::proc::Proc;
use super::vm2vm::{Case, MAC_A, MAC_B};
use super::TAG;

impl Ctx {
    /// A testpmd command: lcores `0@main,1@fwd`, our file prefix, the vdevs, then the
    /// application arguments.
    pub(super) fn testpmd_command(
        &self,
        cpu: usize,
        prefix: &str,
        vdevs: &[String],
        app: &[&str],
    ) -> Command {
        // Line-buffered stdout: the bench reads testpmd's answers as they come.
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL")
            .arg(&self.testpmd)
            .args(dpdk::testpmd_args((cpu, cpu), prefix, vdevs, app));
        cmd
    }

    /// Starts the DPDK anchor in `run`'s directory: testpmd on the switch CPU with a
    /// `net_vhost` port per name (`<name>.sock`; most scenarios: a and b) of `queues` queue
    /// pairs and more `devargs`, forwarding `io` between ports 0 and 1, 2 and 3, ..., with
    /// more application arguments `app`; waits until it forwards.
    pub(super) fn start_vhost_anchor(
        &self,
        run: &RunDir,
        names: &[&str],
        queues: u16,
        devargs: &str,
        app: &[String],
    ) -> Result<Proc> {
        let prefix = format!("{TAG}{}-{}", std::process::id(), run.name);
        let socks: Vec<PathBuf> = names.iter().map(|n| run.sock(n)).collect();
        let vdevs: Vec<String> = socks
            .iter()
            .enumerate()
            .map(|(i, sock)| {
                let mut vdev = format!("net_vhost{i},iface={},queues={queues}", sock.display());
                if !devargs.is_empty() {
                    vdev = format!("{vdev},{devargs}");
                }
                vdev
            })
            .collect();
        let mut args = vec!["--forward-mode=io", "--port-topology=paired"];
        args.extend(app.iter().map(String::as_str));
        let cmd = self.testpmd_command(self.cpu_switch, &prefix, &vdevs, &args);
        let mut anchor = Proc::spawn("anchor testpmd", cmd, &run.log, Some(prefix))?;
        anchor.wait_forwarding()?;
        if !socks.iter().all(|s| s.exists()) {
            bail!(
                "the anchor created no vhost-user sockets; see {}",
                run.log.display()
            );
        }
        Ok(anchor)
    }

    /// Starts the generator on the two sockets and waits for its prompt.
    pub(super) fn start_generator(
        &self,
        name: &str,
        socks: [&Path; 2],
        case: &Case,
    ) -> Result<Generator> {
        let prefix = format!("{TAG}{}-{name}", std::process::id());
        let vdevs: Vec<String> = socks
            .iter()
            .zip([MAC_A, MAC_B])
            .enumerate()
            .map(|(i, (sock, mac))| {
                let mut spec = format!(
                    "net_virtio_user{i},path={},queues={},mac={mac}",
                    sock.display(),
                    case.queue_pairs()
                );
                if !case.extra_devargs().is_empty() {
                    spec.push(',');
                    spec.push_str(case.extra_devargs());
                }
                spec
            })
            .collect();
        let peer0 = format!("--eth-peer=0,{MAC_B}");
        let peer1 = format!("--eth-peer=1,{MAC_A}");
        let txpkts = format!("--txpkts={}", case.size);
        let queue_args = case.queue_args();
        // `--record-core-cycles`: the generator's busy time ([`BusyCycles`]).
        let mut app = vec![
            "-i",
            "--forward-mode=mac",
            "--port-topology=paired",
            &peer0,
            &peer1,
            &txpkts,
            "--record-core-cycles",
        ];
        app.extend(queue_args.iter().map(String::as_str));
        let cmd = self.testpmd_command(self.cpu_gen, &prefix, &vdevs, &app);
        let log = self.logs.join(format!("{name}.log"));
        let proc = Proc::spawn(name, cmd, &log, Some(prefix))?;
        let mut gen = Generator { proc };
        gen.proc
            .wait_output(0, Duration::from_secs(60), "the testpmd prompt", |out| {
                out.contains("testpmd> ")
            })?;
        let ports = dpdk::port_macs(&gen.proc.output());
        if ports.len() != 2 {
            bail!(
                "the generator has {} port(s), not 2 (see {})",
                ports.len(),
                log.display()
            );
        }
        Ok(gen)
    }
}

/// The generator testpmd, interactive.
#[derive(Debug)]
pub(super) struct Generator {
    pub(super) proc: Proc,
}

impl Generator {
    /// Sends a command and waits for the next prompt.
    pub(super) fn send_wait(&mut self, command: &str) -> Result<String> {
        let from = self.proc.output().len();
        self.proc.send(command)?;
        self.proc
            .wait_output(from, Duration::from_secs(20), command, |out| {
                out.matches("testpmd> ").count() >= 1
            })
    }

    /// Port and forwarding statistics of both ports, and the busy cycles, now.
    pub(super) fn stats(&mut self) -> Result<(Vec<Block>, Option<BusyCycles>)> {
        let from = self.proc.output().len();
        self.proc.send("show port stats all\nshow fwd stats all")?;
        let out =
            self.proc
                .wait_output(from, Duration::from_secs(20), "port statistics", |out| {
                    out.matches("testpmd> ").count() >= 2
                })?;
        let blocks = parse_blocks(&out);
        for kind in [BlockKind::Nic, BlockKind::Fwd] {
            for port in 0..2 {
                if !blocks.iter().any(|b| b.kind == kind && b.port == port) {
                    bail!("no {kind:?} statistics for port {port} in testpmd's answer:\n{out}");
                }
            }
        }
        Ok((blocks, parse_busy_cycles(&out)))
    }

    /// Quits testpmd and waits for it.
    pub(super) fn quit(mut self) -> Result<()> {
        self.proc.quit("generator")
    }
}

/// Which statistics block of testpmd's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockKind {
    /// `NIC statistics for port N` (`show port stats`).
    Nic,
    /// `Forward statistics for port N` (`show fwd stats`, `stop`).
    Fwd,
}

/// One port's statistics block: every `Key: number` in it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Block {
    pub(super) kind: BlockKind,
    pub(super) port: usize,
    pub(super) figures: BTreeMap<String, u64>,
}

impl Block {
    pub(super) fn get(&self, key: &str) -> u64 {
        self.figures.get(key).copied().unwrap_or(0)
    }
}

/// The generator's busy time so far. With `--record-core-cycles`, testpmd adds up the TSC
/// cycles of each forwarding iteration that received frames (a poll that finds nothing is
/// not counted) and `show fwd stats all` prints the sum with the TSC's rate:
/// `CPU cycles/packet=118.23 (total cycles=11977329354 / total mac packets=101309568) at
/// 2600 MHz Clock`. Its share of the wall time says whether the generator, not the switch,
/// set the rate: a generator busy nearly all the time cannot forward more, whatever the
/// switch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BusyCycles {
    pub(super) cycles: u64,
    /// The TSC's rate.
    pub(super) mhz: u64,
}

impl BusyCycles {
    /// The share of `secs` that the cycles from `before` to `self` took, in %.
    pub(super) fn busy_pct(&self, before: &BusyCycles, secs: f64) -> Option<f64> {
        let cycles = self.cycles.checked_sub(before.cycles)?;
        (self.mhz > 0 && secs > 0.0).then(|| cycles as f64 / (self.mhz as f64 * 1e6 * secs) * 100.0)
    }
}

/// The last busy-cycles line in testpmd's output (none before the first frame).
pub(super) fn parse_busy_cycles(out: &str) -> Option<BusyCycles> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("CPU cycles/packet="))?;
    let number = |after: &str| -> Option<u64> {
        let rest = &line[line.find(after)? + after.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let cycles = number("total cycles=")?;
    let mhz = number(") at ")?;
    line.contains(" MHz").then_some(BusyCycles { cycles, mhz })
}

/// The complete per-port statistics blocks in testpmd's output.
pub(super) fn parse_blocks(out: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in out.lines() {
        let t = line.trim();
        let header = [
            ("NIC statistics for port ", BlockKind::Nic),
            ("Forward statistics for port ", BlockKind::Fwd),
        ]
        .iter()
        .find_map(|(marker, kind)| {
            let rest = &t[t.find(marker)? + marker.len()..];
            let port = rest.split_whitespace().next()?.parse().ok()?;
            Some(Block {
                kind: *kind,
                port,
                figures: BTreeMap::new(),
            })
        });
        if header.is_some() || t.contains("Accumulated forward statistics") {
            current = header;
            continue;
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        // A rule of `#`, `-` or `+` closes the block.
        if t.len() >= 20 && t.chars().all(|c| "#-+".contains(c)) {
            blocks.extend(current.take());
            continue;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        for pair in words.windows(2) {
            if let (Some(key), Ok(value)) = (pair[0].strip_suffix(':'), pair[1].parse()) {
                block.figures.insert(key.to_string(), value);
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "\
testpmd> show port stats all

  ######################## NIC statistics for port 0  ########################
  RX-packets: 25953568   RX-missed: 0          RX-bytes:  1661028352
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 25954592   TX-errors: 0          TX-bytes:  1661094912

  Throughput (since last show)
  Rx-pps:     12907307          Rx-bps:   6608541400
  Tx-pps:     12907328          Tx-bps:   6608549584
  ############################################################################

  ######################## NIC statistics for port 1  ########################
  RX-packets: 25953600   RX-missed: 3          RX-bytes:  1661030400
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 25954592   TX-errors: 0          TX-bytes:  1661093888

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
testpmd> show fwd stats all

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 25953568       RX-dropped: 0             RX-total: 25953568
  TX-packets: 25954592       TX-dropped: 7             TX-total: 25954599
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 25953600       RX-dropped: 0             RX-total: 25953600
  TX-packets: 25954592       TX-dropped: 0             TX-total: 25954592
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 51907168       RX-dropped: 0             RX-total: 51907168
  TX-packets: 51909184       TX-dropped: 0             TX-total: 51909184
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
testpmd> ";

    #[test]
    fn parses_port_and_forward_statistics() {
        let blocks = parse_blocks(STATS);
        assert_eq!(blocks.len(), 4, "{blocks:?}");
        let nic1 = &blocks[1];
        assert_eq!((nic1.kind, nic1.port), (BlockKind::Nic, 1));
        assert_eq!(nic1.get("RX-packets"), 25_953_600);
        assert_eq!(nic1.get("RX-missed"), 3);
        assert_eq!(nic1.get("TX-bytes"), 1_661_093_888);
        assert_eq!(blocks[0].get("Rx-pps"), 12_907_307);
        let fwd0 = &blocks[2];
        assert_eq!((fwd0.kind, fwd0.port), (BlockKind::Fwd, 0));
        assert_eq!(fwd0.get("TX-dropped"), 7);
        // The accumulated block is no port's.
        assert!(blocks.iter().all(|b| b.get("RX-packets") != 51_907_168));
    }

    #[test]
    fn parses_busy_cycles() {
        assert_eq!(parse_busy_cycles(STATS), None);
        let two = "  CPU cycles/packet=157.88 (total cycles=14852502476 / total mac packets=\
                   94077424) at 2600 MHz Clock\n\
                   testpmd> show fwd stats all\n  CPU cycles/packet=158.06 (total \
                   cycles=14869600024 / total mac packets=94077488) at 2600 MHz Clock\n";
        let last = parse_busy_cycles(two).unwrap();
        assert_eq!(
            last,
            BusyCycles {
                cycles: 14_869_600_024,
                mhz: 2600
            }
        );
        let before = BusyCycles {
            cycles: 14_869_600_024 - 2_600_000_000,
            mhz: 2600,
        };
        let pct = last.busy_pct(&before, 2.0).unwrap();
        assert!((pct - 50.0).abs() < 1e-9, "{pct}");
        // Counters that went back (testpmd restarted) or no time: no figure.
        assert_eq!(before.busy_pct(&last, 2.0), None);
        assert_eq!(last.busy_pct(&before, 0.0), None);
        assert_eq!(
            parse_busy_cycles("CPU cycles/packet=1 (total cycles=x)"),
            None
        );
    }

    #[test]
    fn incomplete_blocks_are_left_out() {
        let cut = &STATS[..STATS.find("Throughput").unwrap()];
        assert!(parse_blocks(cut).is_empty());
    }
}
