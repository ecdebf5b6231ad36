//! The forwarding decision for one frame (IEEE 802.1Q-2022 §8.6.3 "Frame filtering",
//! reduced to a learning bridge with static entries and per-port learning limits).

use std::time::Instant;

use crate::{DropReason, Fdb, Learn, MacAddr, PortKey};

/// What to do with a frame received on an ingress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<P> {
    /// Send it to this one port (never the ingress port).
    Unicast(P),
    /// Send it to every port of the VLAN except the ingress port: the destination is a group
    /// address or unknown.
    Flood,
    /// Discard it and count `DropReason` on the ingress port.
    Drop(DropReason),
}

/// What a decision depends on, besides the table and the time, packed for a cheap
/// comparison: the source address with the VLAN, the destination address, the ingress
/// port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key<P> {
    src_vlan: u64,
    dst: u64,
    ingress: P,
}

impl<P> Key<P> {
    #[inline(always)]
    fn new(ingress: P, vlan: u16, src: &MacAddr, dst: &MacAddr) -> Key<P> {
        Key {
            src_vlan: src.to_u64() | u64::from(vlan) << 48,
            dst: dst.to_u64(),
            ingress,
        }
    }
}

/// A decision remembered for the next frame with the same addresses on the same port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cached<P> {
    gen: u64,
    key: Key<P>,
    /// When it was decided (and its source learned).
    at: Instant,
    decision: Decision<P>,
}

/// Decisions remembered, one per ingress port index modulo this.
pub(crate) const DECISION_CACHE: usize = 8;

impl<P: PortKey> Fdb<P> {
    /// Learns `src` behind `ingress`, then decides where a frame from `src` to `dst` on
    /// `vlan` goes:
    ///
    /// * `src` a group address or all zeros: [`Decision::Drop`] with
    ///   [`DropReason::InvalidSrcMac`] (no station sends from such an address; forwarding it
    ///   would let a guest spoof multicast sources).
    /// * `dst` broadcast or multicast: [`Decision::Flood`].
    /// * `dst` known on another port: [`Decision::Unicast`].
    /// * `dst` known on `ingress` itself: [`Decision::Drop`] with [`DropReason::Hairpin`]; a
    ///   frame never leaves through the port it came in on.
    /// * `dst` unknown (or expired): [`Decision::Flood`].
    ///
    /// * `src` a static entry of another port: [`Decision::Drop`] with
    ///   [`DropReason::Spoofed`] (the address is not moved).
    /// * `src` new while `ingress` holds its limit of learned addresses: [`Decision::Drop`]
    ///   with [`DropReason::MacLimit`].
    ///
    /// A full table does not change the decision: the source simply stays unknown.
    #[inline]
    pub fn decide(
        &mut self,
        ingress: P,
        vlan: u16,
        src: MacAddr,
        dst: MacAddr,
        now: Instant,
    ) -> Decision<P> {
        // The same addresses on the same ingress, with the table unchanged since and
        // shortly after, decide (and learn) as the last frame of that port did: the
        // source's entry was refreshed at most `cache_for` ago, and an entry that expired
        // meanwhile is used at most that much longer.
        let key = Key::new(ingress, vlan, &src, &dst);
        let slot = ingress.index() % DECISION_CACHE;
        match &self.cache[slot] {
            Some(c)
                if c.gen == self.gen
                    && c.key == key
                    && now.saturating_duration_since(c.at) < self.cache_for =>
            {
                c.decision
            }
            _ => self.decide_uncached(key, vlan, src, dst, now),
        }
    }

