//! The vhost-user session: negotiation, memory table and rings, sent in the order of the
//! VMM this driver stands in for ([`SessionStyle`]).

use std::io;
use std::os::unix::net::UnixStream;

use vhost::vhost_user::{Frontend as VuFrontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VringConfigData};
use virtio_net::features as f;

use crate::guest::GuestMemory;
use crate::request::{acked, eventfd, vhost_err};
use crate::{FrontendConfig, FrontendError, MemRegistration, SessionStyle, MAX_MEM_TABLE_REGIONS};
use crate::{Notifiers, QueuePair};

/// What one vhost device negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Negotiated {
    pub offered: u64,
    pub features: u64,
    pub offered_protocol: u64,
    pub protocol: u64,
}

impl Negotiated {
    fn has(&self, p: VhostUserProtocolFeatures) -> bool {
        self.protocol & p.bits() != 0
    }

    fn reply_ack(&self) -> bool {
        self.has(VhostUserProtocolFeatures::REPLY_ACK)
    }

    fn protocol_features(&self) -> bool {
        self.features & f::VHOST_USER_PROTOCOL_FEATURES != 0
    }
}

/// Builds guest memory and queue pairs once the features are known.
pub(crate) type BuildQueues =
    fn(&FrontendConfig, u64) -> Result<(GuestMemory, Vec<QueuePair>), FrontendError>;

/// Sets up the session over `sock` in `c.session`'s order; returns the vhost-user handle,
/// what was negotiated, the guest memory and the queue pairs (rings running unless
/// `c.defer_enable`).
pub(crate) fn start(
    c: &FrontendConfig,
    sock: UnixStream,
    build: BuildQueues,
) -> Result<(VuFrontend, Negotiated, GuestMemory, Vec<QueuePair>), FrontendError> {
    // A second handle on the socket for GET_QUEUE_NUM (see `get_queue_num`).
    let raw = sock
        .try_clone()
        .map_err(FrontendError::io("dup vhost-user socket"))?;
    let mut vu = VuFrontend::from_stream(sock, u64::from(2 * c.queue_pairs));
    let (neg, mem, pairs) = match c.session {
        SessionStyle::OneDevice => one_device(&mut vu, &raw, c, build)?,
        SessionStyle::QemuPerPair => qemu_per_pair(&mut vu, &raw, c, build)?,
    };
    if !neg.reply_ack() {
        // Without REPLY_ACK nothing above was answered: one request with a reply makes
        // sure the backend has processed all of it before we return (as QEMU does).
        vu.get_features()
            .map_err(vhost_err("GET_FEATURES (sync)"))?;
    }
    Ok((vu, neg, mem, pairs))
}

/// DPDK virtio-user's order: one device negotiates, maps memory and sets up every ring.
fn one_device(
    vu: &mut VuFrontend,
    raw: &UnixStream,
    c: &FrontendConfig,
    build: BuildQueues,
) -> Result<(Negotiated, GuestMemory, Vec<QueuePair>), FrontendError> {
    vu.set_owner().map_err(vhost_err("SET_OWNER"))?;
    let neg = negotiate_device(vu, c)?;
    if c.queue_pairs > 1 {
        check_queue_num(raw, c, &neg)?;
    }
    acked(vu, neg.reply_ack(), "SET_FEATURES", |v| {
        v.set_features(neg.features)
    })?;
    let (mem, pairs) = build(c, neg.features)?;
    if use_add_mem_reg(c, &neg)? {
        check_mem_slots(vu, &mem)?;
        add_regions(vu, &neg, &mem)?;
    } else {
        set_mem_table(vu, &neg, &mem)?;
    }
    for (p, pair) in pairs.iter().enumerate() {
        for (q, ring, n) in pair_rings(p, pair) {
            set_up_ring(vu, &neg, &mem, q, ring, n, &ONE_DEVICE_RING_ORDER)?;
        }
    }
    if neg.protocol_features() && !c.defer_enable {
        enable(vu, &neg, 0..2 * usize::from(c.queue_pairs), true)?;
    }
    Ok((neg, mem, pairs))
}

