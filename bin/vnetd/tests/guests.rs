//! Real Linux guests on vnetd: Debian's cloud kernel with a busybox initramfs in QEMU (TCG),
//! attached with QEMU's vhost-user netdev (crates/testbed builds the image and runs the VMs).
//!
//! 1. `two_guests_ping`: a server guest (198.18.0.1) and a client guest (198.18.0.2) on
//!    ports vm1 and vm2; the client pings the server through the switch (ARP is flooded,
//!    then unicast), and vnetd's FDB holds both guests' MACs on their ports.
//! 2. `guest_reset_pings_again`: the client pings, is reset through the QEMU monitor (its
//!    driver resets the device and negotiates again with vnetd), boots again and pings
//!    again.
//! 3. `iperf_with_offloads`: the client pings the server and runs iperf3 TCP both ways
//!    (`iperf_tx`, `iperf_rx`) with QEMU's default offloads (checksum, TSO, mergeable RX
//!    buffers): GSO frames pass through vnetd whole.
//! 4. `iperf_without_offloads`: the same with every offload off on both guests.
//! 5. `iperf_offloading_guest_to_non_offloading_guest`: vm1 offloads, vm2 does not; vnetd
//!    segments vm1's TSO frames and completes their checksums for vm2, which its counters
//!    show (more frames delivered to vm2 than vm1 sent).
//! 6. `jumbo_mtu_9000`: ports with `mtu=9000`, QEMU `host_mtu=9000`, guests at MTU 9000: a
//!    full-size ping (8972 bytes of payload) and iperf3 both ways.
//! 7. `multiqueue_guests`: QEMU guests with two queue pairs (`queues=2`, `mq=on`, 2 vCPUs)
//!    on two-pair ports and two workers: each pings the other, iperf3 with two streams
//!    both ways, and vnetd's per-pair counters show both pairs of both ports carried
//!    frames.
//! 8. `vnetd_connects_to_listening_qemu`: QEMU listens on the sockets, vnetd's ports are
//!    `client`s; the guests ping each other.
//!
//! The tests take one lock and run one at a time (TCG guests need the CPUs); the
//! throughput figures are printed (`--nocapture` shows them).
//!
//! Without QEMU or what the image is built from (`cargo xtask deps` installs them), the tests
//! print why and pass, unless `VNET_REQUIRE_GUESTS=1` (which `cargo xtask test` sets).
//! On a failure the guests' consoles, QEMU's output and vnetd's log are printed.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use api::{PortMode, PortState, Request, Response};
use common::guest::*;
use common::*;
use testbed::{GuestArgs, GuestImage, Ready, Role, TestResult, Vm, VmConfig};

/// Guests under TCG are CPU-heavy: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// From starting QEMU to `VNET-READY` (a few seconds when the machine is idle).
const BOOT: Duration = Duration::from_secs(120);
/// From `VNET-READY` to `VNET-DONE` of a client.
/// How long a client waits for its peer to answer a ping.
const PEER_WAIT_SECS: u32 = 60;

const IP_1: &str = "198.18.0.1";
const IP_2: &str = "198.18.0.2";
const MAC_1: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x18, 0x00, 0x01]);
const MAC_2: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x18, 0x00, 0x02]);

/// Waits for a guest's `VNET-READY` and checks its MAC and link.
fn ready(vm: &mut Vm, mac: MacAddr) -> Ready {
    let r = ok(&format!("{} ready", vm.name()), vm.wait_ready(BOOT));
    assert_eq!(r.mac, Some(mac), "{}", r.line);
    assert!(
        r.link_up(),
        "{}: link down at boot (did vnetd drop QEMU's vhost-user connection? see its log): {}",
        vm.name(),
        r.line
    );
    r
}

