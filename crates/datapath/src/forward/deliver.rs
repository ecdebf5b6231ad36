//! Delivering one frame to one egress port: into a guest's rx buffers (mergeable or not,
//! offloads completed or segmented as it needs), to a TAP with one `writev`, or to the
//! worker that runs the port's rxqs.

use std::time::Instant;

use switch::{DropReason, TagAction};
use virtio_net::offload::{self, Delivery};
use virtio_net::{csum, gso, NetHdr, GSO_NONE, HDR_F_NEEDS_CSUM, HDR_LEN_V1};
use vring::{with_ring, Chain, DeviceRing, IoVecs, RingError};

use super::tapout::TapOut;
use super::{port_mut, Ctx, Followup, Ingress};
use crate::frame::{EthHead, Src, HEAD_LEN};
use crate::port::tap::BATCH_IOV;
use crate::port::Port;
use crate::types::{PortId, MAX_FRAME};

/// Bytes in front of the virtio_net_hdr of a frame handed to another worker: its VLAN
/// (little-endian) and 2 bytes of padding.
pub(crate) const MAIL_HEAD: usize = 4;
/// Most rx buffers one frame may try: 2, and one more per 256 bytes (a guest posting tiny
/// buffers cannot make every frame walk dozens of them).
fn max_rx_attempts(total: usize) -> usize {
    (2 + total / 256).min(MAX_RX_CHAINS)
}

/// Most rx chains one frame may take with MRG_RXBUF (64 KiB in 1 KiB buffers, with room).
const MAX_RX_CHAINS: usize = 80;
/// Most iovecs of one `writev` to a TAP fd (header + chain segments).
const MAX_IOV: usize = vring::MAX_CHAIN_SEGS + 1;
/// Most TAP queues one burst gathers frames for (beyond that, frames are written at once).
const MAX_DIRTY: usize = 64;

/// Preallocated buffers of a worker: nothing on the per-frame path allocates.
pub(crate) struct Scratch {
    /// rx chains being filled for one frame.
    pub(super) rx: Vec<Chain>,
    /// The frame, linearized when it must be modified (checksum, segmentation).
    frame: Vec<u8>,
    /// Room for one segment at a time.
    seg: Vec<u8>,
    /// iovecs of a `writev` to a TAP fd.
    pub iov: Vec<libc::iovec>,
    /// iovecs of a batch of writes to a TAP queue.
    pub tap_iov: Vec<libc::iovec>,
    /// TAP queues with frames waiting for the end of the burst.
    pub tap_dirty: Vec<(PortId, u16)>,
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
            tap_iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                usize::from(crate::types::BURST) * BATCH_IOV
            ],
            tap_dirty: Vec::with_capacity(MAX_DIRTY),
        }
    }

    /// Lets go of the guest memory the rx chains last pointed into (a ring stopped: its
    /// guest's memory must not stay mapped because of us).
    pub fn release(&mut self) {
        for c in &mut self.rx {
            c.release();
        }
    }
}

/// Whether the frame has been copied into `Scratch::frame` (done at most once per frame
/// and Ethernet header, even when flooded to several ports that need it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Linear {
    No,
    /// Linearized with this Ethernet header.
    Yes(EthHead),
    Failed,
}

/// A frame being switched: its virtio_net_hdr as sent (validated), a copy of its Ethernet
/// header, the bytes after that header, its VLAN.
pub(super) struct Frame<'a> {
    pub hdr: NetHdr,
    pub eth: EthHead,
    pub body: Src<'a>,
    pub vlan: u16,
    /// Length of the whole frame as sent.
    pub len: usize,
    pub now: Instant,
    linear: Linear,
}

impl<'a> Frame<'a> {
    pub fn new(
        hdr: NetHdr,
        eth: EthHead,
        body: Src<'a>,
        vlan: u16,
        len: usize,
        now: Instant,
    ) -> Frame<'a> {
        Frame {
            hdr,
            eth,
            body,
            vlan,
            len,
            now,
            linear: Linear::No,
        }
    }
}

/// Where a delivery goes and how to spread it.
struct Out {
    port: PortId,
    /// Spreads writes over a multiqueue TAP.
    hint: usize,
    /// The queue pair the frame came in on: a guest gets it on the same pair.
    qp: u16,
}

