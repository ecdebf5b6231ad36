//! A TAP port: its queues (fds), the frames waiting for the kernel to take them, the frame
//! read from the host that waits for rx buffers, and the reads and writes themselves.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vring::{Chain, IoVecs};

use crate::frame::{Src, HEAD_LEN};
use crate::types::{PortId, BURST, MAX_FRAME};
use crate::uring::TapRing;

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
    fn push_slot(&mut self) -> Option<&mut Vec<u8>> {
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

    /// Queues a copy of `head`'s pieces followed by `len` bytes of `body`; false when
    /// the queue is full.
    pub fn push_copy(&mut self, head: &[&[u8]], body: Src<'_>, len: usize) -> bool {
        let Some(slot) = self.push_slot() else {
            return false;
        };
        for h in head {
            slot.extend_from_slice(h);
        }
        let start = slot.len();
        slot.resize(start + len, 0);
        body.read_at(0, &mut slot[start..]);
        true
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

/// A frame of the running tx burst for a TAP queue, written when the burst ends (with
/// the others for that queue, in one system call): the virtio_net_hdr and Ethernet header
/// as the switch checked them, then the rest straight from the guest's chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapWrite {
    /// The chain's index in the burst.
    pub frame: u16,
    pub head_len: u8,
    pub head: [u8; HEAD_LEN],
    /// Where the rest starts in the chain, and its length.
    pub off: u32,
    pub len: u32,
}

impl TapWrite {
    /// Bytes of the frame (Ethernet header included, virtio_net_hdr not).
    fn frame_len(&self) -> usize {
        usize::from(self.head_len).saturating_sub(virtio_net::HDR_LEN_V1) + self.len as usize
    }

    /// The frame's iovecs in `store`: the header copy, then its bytes of its chain in
    /// `burst`; None if the chain is missing or its buffers do not fit in `store`.
    fn iovecs<'a>(
        &'a self,
        burst: &'a [Chain],
        store: &'a mut [libc::iovec],
    ) -> Option<IoVecs<'a>> {
        let c = burst.get(usize::from(self.frame))?;
        let mut v = IoVecs::new(store);
        v.push_bytes(&self.head[..usize::from(self.head_len)]);
        let len = self.len as usize;
        (v.push_chain(c, self.off as usize, len) == len).then_some(v)
    }
}

/// iovecs one batched frame may use: the copied header and up to 15 chain buffers (a
/// frame in more buffers is written on its own).
pub(crate) const BATCH_IOV: usize = 16;

/// What became of writes to one TAP queue: a burst's gathered frames
/// ([`TapQueue::flush_pending`]) or those waiting in its out-queue
/// ([`TapQueue::flush_out`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Written (or, for a burst, queued).
    pub frames: u64,
    /// Their frames' bytes (for a burst).
    pub bytes: usize,
    /// Refused with an error (dropped, `tx_error`).
    pub failed: u64,
    /// Lost because the device is gone (dropped, `port_down`).
    pub down: u64,
    /// Frames went to the out-queue: EPOLLOUT should be armed.
    pub queued: bool,
    /// The device is gone.
    pub gone: bool,
}

/// Frames one batched read takes at most.
pub(crate) const READ_BATCH: usize = 32;

/// Where each read of a batch goes in [`RxBatch`]'s memory: room for a frame, rounded up
/// so that a buffer starts 33 cache lines further on in the cache's index than the one
/// before (`STRIDE` is 64 KiB + 33 lines). Buffers 64 KiB and a few bytes apart (one
/// allocation each) start at nearly the same set of an L1 or L2 cache: the first 1.5 KiB
/// of 32 of them, a batch of full-MTU frames, fought over the same few sets and went out
/// to the shared L3 between the read and the copy into the guest.
const READ_STRIDE: usize = 64 * 1024 + 33 * 64;
const _: () = assert!(READ_STRIDE >= FRAME_ROOM);

