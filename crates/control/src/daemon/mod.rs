//! The control thread: vnetd's control plane and the workers it drives.
//!
//! | module     | what it holds                                                          |
//! |------------|------------------------------------------------------------------------|
//! | `vhost`    | vhost-user ports' sockets and connections, in both roles               |
//! | `clients`  | control clients, served without blocking, and their requests           |
//! | `reconfig` | ports added, changed and removed at runtime; reload of `--config`      |

mod clients;
mod reconfig;
mod vhost;

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

/// vnetd's control plane and the worker it drives.
pub struct Daemon {
    epoll: Epoll,
    control: Option<(UnixListener, PathBuf)>,
    /// vhost-user ports by slot (a removed port leaves its slot empty: slots are in the
    /// epoll tokens of its listener).
    ports: Vec<Option<Port>>,
    taps: Vec<TapCtl>,
    clients: Vec<Option<clients::Client>>,
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
            tap_batch: cfg.tap_batch,
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
