//! The one system call of the datapath that needs `unsafe`: `writev` to a TAP fd.

use std::io;
use std::os::fd::RawFd;

use vring::IoVecs;

/// `writev(fd, iov)`: one frame (virtio_net_hdr first) to a TAP queue.
pub(crate) fn writev(fd: RawFd, iov: &IoVecs<'_>) -> io::Result<usize> {
    // SAFETY: an `IoVecs` only holds entries built from byte slices and chain buffers
    // borrowed for its lifetime (a chain keeps its guest memory mapped), so every entry
    // points to readable memory for this call; the kernel only reads it.
    unsafe { port_tap::sys::writev(fd, iov.as_slice()) }
}

/// Errors that mean the TAP device is gone (deleted by someone).
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::EIO | libc::ENXIO | libc::ENODEV)
    )
}
