//! Switching one frame: from the ingress port (a guest's txq chain, or a buffer read from a
//! TAP fd) to each egress port (a guest's rxq chains, or a `writev` to a TAP fd), with
//! offloads applied exactly as each receiver accepts them.

use std::os::fd::AsRawFd;
use std::time::Instant;

use switch::{Decision, DropReason};
use virtio_net::offload::{self, Delivery};
use virtio_net::{csum, gso, NetHdr, HDR_LEN_V1};
use vring::{Chain, RingError};

use crate::port::{Port, PortId};
use crate::worker::Worker;

/// Largest frame a port may send: a 64 KiB IP packet (IPv6: plus its header) behind a
/// VLAN-tagged Ethernet header.
pub const MAX_FRAME: usize = gso::MAX_FRAME_LEN;
/// Most rx chains one frame may take with MRG_RXBUF (64 KiB in 1 KiB buffers, with room).
const MAX_RX_CHAINS: usize = 80;
/// Most iovecs of one `writev` to a TAP fd (header + chain segments).
const MAX_IOV: usize = vring::MAX_CHAIN_SEGS + 1;

/// Preallocated buffers of a worker: nothing on the per-frame path allocates.
pub(crate) struct Scratch {
    /// rx chains being filled for one frame.
    rx: Vec<Chain>,
    /// The frame, linearized when it must be modified (checksum, segmentation).
    frame: Vec<u8>,
    /// Room for one segment at a time.
    seg: Vec<u8>,
    /// iovecs of a `writev` to a TAP fd.
    iov: Vec<libc::iovec>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            rx: (0..MAX_RX_CHAINS).map(|_| Chain::new()).collect(),
            frame: vec![0; MAX_FRAME],
            seg: vec![0; gso::SCRATCH_LEN],
            iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                MAX_IOV
            ],
        }
    }
}

/// Where the bytes of a frame come from.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    /// A guest's tx chain, from this offset: copied guest to guest (or to the kernel).
    Chain(&'a Chain, usize),
    /// A buffer of ours (read from a TAP fd, completed or segmented).
    Bytes(&'a [u8]),
}

impl Src<'_> {
    fn len(&self) -> usize {
        match self {
            Src::Chain(c, off) => (c.readable_len() as usize).saturating_sub(*off),
            Src::Bytes(b) => b.len(),
        }
    }

    fn read_at(&self, off: usize, buf: &mut [u8]) -> usize {
        match self {
            Src::Chain(c, o) => c.read_at(o + off, buf),
            Src::Bytes(b) => {
                let s = b.get(off..).unwrap_or(&[]);
                let n = s.len().min(buf.len());
                buf[..n].copy_from_slice(&s[..n]);
                n
            }
        }
    }

    /// The same frame without its first `n` bytes.
    fn skip(self, n: usize) -> Self {
        match self {
            Src::Chain(c, o) => Src::Chain(c, o + n),
            Src::Bytes(b) => Src::Bytes(b.get(n..).unwrap_or(&[])),
        }
    }
}

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Delivered, or dropped and counted.
    Done,
    /// Not delivered: its one destination has no rx buffer now. Only when the caller asked
    /// to hold (TAP ingress, which can stop reading instead of dropping).
    Held(PortId),
}

/// Bytes of a frame's start that switching looks at: a virtio_net_hdr v1 and an Ethernet
/// header with a VLAN tag.
pub(crate) const HEAD_LEN: usize = HDR_LEN_V1 + 18;

