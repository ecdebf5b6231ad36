//! Multiqueue vhost-user ports (`queues=2`): two queue pairs per port, negotiated with
//! VIRTIO_NET_F_MQ, every ring of both pairs running, frames sent on either pair delivered.
//!
//! 1. `frontends_two_queue_pairs_both_ways`: two userspace frontends with two queue pairs
//!    each, one and two workers; frames sent on pair 0 and on pair 1 of one port arrive
//!    unchanged at the other, both directions, counted on the pair they were sent on.
//! 2. `qemu_message_sequence_two_queue_pairs`: the same with the frontends replaying
//!    QEMU 7.2's message order for a multiqueue device (a vhost device per pair, regions
//!    added again by the second pair), with ADD_MEM_REG and with SET_MEM_TABLE.
//! 3. `testpmd_two_queue_pairs`: DPDK's `net_virtio_user` with `queues=2` and testpmd
//!    `--rxq=2 --txq=2` on both ports, `mac` forwarding through vnetd, every frame
//!    accounted for. DPDK's virtio PMD enables pair 1 with VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
//!    on its emulated control queue, which virtio-user turns into SET_VRING_ENABLE.
//!    Skipped without DPDK unless `VNET_REQUIRE_DPDK=1`.

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::testpmd::*;
use common::*;
use frontend::{Frontend, FrontendConfig, MemRegistration, SessionStyle};
use virtio_net::NetHdr;

/// The DPDK test busy-polls cores; the frontend test is light but shares the machine.
static SERIAL: Mutex<()> = Mutex::new(());

const PAIRS: u16 = 2;
const WAIT: Duration = Duration::from_secs(3);

/// How a test's frontends set up their session.
#[derive(Debug, Clone, Copy)]
struct Style {
    session: SessionStyle,
    mem: MemRegistration,
}

const DPDK_STYLE: Style = Style {
    session: SessionStyle::OneDevice,
    mem: MemRegistration::Auto,
};

fn connect_mq(path: &std::path::Path, style: Style) -> Frontend {
    let cfg = FrontendConfig {
        queue_pairs: PAIRS,
        session: style.session,
        mem_registration: style.mem,
        ..FrontendConfig::new(path)
    };
    Frontend::connect(cfg).unwrap_or_else(|e| panic!("{style:?}: {e}"))
}

