//! TAP ports: frames between frontends and the host kernel, in a network namespace the
//! test creates (addresses from 198.18.0.0/15).

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::netns::*;
use common::*;
use frontend::Frontend;
use virtio_net::features as f;
use wire::Ipv4Addr;

/// vnetd with a TAP port `host0` (interface `ifn` in `ns`, `extra` options) and
/// server-mode vhost-user ports.
fn vnetd_with_tap(ns: &Netns, ifn: &str, extra: &str, ports: &[&str]) -> Vnetd {
    vnetd_with_tap_workers(ns, ifn, extra, ports, 1)
}

fn vnetd_with_tap_workers(
    ns: &Netns,
    ifn: &str,
    extra: &str,
    ports: &[&str],
    workers: usize,
) -> Vnetd {
    vnetd_with_tap_args(ns, ifn, extra, ports, &["--workers", &workers.to_string()])
}

/// [`vnetd_with_tap`] with more vnetd arguments.
fn vnetd_with_tap_args(ns: &Netns, ifn: &str, extra: &str, ports: &[&str], more: &[&str]) -> Vnetd {
    let dir = test_dir("vnet-tap");
    let sep = if extra.is_empty() { "" } else { "," };
    let mut args = vec![
        "--control".to_string(),
        dir.join("ctl.sock").display().to_string(),
        "--tap".into(),
        format!("name=host0,ifname={ifn},netns={}{sep}{extra}", ns.name()),
    ];
    args.extend(more.iter().map(|a| a.to_string()));
    for p in ports {
        args.push("--vhost-user".into());
        args.push(format!(
            "name={p},socket={}",
            dir.join(format!("{p}.sock")).display()
        ));
    }
    Vnetd::start_with(
        dir,
        &args,
        ports.iter().map(|p| format!("{p}.sock")).collect(),
    )
}

const HOST_IP: &str = "198.18.0.1";
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn ifname(tag: &str) -> String {
    format!("vt{tag}{}", std::process::id() % 100_000)
}

/// Answers ARP and ping for GUEST_IP on `fe` until `stop`; counts echo requests and
/// remembers the largest frame seen.
fn responder(
    mut fe: Frontend,
    stop: Arc<AtomicBool>,
    echoes: Arc<AtomicU64>,
    largest: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Frontend> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some((_, fr)) = fe.recv(0, Duration::from_millis(50)).unwrap() else {
                continue;
            };
            largest.fetch_max(fr.len() as u64, Ordering::Relaxed);
            if let Some(reply) = responder::answer(&fr, mac(2), GUEST_IP) {
                if reply.get(12..14) == Some(&[0x08, 0x00]) {
                    echoes.fetch_add(1, Ordering::Relaxed);
                }
                fe.send(0, &Default::default(), &reply).unwrap();
            }
        }
        fe
    })
}

#[test]
fn host_pings_a_frontend_through_a_tap_in_a_namespace() {
    if !can_use_tap() {
        return;
    }
    for queues in [1, 2] {
        ping_through_tap(queues, 1);
    }
    // Two workers: the TAP's queue 0 is read by worker 0, port a runs on worker 1, so
    // host-to-guest frames cross workers; with 2 queues each worker reads one.
    for queues in [1, 2] {
        ping_through_tap(queues, 2);
    }
}

