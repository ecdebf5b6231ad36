//! Segmentation, checksum completion and offload rules of `virtio-net`. Each harness
//! derives a header and a frame from arbitrary bytes (half the time a well-formed frame
//! built from parameters with `virtio_net::test_frames`, then mutated), calls the public
//! APIs and asserts their invariants.

use virtio_net::gso::{self, SCRATCH_LEN};
use virtio_net::offload::{self, Delivery, RxCaps, TxCaps};
use virtio_net::test_frames::{
    build_frame, check_segments, pseudo_proto_len, FrameSpec, IpLen, Seed, L4,
};
use virtio_net::{csum, NetHdr, GSO_NONE, HDR_F_DATA_VALID, HDR_F_NEEDS_CSUM};
use wire::{checksum, tcp, udp, EthernetFrame, Ipv4Packet, Ipv6Packet};

use crate::input::Input;

/// A frame spec from fuzz input, payload bounded to keep runs fast.
fn spec_from(r: &mut Input<'_>, gso: bool) -> FrameSpec {
    let l4 = if r.bit() { L4::Udp } else { L4::Tcp };
    let v6 = r.bit();
    let vlan = r.bit().then(|| r.u16());
    let ip_options = usize::from(r.u8() % 11) * 4;
    let tcp_options = usize::from(r.u8() % 11) * 4;
    let payload_len = usize::from(r.u16() % 20_000);
    // Mostly small segment sizes (many segments), 0 now and then for the error path, and
    // at most ~256 segments per run.
    let floor = u16::try_from(payload_len / 256 + 1).unwrap_or(u16::MAX);
    let gso_size = match (gso, r.u16()) {
        (false, _) | (true, 0xffff) => 0,
        (true, v) => (v % 4096).max(floor),
    };
    let seed = match r.u8() % 4 {
        0 => Seed::Linux,
        1 => Seed::WithLen,
        2 => Seed::NoLen,
        _ => Seed::Garbage(r.u16()),
    };
    let ip_len = match r.u8() % 3 {
        0 => IpLen::Exact,
        1 => IpLen::Zero,
        _ => IpLen::Garbage(r.u16()),
    };
    FrameSpec {
        l4,
        v6,
        vlan,
        ip_options,
        tcp_options,
        payload_len,
        gso_size,
        ecn: r.bit(),
        tcp_flags: r.u8(),
        seq: r.u32(),
        ident: r.u16(),
        seed,
        ip_len,
    }
}

/// Flips up to 3 bytes in the first `span` bytes and maybe truncates `frame`.
fn mutate(r: &mut Input<'_>, frame: &mut Vec<u8>, span: usize) {
    for _ in 0..r.u8() % 4 {
        let pos = usize::from(r.u16()) % span.max(1);
        let x = r.u8();
        if let Some(b) = frame.get_mut(pos) {
            *b ^= x;
        }
    }
    if r.u8() == 0xff {
        let keep = usize::from(r.u16()) % frame.len().max(1);
        frame.truncate(keep);
    }
}

/// A header and frame from fuzz input: raw bytes, or a built frame then mutated.
fn derive_case(data: &[u8], gso: bool) -> (NetHdr, Vec<u8>) {
    let mut r = Input(data);
    if r.bit() {
        let hdr = NetHdr::parse(r.0).unwrap_or_default();
        let frame =
            r.0.get(virtio_net::HDR_LEN_LEGACY..)
                .unwrap_or(&[])
                .to_vec();
        return (hdr, frame);
    }
    let spec = spec_from(&mut r, gso);
    let (mut hdr, mut frame) = build_frame(&spec);
    let span = usize::from(hdr.hdr_len) + 4;
    mutate(&mut r, &mut frame, span);
    if r.u8() >= 0xf0 {
        hdr.gso_type = r.u8();
    }
    (hdr, frame)
}

