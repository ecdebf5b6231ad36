//! The control plane's side of a worker: commands in, counters and status out.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use port_vhost::{QueueControl, ReadyQueue};
use switch::SharedCounters;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::mailbox::{mailbox, Receiver as MailReceiver, Sender as MailSender};
use crate::port::PortId;
use crate::worker::Worker;

/// How a worker waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatapathMode {
    /// Sleep in epoll on the guests' kicks: no CPU when idle (the default).
    #[default]
    Event,
    /// Busy-poll every ring, guests' kicks off: lowest latency, one core at 100 %.
    Poll,
    /// Poll while traffic flows, sleep on kicks after an idle spell.
    Adaptive,
}

impl std::fmt::Display for DatapathMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatapathMode::Event => "event",
            DatapathMode::Poll => "poll",
            DatapathMode::Adaptive => "adaptive",
        })
    }
}

impl std::str::FromStr for DatapathMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "event" => Ok(DatapathMode::Event),
            "poll" => Ok(DatapathMode::Poll),
            "adaptive" => Ok(DatapathMode::Adaptive),
            _ => Err(format!(
                "unknown datapath mode `{s}` (expected event, poll or adaptive)"
            )),
        }
    }
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// How the worker waits for work.
    pub mode: DatapathMode,
    /// Forwarding database entries.
    pub fdb_capacity: usize,
    /// How long an unrefreshed FDB entry lives.
    pub fdb_aging: Duration,
    /// Worker threads (1..=[`MAX_WORKERS`]); ports and queue pairs are spread over them.
    pub workers: usize,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            mode: DatapathMode::Event,
            fdb_capacity: 4096,
            fdb_aging: switch::DEFAULT_AGING_TIME,
            workers: 1,
        }
    }
}

/// Most workers a datapath runs (one bit each in [`PortStatus`]'s rx map).
pub const MAX_WORKERS: usize = 64;

/// What the control plane (and the other workers) can see of a port without asking the
/// workers that run its rings.
#[derive(Debug, Default)]
pub struct PortStatus {
    /// Rings (or TAP queues) each worker runs for this port.
    running: Vec<AtomicU16>,
    /// Bit `w`: worker `w` runs an rxq of this port (or can write to its TAP).
    rx_workers: AtomicU64,
    broken: AtomicBool,
    broken_reason: Mutex<Option<String>>,
    features: AtomicU64,
    /// Used entries the device returned on each ring (index as in vhost-user: rxq `2p`,
    /// txq `2p + 1`), added by the worker running the ring once per burst.
    ring_used: Vec<AtomicU64>,
}

impl PortStatus {
    pub(crate) fn new(workers: usize, rings: usize) -> PortStatus {
        PortStatus {
            running: (0..workers.max(1)).map(|_| AtomicU16::new(0)).collect(),
            ring_used: (0..rings).map(|_| AtomicU64::new(0)).collect(),
            ..PortStatus::default()
        }
    }

