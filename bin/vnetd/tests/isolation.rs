//! Tenant isolation through vnetd, with userspace frontends: port security, static
//! addresses, learning limits, VLANs (tags added and removed, offloads kept right), rate
//! limits and storm control, MTU.

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::time::{Duration, Instant};

use common::*;
use frontend::{Frontend, FrontendError};
use virtio_net::features as f;
use virtio_net::test_frames::{build_frame, check_segments, FrameSpec, DST_MAC, SRC_MAC};
use virtio_net::{NetHdr, GSO_NONE};

const WAIT: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(150);
const BCAST: MacAddr = MacAddr::BROADCAST;
const NO_GUEST_OFFLOADS: u64 = f::GUEST_CSUM | f::GUEST_TSO4 | f::GUEST_TSO6 | f::GUEST_ECN;

fn up(v: &Vnetd, names: &[&str], features: u64) -> Vec<Frontend> {
    let fes = names
        .iter()
        .map(|n| connect(&v.sock(n), features))
        .collect();
    v.wait_ports("all ports up", |p| {
        p.iter().all(|p| p.state == api::PortState::Up)
    });
    fes
}

fn recv_one(f: &mut Frontend) -> Vec<u8> {
    f.recv(0, WAIT).unwrap().expect("frame expected").1
}

fn expect_none(f: &mut Frontend, who: &str) {
    if let Some((_, b)) = f.recv(0, QUIET).unwrap() {
        panic!(
            "{who} got an unexpected frame: {:02x?}",
            &b[..18.min(b.len())]
        );
    }
}

fn drops(v: &Vnetd, port: &str, reason: &str) -> u64 {
    v.port_stats(port).dropped(reason)
}

/// `frame` with an 802.1Q tag of `vid` after the addresses.
fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut t = frame[..12].to_vec();
    t.extend_from_slice(&0x8100u16.to_be_bytes());
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&frame[12..]);
    t
}

#[test]
fn spoofed_sources_are_dropped_and_counted() {
    let v = Vnetd::start_ports(&[
        ("a", "mac=52:54:00:00:00:01"),
        ("b", ""),
        ("c", "mac=52:54:00:00:00:03,spoofchk=off"),
    ]);
    let mut fe = up(&v, &["a", "b", "c"], frontend::DEFAULT_FEATURES);
    let h = NetHdr::default();
    // a's own address passes; any other source is spoofed.
    let good = frame(BCAST, mac(1), 60, 1);
    fe[0].send(0, &h, &good).unwrap();
    assert_eq!(recv_one(&mut fe[1]), good);
    let bad = frame(BCAST, mac(9), 60, 2);
    fe[0].send(0, &h, &bad).unwrap();
    expect_none(&mut fe[1], "b");
    assert_eq!(drops(&v, "a", "spoofed"), 1);
    // c has spoofchk off: other sources pass.
    let other = frame(BCAST, mac(8), 60, 3);
    fe[2].send(0, &h, &other).unwrap();
    assert_eq!(recv_one(&mut fe[1]), other);
    assert_eq!(drops(&v, "c", "spoofed"), 0);
}

#[test]
fn a_configured_mac_cannot_be_stolen() {
    let v = Vnetd::start_ports(&[
        ("a", "mac=52:54:00:00:00:01,spoofchk=off"),
        ("b", ""),
        ("c", ""),
    ]);
    let mut fe = up(&v, &["a", "b", "c"], frontend::DEFAULT_FEATURES);
    let h = NetHdr::default();
    // b claims a's address: dropped, and the address stays a's.
    fe[1].send(0, &h, &frame(BCAST, mac(1), 60, 1)).unwrap();
    expect_none(&mut fe[2], "c");
    assert_eq!(drops(&v, "b", "spoofed"), 1);
    let to_a = frame(mac(1), mac(3), 60, 2);
    fe[2].send(0, &h, &to_a).unwrap();
    assert_eq!(recv_one(&mut fe[0]), to_a);
    expect_none(&mut fe[1], "b (the thief)");
    let rows = match v.call(api::Request::Fdb) {
        api::Response::Fdb(rows) => rows,
        r => panic!("{r:?}"),
    };
    let a_row = rows
        .iter()
        .find(|r| r.mac == mac(1))
        .expect("a's address in the table");
    assert_eq!(a_row.port, "a");
}

