//! The worker thread: the event loop, its modes (event, poll, adaptive) and commands.
//! Tx bursts and ring lifecycle are in `rings`, TAP events in `tap`; both hand frames to
//! `forward` and apply what it reports.

mod rings;
mod tap;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vring::DeviceRing;

use switch::Fdb;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::command::{Command, PortRules};
use crate::forward::{Ctx, Followup, Scratch};
use crate::links::{Links, Outbox};
use crate::mailbox::Receiver as MailReceiver;
use crate::port::tap::TapQueue;
use crate::port::{self, Port};
use crate::types::{DatapathConfig, DatapathMode, FdbRow, PortId, BURST, MAX_FRAME};

/// While polling, the fds are checked every this many rounds, and no more often than
/// [`EPOLL_GAP`]: the system call costs more than a burst of small frames, and a frame
/// that arrives while it runs waits for it (measured on 2026-12-06: with the fds checked
/// after every idle round, a one-frame ping-pong took 1.8 us at p50; 1.6 without).
const EPOLL_EVERY: u32 = 32;
/// See [`EPOLL_EVERY`]: commands, TAP events and kicks wait at most about this long
/// (plus a round) while the worker polls.
const EPOLL_GAP: Duration = Duration::from_micros(20);
/// Busy rounds between two publications of the ports' counters (see `Worker::round_done`).
const FLUSH_EVERY: u32 = 16;

/// Adaptive mode goes back to sleeping on kicks after this long without a frame.
const ADAPTIVE_IDLE: Duration = Duration::from_micros(200);

/// The time of one round of the loop, read once and only when something needs it (a
/// frame, a timer, a polled TAP, adaptive mode, or every [`EPOLL_EVERY`] rounds): in a VM
/// a clock read costs as much as the rest of an idle polling round (a quarter of a polling
/// worker's time went to `clock_gettime` while it waited for a one-frame ping-pong).
#[derive(Default)]
pub(super) struct Clock(Option<Instant>);

impl Clock {
    /// The round's time, read now if nothing read it yet.
    pub fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }

    /// The round's time if something read it.
    fn read(&self) -> Option<Instant> {
        self.0
    }
}

/// What an epoll event is about, packed into its u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
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
        let port = PortId(((v >> 16) & 0xffff) as u16);
        let low = (v & 0xffff) as u16;
        match v >> 32 {
            0 => Some(Token::Command),
            1 => Some(Token::Kick { port, index: low }),
            2 => Some(Token::Tap { port, queue: low }),
            3 => Some(Token::Mail),
            _ => None,
        }
    }
}

/// What forwarding works on: lent to `forward` as a [`Ctx`] for each frame.
struct Switching {
    ports: Vec<Option<Port>>,
    fdb: Fdb<PortId>,
    scratch: Scratch,
    outbox: Outbox,
    followups: Vec<Followup>,
}

impl Switching {
    fn ctx(&mut self) -> Ctx<'_> {
        self.ctx_burst(&[])
    }

    /// The context of a tx burst of `burst`'s chains.
    fn ctx_burst<'a>(&'a mut self, burst: &'a [vring::Chain]) -> Ctx<'a> {
        Ctx {
            ports: &mut self.ports,
            fdb: &mut self.fdb,
            scratch: &mut self.scratch,
            outbox: &mut self.outbox,
            followups: &mut self.followups,
            burst,
        }
    }

    fn port(&mut self, id: PortId) -> Option<&mut Port> {
        port::find_mut(&mut self.ports, id)
    }

    /// TAP queue `qi` of port `id`, unless the device is gone.
    fn tap_queue(&mut self, id: PortId, qi: usize) -> Option<&mut TapQueue> {
        let t = self.port(id)?.tap_mut().filter(|t| !t.gone)?;
        t.queues.get_mut(qi)
    }

    /// Flushes every port's dirty rxqs (once per burst).
    fn flush_rx(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            p.flush_rx();
        }
    }
}

