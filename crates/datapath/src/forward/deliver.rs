//! Delivering one frame to one egress port: into a guest's rx buffers (mergeable or not,
//! offloads completed or segmented as it needs), to a TAP with one `writev`, or to the
//! worker that runs the port's rxqs.

use switch::DropReason;
use virtio_net::offload::{self, Delivery};
use virtio_net::{csum, gso, NetHdr, HDR_LEN_V1};
use vring::{Chain, IoVecs, RingError, SplitQueue};

use super::{port_mut, Ctx, Followup, Ingress};
use crate::frame::Src;
use crate::port::Port;
use crate::types::{PortId, MAX_FRAME};

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
    pub iov: Vec<libc::iovec>,
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

    /// Lets go of the guest memory the rx chains last pointed into (a ring stopped: its
    /// guest's memory must not stay mapped because of us).
    pub fn release(&mut self) {
        for c in &mut self.rx {
            c.release();
        }
    }
}

/// Whether the frame has been copied into `Scratch::frame` (done at most once per frame,
/// even when flooded to several ports that need it).
#[derive(PartialEq, Eq)]
pub(super) enum Linear {
    No,
    Yes,
    Failed,
}

/// Where a delivery goes and how to spread it.
struct Out {
    port: PortId,
    /// Spreads writes over a multiqueue TAP.
    hint: usize,
    /// The queue pair the frame came in on: a guest gets it on the same pair.
    qp: u16,
}

/// Delivers a frame without offloads from the chain `src` (frame at `off`, `len` bytes,
/// sent with the virtio_net_hdr v1 `sender` right before it) to `egress`: into one rx
/// buffer of a guest with a running rxq here, a 12-byte header and a first buffer that
/// takes the whole frame; or to a TAP with one `writev`, header included, straight from
/// the chain. `None` leaves everything as it was, for the general path.
///
/// The header delivered is what [`offload::rx_hdr`] makes of a plain one (the sender's,
/// flags zero) with `num_buffers` 1 (a TAP ignores `num_buffers`).
pub(super) fn unicast_plain(
    cx: &mut Ctx<'_>,
    ingress: Ingress,
    egress: PortId,
    src: &Chain,
    off: usize,
    len: usize,
    sender: &[u8; HDR_LEN_V1],
) -> Option<Result<(), DropReason>> {
    let dst = port_mut(cx.ports, egress)?;
    if dst.hdr_len != HDR_LEN_V1 || dst.is_broken() {
        return None;
    }
    if let Some(tap) = dst.tap_mut() {
        let (_, q) = tap.queue_for(usize::from(ingress.port.0))?;
        if !q.out.is_empty() {
            return None;
        }
        let mut iov = IoVecs::new(&mut cx.scratch.iov);
        iov.push_chain(src, off - HDR_LEN_V1, HDR_LEN_V1 + len);
        // EAGAIN, a vanished device, any error: the general path tries again and deals
        // with it.
        q.writev(&iov).ok()?;
        dst.counters.count_tx(len);
        return Some(Ok(()));
    }
    let ring = &mut dst.rx_ring_for(ingress.qp)?.ring;
    if ring.pending() == 0 {
        match ring.refresh_avail() {
            Ok(0) => return Some(Err(DropReason::NoRxBuffer)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    let chain = cx.scratch.rx.first_mut()?;
    if !matches!(ring.pop(chain), Ok(true)) {
        return None;
    }
    let total = HDR_LEN_V1 + len;
    let mut h = *sender;
    NetHdr::set_num_buffers(&mut h, 1);
    if chain.writable_len() as usize >= total
        && chain.write_array(0, &h)
        && src.copy_to(off, chain, HDR_LEN_V1, len) == len
    {
        ring.push_used(chain.head(), u32::try_from(total).unwrap_or(u32::MAX));
        delivered(dst, len);
        Some(Ok(()))
    } else {
        ring.unpop(1);
        None
    }
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

/// A frame being switched: its virtio_net_hdr as sent, its bytes, whether it has been
/// linearized yet.
pub(super) struct Frame<'a> {
    pub hdr: NetHdr,
    pub data: Src<'a>,
    pub len: usize,
    pub linear: Linear,
}

impl<'a> Frame<'a> {
    pub fn new(hdr: NetHdr, data: Src<'a>, len: usize) -> Frame<'a> {
        Frame {
            hdr,
            data,
            len,
            linear: Linear::No,
        }
    }
}

/// Delivers `frame` to `egress`. With `remote`, a port whose rxqs run on other workers
/// gets the frame through a mailbox (never for frames that came through one).
pub(super) fn deliver(
    cx: &mut Ctx<'_>,
    ingress: Ingress,
    egress: PortId,
    frame: &mut Frame<'_>,
    remote: bool,
) -> Result<(), DropReason> {
    let Frame {
        hdr,
        data,
        len: frame_len,
        linear,
    } = frame;
    let (hdr, data, frame_len) = (&*hdr, *data, *frame_len);
    let Ctx {
        ports,
        scratch,
        outbox,
        followups,
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
        // offloads itself. A full mailbox is a receiver that cannot keep up.
        let sent = outbox.send(target, ingress.port, egress, HDR_LEN_V1 + frame_len, |b| {
            let (h, f) = b.split_at_mut(HDR_LEN_V1);
            hdr.write(h);
            data.read_at(0, f);
        });
        return if sent {
            Ok(())
        } else {
            Err(DropReason::NoRxBuffer)
        };
    }
    let out = Out {
        port: egress,
        hint: usize::from(ingress.port.0),
        qp: ingress.qp,
    };
    let plan = offload::plan(hdr, dst.rx_caps);
    let out_hdr = offload::rx_hdr(hdr, plan, dst.rx_caps);
    match plan {
        Delivery::AsIs => {
            let Scratch { rx, iov, .. } = &mut **scratch;
            let mut sink = Sink {
                rx,
                iov,
                followups,
                out: &out,
            };
            sink.put(dst, &out_hdr, data)
        }
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
                let Scratch { frame, rx, iov, .. } = &mut **scratch;
                let mut sink = Sink {
                    rx,
                    iov,
                    followups,
                    out: &out,
                };
                sink.put(dst, &out_hdr, Src::Bytes(&frame[..frame_len]))
            } else {
                segment_to(dst, scratch, followups, &out, hdr, &out_hdr, frame_len)
            }
        }
    }
}

/// Where one delivery's bytes go: the receiving port's side (its rx chains or a TAP
/// queue), borrowed from the scratch buffers, and what to report.
struct Sink<'s> {
    rx: &'s mut [Chain],
    iov: &'s mut [libc::iovec],
    followups: &'s mut Vec<Followup>,
    out: &'s Out,
}

impl Sink<'_> {
    fn put(&mut self, dst: &mut Port, hdr: &NetHdr, data: Src<'_>) -> Result<(), DropReason> {
        if dst.is_tap() {
            tap_put(dst, self.iov, self.followups, self.out, hdr, data)
        } else {
            rx_put(dst, self.rx, self.out.qp, hdr, data)
        }
    }
}

