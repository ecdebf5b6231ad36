//! A TAP port: its queues (fds), the frames waiting for the kernel to take them, the frame
//! read from the host that waits for rx buffers, and the reads and writes themselves.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vring::IoVecs;

use crate::types::{PortId, MAX_FRAME};

/// Frames a TAP queue may hold back while the kernel's queue is full.
pub(crate) const TAP_OUT_SLOTS: usize = 32;

/// Room for one frame read from or queued for a TAP: virtio_net_hdr and the frame.
const FRAME_ROOM: usize = MAX_FRAME + port_tap::VNET_HDR_LEN;

/// Frames waiting for a TAP fd to become writable: a bounded queue of preallocated slots.
#[derive(Debug)]
pub(crate) struct OutQueue {
    slots: Vec<Vec<u8>>,
    head: usize,
    len: usize,
}

impl OutQueue {
    fn new() -> OutQueue {
        OutQueue {
            slots: Vec::new(),
            head: 0,
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A slot to fill, or None when full. Slots are allocated on first use, then reused.
    pub fn push_slot(&mut self) -> Option<&mut Vec<u8>> {
        if self.len == TAP_OUT_SLOTS {
            return None;
        }
        if self.slots.is_empty() {
            self.slots = (0..TAP_OUT_SLOTS)
                .map(|_| Vec::with_capacity(FRAME_ROOM))
                .collect();
        }
        let i = (self.head + self.len) % TAP_OUT_SLOTS;
        self.len += 1;
        let s = &mut self.slots[i];
        s.clear();
        Some(s)
    }

    fn front(&self) -> Option<&[u8]> {
        (self.len > 0).then(|| self.slots[self.head].as_slice())
    }

    fn pop(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % TAP_OUT_SLOTS;
            self.len -= 1;
        }
    }
}

/// What became of the frames waiting in an [`OutQueue`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Frames the kernel refused with an error (dropped).
    pub failed: u64,
    /// The device is gone.
    pub gone: bool,
}

/// One queue (fd) of a TAP device.
#[derive(Debug)]
pub(crate) struct TapQueue {
    pub fd: File,
    /// Frames the kernel would not take yet (EAGAIN), sent on EPOLLOUT.
    pub out: OutQueue,
    /// EPOLLOUT is armed (or about to be: the worker applies it after the burst).
    pub out_armed: bool,
    /// A frame read from the host that waits for its destination's rx buffers
    /// (header included), and the port it waits on.
    pub held: Vec<u8>,
    pub held_for: Option<PortId>,
    /// Buffers arrived while the held frame was being parked: try once more.
    pub retry: bool,
    /// Since when the held frame waits.
    pub held_since: Option<std::time::Instant>,
    /// This worker reads the queue (else it only writes to it: another worker reads it).
    pub read: bool,
}

impl TapQueue {
    pub fn new(fd: File, read: bool) -> TapQueue {
        TapQueue {
            read,
            fd,
            out: OutQueue::new(),
            out_armed: false,
            held: Vec::with_capacity(FRAME_ROOM),
            held_for: None,
            retry: false,
            held_since: None,
        }
    }

    /// One frame to the host.
    pub fn writev(&self, iov: &IoVecs<'_>) -> io::Result<usize> {
        crate::io::writev(self.fd.as_raw_fd(), iov)
    }

    /// One frame from the host into `buf`.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        port_tap::sys::read(self.fd.as_raw_fd(), buf)
    }

    /// Sends the frames that waited for the fd to become writable, until the kernel's
    /// queue is full again.
    pub fn flush_out(&mut self, iov: &mut [libc::iovec]) -> Flushed {
        let mut r = Flushed::default();
        while let Some(f) = self.out.front() {
            let mut v = IoVecs::new(iov);
            v.push_bytes(f);
            match crate::io::writev(self.fd.as_raw_fd(), &v) {
                Ok(_) => self.out.pop(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.out.pop();
                    r.failed += 1;
                    if crate::io::is_gone(&e) {
                        r.gone = true;
                        break;
                    }
                }
            }
        }
        r
    }
}

/// A TAP device attached to the switch.
#[derive(Debug)]
pub(crate) struct TapPort {
    pub ifname: String,
    pub queues: Vec<TapQueue>,
    /// The device was deleted under us: the port is down for good. Set once, by whoever
    /// sees it first; the worker then lets go of the queues.
    pub gone: bool,
}

impl TapPort {
    pub fn new(ifname: String, fds: Vec<File>, read: bool) -> TapPort {
        TapPort {
            ifname,
            queues: fds.into_iter().map(|fd| TapQueue::new(fd, read)).collect(),
            gone: false,
        }
    }

    /// Marks the device gone; true the first time.
    pub fn mark_gone(&mut self) -> bool {
        !std::mem::replace(&mut self.gone, true)
    }

    /// The queue a frame goes out on (spread by `hint`), unless the device is gone.
    pub fn queue_for(&mut self, hint: usize) -> Option<(usize, &mut TapQueue)> {
        let n = self.queues.len();
        if self.gone || n == 0 {
            return None;
        }
        let qi = hint % n;
        Some((qi, &mut self.queues[qi]))
    }
}
