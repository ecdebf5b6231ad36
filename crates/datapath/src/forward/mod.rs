//! Switching one frame: from the ingress port (a guest's txq chain, or a buffer read from a
//! TAP fd) to each egress port (a guest's rxq chains, or a `writev` to a TAP fd), with
//! offloads applied exactly as each receiver accepts them.
//!
//! Forwarding sees only what it needs ([`Ctx`]: the ports, the FDB, preallocated buffers,
//! the mailboxes to other workers) and says what happened: an [`Outcome`] per frame, and
//! [`Followup`]s for what only the worker can do (its epoll registrations).

mod deliver;
mod express;
mod tapout;

use std::time::Instant;

use switch::{Decision, DropReason, Fdb};
use virtio_net::offload;
use virtio_net::{NetHdr, HDR_LEN_V1};
use wire::EthernetFrame;

use crate::frame::{EthHead, Src, HEAD_LEN};
use crate::links::Outbox;
use crate::port::{find_mut as port_mut, Port};
use crate::types::{PortId, MAX_FRAME};
pub(crate) use deliver::Scratch;
use deliver::{deliver, remote_worker, unicast_plain, Frame, Plain, MAIL_HEAD};
pub(crate) use express::{classify, deliver_run, Express, Fate, Memo, Run};
pub(crate) use tapout::flush_all as flush_taps;

/// What forwarding works with: borrowed from the worker for one frame.
pub(crate) struct Ctx<'a> {
    /// Every port, by id (None: no such port).
    pub ports: &'a mut [Option<Port>],
    pub fdb: &'a mut Fdb<PortId>,
    pub scratch: &'a mut Scratch,
    /// Mailboxes to the workers that run rxqs this one does not.
    pub outbox: &'a mut Outbox,
    /// Things left for the worker, appended (rare: a state change of a TAP queue).
    pub followups: &'a mut Vec<Followup>,
    /// The chains of the running tx burst (empty outside one): frames to TAP queues
    /// written straight from them may wait for its end, to go in batches.
    pub burst: &'a [vring::Chain],
}

/// Where a frame came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ingress {
    pub port: PortId,
    /// The queue pair it came in on: a multiqueue guest receives on the same pair. 0 for
    /// TAP frames and frames from other workers.
    pub qp: u16,
}

