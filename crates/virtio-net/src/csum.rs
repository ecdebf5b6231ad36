//! Completing a partial checksum in software (§5.1.6.2: `VIRTIO_NET_HDR_F_NEEDS_CSUM`).
//!
//! A driver that sets `NEEDS_CSUM` stores the TCP/UDP pseudo-header sum (folded, not
//! complemented, as Linux does for `CHECKSUM_PARTIAL`) in the checksum field and asks the
//! device to checksum from `csum_start` to the end of the packet and store the result at
//! `csum_start + csum_offset`. Because the seed is already in the field, summing the range
//! as it is and storing the complement gives the full checksum.

use wire::checksum;

use crate::offload::{check_csum_bounds, HdrError};
use crate::{NetHdr, HDR_F_NEEDS_CSUM};

/// Completes the checksum of `frame` (an Ethernet frame): one's complement sum of
/// `frame[csum_start..]`, seed included, complemented and stored big-endian at
/// `csum_start + csum_offset`. A result of 0 is stored as `0xffff`, which is equivalent for
/// TCP and required for UDP (RFC 768). Fails without touching `frame` if the field is out of
/// bounds.
pub fn complete_partial(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), HdrError> {
    check_csum_bounds(csum_start, csum_offset, frame.len())?;
    let at = csum_start + csum_offset;
    let region = frame.get(csum_start..).unwrap_or(&[]);
    let c = match checksum::finish(checksum::sum(region)) {
        0 => 0xffff,
        c => c,
    };
    if let Some(field) = frame.get_mut(at..at + 2) {
        field.copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// [`complete_partial`] driven by a header: does nothing unless `NEEDS_CSUM` is set.
pub fn complete_hdr(frame: &mut [u8], hdr: &NetHdr) -> Result<(), HdrError> {
    if hdr.flags & HDR_F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    complete_partial(frame, hdr.csum_start.into(), hdr.csum_offset.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_frames::{build_frame, FrameSpec, L4};
    use wire::{EthernetFrame, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

    fn spec(l4: L4, v6: bool, vlan: Option<u16>, payload_len: usize) -> FrameSpec {
        FrameSpec {
            l4,
            v6,
            vlan,
            payload_len,
            gso_size: 0,
            ..FrameSpec::default()
        }
    }

    /// Ethernet payload offset and the L4 slice bounds of a built frame.
    fn l3_off(frame: &[u8]) -> usize {
        EthernetFrame::new_checked(frame).unwrap().payload_offset()
    }

    #[test]
    fn tcpv4_partial_completes() {
        for len in [0, 1, 2, 3, 100, 1447, 1448, 9001] {
            let (hdr, mut frame) = build_frame(&spec(L4::Tcp, false, None, len));
            assert_eq!(hdr.flags, HDR_F_NEEDS_CSUM);
            complete_hdr(&mut frame, &hdr).unwrap();
            let ip = Ipv4Packet::new_checked(&frame[l3_off(&frame)..]).unwrap();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(
                tcp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()),
                "len {len}"
            );
        }
    }

    #[test]
    fn udp_partial_completes_v4_v6_vlan() {
        for (v6, vlan) in [
            (false, None),
            (true, None),
            (false, Some(7)),
            (true, Some(4094)),
        ] {
            for len in [0, 1, 33, 1200] {
                let (hdr, mut frame) = build_frame(&spec(L4::Udp, v6, vlan, len));
                complete_partial(&mut frame, hdr.csum_start.into(), hdr.csum_offset.into())
                    .unwrap();
                let l3 = &frame[l3_off(&frame)..];
                let ok = if v6 {
                    let ip = Ipv6Packet::new_checked(l3).unwrap();
                    UdpPacket::new_checked(ip.payload())
                        .unwrap()
                        .verify_checksum_v6(ip.src_addr(), ip.dst_addr())
                } else {
                    let ip = Ipv4Packet::new_checked(l3).unwrap();
                    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                    udp.checksum() != 0 && udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr())
                };
                assert!(ok, "v6 {v6} vlan {vlan:?} len {len}");
            }
        }
    }

    #[test]
    fn tcpv6_partial_completes() {
        let (hdr, mut frame) = build_frame(&spec(L4::Tcp, true, Some(100), 777));
        complete_hdr(&mut frame, &hdr).unwrap();
        let ip = Ipv6Packet::new_checked(&frame[l3_off(&frame)..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum_v6(ip.src_addr(), ip.dst_addr()));
    }

    #[test]
    fn out_of_bounds_is_an_error_and_leaves_frame() {
        let mut f = vec![0x11u8; 40];
        let before = f.clone();
        assert!(complete_partial(&mut f, 38, 1).is_err());
        assert!(complete_partial(&mut f, 41, 0).is_err());
        assert!(complete_partial(&mut f, usize::MAX, 2).is_err());
        assert!(complete_partial(&mut f, 0, usize::MAX).is_err());
        assert_eq!(f, before);
        assert!(complete_partial(&mut f, 38, 0).is_ok());
        let unflagged = NetHdr {
            csum_start: 1000,
            ..NetHdr::default()
        };
        assert!(complete_hdr(&mut f, &unflagged).is_ok());
    }

    #[test]
    fn zero_result_stored_as_ffff() {
        // All-zero region: sum 0 -> complement ffff; a region summing to ffff gives 0,
        // which must be stored as ffff.
        let mut f = vec![0u8; 8];
        f[0..2].copy_from_slice(&0xfffeu16.to_be_bytes());
        f[2..4].copy_from_slice(&0x0001u16.to_be_bytes());
        complete_partial(&mut f, 0, 6).unwrap();
        assert_eq!(&f[6..8], &[0xff, 0xff]);
    }
}
