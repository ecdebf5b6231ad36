//! The vhost-user backend of a virtio-net port.
//!
//! The `vhost` crate parses and validates protocol messages and passes fds; [`VhostUserNet`]
//! is our request handler. It keeps the per-ring state the frontend sets (size, addresses,
//! base, kick/call/err fds, enable) and the guest's memory table, and decides when a ring
//! starts and stops. A started ring is handed to the datapath as a [`ReadyQueue`] through
//! the [`QueueControl`] trait the datapath implements, so this crate knows nothing of
//! threads: the control thread calls `handle_request` when the socket is readable.
//!
//! Ring lifecycle (vhost-user.rst, "Starting and stopping rings"): a ring starts when its
//! kick fd arrives and it is enabled (immediately when PROTOCOL_FEATURES was not
//! negotiated, else on SET_VRING_ENABLE 1), and stops on GET_VRING_BASE, on
//! SET_VRING_ENABLE 0, on reset and on disconnect. Kicks that arrive before the start are
//! not lost: the eventfd keeps its count and the datapath processes a ring once when it
//! starts.
#![deny(unsafe_code)]
#![deny(missing_docs)]

use std::fs::File;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserSharedMsg,
    VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{Error as VuError, GpuBackend, VhostUserBackendReqHandlerMut};
use virtio_net::config::NetConfig;
use virtio_net::features as f;
use vring::mem::{Added, Removed};
use vring::{GuestMemory, QueueConfig, RegionSpec};

pub mod conn;
pub mod server;
mod sys;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(test)]
mod tests;

type VuResult<T> = std::result::Result<T, VuError>;

/// The virtio features vnetd offers on every vhost-user port. The offload set is what the
/// switch can deliver to any other port: software segmentation and checksumming cover
/// receivers that did not accept an offload.
pub const OFFERED_FEATURES: u64 = f::VERSION_1
    | f::MAC
    | f::STATUS
    | f::MTU
    | f::MRG_RXBUF
    | f::CSUM
    | f::GUEST_CSUM
    | f::HOST_TSO4
    | f::HOST_TSO6
    | f::HOST_ECN
    | f::GUEST_TSO4
    | f::GUEST_TSO6
    | f::GUEST_ECN
    | f::RING_EVENT_IDX
    | f::RING_INDIRECT_DESC
    // The datapath uses chains in the order they were made available on every ring (tx
    // chains complete in pop order within a burst; rx chains are filled in pop order and
    // ones a frame did not need are given back, not skipped), which is all IN_ORDER asks;
    // drivers then take their cheaper in-order paths.
    | f::IN_ORDER
    // Packed virtqueues (§2.8): every ring may be either layout, as the driver chooses.
    | f::RING_PACKED
    | f::VHOST_USER_PROTOCOL_FEATURES;

/// Added to [`OFFERED_FEATURES`] on a port with more than one queue pair.
///
/// `VIRTIO_NET_F_MQ`: without it the guest never learns `max_virtqueue_pairs` and drives
/// one pair. QEMU lists MQ in `user_feature_bits` (hw/net/vhost_net.c), so the guest gets
/// it only if the backend offers it; DPDK's virtio-user (virtio_user_dev.c) takes it from
/// the backend's GET_FEATURES and drops it when PROTOCOL_F_MQ was not negotiated.
///
/// `VIRTIO_NET_F_CTRL_VQ`: MQ depends on it (virtio 1.x §5.1.3.1) because the driver
/// switches pairs on with `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET` on the control virtqueue.
/// With vhost-user that queue never reaches the backend: the frontend emulates it and
/// turns the command into SET_VRING_ENABLE of each ring (QEMU's virtio-net device;
/// DPDK's `virtio_user_handle_mq`; cloud-hypervisor's `NetCtrlEpollHandler`). Whether
/// the backend must offer the bit depends on the frontend:
/// * QEMU today does not list CTRL_VQ in `user_feature_bits`: the guest gets it
///   whatever the backend offers, and it is never acked to the backend. The 2.x-era
///   vhost_net.c listed it next to MQ, so there the guest got CTRL_VQ (and a Linux
///   guest, which refuses MQ without CTRL_VQ, got MQ) only if the backend offered it.
/// * DPDK's virtio-user adds it on its own side (`frontend_features`, "device does not
///   really need to know anything about CQ") and strips it from SET_FEATURES.
/// * cloud-hypervisor masks its own feature set, CTRL_VQ included, with the backend's and
///   passes the acked bit on in SET_FEATURES, while running the control queue itself.
///
/// So it is offered with MQ, as DPDK's vhost library does (CTRL_VQ and MQ are in its
/// `VIRTIO_NET_SUPPORTED_FEATURES`), and accepted in SET_FEATURES; it changes nothing
/// here. The control queue itself stays the frontend's: its ring index (`2 *
/// queue_pairs`) is past the data rings and refused like any other index out of range.
pub const MQ_FEATURES: u64 = f::MQ | f::CTRL_VQ;