impl Ingress {
    pub fn new(port: PortId, qp: u16) -> Ingress {
        Ingress { port, qp }
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

/// Something a delivery changed that the worker must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Followup {
    /// A write found the TAP device of this port gone: let go of its fds.
    TapGone(PortId),
    /// Frames now wait on TAP queue `queue` of `port`: watch it for EPOLLOUT.
    TapWritable { port: PortId, queue: usize },
}

/// Bytes after the Ethernet header read for port security: an IPv6 header, four extension
/// headers of 8 bytes and a neighbour advertisement; ARP needs 28.
const INSPECT_LEN: usize = 40 + 4 * 8 + wire::icmpv6::NEIGHBOR_ADVERT_LEN;

/// Switches the frame `src` (virtio_net_hdr first) that came in at `ingress`. With `hold`,
/// a unicast frame whose destination has no rx buffer is left to the caller. `pre`: the
/// first [`HEAD_LEN`] bytes of `src`, when the caller read them already.
///
/// The headers are read once, into a copy: the checks, the forwarding decision and what is
/// delivered all use that copy (a guest rewriting its buffer meanwhile changes nothing).
pub(crate) fn switch_frame(
    cx: &mut Ctx<'_>,
    ingress: Ingress,
    src: Src<'_>,
    now: Instant,
    hold: bool,
    pre: Option<&[u8; HEAD_LEN]>,
) -> Outcome {
    let Some(port) = port_mut(cx.ports, ingress.port) else {
        return Outcome::Done;
    };
    let hl = port.hdr_len;
    // The virtio_net_hdr and Ethernet header (with a VLAN tag): the caller's copy when it
    // read them already (no second copy), else one inlined copy when they lie in one
    // buffer, else a gathering read.
    let mut local = [0u8; HEAD_LEN];
    let (head, got): (&[u8; HEAD_LEN], usize) = match (pre, src) {
        (Some(p), _) if hl == HDR_LEN_V1 => (p, HEAD_LEN),
        (_, Src::Chain(c, off)) if hl == HDR_LEN_V1 => match c.read_array::<HEAD_LEN>(off) {
            Some(h) => {
                local = h;
                (&local, HEAD_LEN)
            }
            None => {
                let n = src.read_at(0, &mut local);
                (&local, n)
            }
        },
        _ => {
            let n = src.read_at(0, &mut local[..hl + wire::ethernet::TAGGED_HEADER_LEN]);
            (&local, n)
        }
    };
    let total = src.len();
    let eth_head = head
        .get(hl..hl + wire::ethernet::TAGGED_HEADER_LEN)
        .and_then(|b| <&[u8; wire::ethernet::TAGGED_HEADER_LEN]>::try_from(b).ok())
        .and_then(|b| EthHead::new(b, got.saturating_sub(hl)));
    let eth = eth_head
        .as_ref()
        .and_then(|e| EthernetFrame::new_checked(e.as_bytes()).ok());
    let (Some(eth_head), Some(eth), Some(hdr)) = (eth_head, eth, NetHdr::parse(&head[..hl])) else {
        port.counters.count_drop(DropReason::BadFrame);
        return Outcome::Done;
    };
    let frame_len = total - hl;
    if frame_len > MAX_FRAME {
        port.counters.count_drop(DropReason::TooBig);
        return Outcome::Done;
    }
    if offload::validate_tx(&hdr, frame_len, port.tx_caps).is_err() {
        port.counters.count_drop(DropReason::BadHeader);
        return Outcome::Done;
    }
    let vlan = match admit(port, &eth, src.skip(hl), frame_len, now) {
        Ok(v) => v,
        Err(reason) => {
            port.counters.count_drop(reason);
            return Outcome::Done;
        }
    };
    let decision = cx.fdb.decide(ingress.port, vlan, eth.src(), eth.dst(), now);
    let storm = decision == Decision::Flood
        && port_mut(cx.ports, ingress.port).is_some_and(|p| !p.policy.admit_flood(now));
    let decision = if storm {
        Decision::Drop(DropReason::Storm)
    } else {
        decision
    };
    // The common case on its own short path: a frame without offloads (flags and gso_type
    // zero) from a guest to one guest whose rxq runs here, or to a TAP.
    if let (Decision::Unicast(egress), Src::Chain(c, off), true) = (
        decision,
        src,
        hl == HDR_LEN_V1 && got == head.len() && hdr.flags == 0 && hdr.gso_type == 0,
    ) {
        let plain = Plain {
            src: c,
            body: off + hl + eth_head.len(),
            len: frame_len,
            eth: &eth_head,
            vlan,
            now,
        };
        if let Some(r) = unicast_plain(cx, ingress, egress, &plain, head) {
            if r.is_err() {
                account(cx, ingress.port, egress, r);
            }
            if let Some(p) = port_mut(cx.ports, ingress.port) {
                p.counters.count_rx(frame_len);
            }
            return Outcome::Done;
        }
    }
    let body = src.skip(hl + eth_head.len());
    let mut frame = Frame::new(hdr, eth_head, body, vlan, frame_len, now);
    match decision {
        Decision::Unicast(egress) => {
            let r = deliver(cx, ingress, egress, &mut frame, true);
            // Hold only for a ring of this worker: its rx kick comes here.
            let local = port_mut(cx.ports, egress).is_some_and(|p| p.can_receive());
            if hold && local && r == Err(DropReason::NoRxBuffer) {
                return Outcome::Held(egress);
            }
            account(cx, ingress.port, egress, r);
        }
        Decision::Flood => {
            let mut reached = 0;
            for i in 0..cx.ports.len() {
                let egress = PortId(u16::try_from(i).unwrap_or(u16::MAX));
                let me = cx.outbox.me;
                let up = cx.ports[i].as_ref().is_some_and(|p| {
                    (p.can_receive() || remote_worker(me, p).is_some())
                        && p.policy.vlan.egress(vlan, frame.eth.tagged()).is_some()
                });
                if egress != ingress.port && up {
                    let r = deliver(cx, ingress, egress, &mut frame, true);
                    account(cx, ingress.port, egress, r);
                    reached += 1;
                }
            }
            if reached == 0 {
                count(cx, ingress.port, DropReason::NoDestination);
            }
        }
        Decision::Drop(reason) => count(cx, ingress.port, reason),
    }
    if let Some(p) = port_mut(cx.ports, ingress.port) {
        p.counters.count_rx(frame_len);
    }
    Outcome::Done
}

/// The ingress checks of a port's policy: its VLAN (the frame's, or why it is dropped),
/// port security (source MAC, and the IP an ARP or neighbour advertisement claims), and
/// for a TAP its ingress rate (a guest's is applied by not taking frames from its ring).
#[inline(always)]
fn admit(
    port: &mut Port,
    eth: &EthernetFrame<&[u8]>,
    frame: Src<'_>,
    frame_len: usize,
    now: Instant,
) -> Result<u16, DropReason> {
    let vlan = port.policy.vlan.ingress(eth.vlan())?;
    if let Some(sec) = &port.policy.security {
        if !sec.allows_src(&eth.src()) {
            return Err(DropReason::Spoofed);
        }
        let ethertype = eth.inner_ethertype();
        if sec.inspects(ethertype) {
            let mut payload = [0u8; INSPECT_LEN];
            let n = frame.read_at(eth.payload_offset(), &mut payload);
            if !sec.allows_payload(ethertype, &payload[..n]) {
                return Err(DropReason::Spoofed);
            }
        }
    }
    if port.is_tap() && !port.policy.ingress.admit(frame_len, now) {
        return Err(DropReason::Policed);
    }
    Ok(vlan)
}

fn count(cx: &mut Ctx<'_>, port: PortId, reason: DropReason) {
    if let Some(p) = port_mut(cx.ports, port) {
        p.counters.count_drop(reason);
    }
}

/// Delivers a frame another worker handed over (`bytes`: its VLAN and 2 bytes of padding,
/// the virtio_net_hdr v1 as sent, then the frame as sent) to `egress`, which runs an rxq
/// here, learning its source on the way.
pub(crate) fn deliver_mail(
    cx: &mut Ctx<'_>,
    ingress: PortId,
    egress: PortId,
    bytes: &[u8],
    now: Instant,
) {
    let Some(vlan) = bytes.get(..2).map(|v| u16::from_le_bytes([v[0], v[1]])) else {
        return;
    };
    let Some(hdr) = bytes
        .get(MAIL_HEAD..MAIL_HEAD + HDR_LEN_V1)
        .and_then(NetHdr::parse)
    else {
        return;
    };
    let frame = bytes.get(MAIL_HEAD + HDR_LEN_V1..).unwrap_or(&[]);
    let Some(eth_head) = EthHead::from_slice(frame) else {
        return;
    };
    if let Ok(eth) = EthernetFrame::new_checked(frame) {
        cx.fdb.learn(eth.src(), vlan, ingress, now);
    }
    let body = Src::Bytes(frame.get(eth_head.len()..).unwrap_or(&[]));
    let mut f = Frame::new(hdr, eth_head, body, vlan, frame.len(), now);
    let r = deliver(cx, Ingress::new(ingress, 0), egress, &mut f, false);
    account(cx, ingress, egress, r);
}

/// Counts the result of one delivery where it belongs.
#[inline]
fn account(cx: &mut Ctx<'_>, ingress: PortId, egress: PortId, r: Result<(), DropReason>) {
    match r {
        Ok(()) => {}
        // The receiver broke its ring (marked and counted there): forget its stations. The
        // sender is fine.
        Err(DropReason::RingBroken) => {
            cx.fdb.flush_port(egress);
        }
        Err(DropReason::BadFrame) => count(cx, ingress, DropReason::BadFrame),
        Err(reason) => count(cx, egress, reason),
    }
}
