//! vhost-user ports: their sockets (server or client role), a connection thread per
//! frontend, peer checks and reconnects.

use super::reconfig::port_policy;
use super::*;

impl Daemon {
    pub(super) fn add_vhost_user(&mut self, vu: &VhostUserPort) -> Result<(), DaemonError> {
        let mac = vu.mac.unwrap_or_else(|| default_mac(&vu.name));
        let policy = port_policy(vu.mac, vu.mtu, &vu.isolation, DEFAULT_MAX_MACS_VHOST);
        let gid =
            group_gid(&vu.access.group, &format!("port {}: group", vu.name))?.or(self.sockets.gid);
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

    /// Warns about port `i`'s peer, within the port's log budget.
    pub(super) fn peer_warning(&self, i: usize, msg: std::fmt::Arguments<'_>) {
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

    pub(super) fn connect_clients(&mut self) {
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

    pub(super) fn accept(&mut self, i: usize) {
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
    pub(super) fn attach(&mut self, i: usize, s: UnixStream) {
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
    pub(super) fn reap(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            if p.conn.as_ref().is_some_and(Connection::finished) {
                if let Some(c) = p.conn.take() {
                    c.close();
                }
                p.next_connect = Instant::now() + RECONNECT_INTERVAL;
            }
        }
    }

    pub(super) fn disconnect(&mut self, i: usize) {
        let Some(p) = self.ports.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if let Some(c) = p.conn.take() {
            // The thread resets the handler (every ring stops) before it ends.
            c.close();
        }
        p.next_connect = Instant::now() + RECONNECT_INTERVAL;
    }
}
