//! A port as its worker sees it.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use switch::{PortCounters, SharedCounters};
use virtio_net::features as f;
use vring::SplitQueue;

use crate::handle::PortStatus;

/// Index of a port inside its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// One running virtqueue with its notification fds.
#[derive(Debug)]
pub(crate) struct Vq {
    pub ring: SplitQueue,
    pub kick: Option<File>,
    pub call: Option<File>,
    pub err: Option<File>,
}

impl Vq {
    /// Interrupts the guest (writes the call eventfd).
    pub fn call(&mut self) {
        if let Some(c) = &mut self.call {
            // An eventfd write only fails if the counter would overflow, in which case the
            // guest has a pending interrupt anyway.
            let _ = c.write(&1u64.to_ne_bytes());
        }
    }

    /// Signals the error eventfd (the ring broke).
    pub fn signal_err(&mut self) {
        if let Some(e) = &mut self.err {
            let _ = e.write(&1u64.to_ne_bytes());
        }
    }
}

/// A vhost-user port: its rings, negotiated features and counters.
#[derive(Debug)]
pub(crate) struct Port {
    pub name: String,
    /// Negotiated virtio features (valid while a ring runs).
    pub features: u64,
    /// virtio_net_hdr length on this port's rings.
    pub hdr_len: usize,
    /// rxqs (device writes), by queue pair.
    pub rxq: Vec<Option<Vq>>,
    /// txqs (device reads), by queue pair.
    pub txq: Vec<Option<Vq>>,
    /// Counters accumulated since the last flush.
    pub counters: PortCounters,
    pub shared: Arc<SharedCounters>,
    pub status: Arc<PortStatus>,
    /// The guest broke a ring rule: nothing of this port is touched until it restarts.
    pub broken: bool,
    /// An rxq got used entries this burst and needs a flush.
    pub rx_dirty: bool,
    /// The ring error that made an rx delivery fail, for `break_port`.
    pub last_rx_error: Option<vring::RingError>,
}

impl Port {
    pub fn new(
        name: String,
        queue_pairs: u16,
        shared: Arc<SharedCounters>,
        status: Arc<PortStatus>,
    ) -> Port {
        let n = usize::from(queue_pairs.max(1));
        Port {
            name,
            features: 0,
            hdr_len: virtio_net::HDR_LEN_V1,
            rxq: (0..n).map(|_| None).collect(),
            txq: (0..n).map(|_| None).collect(),
            counters: PortCounters::default(),
            shared,
            status,
            broken: false,
            rx_dirty: false,
            last_rx_error: None,
        }
    }

    /// Whether this port's guest merges rx buffers.
    pub fn mrg_rxbuf(&self) -> bool {
        self.features & f::MRG_RXBUF != 0
    }

    /// The rxq frames to this port go to, if one runs.
    pub fn rx_ring(&mut self) -> Option<&mut Vq> {
        if self.broken {
            return None;
        }
        self.rxq.iter_mut().flatten().next()
    }

    /// True if some rxq runs: the port can receive.
    pub fn can_receive(&self) -> bool {
        !self.broken && self.rxq.iter().any(Option::is_some)
    }

    /// Publishes the used entries of dirty rxqs, calling the guest where it asked.
    pub fn flush_rx(&mut self) {
        if !self.rx_dirty {
            return;
        }
        self.rx_dirty = false;
        for q in self.rxq.iter_mut().flatten() {
            if q.ring.flush_used() {
                q.call();
            }
        }
    }
}
