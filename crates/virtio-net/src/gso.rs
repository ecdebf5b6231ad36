//! Software segmentation of GSO frames (§5.1.6.2: `gso_type`/`gso_size` on the txq), for
//! ports that cannot take the super packet as is (§5.1.6.4.1).
//!
//! Input: the Ethernet frame as the guest sent it (one optional 802.1Q tag), carrying a
//! "super packet" whose IP length fields and checksums may be zero, stale, or a partial
//! pseudo-header sum. Layer offsets come from parsing the frame itself, never from
//! `hdr_len` or `csum_start` (§5.1.6.2.2: `hdr_len` is only a hint). Every emitted segment
//! is a complete frame with all lengths and checksums recomputed from scratch.
//!
//! Supported: `GSO_TCPV4`, `GSO_TCPV6` and `GSO_UDP_L4` (USO, IPv4 or IPv6). `GSO_UDP`
//! (UFO, i.e. IP fragmentation) is [`GsoError::Unsupported`]: do not offer `HOST_UFO`.
//! IPv6 extension headers are not walked: `next_header` must be TCP or UDP.

use thiserror::Error;
use wire::{checksum, ethernet, ipv4, ipv6, tcp, udp};
use wire::{EthernetFrame, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

use crate::{NetHdr, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};

/// Longest header stack a segment can carry: tagged Ethernet + IPv4 with options + TCP with
/// options (IPv6 + TCP is shorter). An emitted segment is at most this plus `gso_size`.
pub const MAX_HEADERS_LEN: usize =
    ethernet::TAGGED_HEADER_LEN + ipv4::MAX_HEADER_LEN + tcp::MAX_HEADER_LEN;
/// Largest super packet accepted: tagged Ethernet + IPv6 header + 64 KiB payload.
pub const MAX_FRAME_LEN: usize = ethernet::TAGGED_HEADER_LEN + ipv6::HEADER_LEN + 65_535;
/// A scratch buffer of this size fits a segment for any `gso_size`.
pub const SCRATCH_LEN: usize = MAX_HEADERS_LEN + 65_535;

/// Why a frame could not be segmented. Nothing was emitted when this is returned.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum GsoError {
    /// `gso_type` is `GSO_NONE`: nothing to segment.
    #[error("frame is not a GSO frame")]
    NotGso,
    /// A `gso_type` this module does not segment (UFO, unknown values).
    #[error("gso_type {gso_type:#04x} not supported by software segmentation")]
    Unsupported {
        /// The `gso_type`, ECN bit included.
        gso_type: u8,
    },
    /// `gso_size` is 0.
    #[error("gso_size is 0")]
    GsoSizeZero,
    /// The frame is longer than [`MAX_FRAME_LEN`].
    #[error("GSO frame of {len} bytes exceeds {max}", max = MAX_FRAME_LEN)]
    FrameTooLarge {
        /// Frame length.
        len: usize,
    },
    /// A header that does not parse.
    #[error("bad {layer} header: {err}")]
    BadHeader {
        /// `"ethernet"`, `"ipv4"`, `"ipv6"`, `"tcp"` or `"udp"`.
        layer: &'static str,
        /// What the view's checked constructor said.
        err: wire::Error,
    },
    /// The EtherType does not match the GSO type (e.g. `GSO_TCPV4` over IPv6).
    #[error("gso_type {gso_type:#04x} does not match ethertype {ethertype:#06x}")]
    WrongEthertype {
        /// The `gso_type`.
        gso_type: u8,
        /// The (inner) EtherType found.
        ethertype: u16,
    },
    /// The IP protocol does not match the GSO type (or an IPv6 extension header follows).
    #[error("gso_type {gso_type:#04x} does not match IP protocol {proto}")]
    WrongProtocol {
        /// The `gso_type`.
        gso_type: u8,
        /// The IPv4 protocol or IPv6 next header found.
        proto: u8,
    },
    /// The IPv4 super packet is itself a fragment.
    #[error("GSO frame is an IP fragment")]
    IpFragment,
    /// A full-size segment would not fit the 16-bit IP length field.
    #[error("segment of {len} bytes after the IP header does not fit a 16-bit length")]
    SegmentTooLarge {
        /// The length that did not fit.
        len: usize,
    },
    /// The caller's scratch buffer cannot hold one segment.
    #[error("scratch buffer of {have} bytes, {need} needed")]
    ScratchTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes provided.
        have: usize,
    },
}

