//! The leaf types every other module of the datapath uses: port ids, modes, settings,
//! limits, and the status a port shares with the control plane.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use switch::MacAddr;

/// Index of a port in the datapath (the same on every worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

impl switch::PortKey for PortId {
    fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Frames processed per txq per wake-up before other queues get their turn.
pub const BURST: u16 = 64;

/// Largest frame a port may send: a 64 KiB IP packet (IPv6: plus its header) behind a
/// VLAN-tagged Ethernet header.
pub const MAX_FRAME: usize = virtio_net::gso::MAX_FRAME_LEN;

/// How a worker waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatapathMode {
    /// Sleep in epoll on the guests' kicks: no CPU when idle (the default).
    #[default]
    Event,
    /// Busy-poll every ring, guests' kicks off: lowest latency, one core at 100 %.
    Poll,
    /// Poll while traffic flows, sleep on kicks after an idle spell.
    Adaptive,
}

impl std::fmt::Display for DatapathMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatapathMode::Event => "event",
            DatapathMode::Poll => "poll",
            DatapathMode::Adaptive => "adaptive",
        })
    }
}

impl std::str::FromStr for DatapathMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "event" => Ok(DatapathMode::Event),
            "poll" => Ok(DatapathMode::Poll),
            "adaptive" => Ok(DatapathMode::Adaptive),
            _ => Err(format!(
                "unknown datapath mode `{s}` (expected event, poll or adaptive)"
            )),
        }
    }
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// How the worker waits for work.
    pub mode: DatapathMode,
    /// Forwarding database entries.
    pub fdb_capacity: usize,
    /// How long an unrefreshed FDB entry lives.
    pub fdb_aging: Duration,
    /// Worker threads (1..=[`MAX_WORKERS`]); ports and queue pairs are spread over them.
    pub workers: usize,
    /// How long a frame from a TAP waits for a guest without rx buffers (the TAP queue
    /// behind it waits too) before it is dropped.
    pub tap_hold: Duration,
    /// Frames of a burst to a TAP queue go in one io_uring submission (where the kernel
    /// offers it) instead of one `writev` each.
    pub tap_batch: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            mode: DatapathMode::Event,
            fdb_capacity: 4096,
            fdb_aging: switch::DEFAULT_AGING_TIME,
            workers: 1,
            tap_hold: Duration::from_millis(50),
            tap_batch: true,
        }
    }
}

/// Most workers a datapath runs (one bit each in [`PortStatus`]'s rx map).
pub const MAX_WORKERS: usize = 64;

/// What the control plane (and the other workers) can see of a port without asking the
/// workers that run its rings.
#[derive(Debug, Default)]
pub struct PortStatus {
    /// Rings (or TAP queues) each worker runs for this port.
    running: Vec<AtomicU16>,
    /// Bit `w`: worker `w` runs an rxq of this port (or can write to its TAP).
    rx_workers: AtomicU64,
    broken: AtomicBool,
    broken_reason: Mutex<Option<String>>,
    features: AtomicU64,
    /// Used entries the device returned on each ring (index as in vhost-user: rxq `2p`,
    /// txq `2p + 1`), added by the worker running the ring once per burst.
    ring_used: Vec<AtomicU64>,
}

impl PortStatus {
    pub(crate) fn new(workers: usize, rings: usize) -> PortStatus {
        PortStatus {
            running: (0..workers.max(1)).map(|_| AtomicU16::new(0)).collect(),
            ring_used: (0..rings).map(|_| AtomicU64::new(0)).collect(),
            ..PortStatus::default()
        }
    }

