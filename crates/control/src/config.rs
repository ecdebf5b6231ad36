//! vnetd's configuration: the model, its validation, and the two ways to write it.
//!
//! * Command line, one port per flag, comma-separated `key=value` items (a bare key is a
//!   boolean set to true):
//!   `--vhost-user name=vm1,socket=/tmp/vm1.sock,client,mac=52:54:00:00:00:01,queues=2,mtu=9000`
//!   and `--tap name=host0,ifname=vnet-host0,netns=ns1,queues=2,mac=52:54:00:00:00:02`,
//!   parsed by [`VhostUserPort::from_str`](std::str::FromStr) and
//!   [`TapPort::from_str`](std::str::FromStr). Values cannot contain commas.
//! * A TOML file with the same keys, parsed by [`Config::from_toml_str`] / [`Config::load`]:
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

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use datapath::DatapathMode;

/// A MAC address, first octet first.
pub type Mac = [u8; 6];

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

/// The command-line flag of a vhost-user port, as named in error messages.
pub const VHOST_USER_FLAG: &str = "--vhost-user";
/// The command-line flag of a tap port, as named in error messages.
pub const TAP_FLAG: &str = "--tap";

const VHOST_USER_KEYS: &[&str] = &[
    "name", "socket", "client", "mac", "queues", "mtu", "datapath",
];
const TAP_KEYS: &[&str] = &["name", "ifname", "netns", "queues", "mac"];

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The control socket path (the daemon's default when `None`).
    pub control: Option<PathBuf>,
    /// Ports, in the order they were given (file: vhost-user ports, then tap ports).
    pub ports: Vec<PortConfig>,
    /// Forwarding database settings.
    pub fdb: FdbConfig,
    /// Number of datapath worker threads.
    pub workers: usize,
    /// How workers wait for work: `event`, `poll` or `adaptive`.
    pub datapath: DatapathMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            control: None,
            ports: Vec::new(),
            fdb: FdbConfig::default(),
            workers: DEFAULT_WORKERS,
            datapath: DatapathMode::Event,
        }
    }
}

/// Forwarding database settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Maximum number of learned entries.
    pub capacity: usize,
    /// Seconds after which an address not seen again is forgotten.
    pub aging_secs: u64,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            capacity: DEFAULT_FDB_CAPACITY,
            aging_secs: DEFAULT_AGING_SECS,
        }
    }
}

impl FdbConfig {
    /// The ageing time as a `Duration`.
    pub fn aging(&self) -> Duration {
        Duration::from_secs(self.aging_secs)
    }
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortConfig {
    /// A vhost-user virtio-net port.
    VhostUser(VhostUserPort),
    /// A kernel tap interface.
    Tap(TapPort),
}

impl PortConfig {
    /// The port's name.
    pub fn name(&self) -> &str {
        match self {
            PortConfig::VhostUser(p) => &p.name,
            PortConfig::Tap(p) => &p.name,
        }
    }

    /// The configured MAC address, if any.
    pub fn mac(&self) -> Option<Mac> {
        match self {
            PortConfig::VhostUser(p) => p.mac,
            PortConfig::Tap(p) => p.mac,
        }
    }

    /// Checks this port on its own (not against the others).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            PortConfig::VhostUser(p) => p.validate(),
            PortConfig::Tap(p) => p.validate(),
        }
    }
}

/// A vhost-user port: `--vhost-user name=..,socket=..[,client][,mac=..][,queues=..][,mtu=..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserPort {
    /// Port name (`[A-Za-z0-9_.-]`, at most 15 characters).
    pub name: String,
    /// The vhost-user socket path.
    pub socket: PathBuf,
    /// Connect to `socket` (the frontend, e.g. QEMU, is the server) instead of listening.
    pub client: bool,
    /// MAC address offered to the guest in the device config space.
    pub mac: Option<Mac>,
    /// Queue pairs offered, 1..=16 (key `queues`).
    pub queue_pairs: u16,
    /// MTU offered to the guest (VIRTIO_NET_F_MTU).
    pub mtu: Option<u16>,
    /// How this port's rings are served, if not the daemon's `datapath` (key `datapath`).
    pub datapath: Option<DatapathMode>,
}

