//! The control thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{PortInfo, PortKind, PortMode, PortState, PortStats, QueueStats, Request, Response};
use datapath::{Datapath, DatapathConfig, Limit, PortHandle, PortPolicy, VhostQueues};
use port_vhost::server::{self, Connection, SharedNet};
use port_vhost::{NetDevice, VhostUserNet};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use wire::MacAddr;

use switch::{PortSecurity, VlanMode};

use crate::config::{
    Config, Isolation, PortConfig, TapPort, VhostUserPort, DEFAULT_MAX_MACS_TAP,
    DEFAULT_MAX_MACS_VHOST,
};

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
    Control,
    Listener(usize),
    Conn(usize),
}

impl Token {
    fn pack(self) -> u64 {
        match self {
            Token::Control => 0,
            Token::Listener(i) => (1 << 32) | i as u64,
            Token::Conn(i) => (2 << 32) | i as u64,
        }
    }
    fn unpack(v: u64) -> Option<Token> {
        let i = usize::try_from(v & 0xffff_ffff).ok()?;
        match v >> 32 {
            0 => Some(Token::Control),
            1 => Some(Token::Listener(i)),
            2 => Some(Token::Conn(i)),
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
    conn: Option<Connection<VhostQueues>>,
    next_connect: Instant,
    connect_failures: u64,
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
    ports: Vec<Port>,
    taps: Vec<TapCtl>,
    // Declared last: dropped after the ports' handlers, so their stop commands still land.
    dp: Datapath,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("ports", &self.ports.len())
            .finish()
    }
}

impl Daemon {
    /// Starts the worker, binds every server socket and the control socket.
    pub fn new(cfg: &Config) -> Result<Daemon, DaemonError> {
        if !(1..=datapath::MAX_WORKERS).contains(&cfg.workers) {
            return Err(DaemonError::Workers(cfg.workers));
        }
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
            dp,
        };
        if let Some(path) = &cfg.control {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let l = server::listen(path).map_err(|err| DaemonError::Control {
                path: path.clone(),
                err,
            })?;
            d.control = Some((l, path.clone()));
            let fd = d.control.as_ref().map_or(-1, |(l, _)| l.as_raw_fd());
            let ev = EpollEvent::new(EventSet::IN, Token::Control.pack());
            d.epoll.ctl(ControlOperation::Add, fd, ev)?;
        }
        for pc in &cfg.ports {
            match pc {
                PortConfig::VhostUser(vu) => d.add_vhost_user(vu)?,
                PortConfig::Tap(t) => {
                    let tap = open_tap(&mut d.dp, t)?;
                    d.taps.push(tap);
                }
            }
        }
        Ok(d)
    }

    fn add_vhost_user(&mut self, vu: &VhostUserPort) -> Result<(), DaemonError> {
        let mac = vu.mac.unwrap_or_else(|| default_mac(&vu.name));
        let policy = port_policy(vu.mac, vu.mtu, &vu.isolation, DEFAULT_MAX_MACS_VHOST);
        let handle = self
            .dp
            .add_port(&vu.name, vu.queue_pairs, vu.datapath, &policy);
        let dev = NetDevice {
            name: vu.name.clone(),
            mac,
            mtu: vu.mtu.unwrap_or(1500),
            queue_pairs: vu.queue_pairs,
            max_mem: port_vhost::DEFAULT_MAX_MEM,
        };
        let net = Arc::new(Mutex::new(VhostUserNet::new(
            dev,
            self.dp.vhost_queues(handle.id),
        )));
        let i = self.ports.len();
        let listener = if vu.client {
            None
        } else {
            let l = server::listen(&vu.socket).map_err(|err| DaemonError::Listen {
                port: vu.name.clone(),
                path: vu.socket.clone(),
                err,
            })?;
            tracing::info!(
                "port {}: listening for a vhost-user frontend on {}",
                vu.name,
                vu.socket.display()
            );
            Some(l)
        };
        let fd = listener.as_ref().map(AsRawFd::as_raw_fd);
        self.ports.push(Port {
            cfg: vu.clone(),
            mac,
            handle,
            net,
            listener,
            conn: None,
            next_connect: Instant::now(),
            connect_failures: 0,
        });
        if let Some(fd) = fd {
            let ev = EpollEvent::new(EventSet::IN, Token::Listener(i).pack());
            self.epoll.ctl(ControlOperation::Add, fd, ev)?;
        }
        Ok(())
    }

