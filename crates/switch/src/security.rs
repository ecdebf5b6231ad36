//! Port security: the addresses a port may send as (OVN `port_security`, an SR-IOV VF's
//! `spoofchk`). A frame whose source MAC is not the port's, or an ARP packet or IPv6
//! neighbour advertisement claiming an IP address that is not the port's, is spoofed.

use std::net::IpAddr;

use wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV6};
use wire::{icmpv6, ArpPacket, Ipv4Addr, Ipv6Packet, MacAddr};

/// IPv6 extension headers walked to reach an ICMPv6 message: hop-by-hop, routing,
/// destination options.
const EXTENSIONS: [u8; 3] = [0, 43, 60];
/// Most extension headers walked before giving up (and calling the packet spoofed).
const MAX_EXTENSIONS: usize = 4;

/// What a port may send as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSecurity {
    macs: Vec<MacAddr>,
    ips: Vec<IpAddr>,
}

impl PortSecurity {
    /// A port that sends only from `macs`, and (when `ips` is not empty) claims only
    /// `ips` in ARP and neighbour advertisements.
    pub fn new(macs: Vec<MacAddr>, ips: Vec<IpAddr>) -> PortSecurity {
        PortSecurity { macs, ips }
    }

    /// The MAC addresses the port may send from.
    pub fn macs(&self) -> &[MacAddr] {
        &self.macs
    }

    /// The IP addresses it may claim (empty: not checked).
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// Whether `src` is one of the port's MACs (any MAC when none is configured and only
    /// IP addresses are checked).
    pub fn allows_src(&self, src: &MacAddr) -> bool {
        self.macs.is_empty() || self.macs.contains(src)
    }

    /// Whether frames of `ethertype` must be looked into ([`allows_payload`]).
    ///
    /// [`allows_payload`]: Self::allows_payload
    pub fn inspects(&self, ethertype: u16) -> bool {
        !self.ips.is_empty() && matches!(ethertype, ETHERTYPE_ARP | ETHERTYPE_IPV6)
    }

    /// Whether the payload (after the Ethernet header) of a frame of `ethertype` claims
    /// only the port's IP addresses: an ARP sender address (0.0.0.0, a probe, is fine), an
    /// IPv6 neighbour advertisement's target. Unreadable ARP or IPv6 packets are refused.
    pub fn allows_payload(&self, ethertype: u16, payload: &[u8]) -> bool {
        if self.ips.is_empty() {
            return true;
        }
        match ethertype {
            ETHERTYPE_ARP => match ArpPacket::new_checked(payload) {
                Ok(arp) => {
                    let spa = arp.sender_proto_addr();
                    spa == Ipv4Addr::UNSPECIFIED || self.ips.contains(&IpAddr::V4(spa))
                }
                Err(_) => false,
            },
            ETHERTYPE_IPV6 => self.allows_ipv6(payload),
            _ => true,
        }
    }

    fn allows_ipv6(&self, packet: &[u8]) -> bool {
        let Ok(ip) = Ipv6Packet::new_header_checked(packet) else {
            return false;
        };
        let mut next = ip.next_header();
        let mut rest = packet.get(wire::ipv6::HEADER_LEN..).unwrap_or(&[]);
        for _ in 0..MAX_EXTENSIONS {
            if !EXTENSIONS.contains(&next) {
                break;
            }
            // Next header, then the length in 8-byte units beyond the first 8.
            let (Some(&n), Some(&units)) = (rest.first(), rest.get(1)) else {
                return false;
            };
            next = n;
            // Headers beyond what the caller could read hide what follows: refused.
            let Some(r) = rest.get(8 + 8 * usize::from(units)..) else {
                return false;
            };
            rest = r;
        }
        if EXTENSIONS.contains(&next) {
            return false;
        }
        if next != icmpv6::NEXT_HEADER {
            return true;
        }
        match rest.first() {
            // Cut off before the message type: cannot tell, refused.
            None => false,
            Some(&icmpv6::TYPE_NEIGHBOR_ADVERT) => icmpv6::neighbor_advert_target(rest)
                .is_some_and(|t| self.ips.contains(&IpAddr::V6(t))),
            Some(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const ME: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    fn sec() -> PortSecurity {
        PortSecurity::new(
            vec![ME],
            vec![
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            ],
        )
    }

    fn arp(spa: [u8; 4]) -> Vec<u8> {
        let mut b = vec![0u8; 28];
        b[0..2].copy_from_slice(&1u16.to_be_bytes());
        b[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        b[7] = 2;
        b[14..18].copy_from_slice(&spa);
        b
    }

    fn na(target: Ipv6Addr, hop_by_hop: bool) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        b[0] = 0x60;
        let mut icmp = vec![0u8; 24];
        icmp[0] = icmpv6::TYPE_NEIGHBOR_ADVERT;
        icmp[8..24].copy_from_slice(&target.octets());
        if hop_by_hop {
            b[6] = 0;
            b.extend_from_slice(&[icmpv6::NEXT_HEADER, 0, 0, 0, 0, 0, 0, 0]);
        } else {
            b[6] = icmpv6::NEXT_HEADER;
        }
        b.extend_from_slice(&icmp);
        b
    }

    #[test]
    fn sources_and_claims() {
        let s = sec();
        assert!(s.allows_src(&ME));
        assert!(!s.allows_src(&MacAddr([0x52, 0x54, 0, 0, 0, 2])));
        assert!(s.inspects(ETHERTYPE_ARP) && s.inspects(ETHERTYPE_IPV6));
        assert!(!s.inspects(0x0800));
        assert!(s.allows_payload(ETHERTYPE_ARP, &arp([198, 18, 0, 1])));
        assert!(s.allows_payload(ETHERTYPE_ARP, &arp([0, 0, 0, 0])));
        assert!(!s.allows_payload(ETHERTYPE_ARP, &arp([198, 18, 0, 2])));
        assert!(!s.allows_payload(ETHERTYPE_ARP, &arp([198, 18, 0, 1])[..20]));
        let mine = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let theirs = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
        assert!(s.allows_payload(ETHERTYPE_IPV6, &na(mine, false)));
        assert!(!s.allows_payload(ETHERTYPE_IPV6, &na(theirs, false)));
        assert!(!s.allows_payload(ETHERTYPE_IPV6, &na(theirs, true)));
        assert!(s.allows_payload(ETHERTYPE_IPV6, &na(mine, true)));
        // Cut short (the part the datapath reads ends inside it): refused.
        assert!(!s.allows_payload(ETHERTYPE_IPV6, &na(mine, false)[..60]));
        assert!(!s.allows_payload(ETHERTYPE_IPV6, &na(mine, true)[..44]));
        // Without IP addresses nothing is inspected.
        let macs_only = PortSecurity::new(vec![ME], Vec::new());
        assert!(!macs_only.inspects(ETHERTYPE_ARP));
        assert!(macs_only.allows_payload(ETHERTYPE_ARP, &arp([1, 2, 3, 4])));
    }
}
