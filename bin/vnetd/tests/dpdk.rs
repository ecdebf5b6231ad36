//! A third-party frontend on vnetd: DPDK's `net_virtio_user` PMD in `dpdk-testpmd`.
//!
//! 1. `testpmd_txonly_to_rxonly`: one testpmd generates 64-byte frames to an unknown unicast
//!    MAC on port a, vnetd floods them to port b where a second testpmd receives them; once
//!    with DPDK's default virtio-user devargs (mergeable RX buffers) and once without
//!    mergeable RX buffers or in-order.
//! 2. `testpmd_io_forward_both_ports`: one testpmd holds both ports in `mac` forwarding
//!    mode, each port addressing the other's MAC, so frames circulate a -> b -> a.
//!
//! testpmd runs non-interactively: it forwards until it reads a line (or EOF) on stdin, then
//! stops and prints its per-port `RX-packets`/`TX-packets`, which the tests parse and compare
//! with vnetd's counters. (`--stats-period` is not used: with it testpmd ignores stdin and
//! only stops on a signal.)
//!
//! Without `dpdk-testpmd` on PATH, or without free hugepages, the tests print why and pass,
//! unless `VNET_REQUIRE_DPDK=1` (`cargo xtask deps` installs DPDK and reserves hugepages).

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::{PortState, PortStats, Request, Response};
use common::*;

/// The tests busy-poll cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// How long traffic runs.
const RUN: Duration = Duration::from_secs(3);
/// Frames that may be in flight on one ring when a testpmd stops: virtio-user's default
/// (and maximum) queue size.
const RING: u64 = 256;
/// Enough to show sustained forwarding rather than a few bursts.
const MIN_PACKETS: u64 = 1000;

const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0xd0, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0xd0, 0x00, 0x0b];
/// A station nobody has: frames to it are flooded.
const MAC_UNKNOWN: [u8; 6] = [0x52, 0x54, 0x00, 0xd0, 0x00, 0x99];

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Mount points of hugetlbfs file systems.
fn hugetlbfs_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "hugetlbfs").then(|| PathBuf::from(dir))
        })
        .collect()
}

fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The testpmd binary, or None (with a message) when the tests should be skipped.
fn dpdk() -> Option<PathBuf> {
    let required = std::env::var("VNET_REQUIRE_DPDK").is_ok_and(|v| v == "1");
    let why = match which("dpdk-testpmd") {
        None => "dpdk-testpmd is not on PATH".to_string(),
        Some(_) if hugetlbfs_mounts().is_empty() => "no hugetlbfs is mounted".to_string(),
        // Two testpmds with -m 256 each, in 2 MiB pages.
        Some(_) if free_hugepages() < 256 => {
            format!("only {} hugepages are free", free_hugepages())
        }
        Some(p) => return Some(p),
    };
    assert!(!required, "VNET_REQUIRE_DPDK=1 but {why}");
    eprintln!("skipping the DPDK test: {why} (run `cargo xtask deps`)");
    None
}

/// CPUs this process may run on.
fn cpus() -> Vec<usize> {
    let list = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(str::to_string))
        .unwrap_or_default();
    let mut v = vec![];
    for part in list.trim().split(',').filter(|s| !s.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            v.extend(a..=b);
        }
    }
    if v.is_empty() {
        v.push(0);
    }
    v
}

/// vnetd with ports a and b, whose config space MACs match the virtio-user `mac=` devargs
/// (DPDK releases that read the MAC back from the device then agree with the devarg).
fn vnetd() -> Vnetd {
    let (ma, mb) = (
        format!("mac={}", fmt_mac(MAC_A)),
        format!("mac={}", fmt_mac(MAC_B)),
    );
    Vnetd::start_ports(&[("a", &ma), ("b", &mb)])
}