    /// Used entries returned on each ring since the port was added: rxq `2p` (buffers
    /// filled for the guest), txq `2p + 1` (frames taken from the guest). Empty for TAP
    /// ports.
    pub fn ring_used(&self) -> Vec<u64> {
        self.ring_used
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    pub(crate) fn add_ring_used(&self, index: u16, n: u64) {
        if let Some(c) = self.ring_used.get(usize::from(index)) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Rings currently processed, over all workers.
    pub fn running_queues(&self) -> u16 {
        self.running
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .fold(0u16, u16::saturating_add)
    }

    /// Workers that can deliver frames to this port (bit per worker).
    pub(crate) fn rx_workers(&self) -> u64 {
        self.rx_workers.load(Ordering::Relaxed)
    }

    /// Whether any worker marked the port broken (checked by the others every burst).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Worker `worker` now runs `n` rings of this port, `rx` of them rxqs (or TAP queues).
    pub(crate) fn set_running(&self, worker: usize, n: u16, rx: bool, features: u64) {
        if let Some(c) = self.running.get(worker) {
            c.store(n, Ordering::Relaxed);
        }
        let bit = 1u64 << (worker % MAX_WORKERS);
        if rx {
            self.rx_workers.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.rx_workers.fetch_and(!bit, Ordering::Relaxed);
        }
        if n > 0 {
            self.features.store(features, Ordering::Relaxed);
        } else if self.running_queues() == 0 {
            self.features.store(0, Ordering::Relaxed);
        }
    }

    /// Why the port is broken, if it is.
    pub fn broken_reason(&self) -> Option<String> {
        if !self.broken.load(Ordering::Acquire) {
            return None;
        }
        self.broken_reason.lock().ok().and_then(|g| g.clone())
    }

    /// Negotiated features of the running rings (0 when none runs).
    pub fn features(&self) -> u64 {
        self.features.load(Ordering::Relaxed)
    }

    pub(crate) fn set_broken(&self, reason: Option<String>) {
        // Off the hot path: only when a port breaks or restarts.
        if let Ok(mut g) = self.broken_reason.lock() {
            self.broken.store(reason.is_some(), Ordering::Release);
            *g = reason;
        }
    }
}

/// An FDB entry as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbRow {
    /// Station MAC.
    pub mac: MacAddr,
    /// VLAN.
    pub vlan: u16,
    /// Port name.
    pub port: String,
    /// Seconds since last seen (zero for static entries).
    pub age: Duration,
    /// A configured (static) address of the port, rather than a learned one.
    pub fixed: bool,
}

/// A rate limit: what may pass per second, in bits and in frames (None: not limited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limit {
    /// Megabits per second (Ethernet frames, no virtio-net header).
    pub mbit: Option<u64>,
    /// Thousands of frames per second.
    pub kpps: Option<u64>,
}

impl Limit {
    /// Whether anything is limited.
    pub fn is_set(&self) -> bool {
        self.mbit.is_some() || self.kpps.is_some()
    }
}

/// What a port may do on the switch (tenant isolation), set when it is added.
#[derive(Debug, Clone, Default)]
pub struct PortPolicy {
    /// The addresses the port may send as (None: not checked, `spoofchk=off` or no MAC).
    pub security: Option<switch::PortSecurity>,
    /// The port's configured MACs: static FDB entries no other port can take over.
    pub static_macs: Vec<MacAddr>,
    /// Access, trunk or native (the default).
    pub vlan: switch::VlanMode,
    /// Most addresses the port may have learned (None: not limited).
    pub max_macs: Option<u32>,
    /// Largest IP packet delivered to the port (None: not enforced).
    pub mtu: Option<u16>,
    /// What the port may send into the switch.
    pub ingress: Limit,
    /// What the switch may deliver to the port.
    pub egress: Limit,
    /// Broadcast, multicast and unknown-unicast frames the port may send, in thousands per
    /// second.
    pub flood_kpps: Option<u64>,
}

/// What a worker publishes about itself (for metrics): written by the worker when it
/// publishes its ports' counters, read by anyone.
#[derive(Debug)]
pub struct WorkerStats {
    /// When the worker started.
    pub started: std::time::Instant,
    /// Nanoseconds spent asleep in epoll; the rest of its life it was busy (a polling
    /// worker never sleeps).
    pub sleep_ns: std::sync::atomic::AtomicU64,
    /// Entries in its forwarding table.
    pub fdb_entries: std::sync::atomic::AtomicU64,
}

impl WorkerStats {
    /// A worker starting now.
    pub fn new() -> WorkerStats {
        WorkerStats {
            started: std::time::Instant::now(),
            sleep_ns: std::sync::atomic::AtomicU64::new(0),
            fdb_entries: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Seconds busy and asleep so far.
    pub fn busy_and_sleep_secs(&self) -> (f64, f64) {
        let total = self.started.elapsed().as_secs_f64();
        let sleep = self.sleep_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
        ((total - sleep).max(0.0), sleep)
    }
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self::new()
    }
}