#[test]
fn learning_limit_per_port() {
    let v = Vnetd::start_ports(&[("a", "max-macs=2"), ("b", "")]);
    let mut fe = up(&v, &["a", "b"], frontend::DEFAULT_FEATURES);
    let h = NetHdr::default();
    for n in [10, 11] {
        fe[0].send(0, &h, &frame(BCAST, mac(n), 60, n)).unwrap();
        recv_one(&mut fe[1]);
    }
    // A third source is over the limit: dropped, counted.
    fe[0].send(0, &h, &frame(BCAST, mac(12), 60, 12)).unwrap();
    expect_none(&mut fe[1], "b");
    assert_eq!(drops(&v, "a", "mac_limit"), 1);
    // The two learned ones still pass.
    fe[0].send(0, &h, &frame(BCAST, mac(11), 60, 13)).unwrap();
    recv_one(&mut fe[1]);
}

#[test]
fn access_and_trunk_vlans_confine_traffic() {
    let v = Vnetd::start_ports(&[
        ("a", "vlan=10"),
        ("b", "vlan=10"),
        ("c", "vlan=20"),
        ("t", "trunk=10:20"),
    ]);
    let mut fe = up(&v, &["a", "b", "c", "t"], frontend::DEFAULT_FEATURES);
    let h = NetHdr::default();
    // Broadcast from a (VLAN 10): b untagged, the trunk tagged 10, never c.
    let bc = frame(BCAST, mac(1), 60, 1);
    fe[0].send(0, &h, &bc).unwrap();
    assert_eq!(recv_one(&mut fe[1]), bc);
    assert_eq!(recv_one(&mut fe[3]), tagged(&bc, 10));
    expect_none(&mut fe[2], "c (VLAN 20)");
    // c's broadcast reaches only the trunk, tagged 20.
    let bc20 = frame(BCAST, mac(3), 60, 2);
    fe[2].send(0, &h, &bc20).unwrap();
    assert_eq!(recv_one(&mut fe[3]), tagged(&bc20, 20));
    expect_none(&mut fe[0], "a");
    expect_none(&mut fe[1], "b");
    // Unknown unicast floods within the VLAN only.
    let unknown = frame(mac(99), mac(2), 60, 3);
    fe[1].send(0, &h, &unknown).unwrap();
    assert_eq!(recv_one(&mut fe[0]), unknown);
    assert_eq!(recv_one(&mut fe[3]), tagged(&unknown, 10));
    expect_none(&mut fe[2], "c");
    // Learned unicast from the trunk: tagged 10 to a arrives untagged; the same address
    // on VLAN 20 is another station (unknown there: flooded to c only).
    let to_a = frame(mac(1), mac(7), 60, 4);
    fe[3].send(0, &h, &tagged(&to_a, 10)).unwrap();
    assert_eq!(recv_one(&mut fe[0]), to_a);
    expect_none(&mut fe[1], "b");
    fe[3].send(0, &h, &tagged(&to_a, 20)).unwrap();
    assert_eq!(recv_one(&mut fe[2]), to_a);
    expect_none(&mut fe[0], "a");
    // Tagged frames on an access port, untagged or foreign VLANs on a trunk: dropped.
    fe[0].send(0, &h, &tagged(&bc, 10)).unwrap();
    fe[3].send(0, &h, &bc).unwrap();
    fe[3].send(0, &h, &tagged(&bc, 30)).unwrap();
    for (i, who) in ["a", "b", "c", "t"].iter().enumerate() {
        expect_none(&mut fe[i], who);
    }
    assert_eq!(drops(&v, "a", "vlan"), 1);
    assert_eq!(drops(&v, "t", "vlan"), 2);
}