/// What [`segment`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegStats {
    /// Segments emitted (including the one `emit` refused, if it stopped early).
    pub segments: usize,
    /// Bytes emitted (whole frames).
    pub bytes: usize,
    /// False when `emit` returned false before the last segment.
    pub complete: bool,
}

/// Layer 4 of a super packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

/// Offsets found by parsing the super packet.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Start of the IP header.
    l3: usize,
    /// Start of the TCP/UDP header.
    l4: usize,
    /// Start of the payload (end of all headers).
    payload: usize,
    v6: bool,
    transport: Transport,
}

impl Layout {
    /// Bytes after the IP header (v4) or fixed header (v6) that are not payload.
    fn ip_len_base(&self) -> usize {
        if self.v6 {
            self.payload - self.l4
        } else {
            self.payload - self.l3
        }
    }
}

/// Splits the GSO frame `frame` described by `hdr` into segments of at most `gso_size`
/// payload bytes, each built in `scratch` and passed to `emit` as a complete Ethernet
/// frame; `emit` returns false to stop.
///
/// Per segment: IPv4 `total_len`, `ident` (+1 per segment) and header checksum, or IPv6
/// `payload_len`; TCP `seq` advanced by the payload already sent, FIN/PSH kept only on the
/// last segment and CWR only on the first (ECN, §5.1.6.2 `GSO_ECN`), and the full TCP
/// checksum; for USO the UDP length and checksum. A super packet with no payload yields one
/// header-only segment.
///
/// `scratch` must hold the headers plus one full segment (≤ [`SCRATCH_LEN`]). All checks
/// happen before the first `emit`, so on `Err` nothing was emitted. No allocation.
pub fn segment(
    hdr: &NetHdr,
    frame: &[u8],
    scratch: &mut [u8],
    emit: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<SegStats, GsoError> {
    let transport = transport_for(hdr)?;
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(GsoError::GsoSizeZero);
    }
    if frame.len() > MAX_FRAME_LEN {
        return Err(GsoError::FrameTooLarge { len: frame.len() });
    }
    let lay = parse_layout(hdr.gso_type, transport, frame)?;
    let headers = frame.get(..lay.payload).unwrap_or(&[]);
    let payload = frame.get(lay.payload..).unwrap_or(&[]);
    let seg_max = payload.len().min(mss);
    let ip_len = lay.ip_len_base() + seg_max;
    if ip_len > usize::from(u16::MAX) {
        return Err(GsoError::SegmentTooLarge { len: ip_len });
    }
    let need = headers.len() + seg_max;
    let have = scratch.len();
    let out = scratch
        .get_mut(..need)
        .ok_or(GsoError::ScratchTooSmall { need, have })?;
    if let Some(out_hdrs) = out.get_mut(..headers.len()) {
        out_hdrs.copy_from_slice(headers);
    }
    Ok(emit_all(&lay, frame, payload, mss, scratch, emit))
}

/// The transport a GSO type segments, or why it cannot be segmented.
fn transport_for(hdr: &NetHdr) -> Result<Transport, GsoError> {
    match hdr.gso_kind() {
        GSO_TCPV4 | GSO_TCPV6 => Ok(Transport::Tcp),
        GSO_UDP_L4 => Ok(Transport::Udp),
        GSO_NONE if hdr.gso_type == GSO_NONE => Err(GsoError::NotGso),
        _ => Err(GsoError::Unsupported {
            gso_type: hdr.gso_type,
        }),
    }
}

