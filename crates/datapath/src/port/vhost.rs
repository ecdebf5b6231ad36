//! A vhost-user port's rings, as the worker that runs some of them sees them.

use std::fs::File;
use std::io::Write;

use vring::{Chain, DeviceRing, Ring};

use crate::types::{PortStatus, BURST};

/// One running virtqueue with its notification fds.
#[derive(Debug)]
pub(crate) struct Vq {
    /// The ring, split or packed (hot paths match on it once per burst or delivery).
    pub ring: Ring,
    pub kick: Option<File>,
    pub call: Option<File>,
    pub err: Option<File>,
    /// Ring index (vhost-user numbering: rxq `2p`, txq `2p + 1`).
    pub index: u16,
    /// Used chains (wrapping) when they were last added to the port's ring counters.
    pub counted: u16,
    /// The chains of one tx burst (txqs only; each keeps this ring's memory mapped).
    pub burst: Vec<Chain>,
    /// Over the port's ingress rate: not served before this (txqs only).
    pub throttled: Option<std::time::Instant>,
    /// When a tx burst last took frames (txqs only): event mode keeps the ring polled a
    /// moment after it empties (see `worker::rings::EVENT_GRACE`).
    pub last_frames: Option<std::time::Instant>,
    /// The guest was last asked to kick this ring (txqs: event mode arms kicks when the
    /// ring empties and disarms them once frames flow again).
    pub kicks_armed: bool,
}

impl Vq {
    /// A ring that just started; a txq gets the chain storage of its bursts.
    pub fn new(
        ring: Ring,
        index: u16,
        kick: Option<File>,
        call: Option<File>,
        err: Option<File>,
    ) -> Vq {
        let burst = if index % 2 == 1 {
            (0..BURST).map(|_| Chain::new()).collect()
        } else {
            Vec::new()
        };
        Vq {
            counted: ring.used_chains(),
            ring,
            kick,
            call,
            err,
            index,
            burst,
            throttled: None,
            last_frames: None,
            kicks_armed: true,
        }
    }

    /// Adds the used entries published since the last call to the port's ring counters.
    /// Called at least once per burst, so fewer than 2^16 entries pass in between.
    pub fn count_used(&mut self, status: &PortStatus) {
        let now = self.ring.used_chains();
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

    /// Publishes the used entries collected, calling the guest where it asked.
    pub fn flush(&mut self) {
        if self.ring.flush_used() {
            self.call();
        }
    }

    /// Signals the error eventfd (the ring broke).
    pub fn signal_err(&mut self) {
        if let Some(e) = &mut self.err {
            let _ = e.write(&1u64.to_ne_bytes());
        }
    }
}

/// The rings of a vhost-user port that run on this worker, by queue pair.
#[derive(Debug)]
pub(crate) struct VhostRings {
    /// Negotiated virtio features (valid while a ring runs).
    pub features: u64,
    /// rxqs (device writes).
    pub rxq: Vec<Option<Vq>>,
    /// txqs (device reads).
    pub txq: Vec<Option<Vq>>,
    /// An rxq got used entries this burst and needs a flush.
    pub rx_dirty: bool,
    /// TAP queues wait for this port's rx buffers (its rx kicks are wanted).
    pub rx_waiters: u16,
}

impl VhostRings {
    pub fn new(queue_pairs: u16) -> VhostRings {
        let n = usize::from(queue_pairs.max(1));
        VhostRings {
            features: 0,
            rxq: (0..n).map(|_| None).collect(),
            txq: (0..n).map(|_| None).collect(),
            rx_dirty: false,
            rx_waiters: 0,
        }
    }

    /// The ring with vhost-user index `index`, if it runs here.
    pub fn vq(&mut self, index: u16) -> Option<&mut Vq> {
        self.slot(index)?.as_mut()
    }

    /// The place of ring `index` (None beyond the configured queue pairs).
    pub fn slot(&mut self, index: u16) -> Option<&mut Option<Vq>> {
        let list = if index % 2 == 0 {
            &mut self.rxq
        } else {
            &mut self.txq
        };
        list.get_mut(usize::from(index / 2))
    }

    /// Every ring that runs here.
    pub fn rings(&mut self) -> impl Iterator<Item = &mut Vq> {
        self.rxq.iter_mut().chain(self.txq.iter_mut()).flatten()
    }

    /// Number of rings that run here.
    pub fn running(&self) -> usize {
        self.rxq.iter().chain(self.txq.iter()).flatten().count()
    }

    /// The rxq for frames that came in on queue pair `qp` of their port: the same pair
    /// when it runs here (so a multiqueue guest's flows stay on their pair), else the
    /// first rxq that runs here.
    #[inline]
    pub fn rx_ring_for(&mut self, qp: u16) -> Option<&mut Vq> {
        let i = usize::from(qp);
        if self.rxq.get(i).is_some_and(Option::is_some) {
            return self.rxq.get_mut(i).and_then(Option::as_mut);
        }
        self.rxq.iter_mut().flatten().next()
    }

    /// Publishes the used entries of dirty rxqs, calling the guest where it asked.
    pub fn flush_rx(&mut self) {
        if !self.rx_dirty {
            return;
        }
        self.rx_dirty = false;
        for q in self.rxq.iter_mut().flatten() {
            q.flush();
        }
    }
}
