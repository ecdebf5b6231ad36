//! Test frames, for this crate's unit tests, the fuzz harnesses (`vnet-fuzz-harness`) and
//! the daemon's integration tests; built only for tests or with the `test-util` feature.
//!
//! [`build_frame`] builds a TCP/UDP over IPv4/IPv6 Ethernet frame from a [`FrameSpec`],
//! with the `virtio_net_hdr` a Linux guest would send with it; [`check_segments`] asserts
//! that the segments [`crate::gso::segment`] emitted for such a frame are what
//! segmentation must produce.

use wire::{checksum, ethernet, tcp, udp};
use wire::{
    EthernetFrame, Ipv4Addr, Ipv4Packet, Ipv6Addr, Ipv6Packet, MacAddr, TcpPacket, UdpPacket,
};

use crate::gso::MAX_HEADERS_LEN;
use crate::{NetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, HDR_F_NEEDS_CSUM};

/// Transport of a built frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4 {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// What the L4 checksum field holds in a built frame (`NEEDS_CSUM` seeding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seed {
    /// What Linux stores (`__tcp_v4_send_check`, `udp4_hwcsum`): the pseudo-header sum
    /// with the L4 length, for plain and GSO frames alike (its software GSO adjusts that
    /// length per segment).
    #[default]
    Linux,
    /// Pseudo-header sum including the L4 length.
    WithLen,
    /// Pseudo-header sum with a zero length.
    NoLen,
    /// An arbitrary value.
    Garbage(u16),
}

/// How the IP length fields (and IPv4 header checksum) of a built frame are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpLen {
    /// Correct lengths (0 if they do not fit 16 bits) and header checksum.
    #[default]
    Exact,
    /// Zero lengths and checksum.
    Zero,
    /// An arbitrary length; checksum zero.
    Garbage(u16),
}

/// Parameters of a TCP/UDP over IPv4/IPv6 Ethernet frame with a partial checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    /// Transport.
    pub l4: L4,
    /// IPv6 instead of IPv4.
    pub v6: bool,
    /// An 802.1Q tag with this TCI.
    pub vlan: Option<u16>,
    /// Bytes of IPv4 options (rounded down to a multiple of 4, at most 40).
    pub ip_options: usize,
    /// Bytes of TCP options (rounded down to a multiple of 4, at most 40).
    pub tcp_options: usize,
    /// Payload bytes after the L4 header.
    pub payload_len: usize,
    /// `gso_size`; 0 builds a plain (non-GSO) frame.
    pub gso_size: u16,
    /// Set `GSO_ECN` in `gso_type`.
    pub ecn: bool,
    /// TCP flags.
    pub tcp_flags: u8,
    /// TCP sequence number.
    pub seq: u32,
    /// IPv4 identification.
    pub ident: u16,
    /// L4 checksum field contents.
    pub seed: Seed,
    /// IP length fields.
    pub ip_len: IpLen,
}

impl Default for FrameSpec {
    fn default() -> Self {
        FrameSpec {
            l4: L4::Tcp,
            v6: false,
            vlan: None,
            ip_options: 0,
            tcp_options: 0,
            payload_len: 0,
            gso_size: 1448,
            ecn: false,
            tcp_flags: tcp::ACK | tcp::PSH,
            seq: 0x1000_0000,
            ident: 0x4000,
            seed: Seed::Linux,
            ip_len: IpLen::Exact,
        }
    }
}

/// Source MAC of built frames.
pub const SRC_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
/// Destination MAC of built frames.
pub const DST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
const SRC4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DST4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// The payload byte at `i` of built frames.
pub fn payload_byte(i: usize) -> u8 {
    u8::try_from((i * 7 + i / 251) % 251).unwrap_or(0)
}

