//! Tx bursts and the lifecycle of rings: start, stop, break.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use port_vhost::ReadyQueue;
use switch::DropReason;
use virtio_net::NetHdr;
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
use vring::{with_ring, Chain, DeviceRing, Ring, RingError};

use super::{Clock, Token, Worker};
use crate::capture::Direction;
use crate::forward::{classify, deliver_run, switch_frame, Express, Fate, Ingress, Memo, Run};
use crate::frame::{Src, HEAD_LEN};
use crate::port::vhost::Vq;
use crate::port::{self, Port};
use crate::types::{PortId, BURST};

/// Most descriptors one tx burst of a queue may walk.
const TX_DESC_BUDGET: u32 = 2048;

/// Event mode: a txq that just emptied stays polled this long before its kicks are asked
/// for again and the worker may sleep. A guest that sends again within it (the next burst
/// of a stream, the answer to a request the switch just delivered) costs neither a kick
/// (a system call in the guest) nor a wake-up (the host scheduling the worker's vCPU, about
/// 5 us in this VM); an idle port still costs nothing once it has passed.
const EVENT_GRACE: Duration = Duration::from_micros(30);

impl Worker {
    /// One burst for each pending txq; those with work left stay pending.
    pub(super) fn process_pending(&mut self, clock: &mut Clock) {
        let mut i = 0;
        while i < self.pending.len() {
            let (id, qp) = self.pending[i];
            crate::current::set(Some(id));
            let more = self.process_tx(id, qp, clock);
            if more {
                i += 1;
            } else {
                self.pending.swap_remove(i);
            }
        }
        crate::current::set(None);
    }

    /// The running txq of pair `qp` of port `id`, unless the port is broken.
    fn txq(&mut self, id: PortId, qp: u16) -> Option<&mut Vq> {
        let p = self.sw.port(id).filter(|p| !p.is_broken())?;
        p.vhost_mut()?.txq.get_mut(usize::from(qp))?.as_mut()
    }

    /// Runs one burst of txq `qp` of `id`. Returns true if more work is waiting.
    fn process_tx(&mut self, id: PortId, qp: u16, clock: &mut Clock) -> bool {
        if self
            .txq(id, qp)
            .and_then(|q| q.throttled)
            .is_some_and(|until| until > clock.now())
        {
            // Over its ingress rate: the throttle timer schedules it again.
            return false;
        }
        let polled = self.port_polled(id);
        let res = match self.txq(id, qp).map(|q| q.ring.refresh_avail()) {
            None => Ok(false),
            Some(Err(e)) => Err(e),
            Some(Ok(0)) if polled => Ok(false),
            Some(Ok(_)) => self.tx_burst(id, qp, clock.now(), polled),
        };
        // tx_burst published the receivers' used entries itself (before the sender's).
        self.followups();
        match res {
            Ok(more) => more,
            Err(e) => {
                self.break_port(id, &e);
                false
            }
        }
    }

