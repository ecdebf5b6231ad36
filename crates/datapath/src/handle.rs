//! The control plane's side of a worker: commands in, counters and status out.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use port_vhost::{QueueControl, ReadyQueue};
use switch::SharedCounters;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

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
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            mode: DatapathMode::Event,
            fdb_capacity: 4096,
            fdb_aging: switch::DEFAULT_AGING_TIME,
        }
    }
}

/// What the control plane can see of a port without asking the worker.
#[derive(Debug, Default)]
pub struct PortStatus {
    running_queues: AtomicU16,
    broken: AtomicBool,
    broken_reason: Mutex<Option<String>>,
    features: std::sync::atomic::AtomicU64,
}

impl PortStatus {
    /// Rings currently processed.
    pub fn running_queues(&self) -> u16 {
        self.running_queues.load(Ordering::Relaxed)
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

    pub(crate) fn set_running(&self, n: u16, features: u64) {
        self.running_queues.store(n, Ordering::Relaxed);
        self.features
            .store(if n == 0 { 0 } else { features }, Ordering::Relaxed);
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
        shared: Arc<SharedCounters>,
        status: Arc<PortStatus>,
    },
    AddTap {
        id: PortId,
        name: String,
        tap: port_tap::Tap,
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

/// A running worker thread.
#[derive(Debug)]
pub struct Datapath {
    cmd: CommandTx,
    thread: Option<JoinHandle<()>>,
    next_id: u16,
}

/// The control plane's handle on one port of a worker.
#[derive(Debug, Clone)]
pub struct PortHandle {
    /// Worker-local id.
    pub id: PortId,
    /// Port name.
    pub name: String,
    /// Counters the worker flushes each burst.
    pub counters: Arc<SharedCounters>,
    /// Status the worker updates.
    pub status: Arc<PortStatus>,
}

impl Datapath {
    /// Starts a worker thread.
    pub fn spawn(cfg: DatapathConfig) -> io::Result<Datapath> {
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let (tx, rx): (Sender<Command>, Receiver<Command>) = mpsc::channel();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let wake2 = wake.clone();
        // The worker is built on its own thread: its buffers never cross threads.
        let thread = std::thread::Builder::new()
            .name("vnet-worker0".into())
            .spawn(move || match Worker::new(cfg, rx, wake2) {
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
        Ok(Datapath {
            cmd: CommandTx { tx, wake },
            thread: Some(thread),
            next_id: 0,
        })
    }

    /// Adds a port (no rings yet).
    pub fn add_port(&mut self, name: &str, queue_pairs: u16) -> PortHandle {
        let h = self.new_handle(name);
        self.cmd.send(Command::AddPort {
            id: h.id,
            name: name.to_string(),
            queue_pairs,
            shared: h.counters.clone(),
            status: h.status.clone(),
        });
        h
    }

    /// Adds a TAP port: the worker reads and writes its fds from now on.
    pub fn add_tap_port(&mut self, name: &str, tap: port_tap::Tap) -> PortHandle {
        let h = self.new_handle(name);
        self.cmd.send(Command::AddTap {
            id: h.id,
            name: name.to_string(),
            tap,
            shared: h.counters.clone(),
            status: h.status.clone(),
        });
        h
    }

    fn new_handle(&mut self, name: &str) -> PortHandle {
        let id = PortId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        PortHandle {
            id,
            name: name.to_string(),
            counters: Arc::new(SharedCounters::new()),
            status: Arc::new(PortStatus::default()),
        }
    }

    /// Removes a port, stopping its rings; returns once the worker let go of it.
    pub fn remove_port(&self, id: PortId) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.cmd.send(Command::RemovePort { id, done }) {
            let _ = wait.recv();
        }
    }

    /// The [`QueueControl`] a port's vhost-user handler uses.
    pub fn vhost_queues(&self, id: PortId) -> VhostQueues {
        VhostQueues {
            id,
            cmd: self.cmd.clone(),
        }
    }

    /// The forwarding database.
    pub fn fdb(&self) -> Vec<FdbRow> {
        let (reply, wait) = mpsc::sync_channel(1);
        if !self.cmd.send(Command::Fdb { reply }) {
            return Vec::new();
        }
        wait.recv().unwrap_or_default()
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.cmd.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forwards a vhost-user handler's ring starts and stops to the port's worker.
#[derive(Debug)]
pub struct VhostQueues {
    id: PortId,
    cmd: CommandTx,
}

impl QueueControl for VhostQueues {
    fn start_queue(&mut self, q: ReadyQueue) {
        self.cmd.send(Command::StartQueue {
            id: self.id,
            q: Box::new(q),
        });
    }

    fn stop_queue(&mut self, index: u16) -> Option<u16> {
        let (reply, wait) = mpsc::sync_channel(1);
        if !self.cmd.send(Command::StopQueue {
            id: self.id,
            index,
            reply,
        }) {
            return None;
        }
        wait.recv().ok().flatten()
    }

    fn set_call(&mut self, index: u16, call: Option<std::fs::File>) {
        self.cmd.send(Command::SetCall {
            id: self.id,
            index,
            call,
        });
    }
}