    /// [`decide`](Self::decide) without the cache; remembered for the next frame.
    #[inline(never)]
    fn decide_uncached(
        &mut self,
        key: Key<P>,
        vlan: u16,
        src: MacAddr,
        dst: MacAddr,
        now: Instant,
    ) -> Decision<P> {
        let ingress = key.ingress;
        let decision = match self.learn(src, vlan, ingress, now) {
            Learn::InvalidMac => Decision::Drop(DropReason::InvalidSrcMac),
            Learn::Static { .. } => Decision::Drop(DropReason::Spoofed),
            Learn::LimitReached => Decision::Drop(DropReason::MacLimit),
            Learn::New | Learn::Refreshed | Learn::Moved { .. } | Learn::TableFull => {
                if dst.is_multicast() {
                    Decision::Flood
                } else {
                    match self.lookup(&dst, vlan, now) {
                        Some(port) if port == ingress => Decision::Drop(DropReason::Hairpin),
                        Some(port) => Decision::Unicast(port),
                        None => Decision::Flood,
                    }
                }
            }
        };
        let slot = ingress.index() % DECISION_CACHE;
        self.cache[slot] = Some(Cached {
            gen: self.gen,
            key,
            at: now,
            decision,
        });
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const BROADCAST: MacAddr = MacAddr::BROADCAST;
    use std::time::Duration;

    const A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xb]);
    const C: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xc]);
    const MCAST: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);

    #[test]
    fn unknown_then_unicast() {
        let t0 = Instant::now();
        let mut fdb = Fdb::<u8>::with_capacity(16);
        // B is unknown: flood, and A is learned on port 1.
        assert_eq!(fdb.decide(1, 0, A, B, t0), Decision::Flood);
        assert_eq!(fdb.lookup(&A, 0, t0), Some(1));
        // B answers from port 2: A is known, unicast to port 1.
        assert_eq!(fdb.decide(2, 0, B, A, t0), Decision::Unicast(1));
        assert_eq!(fdb.decide(1, 0, A, B, t0), Decision::Unicast(2));
        // C is still unknown.
        assert_eq!(fdb.decide(1, 0, A, C, t0), Decision::Flood);
    }

    #[test]
    fn broadcast_and_multicast_flood_even_when_known() {
        let t0 = Instant::now();
        let mut fdb = Fdb::<u8>::with_capacity(16);
        assert_eq!(fdb.decide(1, 0, A, BROADCAST, t0), Decision::Flood);
        assert_eq!(fdb.decide(2, 0, B, MCAST, t0), Decision::Flood);
        assert_eq!(fdb.len(), 2, "sources of flooded frames are learned");
    }

    #[test]
    fn hairpin_is_dropped() {
        let t0 = Instant::now();
        let mut fdb = Fdb::<u8>::with_capacity(16);
        assert_eq!(fdb.decide(1, 0, A, B, t0), Decision::Flood);
        assert_eq!(
            fdb.decide(1, 0, B, A, t0),
            Decision::Drop(DropReason::Hairpin)
        );
        // A frame addressed to its own sender is learned, then looks like a hairpin.
        assert_eq!(
            fdb.decide(3, 0, C, C, t0),
            Decision::Drop(DropReason::Hairpin)
        );
    }

    #[test]
    fn invalid_sources_are_dropped_and_not_learned() {
        let t0 = Instant::now();
        let mut fdb = Fdb::<u8>::with_capacity(16);
        for src in [BROADCAST, MCAST, MacAddr::ZERO] {
            assert_eq!(
                fdb.decide(1, 0, src, A, t0),
                Decision::Drop(DropReason::InvalidSrcMac)
            );
        }
        assert!(fdb.is_empty());
    }

    #[test]
    fn vlans_are_separate() {
        let t0 = Instant::now();
        let mut fdb = Fdb::<u8>::with_capacity(16);
        fdb.decide(1, 10, A, BROADCAST, t0);
        assert_eq!(fdb.decide(2, 10, B, A, t0), Decision::Unicast(1));
        assert_eq!(fdb.decide(2, 20, B, A, t0), Decision::Flood);
    }

    #[test]
    fn move_redirects_traffic() {
        let t0 = Instant::now();
        let mut fdb = Fdb::<u8>::with_capacity(16);
        fdb.decide(1, 0, A, BROADCAST, t0);
        assert_eq!(fdb.decide(2, 0, B, A, t0), Decision::Unicast(1));
        // A migrates to port 3.
        fdb.decide(3, 0, A, BROADCAST, t0);
        assert_eq!(fdb.decide(2, 0, B, A, t0), Decision::Unicast(3));
    }

    #[test]
    fn expired_destination_floods() {
        let t0 = Instant::now();
        let mut fdb = Fdb::<u8>::new(16, Duration::from_secs(10));
        fdb.decide(1, 0, A, BROADCAST, t0);
        assert_eq!(
            fdb.decide(2, 0, B, A, t0 + Duration::from_secs(9)),
            Decision::Unicast(1)
        );
        assert_eq!(
            fdb.decide(2, 0, B, A, t0 + Duration::from_secs(10)),
            Decision::Flood
        );
    }

    #[test]
    fn full_table_still_forwards() {
        let t0 = Instant::now();
        let mut fdb = Fdb::<u8>::with_capacity(1);
        fdb.decide(1, 0, A, BROADCAST, t0);
        // B cannot be learned, but its frame to A is still delivered.
        assert_eq!(fdb.decide(2, 0, B, A, t0), Decision::Unicast(1));
        assert_eq!(fdb.lookup(&B, 0, t0), None);
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use std::time::Duration;

    const X: MacAddr = MacAddr([0x52, 0, 0, 0, 0, 1]);
    const Y: MacAddr = MacAddr([0x52, 0, 0, 0, 0, 2]);

    #[test]
    fn cached_decisions_follow_table_changes() {
        let mut f: Fdb<u8> = Fdb::new(16, Duration::from_secs(300));
        let now = Instant::now();
        assert_eq!(f.decide(1, 0, X, Y, now), Decision::Flood);
        assert_eq!(f.decide(2, 0, Y, X, now), Decision::Unicast(1));
        // The same frame again at the same instant: served from the cache, same answer.
        assert_eq!(f.decide(2, 0, Y, X, now), Decision::Unicast(1));
        // X moves to port 3: the cached answer must not survive.
        assert_eq!(f.decide(3, 0, X, Y, now), Decision::Unicast(2));
        assert_eq!(f.decide(2, 0, Y, X, now), Decision::Unicast(3));
        // X's port goes down.
        f.flush_port(3);
        assert_eq!(f.decide(2, 0, Y, X, now), Decision::Flood);
        // Hairpin is cached like any decision, and recomputed after a removal.
        assert_eq!(
            f.decide(2, 0, Y, Y, now),
            Decision::Drop(DropReason::Hairpin)
        );
        f.remove(&Y, 0);
        assert_eq!(f.decide(1, 0, X, Y, now), Decision::Flood);
    }

    /// Each port keeps its last decision (a request and its answer alternate ports and
    /// both hit), for at most `cache_for`: the source is learned again after that, and an
    /// entry that expired is never used past it.
    #[test]
    fn cached_decisions_per_port_and_for_a_bounded_time() {
        let aging = Duration::from_secs(300);
        let mut f: Fdb<u8> = Fdb::new(16, aging);
        let t0 = Instant::now();
        assert_eq!(f.decide(1, 0, X, Y, t0), Decision::Flood);
        assert_eq!(f.decide(2, 0, Y, X, t0), Decision::Unicast(1));
        // Y's arrival changed the table: port 1 decides again.
        assert_eq!(f.decide(1, 0, X, Y, t0), Decision::Unicast(2));
        let age = |f: &Fdb<u8>, m: MacAddr, now| f.entries(now).find(|e| e.mac == m).map(|e| e.age);
        // Within the window, alternating: served by each port's cache, X not refreshed.
        let t1 = t0 + f.cache_for / 2;
        assert_eq!(f.decide(1, 0, X, Y, t1), Decision::Unicast(2));
        assert_eq!(f.decide(2, 0, Y, X, t1), Decision::Unicast(1));
        assert_eq!(age(&f, X, t1), Some(t1 - t0));
        // Past it: decided again, X learned again.
        let t2 = t0 + f.cache_for;
        assert_eq!(f.decide(1, 0, X, Y, t2), Decision::Unicast(2));
        assert_eq!(age(&f, X, t2), Some(Duration::ZERO));
        // Y stops sending and expires: X's frames flood, cached decision or not.
        let t3 = t0 + aging;
        assert_eq!(f.decide(1, 0, X, Y, t3), Decision::Flood);
    }
}
