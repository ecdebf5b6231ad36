//! The one system call of the datapath that needs `unsafe`: `writev` to a TAP fd from
//! iovecs that point into guest memory.

use std::io;
use std::os::fd::RawFd;

/// `writev(fd, iov)`.
///
/// Callers in this crate build `iov` only from: the stack header buffer of the frame
/// being sent, worker `Scratch` buffers, and the segments of a chain popped in the current
/// burst, whose guest memory the queue keeps mapped until the burst ends.
pub(crate) fn tap_writev(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: every iovec points to memory that stays readable for this call, as listed
    // above; the kernel only reads it.
    unsafe { port_tap::sys::writev(fd, iov) }
}

/// Errors that mean the TAP device is gone (deleted by someone).
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::EIO | libc::ENXIO | libc::ENODEV)
    )
}
