//! The worker thread: epoll loop, commands, ring start/stop, bursts.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use port_vhost::ReadyQueue;
use switch::{DropReason, Fdb};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vring::{Chain, RingError, SplitQueue};

use crate::forward::{Outcome, Scratch, Src, HEAD_LEN};
use crate::handle::{Command, DatapathConfig, DatapathMode, FdbRow, Links, Peer, PortStatus};
use crate::mailbox::Receiver as MailReceiver;

/// While polling busy rings, the fds are checked every this many rounds.
const EPOLL_EVERY: u32 = 32;

/// Adaptive mode goes back to sleeping on kicks after this long without a frame.
const ADAPTIVE_IDLE: std::time::Duration = std::time::Duration::from_micros(200);
use crate::port::TapQueue;
use crate::port::{Port, PortId, Vq};

/// What an epoll event is about, packed into its u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// The command eventfd.
    Command,
    /// A guest kicked ring `index` of `port`.
    Kick { port: PortId, index: u16 },
    /// TAP queue `queue` of `port` is readable / writable / gone.
    Tap { port: PortId, queue: u16 },
    /// Another worker handed this one frames.
    Mail,
}

impl Token {
    fn pack(self) -> u64 {
        match self {
            Token::Command => 0,
            Token::Kick { port, index } => (1 << 32) | (u64::from(port.0) << 16) | u64::from(index),
            Token::Tap { port, queue } => (2 << 32) | (u64::from(port.0) << 16) | u64::from(queue),
            Token::Mail => 3 << 32,
        }
    }

    fn unpack(v: u64) -> Option<Token> {
        match v >> 32 {
            0 => Some(Token::Command),
            1 => Some(Token::Kick {
                port: PortId(((v >> 16) & 0xffff) as u16),
                index: (v & 0xffff) as u16,
            }),
            2 => Some(Token::Tap {
                port: PortId(((v >> 16) & 0xffff) as u16),
                queue: (v & 0xffff) as u16,
            }),
            3 => Some(Token::Mail),
            _ => None,
        }
    }
}

pub(crate) struct Worker {
    pub(crate) epoll: Epoll,
    cmds: Receiver<Command>,
    wake: Arc<EventFd>,
    pub(crate) ports: Vec<Option<Port>>,
    pub(crate) fdb: Fdb<PortId>,
    pub(crate) scratch: Scratch,
    /// Ports with a txq to process: (port, queue pair).
    pending: Vec<(PortId, u16)>,
    /// The chains of one tx burst (lent out during the burst).
    tx_chains: Vec<Chain>,
    /// How this worker waits for work.
    mode: DatapathMode,
    /// Polling right now (always in poll mode, while traffic flows in adaptive mode).
    polling: bool,
    /// Frames taken from txqs so far (to see whether a round did anything).
    work: u64,
    /// Where frames read from a TAP fd land.
    tap_buf: Vec<u8>,
    running: bool,
    /// This worker's index in the datapath.
    pub(crate) index: usize,
    /// Frames from other workers, and the eventfd they write to wake us.
    inbox: Vec<MailReceiver>,
    mail_wake: Arc<EventFd>,
    /// By worker index: the mailbox to that worker, its eventfd and sleep flag (None for
    /// us).
    pub(crate) outbox: Vec<Option<Peer>>,
    /// Set while this worker sleeps in epoll (other workers then write `mail_wake`).
    asleep: Arc<AtomicBool>,
    /// Ports here in poll and in adaptive mode.
    poll_ports: usize,
    adaptive_ports: usize,
    /// Adaptive ports are being polled (traffic flowed recently).
    adaptive_active: bool,
    /// Bit per worker that got mail since we last woke it.
    pub(crate) mailed: u64,
    /// [`vring::sigbus::hits`] as of the last look.
    sigbus_seen: u64,
    /// The queue pair the frames being switched came in on (0 for TAP and mailbox
    /// frames, whose held-frame bookkeeping watches a port's first rxq).
    pub(crate) rx_hint: u16,
}