impl VhostUserPort {
    /// Checks this port on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_port_name(&self.name)?;
        let len = self.socket.as_os_str().len();
        if len == 0 {
            return Err(ConfigError::EmptySocket {
                port: self.name.clone(),
            });
        }
        if len > MAX_SOCKET_PATH_LEN {
            return Err(ConfigError::SocketTooLong {
                port: self.name.clone(),
                path: self.socket.clone(),
                len,
            });
        }
        check_queues(&self.name, u64::from(self.queue_pairs))?;
        if let Some(mtu) = self.mtu {
            check_mtu(&self.name, u64::from(mtu))?;
        }
        if let Some(mac) = &self.mac {
            check_station_mac(&self.name, mac)?;
        }
        Ok(())
    }
}

impl FromStr for VhostUserPort {
    type Err = ConfigError;

    /// Parses and validates the command-line form.
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let items = Items::parse(VHOST_USER_FLAG, spec, VHOST_USER_KEYS)?;
        let name = items.required_value("name")?.to_string();
        let socket = PathBuf::from(items.required_value("socket")?);
        let client = items.flag("client")?;
        let mac = items.mac("mac", &name)?;
        let queue_pairs = match items.number("queues")? {
            Some(n) => check_queues(&name, n)?,
            None => 1,
        };
        let mtu = items
            .number("mtu")?
            .map(|n| check_mtu(&name, n))
            .transpose()?;
        let datapath = items
            .value("datapath")?
            .map(|m| {
                m.parse().map_err(|message: String| ConfigError::Datapath {
                    message: format!("port {name}: {message}"),
                })
            })
            .transpose()?;
        let port = VhostUserPort {
            name,
            socket,
            client,
            mac,
            queue_pairs,
            mtu,
            datapath,
        };
        port.validate()?;
        Ok(port)
    }
}

impl fmt::Display for VhostUserPort {
    /// The command-line form (parses back to the same port for UTF-8 paths).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name={},socket={}", self.name, self.socket.display())?;
        if self.client {
            f.write_str(",client")?;
        }
        if let Some(mac) = &self.mac {
            write!(f, ",mac={}", format_mac(mac))?;
        }
        write!(f, ",queues={}", self.queue_pairs)?;
        if let Some(mtu) = self.mtu {
            write!(f, ",mtu={mtu}")?;
        }
        if let Some(m) = self.datapath {
            write!(f, ",datapath={m}")?;
        }
        Ok(())
    }
}

/// A tap port: `--tap name=..[,ifname=..][,netns=..][,queues=..][,mac=..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapPort {
    /// Port name (`[A-Za-z0-9_.-]`, at most 15 characters).
    pub name: String,
    /// The kernel interface name (defaults to the port name).
    pub ifname: String,
    /// The network namespace (a name under `/run/netns`) to create the interface in.
    pub netns: Option<String>,
    /// Queues (IFF_MULTI_QUEUE when more than 1), 1..=16.
    pub queues: u16,
    /// MAC address to set on the interface.
    pub mac: Option<Mac>,
}

impl TapPort {
    /// Checks this port on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_port_name(&self.name)?;
        validate_name(&self.ifname).map_err(|reason| ConfigError::BadIfname {
            port: self.name.clone(),
            ifname: self.ifname.clone(),
            reason,
        })?;
        if let Some(ns) = &self.netns {
            let reason = if ns.is_empty() {
                Some("must not be empty")
            } else if ns == "." || ns == ".." || ns.contains(['/', '\0']) {
                Some("must be a plain name under /run/netns")
            } else if ns.len() > 255 {
                Some("longer than 255 bytes")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ConfigError::BadNetns {
                    port: self.name.clone(),
                    netns: ns.clone(),
                    reason,
                });
            }
        }
        check_queues(&self.name, u64::from(self.queues))?;
        if let Some(mac) = &self.mac {
            check_station_mac(&self.name, mac)?;
        }
        Ok(())
    }
}

impl FromStr for TapPort {
    type Err = ConfigError;

    /// Parses and validates the command-line form.
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let items = Items::parse(TAP_FLAG, spec, TAP_KEYS)?;
        let name = items.required_value("name")?.to_string();
        let ifname = items.value("ifname")?.unwrap_or(&name).to_string();
        let netns = items.value("netns")?.map(str::to_string);
        let queues = match items.number("queues")? {
            Some(n) => check_queues(&name, n)?,
            None => 1,
        };
        let mac = items.mac("mac", &name)?;
        let port = TapPort {
            name,
            ifname,
            netns,
            queues,
            mac,
        };
        port.validate()?;
        Ok(port)
    }
}

