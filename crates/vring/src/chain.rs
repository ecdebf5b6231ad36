//! A descriptor chain popped from a queue: its buffers already translated to host
//! addresses and range-checked, device-readable ones first, then device-writable ones.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::access;
use crate::mem::GuestMemory;

/// Most buffers one chain may have after translation (a descriptor spanning two memory
/// regions counts twice). Linux uses at most MAX_SKB_FRAGS + 2 (19) per packet.
pub const MAX_CHAIN_SEGS: usize = 1024;

/// One translated buffer: `len` bytes at host address `ptr` inside guest memory.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    ptr: NonNull<u8>,
    len: u32,
}

impl Seg {
    /// [`Chain::put_head_and_copy`] into this one (device-writable) buffer.
    #[inline(always)]
    pub(crate) fn put_head_and_copy<const N: usize>(
        &self,
        head: &[u8; N],
        src: &Chain,
        src_off: usize,
        len: usize,
    ) -> bool {
        self.put_parts_and_copy(head, &[], src, src_off, len)
    }

    /// Writes `head`, then `lead`, each with stores of its own, then `len` bytes of `src`
    /// from `src_off` into this one (device-writable) buffer, when they fit and the source
    /// bytes lie in one of its buffers; false, nothing written, when not.
    #[inline(always)]
    pub(crate) fn put_parts_and_copy<const H: usize, const L: usize>(
        &self,
        head: &[u8; H],
        lead: &[u8; L],
        src: &Chain,
        src_off: usize,
        len: usize,
    ) -> bool {
        let Some((sp, sroom)) = locate(src.readable(), src_off) else {
            return false;
        };
        if (self.len as usize) < H.saturating_add(L).saturating_add(len) || sroom < len {
            return false;
        }
        // SAFETY: `self.ptr..self.ptr+self.len` is one checked segment (a `Seg` is only
        // made from a range-checked translation) and H + L + len <= self.len, so the three
        // writes stay inside it; `sp..sp+len` lies in one checked readable segment (sroom
        // >= len).
        unsafe {
            access::write_array::<H>(self.ptr, head);
            access::write_array::<L>(self.ptr.add(H), lead);
            access::copy_guest_to_guest(sp, self.ptr.add(H + L), len);
        }
        true
    }
}

/// A popped descriptor chain.
///
/// The chain holds the guest memory its buffers were translated in (an `Arc`, taken when
/// it is popped from a queue over other memory than last time), so its host addresses stay
/// mapped for as long as the chain lives, whatever happens to the queue. A chain is reused
/// pop after pop; [`release`](Self::release) lets go of the memory when the storage idles.
#[derive(Debug)]
pub struct Chain {
    /// The memory every `segs` address points into (None while empty).
    mem: Option<Arc<GuestMemory>>,
    pub(crate) head: u16,
    pub(crate) segs: Vec<Seg>,
    /// `segs[..readable_segs]` are device-readable, the rest device-writable.
    pub(crate) readable_segs: usize,
    pub(crate) readable_len: u32,
    pub(crate) writable_len: u32,
    /// Descriptors walked to build the chain, zero-length and indirect ones included.
    pub(crate) descs: u32,
    /// Packed rings: descriptor ring entries the chain took (an indirect table counts
    /// one), which its used descriptor gives back.
    pub(crate) ring_descs: u16,
}

