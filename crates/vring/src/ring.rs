//! What the datapath needs of a device ring, whichever layout it has: [`DeviceRing`],
//! implemented by [`SplitQueue`] and [`PackedQueue`], so hot code is written once and
//! monomorphized per layout; and [`Ring`], one running ring of either layout, which the
//! caller matches on once per burst (or per delivery) to reach the monomorphized code.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::chain::{Chain, RxBuf, Seg};
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
    /// Gives back the last `n` popped chains not yet pushed (at most 256).
    fn unpop(&mut self, n: u16);
    /// Records `chain` as used, `len` bytes written, in pop order.
    fn push_used(&mut self, chain: &Chain, len: u32);
    /// Publishes what was pushed; true if the driver wants a call.
    fn flush_used(&mut self) -> bool;
    /// Asks for kicks, then looks again; non-zero: chains are ready, do not sleep.
    fn enable_notify(&mut self) -> Result<u16, RingError>;
    /// Asks for a kick when more buffers come than are available now.
    fn enable_notify_on_more(&mut self) -> Result<u16, RingError>;
    /// Asks for no kicks.
    fn disable_notify(&mut self);
    /// Pops the next chain if it is one device-writable buffer in one region (an rx
    /// buffer), without a [`Chain`]; `None`, nothing popped, otherwise.
    fn pop_buf(&mut self) -> Option<RxBuf>;
    /// [`push_used`](Self::push_used) of a buffer from [`pop_buf`](Self::pop_buf).
    fn push_used_buf(&mut self, buf: &RxBuf, len: u32);
    /// Pops the next chain if it is one device-writable buffer in one region (as
    /// [`pop_buf`](Self::pop_buf)), writes `head` and then `len` bytes of `src` from
    /// `src_off` into it and records it used with `used` bytes (as
    /// [`push_used_buf`](Self::push_used_buf)), the buffer's address translated once.
    /// `None`: nothing popped (no chain ready, or the next one is not a lone writable
    /// buffer); `Some(false)`: the frame did not fit, nothing written, the buffer given
    /// back; `Some(true)`: written and used.
    fn fill_buf<const N: usize>(
        &mut self,
        head: &[u8; N],
        src: &Chain,
        src_off: usize,
        len: usize,
        used: u32,
    ) -> Option<bool>;
}

/// [`DeviceRing::fill_buf`] for either layout, given its `pop_lone`.
#[inline(always)]
fn fill_lone<R: DeviceRing, const N: usize>(
    ring: &mut R,
    popped: Option<(RxBuf, NonNull<u8>)>,
    head: &[u8; N],
    src: &Chain,
    src_off: usize,
    len: usize,
    used: u32,
) -> Option<bool> {
    let (buf, host) = popped?;
    // `host` is the translation of `buf` in the memory the ring holds (borrowed mutably by
    // our caller all along), so it is still mapped.
    if !Seg::new(host, buf.len).put_head_and_copy(head, src, src_off, len) {
        ring.unpop(1);
        return Some(false);
    }
    ring.push_used_buf(&buf, used);
    Some(true)
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
            fn pop_buf(&mut self) -> Option<RxBuf> {
                <$t>::pop_buf(self)
            }
            #[inline(always)]
            fn push_used_buf(&mut self, buf: &RxBuf, len: u32) {
                <$t>::push_used_buf(self, buf, len)
            }
            #[inline(always)]
            fn fill_buf<const N: usize>(
                &mut self,
                head: &[u8; N],
                src: &Chain,
                src_off: usize,
                len: usize,
                used: u32,
            ) -> Option<bool> {
                let popped = self.pop_lone();
                fill_lone(self, popped, head, src, src_off, len, used)
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
    fn pop_buf(&mut self) -> Option<RxBuf> {
        with_ring!(self, r => r.pop_buf())
    }
    fn push_used_buf(&mut self, buf: &RxBuf, len: u32) {
        with_ring!(self, r => r.push_used_buf(buf, len))
    }
    fn fill_buf<const N: usize>(
        &mut self,
        head: &[u8; N],
        src: &Chain,
        src_off: usize,
        len: usize,
        used: u32,
    ) -> Option<bool> {
        with_ring!(self, r => r.fill_buf(head, src, src_off, len, used))
    }
}
