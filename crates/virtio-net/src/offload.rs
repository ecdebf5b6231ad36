//! Offload rules for `virtio_net_hdr`: what a sending guest may put in the header
//! (§5.1.6.2, "Packet Transmission") and what a receiving port can be handed (§5.1.6.4,
//! "Processing of Incoming Packets").
//!
//! The switch flow for a frame from port A to port B:
//! 1. [`validate_tx`] with A's [`TxCaps`]: drop (and count) the frame on `Err`.
//! 2. [`plan`] with B's [`RxCaps`]: [`Delivery::AsIs`], [`Delivery::CompleteCsum`]
//!    ([`crate::csum::complete_partial`]) or [`Delivery::Segment`] ([`crate::gso::segment`]).
//! 3. [`rx_hdr`] gives the header to put in front of what is delivered (the caller sets
//!    `num_buffers`).

use thiserror::Error;

use crate::{features as f, NetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4};
use crate::{HDR_F_DATA_VALID, HDR_F_NEEDS_CSUM};

/// A header a guest must not send, or one that would make us read out of bounds.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum HdrError {
    /// `NEEDS_CSUM` without `VIRTIO_NET_F_CSUM` negotiated (§5.1.6.2.1).
    #[error("NEEDS_CSUM set but VIRTIO_NET_F_CSUM not negotiated")]
    CsumNotNegotiated,
    /// A GSO type (or the ECN bit) whose `HOST_*` feature was not negotiated (§5.1.6.2.1).
    #[error("gso_type {gso_type:#04x} not allowed by the negotiated features")]
    GsoNotNegotiated {
        /// The offending `gso_type`, ECN bit included.
        gso_type: u8,
    },
    /// A `gso_type` this device does not know, or the ECN bit on `GSO_NONE`.
    #[error("unknown gso_type {0:#04x}")]
    UnknownGsoType(u8),
    /// A GSO type with `gso_size` 0 (there is no segment size to cut at).
    #[error("gso_type set with gso_size 0")]
    GsoSizeZero,
    /// A `gso_size` below [`MIN_GSO_SIZE`]: a 64 KiB frame would become thousands of
    /// segments, each costing a delivery.
    #[error("gso_size {0} below the minimum {min}", min = MIN_GSO_SIZE)]
    GsoSizeTooSmall(u16),
    /// `csum_start + csum_offset + 2` is past the end of the frame.
    #[error("checksum at {start}+{offset} does not fit a {frame_len}-byte frame")]
    CsumOutOfBounds {
        /// `csum_start`.
        start: usize,
        /// `csum_offset`.
        offset: usize,
        /// Length of the Ethernet frame.
        frame_len: usize,
    },
}

/// Smallest `gso_size` a sender may ask for: Linux's smallest TCP MSS (`tcp_min_snd_mss`,
/// 48). With it a 64 KiB frame is at most 1366 segments.
pub const MIN_GSO_SIZE: u16 = 48;

/// Offloads a receiving port accepts in the `virtio_net_hdr` in front of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxCaps {
    /// `NEEDS_CSUM` frames (partial checksum) and `DATA_VALID` are understood.
    pub csum: bool,
    /// `GSO_TCPV4` frames.
    pub tso4: bool,
    /// `GSO_TCPV6` frames.
    pub tso6: bool,
    /// The `GSO_ECN` bit on TCP GSO frames.
    pub ecn: bool,
    /// `GSO_UDP` (UFO) frames.
    pub ufo: bool,
    /// `GSO_UDP_L4` (USO) frames, over both IPv4 and IPv6.
    pub uso: bool,
}

impl RxCaps {
    /// Everything (e.g. a tap device with all offloads enabled).
    pub const ALL: RxCaps = RxCaps {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: true,
        ufo: true,
        uso: true,
    };
    /// Nothing: frames must arrive complete, with an all-zero header.
    pub const NONE: RxCaps = RxCaps {
        csum: false,
        tso4: false,
        tso6: false,
        ecn: false,
        ufo: false,
        uso: false,
    };

