//! The device side of a packed virtqueue (virtio 1.1+ §2.8).
//!
//! One ring of 16-byte descriptors `{ addr: le64, len: le32, id: le16, flags: le16 }` is
//! shared both ways: the driver makes a chain available by writing its descriptors and,
//! last, the flags of its first one with `AVAIL` equal to its wrap counter and `USED` the
//! opposite; the device gives a buffer back by writing one used descriptor (the buffer
//! id, the length written, `AVAIL` and `USED` both equal to the device's wrap counter) at
//! its used position, which then moves by the number of ring entries the chain took.
//!
//! Ordering contract:
//! * the flags of each head descriptor are loaded with Acquire before any other field of
//!   the chain is read, so what the driver wrote before making the chain available is
//!   visible;
//! * used descriptors collect in a shadow list; a flush writes them all and stores the
//!   flags of the first one last, with Release, so the driver sees the whole batch at once
//!   and never a used descriptor before its id and length.
//!
//! Event suppression (§2.8.10): the driver area holds the driver's wishes about calls
//! (`ENABLE`, `DISABLE`, or with EVENT_IDX `DESC` plus a position and wrap counter); the
//! device area holds ours about kicks, where this device only uses `ENABLE`/`DISABLE`.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::access::{self, Desc};
use crate::chain::{Chain, Seg};
use crate::fill::{fill_one, FillFrames, UsedRun};
use crate::mem::GuestMemory;
use crate::queue::{
    chain_desc, indirect_table, QueueConfig, RingError, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
    MAX_CHAIN_SEGS_U32, MAX_QUEUE_SIZE,
};

/// `VIRTQ_DESC_F_AVAIL` (bit 7).
pub const DESC_F_AVAIL: u16 = 1 << 7;
/// `VIRTQ_DESC_F_USED` (bit 15).
pub const DESC_F_USED: u16 = 1 << 15;
/// `RING_EVENT_FLAGS_ENABLE`: notify on every buffer.
pub const EVENT_F_ENABLE: u16 = 0;
/// `RING_EVENT_FLAGS_DISABLE`: do not notify.
pub const EVENT_F_DISABLE: u16 = 1;
/// `RING_EVENT_FLAGS_DESC`: notify once the given position is reached (EVENT_IDX only).
pub const EVENT_F_DESC: u16 = 2;

const MAX_CHAIN_SEGS_U16: u16 = 1024;
const _: () = assert!(MAX_CHAIN_SEGS_U16 as u32 == MAX_CHAIN_SEGS_U32);

/// Pops remembered for [`PackedQueue::unpop`] (more than any caller gives back at once).
const POP_HISTORY: usize = 256;

/// A position in the ring with its wrap counter, as vhost-user encodes it: bits 0-14 the
/// position, bit 15 the wrap counter.
fn encode(pos: u16, wrap: bool) -> u16 {
    pos | (u16::from(wrap) << 15)
}

fn decode(state: u16) -> (u16, bool) {
    (state & 0x7fff, state & 0x8000 != 0)
}

#[inline]
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One used descriptor waiting for a flush.
#[derive(Debug, Clone, Copy)]
struct UsedElem {
    id: u16,
    len: u32,
    /// Ring entries the chain took.
    count: u16,
}

/// Device side of one packed virtqueue.
#[derive(Debug)]
pub struct PackedQueue {
    mem: Arc<GuestMemory>,
    size: u16,
    desc: NonNull<u8>,
    /// Driver event suppression structure (we read it).
    driver: NonNull<u8>,
    /// Device event suppression structure (we write it).
    device: NonNull<u8>,
    event_idx: bool,
    indirect: bool,
    /// Ignore WRITE in indirect tables (see [`QueueConfig::device_reads`]).
    device_reads: bool,
    /// IN_ORDER on a ring the device only reads: one used descriptor per flush.
    batch_used: bool,
    /// Next ring position to pop from, and the wrap counter that makes it available.
    next_avail: u16,
    avail_wrap: bool,
    /// Next ring position a used descriptor goes to, and the wrap counter it carries.
    next_used: u16,
    used_wrap: bool,
    /// Chains published as used (wrapping), for counters.
    used_chains: u16,
    /// Where the last pops started (encoded), by pop count modulo [`POP_HISTORY`].
    starts: Box<[u16; POP_HISTORY]>,
    pops: usize,
    shadow: Vec<UsedElem>,
    hint: usize,
}

