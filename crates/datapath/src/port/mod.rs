//! A port as its worker sees it: a vhost-user guest (rings in its memory) or a TAP device
//! (fds to the host kernel), with what both have in common: name, offloads, counters,
//! status.

pub(crate) mod tap;
pub(crate) mod vhost;

use std::sync::Arc;

use switch::{DropReason, PortCounters, SharedCounters};
use virtio_net::features as f;
use virtio_net::offload::{RxCaps, TxCaps};
use vring::RingError;

use crate::policy::Policy;
use crate::types::{DatapathMode, PortId, PortStatus};
use tap::TapPort;
use vhost::{VhostRings, Vq};

/// Port `id` of a port table (indexed by id; `None`: no such port).
pub(crate) fn find(ports: &[Option<Port>], id: PortId) -> Option<&Port> {
    ports.get(usize::from(id.0)).and_then(Option::as_ref)
}

/// [`find`], mutably.
pub(crate) fn find_mut(ports: &mut [Option<Port>], id: PortId) -> Option<&mut Port> {
    ports.get_mut(usize::from(id.0)).and_then(Option::as_mut)
}

/// What kind of port, with its own state.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A guest over vhost-user.
    Vhost(VhostRings),
    /// A TAP device.
    Tap(TapPort),
}

/// A port: its rings or TAP fds, offload capabilities and counters.
#[derive(Debug)]
pub(crate) struct Port {
    pub name: String,
    /// virtio_net_hdr length on this port.
    pub hdr_len: usize,
    /// Offloads frames delivered to this port may carry.
    pub rx_caps: RxCaps,
    /// Offloads frames from this port may carry.
    pub tx_caps: TxCaps,
    /// Counters accumulated since the last flush.
    pub counters: PortCounters,
    pub shared: Arc<SharedCounters>,
    pub status: Arc<PortStatus>,
    /// The guest broke a ring rule: nothing of this port is touched until it restarts.
    pub broken: bool,
    /// How this port's txqs are served (TAP ports: always by their fds' events).
    pub mode: DatapathMode,
    /// Port security, VLAN, MTU, rate limits.
    pub policy: Box<Policy>,
    pub kind: Kind,
    /// Budget of this port's warnings (a guest breaking its rings in a loop).
    pub log: crate::loglimit::LogLimit,
    /// A capture of this port's frames, while `vnetctl capture` runs.
    pub capture: Option<Box<crate::capture::Sink>>,
}

impl Port {
    /// A vhost-user port with no ring running yet.
    pub fn vhost(
        name: String,
        queue_pairs: u16,
        mode: DatapathMode,
        policy: Policy,
        shared: Arc<SharedCounters>,
        status: Arc<PortStatus>,
    ) -> Port {
        Port {
            policy: Box::new(policy),
            name,
            hdr_len: virtio_net::HDR_LEN_V1,
            rx_caps: RxCaps::NONE,
            tx_caps: TxCaps::from_guest_features(0),
            counters: PortCounters::default(),
            shared,
            status,
            broken: false,
            mode,
            kind: Kind::Vhost(VhostRings::new(queue_pairs)),
            log: Default::default(),
            capture: None,
        }
    }

    /// A TAP port over `tap`'s fds, with the offloads the device takes and sends.
    pub fn tap(
        name: String,
        tap: port_tap::Tap,
        rings: Vec<Option<crate::uring::TapRing>>,
        read: bool,
        policy: Policy,
        shared: Arc<SharedCounters>,
        status: Arc<PortStatus>,
    ) -> Port {
        Port {
            policy: Box::new(policy),
            name,
            hdr_len: port_tap::VNET_HDR_LEN,
            rx_caps: RxCaps::from_guest_features(tap.write_features()),
            tx_caps: TxCaps::from_guest_features(tap.read_features()),
            counters: PortCounters::default(),
            shared,
            status,
            broken: false,
            mode: DatapathMode::Event,
            kind: Kind::Tap(TapPort::new(tap.ifname, tap.queues, rings, read)),
            log: Default::default(),
            capture: None,
        }
    }

    pub fn vhost_mut(&mut self) -> Option<&mut VhostRings> {
        match &mut self.kind {
            Kind::Vhost(v) => Some(v),
            Kind::Tap(_) => None,
        }
    }

    pub fn vhost_ref(&self) -> Option<&VhostRings> {
        match &self.kind {
            Kind::Vhost(v) => Some(v),
            Kind::Tap(_) => None,
        }
    }