/// The virtio features offered on a port of `queue_pairs` queue pairs.
pub fn offered_features(queue_pairs: u16) -> u64 {
    if queue_pairs > 1 {
        OFFERED_FEATURES | MQ_FEATURES
    } else {
        OFFERED_FEATURES
    }
}

/// Protocol features offered on a port of `queue_pairs` queue pairs (REPLY_ACK is
/// handled by our message loop).
///
/// `PROTOCOL_F_MQ` (and with it GET_QUEUE_NUM) only with more than one pair: frontends
/// built on the rust-vmm `vhost` crate (cloud-hypervisor among them) take the answer to
/// GET_QUEUE_NUM as a count of rings and refuse ring indexes at or past it, so a
/// one-pair port answering "1 pair" would lose its txq there. Without the protocol
/// feature they assume one pair, as QEMU and DPDK's virtio-user do.
pub fn offered_protocol_features(queue_pairs: u16) -> VhostUserProtocolFeatures {
    let base = VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
    if queue_pairs > 1 {
        base | VhostUserProtocolFeatures::MQ
    } else {
        base
    }
}

/// What the port is, from configuration.
#[derive(Debug, Clone)]
pub struct NetDevice {
    /// Port name, for logs.
    pub name: String,
    /// MAC address reported in the config space.
    pub mac: wire::MacAddr,
    /// MTU reported in the config space (VIRTIO_NET_F_MTU).
    pub mtu: u16,
    /// Queue pairs offered: rings `0..2 * queue_pairs` (rxq `2p`, txq `2p + 1`).
    /// GET_QUEUE_NUM and `max_virtqueue_pairs` report this number.
    pub queue_pairs: u16,
    /// Most bytes of guest memory the frontend may have mapped at once (`max-mem`).
    pub max_mem: u64,
}

/// Default `max-mem`: 1 TiB of address space per port (mapped MAP_NORESERVE, so this
/// bounds address space, not RAM).
pub const DEFAULT_MAX_MEM: u64 = 1 << 40;

/// A ring ready to run, handed to the datapath.
#[derive(Debug)]
pub struct ReadyQueue {
    /// Ring index: even = rxq (device writes), odd = txq (device reads).
    pub index: u16,
    /// The guest memory the ring lives in.
    pub mem: Arc<GuestMemory>,
    /// Where the ring is and where to resume.
    pub cfg: QueueConfig,
    /// The guest kicks this eventfd when it adds buffers (None: the frontend polls, so the
    /// datapath must poll this ring too).
    pub kick: Option<File>,
    /// We signal this eventfd to interrupt the guest (None: never).
    pub call: Option<File>,
    /// We signal this eventfd when the ring breaks.
    pub err: Option<File>,
    /// The negotiated virtio features.
    pub features: u64,
}

/// How the handler drives the datapath. Implemented by the datapath (commands to the
/// worker that owns the port) and by test doubles.
pub trait QueueControl: Send {
    /// Starts processing a ring.
    fn start_queue(&mut self, q: ReadyQueue);
    /// Stops a ring and returns where to resume it (GET_VRING_BASE: a split ring's next
    /// avail index; a packed ring's avail and used positions with their wrap counters), or
    /// `None` if it was not running.
    /// Used entries are flushed before this returns.
    fn stop_queue(&mut self, index: u16) -> Option<u32>;
    /// Replaces the call eventfd of a running ring.
    fn set_call(&mut self, index: u16, call: Option<File>);
}

/// Per-ring state as the frontend set it.
#[derive(Debug, Default)]
struct Vring {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// SET_VRING_BASE as sent (split: 16 bits; packed: avail in bits 0-15, used in 16-31).
    base: u32,
    kick: Option<File>,
    /// SET_VRING_KICK arrived (with or without an fd).
    kicked: bool,
    call: Option<File>,
    err: Option<File>,
    enabled: bool,
    running: bool,
}