/// Switches the frame `src` (virtio_net_hdr first) that port `ingress` sent. With `hold`,
/// a unicast frame whose destination has no rx buffer is left to the caller. `pre`: the
/// first [`HEAD_LEN`] bytes of `src`, when the caller read them already.
pub(crate) fn switch_frame(
    w: &mut Worker,
    ingress: PortId,
    src: Src<'_>,
    now: Instant,
    hold: bool,
    pre: Option<&[u8; HEAD_LEN]>,
) -> Outcome {
    let Some(port) = w
        .ports
        .get_mut(usize::from(ingress.0))
        .and_then(Option::as_mut)
    else {
        return Outcome::Done;
    };
    let hl = port.hdr_len;
    // The virtio_net_hdr and Ethernet header (with a VLAN tag), in one inlined copy when
    // they lie in one buffer.
    let mut head = [0u8; HEAD_LEN];
    let fast = match (src, pre) {
        (_, Some(p)) if hl == HDR_LEN_V1 => Some(*p),
        (Src::Chain(c, off), _) if hl == HDR_LEN_V1 => c.read_array::<HEAD_LEN>(off),
        _ => None,
    };
    let got = match fast {
        Some(h) => {
            head = h;
            head.len()
        }
        None => src.read_at(0, &mut head[..hl + 18]),
    };
    let total = src.len();
    if got < hl + 14 || total < hl + 14 {
        port.counters.count_drop(DropReason::BadFrame);
        return Outcome::Done;
    }
    let frame_len = total - hl;
    let Some(hdr) = NetHdr::parse(&head[..hl]) else {
        port.counters.count_drop(DropReason::BadHeader);
        return Outcome::Done;
    };
    if frame_len > MAX_FRAME {
        port.counters.count_drop(DropReason::TooBig);
        return Outcome::Done;
    }
    if offload::validate_tx(&hdr, frame_len, port.tx_caps).is_err() {
        port.counters.count_drop(DropReason::BadHeader);
        return Outcome::Done;
    }
    let eth = &head[hl..hl + 18];
    let mut dst = [0u8; 6];
    let mut smac = [0u8; 6];
    dst.copy_from_slice(&eth[0..6]);
    smac.copy_from_slice(&eth[6..12]);
    let vlan = if got >= hl + 18 && eth[12..14] == [0x81, 0x00] {
        u16::from_be_bytes([eth[14], eth[15]]) & 0x0fff
    } else {
        0
    };
    let data = src.skip(hl);
    let decision = w.fdb.decide(ingress, vlan, smac, dst, now);
    let mut linear = Linear::No;
    // The common case on its own short path: a frame without offloads (flags and gso_type
    // zero) from a guest to one guest whose rxq runs here, or to a TAP.
    if let (Decision::Unicast(egress), Src::Chain(c, off), true) = (
        decision,
        src,
        hl == HDR_LEN_V1 && got == head.len() && hdr.flags == 0 && hdr.gso_type == 0,
    ) {
        let mut sender = [0u8; HDR_LEN_V1];
        sender.copy_from_slice(&head[..HDR_LEN_V1]);
        if let Some(r) = unicast_plain(w, ingress, egress, c, off + hl, frame_len, &sender) {
            account(w, ingress, egress, r);
            if let Some(p) = w
                .ports
                .get_mut(usize::from(ingress.0))
                .and_then(Option::as_mut)
            {
                p.counters.count_rx(frame_len);
            }
            return Outcome::Done;
        }
    }
    match decision {
        Decision::Unicast(egress) => {
            let r = deliver(w, ingress, egress, &hdr, data, frame_len, &mut linear, true);
            // Hold only for a ring of this worker: its rx kick comes here.
            let local = w
                .ports
                .get(usize::from(egress.0))
                .and_then(Option::as_ref)
                .is_some_and(Port::can_receive);
            if hold && local && r == Err(DropReason::NoRxBuffer) {
                return Outcome::Held(egress);
            }
            account(w, ingress, egress, r);
        }
        Decision::Flood => {
            let mut reached = 0;
            for i in 0..w.ports.len() {
                let egress = PortId(u16::try_from(i).unwrap_or(u16::MAX));
                let up = w.ports[i]
                    .as_ref()
                    .is_some_and(|p| p.can_receive() || remote_worker(w.index, p).is_some());
                if egress != ingress && up {
                    let r = deliver(w, ingress, egress, &hdr, data, frame_len, &mut linear, true);
                    account(w, ingress, egress, r);
                    reached += 1;
                }
            }
            if reached == 0 {
                count(w, ingress, DropReason::NoDestination);
            }
        }
        Decision::Drop(reason) => count(w, ingress, reason),
    }
    if let Some(p) = w
        .ports
        .get_mut(usize::from(ingress.0))
        .and_then(Option::as_mut)
    {
        p.counters.count_rx(frame_len);
    }
    Outcome::Done
}

fn count(w: &mut Worker, port: PortId, reason: DropReason) {
    if let Some(p) = w
        .ports
        .get_mut(usize::from(port.0))
        .and_then(Option::as_mut)
    {
        p.counters.count_drop(reason);
    }
}

