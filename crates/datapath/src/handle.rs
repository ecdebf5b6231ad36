//! The control plane's side of a worker: commands in, counters and status out.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use port_vhost::{QueueControl, ReadyQueue};
use switch::SharedCounters;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::command::{Command, CommandTx, PortRules};
use crate::uring::TapRing;

/// How long the control plane waits for a worker to answer a command. A worker that does
/// not answer in time is reported (it is wedged, or stuck in a system call), and the
/// control plane goes on without its answer instead of waiting forever.
pub const WORKER_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits for a worker's reply to `what`, at most [`WORKER_REPLY_TIMEOUT`].
fn reply<T>(wait: &Receiver<T>, worker: usize, what: &str) -> Option<T> {
    match wait.recv_timeout(WORKER_REPLY_TIMEOUT) {
        Ok(v) => Some(v),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::error!(
                "worker {worker} did not answer {what} within {} ms: it is wedged; going on \
                 without it",
                WORKER_REPLY_TIMEOUT.as_millis()
            );
            None
        }
        // The worker is gone (its thread ended): nothing to wait for.
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
    }
}
use crate::links::{Links, Peer};
use crate::mailbox::{mailbox, Receiver as MailReceiver, Sender as MailSender};
use crate::policy::{Policy, Share};
use crate::types::{
    DatapathConfig, DatapathMode, FdbRow, PortId, PortPolicy, PortStatus, MAX_WORKERS,
};
use crate::worker::Worker;
use std::time::Instant;
use switch::VlanMode;

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
    /// What each worker publishes about itself.
    stats: Vec<Arc<crate::types::WorkerStats>>,
    next_id: u16,
    /// Each port's ingress and egress share on each worker (for policy changes).
    shares: std::collections::BTreeMap<u16, Vec<(Share, Share)>>,
    /// Writes to TAP queues go through io_uring batches (see [`TapRing`]).
    tap_batch: bool,
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
        let stats: Vec<Arc<crate::types::WorkerStats>> = (0..n)
            .map(|_| Arc::new(crate::types::WorkerStats::new()))
            .collect();
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
                stats: stats[index].clone(),
                peers: outgoing
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
                cmd: CommandTx::new(tx, wake),
                thread: Some(thread),
            });
        }
        Ok(Datapath {
            workers,
            stats,
            next_id: 0,
            shares: Default::default(),
            tap_batch: cfg.tap_batch,
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
        policy: &PortPolicy,
    ) -> PortHandle {
        let h = self.new_handle(name, 2 * usize::from(queue_pairs.max(1)));
        let now = Instant::now();
        let qps = queue_pairs.max(1);
        for (wi, w) in self.workers.iter().enumerate() {
            // This worker's part of the port: the queue pairs it runs.
            let here = (0..qps)
                .filter(|&q| worker_of(h.id, q, self.workers.len()) == wi)
                .count();
            let share = Share {
                here: u64::try_from(here).unwrap_or(0),
                of: u64::from(qps),
            };
            self.shares.entry(h.id.0).or_default().push((share, share));
            w.cmd.send(Command::AddPort {
                id: h.id,
                name: name.to_string(),
                queue_pairs,
                mode,
                rules: rules(policy, share, share, now),
                shared: h.counters.clone(),
                status: h.status.clone(),
            });
        }
        h
    }

    /// Adds a TAP port: the workers read and write its fds from now on (queue `q` is read
    /// by worker `(port + q) % workers`; a worker reading none writes to the first queue).
    pub fn add_tap_port(
        &mut self,
        name: &str,
        tap: port_tap::Tap,
        policy: &PortPolicy,
    ) -> io::Result<PortHandle> {
        let h = self.new_handle(name, 0);
        let n = self.workers.len();
        let now = Instant::now();
        let nq = u64::try_from(tap.queues.len().max(1)).unwrap_or(1);
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
            // Ingress: the queues this worker reads. Egress: every worker writes to the
            // TAP, each its own share.
            let ingress = Share {
                here: u64::try_from(fds.len()).unwrap_or(0),
                of: nq,
            };
            let egress = Share {
                here: 1,
                of: u64::try_from(n).unwrap_or(1),
            };
            let queues = if read {
                fds
            } else {
                match &first {
                    Some(f) => vec![f.try_clone()?],
                    None => Vec::new(),
                }
            };
            self.shares
                .entry(h.id.0)
                .or_default()
                .push((ingress, egress));
            let rings = self.tap_rings(name, &queues);
            w.cmd.send(Command::AddTap {
                id: h.id,
                name: name.to_string(),
                rings,
                tap: port_tap::Tap {
                    ifname: tap.ifname.clone(),
                    queues,
                    offloads: tap.offloads,
                },
                read,
                rules: rules(policy, ingress, egress, now),
                shared: h.counters.clone(),
                status: h.status.clone(),
            });
        }
        Ok(h)
    }

    /// A write ring for each TAP queue, when batching is on and the kernel offers
    /// io_uring (else None: one `writev` per frame, said once per port).
    fn tap_rings(&self, name: &str, queues: &[std::fs::File]) -> Vec<Option<TapRing>> {
        if !self.tap_batch {
            return queues.iter().map(|_| None).collect();
        }
        let mut refused = None;
        let rings = queues
            .iter()
            .map(|fd| {
                if refused.is_some() {
                    return None;
                }
                TapRing::new(fd.as_raw_fd())
                    .map_err(|e| refused = Some(e))
                    .ok()
            })
            .collect();
        if let Some(e) = refused {
            tracing::warn!(
                "port {name}: io_uring unavailable ({e}); one write system call per frame to the TAP"
            );
        }
        rings
    }

    fn new_handle(&mut self, name: &str, rings: usize) -> PortHandle {
        let id = PortId(self.next_id);
        crate::current::register(id, name);
        self.next_id = self.next_id.wrapping_add(1);
        PortHandle {
            id,
            name: name.to_string(),
            counters: Arc::new(SharedCounters::new()),
            status: Arc::new(PortStatus::new(self.workers.len(), rings)),
        }
    }

    /// What each worker publishes about itself (sleep time, FDB size), by worker index.
    pub fn worker_stats(&self) -> Vec<Arc<crate::types::WorkerStats>> {
        self.stats.clone()
    }

    /// Starts capturing port `id`'s frames (`take_in`: those it sends into the switch,
    /// `take_out`: those delivered to it), the first `snaplen` bytes of each. The capture
    /// stops when the returned reader is dropped.
    pub fn start_capture(
        &self,
        id: PortId,
        take_in: bool,
        take_out: bool,
        snaplen: usize,
    ) -> crate::capture::Capture {
        let (sinks, mut cap) =
            crate::capture::capture(id, self.workers.len(), take_in, take_out, snaplen);
        for (w, sink) in self.workers.iter().zip(sinks) {
            w.cmd.send(Command::Capture {
                id,
                sink: Some(Box::new(sink)),
            });
        }
        let cmds: Vec<CommandTx> = self.workers.iter().map(|w| w.cmd.clone()).collect();
        cap.stop = Some(Box::new(move || {
            for c in &cmds {
                c.send(Command::Capture { id, sink: None });
            }
        }));
        cap
    }

    /// Replaces a running port's policy (security, VLAN, learning limit, MTU, rates) on
    /// every worker, between bursts; its learned addresses are forgotten (and learned
    /// again under the new rules), its static ones replaced.
    pub fn set_policy(&self, id: PortId, policy: &PortPolicy) {
        let now = Instant::now();
        let Some(shares) = self.shares.get(&id.0) else {
            return;
        };
        for (w, &(ingress, egress)) in self.workers.iter().zip(shares) {
            w.cmd.send(Command::SetRules {
                id,
                rules: rules(policy, ingress, egress, now),
            });
        }
    }

    /// Removes a port, stopping its rings; returns once every worker let go of it.
    pub fn remove_port(&mut self, id: PortId) {
        self.shares.remove(&id.0);
        for (i, w) in self.workers.iter().enumerate() {
            let (done, wait) = mpsc::sync_channel(1);
            if w.cmd.send(Command::RemovePort { id, done }) {
                reply(&wait, i, "a port removal");
            }
        }
    }

    /// Runs `make(worker)`'s function on each worker's own thread (between bursts), one
    /// worker after the other; the first error, or a worker that does not answer, stops it.
    pub fn lockdown(
        &self,
        make: impl Fn(usize) -> crate::command::LockdownFn,
    ) -> Result<(), String> {
        for (i, w) in self.workers.iter().enumerate() {
            let (done, wait) = mpsc::sync_channel(1);
            if !w.cmd.send(Command::Lockdown {
                apply: make(i),
                done,
            }) {
                return Err(format!("worker {i} is gone"));
            }
            reply(&wait, i, "its lockdown")
                .ok_or_else(|| format!("worker {i} did not answer"))??;
        }
        Ok(())
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
        for (i, w) in self.workers.iter().enumerate() {
            let (tx, wait) = mpsc::sync_channel(1);
            if !w.cmd.send(Command::Fdb { reply: tx }) {
                continue;
            }
            for r in reply(&wait, i, "an FDB dump").unwrap_or_default() {
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

/// What one worker needs of a port's policy: its share of the limits, the static FDB
/// entries (the port's MACs on each of its VLANs), the learning limit.
fn rules(p: &PortPolicy, ingress: Share, egress: Share, now: Instant) -> Box<PortRules> {
    let vlans: Vec<u16> = match &p.vlan {
        VlanMode::Native => vec![0],
        VlanMode::Access(v) => vec![*v],
        VlanMode::Trunk(set) => set.iter().collect(),
    };
    let statics = p
        .static_macs
        .iter()
        .flat_map(|m| vlans.iter().map(move |v| (*m, *v)))
        .collect();
    Box::new(PortRules {
        policy: Policy::new(p, ingress, egress, now),
        statics,
        max_macs: p.max_macs,
    })
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
    fn cmd(&self, index: u16) -> Option<(usize, &CommandTx)> {
        let w = worker_of(self.id, index / 2, self.cmds.len());
        Some((w, self.cmds.get(w)?))
    }
}

impl QueueControl for VhostQueues {
    fn start_queue(&mut self, q: ReadyQueue) {
        if let Some((_, c)) = self.cmd(q.index) {
            c.send(Command::StartQueue {
                id: self.id,
                q: Box::new(q),
            });
        }
    }

    fn stop_queue(&mut self, index: u16) -> Option<u32> {
        let (tx, wait) = mpsc::sync_channel(1);
        let (w, c) = self.cmd(index)?;
        if !c.send(Command::StopQueue {
            id: self.id,
            index,
            reply: tx,
        }) {
            return None;
        }
        reply(&wait, w, "a ring stop").flatten()
    }

    fn set_call(&mut self, index: u16, call: Option<std::fs::File>) {
        let Some((_, c)) = self.cmd(index) else {
            return;
        };
        c.send(Command::SetCall {
            id: self.id,
            index,
            call,
        });
    }
}