/// Finds the L3/L4/payload offsets and checks they agree with `gso_type`.
fn parse_layout(gso_type: u8, transport: Transport, frame: &[u8]) -> Result<Layout, GsoError> {
    let bad = |layer| move |err| GsoError::BadHeader { layer, err };
    let eth = EthernetFrame::new_checked(frame).map_err(bad("ethernet"))?;
    let l3 = eth.payload_offset();
    let ethertype = eth.inner_ethertype();
    let kind = gso_type & !crate::GSO_ECN;
    let v6 = match (ethertype, kind) {
        (wire::ETHERTYPE_IPV4, GSO_TCPV4 | GSO_UDP_L4) => false,
        (wire::ETHERTYPE_IPV6, GSO_TCPV6 | GSO_UDP_L4) => true,
        _ => {
            return Err(GsoError::WrongEthertype {
                gso_type,
                ethertype,
            })
        }
    };
    let ip = frame.get(l3..).unwrap_or(&[]);
    let (ip_hlen, proto) = if v6 {
        let p = Ipv6Packet::new_header_checked(ip).map_err(bad("ipv6"))?;
        (ipv6::HEADER_LEN, p.next_header())
    } else {
        let p = Ipv4Packet::new_header_checked(ip).map_err(bad("ipv4"))?;
        if p.is_fragment() {
            return Err(GsoError::IpFragment);
        }
        (p.header_len(), p.protocol())
    };
    let want = match transport {
        Transport::Tcp => wire::IP_PROTO_TCP,
        Transport::Udp => wire::IP_PROTO_UDP,
    };
    if proto != want {
        return Err(GsoError::WrongProtocol { gso_type, proto });
    }
    let l4 = l3 + ip_hlen;
    let seg = frame.get(l4..).unwrap_or(&[]);
    let l4_hlen = match transport {
        Transport::Tcp => TcpPacket::new_checked(seg)
            .map_err(bad("tcp"))?
            .header_len(),
        Transport::Udp => {
            UdpPacket::new_header_checked(seg).map_err(bad("udp"))?;
            udp::HEADER_LEN
        }
    };
    Ok(Layout {
        l3,
        l4,
        payload: l4 + l4_hlen,
        v6,
        transport,
    })
}

/// Per-segment values carried from the super packet.
#[derive(Debug, Clone, Copy)]
struct Base {
    ident: u16,
    seq: u32,
    tcp_flags: u8,
}

/// Emits every segment; headers are already in `scratch[..lay.payload]`.
fn emit_all(
    lay: &Layout,
    frame: &[u8],
    payload: &[u8],
    mss: usize,
    scratch: &mut [u8],
    emit: &mut dyn FnMut(&[u8]) -> bool,
) -> SegStats {
    let base = base_values(lay, frame);
    let count = payload.len().div_ceil(mss).max(1);
    let mut stats = SegStats {
        complete: true,
        ..SegStats::default()
    };
    for i in 0..count {
        let from = i * mss;
        let chunk = payload.get(from..).unwrap_or(&[]);
        let chunk = chunk.get(..mss).unwrap_or(chunk);
        let len = lay.payload + chunk.len();
        let Some(out) = scratch.get_mut(..len) else {
            break; // unreachable: `segment` checked the scratch size
        };
        if let Some(body) = out.get_mut(lay.payload..) {
            body.copy_from_slice(chunk);
        }
        let pos = SegPos {
            index: i,
            offset: from,
            first: i == 0,
            last: i + 1 == count,
        };
        fix_headers(lay, &base, pos, out);
        stats.segments += 1;
        stats.bytes += len;
        if !emit(out) {
            stats.complete = pos.last;
            break;
        }
    }
    stats
}

fn base_values(lay: &Layout, frame: &[u8]) -> Base {
    let ip = frame.get(lay.l3..).unwrap_or(&[]);
    let seg = frame.get(lay.l4..).unwrap_or(&[]);
    let ident = match Ipv4Packet::new_header_checked(ip) {
        Ok(p) if !lay.v6 => p.ident(),
        _ => 0,
    };
    let (seq, tcp_flags) = match TcpPacket::new_checked(seg) {
        Ok(t) if lay.transport == Transport::Tcp => (t.seq_number(), t.flags()),
        _ => (0, 0),
    };
    Base {
        ident,
        seq,
        tcp_flags,
    }
}

/// Where a segment sits in the super packet.
#[derive(Debug, Clone, Copy)]
struct SegPos {
    index: usize,
    /// Payload bytes before this segment.
    offset: usize,
    first: bool,
    last: bool,
}

