//! Datapath workers: the threads that move frames.
//!
//! A worker owns a set of ports and the forwarding database that switches between them.
//! It sleeps in epoll on the ports' kick eventfds and a command eventfd; a kick makes it
//! process that txq in bounded bursts: pop a chain, read the virtio-net and Ethernet
//! headers, ask the switch where the frame goes, copy it straight from the sender's TX
//! buffers into each receiver's RX buffers (one copy, guest to guest), then publish the
//! used rings once per burst and call the guests that asked for it.
//!
//! The control thread talks to a worker with commands applied between bursts; the worker
//! shares counters (atomics) and port status with it, never a lock on the hot path.
//! Adding, starting, stopping or removing one port never stops the others.
//!
//! The modules form a one-way stack; each uses only those listed before it:
//!
//! | module     | what it holds                                                        |
//! |------------|----------------------------------------------------------------------|
//! | `types`    | `PortId`, `PortStatus`, `DatapathMode`, settings and limits            |
//! | `capture`  | copies of a port's frames for `vnetctl capture` (a ring per worker)   |
//! | `current`  | the port a worker works on, named in panic messages                  |
//! | `loglimit` | rate-limited warnings (a budget of lines per source and window)       |
//! | `io`       | the `writev` to a TAP fd (`unsafe`: raw iovecs)                        |
//! | `uring`    | batched writes to a TAP fd through io_uring (`unsafe`: the same)       |
//! | `mailbox`  | the lock-free ring between two workers (`unsafe`: shared buffer)       |
//! | `policy`   | a port's security, VLAN, MTU and rate limits as one worker applies them |
//! | `command`  | what the control plane asks of a worker                              |
//! | `links`    | a worker's commands, inbox and outbox to the other workers            |
//! | `frame`    | where a frame's bytes come from (a guest chain or a buffer)           |
//! | `port`     | `Port`: a vhost-user port's rings or a TAP port's queues and their I/O |
//! | `forward`  | one frame from ingress to each egress, reporting what happened       |
//! | `worker`   | the event loop: bursts, ring lifecycle, TAP events                    |
//! | `handle`   | `Datapath`, the control plane's side                                  |
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod capture;
mod command;
pub mod current;
mod forward;
mod frame;
mod handle;
#[allow(unsafe_code)] // writev of raw iovecs to a TAP fd
mod io;
mod links;
pub mod loglimit;
#[allow(unsafe_code)] // the lock-free ring between two workers
mod mailbox;
mod policy;
mod port;
mod types;
#[allow(unsafe_code)] // io_uring entries point to the data they write
mod uring;
mod worker;

pub use command::LockdownFn;
pub use handle::{Datapath, PortHandle, VhostQueues, WORKER_REPLY_TIMEOUT};
pub use loglimit::LogLimit;
pub use types::{
    DatapathConfig, DatapathMode, FdbRow, Limit, PortId, PortPolicy, PortStatus, WorkerStats,
    BURST, MAX_FRAME, MAX_WORKERS,
};