// SAFETY: a Chain's addresses point into the mappings of the GuestMemory (Send + Sync) it
// holds itself, so they stay valid on whatever thread the chain moves to; all access goes
// through `&self`/`&mut self` of the one owner.
unsafe impl Send for Chain {}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// An empty chain with room for [`MAX_CHAIN_SEGS`] buffers (one allocation, reused).
    pub fn new() -> Chain {
        Chain {
            mem: None,
            head: 0,
            segs: Vec::with_capacity(MAX_CHAIN_SEGS),
            readable_segs: 0,
            readable_len: 0,
            writable_len: 0,
            descs: 0,
            ring_descs: 0,
        }
    }

    /// Makes `mem` the memory of the next buffers. Switching memory empties the chain first,
    /// so no address into the old memory outlives the `Arc` that keeps it mapped.
    #[inline(always)]
    pub(crate) fn bind(&mut self, mem: &Arc<GuestMemory>) {
        if !self.mem.as_ref().is_some_and(|m| Arc::ptr_eq(m, mem)) {
            self.rebind(mem);
        }
    }

    #[cold]
    #[inline(never)]
    fn rebind(&mut self, mem: &Arc<GuestMemory>) {
        self.clear(0);
        self.mem = Some(Arc::clone(mem));
    }

    /// Empties the chain and lets go of its guest memory (e.g. when a port goes away, so
    /// idle chain storage does not keep that guest's memory mapped).
    pub fn release(&mut self) {
        self.clear(0);
        self.mem = None;
    }

    pub(crate) fn clear(&mut self, head: u16) {
        self.head = head;
        self.descs = 0;
        self.ring_descs = 0;
        self.segs.clear();
        self.readable_segs = 0;
        self.readable_len = 0;
        self.writable_len = 0;
    }

    /// Makes this the chain of one buffer `seg` (device-writable with `writable`).
    #[inline]
    pub(crate) fn set_single(&mut self, head: u16, seg: Seg, writable: bool) {
        self.head = head;
        self.descs = 1;
        self.ring_descs = 1;
        self.segs.clear();
        self.segs.push(seg);
        if writable {
            self.readable_segs = 0;
            self.readable_len = 0;
            self.writable_len = seg.len;
        } else {
            self.readable_segs = 1;
            self.readable_len = seg.len;
            self.writable_len = 0;
        }
    }

    /// Head descriptor index of a split ring's chain, buffer id of a packed ring's: the id
    /// that goes into the used ring.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Total device-readable bytes.
    pub fn readable_len(&self) -> u32 {
        self.readable_len
    }

    /// Total device-writable bytes.
    pub fn writable_len(&self) -> u32 {
        self.writable_len
    }

    /// Descriptors walked to pop the chain (zero-length and indirect ones included): what
    /// it cost, for budgets.
    pub fn desc_count(&self) -> u32 {
        self.descs
    }

    /// Number of translated buffers.
    pub fn seg_count(&self) -> usize {
        self.segs.len()
    }

    #[inline(always)]
    fn readable(&self) -> &[Seg] {
        &self.segs[..self.readable_segs]
    }

    #[inline(always)]
    fn writable(&self) -> &[Seg] {
        &self.segs[self.readable_segs..]
    }

    /// The first `N` device-readable bytes from offset `off` when they lie in one buffer
    /// (the common case: a frame's headers), copied with an inlined fixed-size copy.
    /// `None` when they do not (use [`read_at`](Self::read_at)).
    #[inline]
    pub fn read_array<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let (p, room) = locate(self.readable(), off)?;
        if room < N {
            return None;
        }
        // SAFETY: `p..p+N` lies inside one checked readable segment (room >= N).
        Some(unsafe { access::read_array::<N>(p) })
    }

    /// Writes `v` into the device-writable buffers at `off` when the range lies in one
    /// buffer, with an inlined fixed-size copy; false (nothing written) when it does not.
    #[inline]
    pub fn write_array<const N: usize>(&self, off: usize, v: &[u8; N]) -> bool {
        match locate(self.writable(), off) {
            Some((p, room)) if room >= N => {
                // SAFETY: `p..p+N` lies inside one checked writable segment.
                unsafe { access::write_array::<N>(p, v) };
                true
            }
            _ => false,
        }
    }

    /// Writes `head` at the start of the device-writable buffers, then `len` readable bytes
    /// of `src` from `src_off` right after it, when the first writable buffer takes both and
    /// the source bytes lie in one buffer (a small frame into a large enough rx buffer, the
    /// common case); false (nothing written) when not.
    #[inline]
    pub fn put_head_and_copy<const N: usize>(
        &self,
        head: &[u8; N],
        src: &Chain,
        src_off: usize,
        len: usize,
    ) -> bool {
        self.writable()
            .first()
            .is_some_and(|d| d.put_head_and_copy(head, src, src_off, len))
    }

    /// Copies device-readable bytes from offset `off` into `buf`; returns bytes copied
    /// (less than `buf.len()` when the chain ends first).
    pub fn read_at(&self, off: usize, buf: &mut [u8]) -> usize {
        let mut done = 0;
        walk(self.readable(), off, buf.len(), |p, n| {
            // SAFETY: `p..p+n` is inside one checked segment; `buf[done..]` has n bytes left.
            unsafe { access::copy_from_guest(p, &mut buf[done..done + n]) };
            done += n;
        });
        done
    }

    /// Copies `buf` into the device-writable buffers starting at offset `off`; returns bytes
    /// written (less than `buf.len()` when the chain ends first).
    pub fn write_at(&self, off: usize, buf: &[u8]) -> usize {
        let mut done = 0;
        walk(self.writable(), off, buf.len(), |p, n| {
            // SAFETY: `p..p+n` is inside one checked, device-writable segment.
            unsafe { access::copy_to_guest(p, &buf[done..done + n]) };
            done += n;
        });
        done
    }

    /// Copies up to `len` readable bytes of `self` from `src_off` into the writable buffers
    /// of `dst` at `dst_off`, guest memory to guest memory with no bounce buffer. Returns
    /// bytes copied.
    pub fn copy_to(&self, src_off: usize, dst: &Chain, dst_off: usize, len: usize) -> usize {
        // Fast path: both ranges inside one buffer each (small frames, large buffers).
        if let (Some((sp, sroom)), Some((dp, droom))) = (
            locate(self.readable(), src_off),
            locate(dst.writable(), dst_off),
        ) {
            if sroom >= len && droom >= len {
                // SAFETY: `sp..sp+len` lies in one checked readable segment and
                // `dp..dp+len` in one checked writable one.
                unsafe { access::copy_guest_to_guest(sp, dp, len) };
                return len;
            }
        }
        let mut done = 0usize;
        walk(self.readable(), src_off, len, |sp, sn| {
            let mut sdone = 0usize;
            walk(dst.writable(), dst_off + done, sn, |dp, dn| {
                // SAFETY: `sp+sdone..+dn` lies in a checked readable segment (dn <= sn -
                // sdone) and `dp..dp+dn` in a checked writable one.
                unsafe { access::copy_guest_to_guest(sp.add(sdone), dp, dn) };
                sdone += dn;
            });
            done += sdone;
        });
        done
    }
}

