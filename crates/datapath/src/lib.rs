//! Datapath workers: the threads that move frames.
//!
//! A worker owns a set of ports and the forwarding database that switches between them.
//! It sleeps in epoll on the ports' kick eventfds and a command eventfd; a kick makes it
//! process that txq in bounded bursts: pop a chain, read the virtio-net and Ethernet
//! headers, ask the switch where the frame goes, copy it straight from the sender's TX
//! buffers into each receiver's RX buffers (one copy, guest to guest), then publish the
//! used rings once per burst and call the guests that asked for it.
//!
//! The control thread talks to a worker with [`Command`]s applied between bursts; the
//! worker shares counters (atomics) and port status with it, never a lock on the hot path.
//! Adding, starting, stopping or removing one port never stops the others.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod forward;
mod handle;
#[allow(unsafe_code)] // writev from guest memory to a TAP fd
mod io;
#[allow(unsafe_code)] // the lock-free ring between two workers
mod mailbox;
mod port;
mod worker;

pub use handle::{
    Datapath, DatapathConfig, DatapathMode, FdbRow, PortHandle, PortStatus, VhostQueues,
    MAX_WORKERS,
};
pub use port::PortId;

/// Frames processed per txq per wake-up before other queues get their turn.
pub const BURST: u16 = 64;