// SAFETY: the raw pointers point into `mem`, which is Send + Sync and kept alive by the Arc
// this queue holds; the queue is used by one thread at a time (`&mut self`).
unsafe impl Send for PackedQueue {}

impl PackedQueue {
    /// Checks `cfg` against `mem` and builds the queue. `cfg.next_avail` holds the avail
    /// position and wrap counter (vhost-user encoding), `cfg.next_used` the used ones
    /// (`None`: the same as the avail ones, nothing in flight).
    pub fn new(mem: Arc<GuestMemory>, cfg: &QueueConfig) -> Result<PackedQueue, RingError> {
        let size = cfg.size;
        // §2.8: any size up to 32768 (no power of two needed).
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(RingError::BadSize(u32::from(size)));
        }
        let part = |part: &'static str, addr: u64, len: u64, align: u64| {
            mem.translate_uaddr(addr, len)
                .filter(|p| (p.as_ptr() as usize as u64) % align == 0 && addr % align == 0)
                .ok_or(RingError::BadRingAddr { part, addr })
        };
        let desc = part("desc", cfg.desc_uaddr, 16 * u64::from(size), 16)?;
        let driver = part("driver event", cfg.avail_uaddr, 4, 4)?;
        let device = part("device event", cfg.used_uaddr, 4, 4)?;
        let (next_avail, avail_wrap) = decode(cfg.next_avail);
        let (next_used, used_wrap) = decode(cfg.next_used.unwrap_or(cfg.next_avail));
        if next_avail >= size || next_used >= size {
            return Err(RingError::BadBase {
                avail: cfg.next_avail,
                used: cfg.next_used.unwrap_or(cfg.next_avail),
            });
        }
        Ok(PackedQueue {
            size,
            desc,
            driver,
            device,
            event_idx: cfg.event_idx,
            indirect: cfg.indirect,
            device_reads: cfg.device_reads,
            batch_used: cfg.in_order && cfg.device_reads,
            next_avail,
            avail_wrap,
            next_used,
            used_wrap,
            used_chains: 0,
            starts: Box::new([0; POP_HISTORY]),
            pops: 0,
            shadow: Vec::with_capacity(usize::from(size)),
            hint: 0,
            mem,
        })
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The guest memory this queue lives in.
    pub fn mem(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// Where to resume, as GET_VRING_BASE reports it: bits 0-15 the avail position and
    /// wrap counter, bits 16-31 the used ones.
    pub fn base(&self) -> u32 {
        u32::from(encode(self.next_avail, self.avail_wrap))
            | u32::from(encode(self.next_used, self.used_wrap)) << 16
    }

    /// Chains published as used so far (wrapping).
    pub fn used_chains(&self) -> u16 {
        self.used_chains
    }

    /// Whether EVENT_IDX is in use.
    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    /// The flags of the descriptor at `pos` (Acquire: the rest of the chain the driver
    /// wrote before them is visible after), if it is available for wrap counter `wrap`.
    #[inline(always)]
    fn avail_flags(&self, pos: u16) -> Option<u16> {
        self.flags_if_avail(pos, self.avail_wrap)
    }

    /// [`avail_flags`](Self::avail_flags) for wrap counter `wrap`.
    #[inline(always)]
    fn flags_if_avail(&self, pos: u16, wrap: bool) -> Option<u16> {
        // SAFETY: `pos < size` and the ring's `16 * size` bytes were range-checked in `new`;
        // the flags sit at +14 of a 16-aligned descriptor, so 2-aligned.
        let flags = unsafe { access::load_u16_acquire(self.desc.add(16 * usize::from(pos) + 14)) };
        // AVAIL equal to the wrap counter, USED not.
        let want = if wrap { DESC_F_AVAIL } else { DESC_F_USED };
        (flags & (DESC_F_AVAIL | DESC_F_USED) == want).then_some(flags)
    }

    /// Whether a chain is ready at the next avail position: 1 if so, else 0.
    #[inline]
    pub fn pending(&self) -> u16 {
        u16::from(self.avail_flags(self.next_avail).is_some())
    }

    /// Whether the next descriptor is available (what [`pending`](Self::pending) says).
    #[inline]
    pub fn peek(&self) -> bool {
        self.pending() > 0
    }

    /// Same as [`pending`](Self::pending): a packed ring has no index to load, each
    /// descriptor says whether it is available.
    #[inline]
    pub fn refresh_avail(&mut self) -> Result<u16, RingError> {
        Ok(self.pending())
    }

    /// The descriptor at `pos` (`pos < size`) with `flags` loaded already: address,
    /// length, and buffer id in `next`.
    #[inline(always)]
    fn desc_at(&self, pos: u16, flags: u16) -> Desc {
        // SAFETY: `pos < size`, inside the checked 16-aligned ring.
        let raw = unsafe { access::read_desc(self.desc.add(16 * usize::from(pos))) };
        // `read_desc` decodes the split layout: bytes 12..14 (the id here) come out as
        // `flags`; the flags were loaded before, with Acquire.
        Desc {
            addr: raw.addr,
            len: raw.len,
            flags,
            next: raw.flags,
        }
    }

    /// Moves `pos`/`wrap` on by `n` ring entries (`n <= size`).
    #[inline(always)]
    fn advance(&self, pos: u16, wrap: bool, n: u16) -> (u16, bool) {
        // pos < size <= 32768 and n <= size: no overflow.
        let p = pos + n;
        if p >= self.size {
            (p - self.size, !wrap)
        } else {
            (p, wrap)
        }
    }

    /// The head descriptor at the next avail position, if the driver made it available.
    #[inline(always)]
    fn next_head(&self) -> Option<Desc> {
        let flags = self.avail_flags(self.next_avail)?;
        Some(self.desc_at(self.next_avail, flags))
    }

    #[inline(always)]
    fn record_start(&mut self) {
        self.starts[self.pops % POP_HISTORY] = encode(self.next_avail, self.avail_wrap);
        self.pops = self.pops.wrapping_add(1);
    }

    /// Pops the next chain into `chain` (buffers translated and checked). `Ok(false)` when
    /// the driver has not made one available.
    #[inline(always)]
    pub fn pop(&mut self, chain: &mut Chain) -> Result<bool, RingError> {
        let Some(d) = self.next_head() else {
            return Ok(false);
        };
        chain.bind(&self.mem);
        if d.flags & (DESC_F_NEXT | DESC_F_INDIRECT) == 0 && d.len != 0 {
            if let Some(p) = self.mem.translate(d.addr, u64::from(d.len), &mut self.hint) {
                chain.set_single(d.next, Seg::new(p, d.len), d.flags & DESC_F_WRITE != 0);
                self.record_start();
                (self.next_avail, self.avail_wrap) =
                    self.advance(self.next_avail, self.avail_wrap, 1);
                return Ok(true);
            }
        }
        self.pop_slow(d, chain)
    }

    /// [`DeviceRing::fill_bufs`](crate::DeviceRing::fill_bufs): the next available
    /// descriptors taken while they are lone writable buffers (one descriptor, not chained
    /// or indirect, not empty, in one memory region), with [`pop`](Self::pop)'s checks.
    /// [`unpop`](Self::unpop) forgets the pops before a run that took any: it cannot give
    /// them back past the run.
    #[inline(always)]
    pub fn fill_bufs<const H: usize, const L: usize, F: FillFrames<H, L>>(
        &mut self,
        srcs: &[Chain],
        src_off: usize,
        frames: &F,
    ) -> usize {
        let mut used = UsedRun::take(&mut self.shadow, self.size, srcs.len());
        let (mut next, mut wrap, mut hint) = (self.next_avail, self.avail_wrap, self.hint);
        while !used.is_full() {
            let k = used.len();
            let Some(flags) = self.flags_if_avail(next, wrap) else {
                break;
            };
            if !lone_writable(flags) {
                break;
            }
            let Some(f) = frames.frame(k) else {
                break;
            };
            let d = self.desc_at(next, flags);
            if d.len == 0 {
                break;
            }
            let Some(dst) = self.mem.translate(d.addr, u64::from(d.len), &mut hint) else {
                break;
            };
            // `dst` is the translation of this buffer in `self.mem`, which `&mut self`
            // keeps mapped.
            let Some(len) = fill_one(dst, d.len, &f, &srcs[k], src_off) else {
                break;
            };
            used.push(UsedElem {
                id: d.next,
                len,
                count: 1,
            });
            (next, wrap) = self.advance(next, wrap, 1);
        }
        let n = used.put_back(&mut self.shadow);
        if n > 0 {
            self.pops = 0;
        }
        (self.next_avail, self.avail_wrap) = (next, wrap);
        self.hint = hint;
        n
    }

    /// Anything but a single direct buffer in one region, head descriptor `d` read already.
    #[inline(never)]
    fn pop_slow(&mut self, d: Desc, chain: &mut Chain) -> Result<bool, RingError> {
        chain.clear(d.next);
        let size = u32::from(self.size);
        let taken = if d.flags & DESC_F_INDIRECT != 0 {
            self.walk_indirect(d, chain)?;
            1
        } else {
            self.walk_ring(d, chain)?
        };
        chain.ring_descs = taken;
        debug_assert!(u32::from(taken) <= size);
        self.record_start();
        (self.next_avail, self.avail_wrap) = self.advance(self.next_avail, self.avail_wrap, taken);
        Ok(true)
    }

    /// A chain of consecutive ring entries from the head `d`: every descriptor counts, at
    /// most the queue size and [`crate::MAX_CHAIN_SEGS`] of them. The buffer id is the last one's.
    /// Returns the entries taken.
    fn walk_ring(&mut self, first: Desc, chain: &mut Chain) -> Result<u16, RingError> {
        // <= 1024
        let limit = self.size.min(MAX_CHAIN_SEGS_U16);
        let mut pos = self.next_avail;
        let mut d = first;
        let mut count = 1u16;
        loop {
            chain_desc(&self.mem, &mut self.hint, d, chain)?;
            chain.head = d.next;
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(count);
            }
            count += 1;
            if count > limit {
                return Err(RingError::ChainTooLong(u32::from(limit)));
            }
            pos = if pos + 1 == self.size { 0 } else { pos + 1 };
            // The rest of the chain was written before its head was made available (the
            // Acquire of the head's flags covers it); their own flags are not checked.
            // SAFETY: `pos < size`, inside the checked ring, 2-aligned.
            let flags = unsafe { access::load_u16(self.desc.add(16 * usize::from(pos) + 14)) };
            d = self.desc_at(pos, flags);
        }
    }

    /// An indirect table (§2.8.8), checked as a split ring's ([`indirect_table`]; the
    /// multiple of 16 bytes is what every driver writes, the packed section leaves it
    /// unsaid), with at most [`crate::MAX_CHAIN_SEGS`] entries, none of them indirect. All
    /// its entries are the chain, in order.
    fn walk_indirect(&mut self, d: Desc, chain: &mut Chain) -> Result<(), RingError> {
        let size = u32::from(self.size);
        let (table, tlen) = indirect_table(&self.mem, &mut self.hint, self.indirect, d, size)?;
        if tlen > MAX_CHAIN_SEGS_U32 {
            return Err(RingError::ChainTooLong(MAX_CHAIN_SEGS_U32));
        }
        chain.descs = 1;
        for i in 0..tlen as usize {
            // SAFETY: `i < tlen` and the table's `16 * tlen` bytes were translated as one
            // range above, 8-aligned.
            let raw = unsafe { access::read_desc(table.add(16 * i)) };
            // Packed layout: the flags are the last two bytes (`next` of the split view).
            // Only WRITE and INDIRECT mean anything here; NEXT and the id do not.
            let mut flags = raw.next;
            if self.device_reads {
                flags &= !DESC_F_WRITE;
            }
            let e = Desc {
                addr: raw.addr,
                len: raw.len,
                flags,
                next: 0,
            };
            chain_desc(&self.mem, &mut self.hint, e, chain)?;
        }
        Ok(())
    }

    /// Gives back the last `n` popped chains (not yet pushed to used): they will be
    /// popped again. At most 256 at once, and none before a
    /// [`fill_bufs`](Self::fill_bufs) run.
    pub fn unpop(&mut self, n: u16) {
        let n = usize::from(n).min(POP_HISTORY).min(self.pops);
        if n == 0 {
            return;
        }
        self.pops -= n;
        (self.next_avail, self.avail_wrap) = decode(self.starts[self.pops % POP_HISTORY]);
    }

    /// Records that `chain` is done, `len` bytes written into it. Chains are used in the
    /// order they were popped. Published by the next [`flush_used`](Self::flush_used).
    #[inline]
    pub fn push_used(&mut self, chain: &Chain, len: u32) {
        self.push_shadow(chain.head, len, chain.ring_descs.max(1));
    }

    /// [`push_used`](Self::push_used) of each of `chains`, in order (one store each).
    #[inline(always)]
    pub fn push_used_all(&mut self, chains: &[Chain], len: u32) {
        let room = usize::from(self.size).saturating_sub(self.shadow.len());
        let used = chains.iter().take(room).map(|c| UsedElem {
            id: c.head,
            len,
            count: c.ring_descs.max(1),
        });
        self.shadow.extend(used);
    }

    /// A used descriptor for buffer `id` (`count` ring entries), into the shadow list
    /// (never more than the ring holds).
    #[inline(always)]
    fn push_shadow(&mut self, id: u16, len: u32, count: u16) {
        if self.shadow.len() < usize::from(self.size) {
            self.shadow.push(UsedElem { id, len, count });
        }
    }

    /// Used descriptors waiting for a flush.
    pub fn shadow_len(&self) -> usize {
        self.shadow.len()
    }

    /// Writes the shadow used descriptors, the first one's flags last (Release), and says
    /// whether the driver wants a call. With IN_ORDER on a ring the device only reads, the
    /// whole batch is one used descriptor at the first one's place carrying the last
    /// buffer's id; the driver takes every buffer up to it as used, and both sides skip
    /// the ring entries of all of them.
    pub fn flush_used(&mut self) -> bool {
        if self.shadow.is_empty() {
            return false;
        }
        // shadow.len() <= size <= 32768
        let chains = u16::try_from(self.shadow.len()).unwrap_or(u16::MAX);
        if self.batch_used && chains > 1 {
            let total: u32 = self.shadow.iter().map(|e| u32::from(e.count)).sum();
            let last = self.shadow[self.shadow.len() - 1];
            self.shadow.clear();
            // Buffers in flight never take more than the ring: total <= size.
            self.shadow.push(UsedElem {
                id: last.id,
                len: 0,
                count: u16::try_from(total).unwrap_or(self.size).min(self.size),
            });
        }
        let first_len = self.shadow[0].len;
        let (old, old_wrap) = (self.next_used, self.used_wrap);
        let (mut pos, mut wrap) = (old, old_wrap);
        for (k, e) in self.shadow.iter().enumerate() {
            // SAFETY: `pos < size`, inside the checked ring.
            let p = unsafe { self.desc.add(16 * usize::from(pos)) };
            // SAFETY: `p..p+16` is one descriptor of the checked, 16-aligned ring: the
            // length at +8 (4-aligned) and the id at +12 (2-aligned).
            unsafe {
                std::ptr::write_volatile(p.as_ptr().add(8).cast::<u32>(), e.len.to_le());
                access::store_u16(p.add(12), e.id);
            }
            if k > 0 {
                // SAFETY: flags at +14, 2-aligned, inside the ring. Release: this entry's
                // id and length are visible before its flags.
                unsafe { access::store_u16_release(p.add(14), used_flags(wrap, e.len)) };
            }
            (pos, wrap) = self.advance(pos, wrap, e.count);
        }
        // SAFETY: `old < size`; flags at +14 of its descriptor. Release: every used
        // descriptor written above is visible before the driver can see the first.
        unsafe {
            access::store_u16_release(
                self.desc.add(16 * usize::from(old) + 14),
                used_flags(old_wrap, first_len),
            )
        };
        self.used_chains = self.used_chains.wrapping_add(chains);
        self.shadow.clear();
        (self.next_used, self.used_wrap) = (pos, wrap);
        self.needs_call(old)
    }

    /// §2.8.10: whether the driver wants a call now that the used position moved from
    /// `old` to `next_used`.
    fn needs_call(&self, old: u16) -> bool {
        // Full fence: our used descriptors must be globally visible before we read the
        // driver's event suppression, or we may skip a call the driver waits for.
        fence(Ordering::SeqCst);
        // SAFETY: the driver area's 4 bytes were checked in `new`, 4-aligned.
        let flags = unsafe { access::load_u16(self.driver.add(2)) } & 3;
        match flags {
            EVENT_F_DISABLE => false,
            EVENT_F_DESC if self.event_idx => {
                // SAFETY: as above, offset 0.
                let off_wrap = unsafe { access::load_u16(self.driver) };
                let (mut off, wrap) = decode(off_wrap);
                let new = self.next_used;
                // Positions relative to the lap of `new`: an `old` at or past it was in
                // the lap before, an event with the other wrap counter too.
                let old = if new <= old {
                    old.wrapping_sub(self.size)
                } else {
                    old
                };
                if wrap != self.used_wrap {
                    off = off.wrapping_sub(self.size);
                }
                need_event(off, new, old)
            }
            _ => true,
        }
    }

    fn set_device_flags(&mut self, flags: u16) {
        // SAFETY: the device area's 4 bytes were checked in `new`; flags at +2, 2-aligned.
        unsafe { access::store_u16(self.device.add(2), flags) };
    }

    /// Asks the driver to kick when it makes buffers available, then re-checks the ring.
    /// Returns 1 if a chain is ready (do not sleep), else 0.
    pub fn enable_notify(&mut self) -> Result<u16, RingError> {
        self.set_device_flags(EVENT_F_ENABLE);
        // Full fence: the store above must be visible before we re-read the ring, or a
        // driver that added a buffer just before may not kick and we would sleep on it.
        fence(Ordering::SeqCst);
        Ok(self.pending())
    }

    /// The same as [`enable_notify`](Self::enable_notify): with `ENABLE` every new
    /// buffer kicks, which covers "more than the ones available now".
    pub fn enable_notify_on_more(&mut self) -> Result<u16, RingError> {
        self.enable_notify()
    }

    /// Asks the driver not to kick.
    pub fn disable_notify(&mut self) {
        self.set_device_flags(EVENT_F_DISABLE);
    }
}

/// Flags of a used descriptor written with wrap counter `wrap`: `AVAIL` and `USED` both
/// equal to it, `WRITE` when the device wrote into the buffer.
#[inline(always)]
fn used_flags(wrap: bool, len: u32) -> u16 {
    let w = if wrap { DESC_F_AVAIL | DESC_F_USED } else { 0 };
    if len > 0 {
        w | DESC_F_WRITE
    } else {
        w
    }
}

/// Whether descriptor `flags` make a lone device-writable buffer: neither chained nor
/// indirect.
#[inline(always)]
fn lone_writable(flags: u16) -> bool {
    flags & (DESC_F_NEXT | DESC_F_INDIRECT | DESC_F_WRITE) == DESC_F_WRITE
}