    /// Used entries returned on each ring since the port was added: rxq `2p` (buffers
    /// filled for the guest), txq `2p + 1` (frames taken from the guest). Empty for TAP
    /// ports.
    pub fn ring_used(&self) -> Vec<u64> {
        self.ring_used
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    pub(crate) fn add_ring_used(&self, index: u16, n: u64) {
        if let Some(c) = self.ring_used.get(usize::from(index)) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Rings currently processed, over all workers.
    pub fn running_queues(&self) -> u16 {
        self.running
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .fold(0u16, u16::saturating_add)
    }

    /// Workers that can deliver frames to this port (bit per worker).
    pub(crate) fn rx_workers(&self) -> u64 {
        self.rx_workers.load(Ordering::Relaxed)
    }

    /// Whether any worker marked the port broken (checked by the others every burst).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Worker `worker` now runs `n` rings of this port, `rx` of them rxqs (or TAP queues).
    pub(crate) fn set_running(&self, worker: usize, n: u16, rx: bool, features: u64) {
        if let Some(c) = self.running.get(worker) {
            c.store(n, Ordering::Relaxed);
        }
        let bit = 1u64 << (worker % MAX_WORKERS);
        if rx {
            self.rx_workers.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.rx_workers.fetch_and(!bit, Ordering::Relaxed);
        }
        if n > 0 {
            self.features.store(features, Ordering::Relaxed);
        } else if self.running_queues() == 0 {
            self.features.store(0, Ordering::Relaxed);
        }
    }

    /// Why the port is broken, if it is.
    pub fn broken_reason(&self) -> Option<String> {
        if !self.broken.load(Ordering::Acquire) {
            return None;
        }
        self.broken_reason.lock().ok().and_then(|g| g.clone())
    }

    /// Negotiated features of the running rings (0 when none runs).
    pub fn features(&self) -> u64 {
        self.features.load(Ordering::Relaxed)
    }

    pub(crate) fn set_broken(&self, reason: Option<String>) {
        // Off the hot path: only when a port breaks or restarts.
        if let Ok(mut g) = self.broken_reason.lock() {
            self.broken.store(reason.is_some(), Ordering::Release);
            *g = reason;
        }
    }
}

/// An FDB entry as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbRow {
    /// Station MAC.
    pub mac: [u8; 6],
    /// VLAN.
    pub vlan: u16,
    /// Port name.
    pub port: String,
    /// Seconds since last seen.
    pub age: Duration,
}

pub(crate) enum Command {
    AddPort {
        id: PortId,
        name: String,
        queue_pairs: u16,
        /// The port's own datapath mode (None: the worker's).
        mode: Option<DatapathMode>,
        shared: Arc<SharedCounters>,
        status: Arc<PortStatus>,
    },
    AddTap {
        id: PortId,
        name: String,
        tap: port_tap::Tap,
        /// The worker reads these queues (else it only writes to the first one).
        read: bool,
        shared: Arc<SharedCounters>,
        status: Arc<PortStatus>,
    },
    RemovePort {
        id: PortId,
        done: SyncSender<()>,
    },
    StartQueue {
        id: PortId,
        q: Box<ReadyQueue>,
    },
    StopQueue {
        id: PortId,
        index: u16,
        reply: SyncSender<Option<u16>>,
    },
    SetCall {
        id: PortId,
        index: u16,
        call: Option<std::fs::File>,
    },
    Fdb {
        reply: SyncSender<Vec<FdbRow>>,
    },
    Shutdown,
}

/// Commands plus the eventfd that wakes the worker to read them.
#[derive(Clone)]
pub(crate) struct CommandTx {
    tx: Sender<Command>,
    wake: Arc<EventFd>,
}

impl std::fmt::Debug for CommandTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandTx")
    }
}

impl CommandTx {
    fn send(&self, c: Command) -> bool {
        if self.tx.send(c).is_err() {
            return false;
        }
        // The eventfd counter cannot overflow with one write per command.
        let _ = self.wake.write(1);
        true
    }
}

/// The datapath: its worker threads.
///
/// Ports are spread over the workers: every worker knows every port (its counters, status
/// and offloads), and runs the rings of some of its queue pairs: pair `q` of port `p` runs
/// on worker `(p + q) % workers`, so a multiqueue guest's pairs are served by different
/// workers. A worker delivers a frame into a port's rxq it runs itself, or, when it runs
/// none of that port's rxqs, hands the frame to a worker that does (see `mailbox`).
/// TAP queues are spread the same way; every worker may write to a TAP.
#[derive(Debug)]
pub struct Datapath {
    workers: Vec<WorkerHandle>,
    next_id: u16,
}

#[derive(Debug)]
struct WorkerHandle {
    cmd: CommandTx,
    thread: Option<JoinHandle<()>>,
}

/// The control plane's handle on one port of a worker.
#[derive(Debug, Clone)]
pub struct PortHandle {
    /// Datapath-wide port id.
    pub id: PortId,
    /// Port name.
    pub name: String,
    /// Counters the workers flush each burst.
    pub counters: Arc<SharedCounters>,
    /// Status the workers update.
    pub status: Arc<PortStatus>,
}

/// What one worker is wired to: its commands, and the mailboxes to and from the others.
pub(crate) struct Links {
    pub index: usize,
    pub cmds: Receiver<Command>,
    pub wake: Arc<EventFd>,
    /// Frames other workers hand to this one, and the eventfd they write when they do.
    pub inbox: Vec<MailReceiver>,
    pub mail_wake: Arc<EventFd>,
    /// Set while this worker sleeps in epoll.
    pub asleep: Arc<AtomicBool>,
    /// By worker index: how to hand frames to it (None for this worker).
    pub outbox: Vec<Option<Peer>>,
}

