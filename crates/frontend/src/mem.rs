//! The crate's only `unsafe`: memfd creation, the shared mapping, and raw access to it.
//!
//! Guest memory is shared with another process (the backend) that reads and writes it
//! concurrently. No Rust reference into the mapping ever leaves this module: bulk data is
//! copied in and out with raw-pointer copies, and the ring index/flag fields are accessed
//! as atomics for the duration of one call. Every access is range checked against the
//! mapping first.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

/// One memfd, mapped `MAP_SHARED` read/write into this process for its whole length.
pub(crate) struct MmapRegion {
    ptr: NonNull<u8>,
    len: usize,
    file: File,
}

// SAFETY: the mapping is owned exclusively by this value (nothing else in the process
// holds its address), and every access goes through the methods below, which copy through
// raw pointers or use atomics; moving the owner to another thread does not change that.
unsafe impl Send for MmapRegion {}

impl MmapRegion {
    /// Creates a memfd of `len` bytes (zero filled) and maps it shared.
    pub(crate) fn new_memfd(name: &str, len: usize) -> io::Result<MmapRegion> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty region"));
        }
        let cname = CString::new(name)?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call; the
        // kernel copies the name and keeps no pointer to it.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create, is open, and nothing else owns it,
        // so the File becomes its sole owner and closes it exactly once.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        // SAFETY: asks the kernel for a fresh mapping at an address of its choosing
        // (NULL hint, no MAP_FIXED), so it cannot overlap or alias any existing Rust
        // object; `file` is a valid open memfd of at least `len` bytes.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(MmapRegion { ptr, len, file })
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The memfd backing the mapping (passed to the backend over the socket).
    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Shrinks the memfd to nothing: its pages are gone for every process mapping it
    /// (touching the mapping afterwards raises SIGBUS, here too).
    #[cfg(any(test, feature = "hostile"))]
    pub(crate) fn truncate(&self) -> io::Result<()> {
        self.file.set_len(0)
    }

    /// Address of the mapping in this process (the vhost-user "userspace address").
    pub(crate) fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Pointer to `[off, off + len)` if that range lies inside the mapping.
    fn range(&self, off: usize, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // wrapping_add is a safe, in-bounds offset here (off <= self.len).
        Some(self.ptr.as_ptr().wrapping_add(off))
    }

    /// Copies `dst.len()` bytes at `off` out of the mapping. False if out of range.
    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        let Some(src) = self.range(off, dst.len()) else {
            return false;
        };
        // SAFETY: `[src, src + dst.len())` lies inside the live mapping (checked by
        // `range`); `dst` is a local buffer, not part of the mapping, so the ranges do not
        // overlap. Bytes torn by a concurrent writer in the peer are still valid `u8`s.
        unsafe { ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the mapping at `off`. False if out of range.
    pub(crate) fn write(&mut self, off: usize, src: &[u8]) -> bool {
        let Some(dst) = self.range(off, src.len()) else {
            return false;
        };
        // SAFETY: `[dst, dst + src.len())` lies inside the live mapping (checked by
        // `range`), which is writable (PROT_WRITE); `src` is not part of the mapping, so
        // the ranges do not overlap; `&mut self` excludes concurrent writers in this process.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        true
    }

    /// Runs `f` on the 16-bit field at `off` viewed as an atomic. None if out of range or
    /// misaligned.
    fn with_atomic_u16<R>(&self, off: usize, f: impl FnOnce(&AtomicU16) -> R) -> Option<R> {
        if off % 2 != 0 {
            return None;
        }
        let p = self.range(off, 2)?;
        // SAFETY: `p` is inside the live mapping and 2-byte aligned (the mapping is page
        // aligned and `off` is even); the reference lives only for this call, during which
        // the mapping stays mapped (`&self`). The ring index and flag fields it is used for
        // are only accessed atomically (here and by the peer), as virtio requires.
        let a = unsafe { AtomicU16::from_ptr(p.cast::<u16>()) };
        Some(f(a))
    }

    /// Atomic load of the little-endian `u16` at `off`.
    pub(crate) fn load_u16(&self, off: usize, order: Ordering) -> Option<u16> {
        self.with_atomic_u16(off, |a| u16::from_le(a.load(order)))
    }

    /// Atomic store of `v` as little-endian `u16` at `off`. False if out of range.
    pub(crate) fn store_u16(&self, off: usize, v: u16, order: Ordering) -> bool {
        self.with_atomic_u16(off, |a| a.store(v.to_le(), order))
            .is_some()
    }
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `new_memfd`, which is
        // unmapped only here, and no reference into it outlives a method call.
        unsafe { libc::munmap(self.ptr.as_ptr().cast::<libc::c_void>(), self.len) };
    }
}

impl std::fmt::Debug for MmapRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapRegion")
            .field("host_addr", &format_args!("{:#x}", self.host_addr()))
            .field("len", &self.len)
            .field("fd", &self.fd())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_atomics() {
        let mut r = MmapRegion::new_memfd("t", 4096).unwrap();
        assert!(r.write(4090, &[1, 2, 3, 4, 5, 6]));
        assert!(!r.write(4091, &[0; 6]));
        assert!(!r.write(usize::MAX, &[0]));
        let mut b = [0u8; 6];
        assert!(r.read(4090, &mut b));
        assert_eq!(b, [1, 2, 3, 4, 5, 6]);
        assert!(r.store_u16(4094, 0xbeef, Ordering::Release));
        assert_eq!(r.load_u16(4094, Ordering::Acquire), Some(0xbeef));
        assert!(r.read(4094, &mut b[..2]));
        assert_eq!(&b[..2], &0xbeefu16.to_le_bytes());
        assert_eq!(r.load_u16(4095, Ordering::Relaxed), None);
        assert_eq!(r.load_u16(4096, Ordering::Relaxed), None);
        assert!(MmapRegion::new_memfd("t", 0).is_err());
    }
}