/// Builds the frame described by `s` and the `virtio_net_hdr` a Linux guest would send
/// with it (`NEEDS_CSUM`, `csum_start`/`csum_offset` at the L4 checksum, GSO fields when
/// `gso_size > 0`).
pub fn build_frame(s: &FrameSpec) -> (NetHdr, Vec<u8>) {
    let l3 = if s.vlan.is_some() {
        ethernet::TAGGED_HEADER_LEN
    } else {
        ethernet::HEADER_LEN
    };
    let ip_hlen = if s.v6 {
        40
    } else {
        20 + s.ip_options.min(40) / 4 * 4
    };
    let l4_hlen = match s.l4 {
        L4::Tcp => 20 + s.tcp_options.min(40) / 4 * 4,
        L4::Udp => udp::HEADER_LEN,
    };
    let l4 = l3 + ip_hlen;
    let total = l4 + l4_hlen + s.payload_len;
    let mut f = vec![0u8; total];
    write_ethernet(&mut f, s);
    for (i, b) in f[l4 + l4_hlen..].iter_mut().enumerate() {
        *b = payload_byte(i);
    }
    let l4_len = total - l4;
    let proto = match s.l4 {
        L4::Tcp => wire::IP_PROTO_TCP,
        L4::Udp => wire::IP_PROTO_UDP,
    };
    if s.v6 {
        write_ipv6(&mut f[l3..], s, proto, l4_len);
    } else {
        write_ipv4(&mut f[l3..], s, ip_hlen, proto, l4_len);
    }
    let csum_offset = write_l4(&mut f[l4..], s, l4_hlen, seed_value(s, proto, l4_len));
    (build_hdr(s, l4, l4_hlen, csum_offset), f)
}

fn write_ethernet(f: &mut [u8], s: &FrameSpec) {
    let inner = if s.v6 {
        wire::ETHERTYPE_IPV6
    } else {
        wire::ETHERTYPE_IPV4
    };
    f[0..6].copy_from_slice(&DST_MAC.0);
    f[6..12].copy_from_slice(&SRC_MAC.0);
    match s.vlan {
        Some(tci) => {
            f[12..14].copy_from_slice(&wire::ETHERTYPE_VLAN.to_be_bytes());
            f[14..16].copy_from_slice(&tci.to_be_bytes());
            f[16..18].copy_from_slice(&inner.to_be_bytes());
        }
        None => f[12..14].copy_from_slice(&inner.to_be_bytes()),
    }
}

fn ip_len_field(s: &FrameSpec, exact: usize) -> u16 {
    match s.ip_len {
        IpLen::Exact => u16::try_from(exact).unwrap_or(0),
        IpLen::Zero => 0,
        IpLen::Garbage(v) => v,
    }
}

fn write_ipv4(b: &mut [u8], s: &FrameSpec, hlen: usize, proto: u8, l4_len: usize) {
    b[0] = 0x45;
    let Ok(mut p) = Ipv4Packet::new_header_checked(&mut *b) else {
        return;
    };
    p.set_version_and_header_len(hlen);
    p.set_total_len(ip_len_field(s, hlen + l4_len));
    p.set_ident(s.ident);
    p.set_flags_and_frag_offset(wire::ipv4::FLAG_DF, 0);
    p.set_ttl(64);
    p.set_protocol(proto);
    p.set_src_addr(SRC4);
    p.set_dst_addr(DST4);
    if let Some(opts) = b.get_mut(20..hlen) {
        opts.fill(1); // NOP options
    }
    if s.ip_len == IpLen::Exact {
        if let Ok(mut p) = Ipv4Packet::new_header_checked(&mut *b) {
            p.fill_checksum();
        }
    }
}

fn write_ipv6(b: &mut [u8], s: &FrameSpec, proto: u8, l4_len: usize) {
    b[0] = 0x60;
    let Ok(mut p) = Ipv6Packet::new_header_checked(b) else {
        return;
    };
    p.set_version_tc_flow(0, 0x12345);
    p.set_payload_len(ip_len_field(s, l4_len));
    p.set_next_header(proto);
    p.set_hop_limit(64);
    p.set_src_addr(SRC6);
    p.set_dst_addr(DST6);
}

/// The checksum-field seed (a folded, uncomplemented pseudo-header sum, as Linux stores for
/// `CHECKSUM_PARTIAL`).
fn seed_value(s: &FrameSpec, proto: u8, l4_len: usize) -> u16 {
    let with_len = match s.seed {
        Seed::Linux | Seed::WithLen => true,
        Seed::NoLen => false,
        Seed::Garbage(v) => return v,
    };
    let len = if with_len { l4_len } else { 0 };
    let sum = if s.v6 {
        checksum::pseudo_v6(SRC6, DST6, proto, u32::try_from(len).unwrap_or(0))
    } else {
        checksum::pseudo_v4(SRC4, DST4, proto, u16::try_from(len).unwrap_or(0))
    };
    checksum::fold(sum)
}

