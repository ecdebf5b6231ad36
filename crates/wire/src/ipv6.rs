//! IPv6 fixed headers (RFC 8200 §3). Extension headers are not walked: `next_header` is
//! reported as found in the fixed header.
//!
//! ```text
//! 0..4 ver|tc|flow  4..6 payload_len  6 next_header  7 hop_limit  8..24 src  24..40 dst
//! ```

use core::net::Ipv6Addr;

use crate::bytes::{array, put, put_u16, put_u32, put_u8, range, range_mut, u16_at, u32_at, u8_at};
use crate::{Error, Result};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` after checking version 6 and that `40 + payload_len` bytes are present
    /// (the buffer may be longer, e.g. Ethernet padding).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_header_checked(buffer)?;
        if HEADER_LEN + usize::from(p.payload_len()) > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Like [`new_checked`](Self::new_checked) but ignores `payload_len`: for the headers
    /// of a GSO "super packet".
    pub fn new_header_checked(buffer: T) -> Result<Self> {
        let p = Ipv6Packet { buffer };
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6).
    pub fn version(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        let w = u32_at(self.buffer.as_ref(), field::VER_TC_FLOW);
        u8::try_from((w >> 20) & 0xff).unwrap_or(0)
    }

    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length (everything after the fixed header, extension headers included).
    pub fn payload_len(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Next header (`crate::IP_PROTO_*` or an extension header type).
    pub fn next_header(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::NEXT_HEADER)
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::HOP_LIMIT)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::DST))
    }

    /// The payload: `payload_len` bytes after the fixed header (clamped to the buffer).
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        range(self.buffer.as_ref(), HEADER_LEN, end)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        put_u32(self.buffer.as_mut(), field::VER_TC_FLOW, w);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, v);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        put_u8(self.buffer.as_mut(), field::NEXT_HEADER, v);
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        put_u8(self.buffer.as_mut(), field::HOP_LIMIT, v);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        put(self.buffer.as_mut(), field::SRC, &a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        put(self.buffer.as_mut(), field::DST, &a.octets());
    }

    /// The payload, mutable (same bounds as [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        range_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(payload: usize) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN + payload];
        b[0] = 0x60;
        let mut p = Ipv6Packet::new_header_checked(&mut b[..]).unwrap();
        p.set_version_tc_flow(0xb8, 0x12345);
        p.set_payload_len(u16::try_from(payload).unwrap());
        p.set_next_header(crate::IP_PROTO_UDP);
        p.set_hop_limit(64);
        p.set_src_addr("fe80::1".parse().unwrap());
        p.set_dst_addr("ff02::1".parse().unwrap());
        p.payload_mut().fill(0x5a);
        b
    }

    #[test]
    fn fields() {
        let b = valid(12);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 12);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[0x5a; 12]);
    }

    #[test]
    fn rejects() {
        let b = valid(12);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..39]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&b[..51]).err(),
            Some(Error::Truncated)
        );
        assert!(Ipv6Packet::new_header_checked(&b[..40]).is_ok());
        let mut v4 = b.clone();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).err(),
            Some(Error::Malformed)
        );
    }
}
