//! TAP ports: the host path of the lecture. vnetd opens `/dev/net/tun` with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (plus `IFF_MULTI_QUEUE` for several queues), so
//! every frame read or written carries a 12-byte `virtio_net_hdr` with its offload
//! metadata, and enables the offloads (`TUNSETOFFLOAD`) the switch can deliver to any
//! port: checksum and TSO4/TSO6/ECN. Frames to the host go out with one `writev` each,
//! straight from guest memory.
//!
//! The device may be created in another network namespace: the open happens on a short
//! lived thread that entered that namespace; the fds stay valid wherever they are used.
#![deny(missing_docs)]
#![deny(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::PathBuf;

use virtio_net::features as f;

#[allow(unsafe_code)] // ioctls, readv/writev, setns
pub mod sys;

/// `virtio_net_hdr` size on the TAP fds (the VERSION_1 / mergeable layout).
pub const VNET_HDR_LEN: usize = 12;

/// `TUN_F_CSUM`: the host may hand us partially checksummed frames.
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUN_F_TSO4`.
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUN_F_TSO6`.
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUN_F_TSO_ECN`.
pub const TUN_F_TSO_ECN: u32 = 0x08;

/// The offloads vnetd enables: what the switch can deliver anywhere (segmenting or
/// checksumming in software for guests that did not accept them).
pub const OFFLOADS: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;

/// What to open.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// Interface name (created if missing, attached to if persistent).
    pub ifname: String,
    /// Network namespace (under `/run/netns`) to create it in.
    pub netns: Option<String>,
    /// Queues (fds); more than one uses IFF_MULTI_QUEUE.
    pub queues: u16,
    /// MAC address to set on the interface.
    pub mac: Option<wire::MacAddr>,
    /// MTU to set on the interface.
    pub mtu: Option<u16>,
}

/// Why a TAP port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// A step failed; `what` names it.
    #[error("tap {ifname}: {what}: {err}")]
    Os {
        /// Interface.
        ifname: String,
        /// The step.
        what: String,
        /// Cause.
        err: io::Error,
    },
}

/// An open TAP device: one non-blocking fd per queue.
#[derive(Debug)]
pub struct Tap {
    /// Interface name as the kernel reports it.
    pub ifname: String,
    /// One fd per queue.
    pub queues: Vec<File>,
    /// `TUN_F_*` offloads enabled.
    pub offloads: u32,
}

impl Tap {
    /// What frames written to the device may carry, as virtio guest feature bits: the
    /// kernel takes partial checksums and TCP segmentation on write
    /// (`virtio_net_hdr_to_skb`), whatever `TUNSETOFFLOAD` says.
    pub fn write_features(&self) -> u64 {
        f::GUEST_CSUM | f::GUEST_TSO4 | f::GUEST_TSO6 | f::GUEST_ECN
    }

    /// What frames read from the device may carry, as virtio device feature bits: what
    /// `TUNSETOFFLOAD` enabled.
    pub fn read_features(&self) -> u64 {
        let mut bits = 0;
        for (tun, virtio) in [
            (TUN_F_CSUM, f::CSUM),
            (TUN_F_TSO4, f::HOST_TSO4),
            (TUN_F_TSO6, f::HOST_TSO6),
            (TUN_F_TSO_ECN, f::HOST_ECN),
        ] {
            if self.offloads & tun != 0 {
                bits |= virtio;
            }
        }
        bits
    }

    /// Opens (creating if needed) the TAP device of `cfg`, configures it and brings it up.
    pub fn open(cfg: &TapConfig) -> Result<Tap, TapError> {
        match &cfg.netns {
            None => open_here(cfg),
            Some(ns) => {
                let path = PathBuf::from("/run/netns").join(ns);
                let nsf = File::open(&path).map_err(|err| TapError::Os {
                    ifname: cfg.ifname.clone(),
                    what: format!("opening network namespace {}", path.display()),
                    err,
                })?;
                let cfg = cfg.clone();
                // setns changes only the calling thread: do the whole setup on a thread of
                // its own, which ends with it.
                std::thread::spawn(move || {
                    sys::enter_netns(&nsf).map_err(|err| TapError::Os {
                        ifname: cfg.ifname.clone(),
                        what: "entering the network namespace".into(),
                        err,
                    })?;
                    open_here(&cfg)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(TapError::Os {
                        ifname: String::new(),
                        what: "namespace thread".into(),
                        err: io::Error::other("panicked"),
                    })
                })
            }
        }
    }
}

fn open_here(cfg: &TapConfig) -> Result<Tap, TapError> {
    let err = |what: &str| {
        let ifname = cfg.ifname.clone();
        let what = what.to_string();
        move |err| TapError::Os { ifname, what, err }
    };
    let n = cfg.queues.max(1);
    let mut flags = sys::IFF_TAP | sys::IFF_NO_PI | sys::IFF_VNET_HDR;
    if n > 1 {
        flags |= sys::IFF_MULTI_QUEUE;
    }
    let mut queues = Vec::with_capacity(usize::from(n));
    let mut ifname = cfg.ifname.clone();
    for _ in 0..n {
        let f = sys::open_tun().map_err(err("opening /dev/net/tun"))?;
        ifname = sys::set_iff(&f, &cfg.ifname, flags).map_err(err("TUNSETIFF"))?;
        let hl = i32::try_from(VNET_HDR_LEN).unwrap_or(12);
        sys::set_vnet_hdr_size(&f, hl).map_err(err("TUNSETVNETHDRSZ"))?;
        sys::set_offload(&f, OFFLOADS).map_err(err("TUNSETOFFLOAD"))?;
        queues.push(f);
    }
    if let Some(mac) = cfg.mac {
        sys::set_mac(&ifname, mac).map_err(err("setting the MAC address"))?;
    }
    if let Some(mtu) = cfg.mtu {
        sys::set_mtu(&ifname, mtu).map_err(err("setting the MTU"))?;
    }
    sys::set_up(&ifname).map_err(err("bringing the interface up"))?;
    Ok(Tap {
        ifname,
        queues,
        offloads: OFFLOADS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(offloads: u32) -> Tap {
        Tap {
            ifname: "t".into(),
            queues: Vec::new(),
            offloads,
        }
    }

    #[test]
    fn features_follow_the_offloads_enabled() {
        assert_eq!(tap(0).read_features(), 0);
        assert_eq!(
            tap(OFFLOADS).read_features(),
            f::CSUM | f::HOST_TSO4 | f::HOST_TSO6 | f::HOST_ECN
        );
        assert_eq!(tap(TUN_F_CSUM).read_features(), f::CSUM);
        // Writes take offloads whatever TUNSETOFFLOAD says.
        assert_eq!(tap(0).write_features(), tap(OFFLOADS).write_features());
        assert_ne!(tap(0).write_features() & f::GUEST_TSO4, 0);
    }
}
