//! The control thread.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{PortInfo, PortKind, PortMode, PortState, PortStats, QueueStats, Request, Response};
use datapath::loglimit::suppressed_note;
use datapath::LogLimit;
use datapath::{Datapath, DatapathConfig, Limit, PortHandle, PortPolicy, VhostQueues};
use port_vhost::server::{ConnError, Connection, SharedNet};
use port_vhost::{NetDevice, VhostUserNet};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use wire::MacAddr;

use switch::{PortSecurity, VlanMode};

use crate::config::{
    Config, Isolation, PortConfig, TapPort, VhostUserPort, DEFAULT_MAX_MACS_TAP,
    DEFAULT_MAX_MACS_VHOST, DEFAULT_SOCKET_MODE,
};
use crate::config::{SeccompMode, Security};
use crate::lockdown::{self, LockdownError, ThreadKind};
use crate::metrics::{MetricPort, Metrics, PortList};
use crate::sockets::{self, DirRule, Owner};

/// How often a client-mode port retries connecting to its VMM's socket. There is no
/// deadline: the port comes up whenever the VMM does.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A listening socket could not be created.
    #[error("port {port}: cannot listen on {path}: {err}")]
    Listen {
        /// Port name.
        port: String,
        /// Socket path.
        path: PathBuf,
        /// Cause.
        err: std::io::Error,
    },
    /// The control socket could not be created.
    #[error("cannot create control socket {path}: {err}")]
    Control {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        err: std::io::Error,
    },
    /// A TAP device could not be opened.
    #[error("port {port}: {err}")]
    Tap {
        /// Port name.
        port: String,
        /// Cause.
        err: port_tap::TapError,
    },
    /// A user or group of the security settings cannot be resolved.
    #[error("{what}: {err}")]
    Security {
        /// What was looked up.
        what: String,
        /// Cause.
        err: std::io::Error,
    },
    /// Dropping privileges or installing seccomp filters failed.
    #[error("{0}")]
    Lockdown(#[from] LockdownError),
    /// The configuration (with a port being added) is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The metrics endpoint could not be set up.
    #[error("metrics at {addr}: {err}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Cause.
        err: std::io::Error,
    },
    /// The worker count is out of range.
    #[error("workers = {0}: must be in 1..={max}", max = datapath::MAX_WORKERS)]
    Workers(usize),
    /// Thread, epoll or eventfd creation failed.
    #[error("{0}")]
    Os(#[from] std::io::Error),
}

/// A locally administered MAC derived from the port name, stable across restarts.
pub fn default_mac(name: &str) -> MacAddr {
    // FNV-1a: a stable hash (std's hasher is randomly keyed).
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// The control socket's listener.
    Control,
    /// A vhost-user port's listener.
    Listener(usize),
    /// A control client (slot in `Daemon::clients`).
    Client(usize),
    /// A vhost-user connection thread ended.
    ConnDone,
}

impl Token {
    fn pack(self) -> u64 {
        match self {
            Token::Control => 0,
            Token::Listener(i) => (1 << 32) | i as u64,
            Token::Client(i) => (2 << 32) | i as u64,
            Token::ConnDone => 3 << 32,
        }
    }
    fn unpack(v: u64) -> Option<Token> {
        let i = usize::try_from(v & 0xffff_ffff).ok()?;
        match v >> 32 {
            0 => Some(Token::Control),
            1 => Some(Token::Listener(i)),
            2 => Some(Token::Client(i)),
            3 => Some(Token::ConnDone),
            _ => None,
        }
    }
}

/// What `set-port` may change on a running port. (A vhost-user port's `mac` changes what
/// the switch enforces and learns statically; the guest sees its new config-space MAC when
/// its driver reads it again, at its next reset.)
pub const LIVE_KEYS: &[&str] = &[
    "mac",
    "spoofchk",
    "ips",
    "max-macs",
    "vlan",
    "trunk",
    "ingress-mbit",
    "ingress-kpps",
    "egress-mbit",
    "egress-kpps",
    "flood-kpps",
];

/// Largest control request accepted (a request is one short JSON line).
pub const MAX_REQUEST_LEN: usize = 4096;
/// How long a control client has to send its request and read the answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Control clients served at once; more are turned away until one finishes.
pub const MAX_CLIENTS: usize = 64;

struct Port {
    cfg: VhostUserPort,
    mac: MacAddr,
    handle: PortHandle,
    net: SharedNet<VhostQueues>,
    listener: Option<UnixListener>,
    conn: Option<Connection>,
    next_connect: Instant,
    connect_failures: u64,
    /// Budget of this port's warnings about its peers (shared with connection threads).
    log: Arc<Mutex<LogLimit>>,
}

struct TapCtl {
    cfg: TapPort,
    ifname: String,
    handle: PortHandle,
}

/// A control client: its request as read so far, then its answer as written so far.
struct Client {
    stream: UnixStream,
    request: Vec<u8>,
    answer: Vec<u8>,
    written: usize,
    deadline: Instant,
    /// A capture to stream to this client once the answer is written.
    capture: Option<PendingCapture>,
}

/// A capture started for a control client: the reader, the port's name, the snap length
/// and the frame count asked for.
struct PendingCapture {
    cap: datapath::capture::Capture,
    name: String,
    snaplen: u32,
    count: Option<u64>,
}