/// Frames read from a TAP queue in one submission and not switched yet, in order.
#[derive(Debug, Default)]
pub(crate) struct RxBatch {
    /// One buffer per read, [`READ_STRIDE`] bytes apart (allocated on first use; pages
    /// no frame reached are never touched).
    mem: Vec<u8>,
    /// (buffer, length) of the frames read, in the order read.
    frames: Vec<(u16, u32)>,
    /// The next of `frames` to switch.
    next: usize,
    /// Reads the next submission makes: doubled while they all find a frame, else what
    /// the last one found and one more (a queue that trickles costs few empty reads).
    want: usize,
}

impl RxBatch {
    /// Frames read and not switched yet remain.
    pub fn has_next(&self) -> bool {
        self.next < self.frames.len()
    }

    /// The next frame read and not switched yet.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        let &(b, len) = self.frames.get(self.next)?;
        self.next += 1;
        let at = usize::from(b) * READ_STRIDE;
        self.mem.get(at..at + (len as usize).min(FRAME_ROOM))
    }

    /// Reads a new batch with `ring`; the frames read, or the error that ended it (with
    /// the frames read before it still there).
    pub fn refill(&mut self, ring: &mut TapRing) -> Result<usize, std::io::Error> {
        if self.mem.is_empty() {
            self.mem = vec![0u8; READ_BATCH * READ_STRIDE];
            self.frames = Vec::with_capacity(READ_BATCH);
            self.want = 4;
        }
        self.frames.clear();
        self.next = 0;
        let want = self.want.clamp(1, READ_BATCH);
        let mut results = [0i32; READ_BATCH];
        let mut chunks = self.mem.chunks_mut(READ_STRIDE);
        let mut bufs: [&mut [u8]; READ_BATCH] = std::array::from_fn(|_| {
            chunks
                .next()
                .and_then(|c| c.get_mut(..FRAME_ROOM))
                .unwrap_or_default()
        });
        ring.read_batch(&mut bufs[..want], &mut results[..want])?;
        let mut err = None;
        for (i, &r) in results[..want].iter().enumerate() {
            match r {
                n if n > 0 => self
                    .frames
                    .push((u16::try_from(i).unwrap_or(0), n.unsigned_abs())),
                0 => {}
                n if n == -libc::EAGAIN => {}
                n => {
                    err.get_or_insert(std::io::Error::from_raw_os_error(-n));
                }
            }
        }
        let got = self.frames.len();
        self.want = if got == want { want * 2 } else { got + 1 };
        match (got, err) {
            (0, Some(e)) => Err(e),
            _ => Ok(got),
        }
    }
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
    /// Batches writes (None: one `writev` per frame).
    pub ring: Option<TapRing>,
    /// Frames of the running burst waiting for its end (see [`TapWrite`]).
    pub pending: Vec<TapWrite>,
    /// Frames read ahead in one batch (with a ring), taken out while they are switched.
    pub rx: Option<RxBatch>,
    /// Out of epoll while frames flow: the worker reads it every round (and the host's
    /// sender pays no epoll wake-up per frame), until it has been empty for a while.
    pub polled: bool,
}

