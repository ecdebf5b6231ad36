//! Guest memory: the regions a vhost-user frontend shares with us (SET_MEM_TABLE,
//! ADD_MEM_REG), mapped into vnetd, and the range checks every access goes through.
//!
//! This module and [`crate::access`] hold all the `unsafe` of the guest-memory side.
//! No `&`/`&mut` reference into guest memory is ever formed: the guest may change any byte
//! at any time, so data moves in and out with raw-pointer copies and volatile or atomic
//! loads only.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;

/// Why a region table was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// A region has size 0.
    #[error("memory region {index} has size 0")]
    EmptyRegion {
        /// Position in the table.
        index: usize,
    },
    /// `gpa + size`, `uaddr + size` or `mmap_offset + size` overflows.
    #[error("memory region {index} wraps around the address space")]
    Overflow {
        /// Position in the table.
        index: usize,
    },
    /// Two regions overlap in guest physical or frontend user address space.
    #[error("memory regions {a} and {b} overlap")]
    Overlap {
        /// First region.
        a: usize,
        /// Second region.
        b: usize,
    },
    /// The file behind the region is smaller than `mmap_offset + size`.
    #[error("memory region {index}: file has {file_size} bytes, region needs {needed}")]
    FileTooSmall {
        /// Position in the table.
        index: usize,
        /// What fstat reported.
        file_size: u64,
        /// `mmap_offset + size`.
        needed: u64,
    },
    /// Too many regions.
    #[error("{count} memory regions, at most {max} supported")]
    TooManyRegions {
        /// Regions requested.
        count: usize,
        /// [`MAX_REGIONS`].
        max: usize,
    },
    /// The regions add up to more than the port may map (`max-mem`).
    #[error("memory regions total {total} bytes, over this port's limit of {limit} (max-mem)")]
    OverLimit {
        /// Bytes the table would map.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// The region's fd is not a regular file (memfd, hugetlbfs or a plain file).
    #[error("memory region {index}: fd is a {kind}, not a memfd, hugetlbfs or regular file")]
    NotAFile {
        /// Position in the table.
        index: usize,
        /// What it is.
        kind: &'static str,
    },
    /// The SIGBUS guard has no room for another mapping: unguarded, a frontend truncating
    /// its file would crash vnetd, so the region is refused.
    #[error("memory region {index}: {max} guest mappings already guarded; refused", max = crate::sigbus::SLOTS)]
    Unguarded {
        /// Position in the table.
        index: usize,
    },
    /// fstat or mmap failed.
    #[error("memory region {index}: {op} failed: {err}")]
    Os {
        /// Position in the table.
        index: usize,
        /// The system call.
        op: &'static str,
        /// errno.
        err: std::io::Error,
    },
}

/// Regions a frontend may register (vhost-user CONFIGURE_MEM_SLOTS allows up to 509).
pub const MAX_REGIONS: usize = 509;

/// One region as the frontend describes it (vhost-user `VhostUserMemoryRegion`).
#[derive(Debug)]
pub struct RegionSpec {
    /// Guest physical address of the first byte.
    pub gpa: u64,
    /// Length in bytes.
    pub size: u64,
    /// Where the frontend maps it in its own address space (used by SET_VRING_ADDR).
    pub uaddr: u64,
    /// Offset of the region inside `file`.
    pub mmap_offset: u64,
    /// The shared memory file (memfd, hugetlbfs, ...).
    pub file: File,
}

/// One mmap of a frontend's file, unmapped when the last region using it goes.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
    /// Registration with the SIGBUS handler (see [`crate::sigbus`]).
    guard: crate::sigbus::Guard,
}

/// Which file a region maps, and from where: `(st_dev, st_ino, mmap_offset)`. Two
/// descriptors of one memfd (the same region sent twice) have the same identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backing {
    dev: u64,
    ino: u64,
    offset: u64,
}

