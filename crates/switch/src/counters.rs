//! Per-port statistics.
//!
//! A worker counts into a plain [`PortCounters`] while it processes a burst, then flushes
//! the delta into the port's [`SharedCounters`] with [`SharedCounters::flush`] (a handful of
//! relaxed atomic adds per burst, not per frame). The control plane reads
//! [`SharedCounters::snapshot`] whenever it likes. Each counter is monotonic on its own; a
//! snapshot is not a consistent cut across counters, which statistics do not need.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why the switch or the datapath dropped a frame. The discriminant indexes
/// [`PortCounters::drops`].
#[repr(usize)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The source MAC was a group address or all zeros.
    InvalidSrcMac = 0,
    /// The destination is known on the ingress port itself.
    Hairpin = 1,
    /// The egress port had no receive buffer posted (guest rxq empty).
    NoRxBuffer = 2,
    /// The frame exceeds what the egress port accepts (MTU, buffer space, negotiated offloads).
    TooBig = 3,
    /// The virtio-net header was malformed or asked for something not negotiated.
    BadHeader = 4,
    /// The frame was malformed (shorter than an Ethernet header, bad VLAN tag ...).
    BadFrame = 5,
    /// The port's ring is broken (the peer violated the virtqueue rules).
    RingBroken = 6,
    /// Writing to the egress port failed.
    TxError = 7,
    /// The port was not up.
    PortDown = 8,
    /// A flooded frame found no other port able to receive it.
    NoDestination = 9,
    /// The source address (MAC, or the IP an ARP / neighbour advertisement claims) is not
    /// the port's own, or belongs to a static entry of another port.
    Spoofed = 10,
    /// The port already has as many learned addresses as it may.
    MacLimit = 11,
    /// The frame's VLAN is not one the port carries (or a tagged frame on an access port).
    Vlan = 12,
    /// Over the port's rate limit.
    Policed = 13,
    /// Over the port's limit of broadcast, multicast and unknown-unicast frames.
    Storm = 14,
    /// Larger than the receiving port's MTU (GSO frames: by their segment size).
    Oversize = 15,
}

impl DropReason {
    /// Number of reasons, the length of [`PortCounters::drops`].
    pub const COUNT: usize = 16;

    /// Every reason, in discriminant order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::InvalidSrcMac,
        DropReason::Hairpin,
        DropReason::NoRxBuffer,
        DropReason::TooBig,
        DropReason::BadHeader,
        DropReason::BadFrame,
        DropReason::RingBroken,
        DropReason::TxError,
        DropReason::PortDown,
        DropReason::NoDestination,
        DropReason::Spoofed,
        DropReason::MacLimit,
        DropReason::Vlan,
        DropReason::Policed,
        DropReason::Storm,
        DropReason::Oversize,
    ];

    /// Stable snake_case name, used as the key in statistics output.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::InvalidSrcMac => "invalid_src_mac",
            DropReason::Hairpin => "hairpin",
            DropReason::NoRxBuffer => "no_rx_buffer",
            DropReason::TooBig => "too_big",
            DropReason::BadHeader => "bad_header",
            DropReason::BadFrame => "bad_frame",
            DropReason::RingBroken => "ring_broken",
            DropReason::TxError => "tx_error",
            DropReason::PortDown => "port_down",
            DropReason::NoDestination => "no_destination",
            DropReason::Spoofed => "spoofed",
            DropReason::MacLimit => "mac_limit",
            DropReason::Vlan => "vlan",
            DropReason::Policed => "policed",
            DropReason::Storm => "storm",
            DropReason::Oversize => "oversize",
        }
    }

    /// Index into [`PortCounters::drops`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of one port, named from the switch's view: `rx` is what the switch received from
/// the port (its ingress), `tx` what the switch sent to it (its egress). Drops are counted on
/// the port the frame came from, or for egress failures on the port it was going to.
///
/// Additions wrap instead of overflowing, so counting never panics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes of frames received from the port (Ethernet frame, no virtio-net header).
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_packets: u64,
    /// Bytes of frames sent to the port.
    pub tx_bytes: u64,
    /// Dropped frames, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
}

impl PortCounters {
    /// Counts one frame of `bytes` received from the port.
    pub fn count_rx(&mut self, bytes: usize) {
        self.rx_packets = self.rx_packets.wrapping_add(1);
        self.rx_bytes = self.rx_bytes.wrapping_add(widen(bytes));
    }

