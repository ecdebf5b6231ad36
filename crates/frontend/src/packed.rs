//! Driver side of a packed virtqueue (virtio 1.1+ §2.8).
//!
//! The driver writes descriptors into the one ring at its avail position, each with
//! `AVAIL` equal to its wrap counter and `USED` the opposite; a chain becomes visible when
//! the flags of its first descriptor are stored. To make a batch visible at once (as
//! `publish` does on a split ring) the head flags of the chains posted since the last
//! publish are stored in reverse order, the first chain's last, with Release.
//!
//! The device writes one used descriptor per chain (or per batch with IN_ORDER, which this
//! driver does not negotiate) at the driver's used position; the driver reads its flags
//! with Acquire, then its id and length, validates both, and moves on by the number of
//! ring entries that buffer took. Everything the device wrote is validated: a bad value
//! is a [`FrontendError::BadBackend`], never a panic.

use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};

use crate::guest::GuestMemory;
use crate::ring::{Seg, Used, VringAddrs, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE};
use crate::FrontendError;

/// `VIRTQ_DESC_F_AVAIL`.
pub(crate) const DESC_F_AVAIL: u16 = 1 << 7;
/// `VIRTQ_DESC_F_USED`.
pub(crate) const DESC_F_USED: u16 = 1 << 15;
/// Event suppression: notify on every buffer.
pub(crate) const EVENT_ENABLE: u16 = 0;
/// Event suppression: do not notify.
pub(crate) const EVENT_DISABLE: u16 = 1;
/// Event suppression: notify at a position (EVENT_IDX).
pub(crate) const EVENT_DESC: u16 = 2;

/// The initial SET_VRING_BASE of a packed ring: avail position 0 with wrap counter 1
/// (§2.8.1). Only the avail half, as DPDK's virtio-user sends it (the `vhost` crate's
/// frontend takes 16 bits); the backend then starts the used side at the same place.
pub(crate) const INITIAL_BASE: u16 = 0x8000;

/// Encodes one `struct pvirtq_desc`.
pub(crate) fn encode_packed_desc(addr: u64, len: u32, id: u16, flags: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&id.to_le_bytes());
    d[14..16].copy_from_slice(&flags.to_le_bytes());
    d
}

/// `AVAIL`/`USED` bits of a descriptor made available with wrap counter `wrap`.
fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        DESC_F_AVAIL
    } else {
        DESC_F_USED
    }
}

/// A used descriptor read and validated, not consumed yet.
#[derive(Debug, Clone, Copy)]
struct Seen {
    id: u16,
    len: u32,
    token: Option<u32>,
}

/// Driver state of one packed virtqueue.
#[derive(Debug)]
pub(crate) struct PackedRing {
    index: u16,
    /// `desc`: the ring; `avail`: the driver area (ours); `used`: the device area.
    addrs: VringAddrs,
    event_idx: bool,
    /// Free buffer ids (a stack).
    free_ids: Vec<u16>,
    /// Per id: ring entries its chain took (0: not in flight) and the caller's token.
    inflight_of: Vec<(u16, Option<u32>)>,
    /// Ring entries not taken by chains in flight.
    free_slots: u16,
    inflight: u16,
    next_avail: u16,
    avail_wrap: bool,
    /// Head positions and flags of chains posted since the last publish.
    unpublished: Vec<(u16, u16)>,
    /// Next used position to read and its wrap counter (past what `seen` holds).
    scan_pos: u16,
    scan_wrap: bool,
    /// Used descriptors read and validated, in order, not consumed.
    seen: VecDeque<Seen>,
    /// Where `seen`'s first element sits (the next to consume), for EVENT_IDX.
    last_used: u16,
    used_wrap: bool,
    /// Chains posted raw by a test: the ring entries of each, in order.
    raw: VecDeque<u16>,
}

impl PackedRing {
    /// Allocates and initialises the ring (calls from the device suppressed).
    pub(crate) fn new(
        mem: &mut GuestMemory,
        index: u16,
        size: u16,
        event_idx: bool,
    ) -> Result<PackedRing, FrontendError> {
        if size == 0 || size > 32768 {
            return Err(FrontendError::Config(format!(
                "packed queue size {size} not in 1..=32768"
            )));
        }
        let n = u64::from(size);
        let desc = mem.alloc(DESC_SIZE * n, 4096)?;
        let driver = mem.alloc(4, 64)?;
        let device = mem.alloc(4, 64)?;
        let mut r = PackedRing {
            index,
            addrs: VringAddrs {
                size,
                desc,
                avail: driver,
                used: device,
            },
            event_idx,
            free_ids: (0..size).rev().collect(),
            inflight_of: vec![(0, None); usize::from(size)],
            free_slots: size,
            inflight: 0,
            next_avail: 0,
            avail_wrap: true,
            unpublished: Vec::new(),
            scan_pos: 0,
            scan_wrap: true,
            seen: VecDeque::new(),
            last_used: 0,
            used_wrap: true,
            raw: VecDeque::new(),
        };
        r.disable_calls(mem)?;
        Ok(r)
    }