/// What [`GuestMemory::with_region`] made of a region.
#[derive(Debug)]
pub enum Added {
    /// The region is new: the memory with it mapped.
    New(GuestMemory),
    /// The same region (guest range, user address, file and offset) is already mapped;
    /// nothing changes. QEMU up to 7.2 sends every ADD_MEM_REG once per queue pair.
    AlreadyMapped,
}

/// What [`GuestMemory::without_region`] made of a removal.
#[derive(Debug)]
pub enum Removed {
    /// The region was mapped: the memory without it.
    Gone(GuestMemory),
    /// No region covers any byte of that guest range: nothing to unmap (the region was
    /// removed already; QEMU up to 7.2 sends every REM_MEM_REG once per queue pair).
    NotMapped,
}

/// A mapped region.
#[derive(Debug, Clone)]
struct Region {
    gpa: u64,
    size: u64,
    uaddr: u64,
    backing: Backing,
    /// Host address of the region's first byte (inside `map`).
    host: NonNull<u8>,
    /// Keeps the mmap alive while any memory table uses this region.
    _map: Arc<Mapping>,
}

/// The guest's memory as mapped into vnetd: immutable once built, shared by `Arc` between
/// the control plane and the worker that owns the port; dropping the last `Arc` unmaps it.
#[derive(Debug)]
pub struct GuestMemory {
    /// Sorted by `gpa`, non-overlapping.
    regions: Vec<Region>,
}

// SAFETY: the mappings are plain shared memory owned by this value; nothing in it is tied
// to a thread, and all access through it uses raw-pointer copies with explicit ordering.
unsafe impl Send for GuestMemory {}
// SAFETY: as for Send: `&GuestMemory` only hands out addresses after range checks, it
// never mutates itself.
unsafe impl Sync for GuestMemory {}

fn overlaps(a0: u64, alen: u64, b0: u64, blen: u64) -> bool {
    a0 < b0.saturating_add(blen) && b0 < a0.saturating_add(alen)
}

impl GuestMemory {
    /// An empty memory: every translation fails.
    pub fn empty() -> GuestMemory {
        GuestMemory {
            regions: Vec::new(),
        }
    }

    /// Checks and maps `specs`. On error nothing stays mapped.
    pub fn map(specs: Vec<RegionSpec>) -> Result<GuestMemory, MemError> {
        Self::map_within(specs, u64::MAX)
    }

    /// As [`GuestMemory::map`], refusing a table whose regions add up to more than
    /// `limit` bytes before anything is mapped.
    pub fn map_within(specs: Vec<RegionSpec>, limit: u64) -> Result<GuestMemory, MemError> {
        if specs.len() > MAX_REGIONS {
            return Err(MemError::TooManyRegions {
                count: specs.len(),
                max: MAX_REGIONS,
            });
        }
        for (i, s) in specs.iter().enumerate() {
            check_spec(i, s)?;
            for (j, t) in specs.iter().enumerate().take(i) {
                if overlaps(s.gpa, s.size, t.gpa, t.size)
                    || overlaps(s.uaddr, s.size, t.uaddr, t.size)
                {
                    return Err(MemError::Overlap { a: j, b: i });
                }
            }
        }
        let total = specs.iter().fold(0u64, |t, s| t.saturating_add(s.size));
        if total > limit {
            return Err(MemError::OverLimit { total, limit });
        }
        let mut mem = GuestMemory {
            regions: Vec::with_capacity(specs.len()),
        };
        for (i, s) in specs.into_iter().enumerate() {
            mem.regions.push(map_one(i, &s)?);
        }
        mem.regions.sort_by_key(|r| r.gpa);
        Ok(mem)
    }

