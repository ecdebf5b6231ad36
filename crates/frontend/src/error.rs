//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Errors of the frontend. Misbehaviour of the backend is [`FrontendError::BadBackend`]:
/// the driver never panics on what the backend wrote.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The [`crate::FrontendConfig`] is inconsistent (or a test helper got bad arguments).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The socket could not be connected within `connect_timeout`.
    #[error("connecting to {path:?}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Last connect error.
        source: io::Error,
    },
    /// A vhost-user request failed (socket error, NACK, malformed reply).
    #[error("vhost-user {op}: {source}")]
    Vhost {
        /// The request.
        op: &'static str,
        /// What the `vhost` crate reported.
        source: vhost::Error,
    },
    /// A local system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The backend lacks something the configuration needs.
    #[error("backend does not support {0}")]
    Unsupported(String),
    /// Guest memory is too small for the rings and buffers; raise `mem_size`.
    #[error("guest memory exhausted allocating {len} bytes (mem_size {mem_size}); raise mem_size")]
    OutOfMemory {
        /// Size of the failed allocation.
        len: u64,
        /// Total guest memory.
        mem_size: u64,
    },
    /// A guest physical range is not inside guest memory.
    #[error("guest range {gpa:#x}+{len} is outside guest memory")]
    GuestAddress {
        /// Start of the range.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// No such queue pair (or vring index).
    #[error("no queue {0}")]
    NoSuchQueue(u16),
    /// No free tx descriptors or buffers even after reclaiming used ones.
    #[error("tx ring of queue pair {queue_pair} full ({sent} frames of the burst were queued)")]
    RingFull {
        /// Queue pair.
        queue_pair: u16,
        /// Frames of the burst queued (and notified) before the ring filled.
        sent: usize,
    },
    /// The frame does not fit the tx buffer / chain the layout allows.
    #[error("frame of {len} bytes exceeds the {max}-byte maximum")]
    FrameTooLarge {
        /// Frame length (without virtio-net header).
        len: usize,
        /// Largest frame accepted.
        max: usize,
    },
    /// The backend wrote something invalid into a ring we own (the queue is unusable from
    /// then on; reconnect to recover).
    #[error("backend misbehaved on vring {queue}: {reason}")]
    BadBackend {
        /// vring index (rx of pair p is 2p, tx is 2p+1).
        queue: u16,
        /// What was wrong.
        reason: String,
    },
    /// A raw post needs a descriptor that is still in flight.
    #[error("descriptor {desc} of vring {queue} is in flight")]
    DescriptorBusy {
        /// vring index.
        queue: u16,
        /// Descriptor id.
        desc: u16,
    },
    /// The operation needs a connection, and [`crate::Frontend::disconnect`] dropped it.
    #[error("not connected")]
    Disconnected,
}

impl FrontendError {
    /// For `map_err`: the OS error `source` of `op`, as [`FrontendError::Io`].
    pub(crate) fn io(op: &'static str) -> impl Fn(io::Error) -> FrontendError + Copy {
        move |source| FrontendError::Io { op, source }
    }
}
