//! A tiny ARP / ICMP echo responder, so a userspace frontend can answer `ping` from the
//! host stack.

use wire::{arp, icmpv4, ArpPacket, EthernetFrame, Icmpv4Packet, Ipv4Addr, Ipv4Packet, MacAddr};

/// The reply to `frame` for a station `mac` / `ip`, if it asks for one.
pub fn answer(frame: &[u8], mac: MacAddr, ip: Ipv4Addr) -> Option<Vec<u8>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let l3 = eth.payload_offset();
    match eth.inner_ethertype() {
        wire::ETHERTYPE_ARP => {
            let a = ArpPacket::new_checked(&frame[l3..]).ok()?;
            if a.operation() != arp::OP_REQUEST || a.target_proto_addr() != ip {
                return None;
            }
            let mut out = vec![0u8; 42];
            out[0..6].copy_from_slice(&a.sender_hw_addr().0);
            out[6..12].copy_from_slice(mac.as_bytes());
            out[12..14].copy_from_slice(&wire::ETHERTYPE_ARP.to_be_bytes());
            let mut r = ArpPacket::new_ethernet_ipv4(&mut out[14..]).ok()?;
            r.set_operation(arp::OP_REPLY);
            r.set_sender_hw_addr(mac);
            r.set_sender_proto_addr(ip);
            r.set_target_hw_addr(a.sender_hw_addr());
            r.set_target_proto_addr(a.sender_proto_addr());
            Some(out)
        }
        wire::ETHERTYPE_IPV4 => {
            let p = Ipv4Packet::new_checked(&frame[l3..]).ok()?;
            if p.dst_addr() != ip || p.protocol() != wire::IP_PROTO_ICMP || p.is_fragment() {
                return None;
            }
            let hl = p.header_len();
            let total = usize::from(p.total_len());
            let icmp = Icmpv4Packet::new_checked(&frame[l3 + hl..l3 + total]).ok()?;
            if icmp.msg_type() != icmpv4::ECHO_REQUEST {
                return None;
            }
            let mut out = frame[..l3 + total].to_vec();
            out[0..6].copy_from_slice(&frame[6..12]);
            out[6..12].copy_from_slice(mac.as_bytes());
            let mut ip4 = Ipv4Packet::new_checked(&mut out[l3..]).ok()?;
            let src = ip4.src_addr();
            ip4.set_src_addr(ip);
            ip4.set_dst_addr(src);
            ip4.fill_checksum();
            let mut ic = Icmpv4Packet::new_checked(&mut out[l3 + hl..]).ok()?;
            ic.set_msg_type(icmpv4::ECHO_REPLY);
            ic.fill_checksum();
            Some(out)
        }
        _ => None,
    }
}