    /// A copy of this memory with one more region, mapped from `spec` (ADD_MEM_REG).
    /// Existing mappings are shared, not remapped.
    ///
    /// A region identical to a mapped one (same guest range, user address, file and
    /// offset) is [`Added::AlreadyMapped`]; any other overlap, including the same ranges
    /// over another file or offset, is refused, and so is a region that would take the
    /// total past `limit` bytes.
    pub fn with_region(&self, spec: RegionSpec, limit: u64) -> Result<Added, MemError> {
        let index = self.regions.len();
        check_spec(index, &spec)?;
        for (j, r) in self.regions.iter().enumerate() {
            if overlaps(spec.gpa, spec.size, r.gpa, r.size)
                || overlaps(spec.uaddr, spec.size, r.uaddr, r.size)
            {
                let same_range = (r.gpa, r.size, r.uaddr) == (spec.gpa, spec.size, spec.uaddr);
                if same_range && backing_of(index, &spec)? == r.backing {
                    return Ok(Added::AlreadyMapped);
                }
                return Err(MemError::Overlap { a: j, b: index });
            }
        }
        if index >= MAX_REGIONS {
            return Err(MemError::TooManyRegions {
                count: index + 1,
                max: MAX_REGIONS,
            });
        }
        let total = self.total_size().saturating_add(spec.size);
        if total > limit {
            return Err(MemError::OverLimit { total, limit });
        }
        let mut regions = self.regions.clone();
        regions.push(map_one(index, &spec)?);
        regions.sort_by_key(|r| r.gpa);
        Ok(Added::New(GuestMemory { regions }))
    }

    /// A copy of this memory without the region at guest `gpa` of `size` bytes that the
    /// frontend maps at `uaddr` (REM_MEM_REG identifies a region by these three; the mmap
    /// offset is ignored). [`Removed::NotMapped`] if no region touches that guest range;
    /// `None` if one does without being exactly that region.
    pub fn without_region(&self, gpa: u64, size: u64, uaddr: u64) -> Option<Removed> {
        match self
            .regions
            .iter()
            .position(|r| (r.gpa, r.size, r.uaddr) == (gpa, size, uaddr))
        {
            Some(i) => {
                let mut regions = self.regions.clone();
                regions.remove(i);
                Some(Removed::Gone(GuestMemory { regions }))
            }
            None if self
                .regions
                .iter()
                .any(|r| overlaps(gpa, size, r.gpa, r.size)) =>
            {
                None
            }
            None => Some(Removed::NotMapped),
        }
    }

    /// Whether the frontend truncated a file under one of the regions after it was mapped:
    /// that region now reads zeros (see [`crate::sigbus`]) and the port must stop.
    pub fn truncated(&self) -> bool {
        self.regions.iter().any(|r| r._map.guard.hit())
    }