fn recv_all(f: &mut Frontend) -> Vec<(NetHdr, Vec<u8>)> {
    let mut v = vec![];
    while let Some(x) = f.recv(0, Duration::from_millis(500)).unwrap() {
        v.push(x);
    }
    v
}

#[test]
fn tso_across_an_access_and_a_trunk_port() {
    // a: access 10; t: trunk 10 taking TSO; s: trunk 10 without offloads.
    let v = Vnetd::start_ports(&[("a", "vlan=10"), ("t", "trunk=10"), ("s", "trunk=10")]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut t = connect(&v.sock("t"), frontend::DEFAULT_FEATURES);
    let mut s = connect(
        &v.sock("s"),
        frontend::DEFAULT_FEATURES & !NO_GUEST_OFFLOADS,
    );
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let spec = FrameSpec {
        payload_len: 20000,
        gso_size: 1448,
        ..FrameSpec::default()
    };
    let (hdr, frame) = build_frame(&spec);
    let (thdr, tframe) = build_frame(&FrameSpec {
        vlan: Some(10),
        ..spec
    });
    a.send(0, &hdr, &frame).unwrap();
    // The trunk gets the whole frame tagged, its GSO header moved by the tag.
    let got = recv_all(&mut t);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, tframe);
    assert_eq!(
        (got[0].0.gso_type, got[0].0.gso_size, got[0].0.csum_start),
        (thdr.gso_type, thdr.gso_size, thdr.csum_start)
    );
    // The port without offloads gets valid tagged segments.
    let segs: Vec<Vec<u8>> = recv_all(&mut s).into_iter().map(|x| x.1).collect();
    assert_eq!(segs.len(), 20000usize.div_ceil(1448));
    check_segments(&thdr, &tframe, &segs, true);
    // Back: a tagged TSO frame from the trunk reaches the access port untagged, whole.
    let (rhdr, rframe) = build_frame(&FrameSpec {
        vlan: Some(10),
        ..spec
    });
    // From DST_MAC to SRC_MAC (a learned SRC_MAC above).
    let mut back = rframe.clone();
    back[..6].copy_from_slice(SRC_MAC.as_bytes());
    back[6..12].copy_from_slice(DST_MAC.as_bytes());
    t.send(0, &rhdr, &back).unwrap();
    let got = recv_all(&mut a);
    assert_eq!(got.len(), 1);
    let mut want = frame.clone();
    want[..6].copy_from_slice(SRC_MAC.as_bytes());
    want[6..12].copy_from_slice(DST_MAC.as_bytes());
    assert_eq!(got[0].1, want);
    assert_eq!(got[0].0.csum_start, hdr.csum_start);
    assert_ne!(got[0].0.gso_type, GSO_NONE);
}

#[test]
fn frames_over_the_mtu_are_dropped() {
    let v = Vnetd::start_ports(&[("a", ""), ("b", "mtu=1000")]);
    let mut fe = up(&v, &["a", "b"], frontend::DEFAULT_FEATURES);
    let h = NetHdr::default();
    let fits = frame(BCAST, mac(1), 14 + 1000, 1);
    fe[0].send(0, &h, &fits).unwrap();
    assert_eq!(recv_one(&mut fe[1]), fits);
    fe[0]
        .send(0, &h, &frame(BCAST, mac(1), 14 + 1001, 2))
        .unwrap();
    expect_none(&mut fe[1], "b");
    assert_eq!(drops(&v, "b", "oversize"), 1);
}

