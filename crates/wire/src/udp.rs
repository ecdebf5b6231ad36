//! UDP headers (RFC 768).
//!
//! ```text
//! 0..2 src_port  2..4 dst_port  4..6 len  6..8 checksum
//! ```

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{put_u16, range, range_mut, u16_at};
use crate::tcp::sum_skipping;
use crate::{checksum, Error, Result, IP_PROTO_UDP};

/// Header length.
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field, for `virtio_net_hdr.csum_offset`.
pub const CHECKSUM_OFFSET: usize = 6;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LEN: usize = 4;
    pub const CHECKSUM: usize = super::CHECKSUM_OFFSET;
}

/// A view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` after checking `8 <= len <= buffer.len()`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_header_checked(buffer)?;
        let len = usize::from(p.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Only checks the 8 header bytes are present (for GSO "super packets", whose `len`
    /// may be stale).
    pub fn new_header_checked(buffer: T) -> Result<Self> {
        let p = UdpPacket { buffer };
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header + payload).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::LEN)
    }

    /// Checksum field (0: none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Payload: after the header up to `len` (clamped to the buffer).
    pub fn payload(&self) -> &[u8] {
        range(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    /// The datagram as covered by the checksum: the first `len` bytes.
    fn datagram(&self) -> &[u8] {
        range(self.buffer.as_ref(), 0, usize::from(self.len()))
    }

    /// The checksum for pseudo-header sum `pseudo`, computed with the field as zero; a
    /// result of 0 is sent as `0xffff` (RFC 768).
    pub fn compute_checksum(&self, pseudo: u32) -> u16 {
        match checksum::finish(pseudo + sum_skipping(self.datagram(), field::CHECKSUM)) {
            0 => 0xffff,
            c => c,
        }
    }

    /// Whether the checksum is correct for pseudo-header sum `pseudo` (a zero field fails
    /// here; see [`verify_checksum_v4`](Self::verify_checksum_v4)).
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        self.checksum() != 0 && checksum::fold(pseudo + checksum::sum(self.datagram())) == 0xffff
    }

    /// Whether the checksum is correct for an IPv4 pseudo-header; a zero field means "no
    /// checksum" and passes.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0
            || self.verify_checksum(checksum::pseudo_v4(src, dst, IP_PROTO_UDP, self.len()))
    }

    /// Whether the checksum is correct for an IPv6 pseudo-header (zero is invalid in IPv6).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let len = u32::from(self.len());
        self.verify_checksum(checksum::pseudo_v6(src, dst, IP_PROTO_UDP, len))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::LEN, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes and stores the checksum for pseudo-header sum `pseudo`.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        let c = self.compute_checksum(pseudo);
        self.set_checksum(c);
    }

    /// Computes and stores the checksum for an IPv4 pseudo-header.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.fill_checksum(checksum::pseudo_v4(src, dst, IP_PROTO_UDP, self.len()));
    }

    /// Computes and stores the checksum for an IPv6 pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let len = u32::from(self.len());
        self.fill_checksum(checksum::pseudo_v6(src, dst, IP_PROTO_UDP, len));
    }

    /// Payload, mutable (same bounds as [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let to = usize::from(self.len());
        range_mut(self.buffer.as_mut(), HEADER_LEN, to)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(payload);
        let len = u16::try_from(b.len()).unwrap();
        let mut u = UdpPacket::new_header_checked(&mut b[..]).unwrap();
        u.set_src_port(5353);
        u.set_dst_port(53);
        u.set_len(len);
        b
    }

    #[test]
    fn fields_and_checksums() {
        let (s, d) = (Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 1, 2));
        let mut b = datagram(b"abc");
        b.extend_from_slice(&[0; 5]); // trailing bytes beyond len are not covered
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (5353, 53, 11));
        assert_eq!(u.payload(), b"abc");
        assert!(u.verify_checksum_v4(s, d), "zero checksum means none in v4");
        u.fill_checksum_v4(s, d);
        assert_ne!(u.checksum(), 0);
        assert!(u.verify_checksum_v4(s, d));
        u.payload_mut()[1] = b'x';
        assert!(!u.verify_checksum_v4(s, d));

        let (s6, d6): (Ipv6Addr, Ipv6Addr) =
            ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        let mut b = datagram(b"v6 data");
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        assert!(!u.verify_checksum_v6(s6, d6));
        u.fill_checksum_v6(s6, d6);
        assert!(u.verify_checksum_v6(s6, d6));
    }

    #[test]
    fn zero_result_is_sent_as_ffff() {
        // Find a payload whose checksum computes to 0 and check it is stored as ffff.
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut b = datagram(&[0, 0]);
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        let c = u.compute_checksum(checksum::pseudo_v4(s, d, IP_PROTO_UDP, u.len()));
        // Adding the current checksum value to the payload word makes the new sum 0xffff.
        b[8..10].copy_from_slice(&c.to_be_bytes());
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.fill_checksum_v4(s, d);
        assert_eq!(u.checksum(), 0xffff);
        assert!(u.verify_checksum_v4(s, d));
    }

    #[test]
    fn rejects() {
        let b = datagram(b"abcd");
        assert_eq!(
            UdpPacket::new_checked(&b[..7]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            UdpPacket::new_checked(&b[..11]).err(),
            Some(Error::Truncated)
        );
        let mut bad = b.clone();
        bad[4..6].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&bad[..]).err(),
            Some(Error::Malformed)
        );
        assert!(UdpPacket::new_header_checked(&bad[..]).is_ok());
    }
}