pub(crate) struct Worker {
    epoll: Epoll,
    cmds: Receiver<Command>,
    wake: Arc<EventFd>,
    sw: Switching,
    /// Ports with a txq to process: (port, queue pair).
    pending: Vec<(PortId, u16)>,
    /// How this worker waits for work.
    mode: DatapathMode,
    /// Polling right now (always in poll mode, while traffic flows in adaptive mode).
    polling: bool,
    /// Frames taken from txqs so far (to see whether a round did anything).
    work: u64,
    /// Rounds since the ports' counters were last published.
    unflushed: u32,
    /// A busy round came since then.
    unflushed_busy: bool,
    /// Where frames read from a TAP fd land.
    tap_buf: Vec<u8>,
    running: bool,
    /// This worker's index in the datapath.
    index: usize,
    /// Frames from other workers, and the eventfd they write to wake us.
    inbox: Vec<MailReceiver>,
    mail_wake: Arc<EventFd>,
    /// Set while this worker sleeps in epoll (other workers then write `mail_wake`).
    asleep: Arc<AtomicBool>,
    /// Sleep time and FDB size, for metrics.
    stats: Arc<crate::types::WorkerStats>,
    /// Ports here in poll and in adaptive mode.
    poll_ports: usize,
    adaptive_ports: usize,
    /// Adaptive ports are being polled (traffic flowed recently).
    adaptive_active: bool,
    /// [`vring::sigbus::hits`] as of the last look.
    sigbus_seen: u64,
    /// Txqs over their port's ingress rate, and when to serve them again.
    throttled: Vec<(PortId, u16, Instant)>,
    /// A frame from a TAP waits at most this long for its guest's rx buffers, then is
    /// dropped and the queue reads on (one guest that stops refilling blocks no one).
    tap_hold: Duration,
    /// TAP queues holding a frame for a guest without rx buffers: (port, queue).
    holds: Vec<(PortId, usize)>,
    /// TAP queues read every round instead of through epoll (see `TapQueue::polled`),
    /// with when each last had a frame.
    tap_polled: Vec<(PortId, usize, Instant)>,
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
            sw: Switching {
                ports: Vec::new(),
                fdb: Fdb::new(cfg.fdb_capacity, cfg.fdb_aging),
                scratch: Scratch::new(),
                outbox: Outbox::new(links.index, links.peers),
                followups: Vec::with_capacity(64),
            },
            pending: Vec::with_capacity(256),
            mode: cfg.mode,
            tap_hold: cfg.tap_hold,
            polling: false,
            work: 0,
            unflushed: 0,
            unflushed_busy: false,
            tap_buf: vec![0; MAX_FRAME + port_tap::VNET_HDR_LEN],
            running: true,
            index: links.index,
            inbox: links.inbox,
            mail_wake: links.mail_wake,
            asleep: links.asleep,
            stats: links.stats,
            poll_ports: 0,
            adaptive_ports: 0,
            adaptive_active: false,
            sigbus_seen: vring::sigbus::hits(),
            throttled: Vec::with_capacity(64),
            holds: Vec::with_capacity(64),
            tap_polled: Vec::with_capacity(64),
        })
    }

    pub fn run(&mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        let mut last_age = Instant::now();
        let mut last_work = Instant::now();
        let mut busy_rounds = 0u32;
        // When the fds were last checked while polling.
        let mut last_epoll = Instant::now();
        while self.running {
            busy_rounds = busy_rounds.wrapping_add(1);
            if self.polling && busy_rounds % EPOLL_EVERY != 0 && self.nothing_to_poll() {
                // Only this look until a ring has a frame (or the fds are due): the next
                // frame is seen a full round sooner.
                continue;
            }
            // Sleep only when no queue has work left over from its last burst and we are
            // not polling. While polling busy rings, look at the fds (commands, TAPs) only
            // every EPOLL_EVERY rounds: the syscall costs more than a burst of small frames.
            let mut timeout = if self.pending.is_empty()
                && self.tap_polled.is_empty()
                && !self.polling
                && self.inbox_empty()
            {
                1000
            } else {
                0
            };
            if timeout > 0 && !(self.throttled.is_empty() && self.holds.is_empty()) {
                timeout = timeout.min(self.next_timer_ms(Instant::now()));
            }
            if timeout > 0 {
                // Counters of the last busy rounds are published before sleeping.
                self.flush_counters();
                // Other workers wake us (mail eventfd) only when they see this flag; set it,
                // then look at the mailboxes once more, so a frame handed over just before
                // is not left waiting for the timeout.
                self.asleep.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if !self.inbox_empty() {
                    timeout = 0;
                }
            }
            let mut clock = Clock::default();
            let n = if self.polling
                && (busy_rounds % EPOLL_EVERY != 0
                    || clock.now().saturating_duration_since(last_epoll) < EPOLL_GAP)
            {
                0
            } else {
                if self.polling {
                    last_epoll = clock.now();
                }
                // Sleep is timed only when the wait may sleep: polling rounds read no clock.
                let t0 = (timeout != 0).then(Instant::now);
                let r = self.epoll.wait(timeout, &mut events);
                if let Some(t0) = t0 {
                    let now = Instant::now();
                    let ns = u64::try_from(now.duration_since(t0).as_nanos()).unwrap_or(u64::MAX);
                    self.stats.sleep_ns.fetch_add(ns, Ordering::Relaxed);
                    // The round starts after the sleep (and ages the table, below).
                    clock = Clock(Some(now));
                }
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
                    Some(Token::Kick { port, index }) => self.kicked(port, index, ev.event_set()),
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
            self.timers(&mut clock);
            self.process_mail(&mut clock);
            self.process_polled_taps(&mut clock);
            self.process_pending(&mut clock);
            self.sw.outbox.wake_mailed();
            self.round_done(self.work != before);
            if self.work != before {
                last_work = clock.now();
            } else if !self.polling {
                // An idle round: check the fds on the next one.
                busy_rounds = EPOLL_EVERY - 1;
            }
            // Adaptive mode looks at the time when the round read it anyway (frames came, or
            // the fds are due): often enough for its 200 us idle threshold.
            if let (true, Some(now)) = (self.adaptive_ports > 0, clock.read()) {
                self.adapt(now, last_work);
            }
            if let Some(now) = clock.read() {
                if now.duration_since(last_age).as_secs() >= 1 {
                    self.sw.fdb.age(now);
                    last_age = now;
                }
            }
        }
    }

    /// Milliseconds until the earliest throttled txq may go again or a held TAP frame
    /// times out (1000 when none).
    fn next_timer_ms(&self, now: Instant) -> i32 {
        let mut next = Duration::from_secs(1);
        for &(_, _, until) in &self.throttled {
            next = next.min(until.saturating_duration_since(now));
        }
        if !self.holds.is_empty() {
            next = next.min(self.tap_hold);
        }
        // Round up: waking before the bucket has refilled would only sleep again.
        i32::try_from(next.as_micros().div_ceil(1000)).unwrap_or(1000)
    }

    /// Throttled txqs whose time came are served again; TAP frames held too long for a
    /// guest without rx buffers are dropped.
    fn timers(&mut self, clock: &mut Clock) {
        if self.throttled.is_empty() && self.holds.is_empty() {
            return;
        }
        let now = clock.now();
        let mut i = 0;
        while i < self.throttled.len() {
            let (id, qp, until) = self.throttled[i];
            if until <= now {
                self.throttled.swap_remove(i);
                self.schedule(id, qp);
            } else {
                i += 1;
            }
        }
        if !self.holds.is_empty() {
            self.expire_holds(now);
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

    /// Polling, with nothing to do but look at the rings: no txq of a polled port has a
    /// chain waiting, and nothing else is pending (no burst left over, no polled TAP, no
    /// timer, no mail, no counters to publish). A handful of loads, where a full round
    /// costs about 300 instructions (callgrind, 2026-12-06): a one-frame ping-pong waits
    /// for the polling loop at both crossings.
    fn nothing_to_poll(&self) -> bool {
        let quiet = self.pending.is_empty()
            && self.tap_polled.is_empty()
            && self.throttled.is_empty()
            && self.holds.is_empty()
            && !self.unflushed_busy
            && self.inbox_empty();
        quiet
            && !self.sw.ports.iter().flatten().any(|p| {
                self.polled(p)
                    && p.vhost_ref()
                        .is_some_and(|v| v.txq.iter().flatten().any(|q| q.ring.peek()))
            })
    }

    /// Whether the loop busy-polls: some port here is in poll mode, or in adaptive mode
    /// while traffic flows.
    fn update_polling(&mut self) {
        self.polling = self.poll_ports > 0 || (self.adaptive_ports > 0 && self.adaptive_active);
    }

    /// Recounts the ports by mode (after a port came or went).
    fn count_modes(&mut self) {
        let modes = self.sw.ports.iter().flatten().map(|p| p.mode);
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
        port::find(&self.sw.ports, id).is_some_and(|p| self.polled(p))
    }

    /// Turns guest tx kicks on or off on every running txq of the adaptive ports; with
    /// `on`, returns whether a txq already has work (checked after enabling, so nothing is
    /// missed).
    fn set_tx_notify(&mut self, on: bool) -> bool {
        let mut work = false;
        for p in self.sw.ports.iter_mut().flatten() {
            if p.mode != DatapathMode::Adaptive {
                continue;
            }
            let Some(v) = p.vhost_mut() else { continue };
            for q in v.txq.iter_mut().flatten() {
                q.kicks_armed = on;
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
        for (i, p) in self.sw.ports.iter().enumerate() {
            let Some(p) = p else { continue };
            if p.is_broken() || !self.polled(p) {
                continue;
            }
            let Some(v) = p.vhost_ref() else { continue };
            for (qp, q) in v.txq.iter().enumerate() {
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

    fn kicked(&mut self, id: PortId, index: u16, ev: EventSet) {
        let Some(q) = self
            .sw
            .port(id)
            .and_then(Port::vhost_mut)
            .and_then(|v| v.vq(index))
        else {
            return;
        };
        if let Some(k) = &mut q.kick {
            // Non-blocking (port-vhost only accepts eventfds and makes them so): empty
            // means someone else read the count, which is harmless.
            let mut b = [0u8; 8];
            let dead = match k.read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            } || ev.intersects(EventSet::ERROR | EventSet::HANG_UP);
            if dead {
                // Never the case for an eventfd; whatever it is, it must not spin us.
                self.kick_gone(id, index);
                return;
            }
        }
        if index % 2 == 1 {
            self.schedule(id, index / 2);
        } else {
            self.rx_buffers_added(id);
        }
    }

    /// A kick fd hung up or failed: it is no longer watched and the port is marked broken
    /// (its ring cannot be woken any more); the frontend recovers it by restarting its rings.
    fn kick_gone(&mut self, id: PortId, index: u16) {
        let Some(p) = self.sw.port(id) else { return };
        if let Some(k) = p
            .vhost_mut()
            .and_then(|v| v.vq(index))
            .and_then(|q| q.kick.take())
        {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                k.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        self.break_port(id, &vring::RingError::KickGone);
    }

    fn schedule(&mut self, id: PortId, qp: u16) {
        if !self.pending.contains(&(id, qp)) {
            self.pending.push((id, qp));
        }
    }

    fn inbox_empty(&self) -> bool {
        self.inbox.iter().all(|m| m.is_empty())
    }

    /// Delivers the frames other workers handed us (a bounded number per mailbox), and
    /// learns their sources: this worker's table then knows stations on ports whose
    /// queues other workers run.
    fn process_mail(&mut self, clock: &mut Clock) {
        if self.inbox_empty() {
            return;
        }
        let now = clock.now();
        let mut got = false;
        for mb in &mut self.inbox {
            for _ in 0..4 * usize::from(BURST) {
                let sw = &mut self.sw;
                let popped = mb.pop(|ingress, egress, bytes| {
                    crate::forward::deliver_mail(&mut sw.ctx(), ingress, egress, bytes, now);
                });
                if !popped {
                    break;
                }
                got = true;
                self.work += 1;
            }
        }
        if got {
            self.sw.flush_rx();
            self.followups();
            self.flush_counters();
        }
    }

    /// Applies what forwarding reported.
    fn followups(&mut self) {
        while let Some(f) = self.sw.followups.pop() {
            match f {
                Followup::TapGone(id) => self.tap_gone(id, "a write failed"),
                Followup::TapWritable { port, queue } => self.set_tap_interest(port, queue),
            }
        }
    }

    fn flush_counters(&mut self) {
        self.unflushed = 0;
        self.unflushed_busy = false;
        let fdb = u64::try_from(self.sw.fdb.len()).unwrap_or(u64::MAX);
        self.stats.fdb_entries.store(fdb, Ordering::Relaxed);
        for p in self.sw.ports.iter_mut().flatten() {
            p.flush_counters();
        }
    }

    /// Publishes the ports' counters at the first idle round after busy ones, and every
    /// [`FLUSH_EVERY`] rounds (walking every port's counters costs about as much as
    /// switching a dozen small frames: once per round it was 15 instructions a frame, and
    /// 8 % of a polling worker's time while it waited for a one-frame ping-pong). A worker
    /// about to sleep publishes them first.
    fn round_done(&mut self, busy: bool) {
        self.unflushed += 1;
        self.unflushed_busy |= busy;
        if (!busy && self.unflushed_busy) || self.unflushed >= FLUSH_EVERY {
            self.flush_counters();
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
                rules,
                shared,
                status,
            } => {
                let mode = mode.unwrap_or(self.mode);
                let PortRules {
                    policy,
                    statics,
                    max_macs,
                } = *rules;
                let p = Port::vhost(name, queue_pairs, mode, policy, shared, status);
                self.insert_port(id, p);
                self.fdb_rules(id, &statics, max_macs);
                self.count_modes();
            }
            Command::AddTap {
                id,
                name,
                tap,
                rings,
                read,
                rules,
                shared,
                status,
            } => {
                let PortRules {
                    policy,
                    statics,
                    max_macs,
                } = *rules;
                let p = Port::tap(name, tap, rings, read, policy, shared, status);
                self.add_tap(id, p);
                self.fdb_rules(id, &statics, max_macs);
            }
            Command::Capture { id, sink } => {
                if let Some(p) = self.sw.port(id) {
                    p.capture = sink;
                }
            }
            Command::SetRules { id, rules } => {
                let PortRules {
                    policy,
                    statics,
                    max_macs,
                } = *rules;
                if let Some(p) = self.sw.port(id) {
                    *p.policy = policy;
                    self.sw.fdb.forget_port(id);
                    self.fdb_rules(id, &statics, max_macs);
                }
            }
            Command::RemovePort { id, done } => {
                self.release_holds_for(id);
                let own: Vec<(PortId, usize)> =
                    self.holds.iter().copied().filter(|h| h.0 == id).collect();
                for (port, qi) in own {
                    self.drop_held(port, qi, switch::DropReason::PortDown);
                }
                if let Some(p) = self
                    .sw
                    .ports
                    .get_mut(usize::from(id.0))
                    .and_then(Option::take)
                {
                    self.drop_port(id, p);
                }
                self.count_modes();
                self.sw.fdb.forget_port(id);
                let _ = done.send(());
            }
            Command::StartQueue { id, q } => self.start_queue(id, *q),
            Command::StopQueue { id, index, reply } => {
                let _ = reply.send(self.stop_queue(id, index));
            }
            Command::SetCall { id, index, call } => {
                if let Some(q) = self
                    .sw
                    .port(id)
                    .and_then(Port::vhost_mut)
                    .and_then(|v| v.vq(index))
                {
                    q.call = call;
                }
            }
            Command::Lockdown { apply, done } => {
                let _ = done.send(apply());
            }
            Command::Fdb { reply } => {
                let now = Instant::now();
                let ports = &self.sw.ports;
                let rows = self
                    .sw
                    .fdb
                    .entries(now)
                    .map(|e| FdbRow {
                        mac: e.mac,
                        vlan: e.vlan,
                        port: port::find(ports, e.port)
                            .map(|p| p.name.clone())
                            .unwrap_or_default(),
                        age: e.age,
                        fixed: e.fixed,
                    })
                    .collect();
                let _ = reply.send(rows);
            }
            Command::Shutdown => self.running = false,
        }
    }

    /// The port's static addresses and learning limit in this worker's table.
    fn fdb_rules(&mut self, id: PortId, statics: &[(switch::MacAddr, u16)], max: Option<u32>) {
        if let Some(max) = max {
            self.sw.fdb.set_port_limit(id, max);
        }
        for &(mac, vlan) in statics {
            if let Err(e) = self.sw.fdb.add_static(mac, vlan, id) {
                tracing::error!("port {}: static address {mac} on VLAN {vlan}: {e}", id.0);
            }
        }
    }

    fn insert_port(&mut self, id: PortId, p: Port) {
        let i = usize::from(id.0);
        if self.sw.ports.len() <= i {
            self.sw.ports.resize_with(i + 1, || None);
        }
        self.sw.ports[i] = Some(p);
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