/// `hdr` for a frame whose Ethernet header went from `from` to `to` bytes (a tag added or
/// removed): the checksum start and the header length move with it.
fn shifted(hdr: &NetHdr, from: usize, to: usize) -> NetHdr {
    let mv = |v: u16| {
        (usize::from(v) + to)
            .checked_sub(from)
            .and_then(|x| u16::try_from(x).ok())
            .unwrap_or(v)
    };
    let mut h = *hdr;
    if from != to {
        if h.flags & HDR_F_NEEDS_CSUM != 0 {
            h.csum_start = mv(h.csum_start);
        }
        if h.gso_type != GSO_NONE && h.hdr_len != 0 {
            h.hdr_len = mv(h.hdr_len);
        }
    }
    h
}

/// Whether a frame fits `dst`'s MTU: its IP packet, or for a GSO frame each segment's.
fn fits_mtu(dst: &Port, f: &Frame<'_>) -> bool {
    let Some(mtu) = dst.policy.mtu else {
        return true;
    };
    let l3 = f.len.saturating_sub(f.eth.len());
    if f.hdr.gso_type == GSO_NONE {
        return l3 <= mtu;
    }
    // Headers up to the payload: what the sender says, at least up to the L4 header.
    let headers = usize::from(f.hdr.hdr_len).max(usize::from(f.hdr.csum_start) + 8);
    headers.saturating_sub(f.eth.len()) + usize::from(f.hdr.gso_size) <= mtu
}

/// A frame without offloads in a guest's chain, as [`unicast_plain`] takes it.
pub(super) struct Plain<'a> {
    pub src: &'a Chain,
    /// Where the bytes after the Ethernet header start in `src`.
    pub body: usize,
    /// Length of the whole frame.
    pub len: usize,
    /// The copy of its Ethernet header (what `head` holds after the virtio_net_hdr).
    pub eth: &'a EthHead,
    pub vlan: u16,
    pub now: Instant,
}

/// Delivers a frame without offloads from a guest's chain to `egress`, a port that takes
/// it as it is (no tag to add or remove): into one rx buffer of a guest with a running rxq
/// here, a 12-byte header and a first buffer that takes the whole frame; or to a TAP with
/// one `writev`. `head` is the copy of the virtio_net_hdr v1 and Ethernet header the switch
/// checked: what is written (`num_buffers` set to 1), followed by the rest of the frame
/// straight from the chain. `None` leaves everything as it was, for the general path.
#[inline(always)]
pub(super) fn unicast_plain(
    cx: &mut Ctx<'_>,
    ingress: Ingress,
    egress: PortId,
    f: &Plain<'_>,
    head: &[u8; HEAD_LEN],
) -> Option<Result<(), DropReason>> {
    let (src, off) = (f.src, f.body);
    let dst = port_mut(cx.ports, egress)?;
    let eth_len = f.eth.len();
    let body_len = f.len - eth_len;
    if dst.hdr_len != HDR_LEN_V1
        || dst.is_broken()
        || dst.policy.vlan.egress(f.vlan, f.eth.tagged()) != Some(TagAction::Keep)
        || dst.policy.mtu.is_some_and(|mtu| body_len > mtu)
    {
        return None;
    }
    let limited = dst.policy.egress.is_set();
    if let Some(tap) = dst.tap_mut() {
        if limited {
            return None;
        }
        let (qi, q) = tap.queue_for(usize::from(ingress.port.0))?;
        if !q.out.is_empty() {
            return None;
        }
        let mut t = TapOut {
            burst: cx.burst,
            dirty: &mut cx.scratch.tap_dirty,
            arena: &mut cx.scratch.tap_iov,
        };
        if t.defer(
            (egress, qi),
            q,
            &head[..HDR_LEN_V1 + eth_len],
            src,
            off,
            body_len,
        ) {
            capture_plain(dst, head, eth_len, src, off);
            return Some(Ok(()));
        }
        if !q.pending.is_empty() {
            // The general path writes what waits first.
            return None;
        }
        let mut iov = IoVecs::new(&mut cx.scratch.iov);
        iov.push_bytes(&head[..HDR_LEN_V1 + eth_len]);
        iov.push_chain(src, off, body_len);
        // EAGAIN, a vanished device, any error: the general path tries again and deals
        // with it.
        q.writev(&iov).ok()?;
        dst.counters.count_tx(f.len);
        capture_plain(dst, head, eth_len, src, off);
        return Some(Ok(()));
    }
    let (q, policy) = dst.rx_ring_and_policy(ingress.qp)?;
    let chain = cx.scratch.rx.first_mut()?;
    let egress_limit = limited.then_some(&mut policy.egress);
    let r = with_ring!(&mut q.ring, ring => plain_into(ring, chain, f, head, egress_limit))?;
    if r.is_ok() {
        delivered(dst, f.len);
        capture_plain(dst, head, eth_len, src, off);
    }
    Some(r)
}

