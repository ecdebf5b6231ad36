//! Frontend configuration.

use std::path::PathBuf;
use std::time::Duration;

use virtio_net::features as f;

/// Features asked for by default (offered & wanted are negotiated). `IN_ORDER` is
/// deliberately absent: the driver expects a used element per chain. `RING_PACKED` is
/// supported but not asked for by default (add it to drive packed rings).
pub const DEFAULT_FEATURES: u64 = f::VERSION_1
    | f::MAC
    | f::STATUS
    | f::MRG_RXBUF
    | f::CSUM
    | f::GUEST_CSUM
    | f::HOST_TSO4
    | f::HOST_TSO6
    | f::GUEST_TSO4
    | f::GUEST_TSO6
    | f::HOST_ECN
    | f::GUEST_ECN
    | f::RING_EVENT_IDX
    | f::RING_INDIRECT_DESC
    | f::MTU
    | f::VHOST_USER_PROTOCOL_FEATURES;

/// How a tx frame (virtio-net header + Ethernet frame) is laid out over descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxLayout {
    /// The header in its own descriptor, the frame in the next (what Linux does without
    /// ANY_LAYOUT).
    HdrSeparate,
    /// Header and frame in one descriptor.
    Contiguous,
    /// Header and frame as one byte stream cut into descriptors of this many bytes (the
    /// last may be shorter). Must be non-zero.
    Split(u32),
}

/// How guest memory is announced to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemRegistration {
    /// `ADD_MEM_REG` per region when `CONFIGURE_MEM_SLOTS` was negotiated, else
    /// `SET_MEM_TABLE`.
    Auto,
    /// Always one `SET_MEM_TABLE` (at most 8 regions).
    SetMemTable,
    /// Always `ADD_MEM_REG` per region; an error if the backend lacks
    /// `CONFIGURE_MEM_SLOTS`.
    AddMemReg,
}

/// In what order the vhost-user session is set up: the VMM this driver stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStyle {
    /// One vhost device drives every queue pair (DPDK's virtio-user, cloud-hypervisor and
    /// other rust-vmm frontends).
    OneDevice,
    /// QEMU 7.2's virtio-net: each queue pair is a vhost device of its own on the one
    /// socket. Every device negotiates, sends SET_FEATURES and its own rings; device-wide
    /// requests (SET_OWNER, GET_QUEUE_NUM, SET_MEM_TABLE) go out once, from pair 0; but
    /// every pair sends ADD_MEM_REG for every region (QEMU keeps the table it sent per
    /// device). Call and error eventfds are set at init, the call fd again after the kick
    /// at start; rings of pairs past the first are disabled until the driver enables them.
    QemuPerPair,
}

/// Everything [`crate::Frontend::connect`] needs. Build with [`FrontendConfig::new`] and
/// struct update syntax.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// vhost-user socket of the backend (which listens).
    pub socket: PathBuf,
    /// Virtio feature bits wanted; the negotiated set is `offered & wanted` (see
    /// `queue_pairs` for MQ; `VIRTIO_NET_F_CTRL_VQ` is never acked to the backend, as the
    /// control queue is the VMM's with vhost-user and this driver has none).
    pub wanted_features: u64,
    /// Descriptors per ring (a power of two, at most 32768).
    pub queue_size: u16,
    /// Queue pairs (rx `2p`, tx `2p + 1`). More than one needs the MQ protocol feature,
    /// a backend offering `VIRTIO_NET_F_MQ` (which is then negotiated whatever
    /// `wanted_features` says) and a GET_QUEUE_NUM answer of at least this many pairs.
    pub queue_pairs: u16,
    /// Guest memory in bytes (split evenly over `regions`, page aligned).
    pub mem_size: u64,
    /// Number of memory regions, each its own memfd, separated by a gap in guest
    /// physical address space.
    pub regions: usize,
    /// Guest physical address of the first region (page aligned).
    pub guest_base: u64,
    /// `SET_MEM_TABLE` or `ADD_MEM_REG`.
    pub mem_registration: MemRegistration,
    /// Bytes per rx descriptor buffer. With MRG_RXBUF each rx chain is one such buffer;
    /// without it each chain holds a whole frame: 65550 + header bytes (in 4096-byte
    /// descriptors) when GUEST_TSO4/6 or GUEST_UFO was negotiated, else at least
    /// 1526 + header bytes.
    pub rx_buf_size: u32,
    /// Descriptor layout of tx frames.
    pub tx_layout: TxLayout,
    /// Use indirect descriptor tables (tx frames; big no-MRG rx chains) when
    /// RING_INDIRECT_DESC was negotiated.
    pub use_indirect: bool,
    /// `recv` spins on the used ring instead of sleeping on the call eventfd (calls stay
    /// suppressed).
    pub busy_poll: bool,
    /// How long `connect` retries a missing / refusing socket.
    pub connect_timeout: Duration,
    /// Leave the rings disabled (no SET_VRING_ENABLE) until [`crate::Frontend::enable_rings`]:
    /// lets a test send and kick before the backend may process the ring.
    pub defer_enable: bool,
    /// Message order of the session set-up.
    pub session: SessionStyle,
}

impl FrontendConfig {
    /// Defaults: [`DEFAULT_FEATURES`], 256 descriptors, 1 queue pair, 32 MiB in one region
    /// at GPA 0, 2048-byte rx buffers, header in its own tx descriptor, indirect tables,
    /// eventfd wake-ups, 5 s connect timeout.
    pub fn new(socket: impl Into<PathBuf>) -> FrontendConfig {
        FrontendConfig {
            socket: socket.into(),
            wanted_features: DEFAULT_FEATURES,
            queue_size: 256,
            queue_pairs: 1,
            mem_size: 32 << 20,
            regions: 1,
            guest_base: 0,
            mem_registration: MemRegistration::Auto,
            rx_buf_size: 2048,
            tx_layout: TxLayout::HdrSeparate,
            use_indirect: true,
            busy_poll: false,
            connect_timeout: Duration::from_secs(5),
            defer_enable: false,
            session: SessionStyle::OneDevice,
        }
    }
}