impl Worker {
    pub fn new(cfg: DatapathConfig, links: Links) -> std::io::Result<Worker> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            links.wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, Token::Command.pack()),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            links.mail_wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, Token::Mail.pack()),
        )?;
        Ok(Worker {
            epoll,
            cmds: links.cmds,
            wake: links.wake,
            ports: Vec::new(),
            fdb: Fdb::new(cfg.fdb_capacity, cfg.fdb_aging),
            scratch: Scratch::new(),
            pending: Vec::with_capacity(256),
            tx_chains: (0..crate::BURST).map(|_| Chain::new()).collect(),
            mode: cfg.mode,
            polling: false,
            work: 0,
            tap_buf: vec![0; crate::forward::MAX_FRAME + port_tap::VNET_HDR_LEN],
            running: true,
            index: links.index,
            inbox: links.inbox,
            mail_wake: links.mail_wake,
            outbox: links.outbox,
            asleep: links.asleep,
            poll_ports: 0,
            adaptive_ports: 0,
            adaptive_active: false,
            mailed: 0,
            rx_hint: 0,
            sigbus_seen: vring::sigbus::hits(),
        })
    }

    pub fn run(&mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        let mut last_age = Instant::now();
        let mut last_work = Instant::now();
        let mut busy_rounds = 0u32;
        while self.running {
            // Sleep only when no queue has work left over from its last burst and we are
            // not polling. While polling busy rings, look at the fds (commands, TAPs) only
            // every EPOLL_EVERY rounds: the syscall costs more than a burst of small frames.
            let mut timeout = if self.pending.is_empty() && !self.polling && self.inbox_empty() {
                1000
            } else {
                0
            };
            if timeout > 0 {
                // Other workers wake us (mail eventfd) only when they see this flag; set it,
                // then look at the mailboxes once more, so a frame handed over just before
                // is not left waiting for the timeout.
                self.asleep.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if !self.inbox_empty() {
                    timeout = 0;
                }
            }
            busy_rounds = busy_rounds.wrapping_add(1);
            let n = if self.polling && busy_rounds % EPOLL_EVERY != 0 {
                0
            } else {
                let r = self.epoll.wait(timeout, &mut events);
                self.asleep.store(false, Ordering::Relaxed);
                match r {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                    Err(e) => {
                        tracing::error!("worker epoll failed: {e}");
                        return;
                    }
                }
            };
            for ev in &events[..n] {
                match Token::unpack(ev.data()) {
                    Some(Token::Command) => self.commands(),
                    Some(Token::Kick { port, index }) => self.kicked(port, index),
                    Some(Token::Tap { port, queue }) => self.tap_event(port, queue, ev.event_set()),
                    Some(Token::Mail) => {
                        let _ = self.mail_wake.read();
                    }
                    None => {}
                }
            }
            if self.polling {
                self.schedule_all();
            }
            let hits = vring::sigbus::hits();
            if hits != self.sigbus_seen {
                self.sigbus_seen = hits;
                self.break_truncated();
            }
            let before = self.work;
            let now = Instant::now();
            self.process_mail(now);
            self.process_pending(now);
            self.wake_mailed();
            if self.work != before {
                last_work = now;
            } else {
                // An idle round: check the fds on the next one.
                busy_rounds = EPOLL_EVERY - 1;
            }
            if self.adaptive_ports > 0 {
                self.adapt(now, last_work);
            }
            if now.duration_since(last_age).as_secs() >= 1 {
                self.fdb.age(now);
                last_age = now;
            }
        }
    }

    /// Adaptive ports: polled while traffic flows; after an idle spell their kicks are
    /// re-enabled and the worker may sleep; a kick (any event) starts polling again.
    fn adapt(&mut self, now: Instant, last_work: Instant) {
        if self.adaptive_active {
            if now.duration_since(last_work) >= ADAPTIVE_IDLE {
                self.adaptive_active = false;
                if self.set_tx_notify(true) {
                    // Work arrived while we were switching: keep polling.
                    self.adaptive_active = true;
                    self.set_tx_notify(false);
                }
            }
        } else if now.duration_since(last_work) < ADAPTIVE_IDLE {
            self.adaptive_active = true;
            self.set_tx_notify(false);
        }
        self.update_polling();
    }

    /// Whether the loop busy-polls: some port here is in poll mode, or in adaptive mode
    /// while traffic flows.
    fn update_polling(&mut self) {
        self.polling = self.poll_ports > 0 || (self.adaptive_ports > 0 && self.adaptive_active);
    }

    /// Recounts the ports by mode (after a port came or went).
    fn count_modes(&mut self) {
        let modes = self.ports.iter().flatten().map(|p| p.mode);
        self.poll_ports = modes.clone().filter(|m| *m == DatapathMode::Poll).count();
        self.adaptive_ports = modes.filter(|m| *m == DatapathMode::Adaptive).count();
        self.update_polling();
    }

    /// Whether port `p`'s txqs are polled now (their kicks off), by its mode.
    fn polled(&self, p: &Port) -> bool {
        match p.mode {
            DatapathMode::Poll => true,
            DatapathMode::Adaptive => self.adaptive_active,
            DatapathMode::Event => false,
        }
    }

    fn port_polled(&self, id: PortId) -> bool {
        self.ports
            .get(usize::from(id.0))
            .and_then(Option::as_ref)
            .is_some_and(|p| self.polled(p))
    }

    /// Turns guest tx kicks on or off on every running txq of the adaptive ports; with
    /// `on`, returns whether a txq already has work (checked after enabling, so nothing is
    /// missed).
    fn set_tx_notify(&mut self, on: bool) -> bool {
        let mut work = false;
        for p in self.ports.iter_mut().flatten() {
            if p.mode != DatapathMode::Adaptive {
                continue;
            }
            for q in p.txq.iter_mut().flatten() {
                if on {
                    work |= q.ring.enable_notify().is_ok_and(|n| n > 0);
                } else {
                    q.ring.disable_notify();
                }
            }
        }
        work
    }

    /// Polling: every running txq of a polled port gets a burst this round.
    fn schedule_all(&mut self) {
        for (i, p) in self.ports.iter().enumerate() {
            let Some(p) = p else { continue };
            if p.is_broken() || !self.polled(p) {
                continue;
            }
            for (qp, q) in p.txq.iter().enumerate() {
                if q.is_some() {
                    let id = (
                        PortId(u16::try_from(i).unwrap_or(u16::MAX)),
                        u16::try_from(qp).unwrap_or(0),
                    );
                    if !self.pending.contains(&id) {
                        self.pending.push(id);
                    }
                }
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
        } else {
            self.rx_buffers_added(id);
        }
    }

    fn schedule(&mut self, id: PortId, qp: u16) {
        if !self.pending.contains(&(id, qp)) {
            self.pending.push((id, qp));
        }
    }

    /// One burst for each pending txq; those with work left stay pending.
    fn process_pending(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let (id, qp) = self.pending[i];
            let more = self.process_tx(id, qp, now);
            if more {
                i += 1;
            } else {
                self.pending.swap_remove(i);
            }
        }
        self.flush_counters();
    }

    /// Runs one burst of txq `qp` of `id`. Returns true if more work is waiting.
    fn process_tx(&mut self, id: PortId, qp: u16, now: Instant) -> bool {
        let res = match self.txq(id, qp).map(|slot| slot.ring.refresh_avail()) {
            None => Ok(false),
            Some(Err(e)) => Err(e),
            Some(Ok(0)) if self.port_polled(id) => Ok(false),
            Some(Ok(_)) => {
                // The ring and the chains leave the worker for the burst, so frames can be
                // switched with `&mut self` while they are borrowed; both come back after.
                let vq = self
                    .port(id)
                    .and_then(|p| p.txq.get_mut(usize::from(qp)))
                    .and_then(Option::take);
                match vq {
                    Some(mut vq) => {
                        let mut chains = std::mem::take(&mut self.tx_chains);
                        self.rx_hint = qp;
                        let r = self.tx_burst(&mut vq, id, now, &mut chains);
                        self.rx_hint = 0;
                        self.tx_chains = chains;
                        if let Some(slot) =
                            self.port(id).and_then(|p| p.txq.get_mut(usize::from(qp)))
                        {
                            *slot = Some(vq);
                        }
                        r
                    }
                    None => Ok(false),
                }
            }
        };
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

    /// One burst of `vq`, a txq of port `id` taken out of it, in three passes so that the
    /// cache misses of different frames overlap instead of queueing up one after another:
    /// pop the chains (descriptor reads), read their headers (the first line of each frame),
    /// then switch each frame.
    fn tx_burst(
        &mut self,
        vq: &mut Vq,
        id: PortId,
        now: Instant,
        chains: &mut [Chain],
    ) -> Result<bool, RingError> {
        let pending = vq.ring.pending();
        let n = usize::from(pending.min(crate::BURST)).min(chains.len());
        let mut popped = 0;
        while popped < n && vq.ring.pop(&mut chains[popped])? {
            popped += 1;
        }
        let mut heads = [[0u8; HEAD_LEN]; crate::BURST as usize];
        let mut have: u64 = 0;
        for (i, (c, h)) in chains[..popped].iter().zip(heads.iter_mut()).enumerate() {
            if let Some(x) = c.read_array::<HEAD_LEN>(0) {
                *h = x;
                have |= 1 << i;
            }
        }
        for (i, c) in chains[..popped].iter().enumerate() {
            let pre = (have >> i & 1 == 1).then_some(&heads[i]);
            crate::forward::switch_frame(self, id, Src::Chain(c, 0), now, false, pre);
            vq.ring.push_used(c.head(), 0);
        }
        self.work += popped as u64;
        if vq.ring.flush_used() {
            vq.call();
        }
        if vq.ring.pending() > 0 {
            return Ok(true);
        }
        if self.port_polled(id) {
            // The next round polls this ring anyway; kicks stay off.
            return Ok(false);
        }
        let left = vq.ring.enable_notify()?;
        Ok(left > 0)
    }

    /// A frontend truncated a guest memory file (the SIGBUS handler replaced the mapping
    /// with zero pages): the ports whose rings live in it break.
    fn break_truncated(&mut self) {
        for i in 0..self.ports.len() {
            let Ok(i) = u16::try_from(i) else { break };
            let hit = self.port(PortId(i)).is_some_and(|p| {
                p.rxq
                    .iter()
                    .chain(p.txq.iter())
                    .flatten()
                    .any(|q| q.ring.mem().truncated())
            });
            if hit {
                self.break_port(PortId(i), RingError::MemoryTruncated);
            }
        }
    }

    fn inbox_empty(&self) -> bool {
        self.inbox.iter().all(|m| m.is_empty())
    }

    /// Delivers the frames other workers handed us (a bounded number per mailbox), and
    /// learns their sources: this worker's table then knows stations on ports whose
    /// queues other workers run.
    fn process_mail(&mut self, now: Instant) {
        if self.inbox.is_empty() {
            return;
        }
        let mut got = false;
        // Out of `self` while delivering needs `&mut self` (moves the Vec, no allocation).
        let mut inbox = std::mem::take(&mut self.inbox);
        for mb in &mut inbox {
            for _ in 0..4 * usize::from(crate::BURST) {
                let popped = mb.pop(|ingress, egress, bytes| {
                    crate::forward::deliver_mail(self, ingress, egress, bytes, now);
                });
                if !popped {
                    break;
                }
                got = true;
                self.work += 1;
            }
        }
        self.inbox = inbox;
        if got {
            for p in self.ports.iter_mut().flatten() {
                p.flush_rx();
            }
            self.flush_counters();
        }
    }

    /// Wakes the workers we handed frames to this round (they may be asleep in epoll).
    fn wake_mailed(&mut self) {
        if self.mailed == 0 {
            return;
        }
        // Full fence: the frames pushed must be visible before we read whether their worker
        // sleeps (it sets the flag, fences, then looks at its mailboxes: one of us sees the
        // other).
        fence(Ordering::SeqCst);
        for (i, o) in self.outbox.iter().enumerate() {
            if self.mailed & (1u64 << (i % 64)) != 0 {
                if let Some(peer) = o {
                    if peer.asleep.load(Ordering::SeqCst) {
                        // The counter cannot overflow with one write per round.
                        let _ = peer.wake.write(1);
                    }
                }
            }
        }
        self.mailed = 0;
    }

    fn txq(&mut self, id: PortId, qp: u16) -> Option<&mut Vq> {
        let p = self.port(id)?;
        if p.is_broken() {
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
                p.count_used();
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
                mode,
                shared,
                status,
            } => {
                let i = usize::from(id.0);
                if self.ports.len() <= i {
                    self.ports.resize_with(i + 1, || None);
                }
                let mut p = Port::new(name, queue_pairs, shared, status);
                p.mode = mode.unwrap_or(self.mode);
                self.ports[i] = Some(p);
                self.count_modes();
            }
            Command::AddTap {
                id,
                name,
                tap,
                read,
                shared,
                status,
            } => self.add_tap(id, name, tap, read, shared, status),
            Command::RemovePort { id, done } => {
                if let Some(p) = self.ports.get_mut(usize::from(id.0)).and_then(Option::take) {
                    self.drop_port_rings(id, p);
                }
                self.count_modes();
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
        let polled = self.port_polled(id);
        let me = self.index;
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
        p.set_features(rq.features);
        let list = if index % 2 == 0 {
            &mut p.rxq
        } else {
            &mut p.txq
        };
        let Some(slot) = list.get_mut(qp) else {
            tracing::warn!("port {name}: ring {index} beyond the configured queue pairs");
            return;
        };
        let counted = ring.next_used();
        let mut vq = Vq {
            ring,
            kick: rq.kick,
            call: rq.call,
            err: rq.err,
            index,
            counted,
        };
        if index % 2 == 0 || polled {
            // Guest rx kicks only say "more buffers", wanted only while a TAP frame waits
            // for them; tx kicks are not needed while we poll.
            vq.ring.disable_notify();
        }
        *slot = Some(vq);
        p.publish_running(me);
        tracing::info!(
            "port {name}: ring {index} started on worker {me} (size {})",
            rq.cfg.size
        );
        if let Some(fd) = epoll_fd {
            // rx kicks are watched too: they wake TAP queues waiting for rx buffers (the
            // guest sends them only while such a wait asked for them).
            let ev = EpollEvent::new(EventSet::IN, Token::Kick { port: id, index }.pack());
            if let Err(e) = self.epoll.ctl(ControlOperation::Add, fd, ev) {
                tracing::error!("port {name}: cannot watch kick fd of ring {index}: {e}");
            }
        }
        if index % 2 == 1 {
            // Process once now: kicks sent before the start are not lost, and a restarted
            // vnetd resumes what the guest queued meanwhile.
            self.schedule(id, index / 2);
        } else {
            // New rx buffers: frames held for this port can go.
            self.rx_buffers_added(id);
        }
    }

    fn stop_queue(&mut self, id: PortId, index: u16) -> Option<u16> {
        let (vq, status) = {
            let p = self.port(id)?;
            let list = if index % 2 == 0 {
                &mut p.rxq
            } else {
                &mut p.txq
            };
            (
                list.get_mut(usize::from(index / 2))?.take()?,
                p.status.clone(),
            )
        };
        let base = self.retire(vq, &status);
        self.pending
            .retain(|&(p, qp)| !(p == id && index % 2 == 1 && qp == index / 2));
        let me = self.index;
        if let Some(p) = self.port(id) {
            p.publish_running(me);
            if p.rxq.iter().chain(p.txq.iter()).all(Option::is_none) {
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

    /// Publishes what is pending on a ring (counting it), stops watching its kick and
    /// returns its base.
    fn retire(&mut self, mut vq: Vq, status: &PortStatus) -> u16 {
        if vq.ring.flush_used() {
            vq.call();
        }
        vq.count_used(status);
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
            self.retire(vq, &p.status);
        }
        if let Some(tap) = &p.tap {
            for q in &tap.queues {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    q.fd.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
        }
        self.pending.retain(|&(pid, _)| pid != id);
    }

    fn add_tap(
        &mut self,
        id: PortId,
        name: String,
        tap: port_tap::Tap,
        read: bool,
        shared: Arc<switch::SharedCounters>,
        status: Arc<crate::handle::PortStatus>,
    ) {
        let i = usize::from(id.0);
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        let mut p = Port::new(name, 1, shared, status);
        p.hdr_len = port_tap::VNET_HDR_LEN;
        p.rx_caps = virtio_net::offload::RxCaps::from_guest_features(TAP_GUEST_FEATURES);
        p.tx_caps = virtio_net::offload::TxCaps::from_guest_features(TAP_HOST_FEATURES);
        let queues: Vec<TapQueue> = tap
            .queues
            .into_iter()
            .map(|fd| TapQueue::new(fd, read))
            .collect();
        for (qi, q) in queues.iter().enumerate() {
            set_tap_interest_op(&self.epoll, id, qi, q, ControlOperation::Add);
        }
        p.status.set_running(
            self.index,
            u16::try_from(queues.len()).unwrap_or(u16::MAX),
            !queues.is_empty(),
            0,
        );
        if read {
            tracing::info!(
                "port {}: TAP {} attached with {} queue(s) on worker {}",
                p.name,
                tap.ifname,
                queues.len(),
                self.index
            );
        }
        p.tap = Some(crate::port::TapIo {
            ifname: tap.ifname,
            queues,
            gone: false,
        });
        self.ports[i] = Some(p);
    }

    fn tap_event(&mut self, id: PortId, qi: u16, ev: EventSet) {
        if ev.intersects(EventSet::ERROR | EventSet::HANG_UP) {
            self.tap_gone(id, "the device reported an error");
            return;
        }
        if ev.contains(EventSet::OUT) {
            self.tap_flush_out(id, usize::from(qi));
        }
        if ev.contains(EventSet::IN) {
            self.tap_rx(id, usize::from(qi), false);
        }
        self.flush_counters();
    }

    fn tap_queue(&mut self, id: PortId, qi: usize) -> Option<&mut TapQueue> {
        self.tap_queue_and_epoll(id, qi).map(|(q, _)| q)
    }

    fn tap_queue_and_epoll(&mut self, id: PortId, qi: usize) -> Option<(&mut TapQueue, &Epoll)> {
        let (p, epoll) = self.port_and_epoll(id)?;
        let t = p.tap.as_mut().filter(|t| !t.gone)?;
        Some((t.queues.get_mut(qi)?, epoll))
    }

    /// A port together with the epoll set (disjoint borrows of the worker).
    fn port_and_epoll(&mut self, id: PortId) -> Option<(&mut Port, &Epoll)> {
        let p = self.ports.get_mut(usize::from(id.0))?.as_mut()?;
        Some((p, &self.epoll))
    }

    /// Reads up to a burst of frames from the host and switches them. A frame whose
    /// destination has no rx buffer is held, and the queue stops reading until that
    /// guest adds buffers (its rx kick), so the host's queue, not vnetd, absorbs the burst.
    /// `kicked`: the destination just signalled new rx buffers.
    fn tap_rx(&mut self, id: PortId, qi: usize, kicked: bool) {
        let now = Instant::now();
        let mut buf = std::mem::take(&mut self.tap_buf);
        let mut force = kicked;
        for _ in 0..crate::BURST {
            // A held frame goes first; while it cannot go, nothing more is read.
            if !self.retry_held(id, qi, now, std::mem::take(&mut force)) {
                break;
            }
            let Some(q) = self.tap_queue(id, qi) else {
                break;
            };
            let n = match port_tap::sys::read(q.fd.as_raw_fd(), &mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if crate::io::is_gone(&e) {
                        self.tap_gone(id, "reading failed");
                    } else if let Some(p) = self.port(id) {
                        tracing::warn!("port {}: TAP read failed: {e}", p.name);
                    }
                    break;
                }
            };
            if let Outcome::Held(dst) =
                crate::forward::switch_frame(self, id, Src::Bytes(&buf[..n]), now, true, None)
            {
                if let Some(q) = self.tap_queue(id, qi) {
                    q.held.clear();
                    q.held.extend_from_slice(&buf[..n]);
                }
                // The next round retries it only if buffers arrived meanwhile.
                self.hold_for(id, qi, dst);
            }
        }
        self.tap_buf = buf;
        for p in self.ports.iter_mut().flatten() {
            p.flush_rx();
        }
    }

    /// Tries the held frame of a TAP queue again (when `force`d by an rx kick, or when
    /// buffers arrived while it was being parked); true if nothing is held any more.
    fn retry_held(&mut self, id: PortId, qi: usize, now: Instant, force: bool) -> bool {
        let Some(q) = self.tap_queue(id, qi) else {
            return false;
        };
        let Some(waited) = q.held_for else {
            return true;
        };
        if !force && !q.retry {
            return false;
        }
        let held = std::mem::take(&mut q.held);
        let r = crate::forward::switch_frame(self, id, Src::Bytes(&held), now, true, None);
        if let Some(q) = self.tap_queue(id, qi) {
            q.held = held;
        }
        self.unwait(waited);
        match r {
            Outcome::Done => {
                if let Some((q, epoll)) = self.tap_queue_and_epoll(id, qi) {
                    q.held_for = None;
                    q.retry = false;
                    set_tap_interest(epoll, id, qi, q);
                }
                true
            }
            Outcome::Held(dst) => {
                self.hold_for(id, qi, dst);
                false
            }
        }
    }

    /// Parks TAP queue `qi` of `id` until port `dst` has more rx buffers (its kick, with
    /// notifications enabled here). If buffers arrived between the failed attempt and
    /// enabling notifications, the queue is marked for one more try instead.
    fn hold_for(&mut self, id: PortId, qi: usize, dst: PortId) {
        let mut arrived = false;
        if let Some(p) = self.port(dst) {
            p.rx_waiters += 1;
            // Pair 0's ring: the one TAP frames are delivered to (their `rx_hint` is 0).
            if let Some(vq) = p.rx_ring_for(0) {
                let seen = vq.ring.pending();
                arrived = vq.ring.enable_notify_on_more().is_ok_and(|n| n > seen);
            }
        }
        if let Some((q, epoll)) = self.tap_queue_and_epoll(id, qi) {
            q.held_for = Some(dst);
            q.retry = arrived;
            set_tap_interest(epoll, id, qi, q);
        }
    }

    fn unwait(&mut self, dst: PortId) {
        if let Some(p) = self.port(dst) {
            p.rx_waiters = p.rx_waiters.saturating_sub(1);
            if p.rx_waiters == 0 {
                if let Some(vq) = p.rx_ring_for(0) {
                    vq.ring.disable_notify();
                }
            }
        }
    }

    /// Port `dst` has new rx buffers: retry the TAP queues waiting for it.
    fn rx_buffers_added(&mut self, dst: PortId) {
        if self.port(dst).is_none_or(|p| p.rx_waiters == 0) {
            return;
        }
        for i in 0..self.ports.len() {
            let Ok(i) = u16::try_from(i) else { break };
            let id = PortId(i);
            let mut qi = 0;
            while let Some(q) = self.tap_queue(id, qi) {
                if q.held_for == Some(dst) {
                    self.tap_rx(id, qi, true);
                }
                qi += 1;
            }
        }
    }

    /// Sends the frames that waited for the TAP fd to become writable.
    fn tap_flush_out(&mut self, id: PortId, qi: usize) {
        let mut gone = false;
        let Some((p, epoll)) = self.port_and_epoll(id) else {
            return;
        };
        let Some(t) = p.tap.as_mut() else { return };
        let Some(q) = t.queues.get_mut(qi) else {
            return;
        };
        while let Some(f) = q.out.front() {
            let iov = [libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            }];
            match crate::io::tap_writev(q.fd.as_raw_fd(), &iov) {
                Ok(_) => q.out.pop(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    gone = crate::io::is_gone(&e);
                    q.out.pop();
                    p.counters.count_drop(DropReason::TxError);
                    if gone {
                        break;
                    }
                }
            }
        }
        if q.out.is_empty() && q.out_armed {
            q.out_armed = false;
            set_tap_interest(epoll, id, qi, q);
        }
        if gone {
            self.tap_gone(id, "writing failed");
        }
    }

    /// The TAP device vanished (deleted by someone): the port goes down for good.
    pub(crate) fn tap_gone(&mut self, id: PortId, why: &str) {
        let me = self.index;
        let Some((p, epoll)) = self.port_and_epoll(id) else {
            return;
        };
        let Some(t) = p.tap.as_mut() else { return };
        if t.gone && t.queues.is_empty() {
            return; // already taken down
        }
        tracing::error!(
            "port {}: TAP device {} is gone ({why}); port down, the other ports keep running",
            p.name,
            t.ifname
        );
        t.gone = true;
        for q in t.queues.drain(..) {
            let _ = epoll.ctl(
                ControlOperation::Delete,
                q.fd.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        p.status.set_running(me, 0, false, 0);
        p.status
            .set_broken(Some(format!("TAP device {} is gone", t.ifname)));
        self.fdb.flush_port(id);
    }
}

/// What a TAP port accepts, in virtio feature terms: everything the host stack takes
/// (`virtio_net_hdr_to_skb`): partial checksums and TCP segmentation offload.
const TAP_GUEST_FEATURES: u64 = virtio_net::features::GUEST_CSUM
    | virtio_net::features::GUEST_TSO4
    | virtio_net::features::GUEST_TSO6
    | virtio_net::features::GUEST_ECN;
/// What a TAP port may send: what `TUNSETOFFLOAD` enabled.
const TAP_HOST_FEATURES: u64 = virtio_net::features::CSUM
    | virtio_net::features::HOST_TSO4
    | virtio_net::features::HOST_TSO6
    | virtio_net::features::HOST_ECN;

/// Sets what epoll reports for a TAP queue: readable unless a frame is held, writable
/// while frames wait.
pub(crate) fn set_tap_interest(epoll: &Epoll, id: PortId, qi: usize, q: &TapQueue) {
    set_tap_interest_op(epoll, id, qi, q, ControlOperation::Modify);
}

fn set_tap_interest_op(epoll: &Epoll, id: PortId, qi: usize, q: &TapQueue, op: ControlOperation) {
    let mut ev = EventSet::empty();
    if q.read && q.held_for.is_none() {
        ev |= EventSet::IN;
    }
    if q.out_armed {
        ev |= EventSet::OUT;
    }
    let token = Token::Tap {
        port: id,
        queue: u16::try_from(qi).unwrap_or(u16::MAX),
    };
    if let Err(e) = epoll.ctl(op, q.fd.as_raw_fd(), EpollEvent::new(ev, token.pack())) {
        tracing::error!("cannot update epoll interest of a TAP queue: {e}");
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
            Token::Tap {
                port: PortId(3),
                queue: 1,
            },
            Token::Mail,
        ] {
            assert_eq!(Token::unpack(t.pack()), Some(t));
        }
        assert_eq!(Token::unpack(5 << 32), None);
    }
}
