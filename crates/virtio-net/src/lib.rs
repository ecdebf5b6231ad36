//! virtio-net device semantics, pure: no fds, no threads.
//!
//! * [`features`]: the feature bits of virtio 1.x §5.1.3 and the vhost-user transport bits.
//! * [`NetHdr`]: `struct virtio_net_hdr` (§5.1.6), copied out of guest memory before use.
//! * [`offload`]: which headers a guest may send ([`offload::validate_tx`], §5.1.6.2) and
//!   how a frame reaches a port with given receive offloads ([`offload::plan`], §5.1.6.4).
//! * [`csum`]: completing a partial checksum (`NEEDS_CSUM`) in software.
//! * [`gso`]: software segmentation of TCP (and USO) GSO frames.
//! * [`config`]: the device configuration space (§5.1.4) for vhost-user `GET_CONFIG`.
//! * `test_frames` (tests, or the `test-util` feature): a builder of TCP/UDP frames with
//!   the header a guest sends, and a checker of segmentation results. The fuzz harnesses
//!   live in `vnet-fuzz-harness`.
//!
//! Queue directions are named from the guest's view: on an rxq the device writes, on a txq
//! the device reads.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod csum;
pub mod features;
pub mod gso;
pub mod offload;
#[cfg(any(test, feature = "test-util"))]
pub mod test_frames;

pub use config::NetConfig;
pub use gso::{GsoError, SegStats};
pub use offload::{Delivery, HdrError, RxCaps, TxCaps};

/// Length of `virtio_net_hdr` when `VIRTIO_F_VERSION_1` or `VIRTIO_NET_F_MRG_RXBUF` was
/// negotiated (it carries `num_buffers`), §5.1.6.
pub const HDR_LEN_V1: usize = 12;
/// Length of the legacy header without `num_buffers`.
pub const HDR_LEN_LEGACY: usize = 10;
/// Offset of `num_buffers` in a VERSION_1 header: right after the legacy fields.
const NUM_BUFFERS: usize = HDR_LEN_LEGACY;

/// `flags` bit: the checksum at `csum_start + csum_offset` must be completed (§5.1.6.2).
pub const HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags` bit: the checksum has been validated (device to driver only).
pub const HDR_F_DATA_VALID: u8 = 2;

/// `gso_type` values (§5.1.6).
pub const GSO_NONE: u8 = 0;
/// TCPv4 segmentation offload.
pub const GSO_TCPV4: u8 = 1;
/// UDP fragmentation offload.
pub const GSO_UDP: u8 = 3;
/// TCPv6 segmentation offload.
pub const GSO_TCPV6: u8 = 4;
/// UDP segmentation offload (USO, VIRTIO_NET_F_HOST_USO).
pub const GSO_UDP_L4: u8 = 5;
/// Flag or-ed into `gso_type`: the frame carries ECN (CWR) that must be kept on segments.
pub const GSO_ECN: u8 = 0x80;

/// Header length the negotiated `features` imply (§5.1.6).
pub fn hdr_len(features: u64) -> usize {
    if features & (features::VERSION_1 | features::MRG_RXBUF) != 0 {
        HDR_LEN_V1
    } else {
        HDR_LEN_LEGACY
    }
}

/// `struct virtio_net_hdr`, in host byte order. All fields little-endian on the wire
/// (VERSION_1), which is also what legacy x86 guests use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetHdr {
    /// `HDR_F_*` bits.
    pub flags: u8,
    /// `GSO_*` value, possibly or-ed with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + L4) the driver claims; a hint only.
    pub hdr_len: u16,
    /// Maximum segment size for GSO frames.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where, from `csum_start`, the 16-bit checksum is stored.
    pub csum_offset: u16,
    /// Number of merged rx buffers (only meaningful with MRG_RXBUF on rx).
    pub num_buffers: u16,
}

impl NetHdr {
    /// Decodes a header from the first `HDR_LEN_LEGACY` or `HDR_LEN_V1` bytes of `b`.
    /// Returns `None` if `b` is shorter than [`HDR_LEN_LEGACY`]. `num_buffers` is read only
    /// when 12 bytes are present.
    pub fn parse(b: &[u8]) -> Option<NetHdr> {
        if b.len() < HDR_LEN_LEGACY {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(NetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: if b.len() >= HDR_LEN_V1 { u16_at(10) } else { 0 },
        })
    }

    /// Encodes the header into `b` (10 or 12 bytes, depending on `b.len()`, at least 10).
    /// Returns the number of bytes written, or 0 if `b` is too short.
    pub fn write(&self, b: &mut [u8]) -> usize {
        if b.len() < HDR_LEN_LEGACY {
            return 0;
        }
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        if b.len() >= HDR_LEN_V1 {
            b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
            HDR_LEN_V1
        } else {
            HDR_LEN_LEGACY
        }
    }

    /// Sets `num_buffers` in the encoded VERSION_1 header `b`, leaving the rest as it is
    /// (a header copied from a sender, delivered in that many rx buffers).
    pub fn set_num_buffers(b: &mut [u8; HDR_LEN_V1], n: u16) {
        b[NUM_BUFFERS..].copy_from_slice(&n.to_le_bytes());
    }

    /// The GSO type without the ECN flag.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdr_roundtrip() {
        let h = NetHdr {
            flags: HDR_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let mut b = [0u8; 12];
        assert_eq!(h.write(&mut b), 12);
        assert_eq!(NetHdr::parse(&b), Some(h));
        assert_eq!(h.gso_kind(), GSO_TCPV4);
        let mut short = [0u8; 10];
        assert_eq!(h.write(&mut short), 10);
        assert_eq!(NetHdr::parse(&short).map(|x| x.num_buffers), Some(0));
        assert_eq!(NetHdr::parse(&b[..9]), None);
    }
}