/// QEMU 7.2's order (hw/virtio/vhost.c, vhost-user.c, hw/net/vhost_net.c), as vnetd
/// traced it from a `queues=2,mq=on` guest: `vhost_dev_init` per pair, the netdev's ring
/// enables, then `vhost_dev_start` per pair and the guest driver's enable of every pair.
fn qemu_per_pair(
    vu: &mut VuFrontend,
    raw: &UnixStream,
    c: &FrontendConfig,
    build: BuildQueues,
) -> Result<(Negotiated, GuestMemory, Vec<QueuePair>), FrontendError> {
    let nrings = 2 * usize::from(c.queue_pairs);
    let mut neg = None;
    for p in 0..usize::from(c.queue_pairs) {
        let n = negotiate_device(vu, c)?;
        if p == 0 && n.has(VhostUserProtocolFeatures::MQ) {
            check_queue_num(raw, c, &n)?;
        }
        if n.has(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS) {
            vu.get_max_mem_slots()
                .map_err(vhost_err("GET_MAX_MEM_SLOTS"))?;
        }
        if p == 0 {
            vu.set_owner().map_err(vhost_err("SET_OWNER"))?;
        }
        vu.get_features().map_err(vhost_err("GET_FEATURES"))?;
        // vhost_virtqueue_init: the masked notifier as call fd, and an error fd.
        for q in [2 * p, 2 * p + 1] {
            let masked = eventfd()?;
            vu.set_vring_call(q, &masked)
                .map_err(vhost_err("SET_VRING_CALL"))?;
            vu.set_vring_err(q, &eventfd()?)
                .map_err(vhost_err("SET_VRING_ERR"))?;
        }
        neg = Some(n);
    }
    let neg = neg.ok_or_else(|| FrontendError::Config("queue_pairs 0".into()))?;
    if neg.protocol_features() {
        // The netdev enables the first pair only (the driver enables the rest later),
        // before any SET_FEATURES.
        for q in 0..nrings {
            raw_set_vring_enable(raw, q, q < 2)?;
        }
    }
    let (mem, pairs) = build(c, neg.features)?;
    let add = use_add_mem_reg(c, &neg)?;
    for (p, pair) in pairs.iter().enumerate() {
        acked(vu, neg.reply_ack(), "SET_FEATURES", |v| {
            v.set_features(neg.features)
        })?;
        if add {
            // Every pair: QEMU 7.2 tracks the regions it sent per device.
            add_regions(vu, &neg, &mem)?;
        } else if p == 0 {
            // A one-time request: the other pairs' devices skip it.
            set_mem_table(vu, &neg, &mem)?;
        }
        for (q, ring, n) in pair_rings(p, pair) {
            set_up_ring(vu, &neg, &mem, q, ring, n, &QEMU_RING_ORDER)?;
        }
    }
    if neg.protocol_features() && !c.defer_enable {
        enable(vu, &neg, 0..nrings, true)?;
    }
    Ok((neg, mem, pairs))
}

/// One device's negotiation: GET_FEATURES, then GET/SET_PROTOCOL_FEATURES when the
/// backend offers them.
fn negotiate_device(vu: &mut VuFrontend, c: &FrontendConfig) -> Result<Negotiated, FrontendError> {
    let offered = vu.get_features().map_err(vhost_err("GET_FEATURES"))?;
    let features = negotiate(c, offered)?;
    let mut neg = Negotiated {
        offered,
        features,
        offered_protocol: 0,
        protocol: 0,
    };
    if neg.protocol_features() {
        let p = vu
            .get_protocol_features()
            .map_err(vhost_err("GET_PROTOCOL_FEATURES"))?;
        neg.offered_protocol = p.bits();
        let mut want = VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG;
        if c.mem_registration != MemRegistration::SetMemTable {
            want |= VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
        }
        let p = p & want;
        vu.set_protocol_features(p)
            .map_err(vhost_err("SET_PROTOCOL_FEATURES"))?;
        neg.protocol = p.bits();
    }
    Ok(neg)
}

/// More than one pair needs the MQ protocol feature and a GET_QUEUE_NUM answer of at
/// least `c.queue_pairs`.
fn check_queue_num(
    raw: &UnixStream,
    c: &FrontendConfig,
    neg: &Negotiated,
) -> Result<(), FrontendError> {
    if c.queue_pairs > 1 && !neg.has(VhostUserProtocolFeatures::MQ) {
        return Err(FrontendError::Unsupported(format!(
            "{} queue pairs (no MQ protocol feature)",
            c.queue_pairs
        )));
    }
    let n = get_queue_num(raw)?;
    if n < u64::from(c.queue_pairs) {
        return Err(FrontendError::Unsupported(format!(
            "{} queue pairs (the backend has {n})",
            c.queue_pairs
        )));
    }
    Ok(())
}

/// Whether the memory table goes out as ADD_MEM_REG per region (else SET_MEM_TABLE).
fn use_add_mem_reg(c: &FrontendConfig, neg: &Negotiated) -> Result<bool, FrontendError> {
    let slots = neg.has(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS);
    match c.mem_registration {
        MemRegistration::Auto => Ok(slots),
        MemRegistration::SetMemTable => Ok(false),
        MemRegistration::AddMemReg if slots => Ok(true),
        MemRegistration::AddMemReg => Err(FrontendError::Unsupported(
            "ADD_MEM_REG (no CONFIGURE_MEM_SLOTS protocol feature)".into(),
        )),
    }
}