/// The server guest on vm1 and the client's configuration on vm2: the client pings.
fn configs<'a>(v: &Vnetd, image: &'a GuestImage, client: GuestArgs) -> [VmConfig<'a>; 2] {
    let logs = v.dir.join("guests");
    let mut c1 = VmConfig::new("vm1", image, v.sock("vm1"), &logs);
    c1.mac = MAC_1;
    c1.cmdline = GuestArgs::server(&format!("{IP_1}/24")).to_cmdline();
    let mut c2 = VmConfig::new("vm2", image, v.sock("vm2"), &logs);
    c2.mac = MAC_2;
    c2.cmdline = GuestArgs {
        wait_secs: PEER_WAIT_SECS,
        ..client
    }
    .to_cmdline();
    [c1, c2]
}

#[test]
fn two_guests_ping() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let v = Vnetd::start(&["vm1", "vm2"]);
    // The client stays up after its tests: a guest that powers off takes its port down,
    // and vnetd forgets the MACs learned there.
    let client = GuestArgs {
        stay: true,
        ..GuestArgs::client(&format!("{IP_2}/24"), IP_1, &["ping"])
    };
    let [mut c1, c2] = configs(&v, &image, client);
    // vm1 pings vm2 too: ping both ways, each guest ARPing for the other through the switch.
    c1.cmdline = GuestArgs {
        stay: true,
        wait_secs: PEER_WAIT_SECS,
        ..GuestArgs::client(&format!("{IP_1}/24"), IP_2, &["ping"])
    }
    .to_cmdline();

    // Both boot at once; each waits until the other answers pings.
    let mut vm1 = ok("boot vm1", Vm::boot(&c1));
    let mut vm2 = ok("boot vm2", Vm::boot(&c2));
    ready(&mut vm1, MAC_1);
    ready(&mut vm2, MAC_2);

    let results2 = ok("vm2 tests", vm2.wait_done(DONE));
    let results1 = ok("vm1 tests", vm1.wait_done(DONE));
    let ping2 = passed(&results2, "ping");
    let ping1 = passed(&results1, "ping");
    eprintln!(
        "guests booted in {:.1} s and {:.1} s; vm1 -> vm2: {}; vm2 -> vm1: {}",
        vm1.boot_time().unwrap_or_default().as_secs_f64(),
        vm2.boot_time().unwrap_or_default().as_secs_f64(),
        ping1.line,
        ping2.line
    );

    // The switch learned each guest on its own port.
    let fdb = match v.call(Request::Fdb) {
        Response::Fdb(entries) => entries,
        r => panic!("unexpected {r:?}"),
    };
    for (mac, port) in [(MAC_1, "vm1"), (MAC_2, "vm2")] {
        let mac = mac.to_string();
        assert!(
            fdb.iter()
                .any(|e| e.mac.to_string().eq_ignore_ascii_case(&mac) && e.port == port),
            "{mac} not learned on {port}: {fdb:?}"
        );
    }
}

#[test]
fn guest_reset_pings_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let v = Vnetd::start(&["vm1", "vm2"]);
    let client = GuestArgs {
        stay: true,
        ..GuestArgs::client(&format!("{IP_2}/24"), IP_1, &["ping"])
    };
    let [c1, c2] = configs(&v, &image, client);

    let mut vm1 = ok("boot vm1", Vm::boot(&c1));
    let mut vm2 = ok("boot vm2", Vm::boot(&c2));
    ready(&mut vm1, MAC_1);
    ready(&mut vm2, MAC_2);
    let first = ok("vm2 tests", vm2.wait_done(DONE));
    passed(&first, "ping");

    // A reset: the guest's driver resets the device; QEMU stops the rings (GET_VRING_BASE)
    // and, once the new kernel's driver is up, sets features, memory and rings again.
    ok("vm2 reset", vm2.reset());
    ready(&mut vm2, MAC_2);
    let second = ok("vm2 tests after the reset", vm2.wait_done(DONE));
    let ping = passed(&second, "ping");
    eprintln!(
        "vm2 booted again in {:.1} s; {}",
        vm2.boot_time().unwrap_or_default().as_secs_f64(),
        ping.line
    );
    v.wait_ports("both ports up", |ports| {
        ports.iter().all(|p| p.state == PortState::Up)
    });
}

