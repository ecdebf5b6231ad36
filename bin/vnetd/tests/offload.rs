//! Offloads through the switch: a GSO or partial-checksum frame reaches a port that
//! accepted the matching GUEST_* feature as-is, and a port that did not as valid,
//! fully checksummed MSS-sized segments (software GSO in vnetd).

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::time::Duration;

use common::*;
use frontend::Frontend;
use virtio_net::features as f;
use virtio_net::test_frames::{build_frame, check_segments, FrameSpec};
use virtio_net::{NetHdr, GSO_NONE, HDR_F_DATA_VALID, HDR_F_NEEDS_CSUM};

const NO_GUEST_OFFLOADS: u64 = f::GUEST_CSUM | f::GUEST_TSO4 | f::GUEST_TSO6 | f::GUEST_ECN;

fn recv_all(f: &mut Frontend) -> Vec<(NetHdr, Vec<u8>)> {
    let mut v = vec![];
    while let Some(x) = f.recv(0, Duration::from_millis(500)).unwrap() {
        v.push(x);
    }
    v
}

/// The scenario on split rings, then on packed ones.
fn run(spec: FrameSpec, receiver_mrg: bool) {
    for ring in [0, f::RING_PACKED] {
        run_on(spec, receiver_mrg, frontend::DEFAULT_FEATURES | ring);
    }
}

fn run_on(spec: FrameSpec, receiver_mrg: bool, all: u64) {
    let v = Vnetd::start(&["a", "b", "c"]);
    let mrg = if receiver_mrg { 0 } else { f::MRG_RXBUF };
    let mut a = connect(&v.sock("a"), all);
    let mut b = connect(&v.sock("b"), all & !mrg);
    let mut c = connect(&v.sock("c"), all & !NO_GUEST_OFFLOADS & !mrg);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let (hdr, frame) = build_frame(&spec);
    // The destination is unknown: the frame floods to b (offloads on) and c (off).
    a.send(0, &hdr, &frame).unwrap();

    let got_b = recv_all(&mut b);
    assert_eq!(got_b.len(), 1, "b accepted the offload: one frame");
    let (hb, fb) = &got_b[0];
    assert_eq!(fb, &frame, "b gets the frame untouched");
    assert_eq!(
        (hb.gso_type, hb.gso_size, hb.flags),
        (hdr.gso_type, hdr.gso_size, HDR_F_NEEDS_CSUM)
    );
    assert_eq!(
        (hb.csum_start, hb.csum_offset),
        (hdr.csum_start, hdr.csum_offset)
    );

    let got_c = recv_all(&mut c);
    for (h, _) in &got_c {
        assert_eq!(h.gso_type, GSO_NONE, "c did not accept GSO");
        assert_eq!(
            h.flags & (HDR_F_NEEDS_CSUM | HDR_F_DATA_VALID),
            0,
            "c did not accept GUEST_CSUM"
        );
    }
    let segs: Vec<Vec<u8>> = got_c.into_iter().map(|(_, s)| s).collect();
    if spec.gso_size == 0 {
        assert_eq!(segs.len(), 1);
    } else {
        let payload = spec.payload_len;
        let mss = usize::from(spec.gso_size);
        assert_eq!(segs.len(), payload.div_ceil(mss), "segment count");
    }
    // Valid segments: checksums, lengths, sequence numbers, flags, payload continuity.
    let mut h = hdr;
    if h.gso_size == 0 {
        h.gso_size = u16::MAX;
    }
    check_segments(&h, &frame, &segs, true);
    let sc = v.port_stats("c");
    assert_eq!(sc.tx_packets, segs.len() as u64, "{sc:?}");
    assert_eq!(sc.total_drops(), 0, "{sc:?}");
}

#[test]
fn tso4_64k_whole_to_offloading_port_segmented_to_other() {
    for mrg in [true, false] {
        let spec = FrameSpec {
            payload_len: 65000,
            gso_size: 1448,
            ..FrameSpec::default()
        };
        run(spec, mrg);
    }
}

#[test]
fn tso6_and_vlan_segmented() {
    run(
        FrameSpec {
            v6: true,
            payload_len: 60000,
            gso_size: 1440,
            ..FrameSpec::default()
        },
        true,
    );
    run(
        FrameSpec {
            vlan: Some(42),
            payload_len: 30000,
            gso_size: 1448,
            ..FrameSpec::default()
        },
        true,
    );
}

#[test]
fn partial_checksum_completed_for_port_without_guest_csum() {
    run(
        FrameSpec {
            payload_len: 1000,
            gso_size: 0,
            ..FrameSpec::default()
        },
        true,
    );
}
