//! A port as its worker sees it: a vhost-user guest (rings in its memory) or a TAP device
//! (fds to the host kernel).

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use switch::{PortCounters, SharedCounters};
use virtio_net::features as f;
use virtio_net::offload::{RxCaps, TxCaps};
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
    /// Ring index (vhost-user numbering).
    pub index: u16,
    /// `next_used` when the used entries were last added to the port's ring counters.
    pub counted: u16,
}

impl Vq {
    /// Adds the used entries published since the last call to the port's ring counters.
    /// Called at least once per burst, so fewer than 2^16 entries pass in between.
    pub fn count_used(&mut self, status: &PortStatus) {
        let now = self.ring.next_used();
        let n = now.wrapping_sub(self.counted);
        if n != 0 {
            status.add_ring_used(self.index, u64::from(n));
            self.counted = now;
        }
    }

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

/// Frames waiting for a TAP fd to become writable: a bounded queue of preallocated slots.
#[derive(Debug)]
pub(crate) struct OutQueue {
    slots: Vec<Vec<u8>>,
    head: usize,
    len: usize,
}

/// Frames a TAP queue may hold back while the kernel's queue is full.
pub(crate) const TAP_OUT_SLOTS: usize = 32;

impl OutQueue {
    fn new() -> OutQueue {
        OutQueue {
            slots: Vec::new(),
            head: 0,
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A slot to fill, or None when full. Slots are allocated on first use, then reused.
    pub fn push_slot(&mut self) -> Option<&mut Vec<u8>> {
        if self.len == TAP_OUT_SLOTS {
            return None;
        }
        if self.slots.is_empty() {
            self.slots = (0..TAP_OUT_SLOTS)
                .map(|_| Vec::with_capacity(crate::forward::MAX_FRAME + port_tap::VNET_HDR_LEN))
                .collect();
        }
        let i = (self.head + self.len) % TAP_OUT_SLOTS;
        self.len += 1;
        let s = &mut self.slots[i];
        s.clear();
        Some(s)
    }

    pub fn front(&self) -> Option<&[u8]> {
        (self.len > 0).then(|| self.slots[self.head].as_slice())
    }

    pub fn pop(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % TAP_OUT_SLOTS;
            self.len -= 1;
        }
    }
}

/// One queue (fd) of a TAP device.
#[derive(Debug)]
pub(crate) struct TapQueue {
    pub fd: File,
    /// Frames the kernel would not take yet (EAGAIN), sent on EPOLLOUT.
    pub out: OutQueue,
    /// EPOLLOUT is armed.
    pub out_armed: bool,
    /// A frame read from the host that waits for its destination's rx buffers
    /// (header included), and the port it waits on.
    pub held: Vec<u8>,
    pub held_for: Option<PortId>,
    /// Buffers arrived while the held frame was being parked: try once more.
    pub retry: bool,
    /// This worker reads the queue (else it only writes to it: another worker reads it).
    pub read: bool,
}

impl TapQueue {
    pub fn new(fd: File, read: bool) -> TapQueue {
        TapQueue {
            read,
            fd,
            out: OutQueue::new(),
            out_armed: false,
            held: Vec::with_capacity(crate::forward::MAX_FRAME + port_tap::VNET_HDR_LEN),
            held_for: None,
            retry: false,
        }
    }
}

/// A TAP device attached to the switch.
#[derive(Debug)]
pub(crate) struct TapIo {
    pub ifname: String,
    pub queues: Vec<TapQueue>,
    /// The device was deleted under us: the port is down for good.
    pub gone: bool,
}

/// A port: its rings or TAP fds, offload capabilities and counters.
#[derive(Debug)]
pub(crate) struct Port {
    pub name: String,
    /// Negotiated virtio features (vhost-user; valid while a ring runs).
    pub features: u64,
    /// virtio_net_hdr length on this port.
    pub hdr_len: usize,
    /// Offloads frames delivered to this port may carry.
    pub rx_caps: RxCaps,
    /// Offloads frames from this port may carry.
    pub tx_caps: TxCaps,
    /// rxqs (device writes), by queue pair (vhost-user ports).
    pub rxq: Vec<Option<Vq>>,
    /// txqs (device reads), by queue pair (vhost-user ports).
    pub txq: Vec<Option<Vq>>,
    /// The TAP device (TAP ports).
    pub tap: Option<TapIo>,
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
    /// TAP queues wait for this port's rx buffers (its rx kicks are wanted).
    pub rx_waiters: u16,
    /// How this port's txqs are served (TAP ports: always by their fds' events).
    pub mode: crate::DatapathMode,
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
            rx_caps: RxCaps::NONE,
            tx_caps: TxCaps::from_guest_features(0),
            rxq: (0..n).map(|_| None).collect(),
            txq: (0..n).map(|_| None).collect(),
            tap: None,
            counters: PortCounters::default(),
            shared,
            status,
            broken: false,
            rx_dirty: false,
            last_rx_error: None,
            rx_waiters: 0,
            mode: crate::DatapathMode::Event,
        }
    }

    /// Takes the features a vhost-user frontend negotiated.
    pub fn set_features(&mut self, features: u64) {
        self.features = features;
        self.hdr_len = virtio_net::hdr_len(features);
        self.rx_caps = RxCaps::from_guest_features(features);
        self.tx_caps = TxCaps::from_guest_features(features);
    }

    /// Whether this port's guest merges rx buffers.
    pub fn mrg_rxbuf(&self) -> bool {
        self.features & f::MRG_RXBUF != 0
    }

    /// Broken here, or by another worker that runs some of its rings.
    pub fn is_broken(&self) -> bool {
        self.broken || self.status.is_broken()
    }

    /// Tells the control plane and the other workers which rings worker `worker` runs.
    pub fn publish_running(&self, worker: usize) {
        let n = self.rxq.iter().chain(self.txq.iter()).flatten().count();
        let rx = self.rxq.iter().any(Option::is_some);
        self.status.set_running(
            worker,
            u16::try_from(n).unwrap_or(u16::MAX),
            rx,
            self.features,
        );
    }

    /// The rxq for frames that came in on queue pair `qp` of their port: the same pair
    /// when it runs here (so a multiqueue guest's flows stay on their pair), else the
    /// first rxq that runs here.
    pub fn rx_ring_for(&mut self, qp: u16) -> Option<&mut Vq> {
        if self.is_broken() {
            return None;
        }
        let i = usize::from(qp);
        if self.rxq.get(i).is_some_and(Option::is_some) {
            return self.rxq.get_mut(i).and_then(Option::as_mut);
        }
        self.rxq.iter_mut().flatten().next()
    }

    /// True if the port can take frames from this worker now.
    pub fn can_receive(&self) -> bool {
        if self.is_broken() {
            return false;
        }
        match &self.tap {
            Some(t) => !t.gone,
            None => self.rxq.iter().any(Option::is_some),
        }
    }

    /// Adds every ring's new used entries to the shared ring counters.
    pub fn count_used(&mut self) {
        for q in self.rxq.iter_mut().chain(self.txq.iter_mut()).flatten() {
            q.count_used(&self.status);
        }
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