/// vnetd's control plane and the worker it drives.
pub struct Daemon {
    epoll: Epoll,
    control: Option<(UnixListener, PathBuf)>,
    /// vhost-user ports by slot (a removed port leaves its slot empty: slots are in the
    /// epoll tokens of its listener).
    ports: Vec<Option<Port>>,
    taps: Vec<TapCtl>,
    clients: Vec<Option<Client>>,
    /// The running configuration (command line, file and runtime changes).
    cfg: Config,
    /// `--config`, read again by [`Daemon::reload`].
    config_file: Option<PathBuf>,
    /// Ports given on the command line (kept by a reload).
    cli_ports: Vec<PortConfig>,
    /// Connection threads write here when they end.
    conn_done: Arc<EventFd>,
    /// Where sockets may be.
    rule: DirRule,
    /// Socket files' owner, mode and group defaults.
    sockets: SocketDefaults,
    clients_log: LogLimit,
    /// `--user`, resolved: `(uid, gid)`.
    run_as: Option<(u32, u32)>,
    /// The metrics socket, bound at start, served from [`Daemon::run`] on (after the
    /// lockdown, so that its threads inherit the control thread's seccomp filter).
    metrics_listener: Option<std::net::TcpListener>,
    metrics: Option<Metrics>,
    /// The ports the metrics report.
    metric_ports: PortList,
    // Declared last: dropped after the ports' handlers, so their stop commands still land.
    dp: Datapath,
}

/// Owner and mode defaults of the socket files vnetd creates.
#[derive(Debug, Clone, Copy)]
struct SocketDefaults {
    /// Owner of every socket file (the `--user`, so it can remove them itself).
    uid: Option<u32>,
    /// vhost-user sockets' mode and group.
    mode: u32,
    gid: Option<u32>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("ports", &self.ports.iter().flatten().count())
            .finish()
    }
}

fn group_gid(name: &Option<String>, what: &str) -> Result<Option<u32>, DaemonError> {
    name.as_deref()
        .map(|g| {
            sockets::resolve_group(g).map_err(|err| DaemonError::Security {
                what: format!("{what} `{g}`"),
                err,
            })
        })
        .transpose()
}

