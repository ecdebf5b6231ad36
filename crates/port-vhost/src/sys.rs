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
