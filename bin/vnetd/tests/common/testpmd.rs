//! Driving `dpdk-testpmd` with `net_virtio_user` ports against vnetd: finding DPDK and
//! hugepages, starting testpmd non-interactively, stopping it and parsing its per-port
//! report, and the checks the DPDK tests share.
//!
//! testpmd runs non-interactively: it forwards until it reads a line (or EOF) on stdin, then
//! stops and prints its per-port `RX-packets`/`TX-packets`. (`--stats-period` is not used:
//! with it testpmd ignores stdin and only stops on a signal.)

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api::{PortState, PortStats, Request, Response};

use testbed::dpdk;
pub use testbed::dpdk::VirtioUser;
use testbed::MacAddr;

use super::Vnetd;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The testpmd binary, or None (with a message) when the tests should be skipped.
pub fn dpdk() -> Option<PathBuf> {
    // Two testpmds with -m 256 each, in 2 MiB pages.
    if let Some(why) = dpdk::unavailable(256) {
        testbed::skip(
            "VNET_REQUIRE_DPDK",
            &format!("DPDK tests: {why} (run `cargo xtask deps`)"),
        );
        return None;
    }
    dpdk::which(dpdk::TESTPMD)
}

/// CPUs this process may run on (at least CPU 0).
pub fn cpus() -> Vec<usize> {
    let mut v = dpdk::allowed_cpus();
    if v.is_empty() {
        v.push(0);
    }
    v
}

/// A running testpmd. Dropping it stops it (EOF on stdin, then SIGKILL), prints its output
/// if the test is panicking, and removes its runtime and hugepage files.
pub struct Testpmd {
    name: String,
    prefix: String,
    out: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

/// Per-port figures testpmd prints when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct PortFigures {
    pub rx: u64,
    pub tx: u64,
}

/// What a stopped testpmd reported.
#[derive(Debug)]
pub struct Report {
    /// MAC address of each port, in port order.
    pub macs: Vec<MacAddr>,
    /// Final forward statistics of each port, in port order.
    pub ports: Vec<PortFigures>,
}