/// Segments the linearized frame and delivers each segment.
fn segment_to(
    dst: &mut Port,
    scratch: &mut Scratch,
    followups: &mut Vec<Followup>,
    out: &Out,
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
    let mut sink = Sink {
        rx,
        iov,
        followups,
        out,
    };
    let mut result = Ok(());
    let r = gso::segment(
        hdr,
        &frame[..frame_len],
        seg,
        &mut |s: &[u8]| match sink.put(dst, out_hdr, Src::Bytes(s)) {
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
    followups: &mut Vec<Followup>,
    out: &Out,
    hdr: &NetHdr,
    data: Src<'_>,
) -> Result<(), DropReason> {
    let Some(tap) = dst.tap_mut() else {
        return Err(DropReason::PortDown);
    };
    let Some((qi, q)) = tap.queue_for(out.hint) else {
        return Err(DropReason::PortDown);
    };
    let mut h = *hdr;
    h.num_buffers = 0;
    let mut hb = [0u8; HDR_LEN_V1];
    h.write(&mut hb);
    let len = data.len();
    if q.out.is_empty() {
        let mut v = IoVecs::new(iov);
        v.push_bytes(&hb);
        if !data.push_to(&mut v) {
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
    let Some(slot) = q.out.push_slot() else {
        return Err(DropReason::TxError);
    };
    slot.extend_from_slice(&hb);
    let start = slot.len();
    slot.resize(start + len, 0);
    data.read_at(0, &mut slot[start..]);
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

/// Writes `hdr` + `data` into the rx buffers of `dst`: one chain, or with MRG_RXBUF as many
/// as needed (§5.1.6.4). Chains are given back if the frame does not fit. A ring that
/// breaks the rules marks the port broken.
fn rx_put(
    dst: &mut Port,
    chains: &mut [Chain],
    qp: u16,
    hdr: &NetHdr,
    data: Src<'_>,
) -> Result<(), DropReason> {
    let hl = dst.hdr_len;
    let mrg = dst.mrg_rxbuf();
    let Some(q) = dst.rx_ring_for(qp) else {
        return Err(DropReason::PortDown);
    };
    match fill_rx(&mut q.ring, Rx { hl, mrg }, chains, hdr, data) {
        Ok(()) => {
            delivered(dst, data.len());
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

fn fill_rx(
    ring: &mut SplitQueue,
    Rx { hl, mrg }: Rx,
    chains: &mut [Chain],
    hdr: &NetHdr,
    data: Src<'_>,
) -> Result<(), Fill> {
    let len = data.len();
    let total = hl + len;
    let mut n = 0usize;
    let mut cap = 0usize;
    let give_back = |ring: &mut SplitQueue, n: usize, why: DropReason| {
        ring.unpop(u16::try_from(n).unwrap_or(0));
        Err(Fill::Drop(why))
    };
    while cap < total {
        if n == chains.len() || (!mrg && n == 1) {
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
    // The common case first: the header in one inlined copy, the frame with one copy.
    if n == 1 && hl == HDR_LEN_V1 {
        if let Src::Chain(c, off) = data {
            if chains[0].write_array(0, &hb) && c.copy_to(off, &chains[0], hl, len) == len {
                ring.push_used(chains[0].head(), u32::try_from(total).unwrap_or(u32::MAX));
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
