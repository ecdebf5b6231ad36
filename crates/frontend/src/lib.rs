//! A userspace virtio-net *driver* over vhost-user, like DPDK's virtio-user: it plays the
//! guest and the VMM so tests and benchmarks can drive a vhost-user backend (vnetd, DPDK's
//! vhost PMD, ...) without a VM.
//!
//! * `mem`: the only `unsafe` — memfds mapped shared, raw copies and atomic ring fields.
//! * `guest`: guest physical memory (one or more regions with gaps) and a bump allocator.
//! * `ring`: the driver side of a split virtqueue (virtio 1.x §2.7), notification
//!   suppression both ways, validation of everything the device wrote.
//! * `queue`: virtio-net rx/tx queues (§5.1.6): tx layouts, indirect tables, mergeable rx
//!   buffers.
//! * [`Frontend`]: set-up (`connect`: socket, memory and queues; `session`: the vhost-user
//!   requests in the order of the VMM played; `request`: eventfds, errors and REPLY_ACK
//!   shared by every request), then the frame API (`io`).
//! * `hostile` (cargo feature `hostile`, for tests): raw descriptors, avail indexes,
//!   guest memory pokes and truncation, to play a misbehaving driver.
//!
//! Queues are named from the guest's view: on rxq `2p` the device writes, on txq `2p + 1`
//! it reads.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod config;
mod connect;
mod driver;
mod error;
mod guest;
#[cfg(any(test, feature = "hostile"))]
mod hostile;
mod io;
mod mem;
mod packed;
mod queue;
mod request;
mod ring;
mod session;
#[cfg(test)]
mod testutil;

use std::os::fd::{AsRawFd, RawFd};

use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::{Frontend as VuFrontend, VhostUserFrontend, VhostUserProtocolFeatures};
use virtio_net::features as f;

pub use config::{FrontendConfig, MemRegistration, SessionStyle, TxLayout, DEFAULT_FEATURES};
pub use error::FrontendError;
#[cfg(any(test, feature = "hostile"))]
pub use hostile::RawDesc;
#[cfg(any(test, feature = "hostile"))]
pub use ring::VringAddrs;
pub use virtio_net::config::NetConfig;

use guest::GuestMemory;
use queue::{RxQueue, TxQueue};
use request::vhost_err;
use vmm_sys_util::epoll::Epoll;
use vmm_sys_util::eventfd::EventFd;

/// Most regions one `SET_MEM_TABLE` may carry (`VHOST_MEMORY_BASELINE_NREGIONS`).
pub const MAX_MEM_TABLE_REGIONS: usize = 8;

/// A connected virtio-net driver: guest memory, rings, and the vhost-user session.
pub struct Frontend {
    config: FrontendConfig,
    vu: Option<VuFrontend>,
    mem: GuestMemory,
    offered_features: u64,
    features: u64,
    offered_protocol: u64,
    protocol: u64,
    hdr_len: usize,
    pairs: Vec<QueuePair>,
}

/// Notifier pair of one vring.
#[derive(Debug)]
pub(crate) struct Notifiers {
    kick: EventFd,
    call: EventFd,
}

/// One rxq/txq pair with its notifiers.
#[derive(Debug)]
pub(crate) struct QueuePair {
    rx: RxQueue,
    tx: TxQueue,
    rx_notify: Notifiers,
    tx_notify: Notifiers,
    /// Waits for the rx call eventfd.
    epoll: Epoll,
    /// Set once the backend misbehaved on the rxq / txq; the queue is unusable then.
    rx_broken: Option<String>,
    tx_broken: Option<String>,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fm.debug_struct("Frontend")
            .field("socket", &self.config.socket)
            .field("connected", &self.vu.is_some())
            .field("features", &f::describe(self.features))
            .field("protocol", &format_args!("{:#x}", self.protocol))
            .field("queue_pairs", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

impl Frontend {
    /// The configuration this frontend was connected with.
    pub fn config(&self) -> &FrontendConfig {
        &self.config
    }

    /// Virtio feature bits the backend offered.
    pub fn offered_features(&self) -> u64 {
        self.offered_features
    }

    /// Negotiated virtio feature bits (`offered & wanted`, see
    /// [`FrontendConfig::wanted_features`]).
    pub fn negotiated_features(&self) -> u64 {
        self.features
    }

    /// vhost-user protocol feature bits the backend offered (0 without
    /// VHOST_USER_F_PROTOCOL_FEATURES).
    pub fn offered_protocol_features(&self) -> u64 {
        self.offered_protocol
    }

    /// Negotiated vhost-user protocol feature bits.
    pub fn protocol_features(&self) -> u64 {
        self.protocol
    }

    /// Length of the virtio-net header in every buffer (10 or 12).
    pub fn hdr_len(&self) -> usize {
        self.hdr_len
    }

    /// Number of queue pairs.
    pub fn queue_pairs(&self) -> u16 {
        u16::try_from(self.pairs.len()).unwrap_or(u16::MAX)
    }

    /// Largest frame `send` accepts on this configuration.
    pub fn max_tx_frame(&self) -> usize {
        self.pairs.first().map_or(0, |p| p.tx.max_frame())
    }

    /// Number of rx chains kept posted on each rxq: with MRG_RXBUF each is one
    /// `rx_buf_size` buffer, otherwise each holds a whole frame. A backend drops what does
    /// not fit, so bursts larger than this may lose frames.
    pub fn rx_chains(&self) -> usize {
        self.pairs.first().map_or(0, |p| p.rx.chains())
    }

    /// Reads `virtio_net_config` with GET_CONFIG; `None` without the CONFIG protocol
    /// feature. (DPDK 22.11's vhost library does not offer CONFIG for net devices.)
    pub fn net_config(&mut self) -> Result<Option<NetConfig>, FrontendError> {
        if self.protocol & VhostUserProtocolFeatures::CONFIG.bits() == 0 {
            return Ok(None);
        }
        let vu = self.vu.as_mut().ok_or(FrontendError::Disconnected)?;
        let size: u32 = if self.features & f::MTU != 0 { 12 } else { 10 };
        let buf = vec![0u8; size as usize];
        let (_, payload) = vu
            .get_config(0, size, VhostUserConfigFlags::empty(), &buf)
            .map_err(vhost_err("GET_CONFIG"))?;
        Ok(Some(NetConfig::parse(&payload)))
    }

    /// The device MAC from the config space: `None` unless VIRTIO_NET_F_MAC and the CONFIG
    /// protocol feature were both negotiated.
    pub fn mac(&mut self) -> Result<Option<wire::MacAddr>, FrontendError> {
        if self.features & f::MAC == 0 {
            return Ok(None);
        }
        Ok(self.net_config()?.map(|c| c.mac))
    }

    fn vring(&self, q: u16) -> Result<(&driver::DriverRing, &Notifiers), FrontendError> {
        let p = self
            .pairs
            .get(usize::from(q / 2))
            .ok_or(FrontendError::NoSuchQueue(q))?;
        Ok(if q % 2 == 0 {
            (&p.rx.ring, &p.rx_notify)
        } else {
            (&p.tx.ring, &p.tx_notify)
        })
    }

    /// The call eventfd of vring `q` (for callers that run their own epoll loop).
    pub fn call_fd(&self, q: u16) -> Result<RawFd, FrontendError> {
        Ok(self.vring(q)?.1.call.as_raw_fd())
    }
}

#[cfg(test)]
mod tests;