/// The vhost-user request handler of one virtio-net port.
#[derive(Debug)]
pub struct VhostUserNet<C: QueueControl> {
    dev: NetDevice,
    ctl: C,
    features: u64,
    protocol: u64,
    mem: Arc<GuestMemory>,
    vrings: Vec<Vring>,
}

impl<C: QueueControl + std::fmt::Debug> VhostUserNet<C> {
    /// A handler for a freshly connected frontend.
    pub fn new(dev: NetDevice, ctl: C) -> Self {
        let n = usize::from(dev.queue_pairs.max(1)) * 2;
        VhostUserNet {
            dev,
            ctl,
            features: 0,
            protocol: 0,
            mem: Arc::new(GuestMemory::empty()),
            vrings: (0..n).map(|_| Vring::default()).collect(),
        }
    }

    /// Whether REPLY_ACK was negotiated (the frontend may then ask for an ack of any
    /// request without a reply of its own).
    pub fn reply_ack_negotiated(&self) -> bool {
        self.protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0
    }

    /// The features the frontend acked.
    pub fn acked_features(&self) -> u64 {
        self.features
    }

    /// Number of rings currently running.
    pub fn running_rings(&self) -> usize {
        self.vrings.iter().filter(|v| v.running).count()
    }

    /// The datapath side, for the owner.
    pub fn control(&mut self) -> &mut C {
        &mut self.ctl
    }

    /// Stops every ring and forgets the frontend's state (disconnect, RESET_OWNER): the
    /// guest memory is released once the datapath drops its rings.
    pub fn reset(&mut self) {
        for i in 0..self.vrings.len() {
            self.stop(i);
        }
        for v in &mut self.vrings {
            *v = Vring::default();
        }
        self.features = 0;
        self.protocol = 0;
        self.mem = Arc::new(GuestMemory::empty());
    }

    /// Queue pairs of this port (at least one).
    pub fn queue_pairs(&self) -> u16 {
        self.dev.queue_pairs.max(1)
    }

    /// The virtio features offered to this port's frontend.
    pub fn offered_features(&self) -> u64 {
        offered_features(self.queue_pairs())
    }

    /// Ring `index`, or an error for an index past the port's queue pairs (including the
    /// control queue at `2 * queue_pairs`, which the frontend handles itself).
    fn vring(&mut self, index: u32) -> VuResult<&mut Vring> {
        let n = self.vrings.len();
        match usize::try_from(index).ok().filter(|i| *i < n) {
            Some(i) => Ok(&mut self.vrings[i]),
            None => {
                tracing::warn!(
                    "port {}: ring index {index} refused: the port has {} queue pair(s), \
                     rings 0..{n}",
                    self.dev.name,
                    self.queue_pairs()
                );
                Err(VuError::InvalidParam)
            }
        }
    }

    /// A kick, call or err fd as the datapath may use it: an eventfd, non-blocking.
    /// Anything else is refused (the ring does not start; the frontend is dropped).
    fn notify_fd(&self, what: &str, index: u8, fd: Option<File>) -> VuResult<Option<File>> {
        fd.map(sys::checked_eventfd).transpose().map_err(|e| {
            tracing::warn!(
                "port {}: {what} fd of ring {index} refused: {e}",
                self.dev.name
            );
            VuError::InvalidParam
        })
    }

    fn protocol_features_acked(&self) -> bool {
        self.features & f::VHOST_USER_PROTOCOL_FEATURES != 0
    }

    /// Stops ring `i` if it runs, keeping where it stopped as its base.
    fn stop(&mut self, i: usize) {
        if self.vrings[i].running {
            let idx = u16::try_from(i).unwrap_or(u16::MAX);
            if let Some(base) = self.ctl.stop_queue(idx) {
                self.vrings[i].base = base;
            }
            self.vrings[i].running = false;
        }
    }

    /// Starts ring `i` if everything it needs is there.
    fn maybe_start(&mut self, i: usize) {
        let v = &self.vrings[i];
        if v.running || !v.kicked || !v.enabled || v.size == 0 || self.mem.region_count() == 0 {
            return;
        }
        let dup = |f: &Option<File>| f.as_ref().and_then(|f| f.try_clone().ok());
        let q = ReadyQueue {
            index: u16::try_from(i).unwrap_or(u16::MAX),
            mem: self.mem.clone(),
            cfg: QueueConfig {
                size: v.size,
                desc_uaddr: v.desc,
                avail_uaddr: v.avail,
                used_uaddr: v.used,
                // u16 for split rings (checked in SET_VRING_BASE), the avail half for packed.
                next_avail: (v.base & 0xffff) as u16,
                // DPDK's virtio-user sends only the avail half (used = avail, as at a
                // fresh start); QEMU sends both.
                next_used: u16::try_from(v.base >> 16).ok().filter(|&u| u != 0),
                event_idx: self.features & f::RING_EVENT_IDX != 0,
                indirect: self.features & f::RING_INDIRECT_DESC != 0,
                packed: self.features & f::RING_PACKED != 0,
                device_reads: i % 2 == 1,
                in_order: self.features & f::IN_ORDER != 0,
            },
            kick: dup(&v.kick),
            call: dup(&v.call),
            err: dup(&v.err),
            features: self.features,
        };
        self.ctl.start_queue(q);
        self.vrings[i].running = true;
    }

