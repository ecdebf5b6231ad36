//! The worker thread: epoll loop, commands, ring start/stop, bursts.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use port_vhost::ReadyQueue;
use switch::{DropReason, Fdb};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vring::{Chain, RingError, SplitQueue};

use crate::forward::Scratch;
use crate::handle::{Command, DatapathConfig, FdbRow};
use crate::port::{Port, PortId, Vq};

/// What an epoll event is about, packed into its u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// The command eventfd.
    Command,
    /// A guest kicked ring `index` of `port`.
    Kick { port: PortId, index: u16 },
}

impl Token {
    fn pack(self) -> u64 {
        match self {
            Token::Command => 0,
            Token::Kick { port, index } => (1 << 32) | (u64::from(port.0) << 16) | u64::from(index),
        }
    }

    fn unpack(v: u64) -> Option<Token> {
        match v >> 32 {
            0 => Some(Token::Command),
            1 => Some(Token::Kick {
                port: PortId(((v >> 16) & 0xffff) as u16),
                index: (v & 0xffff) as u16,
            }),
            _ => None,
        }
    }
}

pub(crate) struct Worker {
    epoll: Epoll,
    cmds: Receiver<Command>,
    wake: Arc<EventFd>,
    pub(crate) ports: Vec<Option<Port>>,
    pub(crate) fdb: Fdb<PortId>,
    pub(crate) scratch: Scratch,
    /// Ports with a txq to process: (port, queue pair).
    pending: Vec<(PortId, u16)>,
    tx_chain: Chain,
    running: bool,
}

