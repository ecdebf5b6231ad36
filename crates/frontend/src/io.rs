//! The frame API of a connected [`Frontend`]: bursts out on a txq, frames in from an rxq.
//! A queue the backend broke stays failed.

use std::io;
use std::time::{Duration, Instant};

use virtio_net::NetHdr;
use vmm_sys_util::epoll::EpollEvent;

use crate::queue::RxPoll;
use crate::QueuePair;
use crate::{Frontend, FrontendError};

/// Remembers a backend error so the queue stays failed.
fn note_broken<T>(
    broken: &mut Option<String>,
    r: Result<T, FrontendError>,
) -> Result<T, FrontendError> {
    if let Err(FrontendError::BadBackend { reason, .. }) = &r {
        *broken = Some(reason.clone());
    }
    r
}

fn check_broken(broken: &Option<String>, queue: u16) -> Result<(), FrontendError> {
    match broken {
        Some(reason) => Err(FrontendError::BadBackend {
            queue,
            reason: reason.clone(),
        }),
        None => Ok(()),
    }
}

/// Sleeps on the rx call eventfd of `pair` for up to `left` (forever if `None`), then
/// clears the call.
fn wait_for_call(pair: &QueuePair, left: Option<Duration>) -> Result<(), FrontendError> {
    let ms = left.map_or(i32::MAX, |l| {
        i32::try_from(l.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    });
    let mut events = [EpollEvent::default(); 1];
    match pair.epoll.wait(ms, &mut events) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(source) => return Err(FrontendError::io("epoll_wait")(source)),
    }
    pair.rx_notify.drain_call()
}

impl Frontend {
    /// Index of pair `qp` in `pairs`, if connected and in range.
    pub(crate) fn pair_index(&self, qp: u16) -> Result<usize, FrontendError> {
        if self.vu.is_none() {
            return Err(FrontendError::Disconnected);
        }
        let i = usize::from(qp);
        if i >= self.pairs.len() {
            return Err(FrontendError::NoSuchQueue(qp));
        }
        Ok(i)
    }

    /// Sends one frame on queue pair `qp` (see [`Frontend::send_burst`]).
    pub fn send(
        &mut self,
        queue_pair: u16,
        hdr: &NetHdr,
        frame: &[u8],
    ) -> Result<(), FrontendError> {
        self.send_burst(queue_pair, &[(*hdr, frame)])
    }

    /// Copies `frames` (each with its virtio-net header; `num_buffers` is sent as given)
    /// into tx buffers in the configured layout, publishes them with one avail index
    /// update and kicks once if the device asks for it. Completed tx chains are reclaimed
    /// first. If the ring fills up the frames queued so far are still sent and
    /// [`FrontendError::RingFull`] says how many.
    pub fn send_burst(
        &mut self,
        queue_pair: u16,
        frames: &[(NetHdr, &[u8])],
    ) -> Result<(), FrontendError> {
        let i = self.pair_index(queue_pair)?;
        let mem = &mut self.mem;
        let pair = &mut self.pairs[i];
        check_broken(&pair.tx_broken, 2 * queue_pair + 1)?;
        note_broken(&mut pair.tx_broken, pair.tx.reclaim(mem))?;
        let mut sent = 0;
        let mut result = Ok(());
        for (hdr, frame) in frames {
            let mut ok = pair.tx.enqueue(mem, hdr, frame);
            if matches!(ok, Ok(false)) {
                note_broken(&mut pair.tx_broken, pair.tx.reclaim(mem))?;
                ok = pair.tx.enqueue(mem, hdr, frame);
            }
            match ok {
                Ok(true) => sent += 1,
                Ok(false) => {
                    result = Err(FrontendError::RingFull { queue_pair, sent });
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if pair.tx.ring.publish(mem)? {
            pair.tx_notify.kick()?;
        }
        result
    }

    /// Frees tx buffers the device has consumed; returns how many chains. `send` does this
    /// itself; call it to see completions without sending.
    pub fn reclaim_tx(&mut self, queue_pair: u16) -> Result<usize, FrontendError> {
        let i = self.pair_index(queue_pair)?;
        let pair = &mut self.pairs[i];
        check_broken(&pair.tx_broken, 2 * queue_pair + 1)?;
        note_broken(&mut pair.tx_broken, pair.tx.reclaim(&self.mem))
    }

    /// Tx chains posted and not yet completed by the device (after reclaiming).
    pub fn tx_inflight(&mut self, queue_pair: u16) -> Result<u16, FrontendError> {
        self.reclaim_tx(queue_pair)?;
        Ok(self.pairs[usize::from(queue_pair)].tx.ring.inflight())
    }

    /// Receives one frame from queue pair `qp`, waiting up to `timeout` (sleeping on the
    /// call eventfd, or spinning with `busy_poll`). Mergeable buffers are gathered into one
    /// frame; the buffers are reposted. `Ok(None)` on timeout; a zero timeout just polls.
    pub fn recv(
        &mut self,
        queue_pair: u16,
        timeout: Duration,
    ) -> Result<Option<(NetHdr, Vec<u8>)>, FrontendError> {
        let i = self.pair_index(queue_pair)?;
        // None: too far in the future to represent, i.e. wait forever.
        let deadline = Instant::now().checked_add(timeout);
        let busy = self.config.busy_poll;
        let mem = &mut self.mem;
        let pair = &mut self.pairs[i];
        let queue = 2 * queue_pair;
        check_broken(&pair.rx_broken, queue)?;
        loop {
            match note_broken(&mut pair.rx_broken, pair.rx.poll(mem))? {
                RxPoll::Frame { hdr, data, kick } => {
                    if kick {
                        pair.rx_notify.kick()?;
                    }
                    return Ok(Some((hdr, data)));
                }
                RxPoll::Empty | RxPoll::Incomplete => {}
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            if busy {
                std::thread::yield_now();
                continue;
            }
            let fresh = note_broken(&mut pair.rx_broken, pair.rx.ring.enable_calls(mem))?;
            if !fresh {
                wait_for_call(pair, deadline.map(|d| d - now))?;
            }
            pair.rx.ring.disable_calls(mem)?;
        }
    }

    /// Receives frames until none arrives for `idle` (the first wait is `idle` too).
    pub fn recv_all(
        &mut self,
        queue_pair: u16,
        idle: Duration,
    ) -> Result<Vec<(NetHdr, Vec<u8>)>, FrontendError> {
        let mut out = Vec::new();
        while let Some(fr) = self.recv(queue_pair, idle)? {
            out.push(fr);
        }
        Ok(out)
    }
}