/// Rewrites lengths, ident, seq, flags and checksums of the segment in `out`.
fn fix_headers(lay: &Layout, base: &Base, pos: SegPos, out: &mut [u8]) {
    let (front, l4) = out.split_at_mut(lay.l4.min(out.len()));
    let l4_len = l4.len();
    let ip = front.get_mut(lay.l3..).unwrap_or(&mut []);
    let pseudo = if lay.v6 {
        fix_ipv6(ip, l4_len)
    } else {
        fix_ipv4(ip, base, pos, l4_len)
    };
    match lay.transport {
        Transport::Tcp => fix_tcp(l4, base, pos, pseudo),
        Transport::Udp => fix_udp(l4, pseudo),
    }
}

/// Pseudo-header addresses and protocol; the length is added per transport.
#[derive(Debug, Clone, Copy)]
enum Pseudo {
    V4(wire::Ipv4Addr, wire::Ipv4Addr, u8),
    V6(wire::Ipv6Addr, wire::Ipv6Addr, u8),
}

impl Pseudo {
    fn sum(&self, l4_len: usize) -> u32 {
        // `segment` bounded every IP length to 16 bits.
        let len = u16::try_from(l4_len).unwrap_or(u16::MAX);
        match *self {
            Pseudo::V4(s, d, p) => checksum::pseudo_v4(s, d, p, len),
            Pseudo::V6(s, d, p) => checksum::pseudo_v6(s, d, p, u32::from(len)),
        }
    }
}

/// `ip` is the IPv4 header (options included) of the segment; `l4_len` what follows it.
fn fix_ipv4(ip: &mut [u8], base: &Base, pos: SegPos, l4_len: usize) -> Pseudo {
    let mut p = match Ipv4Packet::new_header_checked(ip) {
        Ok(p) => p,
        Err(_) => return Pseudo::V4(wire::Ipv4Addr::UNSPECIFIED, wire::Ipv4Addr::UNSPECIFIED, 0),
    };
    let total = u16::try_from(p.header_len() + l4_len).unwrap_or(u16::MAX);
    let index = u16::try_from(pos.index & 0xffff).unwrap_or(0);
    p.set_total_len(total);
    p.set_ident(base.ident.wrapping_add(index));
    p.fill_checksum();
    Pseudo::V4(p.src_addr(), p.dst_addr(), p.protocol())
}

/// `ip` is the IPv6 fixed header of the segment; `l4_len` what follows it.
fn fix_ipv6(ip: &mut [u8], l4_len: usize) -> Pseudo {
    let mut p = match Ipv6Packet::new_header_checked(ip) {
        Ok(p) => p,
        Err(_) => return Pseudo::V6(wire::Ipv6Addr::UNSPECIFIED, wire::Ipv6Addr::UNSPECIFIED, 0),
    };
    p.set_payload_len(u16::try_from(l4_len).unwrap_or(u16::MAX));
    Pseudo::V6(p.src_addr(), p.dst_addr(), p.next_header())
}

fn fix_tcp(seg: &mut [u8], base: &Base, pos: SegPos, pseudo: Pseudo) {
    let l4_len = seg.len();
    let Ok(mut t) = TcpPacket::new_checked(seg) else {
        return;
    };
    let offset = u32::try_from(pos.offset).unwrap_or(0);
    t.set_seq_number(base.seq.wrapping_add(offset));
    let mut flags = base.tcp_flags;
    if !pos.first {
        flags &= !tcp::CWR;
    }
    if !pos.last {
        flags &= !(tcp::FIN | tcp::PSH);
    }
    t.set_flags(flags);
    t.fill_checksum(pseudo.sum(l4_len));
}

fn fix_udp(seg: &mut [u8], pseudo: Pseudo) {
    let l4_len = seg.len();
    let Ok(mut u) = UdpPacket::new_header_checked(seg) else {
        return;
    };
    u.set_len(u16::try_from(l4_len).unwrap_or(u16::MAX));
    u.fill_checksum(pseudo.sum(l4_len));
}

#[cfg(test)]
mod tests;
