//! Why a configuration was refused. Each message names what is wrong and where.

use std::path::PathBuf;

use super::file::Location;
use super::{
    AGING_SECS_RANGE, MAX_FDB_CAPACITY, MAX_NAME_LEN, MAX_QUEUE_PAIRS, MAX_SOCKET_PATH_LEN,
    MAX_WORKERS, MIN_MTU,
};

/// Why a MAC address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not a MAC address ([`wire::MacAddr`]'s syntax: six hex octets separated by `:`).
    #[error("expected 6 hex pairs separated by ':', like 52:54:00:12:34:56")]
    Syntax,
    /// The I/G bit is set: a group address cannot be a station's address.
    #[error("multicast address (the low bit of the first octet is set)")]
    Multicast,
    /// All zeros.
    #[error("the all-zero address is not a station address")]
    Zero,
}

/// Why a port or interface name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// The name contains a character outside `[A-Za-z0-9_.-]`.
    #[error("character {0:?} is not allowed (use A-Z a-z 0-9 _ . -)")]
    BadChar(char),
    /// `.` and `..` are not names.
    #[error("`.` and `..` are not names")]
    Dots,
}

/// Configuration errors. Each message names the offending key, value, port or location.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (part of the message).
        error: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema (unknown key, missing key, type).
    #[error("{origin}{}: {message}", fmt_location(location))]
    Toml {
        /// The file name (or what the text was).
        origin: String,
        /// Where, when the parser knows.
        location: Option<Location>,
        /// The parser's message.
        message: String,
    },
    /// A problem with the port defined at `location` in a TOML file.
    #[error("{origin}:{location}: {error}")]
    At {
        /// The file name.
        origin: String,
        /// Where the port's table starts.
        location: Location,
        /// The problem.
        error: Box<ConfigError>,
    },
    /// A key the flag does not know.
    #[error("unknown key `{key}` in `{flag} {spec}` (known keys: {})", known.join(", "))]
    UnknownKey {
        /// `--vhost-user` or `--tap`.
        flag: &'static str,
        /// The whole argument.
        spec: String,
        /// The unknown key.
        key: String,
        /// The keys the flag accepts.
        known: &'static [&'static str],
    },
    /// A required key is absent.
    #[error("missing `{key}` in `{flag} {spec}`")]
    MissingKey {
        /// `--vhost-user` or `--tap`.
        flag: &'static str,
        /// The whole argument.
        spec: String,
        /// The missing key.
        key: &'static str,
    },
    /// A required key is absent from a port's TOML table.
    #[error(
        "missing `{key}` in [[{table}]] table{}",
        port.as_deref().map_or(String::new(), |p| format!(" of port {p}"))
    )]
    MissingTableKey {
        /// `vhost_user` or `tap`.
        table: &'static str,
        /// The missing key.
        key: &'static str,
        /// The port, when its name is known.
        port: Option<String>,
    },
    /// A key was given twice.
    #[error("`{key}` given twice in `{flag} {spec}`")]
    DuplicateKey {
        /// `--vhost-user` or `--tap`.
        flag: &'static str,
        /// The whole argument.
        spec: String,
        /// The repeated key.
        key: String,
    },
    /// A tenant-isolation setting of a port is out of range or inconsistent.
    #[error("port {port}: bad `{key}` value `{value}`: expected {expected}")]
    Isolation {
        /// The port.
        port: String,
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A key's value is not what it should be (or is missing).
    #[error("bad value `{value}` for `{key}` in `{flag} {spec}`: expected {expected}")]
    BadValue {
        /// `--vhost-user` or `--tap`.
        flag: &'static str,
        /// The whole argument.
        spec: String,
        /// The key.
        key: &'static str,
        /// The value given (empty when none was).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A MAC address did not parse or is not a station address.
    #[error("bad MAC `{value}` for port {port}: {reason}")]
    BadMac {
        /// The port.
        port: String,
        /// The address as given.
        value: String,
        /// Why.
        reason: MacError,
    },
    /// A port name breaks the naming rules.
    #[error("bad port name `{name}`: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: NameError,
    },
    /// A tap interface name breaks the naming rules.
    #[error("bad interface name `{ifname}` for port {port}: {reason}")]
    BadIfname {
        /// The port.
        port: String,
        /// The interface name.
        ifname: String,
        /// Why.
        reason: NameError,
    },
    /// A network namespace name is unusable.
    #[error("bad netns `{netns}` for port {port}: {reason}")]
    BadNetns {
        /// The port.
        port: String,
        /// The namespace name.
        netns: String,
        /// Why.
        reason: &'static str,
    },
    /// Two ports share a name.
    #[error("duplicate port name `{name}`")]
    DuplicatePortName {
        /// The name.
        name: String,
    },
    /// Two vhost-user ports share a socket path.
    #[error("duplicate socket path `{}` (ports {first} and {second})", path.display())]
    DuplicateSocket {
        /// The path.
        path: PathBuf,
        /// The first port using it.
        first: String,
        /// The second port using it.
        second: String,
    },
    /// Two tap ports share an interface name in the same namespace.
    #[error(
        "duplicate tap interface `{ifname}` in {} (ports {first} and {second})",
        netns.as_deref().map_or("the host namespace".to_string(), |n| format!("netns {n}"))
    )]
    DuplicateIfname {
        /// The interface name.
        ifname: String,
        /// The namespace.
        netns: Option<String>,
        /// The first port using it.
        first: String,
        /// The second port using it.
        second: String,
    },
    /// Two ports are configured with the same MAC address.
    #[error("duplicate MAC {mac} (ports {first} and {second})")]
    DuplicateMac {
        /// The address.
        mac: String,
        /// The first port using it.
        first: String,
        /// The second port using it.
        second: String,
    },
    /// Queue pairs out of range.
    #[error("queue_pairs {value} for port {port} is outside 1..={MAX_QUEUE_PAIRS}")]
    QueuePairs {
        /// The port.
        port: String,
        /// The value given.
        value: u64,
    },
    /// MTU out of range.
    #[error("mtu {value} for port {port} is outside {MIN_MTU}..=65535")]
    Mtu {
        /// The port.
        port: String,
        /// The value given.
        value: u64,
    },
    /// A vhost-user port without a socket path.
    #[error("empty socket path for port {port}")]
    EmptySocket {
        /// The port.
        port: String,
    },
    /// A socket path too long for a unix socket address.
    #[error(
        "socket path `{}` for port {port} is {len} bytes, more than the {MAX_SOCKET_PATH_LEN} \
         a unix socket address holds",
        path.display()
    )]
    SocketTooLong {
        /// The port.
        port: String,
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The control socket path is empty or too long.
    #[error(
        "control socket path `{}` is {len} bytes: must be 1..={MAX_SOCKET_PATH_LEN}",
        path.display()
    )]
    BadControlPath {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// FDB capacity out of range.
    #[error("fdb capacity {value} is outside 1..={MAX_FDB_CAPACITY}")]
    FdbCapacity {
        /// The value given.
        value: u64,
    },
    /// Ageing time out of range.
    #[error(
        "fdb aging_secs {value} is outside {}..={}",
        AGING_SECS_RANGE.start(),
        AGING_SECS_RANGE.end()
    )]
    FdbAging {
        /// The value given.
        value: u64,
    },
    /// A daemon security setting is malformed.
    #[error("bad `{key}` value `{value}`: expected {expected}")]
    Security {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An unknown datapath mode.
    #[error("{message}")]
    Datapath {
        /// What is wrong.
        message: String,
    },
    /// TAP hold time out of range.
    #[error("tap_hold_ms {value} is outside 1..=60000")]
    TapHold {
        /// The value given.
        value: u64,
    },
    /// Worker count out of range.
    #[error("workers {value} is outside 1..={MAX_WORKERS}")]
    Workers {
        /// The value given.
        value: u64,
    },
}

pub(super) fn fmt_location(location: &Option<Location>) -> String {
    location.map_or(String::new(), |l| format!(":{l}"))
}