fn check_mem_slots(vu: &mut VuFrontend, mem: &GuestMemory) -> Result<(), FrontendError> {
    let max = vu
        .get_max_mem_slots()
        .map_err(vhost_err("GET_MAX_MEM_SLOTS"))?;
    let n = mem.region_infos().len();
    if (n as u64) > max {
        return Err(FrontendError::Unsupported(format!(
            "{n} memory regions (backend has {max} slots)"
        )));
    }
    Ok(())
}

fn add_regions(
    vu: &mut VuFrontend,
    neg: &Negotiated,
    mem: &GuestMemory,
) -> Result<(), FrontendError> {
    for r in &mem.region_infos() {
        acked(vu, neg.reply_ack(), "ADD_MEM_REG", |v| v.add_mem_region(r))?;
    }
    Ok(())
}

fn set_mem_table(
    vu: &mut VuFrontend,
    neg: &Negotiated,
    mem: &GuestMemory,
) -> Result<(), FrontendError> {
    let infos = mem.region_infos();
    if infos.len() > MAX_MEM_TABLE_REGIONS {
        return Err(FrontendError::Config(format!(
            "{} regions exceed the {MAX_MEM_TABLE_REGIONS} of SET_MEM_TABLE",
            infos.len()
        )));
    }
    acked(vu, neg.reply_ack(), "SET_MEM_TABLE", |v| {
        v.set_mem_table(&infos)
    })
}

/// The requests that set up one ring.
#[derive(Debug, Clone, Copy)]
enum RingStep {
    Num,
    Addr,
    Base,
    Call,
    Kick,
}

/// DPDK virtio-user's order: the call fd is in place before the kick starts the ring.
const ONE_DEVICE_RING_ORDER: [RingStep; 5] = [
    RingStep::Num,
    RingStep::Addr,
    RingStep::Base,
    RingStep::Call,
    RingStep::Kick,
];

/// QEMU's `vhost_virtqueue_start`: the ring starts on the kick with the call fd set at
/// init, and gets the guest's call fd right after.
const QEMU_RING_ORDER: [RingStep; 5] = [
    RingStep::Num,
    RingStep::Base,
    RingStep::Addr,
    RingStep::Kick,
    RingStep::Call,
];

/// Sends ring `q`'s set-up requests in `order`.
fn set_up_ring(
    vu: &mut VuFrontend,
    neg: &Negotiated,
    mem: &GuestMemory,
    q: usize,
    ring: &crate::driver::DriverRing,
    n: &Notifiers,
    order: &[RingStep],
) -> Result<(), FrontendError> {
    let (base, ring) = (ring.initial_base(), ring.addrs());
    let ack = neg.reply_ack();
    for step in order {
        match step {
            RingStep::Num => acked(vu, ack, "SET_VRING_NUM", |v| v.set_vring_num(q, ring.size)),
            RingStep::Addr => {
                let data = ring_config(mem, ring)?;
                acked(vu, ack, "SET_VRING_ADDR", |v| v.set_vring_addr(q, &data))
            }
            RingStep::Base => acked(vu, ack, "SET_VRING_BASE", |v| v.set_vring_base(q, base)),
            RingStep::Call => acked(vu, ack, "SET_VRING_CALL", |v| v.set_vring_call(q, &n.call)),
            RingStep::Kick => acked(vu, ack, "SET_VRING_KICK", |v| v.set_vring_kick(q, &n.kick)),
        }?;
    }
    Ok(())
}

/// SET_VRING_ENABLE `on` for every ring in `rings`.
fn enable(
    vu: &mut VuFrontend,
    neg: &Negotiated,
    rings: std::ops::Range<usize>,
    on: bool,
) -> Result<(), FrontendError> {
    for q in rings {
        acked(vu, neg.reply_ack(), "SET_VRING_ENABLE", |v| {
            v.set_vring_enable(q, on)
        })?;
    }
    Ok(())
}

/// The rings of pair `p`: (index, ring, notifiers), rxq first.
fn pair_rings(p: usize, pair: &QueuePair) -> [(usize, &crate::driver::DriverRing, &Notifiers); 2] {
    [
        (2 * p, &pair.rx.ring, &pair.rx_notify),
        (2 * p + 1, &pair.tx.ring, &pair.tx_notify),
    ]
}

/// SET_VRING_ADDR's payload: the ring in the frontend's (our) address space.
fn ring_config(
    mem: &GuestMemory,
    addrs: crate::ring::VringAddrs,
) -> Result<VringConfigData, FrontendError> {
    Ok(VringConfigData {
        queue_max_size: addrs.size,
        queue_size: addrs.size,
        flags: 0,
        desc_table_addr: mem.host_addr(addrs.desc)?,
        used_ring_addr: mem.host_addr(addrs.used)?,
        avail_ring_addr: mem.host_addr(addrs.avail)?,
        log_addr: None,
    })
}

