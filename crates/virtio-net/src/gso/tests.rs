//! Segmentation scenarios: 64 KiB TCPv4/TCPv6 super packets (untagged and VLAN-tagged),
//! options, ECN, early stop, USO, and malformed input.

use super::*;
use crate::test_frames::{build_frame, check_segments, payload_byte, FrameSpec, IpLen, Seed, L4};
use crate::{GSO_ECN, GSO_UDP, HDR_F_NEEDS_CSUM};
use wire::{Ipv4Addr, Ipv6Addr};

/// Largest payload of a 64 KiB IPv4 TSO super packet (total_len 65535, 20 + 20 headers).
const BIG_V4: usize = 65_535 - 40;

fn run(hdr: &NetHdr, frame: &[u8]) -> Result<(SegStats, Vec<Vec<u8>>), GsoError> {
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut segs = Vec::new();
    let stats = segment(hdr, frame, &mut scratch, &mut |s: &[u8]| {
        segs.push(s.to_vec());
        true
    })?;
    Ok((stats, segs))
}

fn l3_of(seg: &[u8]) -> usize {
    EthernetFrame::new_checked(seg).unwrap().payload_offset()
}

/// Scenario run across IP version and tagging: 64 KiB, mss 1448, Linux-style seed.
fn big_tcp(v6: bool, vlan: Option<u16>) {
    let spec = FrameSpec {
        v6,
        vlan,
        payload_len: BIG_V4,
        gso_size: 1448,
        tcp_flags: tcp::ACK | tcp::PSH | tcp::FIN | tcp::CWR,
        seq: 0xffff_f000, // wraps during the run
        ident: 0xfff0,    // wraps too
        ..FrameSpec::default()
    };
    let (hdr, frame) = build_frame(&spec);
    assert_eq!(hdr.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
    let (stats, segs) = run(&hdr, &frame).unwrap();
    let expected = BIG_V4.div_ceil(1448);
    assert_eq!(expected, 46);
    assert_eq!(
        (stats.segments, segs.len(), stats.complete),
        (expected, expected, true)
    );
    assert_eq!(stats.bytes, segs.iter().map(Vec::len).sum::<usize>());
    check_segments(&hdr, &frame, &segs, true);

    // Independent checks with the wire views.
    let mut joined = Vec::with_capacity(BIG_V4);
    for (i, seg) in segs.iter().enumerate() {
        let eth = EthernetFrame::new_checked(&seg[..]).unwrap();
        assert_eq!(eth.vlan(), vlan.map(|t| t & 0xfff));
        let l3 = &seg[l3_of(seg)..];
        let tcp_bytes = if v6 {
            let ip = Ipv6Packet::new_checked(l3).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(
                t.verify_checksum_v6(ip.src_addr(), ip.dst_addr()),
                "seg {i}"
            );
            ip.payload().to_vec()
        } else {
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            assert!(ip.verify_checksum(), "seg {i}");
            assert_eq!(
                ip.ident(),
                0xfff0u16.wrapping_add(u16::try_from(i).unwrap())
            );
            assert!(ip.dont_frag());
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(
                t.verify_checksum_v4(ip.src_addr(), ip.dst_addr()),
                "seg {i}"
            );
            ip.payload().to_vec()
        };
        let t = TcpPacket::new_checked(&tcp_bytes[..]).unwrap();
        let off = u32::try_from(i * 1448).unwrap();
        assert_eq!(t.seq_number(), 0xffff_f000u32.wrapping_add(off));
        assert_eq!(t.cwr(), i == 0);
        assert_eq!(t.fin(), i == expected - 1);
        assert_eq!(t.psh(), i == expected - 1);
        assert!(t.ack());
        let want = if i == expected - 1 {
            BIG_V4 - 45 * 1448
        } else {
            1448
        };
        assert_eq!(t.payload().len(), want);
        joined.extend_from_slice(t.payload());
    }
    let original: Vec<u8> = (0..BIG_V4).map(payload_byte).collect();
    assert_eq!(joined, original);
}

#[test]
fn tcpv4_64k() {
    big_tcp(false, None);
}

#[test]
fn tcpv6_64k() {
    big_tcp(true, None);
}

#[test]
fn tcpv4_64k_vlan() {
    big_tcp(false, Some(0x2064));
}

#[test]
fn tcpv6_64k_vlan() {
    big_tcp(true, Some(4094));
}

#[test]
fn linux_seed_is_a_real_partial_checksum() {
    // The built GSO frame carries the pseudo-header sum with the TCP length (header and
    // all payload) in the checksum field, as Linux's __tcp_v4_send_check stores for
    // CHECKSUM_PARTIAL, GSO or not (tcp_gso_segment then adjusts the length per segment).
    let (hdr, frame) = build_frame(&FrameSpec {
        payload_len: 3000,
        ..FrameSpec::default()
    });
    let at = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
    let seed = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let l4_len = u16::try_from(frame.len() - usize::from(hdr.csum_start)).unwrap();
    let p = checksum::pseudo_v4(
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(192, 0, 2, 2),
        6,
        l4_len,
    );
    assert_eq!(seed, checksum::fold(p));
    assert_eq!(hdr.flags, HDR_F_NEEDS_CSUM);
}

#[test]
fn stale_lengths_and_seeds_are_recomputed() {
    for (seed, ip_len) in [
        (Seed::WithLen, IpLen::Exact),
        (Seed::NoLen, IpLen::Zero),
        (Seed::Garbage(0xbeef), IpLen::Garbage(7)),
    ] {
        for v6 in [false, true] {
            let spec = FrameSpec {
                v6,
                payload_len: 10_000,
                gso_size: 1000,
                seed,
                ip_len,
                ..FrameSpec::default()
            };
            let (hdr, frame) = build_frame(&spec);
            let (stats, segs) = run(&hdr, &frame).unwrap();
            assert_eq!(stats.segments, 10);
            check_segments(&hdr, &frame, &segs, true);
        }
    }
}

#[test]
fn options_on_both_layers() {
    let spec = FrameSpec {
        ip_options: 40,
        tcp_options: 40,
        vlan: Some(5),
        payload_len: 20_000,
        gso_size: 1380,
        ..FrameSpec::default()
    };
    let (hdr, frame) = build_frame(&spec);
    let (stats, segs) = run(&hdr, &frame).unwrap();
    assert_eq!(stats.segments, 20_000usize.div_ceil(1380));
    assert!(segs.iter().all(|s| s.len() <= MAX_HEADERS_LEN + 1380));
    assert_eq!(segs[0].len(), MAX_HEADERS_LEN + 1380);
    check_segments(&hdr, &frame, &segs, true);
}

#[test]
fn ecn_flag_and_cwr_first_only() {
    let spec = FrameSpec {
        payload_len: 5000,
        ecn: true,
        tcp_flags: tcp::ACK | tcp::CWR | tcp::ECE,
        ..FrameSpec::default()
    };
    let (hdr, frame) = build_frame(&spec);
    assert_eq!(hdr.gso_type, GSO_TCPV4 | GSO_ECN);
    let (_, segs) = run(&hdr, &frame).unwrap();
    for (i, s) in segs.iter().enumerate() {
        let l4 = l3_of(s) + 20;
        let t = TcpPacket::new_checked(&s[l4..]).unwrap();
        assert_eq!(t.cwr(), i == 0);
        assert!(t.ece());
    }
    check_segments(&hdr, &frame, &segs, true);
}

#[test]
fn small_and_empty_super_packets() {
    for payload_len in [0, 1, 1447, 1448, 1449] {
        let (hdr, frame) = build_frame(&FrameSpec {
            payload_len,
            tcp_flags: tcp::ACK | tcp::FIN,
            ..FrameSpec::default()
        });
        let (stats, segs) = run(&hdr, &frame).unwrap();
        assert_eq!(stats.segments, payload_len.div_ceil(1448).max(1));
        check_segments(&hdr, &frame, &segs, true);
    }
}

#[test]
fn uso_v4_and_v6() {
    for v6 in [false, true] {
        let spec = FrameSpec {
            l4: L4::Udp,
            v6,
            payload_len: 9000,
            gso_size: 1400,
            ..FrameSpec::default()
        };
        let (hdr, frame) = build_frame(&spec);
        assert_eq!(hdr.gso_type, GSO_UDP_L4);
        let (stats, segs) = run(&hdr, &frame).unwrap();
        assert_eq!(stats.segments, 7);
        check_segments(&hdr, &frame, &segs, true);
        let s = &segs[0];
        let l3 = l3_of(s);
        if v6 {
            let ip = Ipv6Packet::new_checked(&s[l3..]).unwrap();
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            let (src, dst): (Ipv6Addr, Ipv6Addr) = (ip.src_addr(), ip.dst_addr());
            assert!(u.verify_checksum_v6(src, dst));
            assert_eq!(u.len(), 1408);
        } else {
            let ip = Ipv4Packet::new_checked(&s[l3..]).unwrap();
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(u.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
            assert_eq!(u.len(), 1408);
        }
    }
}

#[test]
fn early_stop() {
    let (hdr, frame) = build_frame(&FrameSpec {
        payload_len: 10_000,
        ..FrameSpec::default()
    });
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut segs = Vec::new();
    let stats = segment(&hdr, &frame, &mut scratch, &mut |s: &[u8]| {
        segs.push(s.to_vec());
        segs.len() < 3
    })
    .unwrap();
    assert_eq!((stats.segments, stats.complete), (3, false));
    check_segments(&hdr, &frame, &segs, false);
}

#[test]
fn scratch_sized_to_one_segment() {
    let (hdr, frame) = build_frame(&FrameSpec {
        payload_len: 4000,
        ..FrameSpec::default()
    });
    let need = 14 + 20 + 20 + 1448;
    let mut small = vec![0u8; need - 1];
    let mut n = 0;
    let err = segment(&hdr, &frame, &mut small, &mut |_: &[u8]| {
        n += 1;
        true
    });
    assert_eq!(
        err,
        Err(GsoError::ScratchTooSmall {
            need,
            have: need - 1
        })
    );
    assert_eq!(n, 0);
    let mut exact = vec![0u8; need];
    let stats = segment(&hdr, &frame, &mut exact, &mut |_: &[u8]| true).unwrap();
    assert_eq!(stats.segments, 3);
}

fn expect_err(hdr: &NetHdr, frame: &[u8], want: GsoError) {
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut emitted = 0;
    let got = segment(hdr, frame, &mut scratch, &mut |_: &[u8]| {
        emitted += 1;
        true
    });
    assert_eq!(got, Err(want));
    assert_eq!(emitted, 0);
}

#[test]
fn rejects_bad_headers() {
    let (hdr, frame) = build_frame(&FrameSpec {
        payload_len: 3000,
        ..FrameSpec::default()
    });
    let l3 = 14;
    let l4 = 34;

    expect_err(
        &NetHdr {
            gso_type: GSO_NONE,
            ..hdr
        },
        &frame,
        GsoError::NotGso,
    );
    expect_err(
        &NetHdr {
            gso_type: GSO_UDP,
            ..hdr
        },
        &frame,
        GsoError::Unsupported { gso_type: GSO_UDP },
    );
    expect_err(
        &NetHdr { gso_type: 9, ..hdr },
        &frame,
        GsoError::Unsupported { gso_type: 9 },
    );
    expect_err(
        &NetHdr { gso_size: 0, ..hdr },
        &frame,
        GsoError::GsoSizeZero,
    );
    expect_err(
        &NetHdr {
            gso_type: GSO_TCPV6,
            ..hdr
        },
        &frame,
        GsoError::WrongEthertype {
            gso_type: GSO_TCPV6,
            ethertype: wire::ETHERTYPE_IPV4,
        },
    );

    let truncated_eth = GsoError::BadHeader {
        layer: "ethernet",
        err: wire::Error::Truncated,
    };
    expect_err(&hdr, &frame[..13], truncated_eth);
    let truncated_ip = GsoError::BadHeader {
        layer: "ipv4",
        err: wire::Error::Truncated,
    };
    expect_err(&hdr, &frame[..l3 + 19], truncated_ip);
    let truncated_tcp = GsoError::BadHeader {
        layer: "tcp",
        err: wire::Error::Truncated,
    };
    expect_err(&hdr, &frame[..l4 + 19], truncated_tcp);

    let mut bad = frame.clone();
    bad[l3] = 0x43; // ihl 3
    expect_err(
        &hdr,
        &bad,
        GsoError::BadHeader {
            layer: "ipv4",
            err: wire::Error::Malformed,
        },
    );
    let mut bad = frame.clone();
    bad[l3] = 0x4f; // ihl 15: 60 bytes, options run into TCP; still parses, TCP then shifts
    if let Ok((stats, segs)) = run(&hdr, &bad) {
        check_segments(&hdr, &bad, &segs, stats.complete);
    }
    let mut bad = frame.clone();
    bad[l3 + 9] = wire::IP_PROTO_UDP;
    expect_err(
        &hdr,
        &bad,
        GsoError::WrongProtocol {
            gso_type: GSO_TCPV4,
            proto: 17,
        },
    );
    let mut bad = frame.clone();
    bad[l3 + 6] |= 0x20; // MF
    expect_err(&hdr, &bad, GsoError::IpFragment);
    let mut bad = frame.clone();
    bad[l4 + 12] = 0x30; // data offset 3
    expect_err(
        &hdr,
        &bad,
        GsoError::BadHeader {
            layer: "tcp",
            err: wire::Error::Malformed,
        },
    );
    let mut bad = frame.clone();
    bad[l4 + 12] = 0xf0; // data offset 15 on a 3000-byte payload: fine, just a longer header
    assert!(run(&hdr, &bad).is_ok());

    let mut huge = frame.clone();
    huge.resize(MAX_FRAME_LEN + 1, 0);
    expect_err(
        &hdr,
        &huge,
        GsoError::FrameTooLarge {
            len: MAX_FRAME_LEN + 1,
        },
    );
}

#[test]
fn rejects_ipv6_extension_headers() {
    let (hdr, mut frame) = build_frame(&FrameSpec {
        v6: true,
        payload_len: 3000,
        ..FrameSpec::default()
    });
    frame[14 + 6] = 0; // hop-by-hop options
    expect_err(
        &hdr,
        &frame,
        GsoError::WrongProtocol {
            gso_type: GSO_TCPV6,
            proto: 0,
        },
    );
}

#[test]
fn segment_too_large_for_ip_length() {
    // gso_size near 64 KiB plus 120 bytes of IPv4+TCP headers exceeds total_len.
    let (hdr, frame) = build_frame(&FrameSpec {
        ip_options: 40,
        tcp_options: 40,
        payload_len: 65_450,
        gso_size: 65_450,
        ..FrameSpec::default()
    });
    expect_err(
        &hdr,
        &frame,
        GsoError::SegmentTooLarge { len: 65_450 + 120 },
    );
}