// ---------------------------------------------------------------------------------------
// Pairs of guests under different device configurations: one helper boots the pair, the
// tests say what differs.

/// virtio-net-pci properties that turn off every offload vnetd offers (QEMU 7.2 names).
const NO_OFFLOADS: &str = "csum=off,guest_csum=off,host_tso4=off,guest_tso4=off,\
                           host_tso6=off,guest_tso6=off,mrg_rxbuf=off";

/// The negotiated features (vnetd's names) a guest has with QEMU's default offloads...
const OFFLOADS: &[&str] = &["csum", "guest_csum", "host_tso4", "guest_tso4", "mrg_rxbuf"];
/// ...and those it must not have with [`NO_OFFLOADS`].
const NO_OFFLOAD_FEATURES: &[&str] = &[
    "csum",
    "guest_csum",
    "host_tso4",
    "guest_tso4",
    "host_tso6",
    "guest_tso6",
    "mrg_rxbuf",
];

/// What the client runs in the throughput tests.
const IPERF_TESTS: &[&str] = &["ping", "iperf_tx", "iperf_rx"];

/// How a pair of guests (vm1 and vm2) is attached.
#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    /// vhost-user options of both vnetd ports, e.g. `mtu=9000`.
    port_opts: &'static str,
    /// QEMU listens on the sockets (`server=on,wait=off`) and vnetd connects (`client`).
    vnetd_connects: bool,
    /// Extra virtio-net-pci properties of vm1 and vm2.
    netdev_opts: [&'static str; 2],
    /// `vnet.mtu` of both guests.
    mtu: Option<u32>,
    /// Queue pairs of both guests' devices (QEMU `queues=N`, `mq=on`); 0 means 1. The
    /// ports need as many (`queues=N` in `port_opts`).
    queue_pairs: u16,
    /// vnetd's `--workers` (None: its default).
    workers: Option<&'static str>,
}

/// A pair that ran: the VMs (killed first on drop), vnetd and each guest's results.
struct Run {
    vms: [Vm; 2],
    v: Vnetd,
    results: [Vec<TestResult>; 2],
}

impl Run {
    /// vnetd's negotiated feature names of `port`.
    fn features(&self, port: &str) -> Vec<String> {
        let p = self.v.ports().into_iter().find(|p| p.name == port).unwrap();
        p.features
            .unwrap_or_default()
            .split_whitespace()
            .map(ToString::to_string)
            .collect()
    }

    /// Checks that `port` negotiated the offloads or none of them.
    fn check_offloads(&self, port: &str, offloading: bool) {
        let feats = self.features(port);
        if offloading {
            for f in OFFLOADS {
                assert!(
                    feats.iter().any(|x| x == f),
                    "{port}: {f} not negotiated: {feats:?}"
                );
            }
        } else {
            for f in NO_OFFLOAD_FEATURES {
                assert!(
                    !feats.iter().any(|x| x == f),
                    "{port}: {f} negotiated with offloads off: {feats:?}"
                );
            }
        }
    }

    /// One line of counters for both ports.
    fn stats_line(&self) -> String {
        let mut s = String::new();
        for p in ["vm1", "vm2"] {
            let st = self.v.port_stats(p);
            s.push_str(&format!(
                "{p}: from guest {} frames/{} B, to guest {} frames/{} B, drops {:?}; ",
                st.rx_packets, st.rx_bytes, st.tx_packets, st.tx_bytes, st.drops
            ));
        }
        s
    }
}

