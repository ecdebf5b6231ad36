//! Guest physical memory: one or more memfd regions at guest physical addresses (GPAs),
//! range-checked access by GPA, and a bump allocator for rings and buffers.

use std::sync::atomic::Ordering;

use vhost::VhostUserMemoryRegionInfo;

use crate::mem::MmapRegion;
use crate::FrontendError;

/// Page size used to size and align regions.
pub(crate) const PAGE: u64 = 4096;

/// Gap left between consecutive regions in guest physical address space, so that a
/// backend which assumes contiguous guest memory translates wrongly and notices.
pub(crate) const REGION_GAP: u64 = 2 << 20;

#[derive(Debug)]
struct Region {
    gpa: u64,
    map: MmapRegion,
    /// Bump pointer: next free offset in the region.
    next: u64,
}

impl Region {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Offset of `[gpa, gpa + len)` in this region if it lies entirely inside it.
    fn offset_of(&self, gpa: u64, len: u64) -> Option<usize> {
        let off = gpa.checked_sub(self.gpa)?;
        let end = off.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        usize::try_from(off).ok()
    }
}

/// The driver's guest memory.
#[derive(Debug)]
pub(crate) struct GuestMemory {
    regions: Vec<Region>,
    /// Region the next allocation tries first (round robin, so buffers and rings spread
    /// over all regions).
    rr: usize,
    total: u64,
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// The result of a copy of `len` bytes at `gpa` that went through (`ok`) or not.
fn copied(ok: bool, gpa: u64, len: usize) -> Result<(), FrontendError> {
    if ok {
        Ok(())
    } else {
        Err(FrontendError::GuestAddress {
            gpa,
            len: len as u64,
        })
    }
}

impl GuestMemory {
    /// `total` bytes split into `n` page-aligned regions starting at GPA `base`, each
    /// followed by a [`REGION_GAP`].
    pub(crate) fn new(base: u64, total: u64, n: usize) -> Result<GuestMemory, FrontendError> {
        let n64 = n as u64;
        if n == 0 || base % PAGE != 0 {
            return Err(FrontendError::Config(format!(
                "need at least one region and a page-aligned base (regions {n}, base {base:#x})"
            )));
        }
        let each = (total / n64) & !(PAGE - 1);
        if each == 0 {
            return Err(FrontendError::Config(format!(
                "mem_size {total} too small for {n} regions"
            )));
        }
        let mut regions = Vec::with_capacity(n);
        let mut gpa = base;
        for i in 0..n {
            let len = usize::try_from(each)
                .map_err(|_| FrontendError::Config(format!("region size {each} too large")))?;
            let map = MmapRegion::new_memfd(&format!("vnet-frontend-{i}"), len)
                .map_err(FrontendError::io("memfd_create/mmap of guest memory"))?;
            regions.push(Region { gpa, map, next: 0 });
            gpa = gpa
                .checked_add(each)
                .and_then(|g| g.checked_add(REGION_GAP))
                .ok_or_else(|| FrontendError::Config("guest address space overflow".into()))?;
        }
        Ok(GuestMemory {
            regions,
            rr: 0,
            total: each * n64,
        })
    }

    /// Bytes of guest memory.
    #[cfg(any(test, feature = "hostile"))]
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Truncates every region's memfd (hostile tests).
    #[cfg(any(test, feature = "hostile"))]
    pub(crate) fn truncate_all(&self) -> std::io::Result<()> {
        self.regions.iter().try_for_each(|r| r.map.truncate())
    }

