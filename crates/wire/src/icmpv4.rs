//! ICMPv4 (RFC 792) with the echo request/reply fields.
//!
//! ```text
//! 0 type  1 code  2..4 checksum  4..6 ident  6..8 seq_no  8.. data
//! ```
//! The checksum covers the whole ICMP message, so the buffer must be exactly the message.

use crate::bytes::{put_u16, put_u8, range, range_mut, u16_at, u8_at};
use crate::{checksum, Error, Result};

/// Length of the echo header.
pub const HEADER_LEN: usize = 8;
/// Type of an echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Type of a destination-unreachable message.
pub const DEST_UNREACHABLE: u8 = 3;
/// Type of an echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Type of a time-exceeded message.
pub const TIME_EXCEEDED: u8 = 11;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ_NO: usize = 6;
}

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps `buffer` after checking the 8-byte header is present.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Icmpv4Packet { buffer };
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::TYPE)
    }

    /// Code.
    pub fn code(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::CODE)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier.
    pub fn ident(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo sequence number.
    pub fn seq_no(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::SEQ_NO)
    }

    /// Data after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        range(b, HEADER_LEN, b.len())
    }

    /// The checksum the message should carry.
    pub fn compute_checksum(&self) -> u16 {
        checksum::finish(crate::tcp::sum_skipping(
            self.buffer.as_ref(),
            field::CHECKSUM,
        ))
    }

    /// Whether the checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the type.
    pub fn set_msg_type(&mut self, v: u8) {
        put_u8(self.buffer.as_mut(), field::TYPE, v);
    }

    /// Sets the code.
    pub fn set_code(&mut self, v: u8) {
        put_u8(self.buffer.as_mut(), field::CODE, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the echo identifier.
    pub fn set_ident(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the echo sequence number.
    pub fn set_seq_no(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::SEQ_NO, v);
    }

    /// Computes and stores the checksum.
    pub fn fill_checksum(&mut self) {
        let c = self.compute_checksum();
        self.set_checksum(c);
    }

    /// Data, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        range_mut(b, HEADER_LEN, len)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_to_reply() {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(b"ping data");
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(ECHO_REQUEST);
        p.set_code(0);
        p.set_ident(0x4242);
        p.set_seq_no(7);
        p.fill_checksum();
        assert!(p.verify_checksum());

        p.set_msg_type(ECHO_REPLY);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.msg_type(), p.code(), p.ident(), p.seq_no()),
            (ECHO_REPLY, 0, 0x4242, 7)
        );
        assert_eq!(p.data(), b"ping data");
    }

    #[test]
    fn known_vector() {
        // Echo request, id 1, seq 1, no data: sum 0800 + 0001 + 0001 = 0802 -> f7fd.
        let mut b = [8u8, 0, 0, 0, 0, 1, 0, 1];
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert_eq!(p.checksum(), 0xf7fd);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Icmpv4Packet::new_checked(&[0u8; 7][..]).err(),
            Some(Error::Truncated)
        );
    }
}