/// Starts vnetd with ports vm1 and vm2 as `pair` says.
fn start_vnetd(pair: &Pair) -> Vnetd {
    let ports = [("vm1", pair.port_opts), ("vm2", pair.port_opts)];
    if !pair.vnetd_connects {
        return match pair.workers {
            Some(n) => Vnetd::start_ports_args(&ports, &["--workers", n]),
            None => Vnetd::start_ports(&ports),
        };
    }
    assert!(
        pair.workers.is_none(),
        "--workers with client ports: not needed yet"
    );
    // vnetd connects to QEMU's sockets (and retries until they exist): no socket file to
    // wait for but the control socket.
    let dir = test_dir("vnet-test");
    let mut args = vec![
        "--control".to_string(),
        dir.join("ctl.sock").display().to_string(),
    ];
    for p in ["vm1", "vm2"] {
        let mut spec = format!(
            "name={p},socket={},client",
            dir.join(format!("{p}.sock")).display()
        );
        if !pair.port_opts.is_empty() {
            spec.push(',');
            spec.push_str(pair.port_opts);
        }
        args.push("--vhost-user".into());
        args.push(spec);
    }
    Vnetd::start_with(dir, &args, vec![])
}

/// Starts vnetd, boots vm1 (198.18.0.1) with `args1` and vm2 (198.18.0.2) with `args2`,
/// waits until both are ready and every client guest is done. Clients stay up after their
/// tests, so their ports (and vnetd's counters and FDB) stay as they were.
fn run_pair(image: &GuestImage, pair: Pair, args1: GuestArgs, args2: GuestArgs) -> Run {
    let mut v = start_vnetd(&pair);
    let logs = v.dir.join("guests");
    let mut cfgs = Vec::new();
    for (i, (name, mac, args)) in [("vm1", MAC_1, args1), ("vm2", MAC_2, args2)]
        .into_iter()
        .enumerate()
    {
        let mut c = VmConfig::new(name, image, v.sock(name), &logs);
        c.mac = mac;
        c.server = pair.vnetd_connects;
        c.netdev_opts = pair.netdev_opts[i].to_string();
        c.queue_pairs = pair.queue_pairs.max(1);
        c.cmdline = GuestArgs {
            mtu: pair.mtu,
            wait_secs: PEER_WAIT_SECS,
            stay: args.role == Role::Client,
            ..args
        }
        .to_cmdline();
        cfgs.push(c);
    }
    // Boot both before waiting for either: the boots overlap.
    let mut vms = [
        ok("boot vm1", Vm::boot(&cfgs[0])),
        ok("boot vm2", Vm::boot(&cfgs[1])),
    ];
    for (vm, mac) in vms.iter_mut().zip([MAC_1, MAC_2]) {
        let r = ready(vm, mac);
        if let Some(mtu) = pair.mtu {
            assert_eq!(r.mtu, mtu.to_string(), "{}: {}", vm.name(), r.line);
        }
    }
    let mut results = [Vec::new(), Vec::new()];
    for (i, cfg) in cfgs.iter().enumerate() {
        if cfg.cmdline.contains("vnet.role=client") {
            results[i] = wait_done(&vms[i], &mut v);
        }
    }
    Run { vms, v, results }
}

/// The server on vm1, the client on vm2 running ping and iperf3 both ways; checks that all
/// passed and prints the figures under `label`.
fn iperf_pair(image: &GuestImage, pair: Pair, label: &str) -> Run {
    let client = GuestArgs::client(&format!("{IP_2}/24"), IP_1, IPERF_TESTS);
    let run = run_pair(
        image,
        pair,
        GuestArgs::server(&format!("{IP_1}/24")),
        client,
    );
    let results = &run.results[1];
    let ping = passed(results, "ping");
    let tx = passed(results, "iperf_tx");
    let rx = passed(results, "iperf_rx");
    let gbps = |r: &TestResult| {
        let g = r.number("gbps").unwrap_or_default();
        assert!(g > 0.0, "no throughput: {}", r.line);
        g
    };
    eprintln!(
        "{label}: ping rtt {} ms; iperf3 TCP vm2->vm1 {:.3} Gbit/s (retransmits {}), \
         vm1->vm2 {:.3} Gbit/s (retransmits {}); boots {:.1} s / {:.1} s",
        ping.get("rtt_avg_ms").unwrap_or("?"),
        gbps(tx),
        tx.get("retransmits").unwrap_or("?"),
        gbps(rx),
        rx.get("retransmits").unwrap_or("?"),
        run.vms[0].boot_time().unwrap_or_default().as_secs_f64(),
        run.vms[1].boot_time().unwrap_or_default().as_secs_f64(),
    );
    eprintln!("{label}: {}", run.stats_line());
    run
}