    /// What a vhost-user guest port accepts given its negotiated features (§5.1.3).
    /// Per §5.1.3.1 every `GUEST_*` GSO feature requires `GUEST_CSUM` (and `GUEST_ECN`
    /// requires TSO4 or TSO6), so a GSO bit without its prerequisite is ignored. USO is
    /// only taken when both `GUEST_USO4` and `GUEST_USO6` are, since [`plan`] does not look
    /// at the IP version.
    pub fn from_guest_features(features: u64) -> RxCaps {
        let has = |bit: u64| features & bit != 0;
        let csum = has(f::GUEST_CSUM);
        let tso4 = csum && has(f::GUEST_TSO4);
        let tso6 = csum && has(f::GUEST_TSO6);
        RxCaps {
            csum,
            tso4,
            tso6,
            ecn: (tso4 || tso6) && has(f::GUEST_ECN),
            ufo: csum && has(f::GUEST_UFO),
            uso: csum && has(f::GUEST_USO4) && has(f::GUEST_USO6),
        }
    }

    /// Whether a frame with this `gso_type` (ECN bit included) may be delivered unsegmented.
    pub fn accepts_gso(&self, gso_type: u8) -> bool {
        let kind_ok = match gso_type & !GSO_ECN {
            GSO_NONE => true,
            GSO_TCPV4 => self.tso4,
            GSO_TCPV6 => self.tso6,
            GSO_UDP => self.ufo,
            GSO_UDP_L4 => self.uso,
            _ => false,
        };
        kind_ok && (gso_type & GSO_ECN == 0 || self.ecn)
    }
}

/// Offloads a sending guest may legitimately request, from its negotiated features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxCaps {
    /// `NEEDS_CSUM` (`VIRTIO_NET_F_CSUM`).
    pub csum: bool,
    /// `GSO_TCPV4` (`HOST_TSO4`).
    pub tso4: bool,
    /// `GSO_TCPV6` (`HOST_TSO6`).
    pub tso6: bool,
    /// The `GSO_ECN` bit (`HOST_ECN`).
    pub ecn: bool,
    /// `GSO_UDP` (`HOST_UFO`).
    pub ufo: bool,
    /// `GSO_UDP_L4` (`HOST_USO`).
    pub uso: bool,
}

impl TxCaps {
    /// Everything allowed.
    pub const ALL: TxCaps = TxCaps {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: true,
        ufo: true,
        uso: true,
    };
    /// Nothing allowed: the header must be all zero (flags and gso_type).
    pub const NONE: TxCaps = TxCaps {
        csum: false,
        tso4: false,
        tso6: false,
        ecn: false,
        ufo: false,
        uso: false,
    };

    /// What a guest that negotiated `features` may send (§5.1.3; §5.1.3.1: `HOST_TSO*`,
    /// `HOST_UFO`, `HOST_USO` require `CSUM`, `HOST_ECN` requires TSO4 or TSO6).
    pub fn from_guest_features(features: u64) -> TxCaps {
        let has = |bit: u64| features & bit != 0;
        let csum = has(f::CSUM);
        let tso4 = csum && has(f::HOST_TSO4);
        let tso6 = csum && has(f::HOST_TSO6);
        TxCaps {
            csum,
            tso4,
            tso6,
            ecn: (tso4 || tso6) && has(f::HOST_ECN),
            ufo: csum && has(f::HOST_UFO),
            uso: csum && has(f::HOST_USO),
        }
    }
}

/// Checks a header a guest put in front of a `frame_len`-byte frame on its txq.
///
/// Strict where the guest breaks its negotiated features (§5.1.6.2.1: no `NEEDS_CSUM`
/// without `CSUM`, no GSO type or ECN bit without its `HOST_*` feature) or where acting on
/// the header would read or write out of bounds. Permissive like Linux
/// (`virtio_net_hdr_to_skb`) and QEMU elsewhere: a GSO frame without `NEEDS_CSUM`, a GSO
/// frame no longer than `gso_size`, `DATA_VALID`/`RSC_INFO` or unknown flag bits (ignored,
/// §5.1.6.2.2), a wrong `hdr_len` (only a hint, §5.1.6.2.2) and a non-zero `num_buffers`
/// all pass.
pub fn validate_tx(hdr: &NetHdr, frame_len: usize, caps: TxCaps) -> Result<(), HdrError> {
    validate_gso(hdr, caps)?;
    // §5.1.6.2.2: csum_start/csum_offset are only used when NEEDS_CSUM is set.
    if hdr.flags & HDR_F_NEEDS_CSUM != 0 {
        if !caps.csum {
            return Err(HdrError::CsumNotNegotiated);
        }
        check_csum_bounds(hdr.csum_start.into(), hdr.csum_offset.into(), frame_len)?;
    }
    Ok(())
}

