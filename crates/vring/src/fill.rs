//! What [`fill_bufs`](crate::DeviceRing::fill_bufs) runs are made of, below both ring
//! layouts: the caller's description of the frames ([`FillFrames`]), the write of one frame
//! into a lone buffer, and the run's used elements (`UsedRun`), written straight into a
//! shadow list's spare room.

use std::ptr::NonNull;

use crate::chain::{Chain, Seg};

/// One frame of a [`fill_bufs`](crate::DeviceRing::fill_bufs) run: its buffer gets `head`,
/// then `lead`, then `len` bytes of its source. Two parts, written by stores of their own,
/// so that a buffer whose frame starts on a cache line (a header right before it, as
/// drivers lay them out) is written without a store across the line.
#[derive(Debug, Clone, Copy)]
pub struct FillFrame<'a, const H: usize, const L: usize> {
    /// What comes first (a device header).
    pub head: &'a [u8; H],
    /// What follows it (the first bytes of the frame, from a copy).
    pub lead: &'a [u8; L],
    /// Bytes of the source that follow.
    pub len: usize,
}

/// The frames of a [`fill_bufs`](crate::DeviceRing::fill_bufs) run, as the caller describes
/// them. A trait rather than a closure so that its implementation can be
/// `#[inline(always)]`: the description of each frame belongs in the loop, in registers.
pub trait FillFrames<const H: usize, const L: usize> {
    /// Frame `k` of the run; `None` stops the run there.
    fn frame(&self, k: usize) -> Option<FillFrame<'_, H, L>>;
}

/// Most frames one [`fill_bufs`](crate::DeviceRing::fill_bufs) takes: a bounded piece of
/// work per call.
pub const FILL_RUN: usize = 64;

/// Writes `f`, a frame of a [`fill_bufs`](crate::DeviceRing::fill_bufs) run, from `src` at
/// `src_off` into the lone buffer of `room` bytes at `dst` (its translation, in the memory
/// the ring holds). The length written, or `None` (nothing written) when it does not fit.
#[inline(always)]
pub(crate) fn fill_one<const H: usize, const L: usize>(
    dst: NonNull<u8>,
    room: u32,
    f: &FillFrame<'_, H, L>,
    src: &Chain,
    src_off: usize,
) -> Option<u32> {
    let used = u32::try_from(H.checked_add(L)?.checked_add(f.len)?).ok()?;
    Seg::new(dst, room)
        .put_parts_and_copy(f.head, f.lead, src, src_off, f.len)
        .then_some(used)
}

/// The used elements of one [`fill_bufs`](crate::DeviceRing::fill_bufs) run: the ring's
/// shadow list, taken out of the ring for the run (so that the ring can be read meanwhile),
/// each element written straight into its spare room with one store, and its length set
/// once at the end ([`put_back`](Self::put_back)).
pub(crate) struct UsedRun<T> {
    list: Vec<T>,
    /// Elements written so far (after the list's own).
    n: usize,
    /// Most elements the run may write: within the ring's size, the list's capacity and
    /// [`FILL_RUN`].
    max: usize,
}

impl<T> UsedRun<T> {
    /// Takes `list` (of a ring of `size` entries) out of the ring, leaving it empty, for a
    /// run of at most `frames` frames.
    #[inline(always)]
    pub fn take(list: &mut Vec<T>, size: u16, frames: usize) -> UsedRun<T> {
        let list = std::mem::take(list);
        let room = usize::from(size).saturating_sub(list.len());
        let spare = list.capacity() - list.len();
        let max = frames.min(room).min(spare).min(FILL_RUN);
        UsedRun { list, n: 0, max }
    }

    /// Elements written so far: the index of the run's next frame.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the run has taken all it may.
    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.n >= self.max
    }

    /// Writes the next element (nothing when full).
    #[inline(always)]
    pub fn push(&mut self, e: T) {
        if self.n < self.max {
            if let Some(slot) = self.list.spare_capacity_mut().get_mut(self.n) {
                slot.write(e);
                self.n += 1;
            }
        }
    }

    /// Gives the list, with the run's elements, back to the ring. Returns how many the run
    /// wrote.
    #[inline(always)]
    pub fn put_back(mut self, list: &mut Vec<T>) -> usize {
        let len = self.list.len() + self.n;
        // SAFETY: `push` wrote the first `n` slots of the spare room, one each, and
        // counted only those; `len <= capacity`, as each was a slot of the spare room.
        unsafe { self.list.set_len(len) };
        *list = self.list;
        self.n
    }
}