#[test]
fn iperf_with_offloads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let run = iperf_pair(&image, Pair::default(), "offloads on");
    run.check_offloads("vm1", true);
    run.check_offloads("vm2", true);
}

/// Linux guests on packed virtqueues (QEMU `packed=on`): ping and iperf3 both ways, one
/// guest with offloads and one without, so both the offload and the plain paths of the
/// packed ring carry TCP.
#[test]
fn iperf_on_packed_rings() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    const PACKED_NO_OFFLOADS: &str = "packed=on,csum=off,guest_csum=off,host_tso4=off,\
                                      guest_tso4=off,host_tso6=off,guest_tso6=off,mrg_rxbuf=off";
    let pair = Pair {
        netdev_opts: ["packed=on", PACKED_NO_OFFLOADS],
        ..Pair::default()
    };
    let run = iperf_pair(&image, pair, "packed rings");
    for port in ["vm1", "vm2"] {
        let feats = run.features(port);
        assert!(
            feats.iter().any(|f| f == "packed"),
            "{port}: packed not negotiated: {feats:?}"
        );
    }
    run.check_offloads("vm1", true);
    run.check_offloads("vm2", false);
}

#[test]
fn iperf_without_offloads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let pair = Pair {
        netdev_opts: [NO_OFFLOADS, NO_OFFLOADS],
        ..Pair::default()
    };
    let run = iperf_pair(&image, pair, "offloads off");
    run.check_offloads("vm1", false);
    run.check_offloads("vm2", false);
}

#[test]
fn iperf_offloading_guest_to_non_offloading_guest() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    // vm1 (the iperf3 server) offloads, vm2 does not: in iperf_rx vm1 sends TSO frames
    // that vnetd segments (and checksums) in software for vm2.
    let pair = Pair {
        netdev_opts: ["", NO_OFFLOADS],
        ..Pair::default()
    };
    let run = iperf_pair(&image, pair, "vm1 offloads, vm2 not");
    run.check_offloads("vm1", true);
    run.check_offloads("vm2", false);
    // Everything vm2 gets comes from vm1 (the only other port): more frames delivered to
    // vm2 than vm1 sent means large frames were cut into segments on the way.
    let from_vm1 = run.v.port_stats("vm1").rx_packets;
    let to_vm2 = run.v.port_stats("vm2").tx_packets;
    assert!(
        to_vm2 > from_vm1,
        "no segmentation: vm1 sent {from_vm1} frames, vm2 got {to_vm2}: {}",
        run.stats_line()
    );
    eprintln!(
        "segmentation: vm1 sent {from_vm1} frames, vnetd delivered {to_vm2} to vm2 ({:.1}x)",
        to_vm2 as f64 / from_vm1.max(1) as f64
    );
}

#[test]
fn jumbo_mtu_9000() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let pair = Pair {
        port_opts: "mtu=9000",
        netdev_opts: ["host_mtu=9000", "host_mtu=9000"],
        mtu: Some(9000),
        ..Pair::default()
    };
    let client = GuestArgs::client(
        &format!("{IP_2}/24"),
        IP_1,
        &["ping", "ping_big", "iperf_tx", "iperf_rx"],
    );
    let run = run_pair(
        &image,
        pair,
        GuestArgs::server(&format!("{IP_1}/24")),
        client,
    );
    let results = &run.results[1];
    passed(results, "ping");
    let big = passed(results, "ping_big");
    assert_eq!(big.get("size"), Some("8972"), "{}", big.line);
    let [tx, rx] = iperf_passed(results, ["iperf_tx", "iperf_rx"]);
    for p in run.v.ports() {
        assert_eq!(p.mtu, 9000, "{p:?}");
    }
    eprintln!(
        "mtu 9000: ping_big (8972 B) rtt {} ms; iperf3 TCP vm2->vm1 {} Gbit/s, vm1->vm2 {} \
         Gbit/s",
        big.get("rtt_avg_ms").unwrap_or("?"),
        tx.get("gbps").unwrap_or("?"),
        rx.get("gbps").unwrap_or("?"),
    );
    eprintln!("mtu 9000: {}", run.stats_line());
}

