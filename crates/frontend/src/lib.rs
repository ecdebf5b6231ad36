//! A userspace virtio-net *driver* over vhost-user, like DPDK's virtio-user: it plays the
//! guest and the VMM so tests and benchmarks can drive a vhost-user backend (vnetd, DPDK's
//! vhost PMD, ...) without a VM.
//!
//! * `mem`: the only `unsafe` — memfds mapped shared, raw copies and atomic ring fields.
//! * `guest`: guest physical memory (one or more regions with gaps) and a bump allocator.
//! * `ring`: the driver side of a split virtqueue (virtio 1.x §2.7), notification
//!   suppression both ways, validation of everything the device wrote.
//! * `queue`: virtio-net rx/tx queues (§5.1.6): tx layouts, indirect tables, mergeable rx
//!   buffers.
//! * [`Frontend`]: vhost-user negotiation via the `vhost` crate, then the frame API.
//!
//! Queues are named from the guest's view: on rxq `2p` the device writes, on txq `2p + 1`
//! it reads.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod config;
mod error;
mod guest;
mod mem;
mod queue;
mod ring;
mod session;
#[cfg(test)]
mod testutil;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend as VuFrontend, VhostUserFrontend, VhostUserProtocolFeatures};
use virtio_net::{features as f, NetHdr};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use config::{FrontendConfig, MemRegistration, SessionStyle, TxLayout, DEFAULT_FEATURES};
pub use error::FrontendError;
pub use ring::VringAddrs;

use guest::GuestMemory;
use queue::{QueueParams, RxPoll, RxQueue, TxQueue};

/// Most regions one `SET_MEM_TABLE` may carry (`VHOST_MEMORY_BASELINE_NREGIONS`).
pub const MAX_MEM_TABLE_REGIONS: usize = 8;

/// A descriptor as a hostile test wants to write it (`struct virtq_desc`, §2.7.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawDesc {
    /// Guest physical address of the buffer.
    pub addr: u64,
    /// Length of the buffer.
    pub len: u32,
    /// `RawDesc::NEXT | WRITE | INDIRECT` bits (anything goes).
    pub flags: u16,
    /// Next descriptor id when `NEXT` is set.
    pub next: u16,
}

impl RawDesc {
    /// `VIRTQ_DESC_F_NEXT`.
    pub const NEXT: u16 = ring::DESC_F_NEXT;
    /// `VIRTQ_DESC_F_WRITE`.
    pub const WRITE: u16 = ring::DESC_F_WRITE;
    /// `VIRTQ_DESC_F_INDIRECT`.
    pub const INDIRECT: u16 = ring::DESC_F_INDIRECT;

    /// The 16 bytes of the descriptor as they sit in the table.
    pub fn encode(&self) -> [u8; 16] {
        ring::encode_desc(self.addr, self.len, self.flags, self.next)
    }
}

pub use virtio_net::config::NetConfig;

/// Notifier pair of one vring.
#[derive(Debug)]
struct Notifiers {
    kick: EventFd,
    call: EventFd,
}

impl Notifiers {
    fn new() -> Result<Notifiers, FrontendError> {
        let ev = || {
            EventFd::new(EFD_NONBLOCK).map_err(|source| FrontendError::Io {
                op: "eventfd",
                source,
            })
        };
        Ok(Notifiers {
            kick: ev()?,
            call: ev()?,
        })
    }

    fn kick(&self) -> Result<(), FrontendError> {
        self.kick.write(1).map_err(|source| FrontendError::Io {
            op: "kick eventfd write",
            source,
        })
    }

    /// Clears a pending call.
    fn drain_call(&self) -> Result<(), FrontendError> {
        match self.call.read() {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(source) => Err(FrontendError::Io {
                op: "call eventfd read",
                source,
            }),
        }
    }
}

#[derive(Debug)]
struct QueuePair {
    rx: RxQueue,
    tx: TxQueue,
    rx_notify: Notifiers,
    tx_notify: Notifiers,
    /// Waits for the rx call eventfd.
    epoll: Epoll,
    /// Set once the backend misbehaved on the rxq / txq; the queue is unusable then.
    rx_broken: Option<String>,
    tx_broken: Option<String>,
}

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

fn vhost_err(op: &'static str) -> impl FnOnce(vhost::Error) -> FrontendError {
    move |source| FrontendError::Vhost { op, source }
}