/// Writes the L4 header; returns the checksum field's offset in it.
fn write_l4(b: &mut [u8], s: &FrameSpec, hlen: usize, seed: u16) -> usize {
    match s.l4 {
        L4::Tcp => {
            b[12] = 0x50;
            if let Ok(mut t) = TcpPacket::new_checked(&mut *b) {
                t.set_header_len(hlen);
                t.set_src_port(40_000);
                t.set_dst_port(5201);
                t.set_seq_number(s.seq);
                t.set_ack_number(0x2000_0000);
                t.set_flags(s.tcp_flags);
                t.set_window(502);
                t.set_checksum(seed);
            }
            if let Some(opts) = b.get_mut(20..hlen) {
                opts.fill(1); // NOP options
            }
            tcp::CHECKSUM_OFFSET
        }
        L4::Udp => {
            let len = b.len();
            if let Ok(mut u) = UdpPacket::new_header_checked(b) {
                u.set_src_port(40_000);
                u.set_dst_port(4789);
                u.set_len(u16::try_from(len).unwrap_or(0));
                u.set_checksum(seed);
            }
            udp::CHECKSUM_OFFSET
        }
    }
}

fn build_hdr(s: &FrameSpec, l4: usize, l4_hlen: usize, csum_offset: usize) -> NetHdr {
    let gso_type = match (s.gso_size, s.l4, s.v6) {
        (0, _, _) => GSO_NONE,
        (_, L4::Tcp, false) => GSO_TCPV4,
        (_, L4::Tcp, true) => GSO_TCPV6,
        (_, L4::Udp, _) => GSO_UDP_L4,
    };
    let ecn = if s.ecn && gso_type != GSO_NONE {
        GSO_ECN
    } else {
        0
    };
    NetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: gso_type | ecn,
        hdr_len: u16::try_from(l4 + l4_hlen).unwrap_or(0),
        gso_size: s.gso_size,
        csum_start: u16::try_from(l4).unwrap_or(0),
        csum_offset: u16::try_from(csum_offset).unwrap_or(0),
        num_buffers: 0,
    }
}

/// Offsets of a parsed segment or super packet.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    l3: usize,
    l4: usize,
    payload: usize,
    v6: bool,
    udp: bool,
}

/// Parses `f` the way a receiver would, asserting every length field and checksum.
fn parse_valid_segment(f: &[u8]) -> Parsed {
    let eth = EthernetFrame::new_checked(f).expect("segment: ethernet");
    let l3 = eth.payload_offset();
    let v6 = match eth.inner_ethertype() {
        wire::ETHERTYPE_IPV4 => false,
        wire::ETHERTYPE_IPV6 => true,
        t => panic!("segment: ethertype {t:#x}"),
    };
    let ip = &f[l3..];
    let (l4_rel, proto, seg) = if v6 {
        let p = Ipv6Packet::new_checked(ip).expect("segment: ipv6");
        assert_eq!(
            usize::from(p.payload_len()),
            ip.len() - 40,
            "ipv6 payload_len"
        );
        (40, p.next_header(), &ip[40..])
    } else {
        let p = Ipv4Packet::new_checked(ip).expect("segment: ipv4");
        assert_eq!(usize::from(p.total_len()), ip.len(), "ipv4 total_len");
        assert!(p.verify_checksum(), "ipv4 header checksum");
        assert!(!p.is_fragment());
        (p.header_len(), p.protocol(), &ip[p.header_len()..])
    };
    let (src, dst) = addrs(ip, v6);
    let l4 = l3 + l4_rel;
    let (udp, l4_hlen) = if proto == wire::IP_PROTO_UDP {
        let u = UdpPacket::new_checked(seg).expect("segment: udp");
        assert_eq!(usize::from(u.len()), seg.len(), "udp len");
        assert_ne!(u.checksum(), 0, "udp checksum present");
        assert!(u.verify_checksum(checksum::add(src, dst) + pseudo_proto_len(proto, seg.len())));
        (true, udp::HEADER_LEN)
    } else {
        assert_eq!(proto, wire::IP_PROTO_TCP, "segment protocol");
        let t = TcpPacket::new_checked(seg).expect("segment: tcp");
        assert!(t.verify_checksum(checksum::add(src, dst) + pseudo_proto_len(proto, seg.len())));
        (false, t.header_len())
    };
    Parsed {
        l3,
        l4,
        payload: l4 + l4_hlen,
        v6,
        udp,
    }
}

/// Sum of the source and destination addresses of the IP header at `ip`.
fn addrs(ip: &[u8], v6: bool) -> (u32, u32) {
    if v6 {
        (checksum::sum(&ip[8..24]), checksum::sum(&ip[24..40]))
    } else {
        (checksum::sum(&ip[12..16]), checksum::sum(&ip[16..20]))
    }
}

