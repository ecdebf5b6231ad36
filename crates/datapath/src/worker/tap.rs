//! TAP events: frames read from the host (held while their destination has no rx
//! buffer), frames flushed when the fd is writable again, a device that vanished.

use std::os::fd::AsRawFd;
use std::time::Instant;
use vring::DeviceRing;

use switch::DropReason;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::{Switching, Token, Worker};
use crate::forward::{switch_frame, Ingress, Outcome};
use crate::frame::Src;
use crate::port::tap::{RxBatch, TapQueue};
use crate::port::{self, Port};
use crate::types::{PortId, BURST};

/// A TAP queue is read every round (out of epoll) until it has had no frame for this long.
const TAP_POLL_GRACE: std::time::Duration = std::time::Duration::from_micros(50);

impl Worker {
    /// Watches the TAP queues of `p` and adds it.
    pub(super) fn add_tap(&mut self, id: PortId, p: Port) {
        let read = p.tap_ref().is_some_and(|t| t.queues.iter().any(|q| q.read));
        if let Some(t) = p.tap_ref() {
            let ifname = &t.ifname;
            for (qi, q) in t.queues.iter().enumerate() {
                self.tap_interest(id, qi, q, ControlOperation::Add);
            }
            if read {
                tracing::info!(
                    "port {}: TAP {ifname} attached with {} queue(s) on worker {}",
                    p.name,
                    t.queues.len(),
                    self.index
                );
            }
        }
        p.publish_running(self.index);
        self.insert_port(id, p);
    }

    pub(super) fn tap_event(&mut self, id: PortId, qi: u16, ev: EventSet) {
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

    /// Reads up to a burst of frames from the host and switches them. A frame whose
    /// destination has no rx buffer is held, and the queue stops reading until that
    /// guest adds buffers (its rx kick), so the host's queue, not vnetd, absorbs the burst.
    /// `kicked`: the destination just signalled new rx buffers.
    pub(super) fn tap_rx(&mut self, id: PortId, qi: usize, kicked: bool) -> usize {
        let now = Instant::now();
        let mut got = 0;
        let mut force = kicked;
        // Frames read ahead in a batch leave the queue while they are switched (a Vec
        // moved, no copy), and go back with what is left of them.
        let mut batch = self.sw.tap_queue(id, qi).and_then(|q| {
            if q.ring.as_ref().is_some_and(|r| r.is_broken()) {
                tracing::warn!("TAP queue {qi}: its io_uring failed; one read per frame now");
                q.ring = None;
                q.rx = None;
            }
            q.rx.take()
        });
        // A burst of frames, and then the rest of a batch already read (no epoll event
        // would come for frames that left the kernel's queue).
        for i in 0.. {
            let refill = i < usize::from(BURST);
            if !refill && !batch.as_ref().is_some_and(RxBatch::has_next) {
                break;
            }
            // A held frame goes first; while it cannot go, nothing more is read.
            if !self.retry_held(id, qi, now, std::mem::take(&mut force)) {
                break;
            }
            let Some(q) = self.sw.tap_queue(id, qi) else {
                break;
            };
            let read = match batch.as_mut() {
                Some(b) => read_batched(q, b, refill),
                None => q.read(&mut self.tap_buf).map(|n| Some(&self.tap_buf[..n])),
            };
            let frame = match read {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if crate::io::is_gone(&e) {
                        self.tap_gone(id, "reading failed");
                    } else if let Some(p) = self.sw.port(id) {
                        tracing::warn!("port {}: TAP read failed: {e}", p.name);
                    }
                    break;
                }
            };
            let n = frame.len();
            got += 1;
            if let Some(cap) = self.sw.port(id).and_then(|p| p.capture.as_mut()) {
                let hl = port_tap::VNET_HDR_LEN.min(n);
                cap.push(
                    crate::capture::Direction::In,
                    &frame[..hl],
                    &[Src::Bytes(&frame[hl..])],
                );
            }
            let r = switch_frame(
                &mut self.sw.ctx(),
                Ingress::new(id, 0),
                Src::Bytes(frame),
                now,
                true,
                None,
            );
            if let Outcome::Held(dst) = r {
                if let Some(q) = self.sw.tap_queue(id, qi) {
                    q.held.clear();
                    q.held.extend_from_slice(frame);
                }
                // The next round retries it only if buffers arrived meanwhile.
                self.hold_for(id, qi, dst);
            }
        }
        let mut poll = false;
        if let Some(q) = self.sw.tap_queue(id, qi) {
            if q.rx.is_none() {
                q.rx = batch;
            }
            // Frames flow: read it every round for a while, out of epoll.
            poll = got > 0 && !q.polled && q.held_for.is_none() && !q.out_armed;
        }
        if poll {
            self.poll_tap(id, qi, now);
        }
        self.sw.flush_rx();
        self.followups();
        got
    }

