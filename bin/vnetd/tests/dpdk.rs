//! A third-party frontend on vnetd: DPDK's `net_virtio_user` PMD in `dpdk-testpmd`.
//!
//! 1. `testpmd_txonly_to_rxonly`: one testpmd generates 64-byte frames to an unknown unicast
//!    MAC on port a, vnetd floods them to port b where a second testpmd receives them; once
//!    with DPDK's default virtio-user devargs (mergeable RX buffers) and once without
//!    mergeable RX buffers or in-order.
//!    `testpmd_txonly_to_rxonly_packed` does the same on packed virtqueues (`packed_vq=1`),
//!    with and without in-order and mergeable RX buffers.
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

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::testpmd::*;
use common::*;

/// The tests busy-poll cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long traffic runs.
const RUN: Duration = Duration::from_secs(3);
/// Frames that may be in flight on one ring when a testpmd stops: virtio-user's default
/// (and maximum) queue size.
const RING: u64 = 256;
/// Enough to show sustained forwarding rather than a few bursts.
const MIN_PACKETS: u64 = 1000;

const MAC_A: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xd0, 0x00, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xd0, 0x00, 0x0b]);
/// A station nobody has: frames to it are flooded.
const MAC_UNKNOWN: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xd0, 0x00, 0x99]);

/// vnetd with ports a and b, whose config space MACs match the virtio-user `mac=` devargs
/// (DPDK releases that read the MAC back from the device then agree with the devarg).
fn vnetd() -> Vnetd {
    let (ma, mb) = (format!("mac={}", MAC_A), format!("mac={}", MAC_B));
    Vnetd::start_ports(&[("a", &ma), ("b", &mb)])
}