    /// Number of regions.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// Total bytes of guest memory mapped.
    pub fn total_size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Bytes of address space the regions' mappings take (each region's pages only).
    pub fn mapped_len(&self) -> u64 {
        self.regions.iter().map(|r| r._map.len as u64).sum()
    }

    /// `(gpa, size, uaddr)` of each region, sorted by gpa.
    pub fn layout(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.regions.iter().map(|r| (r.gpa, r.size, r.uaddr))
    }

    /// Host address of guest physical `[gpa, gpa + len)` if the whole range lies in one
    /// region. `hint` caches the index of the region that answered last.
    #[inline]
    pub fn translate(&self, gpa: u64, len: u64, hint: &mut usize) -> Option<NonNull<u8>> {
        let (host, avail) = self.translate_partial(gpa, hint)?;
        (avail >= len).then_some(host)
    }

    /// Host address of `gpa` and how many bytes from there stay inside its region.
    #[inline(always)]
    pub fn translate_partial(&self, gpa: u64, hint: &mut usize) -> Option<(NonNull<u8>, u64)> {
        let r = match self.regions.get(*hint) {
            Some(r) if gpa.wrapping_sub(r.gpa) < r.size => r,
            _ => &self.regions[self.find_hint(gpa, hint)?],
        };
        let off = gpa - r.gpa;
        // `off < r.size <= map_len`, checked in `find` / above, so this stays in the map.
        let off_usize = usize::try_from(off).ok()?;
        Some((
            // SAFETY: `off < size` and `host..host+size` is inside the live mapping.
            unsafe { r.host.add(off_usize) },
            r.size - off,
        ))
    }

    /// The region of `gpa`, remembered in `hint` (off the hot path: the hint missed).
    #[cold]
    #[inline(never)]
    fn find_hint(&self, gpa: u64, hint: &mut usize) -> Option<usize> {
        let i = self.find(gpa)?;
        *hint = i;
        Some(i)
    }

    fn find(&self, gpa: u64) -> Option<usize> {
        let i = self
            .regions
            .partition_point(|r| r.gpa <= gpa)
            .checked_sub(1)?;
        let r = &self.regions[i];
        (gpa - r.gpa < r.size).then_some(i)
    }

    /// Host address of the frontend's user address range `[uaddr, uaddr + len)`, used for
    /// the ring addresses of SET_VRING_ADDR. The range must lie in one region.
    pub fn translate_uaddr(&self, uaddr: u64, len: u64) -> Option<NonNull<u8>> {
        let r = self
            .regions
            .iter()
            .find(|r| uaddr.wrapping_sub(r.uaddr) < r.size)?;
        let off = uaddr - r.uaddr;
        if r.size - off < len {
            return None;
        }
        let off = usize::try_from(off).ok()?;
        // SAFETY: `off + len <= size`, inside the live mapping.
        Some(unsafe { r.host.add(off) })
    }

    /// Guest physical address of a frontend user address (for logs and tests).
    pub fn uaddr_to_gpa(&self, uaddr: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| uaddr.wrapping_sub(r.uaddr) < r.size)
            .map(|r| r.gpa + (uaddr - r.uaddr))
    }

    /// Copies guest `[gpa, gpa + buf.len())` into `buf` (may span regions).
    /// Returns false, leaving `buf` partly written, if any byte is outside guest memory.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let mut hint = 0;
        let mut done = 0usize;
        while done < buf.len() {
            let Some(at) = gpa.checked_add(done as u64) else {
                return false;
            };
            let Some((src, avail)) = self.translate_partial(at, &mut hint) else {
                return false;
            };
            let n = (buf.len() - done).min(usize::try_from(avail).unwrap_or(usize::MAX));
            // SAFETY: `src..src+n` is inside a live mapping (n <= avail); `buf[done..done+n]`
            // is ours; guest memory never overlaps a Rust buffer.
            unsafe { crate::access::copy_from_guest(src, &mut buf[done..done + n]) };
            done += n;
        }
        true
    }

    /// Copies `buf` into guest `[gpa, gpa + buf.len())` (may span regions).
    /// Returns false if any byte is outside guest memory (nothing is written then).
    pub fn write(&self, gpa: u64, buf: &[u8]) -> bool {
        // Check first so a failure writes nothing.
        let mut hint = 0;
        let mut done = 0u64;
        while done < buf.len() as u64 {
            let Some(at) = gpa.checked_add(done) else {
                return false;
            };
            let Some((_, avail)) = self.translate_partial(at, &mut hint) else {
                return false;
            };
            done = done.saturating_add(avail);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let Some((dst, avail)) = self.translate_partial(gpa + done as u64, &mut hint) else {
                return false;
            };
            let n = (buf.len() - done).min(usize::try_from(avail).unwrap_or(usize::MAX));
            // SAFETY: `dst..dst+n` is inside a live mapping (n <= avail).
            unsafe { crate::access::copy_to_guest(dst, &buf[done..done + n]) };
            done += n;
        }
        true
    }
}

/// A new anonymous shared-memory file of `size` bytes (memfd), e.g. for tests, fuzzing and
/// userspace frontends.
pub fn memfd(name: &std::ffi::CStr, size: u64) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size)?;
    Ok(f)
}

fn check_spec(index: usize, s: &RegionSpec) -> Result<(), MemError> {
    if s.size == 0 {
        return Err(MemError::EmptyRegion { index });
    }
    let end_ok = s.gpa.checked_add(s.size).is_some()
        && s.uaddr.checked_add(s.size).is_some()
        && s.mmap_offset
            .checked_add(s.size)
            .is_some_and(|e| usize::try_from(e).is_ok());
    if end_ok {
        Ok(())
    } else {
        Err(MemError::Overflow { index })
    }
}