/// Delivers a frame another worker handed over (`bytes`: virtio_net_hdr v1, then the
/// frame) to `egress`, which runs an rxq here, learning its source on the way.
pub(crate) fn deliver_mail(
    w: &mut Worker,
    ingress: PortId,
    egress: PortId,
    bytes: &[u8],
    now: Instant,
) {
    let Some(hdr) = bytes.get(..HDR_LEN_V1).and_then(NetHdr::parse) else {
        return;
    };
    let frame = &bytes[HDR_LEN_V1..];
    if frame.len() >= 14 {
        let mut smac = [0u8; 6];
        smac.copy_from_slice(&frame[6..12]);
        let vlan = if frame.len() >= 18 && frame[12..14] == [0x81, 0x00] {
            u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff
        } else {
            0
        };
        w.fdb.learn(smac, vlan, ingress, now);
    }
    let mut linear = Linear::No;
    let r = deliver(
        w,
        ingress,
        egress,
        &hdr,
        Src::Bytes(frame),
        frame.len(),
        &mut linear,
        false,
    );
    account(w, ingress, egress, r);
}

/// Counts the result of one delivery where it belongs.
fn account(w: &mut Worker, ingress: PortId, egress: PortId, r: Result<(), DropReason>) {
    match r {
        Ok(()) => {}
        Err(DropReason::RingBroken) => {
            // The receiver's ring is corrupt: that port breaks, the sender is fine.
            let err = w
                .ports
                .get_mut(usize::from(egress.0))
                .and_then(Option::as_mut)
                .and_then(|p| p.last_rx_error.take());
            if let Some(e) = err {
                w.break_port(egress, e);
            }
        }
        Err(DropReason::BadFrame) => count(w, ingress, DropReason::BadFrame),
        Err(DropReason::PortDown) if is_tap_gone(w, egress) => {
            count(w, egress, DropReason::PortDown);
            w.tap_gone(egress, "a write failed");
        }
        Err(reason) => count(w, egress, reason),
    }
}

fn is_tap_gone(w: &Worker, id: PortId) -> bool {
    w.ports
        .get(usize::from(id.0))
        .and_then(Option::as_ref)
        .and_then(|p| p.tap.as_ref())
        .is_some_and(|t| t.gone)
}

/// Whether the frame has been copied into `Scratch::frame` (done at most once per frame,
/// even when flooded to several ports that need it).
#[derive(PartialEq, Eq)]
enum Linear {
    No,
    Yes,
    Failed,
}