/// Segments a derived GSO frame and checks the result with [`check_segments`]; also that
/// an error emits nothing and that stopping early is honoured.
pub fn fuzz_gso(data: &[u8]) {
    run_gso(data);
}

/// [`fuzz_gso`], returning the number of segments emitted on success.
fn run_gso(data: &[u8]) -> Option<usize> {
    let (hdr, frame) = derive_case(data, true);
    let stop_after = match data.last() {
        Some(&b) if b >= 0xf0 => usize::from(b & 0x0f) + 1,
        _ => usize::MAX,
    };
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut segs: Vec<Vec<u8>> = Vec::new();
    let res = gso::segment(&hdr, &frame, &mut scratch, &mut |s: &[u8]| {
        segs.push(s.to_vec());
        segs.len() < stop_after
    });
    match res {
        Err(_) => {
            assert!(segs.is_empty(), "segments emitted before an error");
            None
        }
        Ok(stats) => {
            assert_eq!(stats.segments, segs.len());
            assert_eq!(stats.bytes, segs.iter().map(Vec::len).sum::<usize>());
            check_segments(&hdr, &frame, &segs, stats.complete);
            if !stats.complete {
                assert_eq!(segs.len(), stop_after);
            }
            Some(segs.len())
        }
    }
}

/// Completes the checksum of a derived frame; checks bounds handling against
/// [`offload::validate_tx`], the one's complement invariant, and (for built frames) that the
/// TCP/UDP checksum then verifies.
pub fn fuzz_csum(data: &[u8]) {
    let (mut hdr, mut frame) = derive_case(data, false);
    hdr.flags |= HDR_F_NEEDS_CSUM;
    let (start, off) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
    let plain = NetHdr {
        gso_type: GSO_NONE,
        ..hdr
    };
    let in_bounds = offload::validate_tx(&plain, frame.len(), TxCaps::ALL).is_ok();
    let seed = frame
        .get(start + off..start + off + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    let before = frame.clone();
    let res = csum::complete_partial(&mut frame, start, off);
    assert_eq!(
        res.is_ok(),
        in_bounds,
        "complete_partial and validate_tx disagree"
    );
    let Some(seed) = seed.filter(|_| res.is_ok()) else {
        assert_eq!(frame, before, "failed completion modified the frame");
        return;
    };
    if off % 2 == 0 {
        let total = u32::from(seed) + checksum::sum(&frame[start..]);
        assert_eq!(
            checksum::fold(total),
            0xffff,
            "completed checksum does not verify"
        );
    }
    assert_eq!(frame[..start + off], before[..start + off]);
    assert_eq!(frame[start + off + 2..], before[start + off + 2..]);
    // A frame seeded correctly the way Linux does now carries a valid TCP/UDP checksum.
    if let Some((l4, field, pseudo)) = l4_info(&before) {
        if (start, off, seed) == (l4, field, checksum::fold(pseudo)) {
            let total = pseudo + checksum::sum(&frame[l4..]);
            assert_eq!(checksum::fold(total), 0xffff, "L4 checksum does not verify");
            #[cfg(test)]
            tests::VERIFIED.with(|v| v.set(v.get() + 1));
        }
    }
}

/// For a frame that is exactly TCP or UDP over IPv4/IPv6: the L4 offset, the checksum
/// field's offset in it, and the pseudo-header sum (with length).
fn l4_info(frame: &[u8]) -> Option<(usize, usize, u32)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let l3 = eth.payload_offset();
    let ip = frame.get(l3..)?;
    let (hlen, proto, exact, addr_sum) = match eth.inner_ethertype() {
        wire::ETHERTYPE_IPV4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            let exact = usize::from(p.total_len()) == ip.len();
            (
                p.header_len(),
                p.protocol(),
                exact,
                checksum::sum(ip.get(12..20)?),
            )
        }
        wire::ETHERTYPE_IPV6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            let exact = usize::from(p.payload_len()) + 40 == ip.len();
            (40, p.next_header(), exact, checksum::sum(ip.get(8..40)?))
        }
        _ => return None,
    };
    let l4 = l3 + hlen;
    let l4_len = frame.len().checked_sub(l4)?;
    let field = match proto {
        wire::IP_PROTO_TCP => tcp::CHECKSUM_OFFSET,
        wire::IP_PROTO_UDP => udp::CHECKSUM_OFFSET,
        _ => return None,
    };
    let pseudo = addr_sum + pseudo_proto_len(proto, l4_len);
    (exact && l4_len >= field + 2).then_some((l4, field, pseudo))
}