fn fstat(index: usize, file: &File) -> Result<libc::stat, MemError> {
    // SAFETY: zeroed `stat` is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat`; the fd is owned by `file`.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(MemError::Os {
            index,
            op: "fstat",
            err: std::io::Error::last_os_error(),
        });
    }
    Ok(st)
}

fn backing(st: &libc::stat, s: &RegionSpec) -> Backing {
    Backing {
        dev: st.st_dev,
        ino: st.st_ino,
        offset: s.mmap_offset,
    }
}

fn backing_of(index: usize, s: &RegionSpec) -> Result<Backing, MemError> {
    Ok(backing(&fstat(index, &s.file)?, s))
}

fn file_kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFIFO => "pipe",
        libc::S_IFSOCK => "socket",
        libc::S_IFLNK => "symbolic link",
        0 => "anonymous inode (eventfd, epoll...)",
        _ => "file of unknown type",
    }
}

fn map_one(index: usize, s: &RegionSpec) -> Result<Region, MemError> {
    let os = |op, err| MemError::Os { index, op, err };
    let needed = s.mmap_offset + s.size;
    let st = fstat(index, &s.file)?;
    // memfd, hugetlbfs and plain files are all regular files with a meaningful size;
    // devices, pipes and sockets are refused (a device could map anything).
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(MemError::NotAFile {
            index,
            kind: file_kind(st.st_mode),
        });
    }
    let file_size = u64::try_from(st.st_size).unwrap_or(0);
    // A file shorter than the region would SIGBUS us on access: refuse it.
    if file_size < needed {
        return Err(MemError::FileTooSmall {
            index,
            file_size,
            needed,
        });
    }
    // Only the pages of `[mmap_offset, mmap_offset + size)` are mapped, aligned to the
    // file's page size (st_blksize: hugetlbfs wants its huge page size).
    let align = u64::try_from(st.st_blksize)
        .ok()
        .filter(|a| a.is_power_of_two())
        .unwrap_or(4096)
        .max(4096);
    let map_off = s.mmap_offset & !(align - 1);
    let lead =
        usize::try_from(s.mmap_offset - map_off).map_err(|_| MemError::Overflow { index })?;
    let map_len = (needed - map_off)
        .checked_next_multiple_of(align)
        .and_then(|l| usize::try_from(l).ok())
        .ok_or(MemError::Overflow { index })?;
    let file_off = libc::off_t::try_from(map_off).map_err(|_| MemError::Overflow { index })?;
    // SAFETY: a fresh shared mapping of the frontend's fd; the kernel chooses the address,
    // so no existing mapping is replaced. The result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            s.file.as_raw_fd(),
            file_off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os("mmap", std::io::Error::last_os_error()));
    }
    let ptr = NonNull::new(p).ok_or_else(|| os("mmap", std::io::Error::other("null")))?;
    let Some(guard) = crate::sigbus::Guard::register(ptr.as_ptr() as usize, map_len) else {
        // SAFETY: exactly the mapping made above, not yet shared with anything.
        unsafe { libc::munmap(p, map_len) };
        return Err(MemError::Unguarded { index });
    };
    let map = Arc::new(Mapping {
        ptr,
        len: map_len,
        guard,
    });
    // SAFETY: `lead + size <= map_len` (the mapping starts at the page holding
    // `mmap_offset` and covers `mmap_offset + size`), so the region start is inside it.
    let host = unsafe { ptr.cast::<u8>().add(lead) };
    Ok(Region {
        gpa: s.gpa,
        size: s.size,
        uaddr: s.uaddr,
        backing: backing(&st, s),
        host,
        _map: map,
    })
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.guard.release();
        // SAFETY: `ptr`/`len` are exactly what mmap returned; the last region using this
        // mapping is gone, and no queue outlives its GuestMemory (queues hold an Arc to it).
        unsafe { libc::munmap(self.ptr.as_ptr(), self.len) };
    }
}

// SAFETY: a Mapping is an address range owned by this value; unmapping from any thread is fine.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` exposes nothing but the address, which is immutable.
unsafe impl Sync for Mapping {}