/// The GSO half of [`validate_tx`].
fn validate_gso(hdr: &NetHdr, caps: TxCaps) -> Result<(), HdrError> {
    let allowed = match hdr.gso_kind() {
        GSO_NONE if hdr.gso_type == GSO_NONE => return Ok(()),
        GSO_NONE => return Err(HdrError::UnknownGsoType(hdr.gso_type)),
        GSO_TCPV4 => caps.tso4,
        GSO_TCPV6 => caps.tso6,
        GSO_UDP => caps.ufo,
        GSO_UDP_L4 => caps.uso,
        _ => return Err(HdrError::UnknownGsoType(hdr.gso_type)),
    };
    let ecn_ok = hdr.gso_type & GSO_ECN == 0 || caps.ecn;
    if !allowed || !ecn_ok {
        return Err(HdrError::GsoNotNegotiated {
            gso_type: hdr.gso_type,
        });
    }
    if hdr.gso_size == 0 {
        return Err(HdrError::GsoSizeZero);
    }
    if hdr.gso_size < MIN_GSO_SIZE {
        return Err(HdrError::GsoSizeTooSmall(hdr.gso_size));
    }
    Ok(())
}

/// Checks that the 2-byte checksum field at `start + offset` lies inside the frame.
pub(crate) fn check_csum_bounds(
    start: usize,
    offset: usize,
    frame_len: usize,
) -> Result<(), HdrError> {
    let end = start.checked_add(offset).and_then(|at| at.checked_add(2));
    match end {
        Some(end) if end <= frame_len => Ok(()),
        _ => Err(HdrError::CsumOutOfBounds {
            start,
            offset,
            frame_len,
        }),
    }
}

/// What to do with a (validated) frame before handing it to a receiving port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Deliver the frame unchanged with the header from [`rx_hdr`].
    AsIs,
    /// Complete the partial checksum in software ([`crate::csum::complete_partial`]) first.
    CompleteCsum,
    /// Segment in software ([`crate::gso::segment`]); each segment is fully checksummed.
    Segment,
}

/// Decides how a frame carrying `hdr` reaches a port accepting `rx`.
///
/// §5.1.6.4.1: the device must not hand `gso_type` other than NONE to a driver without the
/// matching `GUEST_*` feature (nor the ECN bit without `GUEST_ECN`), and must not set
/// `flags` without `GUEST_CSUM`. A GSO frame the port cannot take is segmented (which also
/// completes checksums); a partial-checksum frame the port cannot take is completed.
pub fn plan(hdr: &NetHdr, rx: RxCaps) -> Delivery {
    let needs_csum = hdr.flags & HDR_F_NEEDS_CSUM != 0;
    if hdr.gso_kind() != GSO_NONE {
        if rx.accepts_gso(hdr.gso_type) && (rx.csum || !needs_csum) {
            Delivery::AsIs
        } else {
            Delivery::Segment
        }
    } else if needs_csum && !rx.csum {
        Delivery::CompleteCsum
    } else {
        Delivery::AsIs
    }
}