impl Daemon {
    /// Starts the workers, binds every server socket and the control socket.
    pub fn new(cfg: &Config) -> Result<Daemon, DaemonError> {
        if !(1..=datapath::MAX_WORKERS).contains(&cfg.workers) {
            return Err(DaemonError::Workers(cfg.workers));
        }
        let sec = &cfg.security;
        let run_as = sec
            .user
            .as_deref()
            .map(|u| {
                sockets::resolve_user(u).map_err(|err| DaemonError::Security {
                    what: format!("user `{u}`"),
                    err,
                })
            })
            .transpose()?;
        let rule = DirRule {
            run_uid: run_as.map_or_else(|| nix::unistd::geteuid().as_raw(), |(u, _)| u),
            allow_shared: sec.allow_shared_socket_dir,
        };
        let sockets_def = SocketDefaults {
            uid: run_as.map(|(u, _)| u),
            mode: sec.socket_mode.unwrap_or(DEFAULT_SOCKET_MODE),
            gid: group_gid(&sec.socket_group, "socket group")?,
        };
        let control_gid = group_gid(&sec.control_group, "control group")?;
        let dp = Datapath::spawn(DatapathConfig {
            mode: cfg.datapath,
            fdb_capacity: cfg.fdb.capacity,
            fdb_aging: cfg.fdb.aging(),
            workers: cfg.workers,
            tap_hold: Duration::from_millis(cfg.tap_hold_ms),
        })?;
        // Built up step by step: if a step fails, dropping `d` closes what was opened and
        // removes the sockets already created.
        let mut d = Daemon {
            epoll: Epoll::new()?,
            control: None,
            ports: Vec::new(),
            taps: Vec::new(),
            clients: Vec::new(),
            cfg: Config {
                ports: Vec::new(),
                ..cfg.clone()
            },
            config_file: None,
            cli_ports: Vec::new(),
            conn_done: Arc::new(EventFd::new(EFD_NONBLOCK)?),
            rule,
            sockets: sockets_def,
            clients_log: LogLimit::default(),
            run_as,
            metrics_listener: None,
            metrics: None,
            metric_ports: PortList::default(),
            dp,
        };
        let ev = EpollEvent::new(EventSet::IN, Token::ConnDone.pack());
        d.epoll
            .ctl(ControlOperation::Add, d.conn_done.as_raw_fd(), ev)?;
        if let Some(path) = &cfg.control {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // 0600, or 0660 for the control group.
            let owner = Owner {
                mode: if control_gid.is_some() { 0o660 } else { 0o600 },
                uid: sockets_def.uid,
                gid: control_gid,
            };
            let l = sockets::listen(path, owner, rule).map_err(|err| DaemonError::Control {
                path: path.clone(),
                err,
            })?;
            d.control = Some((l, path.clone()));
            let fd = d.control.as_ref().map_or(-1, |(l, _)| l.as_raw_fd());
            let ev = EpollEvent::new(EventSet::IN, Token::Control.pack());
            d.epoll.ctl(ControlOperation::Add, fd, ev)?;
        }
        if let Some(addr) = cfg.metrics {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|err| DaemonError::Metrics { addr, err })?;
            d.metrics_listener = Some(l);
        }
        for pc in &cfg.ports {
            d.add_port(pc)?;
        }
        if cfg.ports.is_empty() {
            tracing::info!("no ports yet: add them with `vnetctl add-port`");
        }
        Ok(d)
    }

    /// Drops what vnetd no longer needs once set up: switches to `--user` (no
    /// capabilities), sets `no_new_privs` and installs the seccomp filters on every worker
    /// and on this (control) thread, whose later connection threads inherit it.
    pub fn lockdown(&mut self, sec: &Security) -> Result<(), DaemonError> {
        match self.run_as {
            Some((uid, gid)) => {
                lockdown::switch_user(uid, gid)?;
                tracing::info!("running as uid {uid}, gid {gid}, with no capabilities");
            }
            None => lockdown::set_no_new_privs()?,
        }
        let worker = lockdown::filter(ThreadKind::Worker, sec.seccomp)?;
        let control = lockdown::filter(ThreadKind::Control, sec.seccomp)?;
        self.dp
            .lockdown(|_| {
                let f = worker.clone();
                Box::new(move || {
                    lockdown::set_no_new_privs().map_err(|e| e.to_string())?;
                    match &f {
                        Some(f) => lockdown::apply(f).map_err(|e| e.to_string()),
                        None => Ok(()),
                    }
                })
            })
            .map_err(LockdownError::Seccomp)?;
        if let Some(f) = &control {
            lockdown::apply(f)?;
        }
        if sec.seccomp != SeccompMode::Off {
            tracing::info!("seccomp filters installed ({})", sec.seccomp);
        }
        Ok(())
    }

    /// Adds a port, at start-up or while the others run, after checking it against the
    /// running configuration (names, sockets, interfaces, MACs).
    pub fn add_port(&mut self, pc: &PortConfig) -> Result<(), DaemonError> {
        let mut next = self.cfg.clone();
        next.ports.push(pc.clone());
        next.validate()?;
        match pc {
            PortConfig::VhostUser(vu) => self.add_vhost_user(vu)?,
            PortConfig::Tap(t) => {
                let tap = open_tap(&mut self.dp, t)?;
                self.metric_port(MetricPort {
                    name: t.name.clone(),
                    kind: "tap",
                    counters: tap.handle.counters.clone(),
                    status: tap.handle.status.clone(),
                });
                self.taps.push(tap);
            }
        }
        self.cfg = next;
        Ok(())
    }

    /// Starts capturing port `name`'s frames (at most `snaplen` bytes of each).
    fn start_capture(
        &mut self,
        name: &str,
        take_in: bool,
        take_out: bool,
        snaplen: u32,
        count: Option<u64>,
    ) -> Result<PendingCapture, String> {
        let id = self
            .ports
            .iter()
            .flatten()
            .find(|p| p.cfg.name == name)
            .map(|p| p.handle.id)
            .or_else(|| {
                self.taps
                    .iter()
                    .find(|t| t.cfg.name == name)
                    .map(|t| t.handle.id)
            })
            .ok_or_else(|| format!("no port named `{name}`"))?;
        if !(14..=262_144).contains(&snaplen) {
            return Err(format!("snaplen {snaplen}: expected 14 to 262144 bytes"));
        }
        if !take_in && !take_out {
            return Err("nothing to capture: neither direction asked for".into());
        }
        let snap = usize::try_from(snaplen).unwrap_or(usize::MAX);
        let cap = self.dp.start_capture(id, take_in, take_out, snap);
        tracing::info!("port {name}: capture started");
        Ok(PendingCapture {
            cap,
            name: name.to_string(),
            snaplen,
            count,
        })
    }

    /// Adds a port to the metrics.
    fn metric_port(&self, p: MetricPort) {
        let mut list = self
            .metric_ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        list.push(p);
    }

    /// Removes a port while the others run: its rings stop, its frontend is disconnected,
    /// the socket file vnetd created goes, and the datapath releases its held frames and
    /// FDB entries. Returns what was done.
    pub fn del_port(&mut self, name: &str) -> Result<String, String> {
        let slot = self
            .ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name));
        let what = if let Some(i) = slot {
            self.disconnect(i);
            let Some(p) = self.ports[i].take() else {
                return Err(format!("no port named `{name}`"));
            };
            let mut what = format!("port {name} removed");
            if let Some(l) = &p.listener {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    l.as_raw_fd(),
                    EpollEvent::default(),
                );
                match std::fs::remove_file(&p.cfg.socket) {
                    Ok(()) => what += &format!(", socket {} removed", p.cfg.socket.display()),
                    Err(e) => what += &format!(", socket {} left: {e}", p.cfg.socket.display()),
                }
            }
            self.dp.remove_port(p.handle.id);
            what
        } else if let Some(i) = self.taps.iter().position(|t| t.cfg.name == name) {
            let t = self.taps.remove(i);
            self.dp.remove_port(t.handle.id);
            format!("port {name} removed (TAP {} closed)", t.ifname)
        } else {
            return Err(format!("no port named `{name}`"));
        };
        self.cfg.ports.retain(|p| p.name() != name);
        self.metric_ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|p| p.name != name);
        tracing::info!("{what}");
        Ok(what)
    }

    /// Changes what can change on a running port ([`LIVE_KEYS`]: its MAC as the switch
    /// enforces it, port security, learning limit, VLAN, rate limits); `settings` are
    /// `KEY=VALUE` as on the command line. Anything else is refused, naming the key;
    /// nothing is applied unless everything is valid. Returns what changed.
    pub fn set_port(&mut self, name: &str, settings: &[String]) -> Result<String, String> {
        let idx = self
            .cfg
            .ports
            .iter()
            .position(|p| p.name() == name)
            .ok_or_else(|| format!("no port named `{name}`"))?;
        let old = self.cfg.ports[idx].clone();
        let tap = matches!(old, PortConfig::Tap(_));
        let mut items = spec_items(&old);
        let mut changed = Vec::new();
        for s in settings {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
            if !LIVE_KEYS.contains(&k) || (tap && k == "mac") {
                return Err(format!(
                    "`{k}` cannot change on a running {} port (live: {}); remove and add the \
                     port to change it",
                    if tap { "TAP" } else { "vhost-user" },
                    LIVE_KEYS
                        .iter()
                        .filter(|l| !(tap && **l == "mac"))
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            match items.iter_mut().find(|(key, _)| key == k) {
                Some(item) => item.1 = Some(v.to_string()),
                None => items.push((k.to_string(), Some(v.to_string()))),
            }
            changed.push(k.to_string());
        }
        let spec = items
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let new = match &old {
            PortConfig::VhostUser(_) => spec.parse().map(PortConfig::VhostUser),
            PortConfig::Tap(_) => spec.parse().map(PortConfig::Tap),
        }
        .map_err(|e| e.to_string())?;
        let mut next = self.cfg.clone();
        next.ports[idx] = new.clone();
        next.validate().map_err(|e| e.to_string())?;
        self.apply_live(&new)?;
        self.cfg = next;
        let what = format!("port {name}: {} changed", changed.join(", "));
        tracing::info!("{what}");
        Ok(what)
    }

    /// Puts a running port's new policy in force (the caller checked that only
    /// [`LIVE_KEYS`] differ and that the whole configuration stays valid).
    fn apply_live(&mut self, new: &PortConfig) -> Result<(), String> {
        let name = new.name();
        match new {
            PortConfig::VhostUser(vu) => {
                let policy = port_policy(vu.mac, vu.mtu, &vu.isolation, DEFAULT_MAX_MACS_VHOST);
                let p = self
                    .ports
                    .iter_mut()
                    .flatten()
                    .find(|p| p.cfg.name == name)
                    .ok_or_else(|| format!("no port named `{name}`"))?;
                self.dp.set_policy(p.handle.id, &policy);
                p.mac = vu.mac.unwrap_or_else(|| default_mac(&vu.name));
                p.cfg = vu.clone();
            }
            PortConfig::Tap(t) => {
                let policy = port_policy(t.mac, t.mtu, &t.isolation, DEFAULT_MAX_MACS_TAP);
                let tc = self
                    .taps
                    .iter_mut()
                    .find(|tc| tc.cfg.name == name)
                    .ok_or_else(|| format!("no port named `{name}`"))?;
                self.dp.set_policy(tc.handle.id, &policy);
                tc.cfg = t.clone();
            }
        }
        Ok(())
    }

    /// Where `--config` came from, and the ports given on the command line: what
    /// [`Daemon::reload`] reads again and keeps.
    pub fn set_config_source(&mut self, file: Option<PathBuf>, cli_ports: Vec<PortConfig>) {
        self.config_file = file;
        self.cli_ports = cli_ports;
    }

    /// Re-reads `--config` and applies the difference: ports no longer there are removed,
    /// new ones added, changed ones changed live (only [`LIVE_KEYS`] differ) or removed and
    /// added again. Ports given on vnetd's command line stay; ports added with `add-port`
    /// and absent from the file go (the file is the configuration). A file with an error
    /// changes nothing. Settings of the daemon itself (workers, datapath, security, ...)
    /// take effect at the next start; the report says which differ.
    pub fn reload(&mut self) -> Result<String, String> {
        let Some(path) = self.config_file.clone() else {
            return Err("vnetd was started without --config: nothing to reload".into());
        };
        let refused = |e: String| format!("{e}; nothing changed");
        let mut want = Config::load(&path).map_err(|e| refused(e.to_string()))?;
        want.control = self.cfg.control.clone().or(want.control);
        want.ports.extend(self.cli_ports.iter().cloned());
        want.validate().map_err(|e| refused(e.to_string()))?;
        let mut done = Vec::new();
        let r = self.apply_reload(&want, &mut done);
        if let Err(e) = r {
            let before = if done.is_empty() {
                "nothing changed".to_string()
            } else {
                format!("applied before that: {}", done.join("; "))
            };
            return Err(format!("{e}; {before}"));
        }
        let c = &self.cfg;
        for (key, differs) in [
            ("workers", c.workers != want.workers),
            ("datapath", c.datapath != want.datapath),
            ("tap_hold_ms", c.tap_hold_ms != want.tap_hold_ms),
            ("fdb", c.fdb != want.fdb),
            ("security settings", c.security != want.security),
        ] {
            if differs {
                done.push(format!(
                    "{key} changed in the file: takes effect at the next start"
                ));
            }
        }
        if done.is_empty() {
            done.push("no change".into());
        }
        let what = format!("reloaded {}: {}", path.display(), done.join("; "));
        tracing::info!("{what}");
        Ok(what)
    }

    /// Applies the port differences between the running configuration and `want`,
    /// noting each change in `done`.
    fn apply_reload(&mut self, want: &Config, done: &mut Vec<String>) -> Result<(), String> {
        let have = self.cfg.ports.clone();
        let find =
            |ports: &[PortConfig], name: &str| ports.iter().find(|p| p.name() == name).cloned();
        for old in &have {
            match find(&want.ports, old.name()) {
                None => done.push(self.del_port(old.name())?),
                Some(new) if new != *old => {
                    let tap = matches!(new, PortConfig::Tap(_));
                    let (a, b) = (spec_items(old), spec_items(&new));
                    let differ: Vec<String> = a
                        .iter()
                        .filter(|i| !b.contains(i))
                        .chain(b.iter().filter(|i| !a.contains(i)))
                        .map(|(k, _)| k.clone())
                        .collect();
                    let same_kind = std::mem::discriminant(old) == std::mem::discriminant(&new);
                    // Live when only live keys differ (set, changed or gone: the new policy
                    // is computed from the whole new port).
                    let live = same_kind
                        && differ
                            .iter()
                            .all(|k| LIVE_KEYS.contains(&k.as_str()) && !(tap && k == "mac"));
                    if live {
                        self.apply_live(&new)?;
                        if let Some(p) = self.cfg.ports.iter_mut().find(|p| p.name() == new.name())
                        {
                            *p = new.clone();
                        }
                        let mut keys = differ;
                        keys.dedup();
                        done.push(format!("port {}: {} changed", new.name(), keys.join(", ")));
                    } else {
                        self.del_port(old.name())?;
                        self.add_port(&new).map_err(|e| e.to_string())?;
                        done.push(format!(
                            "port {} recreated with its new settings",
                            new.name()
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        for new in &want.ports {
            if find(&have, new.name()).is_none() {
                self.add_port(new).map_err(|e| e.to_string())?;
                done.push(format!("port {} added", new.name()));
            }
        }
        Ok(())
    }

    fn add_vhost_user(&mut self, vu: &VhostUserPort) -> Result<(), DaemonError> {
        let mac = vu.mac.unwrap_or_else(|| default_mac(&vu.name));
        let policy = port_policy(vu.mac, vu.mtu, &vu.isolation, DEFAULT_MAX_MACS_VHOST);
        let gid = match &vu.access.group {
            Some(_) => group_gid(&vu.access.group, &format!("port {}: group", vu.name))?,
            None => self.sockets.gid,
        };
        let owner = Owner {
            mode: vu.access.mode.unwrap_or(self.sockets.mode),
            uid: self.sockets.uid,
            gid,
        };
        let i = self
            .ports
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.ports.len());
        let listener = if vu.client {
            sockets::check_dir(&vu.socket, self.rule).map_err(|err| DaemonError::Listen {
                port: vu.name.clone(),
                path: vu.socket.clone(),
                err,
            })?;
            None
        } else {
            let l = sockets::listen(&vu.socket, owner, self.rule).map_err(|err| {
                DaemonError::Listen {
                    port: vu.name.clone(),
                    path: vu.socket.clone(),
                    err,
                }
            })?;
            tracing::info!(
                "port {}: listening for a vhost-user frontend on {} (mode {:04o})",
                vu.name,
                vu.socket.display(),
                owner.mode
            );
            Some(l)
        };
        // The datapath side last: nothing above can fail once it exists.
        let handle = self
            .dp
            .add_port(&vu.name, vu.queue_pairs, vu.datapath, &policy);
        let dev = NetDevice {
            name: vu.name.clone(),
            mac,
            mtu: vu.mtu.unwrap_or(1500),
            queue_pairs: vu.queue_pairs,
            max_mem: vu.access.max_mem.unwrap_or(port_vhost::DEFAULT_MAX_MEM),
        };
        let net = Arc::new(Mutex::new(VhostUserNet::new(
            dev,
            self.dp.vhost_queues(handle.id),
        )));
        self.metric_port(MetricPort {
            name: vu.name.clone(),
            kind: "vhost-user",
            counters: handle.counters.clone(),
            status: handle.status.clone(),
        });
        let fd = listener.as_ref().map(AsRawFd::as_raw_fd);
        let port = Some(Port {
            cfg: vu.clone(),
            mac,
            handle,
            net,
            listener,
            conn: None,
            next_connect: Instant::now(),
            connect_failures: 0,
            log: Arc::new(Mutex::new(LogLimit::default())),
        });
        if i == self.ports.len() {
            self.ports.push(port);
        } else {
            self.ports[i] = port;
        }
        if let Some(fd) = fd {
            let ev = EpollEvent::new(EventSet::IN, Token::Listener(i).pack());
            self.epoll.ctl(ControlOperation::Add, fd, ev)?;
        }
        Ok(())
    }

    /// Serves until `stop` becomes true. `hup` (SIGHUP) is reported and cleared:
    /// reloading the configuration is not supported yet, and a SIGHUP must not kill the
    /// switch every VM depends on.
    pub fn run(&mut self, stop: &AtomicBool, hup: &AtomicBool) -> Result<(), DaemonError> {
        if let Some(l) = self.metrics_listener.take() {
            let addr = l.local_addr()?;
            let m = Metrics::serve(l, self.metric_ports.clone(), self.dp.worker_stats())
                .map_err(|err| DaemonError::Metrics { addr, err })?;
            tracing::info!("metrics at http://{addr}/metrics");
            self.metrics = Some(m);
        }
        let mut events = vec![EpollEvent::default(); 32];
        while !stop.load(Ordering::Relaxed) {
            if hup.swap(false, Ordering::Relaxed) {
                match self.reload() {
                    Ok(_) => {}
                    Err(e) => tracing::warn!("SIGHUP: reload failed: {e}"),
                }
            }
            self.connect_clients();
            self.expire_clients(Instant::now());
            let n = match self.epoll.wait(200, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e.into()),
            };
            for ev in &events[..n] {
                match Token::unpack(ev.data()) {
                    Some(Token::Control) => self.accept_client(),
                    Some(Token::Listener(i)) => self.accept(i),
                    Some(Token::Client(i)) => self.serve_client(i),
                    Some(Token::ConnDone) => {
                        let _ = self.conn_done.read();
                        self.reap();
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// Warns about port `i`'s peer, within the port's log budget.
    fn peer_warning(&self, i: usize, msg: std::fmt::Arguments<'_>) {
        let Some(p) = self.ports.get(i).and_then(Option::as_ref) else {
            return;
        };
        let mut log = p
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = log.allow(Instant::now()) {
            tracing::warn!("port {}: {msg}{}", p.cfg.name, suppressed_note(n));
        }
    }

    fn connect_clients(&mut self) {
        let now = Instant::now();
        for i in 0..self.ports.len() {
            let Some(p) = self.ports[i].as_mut() else {
                continue;
            };
            if !p.cfg.client || p.conn.is_some() || now < p.next_connect {
                continue;
            }
            p.next_connect = now + RECONNECT_INTERVAL;
            match sockets::connect_nonblocking(&p.cfg.socket) {
                Ok(s) => {
                    tracing::info!(
                        "port {}: connected to {}",
                        p.cfg.name,
                        p.cfg.socket.display()
                    );
                    p.connect_failures = 0;
                    self.attach(i, s);
                }
                Err(e) => {
                    // Say it once, then every minute or so: the VMM may simply not be up yet.
                    if p.connect_failures % 120 == 0 {
                        tracing::info!(
                            "port {}: waiting for the VMM's socket {} ({e}); retrying every {} ms",
                            p.cfg.name,
                            p.cfg.socket.display(),
                            RECONNECT_INTERVAL.as_millis()
                        );
                    }
                    p.connect_failures += 1;
                }
            }
        }
    }

    fn accept(&mut self, i: usize) {
        let Some(p) = self.ports.get(i).and_then(Option::as_ref) else {
            return;
        };
        let Some(l) = &p.listener else { return };
        let s = match l.accept() {
            Ok((s, _)) => s,
            Err(_) => return,
        };
        if p.conn.as_ref().is_some_and(Connection::finished) {
            // The previous frontend is gone (its thread may not have noticed yet).
            self.disconnect(i);
        }
        let Some(p) = self.ports[i].as_ref() else {
            return;
        };
        if p.conn.is_some() {
            self.peer_warning(i, format_args!("refusing a second frontend connection"));
            return;
        }
        tracing::info!("port {}: frontend connected", p.cfg.name);
        self.attach(i, s);
    }

    /// Serves `s` as port `i`'s frontend, if its peer's uid is allowed.
    fn attach(&mut self, i: usize, s: UnixStream) {
        let Some(p) = self.ports.get(i).and_then(Option::as_ref) else {
            return;
        };
        let uids = &p.cfg.access.uids;
        if !uids.is_empty() {
            match sockets::peer_uid(&s) {
                Ok(uid) if uids.contains(&uid) => {}
                Ok(uid) => {
                    self.peer_warning(
                        i,
                        format_args!("refusing a peer with uid {uid}: not in the port's uids"),
                    );
                    return;
                }
                Err(e) => {
                    self.peer_warning(i, format_args!("refusing a peer: SO_PEERCRED: {e}"));
                    return;
                }
            }
        }
        let wake = self.conn_done.clone();
        let Some(p) = self.ports[i].as_mut() else {
            return;
        };
        let log = p.log.clone();
        let name = p.cfg.name.clone();
        let on_exit = move |why: &ConnError| {
            match why {
                ConnError::Disconnected => {
                    tracing::info!("port {name}: frontend disconnected; port down")
                }
                ConnError::Protocol(e) => {
                    let mut l = log
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(n) = l.allow(Instant::now()) {
                        tracing::warn!(
                            "port {name}: dropping frontend after protocol error: {e}; port \
                             down{}",
                            suppressed_note(n)
                        );
                    }
                }
            }
            let _ = wake.write(1);
        };
        match Connection::spawn(&p.cfg.name, s, p.net.clone(), on_exit) {
            Ok(c) => p.conn = Some(c),
            Err(e) => tracing::error!("port {}: connection setup failed: {e}", p.cfg.name),
        }
    }

    /// Collects the connections whose threads ended.
    fn reap(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            if p.conn.as_ref().is_some_and(Connection::finished) {
                if let Some(c) = p.conn.take() {
                    c.close();
                }
                p.next_connect = Instant::now() + RECONNECT_INTERVAL;
            }
        }
    }

    fn disconnect(&mut self, i: usize) {
        let Some(p) = self.ports.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if let Some(c) = p.conn.take() {
            // The thread resets the handler (every ring stops) before it ends.
            c.close();
        }
        p.next_connect = Instant::now() + RECONNECT_INTERVAL;
    }

    fn accept_client(&mut self) {
        let Some((l, _)) = &self.control else { return };
        let Ok((s, _)) = l.accept() else { return };
        let slot = match self.clients.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.clients.len() < MAX_CLIENTS => {
                self.clients.push(None);
                self.clients.len() - 1
            }
            None => {
                if let Some(n) = self.clients_log.allow(Instant::now()) {
                    tracing::warn!(
                        "control socket: {MAX_CLIENTS} clients already connected; turning one \
                         away{}",
                        suppressed_note(n)
                    );
                }
                return;
            }
        };
        if s.set_nonblocking(true).is_err() {
            return;
        }
        let ev = EpollEvent::new(EventSet::IN, Token::Client(slot).pack());
        if self
            .epoll
            .ctl(ControlOperation::Add, s.as_raw_fd(), ev)
            .is_err()
        {
            return;
        }
        self.clients[slot] = Some(Client {
            stream: s,
            request: Vec::new(),
            answer: Vec::new(),
            written: 0,
            deadline: Instant::now() + CLIENT_DEADLINE,
            capture: None,
        });
    }

    /// Reads a control client's request (what has arrived), answers once it is complete,
    /// and writes the answer as far as the socket takes it; never waits.
    fn serve_client(&mut self, i: usize) {
        let Some(mut c) = self.clients.get_mut(i).and_then(Option::take) else {
            return;
        };
        let alive = if c.answer.is_empty() {
            self.read_request(&mut c)
        } else {
            true
        };
        if !alive {
            self.drop_client(c);
        } else if c.answer.is_empty() {
            // The request is not complete yet.
            self.clients[i] = Some(c);
        } else if write_some(&mut c) {
            // Waiting for room to write the rest.
            let ev = EpollEvent::new(EventSet::OUT, Token::Client(i).pack());
            let _ = self
                .epoll
                .ctl(ControlOperation::Modify, c.stream.as_raw_fd(), ev);
            self.clients[i] = Some(c);
        } else if c.written == c.answer.len() && c.capture.is_some() {
            // The answer is out: the frames follow on a thread of their own.
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                c.stream.as_raw_fd(),
                EpollEvent::default(),
            );
            if let Some(p) = c.capture.take() {
                if let Err(e) = crate::capture::spawn(c.stream, p.cap, p.name, p.snaplen, p.count) {
                    tracing::error!("capture thread: {e}");
                }
            }
        } else {
            self.drop_client(c);
        }
    }

    /// Reads what the client sent; prepares the answer once a whole line is there.
    /// False when the client is gone.
    fn read_request(&mut self, c: &mut Client) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match (&c.stream).read(&mut buf) {
                Ok(0) => {
                    // EOF: a request without its newline is still answered.
                    if c.request.is_empty() {
                        return false;
                    }
                    break;
                }
                Ok(n) => {
                    c.request.extend_from_slice(&buf[..n]);
                    if c.request.len() > MAX_REQUEST_LEN || c.request.contains(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !c.request.contains(&b'\n') {
                        return true;
                    }
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let resp = if c.request.len() > MAX_REQUEST_LEN {
            Response::error(format!(
                "request longer than {MAX_REQUEST_LEN} bytes: refused"
            ))
        } else {
            let line = String::from_utf8_lossy(&c.request);
            match api::decode_line::<Request>(&line) {
                Ok(Request::Capture {
                    port,
                    take_in,
                    take_out,
                    snaplen,
                    count,
                }) => match self.start_capture(&port, take_in, take_out, snaplen, count) {
                    Ok(p) => {
                        let message = format!("capturing port {port}");
                        c.capture = Some(p);
                        Response::Done { message }
                    }
                    Err(e) => Response::error(format!("capture: {e}")),
                },
                Ok(req) => self.answer(&req),
                Err(e) => Response::error(format!("bad request: {e}")),
            }
        };
        c.answer = api::encode_line(&resp).into_bytes();
        true
    }

    fn drop_client(&mut self, c: Client) {
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            c.stream.as_raw_fd(),
            EpollEvent::default(),
        );
    }

    /// Drops control clients past their deadline (a request dribbled in, or an answer
    /// nobody reads).
    fn expire_clients(&mut self, now: Instant) {
        for i in 0..self.clients.len() {
            if self.clients[i].as_ref().is_some_and(|c| now >= c.deadline) {
                if let Some(c) = self.clients[i].take() {
                    if let Some(n) = self.clients_log.allow(now) {
                        tracing::warn!(
                            "control socket: dropping a client that did not finish within {} \
                             ms{}",
                            CLIENT_DEADLINE.as_millis(),
                            suppressed_note(n)
                        );
                    }
                    self.drop_client(c);
                }
            }
        }
    }

    /// Answers one control request.
    pub fn answer(&mut self, req: &Request) -> Response {
        match req {
            Request::Ports => Response::Ports(
                self.ports
                    .iter()
                    .flatten()
                    .map(|p| self.port_info(p))
                    .chain(self.taps.iter().map(tap_info))
                    .collect(),
            ),
            Request::Stats => Response::Stats(
                self.ports
                    .iter()
                    .flatten()
                    .map(|p| port_stats(&p.cfg.name, &p.handle))
                    .chain(self.taps.iter().map(|t| port_stats(&t.cfg.name, &t.handle)))
                    .collect(),
            ),
            Request::Fdb => Response::Fdb(
                self.dp
                    .fdb()
                    .into_iter()
                    .map(|r| api::FdbEntry {
                        mac: r.mac,
                        vlan: r.vlan,
                        port: r.port,
                        age_secs: r.age.as_secs(),
                        fixed: r.fixed,
                    })
                    .collect(),
            ),
            Request::Version => Response::Version {
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            Request::AddPort { kind, spec } => {
                let parsed = match kind {
                    PortKind::VhostUser => spec.parse().map(PortConfig::VhostUser),
                    PortKind::Tap => spec.parse().map(PortConfig::Tap),
                    PortKind::Unknown => {
                        return Response::error("add-port: unknown port kind");
                    }
                };
                match parsed {
                    Err(e) => Response::error(format!("add-port: {e}")),
                    Ok(pc) => match self.add_port(&pc) {
                        Ok(()) => Response::Done {
                            message: format!("port {} added", pc.name()),
                        },
                        Err(e) => Response::error(format!("add-port: {e}")),
                    },
                }
            }
            Request::SetPort { name, settings } => match self.set_port(name, settings) {
                Ok(message) => Response::Done { message },
                Err(e) => Response::error(format!("set-port: {e}")),
            },
            Request::Capture { .. } => {
                Response::error("capture: only on a control connection of its own")
            }
            Request::ShowConfig => Response::Config {
                toml: self.cfg.to_toml(),
            },
            Request::Reload => match self.reload() {
                Ok(message) => Response::Done { message },
                Err(e) => Response::error(format!("reload: {e}")),
            },
            Request::DelPort { name } => match self.del_port(name) {
                Ok(message) => Response::Done { message },
                Err(e) => Response::error(format!("del-port: {e}")),
            },
        }
    }

    fn port_info(&self, p: &Port) -> PortInfo {
        let st = &p.handle.status;
        let broken = st.broken_reason();
        let state = if broken.is_some() {
            PortState::Broken
        } else if st.running_queues() > 0 {
            PortState::Up
        } else if p.conn.is_some() {
            PortState::Connected
        } else {
            PortState::Down
        };
        let feats = st.features();
        PortInfo {
            name: p.cfg.name.clone(),
            kind: PortKind::VhostUser,
            socket: Some(p.cfg.socket.display().to_string()),
            ifname: None,
            mode: if p.cfg.client {
                PortMode::Client
            } else {
                PortMode::Server
            },
            mac: Some(p.mac),
            state,
            features: (feats != 0).then(|| virtio_net::features::describe(feats)),
            queue_pairs: p.cfg.queue_pairs,
            mtu: p.cfg.mtu.unwrap_or(1500),
            broken_reason: broken,
            vlan: p.cfg.isolation.vlan_text(),
            limits: Some(
                p.cfg
                    .isolation
                    .limits_text(p.cfg.mac.is_some(), DEFAULT_MAX_MACS_VHOST),
            ),
        }
    }

    /// Socket paths this daemon created (removed on drop).
    fn created_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .ports
            .iter()
            .flatten()
            .filter(|p| p.listener.is_some())
            .map(|p| p.cfg.socket.clone())
            .collect();
        if let Some((_, path)) = &self.control {
            v.push(path.clone());
        }
        v
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for i in 0..self.ports.len() {
            self.disconnect(i);
        }
        for c in std::mem::take(&mut self.clients).into_iter().flatten() {
            self.drop_client(c);
        }
        for p in self.created_paths() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What the datapath enforces for a port: its configured MAC (and allowed ones) as static
/// entries and, with `spoofchk`, as the only sources; its VLAN, learning limit, MTU and
/// rate limits.
fn port_policy(
    mac: Option<MacAddr>,
    mtu: Option<u16>,
    iso: &Isolation,
    default_max_macs: u32,
) -> PortPolicy {
    let macs: Vec<MacAddr> = mac
        .into_iter()
        .chain(iso.allowed_macs.iter().copied())
        .collect();
    let checked = iso.spoofchk && (!macs.is_empty() || !iso.ips.is_empty());
    PortPolicy {
        security: checked.then(|| PortSecurity::new(macs.clone(), iso.ips.clone())),
        static_macs: macs,
        vlan: match (iso.vlan, iso.trunk.is_empty()) {
            (Some(v), _) => VlanMode::Access(v),
            (None, false) => VlanMode::Trunk(Box::new(iso.trunk.iter().copied().collect())),
            (None, true) => VlanMode::Native,
        },
        max_macs: Some(iso.max_macs.unwrap_or(default_max_macs)),
        mtu,
        ingress: Limit {
            mbit: iso.ingress_mbit,
            kpps: iso.ingress_kpps,
        },
        egress: Limit {
            mbit: iso.egress_mbit,
            kpps: iso.egress_kpps,
        },
        flood_kpps: iso.flood_kpps,
    }
}

fn open_tap(dp: &mut Datapath, t: &TapPort) -> Result<TapCtl, DaemonError> {
    let tap = port_tap::Tap::open(&port_tap::TapConfig {
        ifname: t.ifname.clone(),
        netns: t.netns.clone(),
        queues: t.queues,
        mac: t.mac,
        mtu: t.mtu,
    })
    .map_err(|err| DaemonError::Tap {
        port: t.name.clone(),
        err,
    })?;
    let ifname = tap.ifname.clone();
    tracing::info!(
        "port {}: TAP {}{} up with {} queue(s)",
        t.name,
        ifname,
        t.netns
            .as_deref()
            .map(|n| format!(" in netns {n}"))
            .unwrap_or_default(),
        tap.queues.len()
    );
    let policy = port_policy(t.mac, t.mtu, &t.isolation, DEFAULT_MAX_MACS_TAP);
    let handle = dp.add_tap_port(&t.name, tap, &policy)?;
    Ok(TapCtl {
        cfg: t.clone(),
        ifname,
        handle,
    })
}

fn tap_info(t: &TapCtl) -> PortInfo {
    let st = &t.handle.status;
    let broken = st.broken_reason();
    PortInfo {
        name: t.cfg.name.clone(),
        kind: PortKind::Tap,
        socket: None,
        ifname: Some(match &t.cfg.netns {
            Some(ns) => format!("{}@{ns}", t.ifname),
            None => t.ifname.clone(),
        }),
        mode: PortMode::Kernel,
        mac: t.cfg.mac,
        state: if broken.is_some() || st.running_queues() == 0 {
            PortState::Down
        } else {
            PortState::Up
        },
        features: None,
        queue_pairs: t.cfg.queues,
        mtu: t.cfg.mtu.unwrap_or(1500),
        broken_reason: broken,
        vlan: t.cfg.isolation.vlan_text(),
        limits: Some(
            t.cfg
                .isolation
                .limits_text(t.cfg.mac.is_some(), DEFAULT_MAX_MACS_TAP),
        ),
    }
}

fn port_stats(name: &str, h: &PortHandle) -> PortStats {
    let c = h.counters.snapshot();
    PortStats {
        name: name.to_string(),
        rx_packets: c.rx_packets,
        rx_bytes: c.rx_bytes,
        tx_packets: c.tx_packets,
        tx_bytes: c.tx_bytes,
        drops: c
            .drops_by_reason()
            .map(|(r, n)| (r.name().to_string(), n))
            .collect(),
        queues: h
            .status
            .ring_used()
            .chunks_exact(2)
            .zip(0u16..)
            .map(|(used, pair)| QueueStats {
                pair,
                rx_chains: used[1],
                tx_chains: used[0],
            })
            .collect(),
    }
}

/// A port's command-line form as `(key, value)` items (`value` None for a bare key).
fn spec_items(p: &PortConfig) -> Vec<(String, Option<String>)> {
    let spec = match p {
        PortConfig::VhostUser(p) => p.to_string(),
        PortConfig::Tap(p) => p.to_string(),
    };
    spec.split(',')
        .map(|i| match i.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (i.to_string(), None),
        })
        .collect()
}

/// Writes as much of the client's answer as the socket takes. True while some is left.
fn write_some(c: &mut Client) -> bool {
    while c.written < c.answer.len() {
        match (&c.stream).write(&c.answer[c.written..]) {
            Ok(0) => return false,
            Ok(n) => c.written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    false
}