/// The virtio features to ack: `offered & wanted`, plus `VIRTIO_NET_F_MQ` when more than
/// one queue pair is configured (without it the device uses pair 0 only; DPDK's vhost
/// library even drops the other pairs), minus `VIRTIO_NET_F_CTRL_VQ`.
///
/// CTRL_VQ is the VMM's business with vhost-user: QEMU and DPDK's virtio-user emulate the
/// control queue themselves, turn `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET` into SET_VRING_ENABLE
/// of each ring and never ack CTRL_VQ to the backend. This driver has no control queue
/// and enables the rings of every configured pair directly, as virtio-user does after
/// the guest's VQ_PAIRS_SET.
fn negotiate(c: &FrontendConfig, offered: u64) -> Result<u64, FrontendError> {
    let mut wanted = c.wanted_features & !f::CTRL_VQ;
    if c.queue_pairs > 1 {
        if offered & f::MQ == 0 {
            return Err(FrontendError::Unsupported(format!(
                "{} queue pairs (the backend does not offer VIRTIO_NET_F_MQ)",
                c.queue_pairs
            )));
        }
        wanted |= f::MQ;
    }
    Ok(offered & wanted)
}

/// vhost-user request codes sent around the `vhost` crate (see [`raw_request`]).
const GET_QUEUE_NUM: u32 = 17;
const SET_VRING_ENABLE: u32 = 18;

/// Sends GET_QUEUE_NUM and returns the answer: the number of queue PAIRS, as QEMU's
/// vhost-user net reads it (it compares the answer with its `queues=`) and DPDK's vhost
/// library gives it (`rte_vhost_driver_get_queue_num`). Backends built on the rust-vmm
/// `vhost-user-backend` crate answer the number of rings, which passes the same check.
///
/// Not through the `vhost` crate: its `get_queue_num` also makes the answer the bound on
/// every later vring index, which would refuse ring `n..2n` of an `n`-pair device.
fn get_queue_num(sock: &UnixStream) -> Result<u64, FrontendError> {
    let reply = raw_request(sock, GET_QUEUE_NUM, &[], true)?.unwrap_or_default();
    let v: [u8; 8] = reply.try_into().map_err(|r: Vec<u8>| FrontendError::Io {
        op: "GET_QUEUE_NUM",
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("reply of {} bytes", r.len()),
        ),
    })?;
    Ok(u64::from_ne_bytes(v))
}

/// SET_VRING_ENABLE without asking for an ack, as QEMU sends it, before SET_FEATURES
/// too (the `vhost` crate refuses that order).
fn raw_set_vring_enable(sock: &UnixStream, q: usize, on: bool) -> Result<(), FrontendError> {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&u32::try_from(q).unwrap_or(u32::MAX).to_ne_bytes());
    body[4..].copy_from_slice(&u32::from(on).to_ne_bytes());
    raw_request(sock, SET_VRING_ENABLE, &body, false).map(drop)
}

/// Sends request `code` with `body` on a second handle of the session's socket and, with
/// `reply`, returns the reply's body. Only while no other request is in flight: the
/// `vhost` crate reads exactly one message per reply and buffers nothing, so its view
/// of the stream is unchanged.
fn raw_request(
    sock: &UnixStream,
    code: u32,
    body: &[u8],
    reply: bool,
) -> Result<Option<Vec<u8>>, FrontendError> {
    use std::io::{Read, Write};
    const VERSION_1: u32 = 0x1;
    const REPLY: u32 = 0x4;
    let io = FrontendError::io("raw vhost-user request");
    let mut msg = Vec::with_capacity(12 + body.len());
    msg.extend_from_slice(&code.to_ne_bytes());
    msg.extend_from_slice(&VERSION_1.to_ne_bytes());
    msg.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_ne_bytes());
    msg.extend_from_slice(body);
    let mut s = sock;
    s.write_all(&msg).map_err(io)?;
    if !reply {
        return Ok(None);
    }
    let mut hdr = [0u8; 12];
    s.read_exact(&mut hdr).map_err(io)?;
    let word = |i: usize| u32::from_ne_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    let (got, flags, size) = (word(0), word(4), word(8));
    if got != code || flags & 0x3 != VERSION_1 || flags & REPLY == 0 || size > 256 {
        return Err(io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("reply to {code}: request {got}, flags {flags:#x}, size {size}"),
        )));
    }
    let mut b = vec![0u8; size as usize];
    s.read_exact(&mut b).map_err(io)?;
    Ok(Some(b))
}