    /// Takes TAP queue `qi` of `id` out of epoll: read every round from now on.
    fn poll_tap(&mut self, id: PortId, qi: usize, now: Instant) {
        let Some(q) = self.sw.tap_queue(id, qi) else {
            return;
        };
        let fd = q.fd.as_raw_fd();
        if self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
            .is_ok()
        {
            q.polled = true;
            self.tap_polled.push((id, qi, now));
        }
    }

    /// Reads the polled TAP queues; one empty for longer than the grace goes back to
    /// epoll.
    pub(super) fn process_polled_taps(&mut self, clock: &mut super::Clock) {
        if self.tap_polled.is_empty() {
            return;
        }
        let now = clock.now();
        let mut i = 0;
        while i < self.tap_polled.len() {
            let (id, qi, last) = self.tap_polled[i];
            let polled = self.sw.tap_queue(id, qi).is_some_and(|q| q.polled);
            if !polled {
                // Back in epoll already (a hold, writes waiting) or gone.
                self.tap_polled.swap_remove(i);
                continue;
            }
            crate::current::set(Some(id));
            let got = self.tap_rx(id, qi, false);
            crate::current::set(None);
            if got > 0 {
                self.tap_polled[i].2 = now;
                i += 1;
            } else if now.saturating_duration_since(last) > TAP_POLL_GRACE {
                self.tap_polled.swap_remove(i);
                self.set_tap_interest(id, qi);
            } else {
                i += 1;
            }
        }
    }