/// The protocol and length words of a TCP/UDP pseudo-header, summed (not folded).
pub fn pseudo_proto_len(proto: u8, len: usize) -> u32 {
    let len = u32::try_from(len).unwrap_or(0);
    u32::from(proto) + (len >> 16) + (len & 0xffff)
}

/// Asserts that `segs`, emitted by [`crate::gso::segment`] for `frame` with `hdr`, are what
/// segmentation must produce: each a valid frame of at most `MAX_HEADERS_LEN + gso_size`
/// bytes with correct lengths and checksums; payloads that concatenate to the super
/// packet's (a prefix if `complete` is false); IPv4 ident +1 and TCP seq advanced per
/// segment; FIN/PSH only last, CWR only first; all other header bytes unchanged.
pub fn check_segments(hdr: &NetHdr, frame: &[u8], segs: &[Vec<u8>], complete: bool) {
    let mss = usize::from(hdr.gso_size);
    let Some(first) = segs.first() else {
        panic!("segment() succeeded without emitting anything");
    };
    let p0 = parse_valid_segment(first);
    let orig_payload = &frame[p0.payload..];
    let mut offset = 0;
    for (i, seg) in segs.iter().enumerate() {
        assert!(
            seg.len() <= MAX_HEADERS_LEN + mss,
            "segment {i} too long: {}",
            seg.len()
        );
        let p = parse_valid_segment(seg);
        assert_eq!(
            (p.l3, p.l4, p.payload),
            (p0.l3, p0.l4, p0.payload),
            "layout of {i}"
        );
        let body = &seg[p.payload..];
        assert!(
            body.len() <= mss,
            "segment {i} payload {} > mss {mss}",
            body.len()
        );
        assert_eq!(
            body,
            &orig_payload[offset..offset + body.len()],
            "payload of {i}"
        );
        let last = complete && i + 1 == segs.len();
        if !last {
            assert_eq!(body.len(), mss, "only the last segment may be short");
        }
        check_header_rewrite(frame, seg, &p, i, offset, last);
        offset += body.len();
    }
    if complete {
        assert_eq!(offset, orig_payload.len(), "payload fully emitted");
    }
}

/// Checks the per-segment header fields, then that nothing else in the headers changed.
fn check_header_rewrite(frame: &[u8], seg: &[u8], p: &Parsed, i: usize, offset: usize, last: bool) {
    let expect = &frame[..p.payload];
    let mut got = seg[..p.payload].to_vec();
    if !p.v6 {
        let o = Ipv4Packet::new_header_checked(&frame[p.l3..]).expect("orig ipv4");
        let mut s = Ipv4Packet::new_header_checked(&mut got[p.l3..]).expect("seg ipv4");
        let want = o
            .ident()
            .wrapping_add(u16::try_from(i & 0xffff).unwrap_or(0));
        assert_eq!(s.ident(), want, "ipv4 ident of {i}");
        s.set_ident(o.ident());
        s.set_total_len(o.total_len());
        s.set_checksum(o.checksum());
    } else {
        let o = Ipv6Packet::new_header_checked(&frame[p.l3..]).expect("orig ipv6");
        let mut s = Ipv6Packet::new_header_checked(&mut got[p.l3..]).expect("seg ipv6");
        s.set_payload_len(o.payload_len());
    }
    if p.udp {
        let o = UdpPacket::new_header_checked(&frame[p.l4..]).expect("orig udp");
        let mut s = UdpPacket::new_header_checked(&mut got[p.l4..]).expect("seg udp");
        s.set_len(o.len());
        s.set_checksum(o.checksum());
    } else {
        let o = TcpPacket::new_checked(&frame[p.l4..]).expect("orig tcp");
        let mut s = TcpPacket::new_checked(&mut got[p.l4..]).expect("seg tcp");
        let want_seq = o
            .seq_number()
            .wrapping_add(u32::try_from(offset).unwrap_or(0));
        assert_eq!(s.seq_number(), want_seq, "tcp seq of {i}");
        let mut want_flags = o.flags();
        if i != 0 {
            want_flags &= !tcp::CWR;
        }
        if !last {
            want_flags &= !(tcp::FIN | tcp::PSH);
        }
        assert_eq!(s.flags(), want_flags, "tcp flags of {i}");
        s.set_seq_number(o.seq_number());
        s.set_flags(o.flags());
        s.set_checksum(o.checksum());
    }
    assert_eq!(got, expect, "other header bytes of segment {i} changed");
}