    /// Replaces the memory table, restarting running rings on the new one.
    fn swap_mem(&mut self, mem: GuestMemory) {
        for i in 0..self.vrings.len() {
            self.stop(i);
        }
        tracing::info!(
            "port {}: guest memory now {} region(s), {} MiB",
            self.dev.name,
            mem.region_count(),
            mem.total_size() >> 20
        );
        self.mem = Arc::new(mem);
        // Every ring that has what it needs runs on the new table (including one that
        // could not start while the table was empty).
        for i in 0..self.vrings.len() {
            self.maybe_start(i);
        }
    }
}

fn region_spec(r: &VhostUserMemoryRegion, file: File) -> RegionSpec {
    RegionSpec {
        gpa: r.guest_phys_addr,
        size: r.memory_size,
        uaddr: r.user_addr,
        mmap_offset: r.mmap_offset,
        file,
    }
}

fn refuse<T>(what: &'static str) -> VuResult<T> {
    Err(VuError::InvalidOperation(what))
}

fn mem_err(name: &str, e: vring::MemError) -> VuError {
    tracing::warn!("port {name}: memory table refused: {e}");
    VuError::InvalidParam
}

impl<C: QueueControl + std::fmt::Debug> VhostUserBackendReqHandlerMut for VhostUserNet<C> {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(self.offered_features())
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        let offered = self.offered_features();
        if features & !offered != 0 {
            tracing::warn!(
                "port {}: frontend acked features we did not offer: {:#x}",
                self.dev.name,
                features & !offered
            );
            return Err(VuError::InvalidParam);
        }
        self.features = features;
        // Without PROTOCOL_FEATURES rings are enabled as soon as they start.
        if !self.protocol_features_acked() {
            for v in &mut self.vrings {
                v.enabled = true;
            }
        }
        Ok(())
    }

    fn set_mem_table(&mut self, ctx: &[VhostUserMemoryRegion], files: Vec<File>) -> VuResult<()> {
        if ctx.len() != files.len() {
            return Err(VuError::InvalidParam);
        }
        let specs = ctx
            .iter()
            .zip(files)
            .map(|(r, file)| region_spec(r, file))
            .collect();
        let mem = GuestMemory::map_within(specs, self.dev.max_mem)
            .map_err(|e| mem_err(&self.dev.name, e))?;
        self.swap_mem(mem);
        Ok(())
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        // A split ring's size is a power of two (§2.7); a packed ring's need not be (§2.8).
        let packed = self.features & f::RING_PACKED != 0;
        let size = u16::try_from(num)
            .ok()
            .filter(|n| {
                *n != 0 && (packed || n.is_power_of_two()) && *n <= vring::queue::MAX_QUEUE_SIZE
            })
            .ok_or(VuError::InvalidParam)?;
        self.vring(index)?.size = size;
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        let v = self.vring(index)?;
        v.desc = descriptor;
        v.used = used;
        v.avail = available;
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        // Split rings: a 16-bit index. Packed rings: two 15-bit positions with their wrap
        // counters (checked against the ring size when it starts).
        if self.features & f::RING_PACKED == 0 && base > u32::from(u16::MAX) {
            return Err(VuError::InvalidParam);
        }
        self.vring(index)?.base = base;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        self.vring(index)?;
        let i = index as usize;
        self.stop(i);
        let v = &mut self.vrings[i];
        // The ring is stopped until the next SET_VRING_KICK.
        v.kicked = false;
        v.kick = None;
        Ok(VhostUserVringState::new(index, v.base))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let i = usize::from(index);
        self.vring(u32::from(index))?;
        let fd = self.notify_fd("kick", index, fd)?;
        self.stop(i);
        let v = &mut self.vrings[i];
        v.kick = fd;
        v.kicked = true;
        self.maybe_start(i);
        Ok(())
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(u32::from(index))?;
        let fd = self.notify_fd("call", index, fd)?;
        let v = self.vring(u32::from(index))?;
        let running = v.running;
        let dup = fd.as_ref().and_then(|f| f.try_clone().ok());
        v.call = fd;
        if running {
            self.ctl.set_call(u16::from(index), dup);
        }
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(u32::from(index))?;
        let fd = self.notify_fd("err", index, fd)?;
        self.vring(u32::from(index))?.err = fd;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(offered_protocol_features(self.queue_pairs()))
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        if features & !offered_protocol_features(self.queue_pairs()).bits() != 0 {
            tracing::warn!(
                "port {}: frontend acked protocol features we did not offer: {:#x}",
                self.dev.name,
                features & !offered_protocol_features(self.queue_pairs()).bits()
            );
            return Err(VuError::InvalidParam);
        }
        self.protocol = features;
        Ok(())
    }

    /// The number of queue PAIRS, as DPDK's vhost library answers
    /// (`rte_vhost_driver_get_queue_num`) and as QEMU's vhost-user net reads it: it
    /// compares the answer with its `queues=`, which counts pairs ("you are asking more
    /// queues than supported", net/vhost-user.c). vhost-user.rst only says "queues".
    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(u64::from(self.queue_pairs()))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        let i = index as usize;
        self.vring(index)?.enabled = enable;
        if enable {
            self.maybe_start(i);
        } else {
            self.stop(i);
        }
        Ok(())
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        let cfg = NetConfig {
            mac: self.dev.mac,
            status: f::STATUS_LINK_UP,
            max_virtqueue_pairs: self.queue_pairs(),
            mtu: self.dev.mtu,
        };
        let bytes = cfg.to_bytes();
        let start = usize::try_from(offset).map_err(|_| VuError::InvalidParam)?;
        let end = start
            .checked_add(usize::try_from(size).map_err(|_| VuError::InvalidParam)?)
            .ok_or(VuError::InvalidParam)?;
        bytes
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or(VuError::InvalidParam)
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        // The config space is read-only for the driver (§5.1.4: mac is device-set).
        Ok(())
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        refuse("GPU socket")
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        refuse("shared objects")
    }

    fn get_inflight_fd(
        &mut self,
        _inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        refuse("inflight fd")
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        refuse("inflight fd")
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(vring::mem::MAX_REGIONS as u64)
    }

    /// A region identical to one already mapped is accepted and changes nothing: QEMU up
    /// to 7.2 drives each queue pair of a multiqueue device as its own vhost device over
    /// the one socket, and each sends ADD_MEM_REG for every region it has not sent
    /// itself (hw/virtio/vhost-user.c keeps the shadow table per device; later QEMU
    /// sends these only for the first pair).
    fn add_mem_region(&mut self, region: &VhostUserSingleMemoryRegion, fd: File) -> VuResult<()> {
        let (gpa, size) = (region.guest_phys_addr, region.memory_size);
        match self
            .mem
            .with_region(region_spec(region, fd), self.dev.max_mem)
            .map_err(|e| mem_err(&self.dev.name, e))?
        {
            Added::New(mem) => self.swap_mem(mem),
            Added::AlreadyMapped => tracing::debug!(
                "port {}: ADD_MEM_REG of a region already mapped (gpa {gpa:#x}, {size} bytes): \
                 nothing to do",
                self.dev.name
            ),
        }
        Ok(())
    }

    /// A region already removed is accepted (see `add_mem_region`: the same per-pair
    /// repetition); one that is mapped but not exactly as described is refused.
    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        let (gpa, size, uaddr) = (region.guest_phys_addr, region.memory_size, region.user_addr);
        match self.mem.without_region(gpa, size, uaddr) {
            Some(Removed::Gone(mem)) => self.swap_mem(mem),
            Some(Removed::NotMapped) => tracing::debug!(
                "port {}: REM_MEM_REG of a region not mapped (gpa {gpa:#x}, {size} bytes): \
                 nothing to do",
                self.dev.name
            ),
            None => {
                tracing::warn!(
                    "port {}: REM_MEM_REG refused: gpa {gpa:#x}, {size} bytes at user address \
                     {uaddr:#x} is not a region of the memory table",
                    self.dev.name
                );
                return Err(VuError::InvalidParam);
            }
        }
        Ok(())
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        refuse("device state transfer")
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        refuse("device state transfer")
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        refuse("dirty log")
    }
}