/// A frame [`unicast_plain`] delivered, to `dst`'s capture if one runs.
#[inline(always)]
fn capture_plain(dst: &mut Port, head: &[u8; HEAD_LEN], eth_len: usize, src: &Chain, off: usize) {
    if let Some(cap) = dst.capture.as_mut() {
        let (hdr, eth) = head.split_at(HDR_LEN_V1);
        cap.push(
            crate::capture::Direction::Out,
            hdr,
            &[Src::Bytes(&eth[..eth_len]), Src::Chain(src, off)],
        );
    }
}

/// The rx side of [`unicast_plain`], monomorphized per ring layout: one chain popped from
/// `ring` into `chain` that takes the whole frame, the egress rate admitted, the header
/// and frame written, the chain used. `None` gives the chain back for the general path.
#[inline(always)]
fn plain_into<R: DeviceRing>(
    ring: &mut R,
    chain: &mut Chain,
    f: &Plain<'_>,
    head: &[u8; HEAD_LEN],
    egress: Option<&mut crate::policy::Buckets>,
) -> Option<Result<(), DropReason>> {
    if ring.pending() == 0 {
        match ring.refresh_avail() {
            Ok(0) => return Some(Err(DropReason::NoRxBuffer)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    if !matches!(ring.pop(chain), Ok(true)) {
        return None;
    }
    let total = HDR_LEN_V1 + f.len;
    if (chain.writable_len() as usize) < total {
        ring.unpop(1);
        return None;
    }
    if egress.is_some_and(|b| !b.admit(f.len, f.now)) {
        ring.unpop(1);
        return Some(Err(DropReason::Policed));
    }
    let body_len = f.len - f.eth.len();
    if put_head_and_body(chain, head, f.eth.tagged(), f.src, f.body, body_len) {
        ring.push_used(chain, u32::try_from(total).unwrap_or(u32::MAX));
        Some(Ok(()))
    } else {
        ring.unpop(1);
        None
    }
}

/// Writes `head` (a virtio_net_hdr v1, `num_buffers` set to 1 on the way, and an Ethernet
/// header, 18 bytes when `tagged`, else 14) into the first buffer of `chain`, then `len`
/// bytes of `src` from `off` after it: fixed-size copies of the header, one of the rest.
/// False (nothing written) unless the first buffer takes it all.
#[inline(always)]
pub(super) fn put_head_and_body(
    chain: &Chain,
    head: &[u8; HEAD_LEN],
    tagged: bool,
    src: &Chain,
    off: usize,
    len: usize,
) -> bool {
    if tagged {
        chain.put_head_and_copy::<HEAD_LEN>(&rx_head(head), src, off, len)
    } else {
        chain.put_head_and_copy::<PLAIN_HEAD>(&plain_rx_head(head), src, off, len)
    }
}

/// The virtio_net_hdr and untagged Ethernet header of a frame.
pub(super) const PLAIN_HEAD: usize = HDR_LEN_V1 + wire::ethernet::HEADER_LEN;

/// [`rx_head`] of an untagged frame: the header and Ethernet header only.
#[inline(always)]
pub(super) fn plain_rx_head(head: &[u8; HEAD_LEN]) -> [u8; PLAIN_HEAD] {
    const _: () = assert!(PLAIN_HEAD <= HEAD_LEN);
    let mut b = [0u8; PLAIN_HEAD];
    b.copy_from_slice(&rx_head(head)[..PLAIN_HEAD]);
    b
}

/// A frame's first bytes as they go into one rx buffer: `num_buffers` 1.
#[inline(always)]
pub(super) fn rx_head(head: &[u8; HEAD_LEN]) -> [u8; HEAD_LEN] {
    let mut b = *head;
    if let Some(h) = b.first_chunk_mut::<HDR_LEN_V1>() {
        NetHdr::set_num_buffers(h, 1);
    }
    b
}

/// A frame went into `dst`'s rx buffers: count it, and flush its rxqs after the burst.
fn delivered(dst: &mut Port, len: usize) {
    dst.counters.count_tx(len);
    if let Some(v) = dst.vhost_mut() {
        v.rx_dirty = true;
    }
}

/// A worker other than `me` that runs an rxq of `p` (a vhost-user port whose rxqs all
/// run elsewhere), if any.
pub(super) fn remote_worker(me: usize, p: &Port) -> Option<usize> {
    if p.is_tap() || p.is_broken() {
        return None;
    }
    let others = p.status.rx_workers() & !(1u64 << (me % 64));
    (others != 0).then(|| others.trailing_zeros() as usize)
}

/// Delivers `f` to `egress`: its VLAN membership, MTU and egress rate first, then the
/// tag added or removed as the port carries the VLAN, offloads as it accepts them. With
/// `remote`, a port whose rxqs run on other workers gets the frame through a mailbox
/// (never for frames that came through one).
pub(super) fn deliver(
    cx: &mut Ctx<'_>,
    ingress: Ingress,
    egress: PortId,
    f: &mut Frame<'_>,
    remote: bool,
) -> Result<(), DropReason> {
    let Ctx {
        ports,
        scratch,
        outbox,
        followups,
        burst,
        ..
    } = cx;
    let Some(dst) = port_mut(ports, egress) else {
        return Err(DropReason::PortDown);
    };
    if !dst.can_receive() {
        let target = if remote {
            remote_worker(outbox.me, dst)
        } else {
            None
        };
        let Some(target) = target else {
            return Err(DropReason::PortDown);
        };
        // The frame as it came, header first: the other worker applies the receiver's
        // VLAN, limits and offloads itself. A full mailbox is a receiver that cannot keep
        // up.
        let sent = outbox.send(
            target,
            ingress.port,
            egress,
            MAIL_HEAD + HDR_LEN_V1 + f.len,
            |b| {
                b[..2].copy_from_slice(&f.vlan.to_le_bytes());
                let (h, rest) = b[MAIL_HEAD..].split_at_mut(HDR_LEN_V1);
                f.hdr.write(h);
                let (e, body) = rest.split_at_mut(f.eth.len());
                e.copy_from_slice(f.eth.as_bytes());
                f.body.read_at(0, body);
            },
        );
        return if sent {
            Ok(())
        } else {
            Err(DropReason::NoRxBuffer)
        };
    }
    let Some(action) = dst.policy.vlan.egress(f.vlan, f.eth.tagged()) else {
        return Err(DropReason::Vlan);
    };
    if !fits_mtu(dst, f) {
        return Err(DropReason::Oversize);
    }
    let eth = f.eth.with(action);
    let out_len = f.len - f.eth.len() + eth.len();
    if !dst.policy.egress.admit(out_len, f.now) {
        return Err(DropReason::Policed);
    }
    let hdr = shifted(&f.hdr, f.eth.len(), eth.len());
    let out = Out {
        port: egress,
        hint: usize::from(ingress.port.0),
        qp: ingress.qp,
    };
    let plan = offload::plan(&hdr, dst.rx_caps);
    let out_hdr = offload::rx_hdr(&hdr, plan, dst.rx_caps);
    if plan == Delivery::AsIs {
        let Scratch {
            rx,
            iov,
            tap_iov,
            tap_dirty,
            ..
        } = &mut **scratch;
        let mut sink = Sink {
            rx,
            iov,
            followups,
            out: &out,
            tap: TapOut {
                burst,
                dirty: tap_dirty,
                arena: tap_iov,
            },
        };
        return sink.put(dst, &out_hdr, eth.as_bytes(), f.body);
    }
    if f.linear != Linear::Yes(eth) && f.linear != Linear::Failed {
        // The frame as this port gets it, in one buffer: checksum completed once (valid
        // for every later receiver with this header), or to be segmented.
        let buf = &mut scratch.frame[..out_len];
        buf[..eth.len()].copy_from_slice(eth.as_bytes());
        let n = f.body.read_at(0, &mut buf[eth.len()..]);
        let ok = n == out_len - eth.len()
            && (plan == Delivery::Segment || csum::complete_hdr(buf, &hdr).is_ok());
        f.linear = if ok { Linear::Yes(eth) } else { Linear::Failed };
    }
    if f.linear == Linear::Failed {
        return Err(DropReason::BadFrame);
    }
    let Scratch {
        rx,
        frame,
        seg,
        iov,
        tap_iov,
        tap_dirty,
    } = &mut **scratch;
    let mut sink = Sink {
        rx,
        iov,
        followups,
        out: &out,
        tap: TapOut {
            burst,
            dirty: tap_dirty,
            arena: tap_iov,
        },
    };
    let bytes = &frame[..out_len];
    if plan == Delivery::CompleteCsum {
        return sink.put(dst, &out_hdr, &[], Src::Bytes(bytes));
    }
    let mut result = Ok(());
    let r = gso::segment(&hdr, bytes, seg, &mut |s: &[u8]| match sink.put(
        dst,
        &out_hdr,
        &[],
        Src::Bytes(s),
    ) {
        Ok(()) => true,
        Err(e) => {
            result = Err(e);
            false
        }
    });
    match r {
        Ok(_) => result,
        Err(_) => Err(DropReason::BadFrame),
    }
}

/// Where one delivery's bytes go: the receiving port's side (its rx chains or a TAP
/// queue), borrowed from the scratch buffers, and what to report.
struct Sink<'s> {
    rx: &'s mut [Chain],
    iov: &'s mut [libc::iovec],
    followups: &'s mut Vec<Followup>,
    out: &'s Out,
    tap: TapOut<'s>,
}

impl Sink<'_> {
    /// Delivers `hdr`, then `eth`, then `body` to `dst`.
    fn put(
        &mut self,
        dst: &mut Port,
        hdr: &NetHdr,
        eth: &[u8],
        body: Src<'_>,
    ) -> Result<(), DropReason> {
        let r = if dst.is_tap() {
            tap_put(dst, self, hdr, eth, body)
        } else {
            rx_put(dst, self.rx, self.out.qp, hdr, eth, body)
        };
        if r.is_ok() {
            if let Some(cap) = dst.capture.as_mut() {
                let mut hb = [0u8; HDR_LEN_V1];
                hdr.write(&mut hb);
                let hl = dst.hdr_len.min(HDR_LEN_V1);
                cap.push(
                    crate::capture::Direction::Out,
                    &hb[..hl],
                    &[Src::Bytes(eth), body],
                );
            }
        }
        r
    }
}

/// Writes `hdr` + `eth` + `body` to the host with one `writev` (straight from guest memory
/// when `body` is a chain). When the kernel's queue is full the frame waits in a bounded
/// queue for EPOLLOUT; when that is full too it is dropped.
fn tap_put(
    dst: &mut Port,
    sink: &mut Sink<'_>,
    hdr: &NetHdr,
    eth: &[u8],
    body: Src<'_>,
) -> Result<(), DropReason> {
    let out = sink.out;
    let mut h = *hdr;
    h.num_buffers = 0;
    let mut hb = [0u8; HEAD_LEN];
    h.write(&mut hb[..HDR_LEN_V1]);
    let head_len = HDR_LEN_V1 + eth.len();
    if let Some(e) = hb.get_mut(HDR_LEN_V1..head_len) {
        e.copy_from_slice(eth);
    }
    let len = eth.len() + body.len();
    let Some((qi, q)) = dst.tap_mut().and_then(|t| t.queue_for(out.hint)) else {
        return Err(DropReason::PortDown);
    };
    if let (Src::Chain(c, off), true) = (body, head_len <= HEAD_LEN) {
        let blen = body.len();
        if sink
            .tap
            .defer((out.port, qi), q, &hb[..head_len], c, off, blen)
        {
            return Ok(());
        }
    }
    if !q.pending.is_empty() {
        // Frames of this burst wait for this queue: they go first.
        sink.tap
            .flush_before(dst, out.port, qi, sink.iov, sink.followups);
    }
    let Some(tap) = dst.tap_mut() else {
        return Err(DropReason::PortDown);
    };
    let Some((qi, q)) = tap.queue_for(out.hint) else {
        return Err(DropReason::PortDown);
    };
    let hb = &hb[..HDR_LEN_V1];
    let followups = &mut *sink.followups;
    if q.out.is_empty() {
        let mut v = IoVecs::new(sink.iov);
        v.push_bytes(hb);
        if !eth.is_empty() {
            v.push_bytes(eth);
        }
        if !body.push_to(&mut v) {
            return Err(DropReason::TxError);
        }
        match q.writev(&v) {
            Ok(_) => {
                dst.counters.count_tx(len);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if crate::io::is_gone(&e) => {
                if tap.mark_gone() {
                    followups.push(Followup::TapGone(out.port));
                }
                return Err(DropReason::PortDown);
            }
            Err(_) => return Err(DropReason::TxError),
        }
    }
    // Keep order: once frames wait, new ones wait behind them.
    if !q.out.push_copy(&[hb, eth], body, body.len()) {
        return Err(DropReason::TxError);
    }
    if !q.out_armed {
        q.out_armed = true;
        followups.push(Followup::TapWritable {
            port: out.port,
            queue: qi,
        });
    }
    dst.counters.count_tx(len);
    Ok(())
}

/// Writes `hdr` + `eth` + `body` into the rx buffers of `dst`: one chain, or with
/// MRG_RXBUF as many as needed (§5.1.6.4). Chains are given back if the frame does not
/// fit. A ring that breaks the rules marks the port broken.
fn rx_put(
    dst: &mut Port,
    chains: &mut [Chain],
    qp: u16,
    hdr: &NetHdr,
    eth: &[u8],
    body: Src<'_>,
) -> Result<(), DropReason> {
    let hl = dst.hdr_len;
    let mrg = dst.mrg_rxbuf();
    let Some(q) = dst.rx_ring_for(qp) else {
        return Err(DropReason::PortDown);
    };
    let rx = Rx { hl, mrg };
    match with_ring!(&mut q.ring, r => fill_rx(r, rx, chains, hdr, eth, body)) {
        Ok(()) => {
            delivered(dst, eth.len() + body.len());
            Ok(())
        }
        Err(Fill::Drop(reason)) => Err(reason),
        Err(Fill::Broken(e)) => {
            dst.mark_broken(&e);
            Err(DropReason::RingBroken)
        }
    }
}

/// Why an rx delivery failed.
enum Fill {
    Drop(DropReason),
    Broken(RingError),
}

/// How a receiver takes frames: its header length, and whether it merges rx buffers.
#[derive(Clone, Copy)]
struct Rx {
    hl: usize,
    mrg: bool,
}

fn fill_rx<R: DeviceRing>(
    ring: &mut R,
    Rx { hl, mrg }: Rx,
    chains: &mut [Chain],
    hdr: &NetHdr,
    eth: &[u8],
    body: Src<'_>,
) -> Result<(), Fill> {
    let len = eth.len() + body.len();
    let total = hl + len;
    let attempts = max_rx_attempts(total).min(chains.len());
    let mut n = 0usize;
    let mut cap = 0usize;
    let give_back = |ring: &mut R, n: usize, why: DropReason| {
        ring.unpop(u16::try_from(n).unwrap_or(0));
        Err(Fill::Drop(why))
    };
    while cap < total {
        if n == attempts || (!mrg && n == 1) {
            return give_back(ring, n, DropReason::TooBig);
        }
        if ring.pending() == 0 {
            match ring.refresh_avail() {
                Ok(0) => return give_back(ring, n, DropReason::NoRxBuffer),
                Ok(_) => {}
                Err(e) => return Err(Fill::Broken(e)),
            }
        }
        match ring.pop(&mut chains[n]) {
            Ok(true) => {}
            Ok(false) => return give_back(ring, n, DropReason::NoRxBuffer),
            Err(e) => return Err(Fill::Broken(e)),
        }
        cap += chains[n].writable_len() as usize;
        n += 1;
    }
    let mut h = *hdr;
    h.num_buffers = u16::try_from(n).unwrap_or(u16::MAX);
    let mut hb = [0u8; HDR_LEN_V1];
    h.write(&mut hb[..hl]);
    // Fill the chains in order: header, Ethernet header, then the rest.
    let mut w = MultiWriter::new(&chains[..n]);
    w.put_bytes(&hb[..hl]);
    w.put_bytes(eth);
    match body {
        Src::Chain(c, off) => w.put_chain(c, off, body.len()),
        Src::Bytes(b) => w.put_bytes(b),
    }
    for (i, c) in chains[..n].iter().enumerate() {
        ring.push_used(c, w.used_len(i));
    }
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
