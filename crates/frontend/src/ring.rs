//! Driver side of a split virtqueue (virtio 1.x §2.7).
//!
//! The driver owns the descriptor table and the available ring and only reads the used
//! ring. Everything the device wrote (used index, used elements, `avail_event`, used flags)
//! is read once into locals and validated before use; a bad value is a
//! [`FrontendError::BadBackend`], never a panic.
//!
//! Ordering (§2.7.13): descriptors and the avail ring entry are written with plain
//! stores, then `avail.idx` is published with a Release store; `used.idx` is read with an
//! Acquire load before the used elements it covers. Notification suppression (§2.7.7,
//! §2.7.10) needs a full fence between our store and the load of the device's field.

use std::sync::atomic::{fence, Ordering};

use crate::guest::GuestMemory;
use crate::FrontendError;

/// `VIRTQ_DESC_F_NEXT`: the chain continues in `next`.
pub(crate) const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the device writes this buffer.
pub(crate) const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`: the buffer is a table of descriptors.
pub(crate) const DESC_F_INDIRECT: u16 = 4;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver does not want used-buffer notifications.
pub(crate) const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY`: the device does not want available-buffer notifications.
pub(crate) const USED_F_NO_NOTIFY: u16 = 1;

/// Size in bytes of one descriptor (`struct virtq_desc`).
pub(crate) const DESC_SIZE: u64 = 16;

/// One buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seg {
    pub gpa: u64,
    pub len: u32,
    /// Device-writable (rx) rather than device-readable (tx).
    pub write: bool,
}

/// A consumed used element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Used {
    /// Head descriptor id the device returned.
    #[allow(dead_code)]
    pub head: u16,
    /// Bytes the device says it wrote.
    pub len: u32,
    /// The token given when posting, `None` for chains posted raw by a test.
    pub token: Option<u32>,
}

/// `vring_need_event` (§2.7.10): true if `event` lies in `[old, new)`.
pub(crate) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Encodes one `struct virtq_desc`.
pub(crate) fn encode_desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

/// Guest physical addresses of one vring's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringAddrs {
    /// Number of descriptors.
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Available ring (`flags` at +0, `idx` at +2, `ring[]` at +4, `used_event` at
    /// +4+2*size).
    pub avail: u64,
    /// Used ring (`flags` at +0, `idx` at +2, `ring[]` of 8-byte elements at +4,
    /// `avail_event` at +4+8*size).
    pub used: u64,
}

impl VringAddrs {
    fn avail_ring(&self, slot: u16) -> u64 {
        self.avail + 4 + 2 * u64::from(slot)
    }
    fn used_event(&self) -> u64 {
        self.avail + 4 + 2 * u64::from(self.size)
    }
    fn used_elem(&self, slot: u16) -> u64 {
        self.used + 4 + 8 * u64::from(slot)
    }
    fn avail_event(&self) -> u64 {
        self.used + 4 + 8 * u64::from(self.size)
    }
}

/// Driver state of one split virtqueue.
#[derive(Debug)]
pub(crate) struct SplitRing {
    /// vring index (for error reports).
    index: u16,
    addrs: VringAddrs,
    event_idx: bool,
    /// Free descriptor ids (a stack).
    free: Vec<u16>,
    /// Descriptor id is allocated (to a chain or reserved by a raw post).
    in_use: Vec<bool>,
    /// Per head: the descriptor ids of its chain, in order.
    chains: Vec<Vec<u16>>,
    /// Per head: caller token of the in-flight chain.
    tokens: Vec<Option<u32>>,
    /// Chains in flight (posted, not yet used).
    inflight: u16,
    /// Next free avail ring slot (free-running).
    next_avail: u16,
    /// Last published `avail.idx`.
    published: u16,
    /// Next used element to consume (free-running).
    last_used: u16,
    /// Last `used.idx` value loaded (with Acquire).
    used_seen: u16,
    /// Descriptors reserved by raw posts from tests.
    raw: Vec<bool>,
    /// Used elements still expected for raw posts.
    raw_outstanding: usize,
}

