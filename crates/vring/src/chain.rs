//! A descriptor chain popped from a queue: its buffers already translated to host
//! addresses and range-checked, device-readable ones first, then device-writable ones.

use std::ptr::NonNull;

use crate::access;

/// Most buffers one chain may have after translation (a descriptor spanning two memory
/// regions counts twice). Linux uses at most MAX_SKB_FRAGS + 2 (19) per packet.
pub const MAX_CHAIN_SEGS: usize = 1024;

/// One translated buffer: `len` bytes at host address `ptr` inside guest memory.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    ptr: NonNull<u8>,
    len: u32,
}

/// A popped descriptor chain. Buffers are valid host addresses only while the queue it
/// came from (and with it the guest memory mapping) is alive: the datapath uses a chain
/// within one burst and returns it with `push_used` before the queue can be replaced.
#[derive(Debug)]
pub struct Chain {
    pub(crate) head: u16,
    pub(crate) segs: Vec<Seg>,
    /// `segs[..readable_segs]` are device-readable, the rest device-writable.
    pub(crate) readable_segs: usize,
    pub(crate) readable_len: u32,
    pub(crate) writable_len: u32,
}

// SAFETY: a Chain holds addresses inside a GuestMemory mapping (Send + Sync) and is only
// dereferenced by the thread that popped it while that mapping is alive.
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
            head: 0,
            segs: Vec::with_capacity(MAX_CHAIN_SEGS),
            readable_segs: 0,
            readable_len: 0,
            writable_len: 0,
        }
    }

    pub(crate) fn clear(&mut self, head: u16) {
        self.head = head;
        self.segs.clear();
        self.readable_segs = 0;
        self.readable_len = 0;
        self.writable_len = 0;
    }

    /// Makes this the chain of one buffer `seg` (device-writable with `writable`).
    #[inline]
    pub(crate) fn set_single(&mut self, head: u16, seg: Seg, writable: bool) {
        self.head = head;
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

    /// Head descriptor index (the id that goes into the used ring).
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

    /// Number of translated buffers.
    pub fn seg_count(&self) -> usize {
        self.segs.len()
    }

    fn readable(&self) -> &[Seg] {
        &self.segs[..self.readable_segs]
    }

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

    /// Describes readable bytes `[off, off + len)` as iovecs in `out` (for a `writev`
    /// straight from guest memory); returns how many entries were filled. Stops early when
    /// `out` is full or the chain ends.
    pub fn readable_iovecs(&self, off: usize, len: usize, out: &mut [libc::iovec]) -> usize {
        let mut n = 0;
        walk(self.readable(), off, len, |p, l| {
            if let Some(slot) = out.get_mut(n) {
                *slot = libc::iovec {
                    iov_base: p.as_ptr().cast(),
                    iov_len: l,
                };
                n += 1;
            }
        });
        n
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

/// The address of byte `off` of `segs` and how many bytes of its segment follow it.
#[inline]
fn locate(segs: &[Seg], mut off: usize) -> Option<(NonNull<u8>, usize)> {
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
