//! The internet checksum (RFC 1071) and TCP/UDP pseudo-header sums.
//!
//! Partial sums are `u32` values kept folded to at most `0xffff`, so a caller can add a
//! handful of them with plain `+` and finish with [`fold`] (then complement: [`finish`]).
//! [`sum`] treats its input as starting at an even offset of the checksummed data: when
//! summing a packet in pieces, split it at even offsets (an odd-length piece may only be
//! the last one).

use core::net::{Ipv4Addr, Ipv6Addr};

/// One's complement sum of `data` as big-endian 16-bit words, a trailing odd byte padded
/// with zero; folded to at most `0xffff`.
///
/// Runs 8 bytes at a time: native-endian `u64` loads whose 32-bit halves are added into a
/// `u64` accumulator (no carry chain; the accumulator cannot overflow below 2^33 words).
/// The one's complement sum is byte-order independent (RFC 1071 §2(B)), so the native sum is
/// swapped into network order once at the end.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_ne_bytes(<[u8; 8]>::try_from(w).unwrap_or([0; 8]));
        acc += (v & 0xffff_ffff) + (v >> 32);
    }
    let mut rest = words.remainder().chunks_exact(2);
    for w in &mut rest {
        if let [a, b] = *w {
            acc += u64::from(u16::from_ne_bytes([a, b]));
        }
    }
    if let [last] = rest.remainder() {
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    u32::from(u16::from_be(fold64(acc)))
}

/// Folds a 64-bit one's complement accumulator to 16 bits.
#[allow(clippy::cast_possible_truncation)] // each step masks to the bits it keeps
fn fold64(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Folds the carries of a partial sum into 16 bits (not complemented).
pub fn fold(sum: u32) -> u16 {
    fold64(u64::from(sum))
}

/// The checksum field value for a partial sum: the complement of [`fold`].
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Adds two partial sums, keeping the result folded.
pub fn add(a: u32, b: u32) -> u32 {
    u32::from(fold64(u64::from(a) + u64::from(b)))
}

/// The checksum of `data` alone: `finish(sum(data))`.
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768): addresses, zero + protocol, and
/// the upper-layer length.
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let mut acc = u64::from(u32::from(src) >> 16) + u64::from(u32::from(src) & 0xffff);
    acc += u64::from(u32::from(dst) >> 16) + u64::from(u32::from(dst) & 0xffff);
    acc += u64::from(proto) + u64::from(len);
    u32::from(fold64(acc))
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, 32-bit upper-layer length, and
/// next header.
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let mut acc: u64 = src
        .segments()
        .iter()
        .chain(dst.segments().iter())
        .map(|&s| u64::from(s))
        .sum();
    acc += u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(next_header);
    u32::from(fold64(acc))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    /// Straightforward reference: big-endian 16-bit words, one at a time.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for c in data.chunks(2) {
            let hi = u64::from(c[0]) << 8;
            let lo = c.get(1).map_or(0, |&b| u64::from(b));
            acc += hi | lo;
        }
        fold64(acc)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn ipv4_header_vector() {
        // A classic example header; its checksum is b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(fold(sum(&h)), 0xffff);
    }

    #[test]
    fn odd_lengths_and_edges() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(fold(sum(&[0xff; 4096])), 0xffff);
        for len in 0..200u32 {
            let d: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(fold(sum(&d)), reference(&d), "len {len}");
        }
        let big: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        assert_eq!(fold(sum(&big)), reference(&big));
    }

    #[test]
    fn split_at_even_offsets_adds_up() {
        let d: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
        for cut in (0..d.len()).step_by(2) {
            assert_eq!(fold(add(sum(&d[..cut]), sum(&d[cut..]))), fold(sum(&d)));
        }
    }

    #[test]
    fn pseudo_headers() {
        let s = Ipv4Addr::new(192, 168, 0, 1);
        let d = Ipv4Addr::new(10, 0, 0, 2);
        let mut ph = Vec::new();
        ph.extend_from_slice(&s.octets());
        ph.extend_from_slice(&d.octets());
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&1480u16.to_be_bytes());
        assert_eq!(fold(pseudo_v4(s, d, 6, 1480)), reference(&ph));

        let s6: Ipv6Addr = "fe80::1".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8::ffff:1".parse().unwrap();
        let mut ph6 = Vec::new();
        ph6.extend_from_slice(&s6.octets());
        ph6.extend_from_slice(&d6.octets());
        ph6.extend_from_slice(&70_000u32.to_be_bytes());
        ph6.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(fold(pseudo_v6(s6, d6, 17, 70_000)), reference(&ph6));
    }
}
