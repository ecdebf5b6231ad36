//! A device-side simulator over our own rings, for unit tests without a backend.

use std::sync::atomic::{fence, Ordering};

use crate::guest::GuestMemory;
use crate::ring::{need_event, VringAddrs, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};

/// One descriptor as the device saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

pub(crate) fn read_desc(mem: &GuestMemory, at: u64) -> Desc {
    let mut b = [0u8; 16];
    mem.read(at, &mut b).unwrap();
    Desc {
        addr: u64::from_le_bytes(b[0..8].try_into().unwrap()),
        len: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    }
}

/// The device end of one vring.
#[derive(Debug)]
pub(crate) struct Dev {
    pub a: VringAddrs,
    pub last_avail: u16,
    pub used_idx: u16,
    /// used.idx when we last decided about a call.
    pub signalled: u16,
    pub event_idx: bool,
}

impl Dev {
    pub fn new(a: VringAddrs, event_idx: bool) -> Dev {
        Dev {
            a,
            last_avail: 0,
            used_idx: 0,
            signalled: 0,
            event_idx,
        }
    }

    pub fn avail_idx(&self, mem: &GuestMemory) -> u16 {
        mem.load_u16(self.a.avail + 2, Ordering::Acquire).unwrap()
    }

    pub fn avail_flags(&self, mem: &GuestMemory) -> u16 {
        mem.load_u16(self.a.avail, Ordering::Relaxed).unwrap()
    }

    pub fn used_event(&self, mem: &GuestMemory) -> u16 {
        let at = self.a.avail + 4 + 2 * u64::from(self.a.size);
        mem.load_u16(at, Ordering::Relaxed).unwrap()
    }

    pub fn set_used_flags(&self, mem: &GuestMemory, v: u16) {
        mem.store_u16(self.a.used, v, Ordering::Relaxed).unwrap();
    }

    pub fn set_avail_event(&self, mem: &GuestMemory, v: u16) {
        let at = self.a.used + 4 + 8 * u64::from(self.a.size);
        mem.store_u16(at, v, Ordering::Relaxed).unwrap();
    }

    /// Pops the next available chain: head id and its buffers (indirect tables expanded).
    pub fn pop(&mut self, mem: &GuestMemory) -> Option<(u16, Vec<Desc>)> {
        if self.avail_idx(mem) == self.last_avail {
            return None;
        }
        let slot = self.last_avail % self.a.size;
        let mut hb = [0u8; 2];
        mem.read(self.a.avail + 4 + 2 * u64::from(slot), &mut hb)
            .unwrap();
        let head = u16::from_le_bytes(hb);
        self.last_avail = self.last_avail.wrapping_add(1);
        let mut out = Vec::new();
        let mut id = head;
        for _ in 0..self.a.size {
            let d = read_desc(mem, self.a.desc + 16 * u64::from(id));
            if d.flags & DESC_F_INDIRECT != 0 {
                let n = d.len / 16;
                let mut j = 0u16;
                for _ in 0..n {
                    let e = read_desc(mem, d.addr + 16 * u64::from(j));
                    out.push(e);
                    if e.flags & DESC_F_NEXT == 0 {
                        break;
                    }
                    j = e.next;
                }
            } else {
                out.push(d);
            }
            if d.flags & DESC_F_NEXT == 0 {
                break;
            }
            id = d.next;
        }
        Some((head, out))
    }

    /// Adds a used element (not yet published).
    pub fn add_used(&mut self, mem: &mut GuestMemory, id: u32, len: u32) {
        let slot = self.used_idx % self.a.size;
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&id.to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        mem.write(self.a.used + 4 + 8 * u64::from(slot), &e)
            .unwrap();
        self.used_idx = self.used_idx.wrapping_add(1);
    }

    /// Publishes used.idx (Release) and says whether the driver wants a call.
    pub fn publish(&mut self, mem: &GuestMemory) -> bool {
        mem.store_u16(self.a.used + 2, self.used_idx, Ordering::Release)
            .unwrap();
        fence(Ordering::SeqCst);
        let old = self.signalled;
        self.signalled = self.used_idx;
        if self.event_idx {
            need_event(self.used_event(mem), self.used_idx, old)
        } else {
            self.avail_flags(mem) & crate::ring::AVAIL_F_NO_INTERRUPT == 0
        }
    }

    /// Gathers the device-readable bytes of a chain.
    pub fn read_chain(mem: &GuestMemory, descs: &[Desc]) -> Vec<u8> {
        let mut v = Vec::new();
        for d in descs {
            assert_eq!(d.flags & DESC_F_WRITE, 0, "readable descriptor expected");
            let at = v.len();
            v.resize(at + d.len as usize, 0);
            mem.read(d.addr, &mut v[at..]).unwrap();
        }
        v
    }

    /// Scatters `bytes` into the device-writable buffers of a chain; returns bytes written.
    pub fn write_chain(mem: &mut GuestMemory, descs: &[Desc], bytes: &[u8]) -> usize {
        let mut off = 0;
        for d in descs {
            assert_ne!(d.flags & DESC_F_WRITE, 0, "writable descriptor expected");
            let n = (d.len as usize).min(bytes.len() - off);
            mem.write(d.addr, &bytes[off..off + n]).unwrap();
            off += n;
            if off == bytes.len() {
                break;
            }
        }
        off
    }
}