/// The next frame on any queue pair of `f`: (pair, frame).
fn recv_any(f: &mut Frontend, timeout: Duration) -> Option<(u16, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    loop {
        for qp in 0..f.queue_pairs() {
            if let Some((_, b)) = f.recv(qp, Duration::ZERO).unwrap() {
                return Some((qp, b));
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until vnetd logged the start of every ring of both pairs of `ports`.
fn wait_rings_started(v: &Vnetd, ports: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = v.log_text();
        let missing: Vec<String> = ports
            .iter()
            .flat_map(|p| (0..2 * PAIRS).map(move |r| format!("port {p}: ring {r} started")))
            .filter(|l| !log.contains(l.as_str()))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rings not started: {missing:?}\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Port list checks: up, two queue pairs, MQ negotiated.
fn assert_mq_ports(v: &Vnetd, ports: &[&str]) {
    let list = v.ports();
    for name in ports {
        let p = list.iter().find(|p| p.name == *name).unwrap();
        assert_eq!(p.state, api::PortState::Up, "{p:?}");
        assert_eq!(p.queue_pairs, PAIRS, "{p:?}");
        let feats = p.features.clone().unwrap_or_default();
        assert!(
            feats
                .split_whitespace()
                .any(|x| x.eq_ignore_ascii_case("mq")),
            "MQ not negotiated on {name}: {feats}"
        );
    }
}

fn two_pairs_both_ways(workers: &str, style: Style) {
    let v = Vnetd::start_ports_args(
        &[("a", "queues=2"), ("b", "queues=2")],
        &["--workers", workers],
    );
    let mut a = connect_mq(&v.sock("a"), style);
    let mut b = connect_mq(&v.sock("b"), style);
    assert_eq!((a.queue_pairs(), b.queue_pairs()), (PAIRS, PAIRS));
    assert_ne!(a.negotiated_features() & virtio_net::features::MQ, 0);
    v.wait_ports("both ports up", |p| {
        p.iter().all(|p| p.state == api::PortState::Up)
    });
    wait_rings_started(&v, &["a", "b"]);
    assert_mq_ports(&v, &["a", "b"]);

    let h = NetHdr::default();
    let (ma, mb) = (mac(1), mac(2));
    let mut sent = [(0u64, 0u64); 2]; // (frames, bytes) from a, from b
    let mut sent_on = [[0u64; PAIRS as usize]; 2]; // frames from a, from b, by pair
    let mut tag = 0u8;
    for (from, to, src, dst, k) in [("a", "b", ma, mb, 0), ("b", "a", mb, ma, 1)] {
        for qp in 0..PAIRS {
            for len in [60, 1514, 9000] {
                tag = tag.wrapping_add(1);
                // Broadcast first (nothing learned yet), then unicast.
                for d in [MacAddr::BROADCAST, dst] {
                    let fr = frame(d, src, len, tag);
                    let (tx, rx) = if from == "a" {
                        (&mut a, &mut b)
                    } else {
                        (&mut b, &mut a)
                    };
                    tx.send(qp, &h, &fr).unwrap();
                    let (got_on, got) = recv_any(rx, WAIT).unwrap_or_else(|| {
                        panic!(
                            "[{workers} worker(s)] {len}-byte frame sent by {from} on pair \
                             {qp} never reached {to}:\n{}",
                            v.log_text()
                        )
                    });
                    assert!(
                        got == fr,
                        "[{workers} worker(s)] {from} pair {qp} -> {to} pair {got_on}: \
                         {len}-byte frame differs"
                    );
                    if workers == "1" {
                        // Both pairs of the receiver run on the one worker: a frame comes
                        // out on the pair it went in on.
                        assert_eq!(got_on, qp, "{from} pair {qp} -> {to}");
                    }
                    sent[k].0 += 1;
                    sent[k].1 += len as u64;
                    sent_on[k][usize::from(qp)] += 1;
                }
            }
        }
    }
    // Nothing else arrives (no hairpin, no duplicates from the other pair).
    assert!(recv_any(&mut a, Duration::from_millis(100)).is_none());
    assert!(recv_any(&mut b, Duration::from_millis(100)).is_none());

    std::thread::sleep(Duration::from_millis(50));
    let (sa, sb) = (v.port_stats("a"), v.port_stats("b"));
    assert_eq!((sa.rx_packets, sa.rx_bytes), sent[0], "{sa:?}");
    assert_eq!((sb.tx_packets, sb.tx_bytes), sent[0], "{sb:?}");
    assert_eq!((sb.rx_packets, sb.rx_bytes), sent[1], "{sb:?}");
    assert_eq!((sa.tx_packets, sa.tx_bytes), sent[1], "{sa:?}");
    assert_eq!(sa.total_drops() + sb.total_drops(), 0, "{sa:?} {sb:?}");
    // Per queue pair: every frame taken from the txq it was sent on; the rx buffers
    // filled cover at least one per frame delivered (a 9000-byte frame merges several).
    for (s, k) in [(&sa, 0), (&sb, 1)] {
        let taken: Vec<u64> = s.queues.iter().map(|q| q.rx_chains).collect();
        assert_eq!(taken, sent_on[k], "{}: {:?}", s.name, s.queues);
        let filled: u64 = s.queues.iter().map(|q| q.tx_chains).sum();
        assert!(filled >= s.tx_packets, "{}: {:?}", s.name, s.queues);
    }
    let log = v.log_text();
    assert!(
        !log.contains("refused") && !log.contains("dropping frontend"),
        "{style:?}: vnetd refused a request:\n{log}"
    );
}

#[test]
fn frontends_two_queue_pairs_both_ways() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for workers in ["1", "2"] {
        eprintln!("two queue pairs, {workers} worker(s)");
        two_pairs_both_ways(workers, DPDK_STYLE);
    }
}

/// QEMU's own message sequence for a `queues=2` device (each pair a vhost device of its
/// own on the socket: pair 1 sends ADD_MEM_REG again for every region QEMU 7.2 already
/// sent for pair 0), in both memory-table styles: every ring runs, frames cross on both
/// pairs, nothing is refused.
#[test]
fn qemu_message_sequence_two_queue_pairs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for mem in [MemRegistration::AddMemReg, MemRegistration::SetMemTable] {
        eprintln!("QEMU's sequence, {mem:?}");
        let style = Style {
            session: SessionStyle::QemuPerPair,
            mem,
        };
        two_pairs_both_ways("2", style);
    }
}

/// A frontend asking for more pairs than the port has is refused at connect, and the port
/// stays usable.
#[test]
fn more_pairs_than_the_port_has_are_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let v = Vnetd::start_ports(&[("a", "queues=2")]);
    let cfg = FrontendConfig {
        queue_pairs: 3,
        ..FrontendConfig::new(v.sock("a"))
    };
    let e = Frontend::connect(cfg).unwrap_err();
    assert!(matches!(e, frontend::FrontendError::Unsupported(_)), "{e}");
    // A one-pair frontend on a two-pair port uses pair 0 (no MQ needed).
    let one = common::connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    assert_eq!(one.negotiated_features() & virtio_net::features::MQ, 0);
    v.wait_ports("a up", |p| p.iter().all(|p| p.state == api::PortState::Up));
}

// ---- DPDK ----

/// How long traffic runs.
const RUN: Duration = Duration::from_secs(3);
/// Frames that may be in flight on one port's rings when testpmd stops: two rings of
/// virtio-user's default (and maximum) queue size.
const RINGS: u64 = 2 * 256;
const MIN_PACKETS: u64 = 1000;
const MAC_A: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xd0, 0x02, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xd0, 0x02, 0x0b]);

#[test]
fn testpmd_two_queue_pairs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = dpdk() else { return };
    let (ma, mb) = (
        format!("mac={},queues=2", MAC_A),
        format!("mac={},queues=2", MAC_B),
    );
    let mut v = Vnetd::start_ports(&[("a", &ma), ("b", &mb)]);
    let t0 = Instant::now();
    // `mac` forwarding, paired: what port 0 receives leaves port 1 towards MAC_A and the
    // other way round. With two rx and tx queues per port there are four streams, and
    // `--tx-first` seeds a burst on each, so both tx queues of both ports carry frames.
    let paired = Paired {
        macs: [MAC_A, MAC_B],
        queues: PAIRS,
        min_packets: MIN_PACKETS,
        slack: RINGS,
    };
    let mut t = paired.start(&bin, &v, "ab-mac-2q");
    // testpmd enabled pair 1 of both ports (VQ_PAIRS_SET 2 -> SET_VRING_ENABLE).
    wait_rings_started(&v, &["a", "b"]);
    assert_mq_ports(&v, &["a", "b"]);
    paired.check(&v, &mut t, Instant::now(), RUN, ", 2 queue pairs");

    drop(t);
    assert_ports_released(&mut v);
    eprintln!("done in {:.1?}", t0.elapsed());
}
