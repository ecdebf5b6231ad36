//! Receiving a message with the fds attached to it (`SCM_RIGHTS`): the only `unsafe` of
//! this crate.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Most fds one message may carry (vhost-user: 8 for SET_MEM_TABLE); more are closed.
pub const MAX_FDS: usize = 8;

/// Reads into `buf` (one `recvmsg`) and returns the byte count and the fds that came with
/// it, each owned by a `File`.
pub fn recv_with_files(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<File>)> {
    let mut fds: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: `iov` describes `buf`, which is writable for its length and outlives the call.
    let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut fds) }.map_err(io::Error::from)?;
    let files = fds[..nfds.min(MAX_FDS)]
        .iter()
        .filter(|&&fd| fd >= 0)
        // SAFETY: the kernel just installed these descriptors for us; nothing else owns them.
        .map(|&fd| unsafe { File::from_raw_fd(fd) })
        .collect();
    Ok((n, files))
}

/// What a notification fd from the frontend must be, and why it was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotifyFdError {
    /// The fd is something other than an eventfd (a pipe, a socket, a file...).
    #[error("fd is not an eventfd but {0}")]
    NotEventfd(String),
    /// Its kind or flags could not be read or changed.
    #[error("{op} failed: {err}")]
    Os {
        /// What failed.
        op: &'static str,
        /// errno.
        err: io::Error,
    },
}

/// Checks that `file` is an eventfd and makes it non-blocking, so neither a read of a
/// kick (another reader may have emptied it) nor a write of a call (a counter the VMM
/// filled up) can ever block a worker. The flag is on the open file description the VMM
/// shares; eventfds of QEMU, DPDK and Cloud Hypervisor are non-blocking already.
pub fn checked_eventfd(file: File) -> Result<File, NotifyFdError> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // The kernel names an eventfd's anonymous inode "anon_inode:[eventfd]".
    let kind =
        std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|err| NotifyFdError::Os {
            op: "readlink /proc/self/fd",
            err,
        })?;
    if kind.as_os_str() != "anon_inode:[eventfd]" {
        return Err(NotifyFdError::NotEventfd(kind.display().to_string()));
    }
    // SAFETY: F_GETFL on an fd `file` owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(NotifyFdError::Os {
            op: "fcntl(F_GETFL)",
            err: io::Error::last_os_error(),
        });
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL with an int argument on an fd `file` owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(NotifyFdError::Os {
                op: "fcntl(F_SETFL, O_NONBLOCK)",
                err: io::Error::last_os_error(),
            });
        }
    }
    Ok(file)
}

/// A new non-blocking eventfd (stand-in kick, call and err fds for tests and fuzzing).
#[cfg(any(test, feature = "test-util"))]
pub fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers and returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Whether the peer of `sock` has closed its end (or the socket failed), without
/// reading anything and without waiting.
pub fn peer_hung_up(sock: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call; timeout 0 never waits.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
