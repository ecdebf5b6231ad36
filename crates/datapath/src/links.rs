//! What a worker is wired to: its commands, and the mailboxes to and from the others.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::command::Command;
use crate::mailbox::{Receiver as MailReceiver, Sender as MailSender};
use crate::types::PortId;

/// One worker's ends of everything: built by the handle, consumed by the worker.
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
    pub peers: Vec<Option<Peer>>,
    /// What this worker publishes about itself.
    pub stats: Arc<crate::types::WorkerStats>,
}

/// Another worker as one that hands it frames sees it.
pub(crate) struct Peer {
    pub mailbox: MailSender,
    /// Its mail eventfd, written to wake it...
    pub wake: Arc<EventFd>,
    /// ...only while it sleeps.
    pub asleep: Arc<AtomicBool>,
}

/// The mailboxes to the other workers, and which of them got frames since they were last
/// woken.
pub(crate) struct Outbox {
    /// This worker's index.
    pub me: usize,
    peers: Vec<Option<Peer>>,
    /// Bit per worker that got mail since we last woke it.
    mailed: u64,
}

impl Outbox {
    pub fn new(me: usize, peers: Vec<Option<Peer>>) -> Outbox {
        Outbox {
            me,
            peers,
            mailed: 0,
        }
    }

    /// Hands worker `to` a record of `len` bytes written by `fill`; false when there is no
    /// such worker or its mailbox is full (a receiver that cannot keep up).
    pub fn send(
        &mut self,
        to: usize,
        ingress: PortId,
        egress: PortId,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Some(peer) = self.peers.get_mut(to).and_then(Option::as_mut) else {
            return false;
        };
        if !peer.mailbox.push(ingress, egress, len, fill) {
            return false;
        }
        self.mailed |= 1u64 << (to % 64);
        true
    }

    /// Wakes the workers handed frames since the last call (they may sleep in epoll).
    pub fn wake_mailed(&mut self) {
        if self.mailed == 0 {
            return;
        }
        // Full fence: the frames pushed must be visible before we read whether their worker
        // sleeps (it sets the flag, fences, then looks at its mailboxes: one of us sees the
        // other).
        fence(Ordering::SeqCst);
        for (i, peer) in self.peers.iter().enumerate() {
            if self.mailed & (1u64 << (i % 64)) == 0 {
                continue;
            }
            if let Some(peer) = peer {
                if peer.asleep.load(Ordering::SeqCst) {
                    // The counter cannot overflow with one write per round.
                    let _ = peer.wake.write(1);
                }
            }
        }
        self.mailed = 0;
    }
}
