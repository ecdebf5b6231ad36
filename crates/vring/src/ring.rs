//! What the datapath needs of a device ring, whichever layout it has: [`DeviceRing`],
//! implemented by [`SplitQueue`] and [`PackedQueue`], so hot code is written once and
//! monomorphized per layout; and [`Ring`], one running ring of either layout, which the
//! caller matches on once per burst (or per delivery) to reach the monomorphized code.

use std::sync::Arc;

use crate::chain::Chain;
use crate::fill::FillFrames;
use crate::mem::GuestMemory;
use crate::packed::PackedQueue;
use crate::queue::{QueueConfig, RingError, SplitQueue};

/// The device side of a virtqueue, as the datapath drives it.
pub trait DeviceRing {
    /// Looks for chains the driver made available (a split ring's one Acquire of a
    /// burst). Returns how many are ready: the exact number for a split ring, 1 or 0 for a
    /// packed one (whose descriptors each say whether they are available).
    fn refresh_avail(&mut self) -> Result<u16, RingError>;
    /// Chains ready as of the last look, not popped yet (a packed ring looks again): 0
    /// means none.
    fn pending(&self) -> u16;
    /// Whether the driver has made a chain available that is not popped yet, looking at
    /// the ring now and changing nothing (a polling loop's cheap first look; what it sees
    /// is checked by [`refresh_avail`](Self::refresh_avail)).
    fn peek(&self) -> bool;
    /// Pops the next chain into `chain`; `Ok(false)` when none is ready.
    fn pop(&mut self, chain: &mut Chain) -> Result<bool, RingError>;
    /// Gives back the last `n` popped chains not yet pushed (at most 256, none before a
    /// [`fill_bufs`](Self::fill_bufs) run).
    fn unpop(&mut self, n: u16);
    /// Records `chain` as used, `len` bytes written, in pop order.
    fn push_used(&mut self, chain: &Chain, len: u32);
    /// [`push_used`](Self::push_used) of each of `chains`, in order, as one extension of
    /// the used list (a store each, no per-chain bookkeeping).
    fn push_used_all(&mut self, chains: &[Chain], len: u32);
    /// Publishes what was pushed; true if the driver wants a call.
    fn flush_used(&mut self) -> bool;
    /// Asks for kicks, then looks again; non-zero: chains are ready, do not sleep.
    fn enable_notify(&mut self) -> Result<u16, RingError>;
    /// Asks for a kick when more buffers come than are available now.
    fn enable_notify_on_more(&mut self) -> Result<u16, RingError>;
    /// Asks for no kicks.
    fn disable_notify(&mut self);
    /// Fills lone rx buffers (each one device-writable descriptor in one memory region:
    /// what drivers post) with a run of frames, in order: frame `k`, as `frames.frame(k)`
    /// gives it, goes into the next buffer as its `head`, its `lead` and `len` bytes of
    /// `srcs[k]` from `src_off`, and that buffer is used with `H + L + len` bytes.
    /// Stops, nothing popped for it, at the first frame that `frames` refuses (`None`),
    /// that finds no buffer ready as of the last look ([`pending`](Self::pending)),
    /// whose next buffer is anything but a lone one (left for [`pop`](Self::pop), which
    /// says what is wrong with it), or that does not fit (in the buffer, or in one
    /// readable buffer of its source). At most [`FILL_RUN`](crate::FILL_RUN) frames a
    /// call. Returns the frames done.
    ///
    /// No [`Chain`] is filled, each buffer's address is translated once, the ring's
    /// position stays in a local until the run ends and each used element is one store
    /// into the shadow list's spare room: the stores in the loop are the frames' own,
    /// which wait for the receiver's CPU to give up its lines (docs/bench.md, "Runs of rx
    /// buffers in one loop"). The buffers it uses cannot be given back:
    /// [`unpop`](Self::unpop) never reaches past them.
    fn fill_bufs<const H: usize, const L: usize, F: FillFrames<H, L>>(
        &mut self,
        srcs: &[Chain],
        src_off: usize,
        frames: &F,
    ) -> usize;
}

