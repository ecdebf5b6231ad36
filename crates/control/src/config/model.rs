//! The configuration model: the daemon's settings and its ports, and the checks that
//! span them (shared names, sockets, interfaces and MAC addresses).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wire::MacAddr;

use super::access::{Access, Security};
use super::isolation::Isolation;
use super::validate::{
    check_mtu, check_queues, check_station_mac, validate_name, validate_port_name,
};
use super::{
    ConfigError, DatapathMode, AGING_SECS_RANGE, DEFAULT_AGING_SECS, DEFAULT_FDB_CAPACITY,
    DEFAULT_TAP_HOLD_MS, DEFAULT_WORKERS, MAX_FDB_CAPACITY, MAX_SOCKET_PATH_LEN, MAX_WORKERS,
    TAP_HOLD_MS_RANGE,
};

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
    /// How long a frame from a TAP waits for its guest's rx buffers before it is dropped
    /// (the TAP queue behind it waits too), in milliseconds.
    pub tap_hold_ms: u64,
    /// Frames of a burst to a TAP queue go in one io_uring submission (where the kernel
    /// offers it) instead of one `writev` each.
    pub tap_batch: bool,
    /// Privileges, seccomp, socket ownership.
    pub security: Security,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// Log filter (`info`, `debug`, `warn,vnet_datapath=debug`...); else `VNET_LOG`, else
    /// `info`.
    pub log_level: Option<String>,
    /// Log lines as text or JSON.
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format `{s}`: expected text or json")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            control: None,
            ports: Vec::new(),
            fdb: FdbConfig::default(),
            workers: DEFAULT_WORKERS,
            datapath: DatapathMode::Event,
            tap_hold_ms: DEFAULT_TAP_HOLD_MS,
            tap_batch: true,
            security: Security::default(),
            metrics: None,
            log_level: None,
            log_format: LogFormat::Text,
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
    pub fn mac(&self) -> Option<MacAddr> {
        match self {
            PortConfig::VhostUser(p) => p.mac,
            PortConfig::Tap(p) => p.mac,
        }
    }

    /// The port's isolation settings.
    pub fn isolation(&self) -> &Isolation {
        match self {
            PortConfig::VhostUser(p) => &p.isolation,
            PortConfig::Tap(p) => &p.isolation,
        }
    }

    /// Every MAC the port owns: its own and the allowed ones.
    pub fn macs(&self) -> impl Iterator<Item = MacAddr> + '_ {
        self.mac()
            .into_iter()
            .chain(self.isolation().allowed_macs.iter().copied())
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
    pub mac: Option<MacAddr>,
    /// Queue pairs offered, 1..=16 (key `queues`).
    pub queue_pairs: u16,
    /// MTU offered to the guest (VIRTIO_NET_F_MTU).
    pub mtu: Option<u16>,
    /// How this port's rings are served, if not the daemon's `datapath` (key `datapath`).
    pub datapath: Option<DatapathMode>,
    /// Port security, learning limit, VLAN, rate limits.
    pub isolation: Isolation,
    /// Socket mode, group and allowed peers; memory limit.
    pub access: Access,
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
        self.access.validate(&self.name)?;
        self.isolation.validate(&self.name)
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
    pub mac: Option<MacAddr>,
    /// MTU to set on the interface (and enforced on frames to it).
    pub mtu: Option<u16>,
    /// Port security, learning limit, VLAN, rate limits.
    pub isolation: Isolation,
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
        if let Some(mtu) = self.mtu {
            check_mtu(&self.name, u64::from(mtu))?;
        }
        self.isolation.validate(&self.name)
    }
}

impl Config {
    /// Checks every port and setting, and that names, socket paths, interfaces and MAC
    /// addresses are not shared between ports. Returns the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|(_, e)| e)
    }

    /// Like `validate`, also returning the index of the port at fault.
    pub(super) fn check(&self) -> Result<(), (Option<usize>, ConfigError)> {
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
        if !TAP_HOLD_MS_RANGE.contains(&self.tap_hold_ms) {
            return Err((
                None,
                ConfigError::TapHold {
                    value: self.tap_hold_ms,
                },
            ));
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
        let mut macs: HashMap<MacAddr, &str> = HashMap::new();
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
            for mac in port.macs() {
                if let Some(first) = macs.insert(mac, name) {
                    return fail(ConfigError::DuplicateMac {
                        mac: mac.to_string(),
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
