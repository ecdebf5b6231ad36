//! Commands from the control plane to a worker, applied between bursts.

use std::sync::mpsc::{Sender, SyncSender};
use std::sync::Arc;

use port_vhost::ReadyQueue;
use switch::SharedCounters;
use vmm_sys_util::eventfd::EventFd;

use crate::policy::Policy;
use crate::types::{DatapathMode, FdbRow, PortId, PortStatus};
use switch::MacAddr;

/// A port's policy as one worker applies it, with what its forwarding table needs.
pub(crate) struct PortRules {
    pub policy: Policy,
    /// Static entries: the port's MACs on each of its VLANs.
    pub statics: Vec<(MacAddr, u16)>,
    pub max_macs: Option<u32>,
}

/// One thing for a worker to do.
pub(crate) enum Command {
    AddPort {
        id: PortId,
        name: String,
        queue_pairs: u16,
        /// The port's own datapath mode (None: the worker's).
        mode: Option<DatapathMode>,
        rules: Box<PortRules>,
        shared: Arc<SharedCounters>,
        status: Arc<PortStatus>,
    },
    AddTap {
        id: PortId,
        name: String,
        tap: port_tap::Tap,
        /// Each queue's write ring (made here, on the control thread: workers may not
        /// set up rings).
        rings: Vec<Option<crate::uring::TapRing>>,
        /// The worker reads these queues (else it only writes to the first one).
        read: bool,
        rules: Box<PortRules>,
        shared: Arc<SharedCounters>,
        status: Arc<PortStatus>,
    },
    RemovePort {
        id: PortId,
        done: SyncSender<()>,
    },
    SetRules {
        id: PortId,
        rules: Box<PortRules>,
    },
    /// Starts (Some) or stops (None) capturing port `id`'s frames.
    Capture {
        id: PortId,
        sink: Option<Box<crate::capture::Sink>>,
    },
    StartQueue {
        id: PortId,
        q: Box<ReadyQueue>,
    },
    StopQueue {
        id: PortId,
        index: u16,
        reply: SyncSender<Option<u32>>,
    },
    SetCall {
        id: PortId,
        index: u16,
        call: Option<std::fs::File>,
    },
    Fdb {
        reply: SyncSender<Vec<FdbRow>>,
    },
    /// Runs `apply` on the worker's own thread (installing its seccomp filter) and
    /// reports the result.
    Lockdown {
        apply: LockdownFn,
        done: SyncSender<Result<(), String>>,
    },
    Shutdown,
}

/// What a worker runs to lock itself down (a seccomp filter applies to the calling thread).
pub type LockdownFn = Box<dyn FnOnce() -> Result<(), String> + Send>;

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
    pub fn new(tx: Sender<Command>, wake: Arc<EventFd>) -> CommandTx {
        CommandTx { tx, wake }
    }

    /// Queues `c` and wakes the worker; false if the worker is gone.
    pub fn send(&self, c: Command) -> bool {
        if self.tx.send(c).is_err() {
            return false;
        }
        // The eventfd counter cannot overflow with one write per command.
        let _ = self.wake.write(1);
        true
    }
}