macro_rules! forward_device_ring {
    ($t:ty) => {
        impl DeviceRing for $t {
            #[inline(always)]
            fn refresh_avail(&mut self) -> Result<u16, RingError> {
                <$t>::refresh_avail(self)
            }
            #[inline(always)]
            fn pending(&self) -> u16 {
                <$t>::pending(self)
            }
            #[inline(always)]
            fn peek(&self) -> bool {
                <$t>::peek(self)
            }
            #[inline(always)]
            fn pop(&mut self, chain: &mut Chain) -> Result<bool, RingError> {
                <$t>::pop(self, chain)
            }
            #[inline(always)]
            fn unpop(&mut self, n: u16) {
                <$t>::unpop(self, n)
            }
            #[inline(always)]
            fn push_used(&mut self, chain: &Chain, len: u32) {
                <$t>::push_used(self, chain, len)
            }
            #[inline(always)]
            fn push_used_all(&mut self, chains: &[Chain], len: u32) {
                <$t>::push_used_all(self, chains, len)
            }
            #[inline(always)]
            fn flush_used(&mut self) -> bool {
                <$t>::flush_used(self)
            }
            #[inline(always)]
            fn enable_notify(&mut self) -> Result<u16, RingError> {
                <$t>::enable_notify(self)
            }
            #[inline(always)]
            fn enable_notify_on_more(&mut self) -> Result<u16, RingError> {
                <$t>::enable_notify_on_more(self)
            }
            #[inline(always)]
            fn disable_notify(&mut self) {
                <$t>::disable_notify(self)
            }
            #[inline(always)]
            fn fill_bufs<const H: usize, const L: usize, F: FillFrames<H, L>>(
                &mut self,
                srcs: &[Chain],
                src_off: usize,
                frames: &F,
            ) -> usize {
                <$t>::fill_bufs(self, srcs, src_off, frames)
            }
        }
    };
}

forward_device_ring!(SplitQueue);
forward_device_ring!(PackedQueue);

/// One running ring of either layout.
#[derive(Debug)]
pub enum Ring {
    /// A split virtqueue (§2.7).
    Split(SplitQueue),
    /// A packed virtqueue (§2.8).
    Packed(PackedQueue),
}

/// Runs `$body` with `$r` bound to the ring of either layout (monomorphized twice).
#[macro_export]
macro_rules! with_ring {
    ($ring:expr, $r:ident => $body:expr) => {
        match $ring {
            $crate::Ring::Split($r) => $body,
            $crate::Ring::Packed($r) => $body,
        }
    };
}

impl Ring {
    /// Builds the ring `cfg` describes (packed or split) over `mem`, checked.
    pub fn new(mem: Arc<GuestMemory>, cfg: &QueueConfig) -> Result<Ring, RingError> {
        if cfg.packed {
            PackedQueue::new(mem, cfg).map(Ring::Packed)
        } else {
            SplitQueue::new(mem, cfg).map(Ring::Split)
        }
    }

    /// Whether this is a packed ring.
    pub fn is_packed(&self) -> bool {
        matches!(self, Ring::Packed(_))
    }

    /// The guest memory the ring lives in.
    pub fn mem(&self) -> &Arc<GuestMemory> {
        with_ring!(self, r => r.mem())
    }

    /// Where to resume, as GET_VRING_BASE reports it (split: the next avail index;
    /// packed: avail position and wrap counter in bits 0-15, used ones in 16-31).
    pub fn base(&self) -> u32 {
        match self {
            Ring::Split(r) => u32::from(r.next_avail()),
            Ring::Packed(r) => r.base(),
        }
    }

    /// Chains published as used so far (wrapping), for counters.
    pub fn used_chains(&self) -> u16 {
        match self {
            Ring::Split(r) => r.next_used(),
            Ring::Packed(r) => r.used_chains(),
        }
    }
}

impl DeviceRing for Ring {
    fn refresh_avail(&mut self) -> Result<u16, RingError> {
        with_ring!(self, r => r.refresh_avail())
    }
    fn pending(&self) -> u16 {
        with_ring!(self, r => r.pending())
    }
    #[inline]
    fn peek(&self) -> bool {
        with_ring!(self, r => r.peek())
    }
    fn pop(&mut self, chain: &mut Chain) -> Result<bool, RingError> {
        with_ring!(self, r => r.pop(chain))
    }
    fn unpop(&mut self, n: u16) {
        with_ring!(self, r => r.unpop(n))
    }
    fn push_used(&mut self, chain: &Chain, len: u32) {
        with_ring!(self, r => r.push_used(chain, len))
    }
    fn push_used_all(&mut self, chains: &[Chain], len: u32) {
        with_ring!(self, r => r.push_used_all(chains, len))
    }
    fn flush_used(&mut self) -> bool {
        with_ring!(self, r => r.flush_used())
    }
    fn enable_notify(&mut self) -> Result<u16, RingError> {
        with_ring!(self, r => r.enable_notify())
    }
    fn enable_notify_on_more(&mut self) -> Result<u16, RingError> {
        with_ring!(self, r => r.enable_notify_on_more())
    }
    fn disable_notify(&mut self) {
        with_ring!(self, r => r.disable_notify())
    }
    fn fill_bufs<const H: usize, const L: usize, F: FillFrames<H, L>>(
        &mut self,
        srcs: &[Chain],
        src_off: usize,
        frames: &F,
    ) -> usize {
        with_ring!(self, r => r.fill_bufs(srcs, src_off, frames))
    }
}