    /// Describes the regions for SET_MEM_TABLE / ADD_MEM_REG.
    pub(crate) fn region_infos(&self) -> Vec<VhostUserMemoryRegionInfo> {
        self.regions
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.gpa,
                memory_size: r.len(),
                userspace_addr: r.map.host_addr(),
                mmap_offset: 0,
                mmap_handle: r.map.fd(),
            })
            .collect()
    }

    /// Allocates `len` bytes aligned to `align` (a power of two), never freed. Allocations
    /// rotate over the regions; an allocation never straddles two regions.
    pub(crate) fn alloc(&mut self, len: u64, align: u64) -> Result<u64, FrontendError> {
        if len == 0 || !align.is_power_of_two() {
            return Err(FrontendError::Config(format!(
                "bad allocation: {len} bytes aligned to {align}"
            )));
        }
        let n = self.regions.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            let r = &mut self.regions[i];
            let Some(start) = align_up(r.next, align) else {
                continue;
            };
            let Some(end) = start.checked_add(len) else {
                continue;
            };
            if end <= r.len() {
                r.next = end;
                self.rr = (i + 1) % n;
                return Ok(r.gpa + start);
            }
        }
        Err(FrontendError::OutOfMemory {
            len,
            mem_size: self.total,
        })
    }

    fn find(&self, gpa: u64, len: u64) -> Result<(usize, usize), FrontendError> {
        self.regions
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.offset_of(gpa, len).map(|off| (i, off)))
            .ok_or(FrontendError::GuestAddress { gpa, len })
    }

    /// Address of guest physical `gpa` in this process.
    pub(crate) fn host_addr(&self, gpa: u64) -> Result<u64, FrontendError> {
        let (i, off) = self.find(gpa, 1)?;
        Ok(self.regions[i].map.host_addr() + off as u64)
    }

    /// Copies guest memory `[gpa, gpa + dst.len())` into `dst`.
    pub(crate) fn read(&self, gpa: u64, dst: &mut [u8]) -> Result<(), FrontendError> {
        let (i, off) = self.find(gpa, dst.len() as u64)?;
        copied(self.regions[i].map.read(off, dst), gpa, dst.len())
    }

    /// Copies `src` into guest memory at `gpa`.
    pub(crate) fn write(&mut self, gpa: u64, src: &[u8]) -> Result<(), FrontendError> {
        let (i, off) = self.find(gpa, src.len() as u64)?;
        copied(self.regions[i].map.write(off, src), gpa, src.len())
    }

    /// Atomic load of a ring field (little-endian `u16`, 2-byte aligned).
    pub(crate) fn load_u16(&self, gpa: u64, order: Ordering) -> Result<u16, FrontendError> {
        let (i, off) = self.find(gpa, 2)?;
        self.regions[i]
            .map
            .load_u16(off, order)
            .ok_or(FrontendError::GuestAddress { gpa, len: 2 })
    }

    /// Atomic store of a ring field (little-endian `u16`, 2-byte aligned).
    pub(crate) fn store_u16(&self, gpa: u64, v: u16, order: Ordering) -> Result<(), FrontendError> {
        let (i, off) = self.find(gpa, 2)?;
        if self.regions[i].map.store_u16(off, v, order) {
            Ok(())
        } else {
            Err(FrontendError::GuestAddress { gpa, len: 2 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_allocator() {
        let mut m = GuestMemory::new(0x10_0000, 3 * 64 * 1024, 3).unwrap();
        let infos = m.region_infos();
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[0].guest_phys_addr, 0x10_0000);
        assert_eq!(infos[1].guest_phys_addr, 0x10_0000 + 65536 + REGION_GAP);
        assert!(infos.iter().all(|r| r.memory_size == 65536));
        // Round robin over regions.
        let a = m.alloc(100, 64).unwrap();
        let b = m.alloc(100, 64).unwrap();
        let c = m.alloc(100, 64).unwrap();
        let d = m.alloc(100, 64).unwrap();
        assert_eq!(a, infos[0].guest_phys_addr);
        assert_eq!(b, infos[1].guest_phys_addr);
        assert_eq!(c, infos[2].guest_phys_addr);
        assert_eq!(d, infos[0].guest_phys_addr + 128);
        // Too big for any region.
        assert!(matches!(
            m.alloc(65536 + 1, 8),
            Err(FrontendError::OutOfMemory { .. })
        ));
        m.write(b, b"hello").unwrap();
        let mut buf = [0u8; 5];
        m.read(b, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        // The gap is not memory.
        assert!(m.write(infos[0].guest_phys_addr + 65536, &[0]).is_err());
        assert!(m.write(infos[0].guest_phys_addr + 65535, &[0, 0]).is_err());
        assert!(m.read(u64::MAX, &mut buf).is_err());
        assert_eq!(m.host_addr(b + 3).unwrap(), infos[1].userspace_addr + 3);
        m.store_u16(c + 2, 7, Ordering::Release).unwrap();
        assert_eq!(m.load_u16(c + 2, Ordering::Acquire).unwrap(), 7);
    }
}