/// The iovecs of one `writev`, each pointing into memory borrowed for `'a`: byte slices
/// of ours, or readable buffers of chains (whose guest memory the chain keeps mapped). The
/// only way to fill one, so a system call given [`as_slice`](Self::as_slice) reads memory
/// that is alive and not written by us for the whole call.
#[derive(Debug)]
pub struct IoVecs<'a> {
    iov: &'a mut [libc::iovec],
    n: usize,
    _data: PhantomData<&'a [u8]>,
}

impl<'a> IoVecs<'a> {
    /// An empty list over `storage` (its old contents are ignored); it holds at most
    /// `storage.len()` entries.
    pub fn new(storage: &'a mut [libc::iovec]) -> IoVecs<'a> {
        IoVecs {
            iov: storage,
            n: 0,
            _data: PhantomData,
        }
    }

    /// Adds `b`; false (nothing added) when the list is full.
    pub fn push_bytes(&mut self, b: &'a [u8]) -> bool {
        let Some(slot) = self.iov.get_mut(self.n) else {
            return false;
        };
        *slot = libc::iovec {
            iov_base: b.as_ptr().cast_mut().cast(),
            iov_len: b.len(),
        };
        self.n += 1;
        true
    }

    /// Adds readable bytes `[off, off + len)` of `chain`, one entry per buffer; returns
    /// the bytes added (less than `len` when the chain ends or the list fills first).
    pub fn push_chain(&mut self, chain: &'a Chain, off: usize, len: usize) -> usize {
        let mut added = 0;
        walk(chain.readable(), off, len, |p, l| {
            if let Some(slot) = self.iov.get_mut(self.n) {
                *slot = libc::iovec {
                    iov_base: p.as_ptr().cast(),
                    iov_len: l,
                };
                self.n += 1;
                added += l;
            }
        });
        added
    }

    /// Entries so far.
    pub fn len(&self) -> usize {
        self.n
    }

    /// No entry yet.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Total bytes described.
    pub fn total_len(&self) -> usize {
        self.as_slice().iter().map(|v| v.iov_len).sum()
    }

    /// The entries, for `writev`.
    pub fn as_slice(&self) -> &[libc::iovec] {
        &self.iov[..self.n]
    }

    /// The entries, borrowed for as long as the data they point to.
    pub fn into_slice(self) -> &'a [libc::iovec] {
        let IoVecs { iov, n, .. } = self;
        &iov[..n]
    }
}

/// The address of byte `off` of `segs` and how many bytes of its segment follow it.
#[inline(always)]
fn locate(segs: &[Seg], mut off: usize) -> Option<(NonNull<u8>, usize)> {
    // Most often in the first: that case without the loop.
    if let Some(s) = segs.first().filter(|s| off < s.len as usize) {
        // SAFETY: `off < s.len`, so the address stays inside the segment.
        return Some((unsafe { s.ptr.add(off) }, s.len as usize - off));
    }
    for s in segs {
        let slen = s.len as usize;
        if off < slen {
            // SAFETY: `off < slen`, so the address stays inside the segment.
            return Some((unsafe { s.ptr.add(off) }, slen - off));
        }
        off -= slen;
    }
    None
}

/// Calls `f(ptr, n)` for the pieces of `segs` covering `[off, off + len)`, stopping at the
/// end of the segments.
#[inline]
fn walk(segs: &[Seg], mut off: usize, mut len: usize, mut f: impl FnMut(NonNull<u8>, usize)) {
    for s in segs {
        if len == 0 {
            break;
        }
        let slen = s.len as usize;
        if off >= slen {
            off -= slen;
            continue;
        }
        let n = (slen - off).min(len);
        // SAFETY: `off < slen`, so the address stays inside the segment.
        f(unsafe { s.ptr.add(off) }, n);
        len -= n;
        off = 0;
    }
}

impl Seg {
    pub(crate) fn new(ptr: NonNull<u8>, len: u32) -> Seg {
        Seg { ptr, len }
    }
}
