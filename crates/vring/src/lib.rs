//! The device side of split and packed virtqueues over vhost-user guest memory.
//!
//! * [`mem`]: the guest's memory regions, mapped, with range-checked translation.
//! * [`SplitQueue`]: pop descriptor chains (every defence of §2.7 checked), a shadow used
//!   ring flushed once per burst, EVENT_IDX notification suppression both ways, indirect
//!   descriptors.
//! * [`PackedQueue`]: the same over a packed ring (§2.8): wrap counters, used descriptors
//!   published a batch at a time, event suppression structures.
//! * [`DeviceRing`] and [`Ring`]: what the datapath drives, per layout or either.
//! * [`Chain`]: a popped chain with its buffers translated, and the copies that move
//!   frames in and out of it, including guest-to-guest.
//!
//! Directions are named from the guest's view, as in the spec: the device reads a txq
//! and writes an rxq. All `unsafe` of guest memory lives in `mem`, `access`, `chain` and
//! `queue`; no reference into guest memory is ever formed.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

#[allow(unsafe_code)] // raw copies and atomic accesses of guest memory
pub(crate) mod access;
#[allow(unsafe_code)] // guest buffers of a popped chain
pub mod chain;
#[allow(unsafe_code)] // the length of a shadow list whose spare room a run wrote
pub mod fill;
#[allow(unsafe_code)] // mmap of the frontend's memory files
pub mod mem;
#[allow(unsafe_code)] // the packed ring in guest memory
pub mod packed;
#[allow(unsafe_code)] // the ring structures in guest memory
pub mod queue;
pub mod ring;
#[allow(unsafe_code)] // the SIGBUS handler (sigaction, mmap over a truncated mapping)
pub mod sigbus;

pub use access::Desc;
pub use chain::{Chain, IoVecs, MAX_CHAIN_SEGS};
pub use fill::{FillFrame, FillFrames, FILL_RUN};
pub use mem::{GuestMemory, MemError, RegionSpec};
pub use packed::PackedQueue;
pub use queue::{QueueConfig, RingError, SplitQueue};
pub use ring::{DeviceRing, Ring};

#[cfg(test)]
mod tests;