impl SplitRing {
    /// Allocates and initialises the ring (all notifications from the device suppressed).
    pub(crate) fn new(
        mem: &mut GuestMemory,
        index: u16,
        size: u16,
        event_idx: bool,
    ) -> Result<SplitRing, FrontendError> {
        if !size.is_power_of_two() {
            return Err(FrontendError::Config(format!(
                "queue size {size} is not a power of two"
            )));
        }
        let n = u64::from(size);
        let desc = mem.alloc(DESC_SIZE * n, 4096)?;
        let avail = mem.alloc(6 + 2 * n, 64)?;
        let used = mem.alloc(6 + 8 * n, 64)?;
        let addrs = VringAddrs {
            size,
            desc,
            avail,
            used,
        };
        let mut r = SplitRing {
            index,
            addrs,
            event_idx,
            free: (0..size).rev().collect(),
            in_use: vec![false; usize::from(size)],
            chains: vec![Vec::new(); usize::from(size)],
            tokens: vec![None; usize::from(size)],
            inflight: 0,
            next_avail: 0,
            published: 0,
            last_used: 0,
            used_seen: 0,
            raw: vec![false; usize::from(size)],
            raw_outstanding: 0,
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
    pub(crate) fn size(&self) -> u16 {
        self.addrs.size
    }

    /// Free descriptors.
    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Chains posted and not yet returned.
    pub(crate) fn inflight(&self) -> u16 {
        self.inflight
    }

    fn bad(&self, reason: String) -> FrontendError {
        FrontendError::BadBackend {
            queue: self.index,
            reason,
        }
    }

    fn push_avail(&mut self, mem: &mut GuestMemory, head: u16) -> Result<(), FrontendError> {
        let slot = self.next_avail % self.addrs.size;
        mem.write(self.addrs.avail_ring(slot), &head.to_le_bytes())?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(())
    }

    fn alloc_descs(&mut self, n: usize) -> Option<Vec<u16>> {
        if n == 0 || self.free.len() < n {
            return None;
        }
        let at = self.free.len() - n;
        let ids: Vec<u16> = self.free.drain(at..).rev().collect();
        for &d in &ids {
            self.in_use[usize::from(d)] = true;
        }
        Some(ids)
    }

    /// Writes `segs` as a descriptor chain and adds its head to the avail ring (not yet
    /// published). None if not enough free descriptors.
    pub(crate) fn post(
        &mut self,
        mem: &mut GuestMemory,
        segs: &[Seg],
        token: u32,
    ) -> Result<Option<u16>, FrontendError> {
        let Some(ids) = self.alloc_descs(segs.len()) else {
            return Ok(None);
        };
        for (i, s) in segs.iter().enumerate() {
            let mut flags = if s.write { DESC_F_WRITE } else { 0 };
            let next = if i + 1 < ids.len() {
                flags |= DESC_F_NEXT;
                ids[i + 1]
            } else {
                0
            };
            mem.write(
                self.addrs.desc + DESC_SIZE * u64::from(ids[i]),
                &encode_desc(s.gpa, s.len, flags, next),
            )?;
        }
        let head = ids[0];
        self.finish_post(mem, head, ids, token)?;
        Ok(Some(head))
    }

    /// Writes `segs` into the indirect table at `table` (room for `segs.len()` entries) and
    /// posts one descriptor pointing at it (§2.7.5.3).
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
        let Some(ids) = self.alloc_descs(1) else {
            return Ok(None);
        };
        for (i, s) in segs.iter().enumerate() {
            let mut flags = if s.write { DESC_F_WRITE } else { 0 };
            let next = if i + 1 < segs.len() {
                flags |= DESC_F_NEXT;
                u16::try_from(i + 1).unwrap_or(0)
            } else {
                0
            };
            mem.write(
                table + DESC_SIZE * i as u64,
                &encode_desc(s.gpa, s.len, flags, next),
            )?;
        }
        let table_len = u32::try_from(segs.len() as u64 * DESC_SIZE)
            .map_err(|_| FrontendError::Config("indirect table too long".into()))?;
        mem.write(
            self.addrs.desc + DESC_SIZE * u64::from(ids[0]),
            &encode_desc(table, table_len, DESC_F_INDIRECT, 0),
        )?;
        let head = ids[0];
        self.finish_post(mem, head, ids, token)?;
        Ok(Some(head))
    }

    fn finish_post(
        &mut self,
        mem: &mut GuestMemory,
        head: u16,
        ids: Vec<u16>,
        token: u32,
    ) -> Result<(), FrontendError> {
        let h = usize::from(head);
        self.chains[h] = ids;
        self.tokens[h] = Some(token);
        self.inflight += 1;
        self.push_avail(mem, head)
    }

    /// Publishes the avail entries added since the last publish and says whether the
    /// device wants a notification (§2.7.10 / §2.7.13.4).
    pub(crate) fn publish(&mut self, mem: &GuestMemory) -> Result<bool, FrontendError> {
        let old = self.published;
        let new = self.next_avail;
        if old == new {
            return Ok(false);
        }
        // Release: the descriptors and avail ring entries written above become visible to
        // the device no later than the new index.
        mem.store_u16(self.addrs.avail + 2, new, Ordering::Release)?;
        self.published = new;
        // Full fence: order the avail.idx store before the load of avail_event / used.flags
        // below (store -> load), else we may miss the device's request for a kick.
        fence(Ordering::SeqCst);
        if self.event_idx {
            let event = mem.load_u16(self.addrs.avail_event(), Ordering::Relaxed)?;
            Ok(need_event(event, new, old))
        } else {
            let flags = mem.load_u16(self.addrs.used, Ordering::Relaxed)?;
            Ok(flags & USED_F_NO_NOTIFY == 0)
        }
    }

    /// Number of used elements ready to consume. Loads `used.idx` (Acquire) only when the
    /// elements seen last time are exhausted, or when `refresh` is set.
    pub(crate) fn pending_used(
        &mut self,
        mem: &GuestMemory,
        refresh: bool,
    ) -> Result<u16, FrontendError> {
        if refresh || self.used_seen == self.last_used {
            // Acquire: pairs with the device's release of used.idx, so the used elements
            // and buffer contents it covers are visible below.
            let idx = mem.load_u16(self.addrs.used + 2, Ordering::Acquire)?;
            let pending = idx.wrapping_sub(self.last_used);
            let limit = usize::from(self.inflight) + self.raw_outstanding;
            if pending > self.addrs.size || usize::from(pending) > limit {
                return Err(self.bad(format!(
                    "used.idx {idx} is {pending} ahead of the last consumed {} with {} chains in flight",
                    self.last_used, self.inflight
                )));
            }
            self.used_seen = idx;
        }
        Ok(self.used_seen.wrapping_sub(self.last_used))
    }

    /// Reads used element `last_used + i` (`i` < pending) without consuming it: the head
    /// id (validated to be in flight) with its token, and the length.
    pub(crate) fn peek_used(
        &self,
        mem: &GuestMemory,
        i: u16,
    ) -> Result<(u16, Option<u32>, u32), FrontendError> {
        let slot = self.last_used.wrapping_add(i) % self.addrs.size;
        let mut e = [0u8; 8];
        mem.read(self.addrs.used_elem(slot), &mut e)?;
        let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let head = u16::try_from(id)
            .ok()
            .filter(|&h| h < self.addrs.size)
            .ok_or_else(|| self.bad(format!("used id {id} out of range")))?;
        let h = usize::from(head);
        if self.raw[h] && self.raw_outstanding > 0 {
            return Ok((head, None, len));
        }
        match self.tokens[h] {
            Some(t) => Ok((head, Some(t), len)),
            None => Err(self.bad(format!("used id {id} is not an in-flight chain head"))),
        }
    }

    /// Consumes the next used element (which must be pending) and frees its chain.
    pub(crate) fn take_used(&mut self, mem: &GuestMemory) -> Result<Used, FrontendError> {
        let (head, token, len) = self.peek_used(mem, 0)?;
        let h = usize::from(head);
        self.last_used = self.last_used.wrapping_add(1);
        if token.is_none() {
            self.raw_outstanding -= 1;
            if self.raw_outstanding == 0 {
                for d in 0..self.addrs.size {
                    let i = usize::from(d);
                    if self.raw[i] {
                        self.raw[i] = false;
                        self.in_use[i] = false;
                        self.free.push(d);
                    }
                }
            }
            return Ok(Used {
                head,
                len,
                token: None,
            });
        }
        self.tokens[h] = None;
        self.inflight -= 1;
        let chain = std::mem::take(&mut self.chains[h]);
        for &d in &chain {
            self.in_use[usize::from(d)] = false;
            self.free.push(d);
        }
        // Keep the Vec's allocation for the next chain with this head.
        self.chains[h] = chain;
        self.chains[h].clear();
        Ok(Used { head, len, token })
    }

    /// Asks the device for a used-buffer notification once it moves past what we have
    /// seen, then re-reads `used.idx`. Returns true if new used elements appeared (the
    /// caller must not sleep then).
    pub(crate) fn enable_calls(&mut self, mem: &GuestMemory) -> Result<bool, FrontendError> {
        if self.event_idx {
            mem.store_u16(self.addrs.used_event(), self.used_seen, Ordering::Relaxed)?;
        } else {
            mem.store_u16(self.addrs.avail, 0, Ordering::Relaxed)?;
        }
        // Full fence: the store above must be visible before we re-read used.idx (store ->
        // load), otherwise the device may skip the call for an entry we did not see.
        fence(Ordering::SeqCst);
        let before = self.used_seen;
        self.pending_used(mem, true)?;
        Ok(self.used_seen != before)
    }

    /// Suppresses used-buffer notifications (best effort, §2.7.7).
    pub(crate) fn disable_calls(&mut self, mem: &GuestMemory) -> Result<(), FrontendError> {
        if self.event_idx {
            // One behind what we consumed: the device only calls after wrapping 2^16.
            let ev = self.last_used.wrapping_sub(1);
            mem.store_u16(self.addrs.used_event(), ev, Ordering::Relaxed)
        } else {
            mem.store_u16(self.addrs.avail, AVAIL_F_NO_INTERRUPT, Ordering::Relaxed)
        }
    }

    /// Test helper: writes `descs` raw at ids `0..descs.len()` (which must all be free),
    /// reserves them until as many used elements as `heads` came back, and adds `heads`
    /// (unchecked) to the avail ring. Publishes; returns whether a kick is wanted.
    #[cfg(any(test, feature = "hostile"))]
    pub(crate) fn raw_post(
        &mut self,
        mem: &mut GuestMemory,
        descs: &[[u8; 16]],
        heads: &[u16],
    ) -> Result<bool, FrontendError> {
        if descs.len() > usize::from(self.addrs.size) {
            return Err(FrontendError::Config(format!(
                "{} raw descriptors for a ring of {}",
                descs.len(),
                self.addrs.size
            )));
        }
        if let Some(busy) = (0..descs.len()).find(|&i| self.in_use[i]) {
            return Err(FrontendError::DescriptorBusy {
                queue: self.index,
                desc: u16::try_from(busy).unwrap_or(u16::MAX),
            });
        }
        for (i, d) in descs.iter().enumerate() {
            self.in_use[i] = true;
            self.raw[i] = true;
            mem.write(self.addrs.desc + DESC_SIZE * i as u64, d)?;
        }
        let n = descs.len();
        self.free.retain(|&d| usize::from(d) >= n);
        for &h in heads {
            self.push_avail(mem, h)?;
        }
        self.raw_outstanding += heads.len();
        self.publish(mem)
    }
}

#[cfg(test)]
mod tests;
