//! A real Linux guest talking to the host kernel through vnetd's TAP port: the TAP device
//! lives in a network namespace the test creates, with 198.18.0.1/24 and an iperf3 server;
//! the guest (198.18.0.2/24, QEMU TCG on vhost-user port vm1) pings it and runs iperf3 TCP
//! both ways, once with QEMU's default offloads and once with every offload off (then
//! vnetd segments and checksums the host's TSO frames in software for the guest). The
//! namespace then pings the guest back.
//!
//! Needs root (namespaces, /dev/net/tun) and what the guest image is built from; without
//! them the tests print why and pass, unless `VNET_REQUIRE_TAP` is set (missing root or
//! TAP) or `VNET_REQUIRE_GUESTS=1` (missing QEMU or image).

mod common;

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::PortState;
use common::guest::*;
use common::netns::*;
use common::*;
use testbed::{GuestArgs, Vm, VmConfig};

/// Guests under TCG are CPU-heavy: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const BOOT: Duration = Duration::from_secs(120);
const PEER_WAIT_SECS: u32 = 60;

const HOST_IP: &str = "198.18.0.1";
const GUEST_IP: &str = "198.18.0.2";
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x18, 0x00, 0x02]);

/// virtio-net-pci properties that turn off every offload vnetd offers.
const NO_OFFLOADS: &str = "csum=off,guest_csum=off,host_tso4=off,guest_tso4=off,\
                           host_tso6=off,guest_tso6=off,mrg_rxbuf=off";

/// Starts `iperf3 -s` on HOST_IP in `ns` and waits until it listens.
fn iperf3_server(ns: &Netns) -> Process {
    let child = ns
        .command(&["iperf3", "-s", "-B", HOST_IP])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut p = Process(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = ns.run(&["ss", "-Hltn", "sport = :5201"]).unwrap();
        if !listening.trim().is_empty() {
            return p;
        }
        assert!(
            p.0.try_wait().unwrap().is_none(),
            "iperf3 -s exited in the namespace"
        );
        assert!(Instant::now() < deadline, "iperf3 -s does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One guest behind vnetd, the host end of vnetd's TAP port in a namespace: the guest
/// pings the host and runs iperf3 both ways; the host pings the guest.
fn guest_and_host(tag: &str, offloads: bool, label: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_use_tap() {
        return;
    }
    let Some(image) = guest_image() else { return };
    let ns = Netns::for_test(tag).unwrap();
    let ifname = format!("vg{tag}{}", std::process::id() % 100_000);
    let dir = test_dir("vnet-gtap");
    let args: Vec<String> = vec![
        "--control".into(),
        dir.join("ctl.sock").display().to_string(),
        "--tap".into(),
        format!("name=host0,ifname={ifname},netns={}", ns.name()),
        "--vhost-user".into(),
        format!("name=vm1,socket={}", dir.join("vm1.sock").display()),
    ];
    let mut v = Vnetd::start_with(dir, &args, vec!["vm1.sock".into()]);
    ns.run(&[
        "ip",
        "addr",
        "add",
        &format!("{HOST_IP}/24"),
        "dev",
        &ifname,
    ])
    .unwrap();
    ns.run(&["ip", "link", "set", &ifname, "up"]).unwrap();
    let _iperf3 = iperf3_server(&ns);

    let mut cfg = VmConfig::new("vm1", &image, v.sock("vm1"), v.dir.join("guests"));
    cfg.mac = GUEST_MAC;
    if !offloads {
        cfg.netdev_opts = NO_OFFLOADS.to_string();
    }
    cfg.cmdline = GuestArgs {
        wait_secs: PEER_WAIT_SECS,
        // Stay up after the tests, so the host can ping back and the port stays up.
        stay: true,
        ..GuestArgs::client(
            &format!("{GUEST_IP}/24"),
            HOST_IP,
            &["ping", "iperf_tx", "iperf_rx"],
        )
    }
    .to_cmdline();
    let mut vm = ok("boot vm1", Vm::boot(&cfg));
    let ready = ok("vm1 ready", vm.wait_ready(BOOT));
    assert_eq!(ready.mac, Some(GUEST_MAC), "{}", ready.line);
    assert!(ready.link_up(), "link down at boot: {}", ready.line);
    v.wait_ports("both ports up", |p| {
        p.iter().all(|p| p.state == PortState::Up)
    });
    let results = wait_done(&vm, &mut v);
    let ping = passed(&results, "ping");
    let [tx, rx] = iperf_passed(&results, ["iperf_tx", "iperf_rx"]);

    // And the other way: the host pings the guest.
    let out = ns
        .command(&["ping", "-c", "3", "-i", "0.2", "-W", "2", GUEST_IP])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "host -> guest ping failed: {text}");
    let host_rtt = text
        .lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|s| s.split('/').nth(1))
        .unwrap_or("?")
        .to_string();

    let host = v.port_stats("host0");
    let guest = v.port_stats("vm1");
    eprintln!(
        "{label}: guest -> host ping rtt {} ms, host -> guest {host_rtt} ms; iperf3 TCP \
         guest->host {} Gbit/s (retransmits {}), host->guest {} Gbit/s (retransmits {}); \
         boot {:.1} s",
        ping.get("rtt_avg_ms").unwrap_or("?"),
        tx.get("gbps").unwrap_or("?"),
        tx.get("retransmits").unwrap_or("?"),
        rx.get("gbps").unwrap_or("?"),
        rx.get("retransmits").unwrap_or("?"),
        vm.boot_time().unwrap_or_default().as_secs_f64(),
    );
    eprintln!(
        "{label}: host0: from host {} frames/{} B, to host {} frames/{} B, drops {:?}; \
         vm1: from guest {} frames/{} B, to guest {} frames/{} B, drops {:?}",
        host.rx_packets,
        host.rx_bytes,
        host.tx_packets,
        host.tx_bytes,
        host.drops,
        guest.rx_packets,
        guest.rx_bytes,
        guest.tx_packets,
        guest.tx_bytes,
        guest.drops
    );
    let feats = v
        .ports()
        .into_iter()
        .find(|p| p.name == "vm1")
        .and_then(|p| p.features)
        .unwrap_or_default();
    let has = |f: &str| feats.split_whitespace().any(|x| x == f);
    for f in ["csum", "guest_csum", "host_tso4", "guest_tso4", "mrg_rxbuf"] {
        assert_eq!(has(f), offloads, "{f} in vm1's features {feats:?}");
    }
    if !offloads {
        // The host's TCP sends TSO frames into the TAP (vnetd turned its offloads on):
        // the guest gets them cut into segments, so more frames than the host sent.
        assert!(
            guest.tx_packets > host.rx_packets,
            "no segmentation for the guest: host sent {} frames, guest got {}",
            host.rx_packets,
            guest.tx_packets
        );
    }
}

#[test]
fn guest_and_host_namespace_with_offloads() {
    guest_and_host("gt1", true, "tap, offloads on");
}

#[test]
fn guest_and_host_namespace_without_offloads() {
    guest_and_host("gt2", false, "tap, guest offloads off");
}