/// Runs [`offload::validate_tx`], [`offload::plan`] and [`offload::rx_hdr`] on a derived
/// header and feature sets, checking that what is delivered respects §5.1.6.4.1.
pub fn fuzz_offload(data: &[u8]) {
    let mut r = Input(data);
    let tx_features = u64::from(r.u32()) | (u64::from(r.u32()) << 32);
    let rx_features = u64::from(r.u32()) | (u64::from(r.u32()) << 32);
    let frame_len = usize::from(r.u16());
    let hdr = NetHdr::parse(r.0).unwrap_or_default();
    let tx = TxCaps::from_guest_features(tx_features);
    let rx = RxCaps::from_guest_features(rx_features);
    if offload::validate_tx(&hdr, frame_len, tx).is_err() {
        return;
    }
    let delivery = offload::plan(&hdr, rx);
    let out = offload::rx_hdr(&hdr, delivery, rx);
    assert_eq!(out.num_buffers, 0);
    assert_eq!(out.flags & !(HDR_F_NEEDS_CSUM | HDR_F_DATA_VALID), 0);
    if !rx.csum {
        assert_eq!(out.flags, 0, "flags without GUEST_CSUM");
    }
    assert!(
        rx.accepts_gso(out.gso_type),
        "gso_type {:#x} not accepted",
        out.gso_type
    );
    if delivery == Delivery::AsIs && out.flags & HDR_F_NEEDS_CSUM != 0 {
        let end = usize::from(out.csum_start) + usize::from(out.csum_offset) + 2;
        assert!(end <= frame_len, "passing an out-of-bounds checksum");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Completed checksums checked against a correct pseudo-header on this thread.
        pub(super) static VERIFIED: Cell<usize> = const { Cell::new(0) };
    }

    #[test]
    fn csum_harness_reaches_l4_verification() {
        VERIFIED.with(|v| v.set(0));
        for i in 0..64u8 {
            // Built frame (bit 0 clear), varied transport/IP/VLAN bits, Linux seed.
            fuzz_csum(&[0, i & 1, (i >> 1) & 1, (i >> 2) & 1, 0, 0, i, 0, 0, 0, 0]);
        }
        assert!(
            VERIFIED.with(Cell::get) >= 32,
            "{}",
            VERIFIED.with(Cell::get)
        );
    }

    #[test]
    fn harnesses_survive_edge_inputs() {
        for d in [&[][..], &[0], &[1], &[0xff; 64], &[0; 64]] {
            fuzz_gso(d);
            fuzz_csum(d);
            fuzz_offload(d);
        }
    }

    #[test]
    fn structured_cases_do_segment() {
        // Make sure the structured path really reaches the success branch: an all-zero
        // parameter block is a TCPv4 frame, no mutations.
        let mut data = vec![0u8; 40];
        data[6..8].copy_from_slice(&10_000u16.to_le_bytes()); // payload_len
        data[8..10].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
        let mut r = Input(&data[1..]);
        let spec = spec_from(&mut r, true);
        assert_eq!((spec.payload_len, spec.gso_size), (10_000, 1448));
        assert_eq!(run_gso(&data), Some(7));
        let mut stop = data.clone();
        stop[39] = 0xf1; // stop after 2 segments
        assert_eq!(run_gso(&stop), Some(2));
    }
}
