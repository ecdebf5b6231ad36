//! ARP for Ethernet and IPv4 (RFC 826).
//!
//! ```text
//! htype(2)=1 ptype(2)=0x0800 hlen(1)=6 plen(1)=4 oper(2) sha(6) spa(4) tha(6) tpa(4)
//! ```

use core::net::Ipv4Addr;

use crate::bytes::{array, put, put_u16, put_u8, u16_at, u8_at};
use crate::{Error, MacAddr, Result, ETHERTYPE_IPV4};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// `htype` of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// `oper` of a request.
pub const OP_REQUEST: u16 = 1;
/// `oper` of a reply.
pub const OP_REPLY: u16 = 2;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` after checking it holds 28 bytes of Ethernet/IPv4 ARP.
    /// Other hardware or protocol types are [`Error::Unsupported`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = ArpPacket { buffer };
        if p.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        let ethernet_ipv4 = p.htype() == HTYPE_ETHERNET
            && p.ptype() == ETHERTYPE_IPV4
            && p.hlen() == 6
            && p.plen() == 4;
        if !ethernet_ipv4 {
            return Err(Error::Unsupported);
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 for Ethernet).
    pub fn htype(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (0x0800 for IPv4).
    pub fn ptype(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length.
    pub fn hlen(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::HLEN)
    }

    /// Protocol address length.
    pub fn plen(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::PLEN)
    }

    /// Operation ([`OP_REQUEST`] or [`OP_REPLY`]).
    pub fn operation(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    pub fn sender_hw_addr(&self) -> MacAddr {
        MacAddr(array(self.buffer.as_ref(), field::SHA))
    }

    /// Sender protocol address.
    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SPA))
    }

    /// Target hardware address.
    pub fn target_hw_addr(&self) -> MacAddr {
        MacAddr(array(self.buffer.as_ref(), field::THA))
    }

    /// Target protocol address.
    pub fn target_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the fixed Ethernet/IPv4 fields (htype, ptype, hlen, plen) into a buffer of at
    /// least 28 bytes and wraps it, for building a packet from scratch.
    pub fn new_ethernet_ipv4(mut buffer: T) -> Result<Self> {
        let b = buffer.as_mut();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        put_u16(b, field::HTYPE, HTYPE_ETHERNET);
        put_u16(b, field::PTYPE, ETHERTYPE_IPV4);
        put_u8(b, field::HLEN, 6);
        put_u8(b, field::PLEN, 4);
        Ok(ArpPacket { buffer })
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, op: u16) {
        put_u16(self.buffer.as_mut(), field::OPER, op);
    }

    /// Sets the sender hardware address.
    pub fn set_sender_hw_addr(&mut self, m: MacAddr) {
        put(self.buffer.as_mut(), field::SHA, &m.0);
    }

    /// Sets the sender protocol address.
    pub fn set_sender_proto_addr(&mut self, a: Ipv4Addr) {
        put(self.buffer.as_mut(), field::SPA, &a.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_hw_addr(&mut self, m: MacAddr) {
        put(self.buffer.as_mut(), field::THA, &m.0);
    }

    /// Sets the target protocol address.
    pub fn set_target_proto_addr(&mut self, a: Ipv4Addr) {
        put(self.buffer.as_mut(), field::TPA, &a.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen oper
        0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sha spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // tha tpa
    ];

    #[test]
    fn parse_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_hw_addr(), MacAddr([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert!(p.target_hw_addr().is_zero());
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn answer_in_place() {
        let mut b = REQUEST;
        let mut p = ArpPacket::new_checked(&mut b[..]).unwrap();
        let me = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
        let (sha, spa, tpa) = (
            p.sender_hw_addr(),
            p.sender_proto_addr(),
            p.target_proto_addr(),
        );
        p.set_operation(OP_REPLY);
        p.set_target_hw_addr(sha);
        p.set_target_proto_addr(spa);
        p.set_sender_hw_addr(me);
        p.set_sender_proto_addr(tpa);
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.operation(), OP_REPLY);
        assert_eq!(p.sender_hw_addr(), me);
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.target_hw_addr(), sha);
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn build_from_scratch() {
        let mut b = [0u8; 28];
        let mut p = ArpPacket::new_ethernet_ipv4(&mut b[..]).unwrap();
        p.set_operation(OP_REQUEST);
        assert_eq!(
            ArpPacket::new_checked(&b[..]).map(|p| p.operation()),
            Ok(OP_REQUEST)
        );
        assert_eq!(
            ArpPacket::new_ethernet_ipv4(&mut [0u8; 27][..]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn rejects_truncated_and_foreign() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).err(),
            Some(Error::Truncated)
        );
        let mut b = REQUEST;
        b[4] = 8;
        assert_eq!(
            ArpPacket::new_checked(&b[..]).err(),
            Some(Error::Unsupported)
        );
        let mut b = REQUEST;
        b[3] = 0xdd;
        assert_eq!(
            ArpPacket::new_checked(&b[..]).err(),
            Some(Error::Unsupported)
        );
    }
}
