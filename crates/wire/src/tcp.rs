//! TCP headers (RFC 9293 §3.1).
//!
//! ```text
//! 0..2 src_port  2..4 dst_port  4..8 seq  8..12 ack  12 data_off<<4  13 flags
//! 14..16 window  16..18 checksum  18..20 urgent  20..data_off*4 options
//! ```

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{put_u16, put_u32, put_u8, range, u16_at, u32_at, u8_at};
use crate::{checksum, Error, Result, IP_PROTO_TCP};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of a header with the most options (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// FIN flag.
pub const FIN: u8 = 0x01;
/// SYN flag.
pub const SYN: u8 = 0x02;
/// RST flag.
pub const RST: u8 = 0x04;
/// PSH flag.
pub const PSH: u8 = 0x08;
/// ACK flag.
pub const ACK: u8 = 0x10;
/// URG flag.
pub const URG: u8 = 0x20;
/// ECE flag.
pub const ECE: u8 = 0x40;
/// CWR flag.
pub const CWR: u8 = 0x80;

/// Offset of the checksum field, for `virtio_net_hdr.csum_offset`.
pub const CHECKSUM_OFFSET: usize = 16;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = super::CHECKSUM_OFFSET;
    pub const URGENT: usize = 18;
}

/// A view of a TCP segment (header and payload; the buffer is exactly the segment when
/// checksums are involved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` after checking `data_offset >= 5` and that the header with options
    /// fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = TcpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.header_len() < MIN_HEADER_LEN {
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

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (`data_offset * 4`), options included.
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.buffer.as_ref(), field::DATA_OFF) >> 4) * 4
    }

    /// The flag byte (`FIN` ... `CWR`).
    pub fn flags(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::FLAGS)
    }

    /// FIN set.
    pub fn fin(&self) -> bool {
        self.flags() & FIN != 0
    }

    /// SYN set.
    pub fn syn(&self) -> bool {
        self.flags() & SYN != 0
    }

    /// RST set.
    pub fn rst(&self) -> bool {
        self.flags() & RST != 0
    }

    /// PSH set.
    pub fn psh(&self) -> bool {
        self.flags() & PSH != 0
    }

    /// ACK set.
    pub fn ack(&self) -> bool {
        self.flags() & ACK != 0
    }

    /// CWR set.
    pub fn cwr(&self) -> bool {
        self.flags() & CWR != 0
    }

    /// ECE set.
    pub fn ece(&self) -> bool {
        self.flags() & ECE != 0
    }

    /// Window.
    pub fn window(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::URGENT)
    }

    /// Options (empty when the data offset is 5).
    pub fn options(&self) -> &[u8] {
        range(self.buffer.as_ref(), MIN_HEADER_LEN, self.header_len())
    }

    /// Payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        range(b, self.header_len(), b.len())
    }

    /// The checksum this segment should carry given the pseudo-header sum `pseudo`
    /// (computed with the checksum field as zero).
    pub fn compute_checksum(&self, pseudo: u32) -> u16 {
        checksum::finish(pseudo + sum_skipping(self.buffer.as_ref(), field::CHECKSUM))
    }

    /// Whether the checksum is correct given the pseudo-header sum `pseudo`.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(pseudo + checksum::sum(self.buffer.as_ref())) == 0xffff
    }

    /// Whether the checksum is correct for an IPv4 pseudo-header (false if the segment is
    /// longer than 65535 bytes).
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        pseudo_v4(self.buffer.as_ref(), src, dst).is_some_and(|p| self.verify_checksum(p))
    }

    /// Whether the checksum is correct for an IPv6 pseudo-header.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        pseudo_v6(self.buffer.as_ref(), src, dst).is_some_and(|p| self.verify_checksum(p))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        put_u32(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        put_u32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Sets the header length (a multiple of 4 in 20..=60, else rounded down and clamped),
    /// keeping the reserved/NS bits.
    pub fn set_header_len(&mut self, len: usize) {
        let off = len.clamp(MIN_HEADER_LEN, MAX_HEADER_LEN) / 4;
        let off = u8::try_from(off).unwrap_or(5);
        let low = u8_at(self.buffer.as_ref(), field::DATA_OFF) & 0x0f;
        put_u8(self.buffer.as_mut(), field::DATA_OFF, (off << 4) | low);
    }

    /// Sets the flag byte.
    pub fn set_flags(&mut self, v: u8) {
        put_u8(self.buffer.as_mut(), field::FLAGS, v);
    }

    /// Sets the window.
    pub fn set_window(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::WINDOW, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Computes and stores the checksum for pseudo-header sum `pseudo`.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        let c = self.compute_checksum(pseudo);
        self.set_checksum(c);
    }

    /// Computes and stores the checksum for an IPv4 pseudo-header (no-op if longer than
    /// 65535 bytes).
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        if let Some(p) = pseudo_v4(self.buffer.as_ref(), src, dst) {
            self.fill_checksum(p);
        }
    }

    /// Computes and stores the checksum for an IPv6 pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        if let Some(p) = pseudo_v6(self.buffer.as_ref(), src, dst) {
            self.fill_checksum(p);
        }
    }

    /// Payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let from = self.header_len();
        let b = self.buffer.as_mut();
        let len = b.len();
        crate::bytes::range_mut(b, from, len)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Sum of `b` with the 16-bit field at the even offset `skip` treated as zero.
