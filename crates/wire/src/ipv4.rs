//! IPv4 headers (RFC 791).
//!
//! ```text
//! 0 ver|ihl  1 tos  2..4 total_len  4..6 ident  6..8 flags|frag_off  8 ttl  9 protocol
//! 10..12 checksum  12..16 src  16..20 dst  20..ihl*4 options
//! ```

use core::net::Ipv4Addr;

use crate::bytes::{array, put, put_u16, put_u8, range, range_mut, u16_at, u8_at};
use crate::{checksum, Error, Result};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of a header with the most options (ihl = 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Flag bit: don't fragment (in the 16-bit flags/offset field).
pub const FLAG_DF: u16 = 0x4000;
/// Flag bit: more fragments follow.
pub const FLAG_MF: u16 = 0x2000;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// A view of an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` after checking version 4, `ihl >= 5`, that the header (with options)
    /// fits, and that `header_len <= total_len <= buffer.len()` (the buffer may be longer,
    /// e.g. Ethernet padding).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_header_checked(buffer)?;
        let total = usize::from(p.total_len());
        if total < p.header_len() {
            return Err(Error::Malformed);
        }
        if total > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Like [`new_checked`](Self::new_checked) but ignores `total_len`: for the headers of
    /// a GSO "super packet", whose length field may be 0 or stale.
    pub fn new_header_checked(buffer: T) -> Result<Self> {
        let p = Ipv4Packet { buffer };
        let len = p.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 4 || p.header_len() < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if p.header_len() > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (4).
    pub fn version(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::VER_IHL) >> 4
    }

    /// Header length in bytes (`ihl * 4`), options included.
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.buffer.as_ref(), field::VER_IHL) & 0x0f) * 4
    }

    /// Type of service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::TOS)
    }

    /// The ECN bits of the TOS byte.
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// Total length field (header + payload).
    pub fn total_len(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::IDENT)
    }

    /// The 3 flag bits, unshifted in the 16-bit field ([`FLAG_DF`], [`FLAG_MF`]).
    pub fn flags(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::FLAGS_FRAG) & 0xe000
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags() & FLAG_DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (u16_at(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x1fff) << 3
    }

    /// Whether this is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::TTL)
    }

    /// Protocol of the payload (`crate::IP_PROTO_*`).
    pub fn protocol(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::DST))
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        range(self.buffer.as_ref(), 0, self.header_len())
    }

    /// The options (empty when `ihl == 5`).
    pub fn options(&self) -> &[u8] {
        range(self.buffer.as_ref(), MIN_HEADER_LEN, self.header_len())
    }

    /// The payload, from the end of the header to `total_len` (clamped to the buffer).
    pub fn payload(&self) -> &[u8] {
        range(
            self.buffer.as_ref(),
            self.header_len(),
            usize::from(self.total_len()),
        )
    }

    /// The header checksum the header should carry (computed with the field as zero).
    pub fn compute_checksum(&self) -> u16 {
        let h = self.header();
        let before = range(h, 0, field::CHECKSUM);
        let after = range(h, field::CHECKSUM + 2, h.len());
        checksum::finish(checksum::sum(before) + checksum::sum(after))
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length (a multiple of 4 in 20..=60, else rounded down
    /// and clamped).
    pub fn set_version_and_header_len(&mut self, len: usize) {
        let ihl = len.clamp(MIN_HEADER_LEN, MAX_HEADER_LEN) / 4;
        let ihl = u8::try_from(ihl).unwrap_or(5);
        put_u8(self.buffer.as_mut(), field::VER_IHL, 0x40 | ihl);
    }

    /// Sets the TOS byte.
    pub fn set_tos(&mut self, v: u8) {
        put_u8(self.buffer.as_mut(), field::TOS, v);
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::TOTAL_LEN, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets flags ([`FLAG_DF`] / [`FLAG_MF`]) and fragment offset (bytes, multiple of 8).
    pub fn set_flags_and_frag_offset(&mut self, flags: u16, frag_offset: u16) {
        let v = (flags & 0xe000) | ((frag_offset >> 3) & 0x1fff);
        put_u16(self.buffer.as_mut(), field::FLAGS_FRAG, v);
    }

    /// Sets the TTL.
    pub fn set_ttl(&mut self, v: u8) {
        put_u8(self.buffer.as_mut(), field::TTL, v);
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        put_u8(self.buffer.as_mut(), field::PROTOCOL, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        put(self.buffer.as_mut(), field::SRC, &a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        put(self.buffer.as_mut(), field::DST, &a.octets());
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        let c = self.compute_checksum();
        self.set_checksum(c);
    }

    /// The payload, mutable (same bounds as [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (from, to) = (self.header_len(), usize::from(self.total_len()));
        range_mut(self.buffer.as_mut(), from, to)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn valid(options: usize, payload: usize) -> Vec<u8> {
        let hl = 20 + options;
        let mut b = vec![0u8; hl + payload];
        b[0] = 0x40 | u8::try_from(hl / 4).unwrap();
        let total = u16::try_from(b.len()).unwrap();
        b[2..4].copy_from_slice(&total.to_be_bytes());
        for (i, x) in b[hl..].iter_mut().enumerate() {
            *x = i as u8;
        }
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_ident(0x1234);
        p.set_flags_and_frag_offset(FLAG_DF, 0);
        p.set_ttl(64);
        p.set_protocol(crate::IP_PROTO_TCP);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.set_tos(0x03);
        p.fill_checksum();
        b
    }

    #[test]
    fn fields_and_checksum() {
        let b = valid(0, 8);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.ecn(), 3);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.payload(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(p.verify_checksum());
        assert_eq!(p.compute_checksum(), p.checksum());
        let mut bad = b.clone();
        bad[8] = 63;
        assert!(!Ipv4Packet::new_checked(&bad[..]).unwrap().verify_checksum());
    }

    #[test]
    fn options_and_padding() {
        let mut b = valid(8, 4);
        b.extend_from_slice(&[0xee; 10]); // Ethernet padding beyond total_len
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.options().len(), 8);
        assert_eq!(p.payload(), &[0, 1, 2, 3]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn fragments() {
        let mut b = valid(0, 8);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_flags_and_frag_offset(FLAG_MF, 1480);
        assert!(p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
    }

    #[test]
    fn rejects() {
        let b = valid(0, 8);
        assert_eq!(
            Ipv4Packet::new_checked(&b[..19]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&b[..27]).err(),
            Some(Error::Truncated)
        );
        assert!(Ipv4Packet::new_header_checked(&b[..20]).is_ok());
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).err(),
            Some(Error::Malformed)
        );
        let mut short_ihl = b.clone();
        short_ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&short_ihl[..]).err(),
            Some(Error::Malformed)
        );
        let mut long_ihl = b.clone();
        long_ihl[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&long_ihl[..]).err(),
            Some(Error::Truncated)
        );
        let mut tiny_total = b.clone();
        tiny_total[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&tiny_total[..]).err(),
            Some(Error::Malformed)
        );
        assert!(Ipv4Packet::new_header_checked(&tiny_total[..]).is_ok());
        assert!(Ipv4Packet::new_header_checked(&[0u8; 20][..]).is_err());
    }

    #[test]
    fn set_header_len() {
        let mut b = valid(0, 40);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_version_and_header_len(24);
        assert_eq!((p.version(), p.header_len()), (4, 24));
        p.set_version_and_header_len(1000);
        assert_eq!(p.header_len(), 60);
    }
}