    /// Tries the held frame of a TAP queue again (when `force`d by an rx kick, or when
    /// buffers arrived while it was being parked); true if nothing is held any more.
    fn retry_held(&mut self, id: PortId, qi: usize, now: Instant, force: bool) -> bool {
        let Some(q) = self.sw.tap_queue(id, qi) else {
            return false;
        };
        let Some(waited) = q.held_for else {
            return true;
        };
        if !force && !q.retry {
            return false;
        }
        // The held bytes leave the queue while the frame is switched (a Vec moved, no copy).
        let held = std::mem::take(&mut q.held);
        let r = switch_frame(
            &mut self.sw.ctx(),
            Ingress::new(id, 0),
            Src::Bytes(&held),
            now,
            true,
            None,
        );
        if let Some(q) = self.sw.tap_queue(id, qi) {
            q.held = held;
        }
        self.unwait(waited);
        match r {
            Outcome::Done => {
                self.unhold(id, qi);
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
        if let Some(p) = self.sw.port(dst) {
            if let Some(v) = p.vhost_mut() {
                v.rx_waiters += 1;
            }
            // Pair 0's ring: the one TAP frames are delivered to (their ingress pair is 0).
            if let Some(vq) = p.rx_ring_for(0) {
                let seen = vq.ring.pending();
                arrived = vq.ring.enable_notify_on_more().is_ok_and(|n| n > seen);
            }
        }
        let mut first = false;
        if let Some(q) = self.sw.tap_queue(id, qi) {
            q.held_for = Some(dst);
            q.retry = arrived;
            if q.held_since.is_none() {
                q.held_since = Some(Instant::now());
                first = true;
            }
        }
        if first {
            self.holds.push((id, qi));
        }
        self.set_tap_interest(id, qi);
    }

    /// TAP queue `qi` of `id` holds nothing any more: it reads again.
    fn unhold(&mut self, id: PortId, qi: usize) {
        if let Some(q) = self.sw.tap_queue(id, qi) {
            q.held_for = None;
            q.retry = false;
            q.held_since = None;
        }
        self.holds.retain(|&h| h != (id, qi));
        self.set_tap_interest(id, qi);
    }

    /// Drops the frame TAP queue `qi` of `id` holds (counted `no_rx_buffer` on the port it
    /// waited for) and reads on.
    pub(super) fn drop_held(&mut self, id: PortId, qi: usize, reason: DropReason) {
        let Some(waited) = self.sw.tap_queue(id, qi).and_then(|q| q.held_for) else {
            self.holds.retain(|&h| h != (id, qi));
            return;
        };
        self.unwait(waited);
        if let Some(p) = self.sw.port(waited) {
            p.counters.count_drop(reason);
        }
        self.unhold(id, qi);
        self.tap_rx(id, qi, false);
    }

    /// Drops the frames held longer than the TAP hold time.
    pub(super) fn expire_holds(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.holds.len() {
            let (id, qi) = self.holds[i];
            let since = self.sw.tap_queue(id, qi).and_then(|q| q.held_since);
            match since {
                Some(t) if now.saturating_duration_since(t) < self.tap_hold => i += 1,
                // Dropping removes the entry (or it was stale).
                _ => self.drop_held(id, qi, DropReason::NoRxBuffer),
            }
        }
        self.flush_counters();
    }

    /// Port `dst` stopped, broke or went away: frames held for it are dropped at once
    /// (counted `port_down`).
    pub(super) fn release_holds_for(&mut self, dst: PortId) {
        let waiting: Vec<(PortId, usize)> = self
            .holds
            .iter()
            .copied()
            .filter(|&(id, qi)| {
                port::find(&self.sw.ports, id)
                    .and_then(Port::tap_ref)
                    .and_then(|t| t.queues.get(qi))
                    .is_some_and(|q| q.held_for == Some(dst))
            })
            .collect();
        for (id, qi) in waiting {
            self.drop_held(id, qi, DropReason::PortDown);
        }
    }

    fn unwait(&mut self, dst: PortId) {
        let Some(p) = self.sw.port(dst) else { return };
        let waiters = p.vhost_mut().map_or(0, |v| {
            v.rx_waiters = v.rx_waiters.saturating_sub(1);
            v.rx_waiters
        });
        if waiters == 0 {
            if let Some(vq) = p.rx_ring_for(0) {
                vq.ring.disable_notify();
            }
        }
    }

    /// Port `dst` has new rx buffers: retry the TAP queues waiting for it.
    pub(super) fn rx_buffers_added(&mut self, dst: PortId) {
        let waited = self
            .sw
            .port(dst)
            .and_then(Port::vhost_mut)
            .is_some_and(|v| v.rx_waiters > 0);
        if !waited {
            return;
        }
        for i in 0..self.sw.ports.len() {
            let Ok(i) = u16::try_from(i) else { break };
            let id = PortId(i);
            let mut qi = 0;
            while let Some(q) = self.sw.tap_queue(id, qi) {
                if q.held_for == Some(dst) {
                    self.tap_rx(id, qi, true);
                }
                qi += 1;
            }
        }
    }

    /// Sends the frames that waited for the TAP fd to become writable.
    fn tap_flush_out(&mut self, id: PortId, qi: usize) {
        let Switching { ports, scratch, .. } = &mut self.sw;
        let Some(p) = port::find_mut(ports, id) else {
            return;
        };
        let iov = &mut scratch.iov;
        let Some(q) = p.tap_mut().and_then(|t| t.queues.get_mut(qi)) else {
            return;
        };
        let r = q.flush_out(iov);
        let rearm = q.out.is_empty() && q.out_armed;
        if rearm {
            q.out_armed = false;
        }
        // Counted sent when they were queued; only the losses count now.
        p.counters.count_drops(DropReason::TxError, r.failed);
        p.counters.count_drops(DropReason::PortDown, r.down);
        if rearm {
            self.set_tap_interest(id, qi);
        }
        if r.gone {
            self.tap_gone(id, "writing failed");
        }
    }

    /// The TAP device vanished (deleted by someone): the port goes down for good.
    pub(super) fn tap_gone(&mut self, id: PortId, why: &str) {
        let me = self.index;
        let Some(p) = self.sw.port(id) else { return };
        let name = p.name.clone();
        let status = p.status.clone();
        let Some(t) = p.tap_mut() else { return };
        t.mark_gone();
        if t.queues.is_empty() {
            return; // already taken down
        }
        tracing::error!(
            "port {name}: TAP device {} is gone ({why}); port down, the other ports keep running",
            t.ifname
        );
        let ifname = t.ifname.clone();
        for q in t.queues.drain(..) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                q.fd.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        status.set_running(me, 0, false, 0);
        status.set_broken(Some(format!("TAP device {ifname} is gone")));
        self.sw.fdb.flush_port(id);
    }

    /// Updates what epoll reports for TAP queue `qi` of `id` to its state (a polled queue
    /// goes back into epoll).
    pub(super) fn set_tap_interest(&mut self, id: PortId, qi: usize) {
        let Some(p) = port::find_mut(&mut self.sw.ports, id) else {
            return;
        };
        if let Some(q) = p.tap_mut().and_then(|t| t.queues.get_mut(qi)) {
            let op = if std::mem::take(&mut q.polled) {
                ControlOperation::Add
            } else {
                ControlOperation::Modify
            };
            tap_interest(&self.epoll, id, qi, q, op);
        }
    }

    /// Sets what epoll reports for a TAP queue: readable unless a frame is held, writable
    /// while frames wait.
    fn tap_interest(&self, id: PortId, qi: usize, q: &TapQueue, op: ControlOperation) {
        tap_interest(&self.epoll, id, qi, q, op);
    }
}

/// Sets what `epoll` reports for TAP queue `qi` of `id` (see [`Worker::tap_interest`]).
fn tap_interest(epoll: &Epoll, id: PortId, qi: usize, q: &TapQueue, op: ControlOperation) {
    {
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
}

/// The next frame of `q`'s read-ahead batch, reading a new batch when it is used up (if
/// `refill`): `None` when there is none.
fn read_batched<'b>(
    q: &mut TapQueue,
    b: &'b mut RxBatch,
    refill: bool,
) -> std::io::Result<Option<&'b [u8]>> {
    if !b.has_next() {
        if !refill {
            return Ok(None);
        }
        let Some(ring) = q.ring.as_mut() else {
            return Ok(None);
        };
        if b.refill(ring)? == 0 {
            return Ok(None);
        }
    }
    Ok(b.next_frame())
}