/// Another worker as one that hands it frames sees it.
pub(crate) struct Peer {
    pub mailbox: MailSender,
    /// Its mail eventfd, written to wake it...
    pub wake: Arc<EventFd>,
    /// ...only while it sleeps.
    pub asleep: Arc<AtomicBool>,
}

/// Bytes of each worker-to-worker mailbox: room for a few hundred large frames.
const MAILBOX_BYTES: usize = 4 << 20;

impl Datapath {
    /// Starts the worker threads.
    pub fn spawn(cfg: DatapathConfig) -> io::Result<Datapath> {
        let n = cfg.workers;
        if !(1..=MAX_WORKERS).contains(&n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("workers = {n}: must be in 1..={MAX_WORKERS}"),
            ));
        }
        let mail_wakes: Vec<Arc<EventFd>> = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<io::Result<_>>()?;
        let asleep: Vec<Arc<AtomicBool>> =
            (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect();
        // senders[from][to] and receivers[to][from]: one mailbox per ordered pair.
        let mut senders: Vec<Vec<Option<MailSender>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut receivers: Vec<Vec<MailReceiver>> = (0..n).map(|_| Vec::new()).collect();
        for (from, row) in senders.iter_mut().enumerate() {
            for (to, slot) in row.iter_mut().enumerate() {
                if from != to {
                    let (tx, rx) = mailbox(MAILBOX_BYTES);
                    *slot = Some(tx);
                    receivers[to].push(rx);
                }
            }
        }
        let mut workers = Vec::with_capacity(n);
        for (index, (outgoing, inbox)) in senders.into_iter().zip(receivers).enumerate() {
            let wake = Arc::new(EventFd::new(EFD_NONBLOCK)?);
            let (tx, rx): (Sender<Command>, Receiver<Command>) = mpsc::channel();
            let links = Links {
                index,
                cmds: rx,
                wake: wake.clone(),
                inbox,
                mail_wake: mail_wakes[index].clone(),
                asleep: asleep[index].clone(),
                outbox: outgoing
                    .into_iter()
                    .enumerate()
                    .map(|(to, sender)| {
                        sender.map(|mailbox| Peer {
                            mailbox,
                            wake: mail_wakes[to].clone(),
                            asleep: asleep[to].clone(),
                        })
                    })
                    .collect(),
            };
            let (ready_tx, ready) = mpsc::sync_channel(1);
            let wcfg = cfg.clone();
            // The worker is built on its own thread: its buffers never cross threads.
            let thread = std::thread::Builder::new()
                .name(format!("vnet-worker{index}"))
                .spawn(move || match Worker::new(wcfg, links) {
                    Ok(mut w) => {
                        let _ = ready_tx.send(Ok(()));
                        w.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })?;
            ready
                .recv()
                .map_err(|_| io::Error::other("worker thread died while starting"))??;
            workers.push(WorkerHandle {
                cmd: CommandTx { tx, wake },
                thread: Some(thread),
            });
        }
        Ok(Datapath {
            workers,
            next_id: 0,
        })
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The worker that runs queue pair `qp` of port `id`.
    fn worker_of(&self, id: PortId, qp: u16) -> usize {
        worker_of(id, qp, self.workers.len())
    }

    /// Adds a port (no rings yet), served in `mode` (None: the datapath's mode).
    pub fn add_port(
        &mut self,
        name: &str,
        queue_pairs: u16,
        mode: Option<DatapathMode>,
    ) -> PortHandle {
        let h = self.new_handle(name, 2 * usize::from(queue_pairs.max(1)));
        for w in &self.workers {
            w.cmd.send(Command::AddPort {
                id: h.id,
                name: name.to_string(),
                queue_pairs,
                mode,
                shared: h.counters.clone(),
                status: h.status.clone(),
            });
        }
        h
    }

    /// Adds a TAP port: the workers read and write its fds from now on (queue `q` is read
    /// by worker `(port + q) % workers`; a worker reading none writes to the first queue).
    pub fn add_tap_port(&mut self, name: &str, tap: port_tap::Tap) -> io::Result<PortHandle> {
        let h = self.new_handle(name, 0);
        let n = self.workers.len();
        let mut split: Vec<Vec<std::fs::File>> = (0..n).map(|_| Vec::new()).collect();
        let first = match tap.queues.first() {
            Some(f) => Some(f.try_clone()?),
            None => None,
        };
        for (q, fd) in tap.queues.into_iter().enumerate() {
            let qp = u16::try_from(q).unwrap_or(u16::MAX);
            split[self.worker_of(h.id, qp)].push(fd);
        }
        for (w, fds) in self.workers.iter().zip(split) {
            let read = !fds.is_empty();
            let queues = if read {
                fds
            } else {
                match &first {
                    Some(f) => vec![f.try_clone()?],
                    None => Vec::new(),
                }
            };
            w.cmd.send(Command::AddTap {
                id: h.id,
                name: name.to_string(),
                tap: port_tap::Tap {
                    ifname: tap.ifname.clone(),
                    queues,
                    offloads: tap.offloads,
                },
                read,
                shared: h.counters.clone(),
                status: h.status.clone(),
            });
        }
        Ok(h)
    }

    fn new_handle(&mut self, name: &str, rings: usize) -> PortHandle {
        let id = PortId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        PortHandle {
            id,
            name: name.to_string(),
            counters: Arc::new(SharedCounters::new()),
            status: Arc::new(PortStatus::new(self.workers.len(), rings)),
        }
    }

    /// Removes a port, stopping its rings; returns once every worker let go of it.
    pub fn remove_port(&self, id: PortId) {
        for w in &self.workers {
            let (done, wait) = mpsc::sync_channel(1);
            if w.cmd.send(Command::RemovePort { id, done }) {
                let _ = wait.recv();
            }
        }
    }

    /// The [`QueueControl`] a port's vhost-user handler uses.
    pub fn vhost_queues(&self, id: PortId) -> VhostQueues {
        VhostQueues {
            id,
            cmds: self.workers.iter().map(|w| w.cmd.clone()).collect(),
        }
    }

    /// The forwarding database: each worker's entries, merged (the youngest entry of an
    /// address wins).
    pub fn fdb(&self) -> Vec<FdbRow> {
        let mut rows: Vec<FdbRow> = Vec::new();
        for w in &self.workers {
            let (reply, wait) = mpsc::sync_channel(1);
            if !w.cmd.send(Command::Fdb { reply }) {
                continue;
            }
            for r in wait.recv().unwrap_or_default() {
                match rows.iter_mut().find(|x| x.mac == r.mac && x.vlan == r.vlan) {
                    Some(x) if r.age < x.age => *x = r,
                    Some(_) => {}
                    None => rows.push(r),
                }
            }
        }
        rows
    }
}

/// The worker that runs queue pair `qp` of port `id` among `n`.
pub(crate) fn worker_of(id: PortId, qp: u16, n: usize) -> usize {
    (usize::from(id.0) + usize::from(qp)) % n.max(1)
}

impl Drop for Datapath {
    fn drop(&mut self) {
        for w in &self.workers {
            w.cmd.send(Command::Shutdown);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Forwards a vhost-user handler's ring starts and stops to the worker of each ring.
#[derive(Debug)]
pub struct VhostQueues {
    id: PortId,
    cmds: Vec<CommandTx>,
}

impl VhostQueues {
    fn cmd(&self, index: u16) -> Option<&CommandTx> {
        self.cmds
            .get(worker_of(self.id, index / 2, self.cmds.len()))
    }
}

impl QueueControl for VhostQueues {
    fn start_queue(&mut self, q: ReadyQueue) {
        if let Some(c) = self.cmd(q.index) {
            c.send(Command::StartQueue {
                id: self.id,
                q: Box::new(q),
            });
        }
    }

    fn stop_queue(&mut self, index: u16) -> Option<u16> {
        let (reply, wait) = mpsc::sync_channel(1);
        if !self.cmd(index)?.send(Command::StopQueue {
            id: self.id,
            index,
            reply,
        }) {
            return None;
        }
        wait.recv().ok().flatten()
    }

    fn set_call(&mut self, index: u16, call: Option<std::fs::File>) {
        let Some(c) = self.cmd(index) else { return };
        c.send(Command::SetCall {
            id: self.id,
            index,
            call,
        });
    }
}