impl fmt::Display for TapPort {
    /// The command-line form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name={},ifname={}", self.name, self.ifname)?;
        if let Some(ns) = &self.netns {
            write!(f, ",netns={ns}")?;
        }
        write!(f, ",queues={}", self.queues)?;
        if let Some(mac) = &self.mac {
            write!(f, ",mac={}", format_mac(mac))?;
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates a TOML configuration. `origin` names the text in error messages
    /// (usually the file path). Ports added later (from the command line) need another
    /// [`Config::validate`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            origin: origin.to_string(),
            location: e.span().map(|s| Location::of(text, s.start)),
            message: e.message().trim().lines().collect::<Vec<_>>().join("; "),
        })?;
        let at = |span: std::ops::Range<usize>, error: ConfigError| ConfigError::At {
            origin: origin.to_string(),
            location: Location::of(text, span.start),
            error: Box::new(error),
        };

        let mut config = Config {
            control: raw.control,
            ..Config::default()
        };
        if let Some(d) = raw.datapath {
            let (span, value) = (d.span(), d.into_inner());
            config.datapath = value
                .parse()
                .map_err(|message| at(span, ConfigError::Datapath { message }))?;
        }
        if let Some(w) = raw.workers {
            let (span, value) = (w.span(), w.into_inner());
            config.workers = usize::try_from(value)
                .ok()
                .filter(|w| (1..=MAX_WORKERS).contains(w))
                .ok_or_else(|| at(span, ConfigError::Workers { value }))?;
        }
        if let Some(fdb) = raw.fdb {
            if let Some(c) = fdb.capacity {
                let (span, value) = (c.span(), c.into_inner());
                config.fdb.capacity = usize::try_from(value)
                    .ok()
                    .filter(|c| (1..=MAX_FDB_CAPACITY).contains(c))
                    .ok_or_else(|| at(span, ConfigError::FdbCapacity { value }))?;
            }
            if let Some(a) = fdb.aging_secs {
                let (span, value) = (a.span(), a.into_inner());
                if !AGING_SECS_RANGE.contains(&value) {
                    return Err(at(span, ConfigError::FdbAging { value }));
                }
                config.fdb.aging_secs = value;
            }
        }

        let mut spans = Vec::new();
        for raw_port in raw.vhost_user {
            let span = raw_port.span();
            let port = raw_port
                .into_inner()
                .into_port()
                .map_err(|e| at(span.clone(), e))?;
            spans.push(span);
            config.ports.push(PortConfig::VhostUser(port));
        }
        for raw_port in raw.tap {
            let span = raw_port.span();
            let port = raw_port
                .into_inner()
                .into_port()
                .map_err(|e| at(span.clone(), e))?;
            spans.push(span);
            config.ports.push(PortConfig::Tap(port));
        }

        config
            .check()
            .map_err(|(index, error)| match index.and_then(|i| spans.get(i)) {
                Some(span) => at(span.clone(), error),
                None => error,
            })?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Checks every port and setting, and that names, socket paths, interfaces and MAC
    /// addresses are not shared between ports. Returns the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|(_, e)| e)
    }

    /// Like `validate`, also returning the index of the port at fault.
    fn check(&self) -> Result<(), (Option<usize>, ConfigError)> {
        if let Some(control) = &self.control {
            let len = control.as_os_str().len();
            if len == 0 || len > MAX_SOCKET_PATH_LEN {
                return Err((
                    None,
                    ConfigError::BadControlPath {
                        path: control.clone(),
                        len,
                    },
                ));
            }
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            let value = u64::try_from(self.workers).unwrap_or(u64::MAX);
            return Err((None, ConfigError::Workers { value }));
        }
        if !(1..=MAX_FDB_CAPACITY).contains(&self.fdb.capacity) {
            let value = u64::try_from(self.fdb.capacity).unwrap_or(u64::MAX);
            return Err((None, ConfigError::FdbCapacity { value }));
        }
        if !AGING_SECS_RANGE.contains(&self.fdb.aging_secs) {
            return Err((
                None,
                ConfigError::FdbAging {
                    value: self.fdb.aging_secs,
                },
            ));
        }

        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut sockets: HashMap<&Path, &str> = HashMap::new();
        let mut ifnames: HashMap<(Option<&str>, &str), &str> = HashMap::new();
        let mut macs: HashMap<Mac, &str> = HashMap::new();
        for (i, port) in self.ports.iter().enumerate() {
            let fail = |e| Err((Some(i), e));
            if let Err(e) = port.validate() {
                return fail(e);
            }
            let name = port.name();
            if names.insert(name, i).is_some() {
                return fail(ConfigError::DuplicatePortName {
                    name: name.to_string(),
                });
            }
            if let Some(mac) = port.mac() {
                if let Some(first) = macs.insert(mac, name) {
                    return fail(ConfigError::DuplicateMac {
                        mac: format_mac(&mac),
                        first: first.to_string(),
                        second: name.to_string(),
                    });
                }
            }
            match port {
                PortConfig::VhostUser(p) => {
                    if let Some(first) = sockets.insert(&p.socket, name) {
                        return fail(ConfigError::DuplicateSocket {
                            path: p.socket.clone(),
                            first: first.to_string(),
                            second: name.to_string(),
                        });
                    }
                }
                PortConfig::Tap(p) => {
                    let key = (p.netns.as_deref(), p.ifname.as_str());
                    if let Some(first) = ifnames.insert(key, name) {
                        return fail(ConfigError::DuplicateIfname {
                            ifname: p.ifname.clone(),
                            netns: p.netns.clone(),
                            first: first.to_string(),
                            second: name.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// A line and column, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number.
    pub line: usize,
    /// Column number.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text).
    pub fn of(text: &str, offset: usize) -> Location {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a MAC address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six two-digit hex numbers separated by colons.
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
    /// An unknown datapath mode.
    #[error("{message}")]
    Datapath {
        /// What is wrong.
        message: String,
    },
    /// Worker count out of range.
    #[error("workers {value} is outside 1..={MAX_WORKERS}")]
    Workers {
        /// The value given.
        value: u64,
    },
}

fn fmt_location(location: &Option<Location>) -> String {
    location.map_or(String::new(), |l| format!(":{l}"))
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case; exactly two hex digits per octet). Only the
/// syntax is checked; see [`check_station_mac`] for the address class.
pub fn parse_mac(s: &str) -> Result<Mac, MacError> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for octet in mac.iter_mut() {
        let part = parts.next().ok_or(MacError::Syntax)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MacError::Syntax);
        }
        *octet = u8::from_str_radix(part, 16).map_err(|_| MacError::Syntax)?;
    }
    if parts.next().is_some() {
        return Err(MacError::Syntax);
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`, lower case.
pub fn format_mac(mac: &Mac) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Accepts only addresses a station may own: not multicast/broadcast, not all zeros.
pub fn station_mac_class(mac: &Mac) -> Result<(), MacError> {
    if mac[0] & 0x01 != 0 {
        Err(MacError::Multicast)
    } else if *mac == [0; 6] {
        Err(MacError::Zero)
    } else {
        Ok(())
    }
}

/// Checks a port's MAC address class, naming the port in the error.
pub fn check_station_mac(port: &str, mac: &Mac) -> Result<(), ConfigError> {
    station_mac_class(mac).map_err(|reason| ConfigError::BadMac {
        port: port.to_string(),
        value: format_mac(mac),
        reason,
    })
}

/// Checks a port or interface name: 1..=15 characters from `[A-Za-z0-9_.-]`, not `.`/`..`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(NameError::BadChar(c));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    Ok(())
}

fn validate_port_name(name: &str) -> Result<(), ConfigError> {
    validate_name(name).map_err(|reason| ConfigError::BadName {
        name: name.to_string(),
        reason,
    })
}

fn check_queues(port: &str, value: u64) -> Result<u16, ConfigError> {
    u16::try_from(value)
        .ok()
        .filter(|q| (1..=MAX_QUEUE_PAIRS).contains(q))
        .ok_or_else(|| ConfigError::QueuePairs {
            port: port.to_string(),
            value,
        })
}

fn check_mtu(port: &str, value: u64) -> Result<u16, ConfigError> {
    u16::try_from(value)
        .ok()
        .filter(|m| *m >= MIN_MTU)
        .ok_or_else(|| ConfigError::Mtu {
            port: port.to_string(),
            value,
        })
}

/// The `key[=value]` items of one command-line port argument.
struct Items<'a> {
    flag: &'static str,
    spec: &'a str,
    items: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Items<'a> {
    /// Splits on `,` (empty items are skipped) and refuses unknown or repeated keys.
    fn parse(
        flag: &'static str,
        spec: &'a str,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        let mut items: Vec<(&str, Option<&str>)> = Vec::new();
        for item in spec.split(',').filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            if !known.contains(&key) {
                return Err(ConfigError::UnknownKey {
                    flag,
                    spec: spec.to_string(),
                    key: key.to_string(),
                    known,
                });
            }
            if items.iter().any(|(k, _)| *k == key) {
                return Err(ConfigError::DuplicateKey {
                    flag,
                    spec: spec.to_string(),
                    key: key.to_string(),
                });
            }
            items.push((key, value));
        }
        Ok(Items { flag, spec, items })
    }

    fn get(&self, key: &str) -> Option<Option<&'a str>> {
        self.items.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn bad_value(&self, key: &'static str, value: &str, expected: &'static str) -> ConfigError {
        ConfigError::BadValue {
            flag: self.flag,
            spec: self.spec.to_string(),
            key,
            value: value.to_string(),
            expected,
        }
    }

    /// A `key=value` item's value; a bare `key` is an error.
    fn value(&self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Some(v)) => Ok(Some(v)),
            Some(None) => Err(self.bad_value(key, "", "`key=value`")),
        }
    }

    fn required_value(&self, key: &'static str) -> Result<&'a str, ConfigError> {
        self.value(key)?.ok_or_else(|| ConfigError::MissingKey {
            flag: self.flag,
            spec: self.spec.to_string(),
            key,
        })
    }

    /// A boolean: bare `key`, or `key=true|false|yes|no|on|off|1|0`; false when absent.
    fn flag(&self, key: &'static str) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(v)) => match v {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(self.bad_value(key, v, "true or false")),
            },
        }
    }

    fn number(&self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        self.value(key)?
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| self.bad_value(key, v, "a decimal number"))
            })
            .transpose()
    }

    fn mac(&self, key: &'static str, port: &str) -> Result<Option<Mac>, ConfigError> {
        self.value(key)?.map(|v| mac_for_port(port, v)).transpose()
    }
}

/// Parses a port's MAC address and checks its class.
fn mac_for_port(port: &str, value: &str) -> Result<Mac, ConfigError> {
    let bad = |reason| ConfigError::BadMac {
        port: port.to_string(),
        value: value.to_string(),
        reason,
    };
    let mac = parse_mac(value).map_err(bad)?;
    station_mac_class(&mac).map_err(bad)?;
    Ok(mac)
}

// The TOML schema. Integers are read as u64 and range-checked afterwards, so an
// out-of-range value gets the same message as on the command line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    control: Option<PathBuf>,
    workers: Option<Spanned<u64>>,
    datapath: Option<Spanned<String>>,
    fdb: Option<RawFdb>,
    #[serde(default)]
    vhost_user: Vec<Spanned<RawVhostUser>>,
    #[serde(default)]
    tap: Vec<Spanned<RawTap>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFdb {
    capacity: Option<Spanned<u64>>,
    aging_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVhostUser {
    name: Option<String>,
    socket: Option<PathBuf>,
    #[serde(default)]
    client: bool,
    mac: Option<String>,
    #[serde(alias = "queue_pairs")]
    queues: Option<u64>,
    mtu: Option<u64>,
    datapath: Option<String>,
}

impl RawVhostUser {
    fn into_port(self) -> Result<VhostUserPort, ConfigError> {
        let table = "vhost_user";
        let name = self.name.ok_or(ConfigError::MissingTableKey {
            table,
            key: "name",
            port: None,
        })?;
        let socket = self.socket.ok_or_else(|| ConfigError::MissingTableKey {
            table,
            key: "socket",
            port: Some(name.clone()),
        })?;
        let mac = self.mac.map(|m| mac_for_port(&name, &m)).transpose()?;
        let queue_pairs = self.queues.map_or(Ok(1), |q| check_queues(&name, q))?;
        let mtu = self.mtu.map(|m| check_mtu(&name, m)).transpose()?;
        let datapath = self
            .datapath
            .map(|m| {
                m.parse().map_err(|message: String| ConfigError::Datapath {
                    message: format!("port {name}: {message}"),
                })
            })
            .transpose()?;
        Ok(VhostUserPort {
            name,
            socket,
            client: self.client,
            mac,
            queue_pairs,
            mtu,
            datapath,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTap {
    name: Option<String>,
    ifname: Option<String>,
    netns: Option<String>,
    queues: Option<u64>,
    mac: Option<String>,
}

impl RawTap {
    fn into_port(self) -> Result<TapPort, ConfigError> {
        let name = self.name.ok_or(ConfigError::MissingTableKey {
            table: "tap",
            key: "name",
            port: None,
        })?;
        let mac = self.mac.map(|m| mac_for_port(&name, &m)).transpose()?;
        let queues = self.queues.map_or(Ok(1), |q| check_queues(&name, q))?;
        Ok(TapPort {
            ifname: self.ifname.unwrap_or_else(|| name.clone()),
            name,
            netns: self.netns,
            queues,
            mac,
        })
    }
}

// The tests live here rather than in a `config/tests.rs` child so the module stays one file.
#[cfg(test)]
mod tests;