    pub(crate) fn addrs(&self) -> VringAddrs {
        self.addrs
    }

    pub(crate) fn index(&self) -> u16 {
        self.index
    }

    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        usize::from(self.free_slots)
    }

    pub(crate) fn inflight(&self) -> u16 {
        self.inflight
    }

    fn bad(&self, reason: String) -> FrontendError {
        FrontendError::BadBackend {
            queue: self.index,
            reason,
        }
    }

    fn advance(&self, pos: u16, wrap: bool, n: u16) -> (u16, bool) {
        let p = u32::from(pos) + u32::from(n);
        let size = u32::from(self.addrs.size);
        if p >= size {
            (u16::try_from(p - size).unwrap_or(0), !wrap)
        } else {
            (u16::try_from(p).unwrap_or(0), wrap)
        }
    }

    fn slot_addr(&self, pos: u16) -> u64 {
        self.addrs.desc + DESC_SIZE * u64::from(pos)
    }

    /// Writes the descriptors of one chain (`(addr, len, flags)` each, NEXT added between
    /// them) at the avail position with buffer id `id`; the head's flags are kept for
    /// `publish`.
    fn write_chain(
        &mut self,
        mem: &mut GuestMemory,
        descs: &[(u64, u32, u16)],
        id: u16,
    ) -> Result<(), FrontendError> {
        let (mut pos, mut wrap) = (self.next_avail, self.avail_wrap);
        let head = pos;
        let mut head_flags = 0;
        for (i, &(addr, len, f)) in descs.iter().enumerate() {
            let mut flags = f | avail_bits(wrap);
            if i + 1 < descs.len() {
                flags |= DESC_F_NEXT;
            }
            if i == 0 {
                head_flags = flags;
                // Everything but the flags now; the flags at publish.
                let d = encode_packed_desc(addr, len, id, 0);
                mem.write(self.slot_addr(pos), &d[..14])?;
            } else {
                mem.write(
                    self.slot_addr(pos),
                    &encode_packed_desc(addr, len, id, flags),
                )?;
            }
            (pos, wrap) = self.advance(pos, wrap, 1);
        }
        self.unpublished.push((head, head_flags));
        (self.next_avail, self.avail_wrap) = (pos, wrap);
        Ok(())
    }

    fn take_id(&mut self, entries: u16, token: Option<u32>) -> Option<u16> {
        if entries == 0 || self.free_slots < entries {
            return None;
        }
        let id = self.free_ids.pop()?;
        self.inflight_of[usize::from(id)] = (entries, token);
        self.free_slots -= entries;
        self.inflight += 1;
        Some(id)
    }

    /// Writes `segs` as a chain of ring descriptors (not yet published). None if the
    /// ring has no room.
    pub(crate) fn post(
        &mut self,
        mem: &mut GuestMemory,
        segs: &[Seg],
        token: u32,
    ) -> Result<Option<u16>, FrontendError> {
        let Ok(n) = u16::try_from(segs.len()) else {
            return Ok(None);
        };
        let Some(id) = self.take_id(n, Some(token)) else {
            return Ok(None);
        };
        let descs: Vec<(u64, u32, u16)> = segs
            .iter()
            .map(|s| (s.gpa, s.len, if s.write { DESC_F_WRITE } else { 0 }))
            .collect();
        self.write_chain(mem, &descs, id)?;
        Ok(Some(id))
    }

    /// Writes `segs` into the indirect table at `table` and posts one ring descriptor
    /// pointing at it (§2.8.8): one ring entry whatever the chain's length.
    pub(crate) fn post_indirect(
        &mut self,
        mem: &mut GuestMemory,
        table: u64,
        segs: &[Seg],
        token: u32,
    ) -> Result<Option<u16>, FrontendError> {
        if segs.is_empty() {
            return Ok(None);
        }
        let Some(id) = self.take_id(1, Some(token)) else {
            return Ok(None);
        };
        for (i, s) in segs.iter().enumerate() {
            let flags = if s.write { DESC_F_WRITE } else { 0 };
            mem.write(
                table + DESC_SIZE * i as u64,
                &encode_packed_desc(s.gpa, s.len, 0, flags),
            )?;
        }
        let table_len = u32::try_from(segs.len() as u64 * DESC_SIZE)
            .map_err(|_| FrontendError::Config("indirect table too long".into()))?;
        self.write_chain(mem, &[(table, table_len, DESC_F_INDIRECT)], id)?;
        Ok(Some(id))
    }

    /// Makes the chains posted since the last publish available (the first one's flags
    /// last) and says whether the device wants a kick.
    pub(crate) fn publish(&mut self, mem: &GuestMemory) -> Result<bool, FrontendError> {
        if self.unpublished.is_empty() {
            return Ok(false);
        }
        let first = self.unpublished[0].0;
        for &(pos, flags) in self.unpublished.iter().rev() {
            // Release: the chain's other descriptors (and for the first chain, every later
            // one) are visible before its head.
            mem.store_u16(self.slot_addr(pos) + 14, flags, Ordering::Release)?;
        }
        self.unpublished.clear();
        // Full fence: the stores above before the load of the device's event suppression.
        fence(Ordering::SeqCst);
        let flags = mem.load_u16(self.addrs.used + 2, Ordering::Relaxed)? & 3;
        Ok(match flags {
            EVENT_DISABLE => false,
            EVENT_DESC if self.event_idx => {
                let off_wrap = mem.load_u16(self.addrs.used, Ordering::Relaxed)?;
                let (off, wrap) = (off_wrap & 0x7fff, off_wrap & 0x8000 != 0);
                // Kick if the event position lies in [first, next_avail) of this lap.
                let size = self.addrs.size;
                let new = self.next_avail;
                let old = if new <= first {
                    first.wrapping_sub(size)
                } else {
                    first
                };
                let off = if wrap != self.avail_wrap {
                    off.wrapping_sub(size)
                } else {
                    off
                };
                crate::ring::need_event(off, new, old)
            }
            _ => true,
        })
    }

    /// Reads used descriptors past those seen, validating each. Returns how many are
    /// ready to consume.
    fn scan(&mut self, mem: &GuestMemory) -> Result<u16, FrontendError> {
        loop {
            let at = self.slot_addr(self.scan_pos);
            // Acquire: the id and length the device wrote before the flags are visible.
            let flags = mem.load_u16(at + 14, Ordering::Acquire)?;
            let w = self.scan_wrap;
            if (flags & DESC_F_AVAIL != 0) != w || (flags & DESC_F_USED != 0) != w {
                break;
            }
            let mut b = [0u8; 14];
            mem.read(at, &mut b)?;
            let len = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            let id = u16::from_le_bytes([b[12], b[13]]);
            let (entries, token) = if let Some(&raw) = self.raw.get(self.seen_raw()) {
                (raw, None)
            } else {
                match self.inflight_of.get(usize::from(id)) {
                    Some(&(n, t)) if n > 0 && t.is_some() && !self.seen_has(id) => (n, t),
                    _ => {
                        return Err(self.bad(format!(
                            "used id {id} at {} is not a buffer in flight",
                            self.scan_pos
                        )))
                    }
                }
            };
            self.seen.push_back(Seen { id, len, token });
            (self.scan_pos, self.scan_wrap) = self.advance(self.scan_pos, self.scan_wrap, entries);
            if self.seen.len() > usize::from(self.addrs.size) {
                return Err(self.bad("more used descriptors than buffers in flight".into()));
            }
        }
        Ok(u16::try_from(self.seen.len()).unwrap_or(u16::MAX))
    }

    /// Raw chains among `seen` (they come first: raw posts require an idle ring).
    fn seen_raw(&self) -> usize {
        self.seen.iter().filter(|s| s.token.is_none()).count()
    }

    fn seen_has(&self, id: u16) -> bool {
        self.seen.iter().any(|s| s.token.is_some() && s.id == id)
    }

    /// Used descriptors ready to consume (`refresh` is implied: each call looks again).
    pub(crate) fn pending_used(
        &mut self,
        mem: &GuestMemory,
        _refresh: bool,
    ) -> Result<u16, FrontendError> {
        self.scan(mem)
    }

    /// The `i`-th ready used descriptor (`i` < pending): id, token, length.
    pub(crate) fn peek_used(
        &self,
        _mem: &GuestMemory,
        i: u16,
    ) -> Result<(u16, Option<u32>, u32), FrontendError> {
        let s = self
            .seen
            .get(usize::from(i))
            .ok_or_else(|| self.bad(format!("used descriptor {i} not ready")))?;
        Ok((s.id, s.token, s.len))
    }

    /// Consumes the next ready used descriptor and frees its buffer id.
    pub(crate) fn take_used(&mut self, mem: &GuestMemory) -> Result<Used, FrontendError> {
        if self.seen.is_empty() {
            self.scan(mem)?;
        }
        let s = self
            .seen
            .pop_front()
            .ok_or_else(|| self.bad("no used descriptor to take".into()))?;
        let entries = if s.token.is_none() {
            self.raw.pop_front().unwrap_or(1)
        } else {
            let e = std::mem::take(&mut self.inflight_of[usize::from(s.id)]);
            self.free_ids.push(s.id);
            self.inflight -= 1;
            e.0
        };
        self.free_slots += entries;
        (self.last_used, self.used_wrap) = self.advance(self.last_used, self.used_wrap, entries);
        Ok(Used {
            head: s.id,
            len: s.len,
            token: s.token,
        })
    }

    /// Asks for calls (at the next used position with EVENT_IDX), then looks again.
    /// True if new used descriptors appeared.
    pub(crate) fn enable_calls(&mut self, mem: &GuestMemory) -> Result<bool, FrontendError> {
        let before = self.seen.len();
        if self.event_idx {
            let off_wrap = self.scan_pos | (u16::from(self.scan_wrap) << 15);
            mem.store_u16(self.addrs.avail, off_wrap, Ordering::Relaxed)?;
            mem.store_u16(self.addrs.avail + 2, EVENT_DESC, Ordering::Relaxed)?;
        } else {
            mem.store_u16(self.addrs.avail + 2, EVENT_ENABLE, Ordering::Relaxed)?;
        }
        // Full fence: the store above before we look at the ring again.
        fence(Ordering::SeqCst);
        self.scan(mem)?;
        Ok(self.seen.len() != before)
    }

    /// Suppresses calls.
    pub(crate) fn disable_calls(&mut self, mem: &GuestMemory) -> Result<(), FrontendError> {
        mem.store_u16(self.addrs.avail + 2, EVENT_DISABLE, Ordering::Relaxed)
    }

    /// Test helper: writes `descs` at consecutive ring positions from the avail
    /// position, as given except for the `AVAIL`/`USED` bits, which are set for each
    /// position (`id` in the `next` half of the split encoding). The chains they form (cut
    /// after each descriptor without NEXT) are published; used descriptors for them are
    /// accepted with any id. The ring must be idle.
    #[cfg(any(test, feature = "hostile"))]
    pub(crate) fn raw_post(
        &mut self,
        mem: &mut GuestMemory,
        descs: &[[u8; 16]],
    ) -> Result<bool, FrontendError> {
        if self.inflight != 0 || !self.seen.is_empty() {
            return Err(FrontendError::DescriptorBusy {
                queue: self.index,
                desc: self.next_avail,
            });
        }
        let n = u16::try_from(descs.len())
            .ok()
            .filter(|&n| n <= self.free_slots)
            .ok_or_else(|| {
                FrontendError::Config(format!(
                    "{} raw descriptors for a ring of {}",
                    descs.len(),
                    self.addrs.size
                ))
            })?;
        let mut run = 0u16;
        for d in descs {
            // Split encoding from RawDesc: flags at 12..14, next (our id) at 14..16.
            let flags = u16::from_le_bytes([d[12], d[13]]) & !(DESC_F_AVAIL | DESC_F_USED);
            let id = u16::from_le_bytes([d[14], d[15]]);
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or([0; 8]));
            let len = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
            let flags = flags | avail_bits(self.avail_wrap);
            let pos = self.next_avail;
            if run == 0 {
                mem.write(
                    self.slot_addr(pos),
                    &encode_packed_desc(addr, len, id, 0)[..14],
                )?;
                self.unpublished.push((pos, flags));
            } else {
                mem.write(
                    self.slot_addr(pos),
                    &encode_packed_desc(addr, len, id, flags),
                )?;
            }
            run += 1;
            if flags & DESC_F_NEXT == 0 {
                self.raw.push_back(run);
                run = 0;
            }
            (self.next_avail, self.avail_wrap) = self.advance(self.next_avail, self.avail_wrap, 1);
        }
        if run > 0 {
            self.raw.push_back(run);
        }
        self.free_slots -= n;
        self.publish(mem)
    }
}

#[cfg(test)]
mod tests;