/// QEMU multiqueue guests (`queues=2`, `mq=on`, 2 vCPUs) on two-pair ports served by two
/// workers: QEMU drives each pair as its own vhost device and (7.2) adds every memory
/// region once per pair. Each guest pings the other, vm2 runs iperf3 with two streams
/// both ways, and both queue pairs of both ports carry frames.
#[test]
fn multiqueue_guests() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let pair = Pair {
        port_opts: "queues=2",
        queue_pairs: 2,
        workers: Some("2"),
        ..Pair::default()
    };
    let run = run_pair(
        &image,
        pair,
        GuestArgs::client(&format!("{IP_1}/24"), IP_2, &["ping"]),
        GuestArgs::client(
            &format!("{IP_2}/24"),
            IP_1,
            &["ping", "iperf_tx_p2", "iperf_rx_p2"],
        ),
    );
    let ping1 = passed(&run.results[0], "ping");
    let ping2 = passed(&run.results[1], "ping");
    let [tx, rx] = iperf_passed(&run.results[1], ["iperf_tx_p2", "iperf_rx_p2"]);
    for port in ["vm1", "vm2"] {
        assert!(
            run.features(port).iter().any(|f| f == "mq"),
            "{port}: MQ not negotiated: {:?}",
            run.features(port)
        );
        let st = run.v.port_stats(port);
        assert_eq!(st.queues.len(), 2, "{st:?}");
        for q in &st.queues {
            assert!(
                q.rx_chains > 0 && q.tx_chains > 0,
                "{port}: queue pair {} carried nothing one way: {:?}",
                q.pair,
                st.queues
            );
        }
    }
    let log = run.v.log_text();
    assert!(!log.contains("refused"), "vnetd refused a request:\n{log}");
    eprintln!(
        "multiqueue: vm1 -> vm2 {}; vm2 -> vm1 {}; iperf3 -P 2 vm2->vm1 {} Gbit/s, vm1->vm2 \
         {} Gbit/s",
        ping1.line,
        ping2.line,
        tx.get("gbps").unwrap_or("?"),
        rx.get("gbps").unwrap_or("?"),
    );
    for port in ["vm1", "vm2"] {
        eprintln!("multiqueue {port}: {:?}", run.v.port_stats(port).queues);
    }
    eprintln!("multiqueue: {}", run.stats_line());
}

#[test]
fn vnetd_connects_to_listening_qemu() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let pair = Pair {
        vnetd_connects: true,
        ..Pair::default()
    };
    // Both guests are clients pinging each other.
    let run = run_pair(
        &image,
        pair,
        GuestArgs::client(&format!("{IP_1}/24"), IP_2, &["ping"]),
        GuestArgs::client(&format!("{IP_2}/24"), IP_1, &["ping"]),
    );
    let p1 = passed(&run.results[0], "ping");
    let p2 = passed(&run.results[1], "ping");
    for p in run.v.ports() {
        assert_eq!(p.mode, PortMode::Client, "{p:?}");
        assert_eq!(p.state, PortState::Up, "{p:?}");
    }
    eprintln!(
        "vnetd as the vhost-user client: vm1->vm2 rtt {} ms, vm2->vm1 rtt {} ms",
        p1.get("rtt_avg_ms").unwrap_or("?"),
        p2.get("rtt_avg_ms").unwrap_or("?")
    );
}