/// testpmd's ports 0 and 1 on vnetd's a and b, one queue pair, `mac` forwarding.
fn paired_ab() -> Paired {
    Paired {
        macs: [MAC_A, MAC_B],
        queues: 1,
        min_packets: MIN_PACKETS,
        slack: RING,
    }
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
        &[VirtioUser {
            sock: &v.sock("b"),
            mac: MAC_B,
            queues: 1,
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
        &[VirtioUser {
            sock: &v.sock("a"),
            mac: MAC_A,
            queues: 1,
            extra,
        }],
        &[
            "--forward-mode=txonly",
            &format!("--eth-peer=0,{}", MAC_UNKNOWN),
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
    // The ring layout asked for is the one negotiated, on both ports.
    let packed = extra.contains("packed_vq=1");
    assert_eq!(has_feature(&fa, "packed"), packed, "a features: {fa}");
    assert_eq!(has_feature(&fb, "packed"), packed, "b features: {fb}");
    let in_order = !extra.contains("in_order=0");
    assert_eq!(has_feature(&fa, "in_order"), in_order, "a features: {fa}");
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
    // DPDK's defaults (split rings, mergeable RX buffers, in-order), then one-descriptor
    // RX buffers without in-order.
    txonly_to_rxonly(&bin, "default devargs", "");
    txonly_to_rxonly(&bin, "mrg_rxbuf=0", "in_order=0,mrg_rxbuf=0");
}

#[test]
fn testpmd_txonly_to_rxonly_packed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    // Packed virtqueues (§2.8): in-order (DPDK's default) and not, with and without
    // mergeable RX buffers.
    txonly_to_rxonly(&bin, "packed", "packed_vq=1");
    txonly_to_rxonly(&bin, "packed in_order=0", "packed_vq=1,in_order=0");
    txonly_to_rxonly(&bin, "packed mrg_rxbuf=0", "packed_vq=1,mrg_rxbuf=0");
    txonly_to_rxonly(
        &bin,
        "packed in_order=0 mrg_rxbuf=0",
        "packed_vq=1,in_order=0,mrg_rxbuf=0",
    );
}

#[test]
fn testpmd_io_forward_both_ports() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    let mut v = vnetd();
    let t0 = Instant::now();
    // `mac` forwarding: what port 0 receives leaves port 1 with source MAC_B and destination
    // MAC_A (port 1's peer), and the other way round; `--tx-first` seeds a burst on each.
    let paired = paired_ab();
    let mut t = paired.start(&bin, &v, "ab-mac");
    paired.check(&v, &mut t, Instant::now(), RUN, "");

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

#[test]
fn testpmd_forwards_through_vnetd_running_as_nobody() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    // The hardened daemon: nobody, no capabilities, seccomp enforced (the default).
    let (ma, mb) = (format!("mac={}", MAC_A), format!("mac={}", MAC_B));
    let v = Vnetd::start_ports_args(&[("a", &ma), ("b", &mb)], &["--user", "nobody"]);
    let paired = paired_ab();
    let mut t = paired.start(&bin, &v, "ab-nobody");
    paired.check(&v, &mut t, Instant::now(), RUN, " (vnetd as nobody)");
    let status = std::fs::read_to_string(format!("/proc/{}/status", v.pid())).unwrap();
    assert!(status.contains("Uid:\t65534"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
}

/// vnetd's rx counter of port `name`.
fn rx_of(v: &Vnetd, name: &str) -> u64 {
    v.port_stats(name).rx_packets
}

/// Port a's receive rate (frames/s) while `during` runs.
fn rate_during(v: &Vnetd, during: impl FnOnce()) -> f64 {
    let (r, t) = (rx_of(v, "a"), Instant::now());
    during();
    (rx_of(v, "a") - r) as f64 / t.elapsed().as_secs_f64()
}

/// Prints port a's rate alone and under `what` (for the record: timings belong to
/// benchmarks, not to pass/fail), and checks that forwarding went on.
fn report_rates(quiet: f64, busy: f64, what: &str) {
    eprintln!(
        "port a rx: {:.3} Mpps alone, {:.3} Mpps {what} ({:.0} %)",
        quiet / 1e6,
        busy / 1e6,
        100.0 * busy / quiet.max(1.0)
    );
    assert!(busy > 0.0, "forwarding stopped {what}");
}

#[test]
fn testpmd_keeps_forwarding_while_a_port_comes_and_goes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    // vnetd starts with no ports: a and b are added at runtime, as `vnetctl add-port` does.
    let dir = test_dir("vnet-dpdk-runtime");
    let args = vec![
        "--control".to_string(),
        dir.join("ctl.sock").display().to_string(),
    ];
    let v = Vnetd::start_with(dir, &args, vec![]);
    let call = |req: api::Request| match v.call(req) {
        api::Response::Done { .. } => {}
        other => panic!("{other:?}"),
    };
    for (name, mac) in [("a", MAC_A), ("b", MAC_B)] {
        call(api::Request::AddPort {
            kind: api::PortKind::VhostUser,
            spec: format!("name={name},socket={},mac={mac}", v.sock(name).display()),
        });
    }
    let paired = paired_ab();
    let mut t = paired.start(&bin, &v, "ab-churn");
    // The loop's rate alone, then while port x is added and removed 100 times.
    let quiet = rate_during(&v, || std::thread::sleep(Duration::from_secs(2)));
    let mut last = rx_of(&v, "a");
    let churn = rate_during(&v, || {
        for round in 0..100 {
            let sock = v.dir.join("x.sock");
            call(api::Request::AddPort {
                kind: api::PortKind::VhostUser,
                spec: format!("name=x,socket={}", sock.display()),
            });
            call(api::Request::DelPort { name: "x".into() });
            // At an operator's pace rather than flat out: 50 changes a second.
            std::thread::sleep(Duration::from_millis(20));
            if round % 10 == 9 {
                // The loop never stops (counters are published within a few ms).
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut now = rx_of(&v, "a");
                while now <= last && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                    now = rx_of(&v, "a");
                }
                assert!(now > last, "forwarding stopped at round {round}");
                last = now;
            }
        }
    });
    report_rates(quiet, churn, "while x came and went 100 times");
    t.check_running();
    drop(t);
    assert!(!v.dir.join("x.sock").exists());
}

#[test]
fn testpmd_keeps_forwarding_while_metrics_are_scraped() {
    use std::io::{Read, Write};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ma, mb) = (format!("mac={}", MAC_A), format!("mac={}", MAC_B));
    let v = Vnetd::start_ports_args(
        &[("a", &ma), ("b", &mb)],
        &["--metrics", &format!("127.0.0.1:{port}")],
    );
    let paired = paired_ab();
    let mut t = paired.start(&bin, &v, "ab-scraped");
    let scrape = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.contains("vnet_port_rx_packets_total{port=\"a\""),
            "{out}"
        );
    };
    // The loop's rate alone, then scraped 20 times a second.
    let quiet = rate_during(&v, || std::thread::sleep(Duration::from_secs(2)));
    let scraped = rate_during(&v, || {
        for _ in 0..40 {
            scrape();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    report_rates(quiet, scraped, "scraped 20 times a second");
    t.check_running();
}

#[test]
fn testpmd_keeps_forwarding_while_captured_without_a_reader() {
    use std::io::{BufRead, Write};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    let v = vnetd();
    let paired = paired_ab();
    let mut t = paired.start(&bin, &v, "ab-captured");
    // Windows alone and under a capture of both directions whose reader never reads
    // (the stream backs up, the rings fill, frames are lost to the capture, not to the
    // switch), alternated three times: this host's rate moves between runs by itself.
    let mut pairs = Vec::new();
    for _ in 0..3 {
        let quiet = rate_during(&v, || std::thread::sleep(Duration::from_secs(1)));
        let s = std::os::unix::net::UnixStream::connect(v.dir.join("ctl.sock")).unwrap();
        let req = api::Request::Capture {
            port: "a".into(),
            take_in: true,
            take_out: true,
            snaplen: 262_144,
            count: None,
        };
        (&s).write_all(api::encode_line(&req).as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.contains("capturing port a"), "{line}");
        // Long enough for the 4 MiB rings to fill.
        std::thread::sleep(Duration::from_millis(300));
        let captured = rate_during(&v, || std::thread::sleep(Duration::from_secs(1)));
        report_rates(quiet, captured, "captured with no reader");
        pairs.push((quiet, captured));
        drop(s);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (q, c) = (
        median(pairs.iter().map(|p| p.0).collect()),
        median(pairs.iter().map(|p| p.1).collect()),
    );
    report_rates(q, c, "captured with no reader (medians of 3 windows each)");
    t.check_running();
}
