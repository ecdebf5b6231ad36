//! A driver ring of either layout, as the virtio-net queues use it: [`DriverRing`] over the
//! split ring of [`crate::ring`] and the packed ring of [`crate::packed`], which share that
//! module's descriptor types. The layers: `ring` <- `packed` <- `driver` <- `queue`.

use crate::guest::GuestMemory;
use crate::packed::{PackedRing, INITIAL_BASE};
use crate::ring::{Seg, SplitRing, Used, VringAddrs};
use crate::FrontendError;

/// A driver ring of either layout (the frontend is a test and bench tool: one match per
/// call is fine here).
#[derive(Debug)]
pub(crate) enum DriverRing {
    Split(SplitRing),
    Packed(PackedRing),
}

macro_rules! each {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            DriverRing::Split($r) => $e,
            DriverRing::Packed($r) => $e,
        }
    };
}

impl DriverRing {
    /// A ring of the negotiated layout.
    pub(crate) fn new(
        mem: &mut GuestMemory,
        index: u16,
        size: u16,
        event_idx: bool,
        packed: bool,
    ) -> Result<DriverRing, FrontendError> {
        Ok(if packed {
            DriverRing::Packed(PackedRing::new(mem, index, size, event_idx)?)
        } else {
            DriverRing::Split(SplitRing::new(mem, index, size, event_idx)?)
        })
    }

    /// SET_VRING_BASE of a fresh ring.
    pub(crate) fn initial_base(&self) -> u16 {
        match self {
            DriverRing::Split(_) => 0,
            DriverRing::Packed(_) => INITIAL_BASE,
        }
    }

    pub(crate) fn addrs(&self) -> VringAddrs {
        each!(self, r => r.addrs())
    }

    pub(crate) fn index(&self) -> u16 {
        each!(self, r => r.index())
    }

    /// Free descriptors (split) or ring entries (packed).
    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        each!(self, r => r.free_count())
    }

    pub(crate) fn inflight(&self) -> u16 {
        each!(self, r => r.inflight())
    }

    pub(crate) fn post(
        &mut self,
        mem: &mut GuestMemory,
        segs: &[Seg],
        token: u32,
    ) -> Result<Option<u16>, FrontendError> {
        each!(self, r => r.post(mem, segs, token))
    }

    pub(crate) fn post_indirect(
        &mut self,
        mem: &mut GuestMemory,
        table: u64,
        segs: &[Seg],
        token: u32,
    ) -> Result<Option<u16>, FrontendError> {
        each!(self, r => r.post_indirect(mem, table, segs, token))
    }

    pub(crate) fn publish(&mut self, mem: &GuestMemory) -> Result<bool, FrontendError> {
        each!(self, r => r.publish(mem))
    }

    pub(crate) fn pending_used(
        &mut self,
        mem: &GuestMemory,
        refresh: bool,
    ) -> Result<u16, FrontendError> {
        each!(self, r => r.pending_used(mem, refresh))
    }

    pub(crate) fn peek_used(
        &self,
        mem: &GuestMemory,
        i: u16,
    ) -> Result<(u16, Option<u32>, u32), FrontendError> {
        each!(self, r => r.peek_used(mem, i))
    }

    pub(crate) fn take_used(&mut self, mem: &GuestMemory) -> Result<Used, FrontendError> {
        each!(self, r => r.take_used(mem))
    }

    pub(crate) fn enable_calls(&mut self, mem: &GuestMemory) -> Result<bool, FrontendError> {
        each!(self, r => r.enable_calls(mem))
    }

    pub(crate) fn disable_calls(&mut self, mem: &GuestMemory) -> Result<(), FrontendError> {
        each!(self, r => r.disable_calls(mem))
    }

    /// Test helper: see [`SplitRing::raw_post`] and `PackedRing::raw_post` (descriptors
    /// at consecutive ring positions; `heads` unused).
    #[cfg(any(test, feature = "hostile"))]
    pub(crate) fn raw_post(
        &mut self,
        mem: &mut GuestMemory,
        descs: &[[u8; 16]],
        heads: &[u16],
    ) -> Result<bool, FrontendError> {
        match self {
            DriverRing::Split(r) => r.raw_post(mem, descs, heads),
            DriverRing::Packed(r) => r.raw_post(mem, descs),
        }
    }
}