/// Removes what a testpmd with this `--file-prefix` leaves behind: its runtime directory
/// and its hugepage files (which keep the pages reserved until deleted).
fn remove_dpdk_files(prefix: &str) {
    let mut runtime = vec![PathBuf::from("/var/run/dpdk"), PathBuf::from("/tmp/dpdk")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        runtime.push(PathBuf::from(x).join("dpdk"));
    }
    for d in runtime {
        let _ = std::fs::remove_dir_all(d.join(prefix));
    }
    let map = format!("{prefix}map_");
    for m in hugetlbfs_mounts() {
        for e in std::fs::read_dir(&m).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&map) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// One virtio-user port of a testpmd: `net_virtio_user<n>` on `sock`.
struct Vdev<'a> {
    sock: &'a Path,
    mac: [u8; 6],
    /// Extra devargs, e.g. `mrg_rxbuf=0`.
    extra: &'a str,
}

/// A running testpmd. Dropping it stops it (EOF on stdin, then SIGKILL), prints its output
/// if the test is panicking, and removes its runtime and hugepage files.
struct Testpmd {
    name: String,
    prefix: String,
    out: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

/// Per-port figures testpmd prints when it stops.
#[derive(Debug, Default, Clone, Copy)]
struct PortFigures {
    rx: u64,
    tx: u64,
}

/// What a stopped testpmd reported.
#[derive(Debug)]
struct Report {
    /// MAC address of each port, in port order.
    macs: Vec<[u8; 6]>,
    /// Final forward statistics of each port, in port order.
    ports: Vec<PortFigures>,
}

impl Testpmd {
    /// Starts testpmd with the main lcore on CPU `cpu_main` and one forwarding lcore on
    /// `cpu_fwd`; its output goes to `<dir>/testpmd-<name>.log`.
    fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        (cpu_main, cpu_fwd): (usize, usize),
        vdevs: &[Vdev],
        app_args: &[&str],
    ) -> Testpmd {
        let prefix = format!(
            "vnet-dpdk-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut args: Vec<String> = vec![
            format!("--lcores=0@{cpu_main},1@{cpu_fwd}"),
            "--no-pci".into(),
            "--no-telemetry".into(),
            "--single-file-segments".into(),
            "-m".into(),
            "256".into(),
            format!("--file-prefix={prefix}"),
        ];
        for (i, d) in vdevs.iter().enumerate() {
            let mut spec = format!(
                "net_virtio_user{i},path={},queues=1,mac={}",
                d.sock.display(),
                fmt_mac(d.mac)
            );
            if !d.extra.is_empty() {
                spec.push(',');
                spec.push_str(d.extra);
            }
            args.push(format!("--vdev={spec}"));
        }
        args.push("--".into());
        // All allocations fit in the -m 256 preallocated at start, so the memory table
        // virtio-user gives vnetd does not change while traffic runs.
        args.push("--total-num-mbufs=16384".into());
        args.extend(app_args.iter().map(|s| s.to_string()));

        let out = dir.join(format!("testpmd-{name}.log"));
        let mut f = File::create(&out).unwrap();
        writeln!(f, "$ {} {}", bin.display(), args.join(" ")).unwrap();
        // Line-buffered stdout, so that the output of a testpmd that must be killed is not
        // lost in its stdio buffer.
        let mut cmd = match which("stdbuf") {
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

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Panics (printing the output, from drop) if testpmd exited.
    fn check_running(&mut self) {
        let child = self.child.as_mut().unwrap();
        if let Some(st) = child.try_wait().unwrap() {
            panic!("testpmd {} exited early: {st}", self.name);
        }
    }

    /// Tells testpmd to stop forwarding and exit, waits for it and parses its report.
    fn stop(&mut self) -> Report {
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
        remove_dpdk_files(&self.prefix);
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// The number after `key` on `line`.
fn figure(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Parses `Port N: MAC` lines and the `Forward statistics for port N` blocks.
fn parse_report(out: &str) -> Report {
    let mut macs = vec![];
    let mut ports: Vec<PortFigures> = vec![];
    let mut current: Option<usize> = None;
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Port ") {
            if let Some((n, m)) = rest.split_once(": ") {
                if let (Ok(n), Some(m)) = (n.parse::<usize>(), parse_mac(m)) {
                    if n == macs.len() {
                        macs.push(m);
                    }
                }
            }
        }
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

/// Polls until `cond` holds, failing early if a testpmd exits.
fn wait_until(what: &str, v: &Vnetd, pmds: &mut [&mut Testpmd], cond: impl Fn(&Vnetd) -> bool) {
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

fn port_up(v: &Vnetd, name: &str) -> bool {
    v.ports()
        .iter()
        .any(|p| p.name == name && p.state == PortState::Up)
}

/// Negotiated features of a port, as vnetd names them.
fn features(v: &Vnetd, name: &str) -> String {
    v.ports()
        .into_iter()
        .find(|p| p.name == name)
        .and_then(|p| p.features)
        .unwrap_or_default()
}

fn has_feature(features: &str, name: &str) -> bool {
    features
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// Asserts that the FDB has `mac` on `port`.
fn assert_learned(v: &Vnetd, mac: [u8; 6], port: &str) {
    let Response::Fdb(fdb) = v.call(Request::Fdb) else {
        panic!("unexpected response to fdb")
    };
    let m = fmt_mac(mac);
    assert!(
        fdb.iter().any(|e| e.mac == m && e.port == port),
        "{m} not learned on {port}: {fdb:?}"
    );
}

/// Counters once they no longer move (workers publish them per burst).
fn settled_stats(v: &Vnetd) -> (PortStats, PortStats) {
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
fn assert_ports_released(v: &mut Vnetd) {
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
fn drops(s: &PortStats) -> String {
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
fn assert_close(what: &str, a: u64, b: u64, slack: u64) {
    assert!(
        a <= b && b - a <= slack,
        "{what}: expected {a} <= {b} <= {a} + {slack}"
    );
}

fn txonly_to_rxonly(bin: &Path, variant: &str, extra: &str) {
    let mut v = vnetd();
    let cpus = cpus();
    let (c0, c1) = (cpus[0], cpus[cpus.len() - 1]);
    let t0 = Instant::now();

    // B first, so that its port is up (and learns nothing) before traffic starts.
    let mut b = Testpmd::start(
        bin,
        &v.dir,
        "b-rxonly",
        (c1, c1),
        &[Vdev {
            sock: &v.sock("b"),
            mac: MAC_B,
            extra,
        }],
        &["--forward-mode=rxonly"],
    );
    wait_until("port b up", &v, &mut [&mut b], |v| port_up(v, "b"));
    let mut a = Testpmd::start(
        bin,
        &v.dir,
        "a-txonly",
        (c0, c0),
        &[Vdev {
            sock: &v.sock("a"),
            mac: MAC_A,
            extra,
        }],
        &[
            "--forward-mode=txonly",
            &format!("--eth-peer=0,{}", fmt_mac(MAC_UNKNOWN)),
            "--txpkts=64",
        ],
    );
    wait_until("traffic from a", &v, &mut [&mut a, &mut b], |v| {
        v.port_stats("a").rx_packets > 0
    });
    let started = Instant::now();
    let (fa, fb) = (features(&v, "a"), features(&v, "b"));
    std::thread::sleep(RUN);
    a.check_running();
    b.check_running();
    // txonly's frames carry port a's MAC as their source.
    assert_learned(&v, MAC_A, "a");

    // A stops first; B then drains what vnetd already put in its ring.
    let ra = a.stop();
    let ran = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let rb = b.stop();
    let (sa, sb) = settled_stats(&v);
    let (a_tx, b_rx) = (ra.ports[0].tx, rb.ports[0].rx);
    eprintln!(
        "[{variant}] {ran:.1?} of traffic: testpmd a TX-packets {a_tx}, vnetd a.rx {} b.tx {}, \
         testpmd b RX-packets {b_rx} ({:.2} Mpps); drops a {} b {}; \
         features a [{fa}] b [{fb}]",
        sa.rx_packets,
        sb.tx_packets,
        b_rx as f64 / ran.as_secs_f64() / 1e6,
        drops(&sa),
        drops(&sb),
    );

    assert_eq!(ra.macs, vec![MAC_A], "port MAC of testpmd a");
    assert_eq!(rb.macs, vec![MAC_B], "port MAC of testpmd b");
    let mrg = extra.contains("mrg_rxbuf=0");
    assert_eq!(has_feature(&fb, "MRG_RXBUF"), !mrg, "b features: {fb}");
    assert!(has_feature(&fa, "VERSION_1"), "a features: {fa}");

    assert!(b_rx > MIN_PACKETS, "testpmd b received only {b_rx}");
    assert!(sa.rx_packets > MIN_PACKETS, "{sa:?}");
    assert!(sb.tx_packets > MIN_PACKETS, "{sb:?}");
    // vnetd took what A sent, but for what was still in A's TX ring when it stopped.
    assert_close("vnetd a.rx vs testpmd a TX", sa.rx_packets, a_tx, RING);
    // Every frame from a was flooded to b, the only other port, and either delivered or
    // dropped there (when B's RX ring was full: B polls slower than A sends).
    assert_eq!(sa.total_drops(), 0, "{sa:?}");
    assert_eq!(
        sb.tx_packets + sb.total_drops(),
        sa.rx_packets,
        "frames from a neither delivered to b nor counted dropped: {sa:?} {sb:?}"
    );
    assert_eq!((sa.tx_packets, sb.rx_packets), (0, 0), "{sa:?} {sb:?}");
    // B received what vnetd delivered, but for what was still in its RX ring.
    assert_close("testpmd b RX vs vnetd b.tx", b_rx, sb.tx_packets, RING);

    drop(a);
    drop(b);
    assert_ports_released(&mut v);
    eprintln!("[{variant}] done in {:.1?}", t0.elapsed());
}

#[test]
fn testpmd_txonly_to_rxonly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    // DPDK's defaults (mergeable RX buffers, in-order requested but not offered by vnetd),
    // then one-descriptor RX buffers without in-order.
    txonly_to_rxonly(&bin, "default devargs", "");
    txonly_to_rxonly(&bin, "mrg_rxbuf=0", "in_order=0,mrg_rxbuf=0");
}

#[test]
fn testpmd_io_forward_both_ports() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    let mut v = vnetd();
    let cpus = cpus();
    let (c0, c1) = (cpus[0], cpus[cpus.len() - 1]);
    let t0 = Instant::now();

    // `mac` forwarding: what port 0 receives leaves port 1 with source MAC_B and destination
    // MAC_A (port 1's peer), and the other way round; `--tx-first` seeds a burst on each.
    let mut t = Testpmd::start(
        &bin,
        &v.dir,
        "ab-mac",
        (c0, c1),
        &[
            Vdev {
                sock: &v.sock("a"),
                mac: MAC_A,
                extra: "in_order=0",
            },
            Vdev {
                sock: &v.sock("b"),
                mac: MAC_B,
                extra: "in_order=0",
            },
        ],
        &[
            "--forward-mode=mac",
            "--port-topology=paired",
            "--tx-first",
            &format!("--eth-peer=0,{}", fmt_mac(MAC_B)),
            &format!("--eth-peer=1,{}", fmt_mac(MAC_A)),
        ],
    );
    wait_until("traffic both ways", &v, &mut [&mut t], |v| {
        v.port_stats("a").tx_packets > 0 && v.port_stats("b").tx_packets > 0
    });
    let started = Instant::now();
    let (fa, fb) = (features(&v, "a"), features(&v, "b"));
    std::thread::sleep(RUN);
    t.check_running();
    assert_learned(&v, MAC_A, "a");
    assert_learned(&v, MAC_B, "b");
    let r = t.stop();
    let ran = started.elapsed();
    let (sa, sb) = settled_stats(&v);
    let (p0, p1) = (r.ports[0], r.ports.get(1).copied().unwrap_or_default());
    eprintln!(
        "{ran:.1?} of traffic: testpmd port0 {p0:?} port1 {p1:?}; vnetd a rx {} tx {}, \
         b rx {} tx {} ({:.2} Mpps each way); drops a {} b {}; features a [{fa}] b [{fb}]",
        sa.rx_packets,
        sa.tx_packets,
        sb.rx_packets,
        sb.tx_packets,
        p0.rx as f64 / ran.as_secs_f64() / 1e6,
        drops(&sa),
        drops(&sb),
    );

    assert_eq!(r.macs, vec![MAC_A, MAC_B], "port MACs");
    assert_eq!(r.ports.len(), 2, "{r:?}");
    assert!(
        p0.rx > MIN_PACKETS,
        "testpmd port 0 received only {}",
        p0.rx
    );
    assert!(
        p1.rx > MIN_PACKETS,
        "testpmd port 1 received only {}",
        p1.rx
    );
    assert!(sa.tx_packets > MIN_PACKETS, "{sa:?}");
    assert!(sb.tx_packets > MIN_PACKETS, "{sb:?}");
    // Each port's frames come out of the other, but for the rings' contents at the stop.
    assert_close(
        "vnetd a.rx vs testpmd port 0 TX",
        sa.rx_packets,
        p0.tx,
        RING,
    );
    assert_close(
        "vnetd b.rx vs testpmd port 1 TX",
        sb.rx_packets,
        p1.tx,
        RING,
    );
    assert_close(
        "testpmd port 0 RX vs vnetd a.tx",
        p0.rx,
        sa.tx_packets,
        RING,
    );
    assert_close(
        "testpmd port 1 RX vs vnetd b.tx",
        p1.rx,
        sb.tx_packets,
        RING,
    );
    // Every frame from one port went to the other: delivered, dropped at egress, or, once
    // testpmd closed the other port (its FDB entry flushed, the frame flooded to nobody),
    // counted as `no_destination` at ingress. Exact.
    let dropped = |s: &api::PortStats, r: &str| s.drops.get(r).copied().unwrap_or(0);
    let egress_drops = |s: &api::PortStats| {
        dropped(s, "no_rx_buffer") + dropped(s, "port_down") + dropped(s, "too_big")
    };
    assert_eq!(
        sb.tx_packets + egress_drops(&sb) + dropped(&sa, "no_destination"),
        sa.rx_packets,
        "frames from a: {sa:?} {sb:?}"
    );
    assert_eq!(
        sa.tx_packets + egress_drops(&sa) + dropped(&sb, "no_destination"),
        sb.rx_packets,
        "frames from b: {sa:?} {sb:?}"
    );

    drop(t);
    assert_ports_released(&mut v);
    eprintln!("done in {:.1?}", t0.elapsed());
}

#[test]
fn parses_testpmd_report() {
    let out = "\
Configuring Port 0 (socket 0)
Port 0: 52:54:00:D0:00:0A
Port 1: 52:54:00:D0:00:0B
Press enter to exit
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 5463648        RX-dropped: 0             RX-total: 5463648
  TX-packets: 5462720        TX-dropped: 0             TX-total: 5462720
  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 12             RX-dropped: 0             RX-total: 12
  TX-packets: 34             TX-dropped: 5             TX-total: 39
  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 10926336       RX-dropped: 0             RX-total: 10926336
Port 0 is closed
";
    let r = parse_report(out);
    assert_eq!(r.macs, vec![MAC_A, MAC_B]);
    assert_eq!(
        r.ports.iter().map(|p| (p.rx, p.tx)).collect::<Vec<_>>(),
        vec![(5463648, 5462720), (12, 34)]
    );
}