    /// Counts `frames` frames of `bytes` in all received from the port.
    pub fn count_rx_many(&mut self, frames: u64, bytes: usize) {
        self.rx_packets = self.rx_packets.wrapping_add(frames);
        self.rx_bytes = self.rx_bytes.wrapping_add(widen(bytes));
    }

    /// Counts one frame of `bytes` sent to the port.
    pub fn count_tx(&mut self, bytes: usize) {
        self.tx_packets = self.tx_packets.wrapping_add(1);
        self.tx_bytes = self.tx_bytes.wrapping_add(widen(bytes));
    }

    /// Counts `frames` frames of `bytes` in all sent to the port.
    pub fn count_tx_many(&mut self, frames: u64, bytes: usize) {
        self.tx_packets = self.tx_packets.wrapping_add(frames);
        self.tx_bytes = self.tx_bytes.wrapping_add(widen(bytes));
    }

    /// Counts one dropped frame.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.count_drops(reason, 1);
    }

    /// Counts `n` dropped frames.
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        if let Some(d) = self.drops.get_mut(reason.index()) {
            *d = d.wrapping_add(n);
        }
    }

    /// Drops counted for `reason`.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// Sum of all drop counters.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().fold(0u64, |acc, d| acc.wrapping_add(*d))
    }

    /// `(reason, count)` for every reason, in discriminant order.
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.into_iter().zip(self.drops.iter().copied())
    }

    /// Adds every counter of `other` into `self`.
    pub fn merge(&mut self, other: &PortCounters) {
        self.rx_packets = self.rx_packets.wrapping_add(other.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(other.rx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(other.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(other.tx_bytes);
        for (d, o) in self.drops.iter_mut().zip(other.drops.iter()) {
            *d = d.wrapping_add(*o);
        }
    }

    /// Counter-wise `self - earlier` (wrapping), for rates and test assertions on deltas.
    pub fn delta_since(&self, earlier: &PortCounters) -> PortCounters {
        let mut drops = [0u64; DropReason::COUNT];
        for ((d, now), then) in drops
            .iter_mut()
            .zip(self.drops.iter())
            .zip(earlier.drops.iter())
        {
            *d = now.wrapping_sub(*then);
        }
        PortCounters {
            rx_packets: self.rx_packets.wrapping_sub(earlier.rx_packets),
            rx_bytes: self.rx_bytes.wrapping_sub(earlier.rx_bytes),
            tx_packets: self.tx_packets.wrapping_sub(earlier.tx_packets),
            tx_bytes: self.tx_bytes.wrapping_sub(earlier.tx_bytes),
            drops,
        }
    }

    /// True if every counter is zero (nothing to flush).
    pub fn is_zero(&self) -> bool {
        // Or-ing the fields avoids a memcmp call: this runs once per port per datapath round.
        let drops = self.drops.iter().fold(0, |a, d| a | d);
        (self.rx_packets | self.rx_bytes | self.tx_packets | self.tx_bytes | drops) == 0
    }

    /// Sets every counter to zero.
    pub fn reset(&mut self) {
        *self = PortCounters::default();
    }
}

/// `usize` to `u64`; lossless on every platform Rust supports (usize is at most 64 bits).
fn widen(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The atomic twin of [`PortCounters`]: written by the port's worker with relaxed adds, read
/// by the control plane. Share it with `Arc`.
#[derive(Debug, Default)]
pub struct SharedCounters {
    /// Frames received from the port.
    pub rx_packets: AtomicU64,
    /// Bytes received from the port.
    pub rx_bytes: AtomicU64,
    /// Frames sent to the port.
    pub tx_packets: AtomicU64,
    /// Bytes sent to the port.
    pub tx_bytes: AtomicU64,
    /// Dropped frames, indexed by [`DropReason::index`].
    pub drops: [AtomicU64; DropReason::COUNT],
}

impl SharedCounters {
    /// All counters zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a delta. Relaxed ordering: counters order nothing else, each one only has to
    /// stay monotonic, which atomic read-modify-writes guarantee on their own. Zero fields
    /// are skipped, so a burst without drops costs no atomic operation on the drop counters.
    pub fn add(&self, delta: &PortCounters) {
        add_nonzero(&self.rx_packets, delta.rx_packets);
        add_nonzero(&self.rx_bytes, delta.rx_bytes);
        add_nonzero(&self.tx_packets, delta.tx_packets);
        add_nonzero(&self.tx_bytes, delta.tx_bytes);
        for (shared, d) in self.drops.iter().zip(delta.drops.iter()) {
            add_nonzero(shared, *d);
        }
    }

    /// Adds `local` and zeroes it: the per-burst flush of a worker.
    pub fn flush(&self, local: &mut PortCounters) {
        if !local.is_zero() {
            self.add(local);
            local.reset();
        }
    }

    /// Current values (relaxed loads; see the module docs about consistency).
    pub fn snapshot(&self) -> PortCounters {
        let mut drops = [0u64; DropReason::COUNT];
        for (d, shared) in drops.iter_mut().zip(self.drops.iter()) {
            *d = shared.load(Ordering::Relaxed);
        }
        PortCounters {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            drops,
        }
    }
}

fn add_nonzero(counter: &AtomicU64, n: u64) {
    if n != 0 {
        // Relaxed: see `SharedCounters::add`. fetch_add wraps on overflow.
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reason_names_and_indices() {
        assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(r.to_string(), r.name());
        }
        let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            [
                "invalid_src_mac",
                "hairpin",
                "no_rx_buffer",
                "too_big",
                "bad_header",
                "bad_frame",
                "ring_broken",
                "tx_error",
                "port_down",
                "no_destination",
                "spoofed",
                "mac_limit",
                "vlan",
                "policed",
                "storm",
                "oversize"
            ]
        );
    }

    #[test]
    fn local_counting() {
        let mut c = PortCounters::default();
        assert!(c.is_zero());
        c.count_rx(60);
        c.count_rx(1514);
        c.count_tx(100);
        c.count_drop(DropReason::Hairpin);
        c.count_drops(DropReason::NoRxBuffer, 3);
        assert_eq!((c.rx_packets, c.rx_bytes), (2, 1574));
        assert_eq!((c.tx_packets, c.tx_bytes), (1, 100));
        assert_eq!(c.drops_for(DropReason::Hairpin), 1);
        assert_eq!(c.drops_for(DropReason::NoRxBuffer), 3);
        assert_eq!(c.total_drops(), 4);
        let nonzero: Vec<_> = c.drops_by_reason().filter(|(_, n)| *n != 0).collect();
        assert_eq!(
            nonzero,
            [(DropReason::Hairpin, 1), (DropReason::NoRxBuffer, 3)]
        );
        c.reset();
        assert!(c.is_zero());
    }

    #[test]
    fn counting_wraps_instead_of_panicking() {
        let mut c = PortCounters {
            rx_packets: u64::MAX,
            ..PortCounters::default()
        };
        c.drops[0] = u64::MAX;
        c.count_rx(1);
        c.count_drop(DropReason::InvalidSrcMac);
        assert_eq!(c.rx_packets, 0);
        assert_eq!(c.drops[0], 0);
    }

    #[test]
    fn merge_and_delta() {
        let mut a = PortCounters::default();
        a.count_rx(10);
        a.count_drop(DropReason::TooBig);
        let mut b = a;
        b.count_tx(20);
        b.count_drop(DropReason::TooBig);
        let d = b.delta_since(&a);
        assert_eq!((d.rx_packets, d.tx_packets, d.tx_bytes), (0, 1, 20));
        assert_eq!(d.drops_for(DropReason::TooBig), 1);
        let mut m = a;
        m.merge(&d);
        assert_eq!(m, b);
    }

    #[test]
    fn flush_into_shared() {
        let shared = SharedCounters::new();
        let mut local = PortCounters::default();
        local.count_rx(64);
        local.count_tx(128);
        local.count_drop(DropReason::PortDown);
        shared.flush(&mut local);
        assert!(local.is_zero(), "flush zeroes the local delta");

        local.count_rx(64);
        local.count_drop(DropReason::PortDown);
        local.count_drop(DropReason::TxError);
        shared.flush(&mut local);
        shared.flush(&mut local); // nothing left: no double count

        let s = shared.snapshot();
        assert_eq!((s.rx_packets, s.rx_bytes), (2, 128));
        assert_eq!((s.tx_packets, s.tx_bytes), (1, 128));
        assert_eq!(s.drops_for(DropReason::PortDown), 2);
        assert_eq!(s.drops_for(DropReason::TxError), 1);
        assert_eq!(s.total_drops(), 3);
    }

    #[test]
    fn concurrent_flushes_add_up() {
        let shared = Arc::new(SharedCounters::new());
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut local = PortCounters::default();
                    for _ in 0..1000 {
                        local.count_rx(100);
                        local.count_drop(DropReason::BadFrame);
                        shared.flush(&mut local);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let s = shared.snapshot();
        assert_eq!(s.rx_packets, 4000);
        assert_eq!(s.rx_bytes, 400_000);
        assert_eq!(s.drops_for(DropReason::BadFrame), 4000);
    }
}