/// Runs a request that has no reply of its own with NEED_REPLY set when REPLY_ACK was
/// negotiated, so a NACK surfaces as an error right there.
fn acked<T>(
    vu: &mut VuFrontend,
    reply_ack: bool,
    op: &'static str,
    req: impl FnOnce(&mut VuFrontend) -> vhost::Result<T>,
) -> Result<T, FrontendError> {
    if reply_ack {
        vu.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    let r = req(vu);
    if reply_ack {
        vu.set_hdr_flags(VhostUserHeaderFlag::empty());
    }
    r.map_err(vhost_err(op))
}

/// Checks what can be checked before talking to the backend.
fn validate(c: &FrontendConfig) -> Result<(), FrontendError> {
    if !c.queue_size.is_power_of_two() || c.queue_size > 32768 {
        return Err(FrontendError::Config(format!(
            "queue_size {} must be a power of two <= 32768",
            c.queue_size
        )));
    }
    if c.queue_pairs == 0 || c.queue_pairs > 0x7fff {
        return Err(FrontendError::Config(format!(
            "queue_pairs {}",
            c.queue_pairs
        )));
    }
    Ok(())
}

fn connect_socket(path: &Path, timeout: Duration) -> Result<UnixStream, FrontendError> {
    // None: too far in the future to represent, i.e. no deadline.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && deadline.is_none_or(|d| Instant::now() < d) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(FrontendError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Guest memory and every queue pair for `features`, rx buffers posted and published.
fn build_queues(
    c: &FrontendConfig,
    features: u64,
) -> Result<(GuestMemory, Vec<QueuePair>), FrontendError> {
    let hdr_len = virtio_net::hdr_len(features);
    let mut mem = GuestMemory::new(c.guest_base, c.mem_size, c.regions)?;
    let event_idx = features & f::RING_EVENT_IDX != 0;
    let indirect = c.use_indirect && features & f::RING_INDIRECT_DESC != 0;
    let mrg = features & f::MRG_RXBUF != 0;
    let big_rx = features & (f::GUEST_TSO4 | f::GUEST_TSO6 | f::GUEST_UFO) != 0;
    let big_tx = features & (f::HOST_TSO4 | f::HOST_TSO6 | f::HOST_UFO) != 0;
    let mut pairs = Vec::with_capacity(usize::from(c.queue_pairs));
    for p in 0..c.queue_pairs {
        let params = |index, big| QueueParams {
            index,
            size: c.queue_size,
            event_idx,
            hdr_len,
            indirect,
            big,
        };
        let rx = RxQueue::new(&mut mem, params(2 * p, big_rx), mrg, c.rx_buf_size)?;
        let tx = TxQueue::new(&mut mem, params(2 * p + 1, big_tx), c.tx_layout)?;
        let rx_notify = Notifiers::new()?;
        let tx_notify = Notifiers::new()?;
        let epoll = Epoll::new().map_err(|source| FrontendError::Io {
            op: "epoll_create",
            source,
        })?;
        epoll
            .ctl(
                ControlOperation::Add,
                rx_notify.call.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .map_err(|source| FrontendError::Io {
                op: "epoll_ctl",
                source,
            })?;
        pairs.push(QueuePair {
            rx,
            tx,
            rx_notify,
            tx_notify,
            epoll,
            rx_broken: None,
            tx_broken: None,
        });
    }
    // Make the posted rx buffers visible before the backend can look at the ring.
    for p in &mut pairs {
        p.rx.publish(&mem)?;
    }
    Ok((mem, pairs))
}

/// A connected virtio-net driver: guest memory, rings, and the vhost-user session.
pub struct Frontend {
    config: FrontendConfig,
    vu: Option<VuFrontend>,
    mem: GuestMemory,
    offered_features: u64,
    features: u64,
    offered_protocol: u64,
    protocol: u64,
    hdr_len: usize,
    pairs: Vec<QueuePair>,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fm.debug_struct("Frontend")
            .field("socket", &self.config.socket)
            .field("connected", &self.vu.is_some())
            .field("features", &f::describe(self.features))
            .field("protocol", &format_args!("{:#x}", self.protocol))
            .field("queue_pairs", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

impl Frontend {
    /// Connects to `config.socket` (retrying until `connect_timeout`), negotiates, sets up
    /// guest memory and every queue pair, posts rx buffers and enables the rings.
    pub fn connect(config: FrontendConfig) -> Result<Frontend, FrontendError> {
        validate(&config)?;
        let sock = connect_socket(&config.socket, config.connect_timeout)?;
        Frontend::over_stream(config, sock)
    }

    /// Plays the VMM in server mode (QEMU `server=on`): waits up to
    /// `config.connect_timeout` for the backend to connect to `listener`, then sets up as
    /// [`Frontend::connect`] does.
    pub fn accept(
        config: FrontendConfig,
        listener: &std::os::unix::net::UnixListener,
    ) -> Result<Frontend, FrontendError> {
        let io = |op| move |source| FrontendError::Io { op, source };
        listener
            .set_nonblocking(true)
            .map_err(io("set_nonblocking"))?;
        let deadline = std::time::Instant::now() + config.connect_timeout;
        let sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() >= deadline {
                        return Err(FrontendError::Io {
                            op: "accept (timed out)",
                            source: e,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(FrontendError::Io {
                        op: "accept",
                        source: e,
                    })
                }
            }
        };
        sock.set_nonblocking(false).map_err(io("set_nonblocking"))?;
        Frontend::over_stream(config, sock)
    }

    /// Sets up a virtio-net device over an already connected vhost-user socket.
    pub fn over_stream(
        config: FrontendConfig,
        sock: std::os::unix::net::UnixStream,
    ) -> Result<Frontend, FrontendError> {
        validate(&config)?;
        let (vu, neg, mem, pairs) = session::start(&config, sock, build_queues)?;
        // Tell the device about the rx buffers (it may poll and not need this).
        for p in &pairs {
            p.rx_notify.kick()?;
        }
        Ok(Frontend {
            config,
            vu: Some(vu),
            mem,
            offered_features: neg.offered,
            features: neg.features,
            offered_protocol: neg.offered_protocol,
            protocol: neg.protocol,
            hdr_len: virtio_net::hdr_len(neg.features),
            pairs,
        })
    }

    /// Drops the vhost-user socket. Rings and memory stay; data calls then fail with
    /// [`FrontendError::Disconnected`].
    pub fn disconnect(&mut self) {
        self.vu = None;
    }

    /// Whether the socket is still held.
    pub fn is_connected(&self) -> bool {
        self.vu.is_some()
    }

    /// Drops the current session and connects again from scratch with the same
    /// configuration (fresh memory, rings and negotiation). On error the frontend stays
    /// disconnected.
    pub fn reconnect(&mut self) -> Result<(), FrontendError> {
        self.disconnect();
        let new = Frontend::connect(self.config.clone())?;
        *self = new;
        Ok(())
    }

    /// The configuration this frontend was connected with.
    pub fn config(&self) -> &FrontendConfig {
        &self.config
    }

    /// Virtio feature bits the backend offered.
    pub fn offered_features(&self) -> u64 {
        self.offered_features
    }

    /// Negotiated virtio feature bits (`offered & wanted`, see
    /// [`FrontendConfig::wanted_features`]).
    pub fn negotiated_features(&self) -> u64 {
        self.features
    }

    /// vhost-user protocol feature bits the backend offered (0 without
    /// VHOST_USER_F_PROTOCOL_FEATURES).
    pub fn offered_protocol_features(&self) -> u64 {
        self.offered_protocol
    }

    /// Negotiated vhost-user protocol feature bits.
    pub fn protocol_features(&self) -> u64 {
        self.protocol
    }

    /// Length of the virtio-net header in every buffer (10 or 12).
    pub fn hdr_len(&self) -> usize {
        self.hdr_len
    }

    /// Number of queue pairs.
    pub fn queue_pairs(&self) -> u16 {
        u16::try_from(self.pairs.len()).unwrap_or(u16::MAX)
    }

    /// Largest frame `send` accepts on this configuration.
    pub fn max_tx_frame(&self) -> usize {
        self.pairs.first().map_or(0, |p| p.tx.max_frame())
    }

    /// Number of rx chains kept posted on each rxq: with MRG_RXBUF each is one
    /// `rx_buf_size` buffer, otherwise each holds a whole frame. A backend drops what does
    /// not fit, so bursts larger than this may lose frames.
    pub fn rx_chains(&self) -> usize {
        self.pairs.first().map_or(0, |p| p.rx.chains())
    }

    /// Reads `virtio_net_config` with GET_CONFIG; `None` without the CONFIG protocol
    /// feature. (DPDK 22.11's vhost library does not offer CONFIG for net devices.)
    pub fn net_config(&mut self) -> Result<Option<NetConfig>, FrontendError> {
        if self.protocol & VhostUserProtocolFeatures::CONFIG.bits() == 0 {
            return Ok(None);
        }
        let vu = self.vu.as_mut().ok_or(FrontendError::Disconnected)?;
        let size: u32 = if self.features & f::MTU != 0 { 12 } else { 10 };
        let buf = vec![0u8; size as usize];
        let (_, payload) = vu
            .get_config(0, size, VhostUserConfigFlags::empty(), &buf)
            .map_err(vhost_err("GET_CONFIG"))?;
        Ok(Some(NetConfig::parse(&payload)))
    }

    /// The device MAC from the config space: `None` unless VIRTIO_NET_F_MAC and the CONFIG
    /// protocol feature were both negotiated.
    pub fn mac(&mut self) -> Result<Option<[u8; 6]>, FrontendError> {
        if self.features & f::MAC == 0 {
            return Ok(None);
        }
        Ok(self.net_config()?.map(|c| c.mac))
    }

    fn pair_index(&self, qp: u16) -> Result<usize, FrontendError> {
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
        let mut events = [EpollEvent::default(); 1];
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
                let ms = deadline.map_or(i32::MAX, |d| {
                    let ms = (d - now).as_micros().div_ceil(1000);
                    i32::try_from(ms).unwrap_or(i32::MAX)
                });
                match pair.epoll.wait(ms, &mut events) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(FrontendError::Io {
                            op: "epoll_wait",
                            source,
                        })
                    }
                }
                pair.rx_notify.drain_call()?;
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

    // ---- raw access for hostile-driver tests ----

    fn vring(&self, q: u16) -> Result<(&ring::SplitRing, &Notifiers), FrontendError> {
        let p = self
            .pairs
            .get(usize::from(q / 2))
            .ok_or(FrontendError::NoSuchQueue(q))?;
        Ok(if q % 2 == 0 {
            (&p.rx.ring, &p.rx_notify)
        } else {
            (&p.tx.ring, &p.tx_notify)
        })
    }

    /// Sends SET_VRING_ENABLE 1 for every ring (after a connect with
    /// [`FrontendConfig::defer_enable`]); a no-op without PROTOCOL_FEATURES.
    pub fn enable_rings(&mut self) -> Result<(), FrontendError> {
        if self.features & f::VHOST_USER_PROTOCOL_FEATURES == 0 {
            return Ok(());
        }
        let n = self.pairs.len() * 2;
        let reply_ack = self.protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0;
        let vu = self.vu.as_mut().ok_or(FrontendError::Disconnected)?;
        for q in 0..n {
            acked(vu, reply_ack, "SET_VRING_ENABLE", |v| {
                v.set_vring_enable(q, true)
            })?;
        }
        Ok(())
    }

    /// Guest physical addresses of vring `q` (rx of pair p is 2p, tx 2p+1).
    pub fn vring_addrs(&self, q: u16) -> Result<VringAddrs, FrontendError> {
        Ok(self.vring(q)?.0.addrs())
    }

    /// The call eventfd of vring `q` (for callers that run their own epoll loop).
    pub fn call_fd(&self, q: u16) -> Result<RawFd, FrontendError> {
        Ok(self.vring(q)?.1.call.as_raw_fd())
    }

    /// Hostile-test helper: truncates the memory files shared with the backend to zero
    /// bytes, as a frontend may do at any time. This frontend must not be used afterwards,
    /// nor dropped (its own accesses would fault): `std::mem::forget` it.
    pub fn truncate_memory(&self) -> std::io::Result<()> {
        self.mem.truncate_all()
    }

    /// Hostile-test helper: writes `descs` verbatim into the txq descriptor table of pair
    /// `qp` at ids `0..descs.len()` (which must not be in flight: completed chains are
    /// reclaimed first), appends `heads` (unchecked, may be out of range) to the avail
    /// ring, publishes and kicks. The ids stay reserved until as many used elements as
    /// `heads` came back.
    pub fn raw_post_tx(
        &mut self,
        queue_pair: u16,
        descs: &[RawDesc],
        heads: &[u16],
    ) -> Result<(), FrontendError> {
        let i = self.pair_index(queue_pair)?;
        let mem = &mut self.mem;
        let pair = &mut self.pairs[i];
        // Best effort: a broken backend must not stop a hostile test.
        let _ = pair.tx.reclaim(mem);
        let raw: Vec<[u8; 16]> = descs.iter().map(RawDesc::encode).collect();
        pair.tx.ring.raw_post(mem, &raw, heads)?;
        pair.tx_notify.kick()
    }

    /// Hostile-test helper: stores `idx` into `avail.idx` of vring `q` (Release) without
    /// touching the driver's own bookkeeping. Does not kick.
    pub fn set_avail_idx(&mut self, q: u16, idx: u16) -> Result<(), FrontendError> {
        let a = self.vring_addrs(q)?;
        self.mem
            .store_u16(a.avail + 2, idx, std::sync::atomic::Ordering::Release)
    }

    /// Writes `bytes` into guest memory at guest physical address `gpa` (range checked).
    pub fn write_guest(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), FrontendError> {
        self.mem.write(gpa, bytes)
    }

    /// Reads guest memory at `gpa` into `buf` (range checked).
    pub fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> Result<(), FrontendError> {
        self.mem.read(gpa, buf)
    }

    /// Allocates `len` bytes of guest memory (never freed), e.g. for raw descriptors.
    pub fn alloc_guest(&mut self, len: u64, align: u64) -> Result<u64, FrontendError> {
        self.mem.alloc(len, align)
    }

    /// Total guest memory in bytes.
    pub fn guest_mem_size(&self) -> u64 {
        self.mem.total()
    }

    /// Kicks vring `q` unconditionally.
    pub fn kick(&self, q: u16) -> Result<(), FrontendError> {
        self.vring(q)?.1.kick()
    }
}

#[cfg(test)]
mod tests;
