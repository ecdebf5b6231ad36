//! The L2 learning switch, pure: no fds, no threads, no clock, no unsafe.
//!
//! * [`Fdb`]: the forwarding database, a bounded MAC learning table keyed by
//!   `(mac, vlan)`, allocated once at construction and aged with a caller-supplied `now`.
//! * [`Fdb::decide`]: the forwarding decision for one frame ([`Decision`]): learn the source,
//!   then unicast, flood or drop.
//! * [`PortCounters`] / [`SharedCounters`]: per-port statistics, plain integers in the worker
//!   flushed per burst into atomics the control plane reads.
//!
//! The switch is generic over the port id `P` (whatever the datapath uses to name a port).
//! Directions are named from the switch's view: a port's *ingress* (counted as `rx`) is the
//! frames the switch receives from it, its *egress* (`tx`) the frames the switch sends to it.
//! MAC addresses are plain `[u8; 6]` ([`Mac`]), first octet first as on the wire.
//!
//! Nothing on the per-frame path ([`Fdb::learn`], [`Fdb::lookup`], [`Fdb::decide`],
//! [`Fdb::age`], the counters) allocates or panics.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod counters;
mod decide;
mod fdb;

pub use counters::{DropReason, PortCounters, SharedCounters};
pub use decide::Decision;
pub use fdb::{Fdb, FdbEntry, Learn, DEFAULT_AGING_TIME, MAX_CAPACITY};

/// A MAC address, first octet first (transmission order).
pub type Mac = [u8; 6];

/// The all-ones broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// True for group addresses: the I/G bit (least significant bit of the first octet) is set.
/// Broadcast is a group address too (IEEE 802-2014 §8.2).
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 0x01 != 0
}

/// True for `ff:ff:ff:ff:ff:ff`.
pub fn is_broadcast(mac: &Mac) -> bool {
    *mac == BROADCAST
}

/// True if `mac` may be learned as a station address: not a group address and not all zeros.
pub fn is_valid_source(mac: &Mac) -> bool {
    !is_multicast(mac) && *mac != [0; 6]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        assert!(is_multicast(&BROADCAST));
        assert!(is_broadcast(&BROADCAST));
        assert!(is_multicast(&[0x01, 0x00, 0x5e, 0, 0, 1]));
        assert!(is_multicast(&[0x33, 0x33, 0, 0, 0, 1]));
        assert!(!is_multicast(&[0x52, 0x54, 0, 0, 0, 1]));
        assert!(!is_broadcast(&[0x01, 0x00, 0x5e, 0, 0, 1]));
        assert!(is_valid_source(&[0x52, 0x54, 0, 0, 0, 1]));
        assert!(is_valid_source(&[0x02, 0, 0, 0, 0, 0]));
        assert!(!is_valid_source(&[0; 6]));
        assert!(!is_valid_source(&BROADCAST));
        assert!(!is_valid_source(&[0x01, 0x80, 0xc2, 0, 0, 0]));
    }
}
