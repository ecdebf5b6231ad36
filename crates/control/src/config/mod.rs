//! vnetd's configuration: the model, its validation, and the two ways to write it.
//!
//! * Command line, one port per flag, comma-separated `key=value` items (a bare key is a
//!   boolean set to true):
//!   `--vhost-user name=vm1,socket=/tmp/vm1.sock,client,mac=52:54:00:00:00:01,queues=2,mtu=9000`
//!   and `--tap name=host0,ifname=vnet-host0,netns=ns1,queues=2,mac=52:54:00:00:00:02`,
//!   parsed by [`VhostUserPort::from_str`](std::str::FromStr) and
//!   [`TapPort::from_str`](std::str::FromStr) (module `spec`). Values cannot contain commas.
//! * A TOML file with the same keys, parsed by [`Config::from_toml_str`] / [`Config::load`]
//!   (module `file`):
//!
//! ```toml
//! control = "/run/vnet/vnetd.sock"
//! workers = 2
//!
//! [fdb]
//! capacity = 4096
//! aging_secs = 300
//!
//! [[vhost_user]]
//! name = "vm1"
//! socket = "/tmp/vm1.sock"
//! client = true
//! mac = "52:54:00:00:00:01"
//! queues = 2
//! mtu = 9000
//!
//! [[tap]]
//! name = "host0"
//! ifname = "vnet-host0"
//! netns = "ns1"
//! ```
//!
//! Unknown keys are errors, never ignored. Every error names what is wrong and where: the
//! key and the flag it was given to, the port, or the file, line and column.
//!
//! The model (module `model`) and the rules every value must follow (module `validate`)
//! are shared by both; the errors are in module `error`. MAC addresses are
//! [`wire::MacAddr`].

mod access;
mod emit;
mod error;
mod file;
mod isolation;
mod model;
mod spec;
mod validate;

pub use datapath::DatapathMode;
pub use wire::MacAddr;

pub use access::{
    parse_mode, parse_size, Access, SeccompMode, Security, DEFAULT_SOCKET_MODE, MAX_MAX_MEM,
};
pub use error::{ConfigError, MacError, NameError};
pub use file::Location;
pub use isolation::{Isolation, DEFAULT_MAX_MACS_TAP, DEFAULT_MAX_MACS_VHOST, MAX_VLAN};
pub use model::{Config, FdbConfig, LogFormat, PortConfig, TapPort, VhostUserPort};
pub use spec::{TAP_FLAG, VHOST_USER_FLAG};
pub use validate::{check_station_mac, station_mac_class, validate_name};

/// Default number of forwarding database entries.
pub const DEFAULT_FDB_CAPACITY: usize = 4096;
/// Largest forwarding database accepted (the switch's own limit).
pub const MAX_FDB_CAPACITY: usize = 1 << 22;
/// Default ageing time of learned addresses, in seconds (IEEE 802.1Q-2022 Table 8-6).
pub const DEFAULT_AGING_SECS: u64 = 300;
/// Ageing time range, in seconds (IEEE 802.1Q-2022 Table 8-6: 10 to 1 000 000).
pub const AGING_SECS_RANGE: std::ops::RangeInclusive<u64> = 10..=1_000_000;
/// Default number of datapath worker threads.
pub const DEFAULT_WORKERS: usize = 1;
/// How long a frame from a TAP waits for its guest's rx buffers by default, in ms.
pub const DEFAULT_TAP_HOLD_MS: u64 = 50;
/// The range `tap_hold_ms` may take.
pub const TAP_HOLD_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=60_000;
/// Most datapath worker threads accepted.
pub const MAX_WORKERS: usize = datapath::MAX_WORKERS;
/// Most queue pairs per port.
pub const MAX_QUEUE_PAIRS: u16 = 16;
/// Smallest MTU accepted (the IPv4 minimum, RFC 791).
pub const MIN_MTU: u16 = 68;
/// Longest port or interface name (a Linux interface name, IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;
/// Longest unix socket path (`sun_path` is 108 bytes including the terminating NUL).
pub const MAX_SOCKET_PATH_LEN: usize = 107;

#[cfg(test)]
mod tests;