impl Worker {
    pub fn new(
        cfg: DatapathConfig,
        cmds: Receiver<Command>,
        wake: Arc<EventFd>,
    ) -> std::io::Result<Worker> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, Token::Command.pack()),
        )?;
        Ok(Worker {
            epoll,
            cmds,
            wake,
            ports: Vec::new(),
            fdb: Fdb::new(cfg.fdb_capacity, cfg.fdb_aging),
            scratch: Scratch::new(),
            pending: Vec::with_capacity(256),
            tx_chain: Chain::new(),
            running: true,
        })
    }

    pub fn run(&mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        let mut last_age = Instant::now();
        while self.running {
            // Sleep only when no queue has work left over from its last burst.
            let timeout = if self.pending.is_empty() { 1000 } else { 0 };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    tracing::error!("worker epoll failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match Token::unpack(ev.data()) {
                    Some(Token::Command) => self.commands(),
                    Some(Token::Kick { port, index }) => self.kicked(port, index),
                    None => {}
                }
            }
            self.process_pending();
            let now = Instant::now();
            if now.duration_since(last_age).as_secs() >= 1 {
                self.fdb.age(now);
                last_age = now;
            }
        }
    }

    fn port(&mut self, id: PortId) -> Option<&mut Port> {
        self.ports
            .get_mut(usize::from(id.0))
            .and_then(Option::as_mut)
    }

    fn kicked(&mut self, id: PortId, index: u16) {
        let Some(p) = self.port(id) else { return };
        let qp = usize::from(index / 2);
        let list = if index % 2 == 0 {
            &mut p.rxq
        } else {
            &mut p.txq
        };
        if let Some(Some(q)) = list.get_mut(qp) {
            if let Some(k) = &mut q.kick {
                let mut b = [0u8; 8];
                let _ = k.read(&mut b);
            }
        }
        if index % 2 == 1 {
            self.schedule(id, index / 2);
        }
    }

    fn schedule(&mut self, id: PortId, qp: u16) {
        if !self.pending.contains(&(id, qp)) {
            self.pending.push((id, qp));
        }
    }

    /// One burst for each pending txq; those with work left stay pending.
    fn process_pending(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            let (id, qp) = self.pending[i];
            let more = self.process_tx(id, qp);
            if more {
                i += 1;
            } else {
                self.pending.swap_remove(i);
            }
        }
        self.flush_counters();
    }

    /// Runs one burst of txq `qp` of `id`. Returns true if more work is waiting.
    fn process_tx(&mut self, id: PortId, qp: u16) -> bool {
        let now = Instant::now();
        let mut chain = std::mem::take(&mut self.tx_chain);
        let res = self.tx_burst(id, qp, now, &mut chain);
        self.tx_chain = chain;
        for p in self.ports.iter_mut().flatten() {
            p.flush_rx();
        }
        match res {
            Ok(more) => more,
            Err(e) => {
                self.break_port(id, e);
                false
            }
        }
    }

    fn tx_burst(
        &mut self,
        id: PortId,
        qp: u16,
        now: Instant,
        chain: &mut Chain,
    ) -> Result<bool, RingError> {
        let idx = usize::from(id.0);
        let pending = match self.txq(id, qp) {
            Some(q) => q.ring.refresh_avail()?,
            None => return Ok(false),
        };
        let n = pending.min(crate::BURST);
        for _ in 0..n {
            let Some(q) = self.txq(id, qp) else { break };
            if !q.ring.pop(chain)? {
                break;
            }
            let head = chain.head();
            crate::forward::switch_frame(self, id, chain, now);
            if let Some(q) = self.txq(id, qp) {
                q.ring.push_used(head, 0);
            }
        }
        let Some(q) = self.txq(id, qp) else {
            return Ok(false);
        };
        if q.ring.flush_used() {
            q.call();
        }
        if pending > n {
            return Ok(true);
        }
        let left = q.ring.enable_notify()?;
        let _ = idx;
        Ok(left > 0)
    }

    fn txq(&mut self, id: PortId, qp: u16) -> Option<&mut Vq> {
        let p = self.port(id)?;
        if p.broken {
            return None;
        }
        p.txq.get_mut(usize::from(qp))?.as_mut()
    }

    /// The guest broke a ring rule: stop touching the port, say why, count it.
    pub(crate) fn break_port(&mut self, id: PortId, e: RingError) {
        let Some(p) = self.port(id) else { return };
        if p.broken {
            return;
        }
        tracing::error!(
            "port {}: guest violated the virtqueue rules ({e}); port marked broken until the frontend resets it",
            p.name
        );
        p.broken = true;
        p.counters.count_drop(DropReason::RingBroken);
        p.status.set_broken(Some(e.to_string()));
        for q in p.rxq.iter_mut().chain(p.txq.iter_mut()).flatten() {
            q.signal_err();
        }
        self.fdb.flush_port(id);
    }

    fn flush_counters(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            if !p.counters.is_zero() {
                p.shared.flush(&mut p.counters);
            }
        }
    }

    fn commands(&mut self) {
        let _ = self.wake.read();
        while let Ok(c) = self.cmds.try_recv() {
            self.command(c);
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::AddPort {
                id,
                name,
                queue_pairs,
                shared,
                status,
            } => {
                let i = usize::from(id.0);
                if self.ports.len() <= i {
                    self.ports.resize_with(i + 1, || None);
                }
                self.ports[i] = Some(Port::new(name, queue_pairs, shared, status));
            }
            Command::RemovePort { id, done } => {
                if let Some(p) = self.ports.get_mut(usize::from(id.0)).and_then(Option::take) {
                    self.drop_port_rings(id, p);
                }
                self.fdb.flush_port(id);
                let _ = done.send(());
            }
            Command::StartQueue { id, q } => self.start_queue(id, *q),
            Command::StopQueue { id, index, reply } => {
                let _ = reply.send(self.stop_queue(id, index));
            }
            Command::SetCall { id, index, call } => {
                if let Some(q) = self.vq(id, index) {
                    q.call = call;
                }
            }
            Command::Fdb { reply } => {
                let now = Instant::now();
                let rows = self
                    .fdb
                    .entries(now)
                    .map(|e| FdbRow {
                        mac: e.mac,
                        vlan: e.vlan,
                        port: self
                            .ports
                            .get(usize::from(e.port.0))
                            .and_then(Option::as_ref)
                            .map(|p| p.name.clone())
                            .unwrap_or_default(),
                        age: e.age,
                    })
                    .collect();
                let _ = reply.send(rows);
            }
            Command::Shutdown => self.running = false,
        }
    }

    fn vq(&mut self, id: PortId, index: u16) -> Option<&mut Vq> {
        let p = self.port(id)?;
        let list = if index % 2 == 0 {
            &mut p.rxq
        } else {
            &mut p.txq
        };
        list.get_mut(usize::from(index / 2))?.as_mut()
    }

    fn start_queue(&mut self, id: PortId, rq: ReadyQueue) {
        let index = rq.index;
        let epoll_fd = rq.kick.as_ref().map(AsRawFd::as_raw_fd);
        let Some(p) = self.port(id) else { return };
        let name = p.name.clone();
        let qp = usize::from(index / 2);
        let ring = match SplitQueue::new(rq.mem, &rq.cfg) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("port {name}: ring {index} refused: {e}");
                p.broken = true;
                p.counters.count_drop(DropReason::RingBroken);
                p.status.set_broken(Some(format!("ring {index}: {e}")));
                return;
            }
        };
        if p.broken && p.rxq.iter().chain(p.txq.iter()).all(Option::is_none) {
            // A broken port comes back once the frontend restarts its rings.
            p.broken = false;
            p.status.set_broken(None);
        }
        p.features = rq.features;
        p.hdr_len = virtio_net::hdr_len(rq.features);
        let list = if index % 2 == 0 {
            &mut p.rxq
        } else {
            &mut p.txq
        };
        let Some(slot) = list.get_mut(qp) else {
            tracing::warn!("port {name}: ring {index} beyond the configured queue pairs");
            return;
        };
        let mut vq = Vq {
            ring,
            kick: rq.kick,
            call: rq.call,
            err: rq.err,
        };
        if index % 2 == 0 {
            // Guest rx kicks only say "more buffers"; frames are never queued for a
            // guest, so it need not kick at all.
            vq.ring.disable_notify();
        }
        *slot = Some(vq);
        let running = p.rxq.iter().chain(p.txq.iter()).flatten().count();
        p.status
            .set_running(u16::try_from(running).unwrap_or(u16::MAX), rq.features);
        tracing::info!("port {name}: ring {index} started (size {})", rq.cfg.size);
        if index % 2 == 1 {
            if let Some(fd) = epoll_fd {
                let ev = EpollEvent::new(EventSet::IN, Token::Kick { port: id, index }.pack());
                if let Err(e) = self.epoll.ctl(ControlOperation::Add, fd, ev) {
                    tracing::error!("port {name}: cannot watch kick fd of ring {index}: {e}");
                }
            }
            // Process once now: kicks sent before the start are not lost, and a restarted
            // vnetd resumes what the guest queued meanwhile.
            self.schedule(id, index / 2);
        }
    }

    fn stop_queue(&mut self, id: PortId, index: u16) -> Option<u16> {
        let vq = {
            let p = self.port(id)?;
            let list = if index % 2 == 0 {
                &mut p.rxq
            } else {
                &mut p.txq
            };
            list.get_mut(usize::from(index / 2))?.take()?
        };
        let base = self.retire(vq);
        self.pending
            .retain(|&(p, qp)| !(p == id && index % 2 == 1 && qp == index / 2));
        if let Some(p) = self.port(id) {
            let running = p.rxq.iter().chain(p.txq.iter()).flatten().count();
            p.status
                .set_running(u16::try_from(running).unwrap_or(u16::MAX), p.features);
            if running == 0 {
                // All rings stopped: the frontend reset the device, a broken port is clean.
                if p.broken {
                    p.broken = false;
                    p.status.set_broken(None);
                }
                self.fdb.flush_port(id);
            }
        }
        Some(base)
    }

    /// Publishes what is pending on a ring, stops watching its kick and returns its base.
    fn retire(&mut self, mut vq: Vq) -> u16 {
        if vq.ring.flush_used() {
            vq.call();
        }
        if let Some(k) = &vq.kick {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                k.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        vq.ring.next_avail()
    }

    fn drop_port_rings(&mut self, id: PortId, mut p: Port) {
        let rings: Vec<Vq> = p
            .rxq
            .iter_mut()
            .chain(p.txq.iter_mut())
            .filter_map(Option::take)
            .collect();
        for vq in rings {
            self.retire(vq);
        }
        self.pending.retain(|&(pid, _)| pid != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Command,
            Token::Kick {
                port: PortId(7),
                index: 3,
            },
            Token::Kick {
                port: PortId(u16::MAX),
                index: u16::MAX,
            },
        ] {
            assert_eq!(Token::unpack(t.pack()), Some(t));
        }
        assert_eq!(Token::unpack(5 << 32), None);
    }
}
