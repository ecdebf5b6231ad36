//! Switching one frame: from a txq chain of the ingress port to the rxq chains of the
//! egress ports, with offloads applied exactly as each receiver negotiated.

use std::time::Instant;

use switch::{Decision, DropReason};
use virtio_net::offload::{self, Delivery, RxCaps, TxCaps};
use virtio_net::{csum, gso, NetHdr, HDR_LEN_V1};
use vring::{Chain, RingError};

use crate::port::{Port, PortId};
use crate::worker::Worker;

/// Largest frame a guest may send: a 64 KiB IP packet (IPv6: plus its header) behind a
/// VLAN-tagged Ethernet header.
pub const MAX_FRAME: usize = gso::MAX_FRAME_LEN;
/// Most rx chains one frame may take with MRG_RXBUF (64 KiB in 1 KiB buffers, with room).
const MAX_RX_CHAINS: usize = 80;

/// Preallocated buffers of a worker: nothing on the per-frame path allocates.
pub(crate) struct Scratch {
    /// rx chains being filled for one frame.
    rx: Vec<Chain>,
    /// The frame, linearized when it must be modified (checksum, segmentation).
    frame: Vec<u8>,
    /// Room for one segment at a time.
    seg: Vec<u8>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            rx: (0..MAX_RX_CHAINS).map(|_| Chain::new()).collect(),
            frame: vec![0; MAX_FRAME],
            seg: vec![0; gso::SCRATCH_LEN],
        }
    }
}

/// Where the bytes of a delivered frame come from.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// The sender's tx chain, from this offset: copied guest to guest.
    Chain(&'a Chain, usize),
    /// A buffer of ours (a completed or segmented frame).
    Bytes(&'a [u8]),
}

/// Handles the frame in `chain` that port `ingress` sent.
pub(crate) fn switch_frame(w: &mut Worker, ingress: PortId, chain: &Chain, now: Instant) {
    let Some(port) = w
        .ports
        .get_mut(usize::from(ingress.0))
        .and_then(Option::as_mut)
    else {
        return;
    };
    let hl = port.hdr_len;
    let mut head = [0u8; HDR_LEN_V1 + 18];
    let got = chain.read_at(0, &mut head[..hl + 18]);
    let total = chain.readable_len() as usize;
    if got < hl + 14 || total < hl + 14 {
        port.counters.count_drop(DropReason::BadFrame);
        return;
    }
    let frame_len = total - hl;
    let Some(hdr) = NetHdr::parse(&head[..hl]) else {
        port.counters.count_drop(DropReason::BadHeader);
        return;
    };
    if frame_len > MAX_FRAME {
        port.counters.count_drop(DropReason::TooBig);
        return;
    }
    if offload::validate_tx(&hdr, frame_len, TxCaps::from_guest_features(port.features)).is_err() {
        port.counters.count_drop(DropReason::BadHeader);
        return;
    }
    let eth = &head[hl..hl + 18];
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&eth[0..6]);
    src.copy_from_slice(&eth[6..12]);
    let vlan = if got >= hl + 18 && eth[12..14] == [0x81, 0x00] {
        u16::from_be_bytes([eth[14], eth[15]]) & 0x0fff
    } else {
        0
    };
    port.counters.count_rx(frame_len);
    match w.fdb.decide(ingress, vlan, src, dst, now) {
        Decision::Unicast(egress) => {
            let mut linear = Linear::No;
            deliver(w, ingress, egress, &hdr, chain, hl, frame_len, &mut linear);
        }
        Decision::Flood => {
            let mut linear = Linear::No;
            let mut reached = 0;
            for i in 0..w.ports.len() {
                let egress = PortId(u16::try_from(i).unwrap_or(u16::MAX));
                let up = w.ports[i].as_ref().is_some_and(Port::can_receive);
                if egress != ingress && up {
                    deliver(w, ingress, egress, &hdr, chain, hl, frame_len, &mut linear);
                    reached += 1;
                }
            }
            if reached == 0 {
                if let Some(p) = w
                    .ports
                    .get_mut(usize::from(ingress.0))
                    .and_then(Option::as_mut)
                {
                    p.counters.count_drop(DropReason::NoDestination);
                }
            }
        }
        Decision::Drop(reason) => {
            if let Some(p) = w
                .ports
                .get_mut(usize::from(ingress.0))
                .and_then(Option::as_mut)
            {
                p.counters.count_drop(reason);
            }
        }
    }
}

/// Whether the frame has been copied into `Scratch::frame` (done at most once per frame,
/// even when flooded to several ports that need it).
#[derive(PartialEq, Eq)]
enum Linear {
    No,
    Yes,
    Failed,
}