impl Testpmd {
    /// Starts testpmd with the main lcore on CPU `cpu_main` and one forwarding lcore on
    /// `cpu_fwd`; its output goes to `<dir>/testpmd-<name>.log`.
    pub fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        (cpu_main, cpu_fwd): (usize, usize),
        vdevs: &[VirtioUser],
        app_args: &[&str],
    ) -> Testpmd {
        let prefix = format!(
            "vnet-dpdk-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let vdevs: Vec<String> = vdevs.iter().enumerate().map(|(i, d)| d.vdev(i)).collect();
        let args = dpdk::testpmd_args((cpu_main, cpu_fwd), &prefix, &vdevs, app_args);

        let out = dir.join(format!("testpmd-{name}.log"));
        let mut f = File::create(&out).unwrap();
        writeln!(f, "$ {} {}", bin.display(), args.join(" ")).unwrap();
        // Line-buffered stdout, so that the output of a testpmd that must be killed is not
        // lost in its stdio buffer.
        let mut cmd = match dpdk::which("stdbuf") {
            Some(s) => {
                let mut c = Command::new(s);
                c.arg("-oL").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        Testpmd {
            name: name.to_string(),
            prefix,
            out,
            child: Some(child),
            stdin,
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Panics (printing the output, from drop) if testpmd exited.
    pub fn check_running(&mut self) {
        let child = self.child.as_mut().unwrap();
        if let Some(st) = child.try_wait().unwrap() {
            panic!("testpmd {} exited early: {st}", self.name);
        }
    }

    /// Tells testpmd to stop forwarding and exit, waits for it and parses its report.
    pub fn stop(&mut self) -> Report {
        if let Some(mut s) = self.stdin.take() {
            // testpmd may be gone already (EPIPE); the exit status tells.
            let _ = s.write_all(b"\n");
        }
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "testpmd {} does not exit",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        let out = self.output();
        assert!(st.success(), "testpmd {} failed: {st}", self.name);
        let r = parse_report(&out);
        assert!(
            !r.ports.is_empty() && r.ports.len() == r.macs.len(),
            "testpmd {}: cannot parse its report: {r:?}",
            self.name
        );
        r
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(self.stdin.take()); // EOF: testpmd stops and exits cleanly.
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- testpmd {} output ({}) ---\n{}",
                self.name,
                self.out.display(),
                self.output()
            );
        }
        dpdk::remove_files(&self.prefix);
    }
}

/// The number after `key` on `line`.
pub fn figure(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Parses `Port N: MAC` lines and the `Forward statistics for port N` blocks.
pub fn parse_report(out: &str) -> Report {
    let macs = dpdk::port_macs(out);
    let mut ports: Vec<PortFigures> = vec![];
    let mut current: Option<usize> = None;
    for line in out.lines() {
        let t = line.trim();
        if let Some(i) = t.find("Forward statistics for port ") {
            current = t[i + "Forward statistics for port ".len()..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok());
            if let Some(n) = current {
                if ports.len() <= n {
                    ports.resize(n + 1, PortFigures::default());
                }
            }
        } else if t.contains("Accumulated forward statistics") {
            current = None;
        } else if let Some(n) = current {
            if let Some(x) = figure(t, "RX-packets:") {
                ports[n].rx = x;
            }
            if let Some(x) = figure(t, "TX-packets:") {
                ports[n].tx = x;
            }
        }
    }
    Report { macs, ports }
}

/// A testpmd forwarding in `mac` mode between its port 0 on vnetd's port `a` and its port 1
/// on `b`, `--port-topology=paired`: what port 0 receives leaves port 1 towards port 0's
/// MAC and the other way round, after `--tx-first` seeded a burst on every tx queue.
pub struct Paired {
    /// The MACs of testpmd's ports 0 and 1.
    pub macs: [MacAddr; 2],
    /// Queue pairs of each port.
    pub queues: u16,
    /// Frames each port must at least receive.
    pub min_packets: u64,
    /// Frames the rings may hold when testpmd stops (see [`assert_forwarded`]).
    pub slack: u64,
}

impl Paired {
    /// Starts it (log `testpmd-<name>.log` in vnetd's directory, on the first and last
    /// CPUs we may use) and waits until traffic flows both ways.
    pub fn start(&self, bin: &Path, v: &Vnetd, name: &str) -> Testpmd {
        let cpus = cpus();
        let [ma, mb] = self.macs;
        let (sa, sb) = (v.sock("a"), v.sock("b"));
        let ports = [
            VirtioUser {
                sock: &sa,
                mac: ma,
                queues: self.queues,
                extra: "in_order=0",
            },
            VirtioUser {
                sock: &sb,
                mac: mb,
                queues: self.queues,
                extra: "in_order=0",
            },
        ];
        let (peer0, peer1) = (format!("--eth-peer=0,{mb}"), format!("--eth-peer=1,{ma}"));
        let (rxq, txq) = (
            format!("--rxq={}", self.queues),
            format!("--txq={}", self.queues),
        );
        let mut app = vec!["--forward-mode=mac", "--port-topology=paired"];
        if self.queues > 1 {
            app.extend([rxq.as_str(), txq.as_str()]);
        }
        app.extend(["--tx-first", &peer0, &peer1]);
        let mut t = Testpmd::start(
            bin,
            &v.dir,
            name,
            (cpus[0], cpus[cpus.len() - 1]),
            &ports,
            &app,
        );
        wait_until("traffic both ways", v, &mut [&mut t], |v| {
            v.port_stats("a").tx_packets > 0 && v.port_stats("b").tx_packets > 0
        });
        t
    }

    /// Lets the traffic run for `run`, then stops testpmd and checks that vnetd learned
    /// both MACs and that testpmd's report and vnetd's counters agree (printing both,
    /// `what` saying which test); `started` is when the measured traffic began.
    pub fn check(&self, v: &Vnetd, t: &mut Testpmd, started: Instant, run: Duration, what: &str) {
        let [ma, mb] = self.macs;
        let (fa, fb) = (features(v, "a"), features(v, "b"));
        std::thread::sleep(run);
        t.check_running();
        assert_learned(v, ma, "a");
        assert_learned(v, mb, "b");
        let r = t.stop();
        let ran = started.elapsed();
        let (sa, sb) = settled_stats(v);
        let (p0, p1) = (r.ports[0], r.ports.get(1).copied().unwrap_or_default());
        eprintln!(
            "{ran:.1?} of traffic{what}: testpmd port0 {p0:?} port1 {p1:?}; vnetd a rx {} tx \
             {}, b rx {} tx {} ({:.2} Mpps each way); drops a {} b {}; features a [{fa}] b \
             [{fb}]",
            sa.rx_packets,
            sa.tx_packets,
            sb.rx_packets,
            sb.tx_packets,
            p0.rx as f64 / ran.as_secs_f64() / 1e6,
            drops(&sa),
            drops(&sb),
        );
        assert_eq!(r.macs, vec![ma, mb], "port MACs");
        assert_eq!(r.ports.len(), 2, "{r:?}");
        for (port, p) in [p0, p1].iter().enumerate() {
            assert!(
                p.rx > self.min_packets,
                "testpmd port {port} received only {}",
                p.rx
            );
        }
        assert!(sa.tx_packets > self.min_packets, "{sa:?}");
        assert!(sb.tx_packets > self.min_packets, "{sb:?}");
        assert_forwarded(p0, p1, &sa, &sb, self.slack);
    }
}

/// Polls until `cond` holds, failing early if a testpmd exits.
pub fn wait_until(what: &str, v: &Vnetd, pmds: &mut [&mut Testpmd], cond: impl Fn(&Vnetd) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond(v) {
        for p in pmds.iter_mut() {
            p.check_running();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?} {:?}",
            v.ports(),
            v.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn port_up(v: &Vnetd, name: &str) -> bool {
    v.ports()
        .iter()
        .any(|p| p.name == name && p.state == PortState::Up)
}

/// Negotiated features of a port, as vnetd names them.
pub fn features(v: &Vnetd, name: &str) -> String {
    v.ports()
        .into_iter()
        .find(|p| p.name == name)
        .and_then(|p| p.features)
        .unwrap_or_default()
}

pub fn has_feature(features: &str, name: &str) -> bool {
    features
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// Asserts that the FDB has `mac` on `port`.
pub fn assert_learned(v: &Vnetd, mac: MacAddr, port: &str) {
    let Response::Fdb(fdb) = v.call(Request::Fdb) else {
        panic!("unexpected response to fdb")
    };
    let m = mac.to_string();
    assert!(
        fdb.iter().any(|e| e.mac == mac && e.port == port),
        "{m} not learned on {port}: {fdb:?}"
    );
}

/// Counters once they no longer move (workers publish them per burst).
pub fn settled_stats(v: &Vnetd) -> (PortStats, PortStats) {
    let mut last = None;
    for _ in 0..50 {
        let s = (v.port_stats("a"), v.port_stats("b"));
        if last.as_ref() == Some(&s) {
            break;
        }
        last = Some(s);
        std::thread::sleep(Duration::from_millis(50));
    }
    last.unwrap()
}

/// After the frontends are gone, vnetd is alive with both ports down, none broken.
pub fn assert_ports_released(v: &mut Vnetd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !v
        .ports()
        .iter()
        .all(|p| p.state == PortState::Down || p.state == PortState::Connected)
    {
        assert!(
            Instant::now() < deadline,
            "ports not released: {:?}",
            v.ports()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(v.alive(), "vnetd died");
    let log = v.log_text();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains("ERROR "))
        .collect();
    assert!(bad.is_empty(), "vnetd complained:\n{}", bad.join("\n"));
}

/// Non-zero drop counters, `reason=n,...` (or `none`).
pub fn drops(s: &PortStats) -> String {
    let v: Vec<String> = s
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// `a` <= `b` <= `a` + `slack`.
pub fn assert_close(what: &str, a: u64, b: u64, slack: u64) {
    assert!(
        a <= b && b - a <= slack,
        "{what}: expected {a} <= {b} <= {a} + {slack}"
    );
}

/// testpmd forwarded between its ports 0 and 1 through vnetd ports a and b: each port's
/// frames came out of the other, but for what `slack` frames the rings held at the stop,
/// and every frame vnetd took is accounted for exactly (delivered, dropped at egress, or,
/// once testpmd closed the other port and its FDB entry was flushed, flooded to nobody:
/// `no_destination` at ingress).
pub fn assert_forwarded(
    p0: PortFigures,
    p1: PortFigures,
    sa: &api::PortStats,
    sb: &api::PortStats,
    slack: u64,
) {
    assert_close(
        "vnetd a.rx vs testpmd port 0 TX",
        sa.rx_packets,
        p0.tx,
        slack,
    );
    assert_close(
        "vnetd b.rx vs testpmd port 1 TX",
        sb.rx_packets,
        p1.tx,
        slack,
    );
    assert_close(
        "testpmd port 0 RX vs vnetd a.tx",
        p0.rx,
        sa.tx_packets,
        slack,
    );
    assert_close(
        "testpmd port 1 RX vs vnetd b.tx",
        p1.rx,
        sb.tx_packets,
        slack,
    );
    let dropped = |s: &api::PortStats, r: &str| s.drops.get(r).copied().unwrap_or(0);
    let egress_drops = |s: &api::PortStats| {
        dropped(s, "no_rx_buffer") + dropped(s, "port_down") + dropped(s, "too_big")
    };
    assert_eq!(
        sb.tx_packets + egress_drops(sb) + dropped(sa, "no_destination"),
        sa.rx_packets,
        "frames from a: {sa:?} {sb:?}"
    );
    assert_eq!(
        sa.tx_packets + egress_drops(sa) + dropped(sb, "no_destination"),
        sb.rx_packets,
        "frames from b: {sa:?} {sb:?}"
    );
}