/// Delivers a frame without offloads from the chain `src` (frame at `off`, `len` bytes,
/// sent with the virtio_net_hdr v1 `sender` right before it) to `egress`: into one rx
/// buffer of a guest with a running rxq here, a 12-byte header and a first buffer that
/// takes the whole frame; or to a TAP with one `writev`, header included, straight from
/// the chain. `None` leaves everything as it was, for the general path.
///
/// The header delivered is what [`offload::rx_hdr`] makes of a plain one (the sender's,
/// flags zero) with `num_buffers` 1 (a TAP ignores `num_buffers`).
fn unicast_plain(
    w: &mut Worker,
    ingress: PortId,
    egress: PortId,
    src: &Chain,
    off: usize,
    len: usize,
    sender: &[u8; HDR_LEN_V1],
) -> Option<Result<(), DropReason>> {
    let Worker {
        ports,
        scratch,
        rx_hint,
        ..
    } = w;
    let dst = ports.get_mut(usize::from(egress.0))?.as_mut()?;
    if dst.hdr_len != HDR_LEN_V1 || dst.is_broken() {
        return None;
    }
    if let Some(tap) = dst.tap.as_mut() {
        let n = tap.queues.len();
        if tap.gone || n == 0 {
            return None;
        }
        let q = &mut tap.queues[usize::from(ingress.0) % n];
        if !q.out.is_empty() {
            return None;
        }
        let k = src.readable_iovecs(off - HDR_LEN_V1, HDR_LEN_V1 + len, &mut scratch.iov);
        // EAGAIN, a vanished device, any error: the general path tries again and deals
        // with it.
        crate::io::tap_writev(q.fd.as_raw_fd(), &scratch.iov[..k]).ok()?;
        dst.counters.count_tx(len);
        return Some(Ok(()));
    }
    let ring = &mut dst.rx_ring_for(*rx_hint)?.ring;
    if ring.pending() == 0 {
        match ring.refresh_avail() {
            Ok(0) => return Some(Err(DropReason::NoRxBuffer)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    let chain = scratch.rx.first_mut()?;
    if !matches!(ring.pop(chain), Ok(true)) {
        return None;
    }
    let total = HDR_LEN_V1 + len;
    let mut h = *sender;
    h[10..12].copy_from_slice(&1u16.to_le_bytes());
    if chain.writable_len() as usize >= total
        && chain.write_array(0, &h)
        && src.copy_to(off, chain, HDR_LEN_V1, len) == len
    {
        ring.push_used(chain.head(), u32::try_from(total).unwrap_or(u32::MAX));
        dst.rx_dirty = true;
        dst.counters.count_tx(len);
        Some(Ok(()))
    } else {
        ring.unpop(1);
        None
    }
}

/// A worker other than `me` that runs an rxq of `p` (a vhost-user port whose rxqs all
/// run elsewhere), if any.
fn remote_worker(me: usize, p: &Port) -> Option<usize> {
    if p.tap.is_some() || p.is_broken() {
        return None;
    }
    let others = p.status.rx_workers() & !(1u64 << (me % 64));
    (others != 0).then(|| others.trailing_zeros() as usize)
}

/// Delivers one frame to `egress`. With `remote`, a port whose rxqs run on other workers
/// gets the frame through a mailbox (never for frames that came through one).
#[allow(clippy::too_many_arguments)]
fn deliver(
    w: &mut Worker,
    ingress: PortId,
    egress: PortId,
    hdr: &NetHdr,
    data: Src<'_>,
    frame_len: usize,
    linear: &mut Linear,
    remote: bool,
) -> Result<(), DropReason> {
    let Worker {
        ports,
        scratch,
        epoll,
        outbox,
        mailed,
        index,
        rx_hint,
        ..
    } = w;
    let Some(dst) = ports
        .get_mut(usize::from(egress.0))
        .and_then(Option::as_mut)
    else {
        return Err(DropReason::PortDown);
    };
    if !dst.can_receive() {
        let target = if remote {
            remote_worker(*index, dst)
        } else {
            None
        };
        let Some(peer) = target
            .and_then(|t| outbox.get_mut(t))
            .and_then(Option::as_mut)
        else {
            return Err(DropReason::PortDown);
        };
        let mb = &mut peer.mailbox;
        // The frame as it came, header first: the other worker applies the receiver's
        // offloads itself. A full mailbox is a receiver that cannot keep up.
        let pushed = mb.push(ingress, egress, HDR_LEN_V1 + frame_len, |b| {
            let (h, f) = b.split_at_mut(HDR_LEN_V1);
            hdr.write(h);
            data.read_at(0, f);
        });
        if !pushed {
            return Err(DropReason::NoRxBuffer);
        }
        *mailed |= 1u64 << (target.unwrap_or(0) % 64);
        return Ok(());
    }
    let out = Out {
        epoll,
        port: egress,
        hint: usize::from(ingress.0),
        qp: *rx_hint,
    };
    let plan = offload::plan(hdr, dst.rx_caps);
    let out_hdr = offload::rx_hdr(hdr, plan, dst.rx_caps);
    match plan {
        Delivery::AsIs => put(dst, scratch, &out, &out_hdr, data),
        Delivery::CompleteCsum | Delivery::Segment => {
            if *linear == Linear::No {
                let n = data.read_at(0, &mut scratch.frame[..frame_len]);
                let ok = n == frame_len
                    && (plan == Delivery::Segment
                        || csum::complete_hdr(&mut scratch.frame[..frame_len], hdr).is_ok());
                // A completed checksum stays valid for every later receiver; a frame to be
                // segmented is segmented from the original each time.
                *linear = if ok { Linear::Yes } else { Linear::Failed };
            }
            if *linear == Linear::Failed {
                Err(DropReason::BadFrame)
            } else if plan == Delivery::CompleteCsum {
                let Scratch { frame, rx, iov, .. } = scratch;
                let bytes = Src::Bytes(&frame[..frame_len]);
                put_parts(dst, rx, iov, &out, &out_hdr, bytes)
            } else {
                segment_to(dst, scratch, &out, hdr, &out_hdr, frame_len)
            }
        }
    }
}

/// Where a delivery's writes to a TAP go and how to ask for EPOLLOUT.
pub(crate) struct Out<'a> {
    pub epoll: &'a vmm_sys_util::epoll::Epoll,
    pub port: PortId,
    /// Spreads writes over a multiqueue TAP.
    pub hint: usize,
    /// The queue pair the frame came in on: a guest gets it on the same pair.
    pub qp: u16,
}

fn put(
    dst: &mut Port,
    scratch: &mut Scratch,
    out: &Out<'_>,
    hdr: &NetHdr,
    data: Src<'_>,
) -> Result<(), DropReason> {
    let Scratch { rx, iov, .. } = scratch;
    put_parts(dst, rx, iov, out, hdr, data)
}

fn put_parts(
    dst: &mut Port,
    rx: &mut [Chain],
    iov: &mut [libc::iovec],
    out: &Out<'_>,
    hdr: &NetHdr,
    data: Src<'_>,
) -> Result<(), DropReason> {
    if dst.tap.is_some() {
        tap_put(dst, iov, out, hdr, data)
    } else {
        rx_put(dst, rx, out.qp, hdr, data)
    }
}

/// Segments the linearized frame and delivers each segment.
fn segment_to(
    dst: &mut Port,
    scratch: &mut Scratch,
    out: &Out<'_>,
    hdr: &NetHdr,
    out_hdr: &NetHdr,
    frame_len: usize,
) -> Result<(), DropReason> {
    let Scratch {
        rx,
        frame,
        seg,
        iov,
    } = scratch;
    let mut result = Ok(());
    let r = gso::segment(
        hdr,
        &frame[..frame_len],
        seg,
        &mut |s: &[u8]| match put_parts(dst, rx, iov, out, out_hdr, Src::Bytes(s)) {
            Ok(()) => true,
            Err(e) => {
                result = Err(e);
                false
            }
        },
    );
    match r {
        Ok(_) => result,
        Err(_) => Err(DropReason::BadFrame),
    }
}

/// Writes `hdr` + `data` to the host with one `writev` (straight from guest memory when
/// `data` is a chain). When the kernel's queue is full the frame waits in a bounded queue
/// for EPOLLOUT; when that is full too it is dropped.
fn tap_put(
    dst: &mut Port,
    iov: &mut [libc::iovec],
    out: &Out<'_>,
    hdr: &NetHdr,
    data: Src<'_>,
) -> Result<(), DropReason> {
    let Some(tap) = dst.tap.as_mut() else {
        return Err(DropReason::PortDown);
    };
    let n = tap.queues.len();
    if n == 0 {
        return Err(DropReason::PortDown);
    }
    let qi = out.hint % n;
    let q = &mut tap.queues[qi];
    let mut h = *hdr;
    h.num_buffers = 0;
    let mut hb = [0u8; HDR_LEN_V1];
    h.write(&mut hb);
    let len = data.len();
    if q.out.is_empty() {
        iov[0] = libc::iovec {
            iov_base: hb.as_mut_ptr().cast(),
            iov_len: hb.len(),
        };
        let k = match data {
            Src::Chain(c, off) => c.readable_iovecs(off, len, &mut iov[1..]),
            Src::Bytes(b) => {
                iov[1] = libc::iovec {
                    iov_base: b.as_ptr().cast_mut().cast(),
                    iov_len: b.len(),
                };
                1
            }
        };
        match crate::io::tap_writev(q.fd.as_raw_fd(), &iov[..=k]) {
            Ok(_) => {
                dst.counters.count_tx(len);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if crate::io::is_gone(&e) => {
                tap.gone = true;
                return Err(DropReason::PortDown);
            }
            Err(_) => return Err(DropReason::TxError),
        }
    }
    // Keep order: once frames wait, new ones wait behind them.
    let Some(slot) = q.out.push_slot() else {
        return Err(DropReason::TxError);
    };
    slot.extend_from_slice(&hb);
    let start = slot.len();
    slot.resize(start + len, 0);
    data.read_at(0, &mut slot[start..]);
    if !q.out_armed {
        q.out_armed = true;
        crate::worker::set_tap_interest(out.epoll, out.port, qi, q);
    }
    dst.counters.count_tx(len);
    Ok(())
}

/// Writes `hdr` + `data` into the rx buffers of `dst`: one chain, or with MRG_RXBUF as many
/// as needed (§5.1.6.4). Chains are given back if the frame does not fit.
fn rx_put(
    dst: &mut Port,
    chains: &mut [Chain],
    qp: u16,
    hdr: &NetHdr,
    data: Src<'_>,
) -> Result<(), DropReason> {
    let hl = dst.hdr_len;
    let mrg = dst.mrg_rxbuf();
    let len = data.len();
    let total = hl + len;
    let Some(q) = dst.rx_ring_for(qp) else {
        return Err(DropReason::PortDown);
    };
    let ring = &mut q.ring;
    let mut failed: Option<RingError> = None;
    let mut n = 0usize;
    let mut cap = 0usize;
    while cap < total {
        if n == chains.len() || (!mrg && n == 1) {
            ring.unpop(u16::try_from(n).unwrap_or(0));
            return Err(DropReason::TooBig);
        }
        if ring.pending() == 0 {
            match ring.refresh_avail() {
                Ok(0) => {
                    ring.unpop(u16::try_from(n).unwrap_or(0));
                    return Err(DropReason::NoRxBuffer);
                }
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match ring.pop(&mut chains[n]) {
            Ok(true) => {}
            Ok(false) => {
                ring.unpop(u16::try_from(n).unwrap_or(0));
                return Err(DropReason::NoRxBuffer);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        cap += chains[n].writable_len() as usize;
        n += 1;
    }
    if let Some(e) = failed {
        dst.last_rx_error = Some(e);
        return Err(DropReason::RingBroken);
    }
    let mut h = *hdr;
    h.num_buffers = u16::try_from(n).unwrap_or(u16::MAX);
    let mut hb = [0u8; HDR_LEN_V1];
    h.write(&mut hb[..hl]);
    // The common case first: the header in one inlined copy, the frame with one copy.
    if n == 1 && hl == HDR_LEN_V1 {
        if let Src::Chain(c, off) = data {
            if chains[0].write_array(0, &hb) && c.copy_to(off, &chains[0], hl, len) == len {
                ring.push_used(chains[0].head(), u32::try_from(total).unwrap_or(u32::MAX));
                dst.rx_dirty = true;
                dst.counters.count_tx(len);
                return Ok(());
            }
        }
    }
    // Fill the chains in order: header, then the frame.
    let mut w = MultiWriter::new(&chains[..n]);
    w.put_bytes(&hb[..hl]);
    match data {
        Src::Chain(c, off) => w.put_chain(c, off, len),
        Src::Bytes(b) => w.put_bytes(b),
    }
    for (i, c) in chains[..n].iter().enumerate() {
        ring.push_used(c.head(), w.used_len(i));
    }
    dst.rx_dirty = true;
    dst.counters.count_tx(len);
    Ok(())
}

/// Sequential writer over the writable buffers of several chains.
struct MultiWriter<'a> {
    chains: &'a [Chain],
    /// Current chain.
    i: usize,
    /// Offset in the current chain.
    off: usize,
}

impl<'a> MultiWriter<'a> {
    fn new(chains: &'a [Chain]) -> Self {
        MultiWriter {
            chains,
            i: 0,
            off: 0,
        }
    }

    fn room(&self) -> usize {
        self.chains
            .get(self.i)
            .map_or(0, |c| c.writable_len() as usize - self.off)
    }

    fn advance(&mut self, n: usize) {
        self.off += n;
        if self.room() == 0 && self.i + 1 < self.chains.len() {
            self.i += 1;
            self.off = 0;
        }
    }

    fn put_bytes(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            let room = self.room();
            if room == 0 {
                return;
            }
            let n = room.min(b.len());
            let done = self.chains[self.i].write_at(self.off, &b[..n]);
            self.advance(done);
            if done < n {
                return;
            }
            b = &b[n..];
        }
    }

    fn put_chain(&mut self, src: &Chain, mut off: usize, mut len: usize) {
        while len > 0 {
            let room = self.room();
            if room == 0 {
                return;
            }
            let n = room.min(len);
            let done = src.copy_to(off, &self.chains[self.i], self.off, n);
            self.advance(done);
            if done < n {
                return;
            }
            off += n;
            len -= n;
        }
    }

    /// Bytes written into chain `i`.
    fn used_len(&self, i: usize) -> u32 {
        let n = match i.cmp(&self.i) {
            std::cmp::Ordering::Less => self.chains[i].writable_len() as usize,
            std::cmp::Ordering::Equal => self.off,
            std::cmp::Ordering::Greater => 0,
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}
