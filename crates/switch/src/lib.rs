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
//! MAC addresses are [`wire::MacAddr`], the workspace's one MAC type.
//!
//! Nothing on the per-frame path ([`Fdb::learn`], [`Fdb::lookup`], [`Fdb::decide`],
//! [`Fdb::age`], the counters) allocates or panics.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod counters;
mod decide;
mod fdb;
pub mod police;
pub mod security;
pub mod vlan;

pub use counters::{DropReason, PortCounters, SharedCounters};
pub use decide::Decision;
pub use fdb::{Fdb, FdbEntry, Learn, TableFull, DEFAULT_AGING_TIME, MAX_CAPACITY};
pub use police::TokenBucket;
pub use security::PortSecurity;
pub use vlan::{TagAction, VlanMode, VlanSet};

/// A port id the switch can count per port: a small dense index.
pub trait PortKey: Copy + Eq {
    /// The port's index (ports are numbered from 0 without large gaps).
    fn index(self) -> usize;
}

macro_rules! port_key_for_ints {
    ($($t:ty),*) => {$(
        impl PortKey for $t {
            fn index(self) -> usize {
                usize::from(self)
            }
        }
    )*};
}
port_key_for_ints!(u8, u16, usize);

impl PortKey for u32 {
    fn index(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

pub use wire::MacAddr;

/// True if `mac` may be learned as a station address: not a group address and not all zeros.
pub fn is_valid_source(mac: &MacAddr) -> bool {
    mac.is_unicast() && !mac.is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_sources() {
        assert!(is_valid_source(&MacAddr([0x52, 0x54, 0, 0, 0, 1])));
        assert!(is_valid_source(&MacAddr([0x02, 0, 0, 0, 0, 0])));
        assert!(!is_valid_source(&MacAddr::ZERO));
        assert!(!is_valid_source(&MacAddr::BROADCAST));
        assert!(!is_valid_source(&MacAddr([0x01, 0x80, 0xc2, 0, 0, 0])));
    }
}
