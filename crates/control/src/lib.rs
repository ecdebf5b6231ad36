//! The control plane of vnetd: configuration, the vhost-user sockets of every port (both
//! roles), the control socket `vnetctl` talks to, and port lifecycle.
//!
//! One thread runs [`Daemon::run`]: it polls the listening and connected vhost-user
//! sockets and hands each readable one to that port's request handler, reconnects
//! client-mode ports (forever, with a steady retry), and answers control requests from
//! counters and status the datapath workers publish. Frames never pass through here.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod capture;
pub mod config;
mod daemon;
pub mod lockdown;
pub mod metrics;
pub mod sockets;

pub use daemon::{default_mac, Daemon, DaemonError};
/// The port the calling datapath thread was working on (for the panic hook).
pub use datapath::current::port_name as current_port;