    /// One burst of txq `qp` of port `id`, in three passes so that the cache misses of
    /// different frames overlap instead of queueing up one after another: pop the chains
    /// (descriptor reads), read their headers (the first line of each frame), then switch
    /// each frame. The chains, each holding the guest memory it points into, leave the
    /// ring for the switching pass, which needs every port.
    ///
    /// Never inlined: a call per burst costs nothing, while inlined into the worker's loop
    /// (which whole-program LTO did once it grew a little) it forwarded 64-byte frames
    /// about 12 % slower (docs/bench.md, "Tenant isolation at line rate").
    #[inline(never)]
    fn tx_burst(
        &mut self,
        id: PortId,
        qp: u16,
        now: Instant,
        polled: bool,
    ) -> Result<bool, RingError> {
        let Some(vq) = self.txq(id, qp) else {
            return Ok(false);
        };
        vq.throttled = None;
        let mut chains = std::mem::take(&mut vq.burst);
        let (popped, failed) = with_ring!(&mut vq.ring, r => pop_burst(r, &mut chains));
        let mut heads = [[0u8; HEAD_LEN]; BURST as usize];
        let mut have: u64 = 0;
        for (i, (c, h)) in chains[..popped].iter().zip(heads.iter_mut()).enumerate() {
            if let Some(x) = c.read_array::<HEAD_LEN>(0) {
                *h = x;
                have |= 1 << i;
            }
        }
        let ingress = Ingress::new(id, qp);
        let (limited, hl, express) = self.sw.port(id).map_or((false, 0, None), |p| {
            (p.policy.ingress.is_set(), p.hdr_len, Express::for_port(p))
        });
        let mut switched = popped;
        let mut throttle = None;
        let mut cx = self.sw.ctx_burst(&chains[..popped]);
        // The ingress rate admits the whole burst at once when it has room for all of it;
        // near the limit, frame by frame.
        let frame_len = |c: &vring::Chain| (c.readable_len() as usize).saturating_sub(hl);
        let per_frame = limited && {
            let bytes = || chains[..popped].iter().map(frame_len).sum();
            port::find_mut(cx.ports, id)
                .is_none_or(|p| p.policy.ingress.admit_many(popped, bytes, now).is_none())
        };
        // First pass: admit (the ingress rate) and decide each frame.
        let mut fates = [Fate::Slow; BURST as usize];
        let mut memo = Memo::default();
        for (i, c) in chains[..popped].iter().enumerate() {
            if per_frame {
                // Over the ingress rate: the rest stays in the guest's ring (backpressure,
                // as Firecracker's rate limiter does) until the bucket refills.
                let len = frame_len(c);
                if let Some(p) = port::find_mut(cx.ports, id) {
                    if !p.policy.ingress.admit(len, now) {
                        switched = i;
                        throttle = Some(now + p.policy.ingress.wait(len, now));
                        break;
                    }
                }
            }
            if let (Some(x), true) = (&express, have >> i & 1 == 1) {
                fates[i] = classify(&mut cx, id, x, c, &heads[i], now, &mut memo);
                if let (Fate::To(..), Some(h)) = (fates[i], heads[i].first_chunk_mut()) {
                    // The copy of an express frame's head is what starts its rx buffer:
                    // `num_buffers` 1 (unused in a tx header, §5.1.6.2; the general
                    // path, if the frame ends up there, sets its own).
                    NetHdr::set_num_buffers(h, 1);
                }
            }
        }
        // Second pass, in order: runs of express frames to one port go together, the
        // rest one by one. Express frames are counted received once, after the loop.
        let (mut express_frames, mut express_bytes) = (0u64, 0usize);
        let vlan = express.map_or(0, |x| x.vlan);
        let mut i = 0;
        while i < switched {
            let slow = match fates[i] {
                Fate::Slow => true,
                Fate::Done(len) => {
                    express_frames += 1;
                    express_bytes += len as usize;
                    i += 1;
                    false
                }
                Fate::To(egress, _) => {
                    let end = i + fates[i..switched]
                        .iter()
                        .take_while(|f| matches!(f, Fate::To(e, _) if *e == egress))
                        .count();
                    let run = Run {
                        chains: &chains[i..end],
                        heads: &heads[i..end],
                        fates: &fates[i..end],
                        vlan,
                        now,
                    };
                    let done = deliver_run(&mut cx, ingress, egress, &run);
                    for f in &fates[i..i + done] {
                        if let Fate::To(_, len) = f {
                            express_frames += 1;
                            express_bytes += *len as usize;
                        }
                    }
                    let stopped = i + done < end;
                    i += done;
                    stopped
                }
            };
            if slow {
                let pre = (have >> i & 1 == 1).then_some(&heads[i]);
                switch_frame(&mut cx, ingress, Src::Chain(&chains[i], 0), now, false, pre);
                i += 1;
            }
        }
        // Frames to TAP queues waited for the end of the burst: written now, while the
        // chains are still the guest's.
        crate::forward::flush_taps(&mut cx);
        if express_frames > 0 {
            if let Some(p) = port::find_mut(cx.ports, id) {
                p.counters.count_rx_many(express_frames, express_bytes);
            }
        }
        if let Some(cap) = port::find_mut(cx.ports, id).and_then(|p| p.capture.as_mut()) {
            for c in &chains[..switched] {
                let mut h = [0u8; virtio_net::HDR_LEN_V1];
                let n = c.read_at(0, &mut h[..hl.min(virtio_net::HDR_LEN_V1)]);
                cap.push(Direction::In, &h[..n], &[Src::Chain(c, hl)]);
            }
        }
        self.work += switched as u64;
        // The receivers get their frames first (used entries published, calls made), then
        // the sender its buffers back: a frame reaches its guest one used-ring update
        // (a fence and a read of the driver's used_event) sooner.
        self.sw.flush_rx();
        // Nothing stops a ring while its burst runs: it is still there.
        let Some(vq) = self.txq(id, qp) else {
            return Ok(false);
        };
        let call = with_ring!(&mut vq.ring, r => finish_burst(r, &chains[..popped], switched));
        vq.burst = chains;
        if call {
            vq.call();
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(until) = throttle {
            vq.throttled = Some(until);
            self.throttled.push((id, qp, until));
            return Ok(false);
        }
        if popped > 0 {
            vq.last_frames = Some(now);
            if vq.kicks_armed && !polled {
                // Frames flow: this ring is looked at every round until it has been empty
                // for EVENT_GRACE, so the guest need not kick (a system call per burst on
                // its side; with EVENT_IDX on a split ring a stale avail_event already
                // says so).
                vq.ring.disable_notify();
                vq.kicks_armed = false;
            }
        }
        if vq.ring.pending() > 0 {
            return Ok(true);
        }
        if polled {
            // The next round polls this ring anyway; kicks stay off.
            return Ok(false);
        }
        if vq
            .last_frames
            .is_some_and(|t| now.saturating_duration_since(t) < EVENT_GRACE)
        {
            // Still pending: looked at again next round, kicks not asked for yet.
            return Ok(true);
        }
        vq.kicks_armed = true;
        let left = vq.ring.enable_notify()?;
        Ok(left > 0)
    }

    /// A frontend truncated a guest memory file (the SIGBUS handler replaced the mapping
    /// with zero pages): the ports whose rings live in it break.
    pub(super) fn break_truncated(&mut self) {
        for i in 0..self.sw.ports.len() {
            let Ok(i) = u16::try_from(i) else { break };
            let hit = self
                .sw
                .port(PortId(i))
                .and_then(Port::vhost_mut)
                .is_some_and(|v| v.rings().any(|q| q.ring.mem().truncated()));
            if hit {
                self.break_port(PortId(i), &RingError::MemoryTruncated);
            }
        }
    }

    /// The guest broke a ring rule: the port stops (see [`Port::mark_broken`]) and its
    /// stations are forgotten.
    pub(super) fn break_port(&mut self, id: PortId, e: &RingError) {
        if self.sw.port(id).is_some_and(|p| p.mark_broken(e)) {
            self.sw.fdb.flush_port(id);
            self.release_holds_for(id);
        }
    }

    pub(super) fn start_queue(&mut self, id: PortId, rq: ReadyQueue) {
        let index = rq.index;
        let polled = self.port_polled(id);
        let me = self.index;
        let Some(p) = self.sw.port(id) else { return };
        if p.vhost_mut().is_none() {
            return;
        }
        let ring = match Ring::new(rq.mem, &rq.cfg) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("port {}: ring {index} refused: {e}", p.name);
                p.broken = true;
                p.counters.count_drop(DropReason::RingBroken);
                p.status.set_broken(Some(format!("ring {index}: {e}")));
                return;
            }
        };
        if p.broken && p.vhost_ref().is_some_and(|v| v.running() == 0) {
            // A broken port comes back once the frontend restarts its rings.
            p.broken = false;
            p.status.set_broken(None);
        }
        p.set_features(rq.features);
        let name = p.name.clone();
        let kick_fd = rq.kick.as_ref().map(AsRawFd::as_raw_fd);
        let mut vq = Vq::new(ring, index, rq.kick, rq.call, rq.err);
        if index % 2 == 0 || polled {
            // Guest rx kicks only say "more buffers", wanted only while a TAP frame waits
            // for them; tx kicks are not needed while we poll.
            vq.ring.disable_notify();
            vq.kicks_armed = false;
        }
        let Some(slot) = p.vhost_mut().and_then(|v| v.slot(index)) else {
            tracing::warn!("port {name}: ring {index} beyond the configured queue pairs");
            return;
        };
        *slot = Some(vq);
        p.publish_running(me);
        tracing::info!(
            "port {name}: ring {index} started on worker {me} ({} ring of {})",
            if rq.cfg.packed { "packed" } else { "split" },
            rq.cfg.size
        );
        if let Some(fd) = kick_fd {
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

    pub(super) fn stop_queue(&mut self, id: PortId, index: u16) -> Option<u32> {
        let p = self.sw.port(id)?;
        let vq = p.vhost_mut()?.slot(index)?.take()?;
        let status = p.status.clone();
        let base = self.retire(vq, &status);
        // Scratch chains let go of guest memory they may still hold.
        self.sw.scratch.release();
        self.pending
            .retain(|&(p, qp)| !(p == id && index % 2 == 1 && qp == index / 2));
        if index % 2 == 0 {
            // Its rx buffers are gone: frames held for them go too.
            self.release_holds_for(id);
        }
        let me = self.index;
        let mut idle = false;
        if let Some(p) = self.sw.port(id) {
            p.publish_running(me);
            idle = p.vhost_ref().is_some_and(|v| v.running() == 0);
            if idle && p.broken {
                // All rings stopped: the frontend reset the device, a broken port is clean.
                p.broken = false;
                p.status.set_broken(None);
            }
        }
        if idle {
            self.sw.fdb.flush_port(id);
        }
        Some(base)
    }

    /// Publishes what is pending on a ring (counting it), stops watching its kick and
    /// returns its base.
    fn retire(&mut self, mut vq: Vq, status: &crate::types::PortStatus) -> u32 {
        vq.flush();
        vq.count_used(status);
        if let Some(k) = &vq.kick {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                k.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        vq.ring.base()
    }

    /// Stops everything of a removed port: its rings, its TAP fds, its pending bursts.
    pub(super) fn drop_port(&mut self, id: PortId, mut p: Port) {
        if let Some(v) = p.vhost_mut() {
            let rings: Vec<Vq> = v
                .rxq
                .iter_mut()
                .chain(v.txq.iter_mut())
                .filter_map(Option::take)
                .collect();
            for vq in rings {
                self.retire(vq, &p.status);
            }
            self.sw.scratch.release();
        }
        if let Some(t) = p.tap_mut() {
            for q in &t.queues {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    q.fd.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
        }
        self.pending.retain(|&(pid, _)| pid != id);
    }
}

/// Pops up to a burst of chains from `ring` into `chains`, walking at most
/// [`TX_DESC_BUDGET`] descriptors (a guest posting maximal chains gets a few frames per
/// round, like everyone else). Returns the chains popped and the error that stopped it.
#[inline(always)]
fn pop_burst<R: DeviceRing>(ring: &mut R, chains: &mut [Chain]) -> (usize, Option<RingError>) {
    let mut popped = 0;
    let mut budget = TX_DESC_BUDGET;
    while popped < chains.len() && budget > 0 {
        match ring.pop(&mut chains[popped]) {
            Ok(true) => {
                budget = budget.saturating_sub(chains[popped].desc_count());
                popped += 1;
            }
            Ok(false) => break,
            Err(e) => return (popped, Some(e)),
        }
    }
    (popped, None)
}

/// Ends a tx burst: the first `switched` of the `popped` chains are used (in pop order),
/// the rest go back to the ring. True if the guest wants a call.
#[inline(always)]
fn finish_burst<R: DeviceRing>(ring: &mut R, popped: &[Chain], switched: usize) -> bool {
    ring.push_used_all(&popped[..switched], 0);
    ring.unpop(u16::try_from(popped.len() - switched).unwrap_or(0));
    ring.flush_used()
}