    pub fn tap_mut(&mut self) -> Option<&mut TapPort> {
        match &mut self.kind {
            Kind::Tap(t) => Some(t),
            Kind::Vhost(_) => None,
        }
    }

    pub fn tap_ref(&self) -> Option<&TapPort> {
        match &self.kind {
            Kind::Tap(t) => Some(t),
            Kind::Vhost(_) => None,
        }
    }

    pub fn is_tap(&self) -> bool {
        matches!(self.kind, Kind::Tap(_))
    }

    /// Takes the features a vhost-user frontend negotiated.
    pub fn set_features(&mut self, features: u64) {
        self.hdr_len = virtio_net::hdr_len(features);
        self.rx_caps = RxCaps::from_guest_features(features);
        self.tx_caps = TxCaps::from_guest_features(features);
        if let Some(v) = self.vhost_mut() {
            v.features = features;
        }
    }

    /// Whether this port's guest merges rx buffers.
    pub fn mrg_rxbuf(&self) -> bool {
        self.vhost_ref()
            .is_some_and(|v| v.features & f::MRG_RXBUF != 0)
    }

    /// Broken here, or by another worker that runs some of its rings.
    #[inline]
    pub fn is_broken(&self) -> bool {
        self.broken || self.status.is_broken()
    }

    /// Tells the control plane and the other workers which rings worker `worker` runs.
    pub fn publish_running(&self, worker: usize) {
        let (n, rx, features) = match &self.kind {
            Kind::Vhost(v) => (v.running(), v.rxq.iter().any(Option::is_some), v.features),
            Kind::Tap(t) => (t.queues.len(), !t.queues.is_empty(), 0),
        };
        self.status
            .set_running(worker, u16::try_from(n).unwrap_or(u16::MAX), rx, features);
    }

    /// The rxq for frames that came in on queue pair `qp` of their port (see
    /// [`VhostRings::rx_ring_for`]); None for a broken port or a TAP.
    #[inline]
    pub fn rx_ring_for(&mut self, qp: u16) -> Option<&mut Vq> {
        if self.is_broken() {
            return None;
        }
        self.rx_ring_and_policy(qp).map(|(q, _)| q)
    }

    /// [`rx_ring_for`](Self::rx_ring_for) of a port not known to be broken, with the
    /// port's policy beside it.
    #[inline]
    pub fn rx_ring_and_policy(&mut self, qp: u16) -> Option<(&mut Vq, &mut Policy)> {
        match &mut self.kind {
            Kind::Vhost(v) => Some((v.rx_ring_for(qp)?, &mut self.policy)),
            Kind::Tap(_) => None,
        }
    }

    /// True if the port can take frames from this worker now.
    pub fn can_receive(&self) -> bool {
        if self.is_broken() {
            return false;
        }
        match &self.kind {
            Kind::Tap(t) => !t.gone,
            Kind::Vhost(v) => v.rxq.iter().any(Option::is_some),
        }
    }

    /// The guest broke a ring rule: stop touching the port, say why, count it, signal the
    /// frontend. True if it was not broken before.
    pub fn mark_broken(&mut self, e: &RingError) -> bool {
        if self.broken {
            return false;
        }
        if let Some(n) = self.log.allow(std::time::Instant::now()) {
            tracing::error!(
                "port {}: guest violated the virtqueue rules ({e}); port marked broken until \
                 the frontend resets it{}",
                self.name,
                crate::loglimit::suppressed_note(n)
            );
        }
        self.broken = true;
        self.counters.count_drop(DropReason::RingBroken);
        self.status.set_broken(Some(e.to_string()));
        if let Some(v) = self.vhost_mut() {
            for q in v.rings() {
                q.signal_err();
            }
        }
        true
    }

    /// Adds every ring's new used entries to the shared ring counters.
    pub fn count_used(&mut self) {
        let Port { kind, status, .. } = self;
        if let Kind::Vhost(v) = kind {
            for q in v.rings() {
                q.count_used(status);
            }
        }
    }

    /// Publishes the used entries of dirty rxqs, calling the guest where it asked.
    pub fn flush_rx(&mut self) {
        if let Kind::Vhost(v) = &mut self.kind {
            v.flush_rx();
        }
    }

    /// Moves the counters of the last burst into the shared ones the control plane reads.
    pub fn flush_counters(&mut self) {
        if !self.counters.is_zero() {
            self.shared.flush(&mut self.counters);
            self.count_used();
        }
    }
}