#[allow(clippy::too_many_arguments)]
fn deliver(
    w: &mut Worker,
    ingress: PortId,
    egress: PortId,
    hdr: &NetHdr,
    chain: &Chain,
    src_hl: usize,
    frame_len: usize,
    linear: &mut Linear,
) {
    let Worker { ports, scratch, .. } = w;
    let Some(dst) = ports
        .get_mut(usize::from(egress.0))
        .and_then(Option::as_mut)
    else {
        return;
    };
    if !dst.can_receive() {
        dst.counters.count_drop(DropReason::PortDown);
        return;
    }
    let rx = RxCaps::from_guest_features(dst.features);
    let plan = offload::plan(hdr, rx);
    let out_hdr = offload::rx_hdr(hdr, plan, rx);
    let res = match plan {
        Delivery::AsIs => rx_put(
            dst,
            &mut scratch.rx,
            &out_hdr,
            Src::Chain(chain, src_hl),
            frame_len,
        ),
        Delivery::CompleteCsum | Delivery::Segment => {
            if *linear == Linear::No {
                let n = chain.read_at(src_hl, &mut scratch.frame[..frame_len]);
                let ok = n == frame_len
                    && (plan == Delivery::Segment
                        || csum::complete_hdr(&mut scratch.frame[..frame_len], hdr).is_ok());
                *linear = if ok { Linear::Yes } else { Linear::Failed };
                // A completed checksum stays valid for every later receiver; a frame to be
                // segmented is segmented from the original each time.
            }
            if *linear == Linear::Failed {
                Err(DropReason::BadFrame)
            } else if plan == Delivery::CompleteCsum {
                let frame = &scratch.frame[..frame_len];
                rx_put(dst, &mut scratch.rx, &out_hdr, Src::Bytes(frame), frame_len)
            } else {
                segment_to(dst, scratch, hdr, &out_hdr, frame_len)
            }
        }
    };
    match res {
        Ok(()) => {}
        Err(DropReason::RingBroken) => {
            // The receiver's ring is corrupt: that port breaks, the sender is fine.
            drop_broken(w, egress);
        }
        Err(reason) => {
            let attribute_to = if reason == DropReason::BadFrame {
                ingress
            } else {
                egress
            };
            if let Some(p) = w
                .ports
                .get_mut(usize::from(attribute_to.0))
                .and_then(Option::as_mut)
            {
                p.counters.count_drop(reason);
            }
        }
    }
}

fn drop_broken(w: &mut Worker, egress: PortId) {
    let err = w
        .ports
        .get_mut(usize::from(egress.0))
        .and_then(Option::as_mut)
        .and_then(|p| p.last_rx_error.take());
    if let Some(e) = err {
        w.break_port(egress, e);
    }
}

/// Segments the linearized frame and delivers each segment.
fn segment_to(
    dst: &mut Port,
    scratch: &mut Scratch,
    hdr: &NetHdr,
    out_hdr: &NetHdr,
    frame_len: usize,
) -> Result<(), DropReason> {
    let Scratch { rx, frame, seg } = scratch;
    let mut result = Ok(());
    let r = gso::segment(hdr, &frame[..frame_len], seg, &mut |s: &[u8]| match rx_put(
        dst,
        rx,
        out_hdr,
        Src::Bytes(s),
        s.len(),
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

/// Writes `hdr` + `len` bytes of `src` into the rx buffers of `dst`: one chain, or with
/// MRG_RXBUF as many as needed (§5.1.6.4). Chains are given back if the frame does not fit.
fn rx_put(
    dst: &mut Port,
    chains: &mut [Chain],
    hdr: &NetHdr,
    src: Src<'_>,
    len: usize,
) -> Result<(), DropReason> {
    let hl = dst.hdr_len;
    let mrg = dst.mrg_rxbuf();
    let total = hl + len;
    let Some(q) = dst.rx_ring() else {
        return Err(DropReason::PortDown);
    };
    let ring = &mut q.ring;
    let ring_err = |dst_err: &mut Option<RingError>, e: RingError| {
        *dst_err = Some(e);
        DropReason::RingBroken
    };
    let mut err_slot = None;
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
                    let r = ring_err(&mut err_slot, e);
                    dst.last_rx_error = err_slot;
                    return Err(r);
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
                let r = ring_err(&mut err_slot, e);
                dst.last_rx_error = err_slot;
                return Err(r);
            }
        }
        cap += chains[n].writable_len() as usize;
        n += 1;
    }
    let mut h = *hdr;
    h.num_buffers = u16::try_from(n).unwrap_or(u16::MAX);
    let mut hb = [0u8; HDR_LEN_V1];
    h.write(&mut hb[..hl]);
    // Fill the chains in order: header, then the frame.
    let mut w = MultiWriter::new(&chains[..n]);
    w.put_bytes(&hb[..hl]);
    match src {
        Src::Chain(c, off) => w.put_chain(c, off, len),
        Src::Bytes(b) => w.put_bytes(&b[..len]),
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
