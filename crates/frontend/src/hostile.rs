//! Raw hooks for hostile-driver tests (cargo feature `hostile`): descriptors written
//! verbatim, avail indexes set by hand, guest memory poked directly, spurious kicks, memory
//! files truncated under the backend. None of this is needed to drive a well-behaved
//! device; a normal build leaves it out.

use crate::ring::{self, VringAddrs};
use crate::{Frontend, FrontendError};

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

impl Frontend {
    /// Guest physical addresses of vring `q` (rx of pair p is 2p, tx 2p+1).
    pub fn vring_addrs(&self, q: u16) -> Result<VringAddrs, FrontendError> {
        Ok(self.vring(q)?.0.addrs())
    }

    /// Truncates the memory files shared with the backend to zero bytes, as a frontend
    /// may do at any time. This frontend must not be used afterwards, nor dropped (its
    /// own accesses would fault): `std::mem::forget` it.
    pub fn truncate_memory(&self) -> std::io::Result<()> {
        self.mem.truncate_all()
    }

    /// Writes `descs` verbatim into the txq descriptor table of pair `qp` at ids
    /// `0..descs.len()` (which must not be in flight: completed chains are reclaimed
    /// first), appends `heads` (unchecked, may be out of range) to the avail ring,
    /// publishes and kicks. The ids stay reserved until as many used elements as
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

    /// Stores `idx` into `avail.idx` of vring `q` (Release) without touching the
    /// driver's own bookkeeping. Does not kick.
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
