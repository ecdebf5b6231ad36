//! The one ICMPv6 message the switch looks at: a neighbour advertisement (RFC 4861 §4.4),
//! whose target address a port may only claim if it is one of its own.

use core::net::Ipv6Addr;

use crate::bytes::array;

/// IPv6 next-header value of ICMPv6.
pub const NEXT_HEADER: u8 = 58;
/// ICMPv6 type of a neighbour advertisement.
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Bytes of a neighbour advertisement before its options: type, code, checksum, flags,
/// then the 16-byte target address at offset 8.
pub const NEIGHBOR_ADVERT_LEN: usize = 24;
const TARGET: usize = 8;

/// The target address of the neighbour advertisement `icmp` (an ICMPv6 message), or
/// `None` when it is another message or too short.
pub fn neighbor_advert_target(icmp: &[u8]) -> Option<Ipv6Addr> {
    let advert = icmp.first() == Some(&TYPE_NEIGHBOR_ADVERT) && icmp.len() >= NEIGHBOR_ADVERT_LEN;
    advert.then(|| Ipv6Addr::from(array::<16>(icmp, TARGET)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_target() {
        let mut b = [0u8; 24];
        b[0] = TYPE_NEIGHBOR_ADVERT;
        let t = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
        b[8..24].copy_from_slice(&t.octets());
        assert_eq!(neighbor_advert_target(&b), Some(t));
        assert_eq!(neighbor_advert_target(&b[..23]), None);
        b[0] = 135; // a solicitation
        assert_eq!(neighbor_advert_target(&b), None);
    }
}