impl TapQueue {
    pub fn new(fd: File, read: bool, ring: Option<TapRing>) -> TapQueue {
        TapQueue {
            read,
            rx: (read && ring.is_some()).then(RxBatch::default),
            polled: false,
            ring,
            pending: Vec::with_capacity(usize::from(BURST)),
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
    pub fn flush_out(&mut self, iov: &mut [libc::iovec]) -> Sent {
        let mut r = Sent::default();
        while let Some(f) = self.out.front() {
            let mut v = IoVecs::new(iov);
            v.push_bytes(f);
            match crate::io::writev(self.fd.as_raw_fd(), &v) {
                Ok(_) => {
                    r.frames += 1;
                    self.out.pop();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if crate::io::is_gone(&e) => {
                    self.out.pop();
                    r.down += 1;
                    r.gone = true;
                    break;
                }
                Err(_) => {
                    self.out.pop();
                    r.failed += 1;
                }
            }
        }
        r
    }

    /// Whether a frame of the running burst can wait for the burst's end (batched).
    pub fn can_defer(&self) -> bool {
        self.ring.is_some() && self.out.is_empty() && self.pending.len() < usize::from(BURST)
    }

    /// Writes the frames gathered during a burst (`burst`: its chains), in order: as many
    /// as fit in one io_uring submission at a time, a frame in too many buffers on its own
    /// with `writev`. A frame the kernel cannot take yet goes to the out-queue.
    pub fn flush_pending(
        &mut self,
        burst: &[Chain],
        arena: &mut [libc::iovec],
        iov: &mut [libc::iovec],
    ) -> Sent {
        let mut sent = Sent::default();
        let pending = std::mem::take(&mut self.pending);
        let mut results = [0i32; BURST as usize];
        let mut i = 0;
        while i < pending.len() {
            let start = i;
            let mut alone = false;
            if let Some(ring) = self.ring.as_mut() {
                let mut w = ring.writes();
                let mut chunks = arena.chunks_mut(BATCH_IOV);
                while let (Some(p), Some(chunk)) = (pending.get(i), chunks.next()) {
                    let Some(v) = p.iovecs(burst, chunk) else {
                        alone = true;
                        break;
                    };
                    if !w.push(v) {
                        break;
                    }
                    i += 1;
                }
                let n = w.len();
                results[..n].fill(-libc::ECANCELED);
                if let Err(e) = w.submit(&mut results[..n]) {
                    tracing::warn!("TAP write batch failed ({e}); writing frame by frame");
                }
                if ring.is_broken() {
                    self.ring = None;
                }
            } else {
                alone = true;
            }
            for (p, &r) in pending[start..i].iter().zip(&results) {
                let r = if r == -libc::EOPNOTSUPP {
                    // The file cannot do RWF_NOWAIT: frame by frame from now on.
                    self.ring = None;
                    self.write_one(p, burst, iov)
                } else {
                    r
                };
                self.account(p, burst, r, &mut sent);
            }
            if alone {
                if let Some(p) = pending.get(i) {
                    let r = self.write_one(p, burst, iov);
                    self.account(p, burst, r, &mut sent);
                    i += 1;
                }
            }
        }
        self.pending = pending;
        self.pending.clear();
        sent
    }

    /// One pending frame with `writev`: its result as io_uring reports it.
    fn write_one(&self, p: &TapWrite, burst: &[Chain], iov: &mut [libc::iovec]) -> i32 {
        let Some(v) = p.iovecs(burst, iov) else {
            return -libc::EMSGSIZE;
        };
        match self.writev(&v) {
            Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Counts a pending frame's result; one the kernel could not take yet is copied to
    /// the out-queue (its chain is still the guest's until the burst ends).
    fn account(&mut self, p: &TapWrite, burst: &[Chain], r: i32, sent: &mut Sent) {
        let len = p.frame_len();
        if r >= 0 {
            sent.frames += 1;
            sent.bytes += len;
            return;
        }
        let errno = -r;
        if errno == libc::EAGAIN {
            let head = &p.head[..usize::from(p.head_len)];
            let body = burst.get(usize::from(p.frame));
            if body.is_some_and(|c| {
                let body = Src::Chain(c, p.off as usize);
                self.out.push_copy(&[head], body, p.len as usize)
            }) {
                sent.frames += 1;
                sent.bytes += len;
                sent.queued = true;
                return;
            }
        } else if crate::io::is_gone(&std::io::Error::from_raw_os_error(errno)) {
            sent.gone = true;
            sent.down += 1;
            return;
        }
        sent.failed += 1;
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
    /// A port on `fds`, each queue with its ring if it has one (see [`TapRing`]).
    pub fn new(ifname: String, fds: Vec<File>, rings: Vec<Option<TapRing>>, read: bool) -> TapPort {
        let mut rings = rings.into_iter();
        let queues = fds
            .into_iter()
            .map(|fd| TapQueue::new(fd, read, rings.next().flatten()))
            .collect();
        TapPort {
            ifname,
            queues,
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
