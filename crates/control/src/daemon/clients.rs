//! Control clients: requests read and answers written without blocking, with a size
//! limit and a deadline; a capture request hands its connection to a capture thread.

use super::*;

/// Largest control request accepted (a request is one short JSON line).
pub const MAX_REQUEST_LEN: usize = 4096;
/// How long a control client has to send its request and read the answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Control clients served at once; more are turned away until one finishes.
pub const MAX_CLIENTS: usize = 64;

/// A control client: its request as read so far, then its answer as written so far.
pub(super) struct Client {
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
pub(super) struct PendingCapture {
    cap: datapath::capture::Capture,
    name: String,
    snaplen: u32,
    count: Option<u64>,
}

impl Daemon {
    pub(super) fn accept_client(&mut self) {
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
    pub(super) fn serve_client(&mut self, i: usize) {
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
    pub(super) fn read_request(&mut self, c: &mut Client) -> bool {
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

    pub(super) fn drop_client(&mut self, c: Client) {
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            c.stream.as_raw_fd(),
            EpollEvent::default(),
        );
    }

    /// Drops control clients past their deadline (a request dribbled in, or an answer
    /// nobody reads).
    pub(super) fn expire_clients(&mut self, now: Instant) {
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

    /// Starts capturing port `name`'s frames (at most `snaplen` bytes of each).
    pub(super) fn start_capture(
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

    pub(super) fn port_info(&self, p: &Port) -> PortInfo {
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