pub(crate) fn sum_skipping(b: &[u8], skip: usize) -> u32 {
    checksum::sum(range(b, 0, skip)) + checksum::sum(range(b, skip + 2, b.len()))
}

fn pseudo_v4(seg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Option<u32> {
    let len = u16::try_from(seg.len()).ok()?;
    Some(checksum::pseudo_v4(src, dst, IP_PROTO_TCP, len))
}

fn pseudo_v6(seg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Option<u32> {
    let len = u32::try_from(seg.len()).ok()?;
    Some(checksum::pseudo_v6(src, dst, IP_PROTO_TCP, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(options: usize, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20 + options];
        b[12] = 0x50;
        b.extend_from_slice(payload);
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        t.set_header_len(20 + options);
        t.set_src_port(40000);
        t.set_dst_port(80);
        t.set_seq_number(0xdead_beef);
        t.set_ack_number(7);
        t.set_flags(ACK | PSH);
        t.set_window(65535);
        t.set_urgent(0);
        b
    }

    #[test]
    fn fields() {
        let b = segment(12, b"hello");
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (40000, 80));
        assert_eq!(t.seq_number(), 0xdead_beef);
        assert_eq!(t.ack_number(), 7);
        assert_eq!(t.header_len(), 32);
        assert_eq!(t.options().len(), 12);
        assert!(t.ack() && t.psh() && !t.fin() && !t.syn() && !t.rst() && !t.cwr() && !t.ece());
        assert_eq!(t.window(), 65535);
        assert_eq!(t.urgent(), 0);
        assert_eq!(t.payload(), b"hello");
    }

    #[test]
    fn checksums_v4_v6() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut b = segment(0, b"odd length payload!");
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        t.fill_checksum_v4(s, d);
        assert!(t.verify_checksum_v4(s, d));
        assert!(!t.verify_checksum_v4(d, Ipv4Addr::new(10, 0, 0, 3)));
        t.payload_mut()[0] ^= 1;
        assert!(!t.verify_checksum_v4(s, d));

        let (s6, d6): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let mut b = segment(4, b"v6");
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        t.fill_checksum_v6(s6, d6);
        assert!(t.verify_checksum_v6(s6, d6));
        assert!(!t.verify_checksum_v4(s, d));
    }

    #[test]
    fn known_vector() {
        // SYN 10.0.0.1:1234 -> 10.0.0.2:80, seq 1, window 8192; checksum worked by hand:
        // pseudo 0a00+0001+0a00+0002+0006+0014 = 0x141d; header 04d2+0050+0001+5002+2000
        // = 0x7525; sum 0x8942 -> checksum 0x76bd.
        let mut b = [0u8; 20];
        b[0..2].copy_from_slice(&1234u16.to_be_bytes());
        b[2..4].copy_from_slice(&80u16.to_be_bytes());
        b[4..8].copy_from_slice(&1u32.to_be_bytes());
        b[12] = 0x50;
        b[13] = SYN;
        b[14..16].copy_from_slice(&8192u16.to_be_bytes());
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        t.fill_checksum_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(t.checksum(), 0x76bd);
    }

    #[test]
    fn rejects() {
        let b = segment(8, b"");
        assert_eq!(
            TcpPacket::new_checked(&b[..19]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            TcpPacket::new_checked(&b[..27]).err(),
            Some(Error::Truncated)
        );
        let mut bad = b.clone();
        bad[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&bad[..]).err(),
            Some(Error::Malformed)
        );
    }
}
