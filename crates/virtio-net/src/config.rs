//! The device configuration space, `struct virtio_net_config` (§5.1.4), for vhost-user
//! `GET_CONFIG`.
//!
//! ```text
//! 0..6 mac  6..8 status  8..10 max_virtqueue_pairs  10..12 mtu     (all little-endian)
//! ```
//! The later fields (`speed`, `duplex`, RSS) exist only with features this device does not
//! offer (`SPEED_DUPLEX`, `RSS`, `HASH_REPORT`), so the space ends after `mtu`.

use wire::MacAddr;

use crate::features;

/// Bytes of configuration space this device exposes.
pub const CONFIG_LEN: usize = 12;

/// The fields of `virtio_net_config` this device fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Valid when `VIRTIO_NET_F_MAC` is offered.
    pub mac: MacAddr,
    /// `VIRTIO_NET_S_*` bits, valid when `VIRTIO_NET_F_STATUS` is offered.
    pub status: u16,
    /// Valid when `VIRTIO_NET_F_MQ` is offered; at least 1.
    pub max_virtqueue_pairs: u16,
    /// Valid when `VIRTIO_NET_F_MTU` is offered (§5.1.4.1: at least 68).
    pub mtu: u16,
}

impl NetConfig {
    /// A config with link up, one queue pair and a 1500-byte MTU.
    pub fn new(mac: MacAddr) -> NetConfig {
        NetConfig {
            mac,
            status: features::STATUS_LINK_UP,
            max_virtqueue_pairs: 1,
            mtu: 1500,
        }
    }

    /// The little-endian layout of §5.1.4.
    pub fn to_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        let [m0, m1, m2, m3, m4, m5] = self.mac.octets();
        let [s0, s1] = self.status.to_le_bytes();
        let [q0, q1] = self.max_virtqueue_pairs.to_le_bytes();
        let [t0, t1] = self.mtu.to_le_bytes();
        b.copy_from_slice(&[m0, m1, m2, m3, m4, m5, s0, s1, q0, q1, t0, t1]);
        b
    }

    /// Decodes the first bytes of a config space, as a driver reads it with GET_CONFIG;
    /// fields beyond the end of `b` read as 0.
    pub fn parse(b: &[u8]) -> NetConfig {
        let u16_at = |i: usize| {
            b.get(i..i + 2)
                .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
        };
        NetConfig {
            mac: b.get(..6).and_then(MacAddr::from_bytes).unwrap_or_default(),
            status: u16_at(6),
            max_virtqueue_pairs: u16_at(8),
            mtu: u16_at(10),
        }
    }

    /// Copies `size` bytes of the encoded space from `offset` into `out`; returns the count,
    /// or `None` if the range is not inside the space or `out` is too short. Convenience for
    /// [`read`] over [`to_bytes`](Self::to_bytes).
    pub fn read_to(&self, offset: u32, size: u32, out: &mut [u8]) -> Option<usize> {
        let bytes = self.to_bytes();
        let src = read(&bytes, offset, size)?;
        let dst = out.get_mut(..src.len())?;
        dst.copy_from_slice(src);
        Some(src.len())
    }
}

/// The `size` bytes at `offset` in the config space `space` (e.g. `NetConfig::to_bytes`),
/// as a vhost-user `GET_CONFIG` asks for them; `None` if any of it lies outside.
pub fn read(space: &[u8], offset: u32, size: u32) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(size).ok()?;
    space.get(start..)?.get(..len)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_inverts_to_bytes() {
        let c = NetConfig {
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            status: 1,
            max_virtqueue_pairs: 4,
            mtu: 9000,
        };
        assert_eq!(NetConfig::parse(&c.to_bytes()), c);
        assert_eq!(
            NetConfig::parse(&c.to_bytes()[..7]).status,
            0,
            "truncated field reads 0"
        );
    }

    use super::*;

    #[test]
    fn layout_is_little_endian() {
        let c = NetConfig {
            mac: MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            status: 0x0003,
            max_virtqueue_pairs: 0x0102,
            mtu: 9000,
        };
        let b = c.to_bytes();
        assert_eq!(&b[..6], c.mac.as_bytes());
        assert_eq!(&b[6..8], &[0x03, 0x00]);
        assert_eq!(&b[8..10], &[0x02, 0x01]);
        assert_eq!(&b[10..12], &9000u16.to_le_bytes());
        let d = NetConfig::new(MacAddr([2; 6]));
        assert_eq!((d.status, d.max_virtqueue_pairs, d.mtu), (1, 1, 1500));
    }

    #[test]
    fn read_ranges() {
        let c = NetConfig::new(MacAddr([0x52, 0x54, 0, 0, 0, 1]));
        let b = c.to_bytes();
        assert_eq!(read(&b, 0, 6), Some(c.mac.as_bytes()));
        assert_eq!(read(&b, 6, 2), Some(&[1u8, 0][..]));
        assert_eq!(read(&b, 0, 12), Some(&b[..]));
        assert_eq!(read(&b, 12, 0), Some(&[][..]));
        assert_eq!(read(&b, 0, 13), None);
        assert_eq!(read(&b, 11, 2), None);
        assert_eq!(read(&b, 13, 0), None);
        assert_eq!(read(&b, u32::MAX, u32::MAX), None);
        let mut out = [0u8; 4];
        assert_eq!(c.read_to(10, 2, &mut out), Some(2));
        assert_eq!(&out[..2], &1500u16.to_le_bytes());
        assert_eq!(c.read_to(0, 6, &mut out), None);
    }
}