fn ping_through_tap(queues: u16, workers: usize) {
    let ns = Netns::for_test(&format!("tap1q{queues}w{workers}")).unwrap();
    let ifn = ifname(&format!("a{queues}{workers}"));
    let v = vnetd_with_tap_workers(&ns, &ifn, &format!("queues={queues}"), &["a"], workers);
    // The workers log the queues they took as they get them: wait for the lines.
    let wanted: Vec<String> = if workers == 1 {
        vec![format!("with {queues} queue(s)")]
    } else {
        // Port a (id 0) runs on worker 0; the TAP (id 1) queue q on worker (1 + q) % 2.
        (0..usize::from(queues))
            .map(|q| format!("with 1 queue(s) on worker {}", (1 + q) % 2))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !wanted.iter().all(|w| v.log_text().contains(w.as_str())) {
        assert!(
            std::time::Instant::now() < deadline,
            "{wanted:?} not all in the log:\n{}",
            v.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = ns
        .command(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", &ifn])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    if workers == 2 {
        let log = v.log_text();
        assert!(log.contains("port a: ring 0 started on worker 0"), "{log}");
    }
    let host0 = v.ports().into_iter().find(|p| p.name == "host0").unwrap();
    assert_eq!(
        host0.ifname.as_deref(),
        Some(format!("{ifn}@{}", ns.name()).as_str())
    );

    let stop = Arc::new(AtomicBool::new(false));
    let echoes = Arc::new(AtomicU64::new(0));
    let largest = Arc::new(AtomicU64::new(0));
    let t = responder(a, stop.clone(), echoes.clone(), largest.clone());
    // Small pings, then full-size frames (1472 bytes of ICMP payload: a 1514-byte frame).
    for size in ["56", "1472"] {
        let out = ns
            .command(&[
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "3",
                "-s",
                size,
                "198.18.0.2",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ping -s {size} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            v.log_text()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _a = t.join().unwrap();
    assert_eq!(echoes.load(Ordering::Relaxed), 6);
    assert_eq!(
        largest.load(Ordering::Relaxed),
        1514,
        "host-to-guest frames arrive whole"
    );
    let s = v.port_stats("host0");
    assert!(s.rx_packets >= 7 && s.tx_packets >= 7, "{s:?}");
}

/// Sends `frame` with its virtio_net_hdr out of `ifname` in `ns` through an AF_PACKET
/// socket with PACKET_VNET_HDR, so the host stack hands the TAP a GSO frame as-is.
fn inject_with_vnet_hdr(ns: &Netns, ifname: &str, hdr_and_frame: &[u8]) {
    let path = std::env::temp_dir().join(format!("vnet-inject-{}.bin", std::process::id()));
    std::fs::write(&path, hdr_and_frame).unwrap();
    let py = format!(
        "import socket\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR\n\
         s.bind(('{ifname}', 0))\n\
         d = open('{}', 'rb').read()\n\
         n = s.send(d)\n\
         assert n == len(d), n\n",
        path.display()
    );
    let out = ns.command(&["python3", "-c", &py]).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "inject: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tso_frame_from_the_host_whole_to_offloading_guest_segmented_to_other() {
    use virtio_net::test_frames::{build_frame, check_segments, FrameSpec};
    if !can_use_tap() {
        return;
    }
    let ns = Netns::for_test("tap2").unwrap();
    let ifn = ifname("b");
    let v = vnetd_with_tap(&ns, &ifn, "", &["b", "c"]);
    let no_offloads = f::GUEST_CSUM | f::GUEST_TSO4 | f::GUEST_TSO6 | f::GUEST_ECN;
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    let mut c = connect(&v.sock("c"), frontend::DEFAULT_FEATURES & !no_offloads);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let spec = FrameSpec {
        payload_len: 60000,
        gso_size: 1448,
        ..FrameSpec::default()
    };
    let (hdr, frame) = build_frame(&spec);
    let mut raw = vec![0u8; 10];
    hdr.write(&mut raw);
    raw.extend_from_slice(&frame);
    inject_with_vnet_hdr(&ns, &ifn, &raw);
    let mut got_b = vec![];
    while let Some(x) = b.recv(0, Duration::from_secs(2)).unwrap() {
        got_b.push(x);
    }
    assert_eq!(got_b.len(), 1, "the offloading guest gets one 60 KB frame");
    assert_eq!(got_b[0].1, frame);
    assert_eq!(got_b[0].0.gso_size, 1448);
    let mut segs = vec![];
    while let Some((h, s)) = c.recv(0, Duration::from_secs(2)).unwrap() {
        assert_eq!(h.gso_type, virtio_net::GSO_NONE);
        segs.push(s);
    }
    assert_eq!(segs.len(), 60000usize.div_ceil(1448));
    check_segments(&hdr, &frame, &segs, true);
    let s = v.port_stats("host0");
    assert_eq!(s.rx_packets, 1, "{s:?}");
}

#[test]
fn deleted_tap_takes_only_its_port_down() {
    if !can_use_tap() {
        return;
    }
    let ns = Netns::for_test("tap3").unwrap();
    let ifn = ifname("c");
    let mut v = vnetd_with_tap(&ns, &ifn, "", &["a", "b"]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let out = ns.command(&["ip", "link", "del", &ifn]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A broadcast makes vnetd write to the TAP; the device is gone.
    let x = frame(MacAddr::BROADCAST, mac(1), 60, 1);
    a.send(0, &Default::default(), &x).unwrap();
    assert_eq!(b.recv(0, Duration::from_secs(3)).unwrap().unwrap().1, x);
    v.wait_ports("host0 down", |p| {
        p.iter()
            .any(|p| p.name == "host0" && p.state == api::PortState::Down)
    });
    assert!(v.log_text().contains("is gone"), "{}", v.log_text());
    for i in 0..10 {
        let y = frame(mac(2), mac(1), 100, i);
        a.send(0, &Default::default(), &y).unwrap();
        b.recv(0, Duration::from_secs(1)).unwrap();
        let z = frame(mac(1), mac(2), 100, i);
        b.send(0, &Default::default(), &z).unwrap();
        assert_eq!(a.recv(0, Duration::from_secs(3)).unwrap().unwrap().1, z);
    }
    assert!(v.alive());
}

/// CPU time (user + system, in clock ticks) vnetd has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn host_traffic_waits_a_bounded_time_for_guest_rx_buffers() {
    if !can_use_tap() {
        return;
    }
    let ns = Netns::for_test("tap4").unwrap();
    let ifn = ifname("d");
    let v = vnetd_with_tap(&ns, &ifn, "", &["a"]);
    address_host(&ns, &ifn, &[("198.18.0.2", mac(2))], &[]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let rx_chains = a.rx_chains();
    // Let the switch learn A's MAC, so host frames to it are unicast.
    a.send(
        0,
        &Default::default(),
        &frame(MacAddr::BROADCAST, mac(2), 60, 0),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // 2000 UDP datagrams to A, which does not read yet: its rx ring fills, then vnetd must
    // stop reading the TAP (the host's queue absorbs or drops the rest), not spin; a frame
    // it holds for A is dropped after a bounded wait.
    let py = "import socket\n\
              s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
              for i in range(2000):\n    s.sendto(i.to_bytes(4, 'big') * 16, ('198.18.0.2', 9))\n";
    assert!(ns
        .command(&["python3", "-c", py])
        .output()
        .unwrap()
        .status
        .success());
    std::thread::sleep(Duration::from_millis(200));
    let pid = v.pid();
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let idle = cpu_ticks(pid) - t0;
    assert!(
        idle < 30,
        "vnetd used {idle} ticks in 1 s while waiting: a busy loop"
    );
    // Now drain: every reposted buffer lets held frames through.
    let mut got = 0usize;
    while let Some((_, fr)) = a.recv(0, Duration::from_millis(500)).unwrap() {
        if fr.len() == 14 + 20 + 8 + 64 {
            got += 1;
        }
    }
    let s = v.port_stats("a");
    eprintln!("{got} frames through a ring of {rx_chains}; vnetd used {idle} ticks while waiting");
    assert!(
        got > rx_chains,
        "only {got} frames arrived (ring of {rx_chains}): nothing was held"
    );
    // A held frame waits a bounded time (vnetd's 50 ms), then is dropped and the next
    // one read: one guest that stops refilling cannot block the queue for good. Over the
    // 1.2 s wait that is a few dozen drops, not the thousands a spinning reader would make.
    let dropped = s.dropped("no_rx_buffer");
    assert!((1..=60).contains(&dropped), "{dropped} dropped: {s:?}");
    assert_eq!(s.tx_packets as usize, got, "{s:?}");
}

/// A frame held for a guest without rx buffers is released when that guest's rings stop,
/// not only after the hold time: with a 60 s hold, host frames for a second guest queued
/// behind it on the same TAP queue arrive as soon as the first guest disconnects.
#[test]
fn held_host_frame_is_released_when_its_guest_stops() {
    if !can_use_tap() {
        return;
    }
    let ns = Netns::for_test("tap6").unwrap();
    let ifn = ifname("h");
    let v = vnetd_with_tap_args(&ns, &ifn, "", &["a", "b"], &["--tap-hold-ms", "60000"]);
    address_host(
        &ns,
        &ifn,
        &[("198.18.0.2", mac(2)), ("198.18.0.3", mac(3))],
        &[],
    );
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    v.wait_ports("up", |p| {
        p.iter()
            .filter(|p| p.name != "host0")
            .all(|p| p.state == api::PortState::Up)
    });
    let rx_chains = a.rx_chains();
    for (fe, m) in [(&mut a, mac(2)), (&mut b, mac(3))] {
        fe.send(0, &Default::default(), &frame(MacAddr::BROADCAST, m, 60, 0))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    // More datagrams for A than its ring takes (A does not read): one is held, the rest
    // wait in the TAP queue; then datagrams for B, behind them.
    let send = |ip: &str, n: usize| {
        let py = format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for i in range({n}):\n    s.sendto(i.to_bytes(4, 'big') * 16, ('{ip}', 9))\n"
        );
        assert!(ns
            .command(&["python3", "-c", &py])
            .output()
            .unwrap()
            .status
            .success());
    };
    send("198.18.0.2", rx_chains + 40);
    send("198.18.0.3", 50);
    std::thread::sleep(Duration::from_millis(300));
    // A's frontend goes: its rings stop, and the frame held for it is dropped at once.
    drop(a);
    let mut got = 0usize;
    while let Some((_, fr)) = b.recv(0, Duration::from_secs(5)).unwrap() {
        // B's own datagrams (A's, once A is unknown, may be flooded to B too).
        if fr.len() == 14 + 20 + 8 + 64 && fr[..6] == mac(3).0 {
            got += 1;
            if got == 50 {
                break;
            }
        }
    }
    // Counters are published by the worker a little later (between bursts, before it
    // sleeps): wait for the release to show.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut s = v.port_stats("a");
    while s.dropped("port_down") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        s = v.port_stats("a");
    }
    eprintln!("B got {got} of 50; A: {s:?}");
    assert_eq!(
        got, 50,
        "B's frames stayed behind the frame held for A: {s:?}"
    );
    assert!(
        s.dropped("port_down") >= 1,
        "the held frame was not released as port_down: {s:?}"
    );
    assert_eq!(
        s.dropped("no_rx_buffer"),
        0,
        "a frame was dropped by the (60 s) hold time: {s:?}"
    );
}

#[test]
fn attaches_to_an_existing_persistent_tap() {
    if !can_use_tap() {
        return;
    }
    let ns = Netns::for_test("tap5").unwrap();
    let ifn = ifname("e");
    // A persistent device made beforehand, as an administrator (or libvirt) would.
    ns.run(&[
        "ip", "tuntap", "add", "dev", &ifn, "mode", "tap", "vnet_hdr",
    ])
    .unwrap();
    let v = vnetd_with_tap(&ns, &ifn, "", &["a"]);
    ns.run(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", &ifn])
        .unwrap();
    let a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let stop = Arc::new(AtomicBool::new(false));
    let echoes = Arc::new(AtomicU64::new(0));
    let t = responder(a, stop.clone(), echoes.clone(), Arc::new(AtomicU64::new(0)));
    let out = ns
        .command(&["ping", "-c", "2", "-i", "0.2", "-W", "3", "198.18.0.2"])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let _a = t.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(echoes.load(Ordering::Relaxed), 2);
    // The device outlives vnetd: it was not vnetd's to delete.
    drop(v);
    assert!(ns
        .command(&["ip", "link", "show", &ifn])
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn capture_of_a_ping_reads_back_with_tcpdump() {
    if !can_use_tap() || !have_tcpdump("capture test: no tcpdump to read the capture") {
        return;
    }
    let ns = Netns::for_test("tapcap").unwrap();
    let ifn = ifname("cap");
    let v = vnetd_with_tap(&ns, &ifn, "", &["a"]);
    let out = ns
        .command(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", &ifn])
        .output()
        .unwrap();
    assert!(out.status.success());
    let a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let stop = Arc::new(AtomicBool::new(false));
    let (echoes, largest) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let t = responder(a, stop.clone(), echoes.clone(), largest.clone());
    // 100 frames of port a, both ways: the guest's replies and the host's requests.
    let file = v.dir.join("a.pcapng");
    let cap = std::process::Command::new(workspace_bin("vnetctl"))
        .arg("--control")
        .arg(v.dir.join("ctl.sock"))
        .args(["capture", "a", "-c", "100", "-w"])
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !v.log_text().contains("port a: capture started") {
        assert!(std::time::Instant::now() < deadline, "{}", v.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = ns
        .command(&["ping", "-c", "60", "-i", "0.01", "-W", "2", "198.18.0.2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let done = cap.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{said}");
    assert!(said.contains("100 frame(s) captured, 0 lost"), "{said}");
    stop.store(true, Ordering::Relaxed);
    let _a = t.join().unwrap();
    let out = std::process::Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().count(), 100, "{text}");
    assert!(
        text.contains("198.18.0.1 > 198.18.0.2: ICMP echo request"),
        "{text}"
    );
    assert!(
        text.contains("198.18.0.2 > 198.18.0.1: ICMP echo reply"),
        "{text}"
    );
}

/// Whether tcpdump is there; if not, says why `what` is skipped (a failure under
/// `cargo xtask test`, which installs it).
fn have_tcpdump(what: &str) -> bool {
    if testbed::dpdk::which("tcpdump").is_some() {
        return true;
    }
    testbed::skip(
        "VNET_REQUIRE_TAP",
        &format!("{what} (run `cargo xtask deps`)"),
    );
    false
}

/// The frames of a classic pcap file (what `tcpdump -w` writes), in order.
fn pcap_frames(b: &[u8]) -> Vec<Vec<u8>> {
    assert!(b.len() >= 24, "no pcap header");
    let le = match b[0..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a pcap file: {:02x?}", &b[0..4]),
    };
    let u32_at = |i: usize| {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let n = u32_at(i + 8) as usize;
        i += 16;
        out.push(b[i..i + n].to_vec());
        i += n;
    }
    out
}

/// Bursts of frames from a guest to the host: written in batches (one io_uring
/// submission per burst, `--tap-batch on`, the default) or one `writev` each (`off`),
/// every frame reaches the host's interface whole and in the order sent, and the port's
/// counters say so.
#[test]
fn bursts_to_the_host_arrive_whole_and_in_order() {
    if !can_use_tap() || !have_tcpdump("TAP burst test: no tcpdump to capture on the host side") {
        return;
    }
    for batch in ["on", "off"] {
        let ns = Netns::for_test(&format!("tapb{batch}")).unwrap();
        let ifn = ifname(&format!("b{batch}"));
        let host_mac = mac(0xfe);
        let v = vnetd_with_tap_args(
            &ns,
            &ifn,
            &format!("mac={host_mac}"),
            &["a"],
            &["--tap-batch", batch],
        );
        let file = v.dir.join("host.pcap");
        const BURSTS: usize = 4;
        const PER_BURST: usize = 64;
        let total = BURSTS * PER_BURST;
        let mut dump = ns
            .command(&[
                "tcpdump",
                "-i",
                &ifn,
                "-U",
                "-n",
                "-c",
                &total.to_string(),
                "-w",
            ])
            .arg(&file)
            .args(["ether", "proto", "0x88b5"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = dump.stderr.take().unwrap();
        let mut said = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&said).contains("listening on") {
            assert!(
                std::time::Instant::now() < deadline,
                "tcpdump did not start"
            );
            let mut b = [0u8; 256];
            let n = std::io::Read::read(&mut err, &mut b).unwrap();
            assert!(n > 0, "tcpdump: {}", String::from_utf8_lossy(&said));
            said.extend_from_slice(&b[..n]);
        }
        let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
        v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
        let mut sent = Vec::new();
        for b in 0..BURSTS {
            let frames: Vec<Vec<u8>> = (0..PER_BURST)
                .map(|i| {
                    let seq = b * PER_BURST + i;
                    let mut f = frame(host_mac, mac(2), 60 + (seq * 97) % 1455, seq as u8);
                    f[14..18].copy_from_slice(&(seq as u32).to_be_bytes());
                    f
                })
                .collect();
            let burst: Vec<(virtio_net::NetHdr, &[u8])> = frames
                .iter()
                .map(|f| (virtio_net::NetHdr::default(), f.as_slice()))
                .collect();
            a.send_burst(0, &burst).unwrap();
            sent.extend(frames);
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = dump.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = dump.kill();
                let _ = dump.wait();
                panic!(
                    "tap-batch {batch}: tcpdump saw fewer than {total} frames; stats: {:?}",
                    v.port_stats("host0")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "tcpdump: {status}");
        let got = pcap_frames(&std::fs::read(&file).unwrap());
        assert_eq!(got.len(), total, "tap-batch {batch}");
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert!(
                g == s,
                "tap-batch {batch}: frame {i} differs: {} bytes, sent {}",
                g.len(),
                s.len()
            );
        }
        let st = v.port_stats("host0");
        assert_eq!(st.tx_packets, total as u64, "tap-batch {batch}: {st:?}");
        assert_eq!(
            st.tx_bytes,
            sent.iter().map(|f| f.len() as u64).sum::<u64>(),
            "tap-batch {batch}"
        );
        let said = v.log_text();
        assert!(!said.contains("io_uring unavailable"), "{said}");
    }
}

/// Host to guest in bursts: frames read from the TAP in batches (`--tap-batch on`; the
/// queue taken out of epoll and read every round while frames flow) or one `read` each,
/// in event and poll mode: every frame reaches the guest once, in the order sent.
#[test]
fn bursts_from_the_host_arrive_once_and_in_order() {
    if !can_use_tap() {
        return;
    }
    for (batch, mode) in [("on", "event"), ("on", "poll"), ("off", "event")] {
        let ns = Netns::for_test(&format!("taprb{batch}{mode}")).unwrap();
        let ifn = ifname(&format!("r{batch}{}", &mode[..1]));
        let v = vnetd_with_tap_args(
            &ns,
            &ifn,
            "",
            &["a"],
            &[
                "--tap-batch",
                batch,
                "--datapath",
                mode,
                "--tap-hold-ms",
                "10000",
            ],
        );
        // Room for every frame in the TAP's queue: the kernel drops none of them while
        // the guest is slow to read.
        address_host(
            &ns,
            &ifn,
            &[("198.18.0.2", mac(2))],
            &[&["ip", "link", "set", &ifn, "txqueuelen", "10000"]],
        );
        let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
        v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
        a.send(
            0,
            &Default::default(),
            &frame(MacAddr::BROADCAST, mac(2), 60, 0),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        const N: u32 = 3000;
        let py = format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for i in range({N}):\n    s.sendto(i.to_bytes(4, 'big') * (1 + i % 300), ('198.18.0.2', 9))\n"
        );
        let sender = ns.command(&["python3", "-c", &py]).spawn().unwrap();
        let mut seqs = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seqs.len() < N as usize && std::time::Instant::now() < deadline {
            let Some((_, fr)) = a.recv(0, Duration::from_millis(200)).unwrap() else {
                continue;
            };
            // IPv4 UDP to port 9 only (the host may send other things: IPv6, ARP).
            if fr.len() < 46 || fr[12..14] != [0x08, 0x00] || fr[23] != 17 || fr[36..38] != [0, 9] {
                continue;
            }
            let seq = u32::from_be_bytes([fr[42], fr[43], fr[44], fr[45]]);
            let copies = (fr.len() - 42) / 4;
            assert_eq!(
                copies as u32,
                1 + seq % 300,
                "{batch}/{mode}: frame {seq} cut"
            );
            seqs.push(seq);
        }
        let out = sender.wait_with_output().unwrap();
        assert!(out.status.success());
        let want: Vec<u32> = (0..N).collect();
        assert!(
            seqs == want,
            "{batch}/{mode}: {} frames, first out of order at {:?}; stats {:?}",
            seqs.len(),
            seqs.iter().zip(&want).position(|(a, b)| a != b),
            v.port_stats("a")
        );
        let s = v.port_stats("a");
        assert_eq!(s.dropped("no_rx_buffer"), 0, "{s:?}");
    }
}

/// Gives the host side of TAP `ifn` in `ns` the address 198.18.0.1/24 and a neighbour
/// entry for each guest `(ip, mac)` (no ARP needed), then runs `more`; each must succeed.
fn address_host(ns: &Netns, ifn: &str, guests: &[(&str, MacAddr)], more: &[&[&str]]) {
    let macs: Vec<String> = guests.iter().map(|(_, m)| m.to_string()).collect();
    let mut cmds: Vec<Vec<&str>> = vec![vec!["ip", "addr", "add", "198.18.0.1/24", "dev", ifn]];
    for ((ip, _), ll) in guests.iter().zip(&macs) {
        cmds.push(vec!["ip", "neigh", "add", ip, "lladdr", ll, "dev", ifn]);
    }
    cmds.extend(more.iter().map(|c| c.to_vec()));
    for cmd in cmds {
        assert!(
            ns.command(&cmd).output().unwrap().status.success(),
            "{cmd:?}"
        );
    }
}