/// Sends `frame` from `tx` as fast as the ring takes it for `secs`, while `rx` counts
/// what arrives; returns the frames per second seen at `rx` over the window that starts
/// with its first frame.
fn offered_vs_received(mut tx: Frontend, rx: &mut Frontend, frame: Vec<u8>, secs: f64) -> f64 {
    let run = Duration::from_secs_f64(secs);
    let sender = std::thread::spawn(move || {
        let h = NetHdr::default();
        let end = Instant::now() + run + Duration::from_millis(300);
        let burst: Vec<(NetHdr, &[u8])> = (0..32).map(|_| (h, frame.as_slice())).collect();
        while Instant::now() < end {
            match tx.send_burst(0, &burst) {
                Ok(()) | Err(FrontendError::RingFull { .. }) => {}
                Err(e) => panic!("{e}"),
            }
            std::thread::yield_now();
        }
        tx
    });
    let mut first = None;
    let mut n = 0u64;
    loop {
        match rx.recv(0, Duration::from_millis(200)).unwrap() {
            Some(_) => {
                let now = Instant::now();
                let t0 = *first.get_or_insert(now);
                if now.duration_since(t0) > run {
                    break;
                }
                n += 1;
            }
            None if first.is_some() => break,
            None => {}
        }
    }
    while rx.recv(0, Duration::from_millis(100)).unwrap().is_some() {}
    let _tx = sender.join().unwrap();
    n as f64 / secs
}

fn assert_near(got: f64, want: f64, what: &str) {
    let ratio = got / want;
    eprintln!("{what}: {got:.0}/s for a limit of {want:.0}/s ({ratio:.3})");
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{what}: {got:.0}/s is not within 10 % of {want:.0}/s"
    );
}

#[test]
fn ingress_limits_hold_by_backpressure() {
    let v = Vnetd::start_ports(&[("a", "ingress-kpps=5"), ("b", ""), ("c", "ingress-mbit=40")]);
    let mut fe = up(&v, &["a", "b", "c"], frontend::DEFAULT_FEATURES);
    let c = fe.pop().unwrap();
    let mut b = fe.pop().unwrap();
    let a = fe.pop().unwrap();
    let rate = offered_vs_received(a, &mut b, frame(mac(2), mac(1), 60, 1), 2.0);
    assert_near(rate, 5000.0, "ingress-kpps=5");
    // 40 Mbit/s of 1000-byte frames: 5000 frames/s.
    let rate = offered_vs_received(c, &mut b, frame(mac(2), mac(3), 1000, 2), 2.0);
    assert_near(rate, 5000.0, "ingress-mbit=40 at 1000 bytes");
    // Backpressure: frames wait in the guest's ring, none is dropped as policed.
    assert_eq!(drops(&v, "a", "policed"), 0);
}

#[test]
fn egress_limit_and_storm_control_drop_the_excess() {
    let v = Vnetd::start_ports(&[
        ("a", ""),
        ("b", "egress-kpps=5"),
        ("c", "flood-kpps=2"),
        ("d", ""),
    ]);
    let mut fe = up(&v, &["a", "b", "c", "d"], frontend::DEFAULT_FEATURES);
    let d = fe.pop().unwrap();
    let c = fe.pop().unwrap();
    let mut b = fe.pop().unwrap();
    let a = fe.pop().unwrap();
    // b is known (it sent once), so a's frames to it are unicast.
    b.send(0, &NetHdr::default(), &frame(BCAST, mac(2), 60, 0))
        .unwrap();
    let rate = offered_vs_received(a, &mut b, frame(mac(2), mac(1), 60, 1), 2.0);
    assert_near(rate, 5000.0, "egress-kpps=5");
    assert!(drops(&v, "b", "policed") > 0);
    // c floods broadcasts: d sees its 2000/s, the rest is storm.
    let mut d = d;
    let rate = offered_vs_received(c, &mut d, frame(BCAST, mac(3), 60, 2), 2.0);
    assert_near(rate, 2000.0, "flood-kpps=2");
    assert!(drops(&v, "c", "storm") > 0);
}