    /// Serves until `stop` becomes true.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), DaemonError> {
        let mut events = vec![EpollEvent::default(); 32];
        while !stop.load(Ordering::Relaxed) {
            self.connect_clients();
            let n = match self.epoll.wait(200, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e.into()),
            };
            for ev in &events[..n] {
                match Token::unpack(ev.data()) {
                    Some(Token::Control) => self.control_request(),
                    Some(Token::Listener(i)) => self.accept(i),
                    Some(Token::Conn(i)) => self.serve(i),
                    None => {}
                }
            }
        }
        Ok(())
    }

    fn connect_clients(&mut self) {
        let now = Instant::now();
        for i in 0..self.ports.len() {
            let p = &mut self.ports[i];
            if !p.cfg.client || p.conn.is_some() || now < p.next_connect {
                continue;
            }
            p.next_connect = now + RECONNECT_INTERVAL;
            match server::connect(&p.cfg.socket) {
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
        let Some(l) = &self.ports[i].listener else {
            return;
        };
        let s = match l.accept() {
            Ok((s, _)) => s,
            Err(_) => return,
        };
        let name = self.ports[i].cfg.name.clone();
        if self.ports[i].conn.is_some() {
            tracing::warn!("port {name}: refusing a second frontend connection");
            return;
        }
        tracing::info!("port {name}: frontend connected");
        self.attach(i, s);
    }

    fn attach(&mut self, i: usize, s: UnixStream) {
        let p = &mut self.ports[i];
        match Connection::new(s, p.net.clone()) {
            Ok(c) => {
                let ev = EpollEvent::new(EventSet::IN, Token::Conn(i).pack());
                if let Err(e) = self.epoll.ctl(ControlOperation::Add, c.fd(), ev) {
                    tracing::error!("port {}: cannot watch connection: {e}", p.cfg.name);
                    return;
                }
                p.conn = Some(c);
            }
            Err(e) => tracing::error!("port {}: connection setup failed: {e}", p.cfg.name),
        }
    }

    fn serve(&mut self, i: usize) {
        let Some(c) = self.ports[i].conn.as_mut() else {
            return;
        };
        if let Err(e) = c.handle() {
            let p = &mut self.ports[i];
            match e {
                server::ConnError::Disconnected => {
                    tracing::info!("port {}: frontend disconnected; port down", p.cfg.name)
                }
                server::ConnError::Protocol(e) => tracing::warn!(
                    "port {}: dropping frontend after protocol error: {e}; port down",
                    p.cfg.name
                ),
            }
            self.disconnect(i);
        }
    }

    fn disconnect(&mut self, i: usize) {
        let p = &mut self.ports[i];
        if let Some(c) = p.conn.take() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, c.fd(), EpollEvent::default());
        }
        if let Ok(mut net) = p.net.lock() {
            net.reset();
        }
        p.next_connect = Instant::now() + RECONNECT_INTERVAL;
    }

    fn control_request(&mut self) {
        let Some((l, _)) = &self.control else { return };
        let Ok((s, _)) = l.accept() else { return };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let mut r = BufReader::new(&s).take(api::MAX_LINE_LEN as u64);
        let resp = match r.read_line(&mut line) {
            Ok(_) => match api::decode_line::<Request>(&line) {
                Ok(req) => self.answer(&req),
                Err(e) => Response::error(format!("bad request: {e}")),
            },
            Err(e) => Response::error(format!("cannot read request: {e}")),
        };
        let _ = (&s).write_all(api::encode_line(&resp).as_bytes());
    }

    /// Answers one control request.
    pub fn answer(&self, req: &Request) -> Response {
        match req {
            Request::Ports => Response::Ports(
                self.ports
                    .iter()
                    .map(|p| self.port_info(p))
                    .chain(self.taps.iter().map(tap_info))
                    .collect(),
            ),
            Request::Stats => Response::Stats(
                self.ports
                    .iter()
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