/// The header to put in front of what `delivery` produces for a port accepting `rx`
/// (`num_buffers` left 0 for the caller).
///
/// * `AsIs`: the sender's header with only `NEEDS_CSUM` kept in `flags`: a guest must not
///   send `DATA_VALID` (§5.1.6.2.1), so we never pass one through.
/// * `CompleteCsum` / `Segment`: the frame is now fully checksummed, so `flags` is
///   `DATA_VALID` if the port negotiated `GUEST_CSUM` (§5.1.6.4.1 allows it only then), else
///   zero; no GSO.
pub fn rx_hdr(hdr: &NetHdr, delivery: Delivery, rx: RxCaps) -> NetHdr {
    match delivery {
        Delivery::AsIs => NetHdr {
            flags: hdr.flags & HDR_F_NEEDS_CSUM,
            num_buffers: 0,
            ..*hdr
        },
        Delivery::CompleteCsum | Delivery::Segment => NetHdr {
            flags: if rx.csum { HDR_F_DATA_VALID } else { 0 },
            ..NetHdr::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tso4_hdr() -> NetHdr {
        NetHdr {
            flags: HDR_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    #[test]
    fn rx_caps_follow_spec_dependencies() {
        let all_guest = f::GUEST_CSUM
            | f::GUEST_TSO4
            | f::GUEST_TSO6
            | f::GUEST_ECN
            | f::GUEST_UFO
            | f::GUEST_USO4
            | f::GUEST_USO6;
        assert_eq!(RxCaps::from_guest_features(all_guest), RxCaps::ALL);
        assert_eq!(RxCaps::from_guest_features(0), RxCaps::NONE);
        // GSO bits without GUEST_CSUM are meaningless (§5.1.3.1).
        assert_eq!(
            RxCaps::from_guest_features(all_guest & !f::GUEST_CSUM),
            RxCaps::NONE
        );
        let only_csum = RxCaps::from_guest_features(f::GUEST_CSUM | f::GUEST_ECN);
        assert!(only_csum.csum && !only_csum.ecn && !only_csum.tso4);
        let no_uso6 = RxCaps::from_guest_features(f::GUEST_CSUM | f::GUEST_USO4);
        assert!(!no_uso6.uso);
    }

    #[test]
    fn tx_caps_follow_spec_dependencies() {
        let all_host =
            f::CSUM | f::HOST_TSO4 | f::HOST_TSO6 | f::HOST_ECN | f::HOST_UFO | f::HOST_USO;
        assert_eq!(TxCaps::from_guest_features(all_host), TxCaps::ALL);
        assert_eq!(
            TxCaps::from_guest_features(all_host & !f::CSUM),
            TxCaps::NONE
        );
        let t = TxCaps::from_guest_features(f::CSUM | f::HOST_ECN);
        assert!(t.csum && !t.ecn);
    }

    #[test]
    fn validate_accepts_what_linux_sends() {
        let caps = TxCaps::from_guest_features(f::CSUM | f::HOST_TSO4 | f::HOST_ECN);
        assert_eq!(validate_tx(&tso4_hdr(), 65_000, caps), Ok(()));
        let mut h = tso4_hdr();
        h.gso_type |= GSO_ECN;
        h.flags |= HDR_F_DATA_VALID | 0x40; // ignored bits
        h.hdr_len = 0; // only a hint
        h.num_buffers = 9;
        assert_eq!(validate_tx(&h, 65_000, caps), Ok(()));
        h.flags = 0; // GSO without NEEDS_CSUM: Linux accepts it
        assert_eq!(validate_tx(&h, 65_000, caps), Ok(()));
        // Plain frame with a partial checksum.
        let plain = NetHdr {
            gso_type: GSO_NONE,
            gso_size: 0,
            ..tso4_hdr()
        };
        assert_eq!(validate_tx(&plain, 54, caps), Ok(()));
        assert_eq!(validate_tx(&NetHdr::default(), 0, TxCaps::NONE), Ok(()));
    }

    #[test]
    fn validate_rejects_unnegotiated() {
        let csum_only = TxCaps::from_guest_features(f::CSUM);
        assert_eq!(
            validate_tx(&tso4_hdr(), 65_000, csum_only),
            Err(HdrError::GsoNotNegotiated {
                gso_type: GSO_TCPV4
            })
        );
        let plain = NetHdr {
            gso_type: GSO_NONE,
            ..tso4_hdr()
        };
        assert_eq!(
            validate_tx(&plain, 100, TxCaps::NONE),
            Err(HdrError::CsumNotNegotiated)
        );
        let tso4 = TxCaps::from_guest_features(f::CSUM | f::HOST_TSO4);
        let ecn = NetHdr {
            gso_type: GSO_TCPV4 | GSO_ECN,
            ..tso4_hdr()
        };
        assert!(matches!(
            validate_tx(&ecn, 65_000, tso4),
            Err(HdrError::GsoNotNegotiated { .. })
        ));
        for t in [2u8, 6, 0x7f, GSO_ECN] {
            let h = NetHdr {
                gso_type: t,
                ..tso4_hdr()
            };
            assert_eq!(
                validate_tx(&h, 65_000, TxCaps::ALL),
                Err(HdrError::UnknownGsoType(t))
            );
        }
    }

    #[test]
    fn validate_rejects_out_of_bounds() {
        let zero = NetHdr {
            gso_size: 0,
            ..tso4_hdr()
        };
        assert_eq!(
            validate_tx(&zero, 65_000, TxCaps::ALL),
            Err(HdrError::GsoSizeZero)
        );
        let tiny = NetHdr {
            gso_size: MIN_GSO_SIZE - 1,
            ..zero
        };
        assert_eq!(
            validate_tx(&tiny, 65_000, TxCaps::ALL),
            Err(HdrError::GsoSizeTooSmall(MIN_GSO_SIZE - 1))
        );
        let h = tso4_hdr(); // field at 50..52
        assert_eq!(validate_tx(&h, 52, TxCaps::ALL), Ok(()));
        assert!(matches!(
            validate_tx(&h, 51, TxCaps::ALL),
            Err(HdrError::CsumOutOfBounds {
                start: 34,
                offset: 16,
                frame_len: 51
            })
        ));
        let huge = NetHdr {
            gso_type: GSO_NONE,
            csum_start: u16::MAX,
            csum_offset: u16::MAX,
            ..h
        };
        assert!(validate_tx(&huge, 70_000, TxCaps::ALL).is_err());
        // Without NEEDS_CSUM the fields are not used (§5.1.6.2.2).
        let unused = NetHdr { flags: 0, ..huge };
        assert_eq!(validate_tx(&unused, 10, TxCaps::ALL), Ok(()));
    }

    #[test]
    fn plan_matrix() {
        let tso = tso4_hdr();
        let plain_partial = NetHdr {
            gso_type: GSO_NONE,
            gso_size: 0,
            ..tso
        };
        let full = NetHdr::default();
        let csum_only = RxCaps::from_guest_features(f::GUEST_CSUM);
        let tso4 = RxCaps::from_guest_features(f::GUEST_CSUM | f::GUEST_TSO4);

        assert_eq!(plan(&tso, RxCaps::ALL), Delivery::AsIs);
        assert_eq!(plan(&tso, tso4), Delivery::AsIs);
        assert_eq!(plan(&tso, csum_only), Delivery::Segment);
        assert_eq!(plan(&tso, RxCaps::NONE), Delivery::Segment);
        let tso_ecn = NetHdr {
            gso_type: GSO_TCPV4 | GSO_ECN,
            ..tso
        };
        assert_eq!(plan(&tso_ecn, tso4), Delivery::Segment);
        let v6 = NetHdr {
            gso_type: GSO_TCPV6,
            ..tso
        };
        assert_eq!(plan(&v6, tso4), Delivery::Segment);
        // A hand-built caps value with TSO but no csum cannot take a partial checksum.
        let odd = RxCaps {
            tso4: true,
            ..RxCaps::NONE
        };
        assert_eq!(plan(&tso, odd), Delivery::Segment);

        assert_eq!(plan(&plain_partial, csum_only), Delivery::AsIs);
        assert_eq!(plan(&plain_partial, RxCaps::NONE), Delivery::CompleteCsum);
        assert_eq!(plan(&full, RxCaps::NONE), Delivery::AsIs);
        assert_eq!(plan(&full, RxCaps::ALL), Delivery::AsIs);
    }

    #[test]
    fn rx_headers() {
        let mut h = tso4_hdr();
        h.flags |= HDR_F_DATA_VALID;
        h.num_buffers = 5;
        let as_is = rx_hdr(&h, Delivery::AsIs, RxCaps::ALL);
        assert_eq!(
            as_is,
            NetHdr {
                num_buffers: 0,
                ..tso4_hdr()
            }
        );
        let done = rx_hdr(&h, Delivery::Segment, RxCaps::ALL);
        assert_eq!(
            done,
            NetHdr {
                flags: HDR_F_DATA_VALID,
                ..NetHdr::default()
            }
        );
        assert_eq!(
            rx_hdr(&h, Delivery::CompleteCsum, RxCaps::NONE),
            NetHdr::default()
        );
    }
}
