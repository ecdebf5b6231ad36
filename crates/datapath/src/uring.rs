//! Writes to a TAP queue in batches: one `io_uring_enter` for all the frames a burst sends
//! to the host, instead of one `writev` each.
//!
//! Each TAP queue gets a small ring of its own, set up while it is still disabled
//! (`IORING_SETUP_R_DISABLED`) so that restrictions bind it before its first use: the only
//! operations it can run are `writev` and `read` (on the queue's fd, the only one the
//! worker names),
//! with no flags, and no registration is allowed afterwards. A worker holding the ring can
//! do nothing with it that its seccomp filter (`writev` and `read` on its fds) does not
//! allow anyway;
//! the filter lets workers call `io_uring_enter` but not `io_uring_setup` or
//! `io_uring_register`, which only the control thread, where TAP queues are opened, may
//! call. The fd is not registered with the ring (a registered file would keep the TAP
//! device alive until the ring's asynchronous teardown, after its port was removed).
//!
//! Every write is `RWF_NOWAIT`, so the kernel completes it inline during the submitting
//! call (a full queue completes with `EAGAIN` instead of parking the request),
//! and [`Writes::submit`] waits for all of them before it returns: no buffer is referenced
//! by the kernel once the batch is gone. A kernel without io_uring (or with it switched
//! off, `kernel.io_uring_disabled`) gets one `writev` per frame, as before.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;

use io_uring::{cqueue, opcode, register, squeue, types, IoUring, Submitter};

/// Entries of a queue's ring: a burst's frames to one TAP queue fit in one batch.
pub(crate) const RING_ENTRIES: u32 = crate::types::BURST as u32;

/// A TAP queue's ring, restricted to `writev` on that queue's fd.
pub(crate) struct TapRing {
    ring: IoUring,
    fd: RawFd,
    /// A submission failed in a way that may have left entries in the ring.
    broken: bool,
}

/// Times a batch retries a submission the kernel could not take for a moment.
const MAX_TRIES: u32 = 1000;

impl std::fmt::Debug for TapRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapRing").finish_non_exhaustive()
    }
}

impl TapRing {
    /// A ring that writes to `fd` (and can only `writev`). The caller keeps `fd` open as
    /// long as the ring.
    pub fn new(fd: RawFd) -> io::Result<TapRing> {
        let ring: IoUring = IoUring::builder()
            .setup_r_disabled()
            // An entry refused at submission must not hold back the ones after it: each
            // gets its completion, which the batch waits for.
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_clamp()
            .build(RING_ENTRIES)?;
        let sub = ring.submitter();
        let mut rules = [
            register::Restriction::sqe_op(opcode::Writev::CODE),
            register::Restriction::sqe_op(opcode::Read::CODE),
            register::Restriction::sqe_flags_allowed(0),
        ];
        sub.register_restrictions(&mut rules)?;
        sub.register_enable_rings()?;
        Ok(TapRing {
            ring,
            fd,
            broken: false,
        })
    }

    /// The ring failed: its owner should drop it and write frame by frame.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Reads up to one frame into each of `bufs` with one submission (`RWF_NOWAIT`: a
    /// read finding the queue empty completes at once with `EAGAIN`), waits for all of
    /// them and stores each one's result (bytes read, or a negated errno) in `results`.
    pub fn read_batch(&mut self, bufs: &mut [&mut [u8]], results: &mut [i32]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("the ring failed earlier"));
        }
        let n = bufs.len().min(results.len());
        results[..n].fill(-libc::ECANCELED);
        let (sub, mut sq, mut cq) = self.ring.split();
        let mut pushed = 0;
        for (i, b) in bufs[..n].iter_mut().enumerate() {
            let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
            let e = opcode::Read::new(types::Fd(self.fd), b.as_mut_ptr(), len)
                .rw_flags(libc::RWF_NOWAIT)
                .build()
                .user_data(i as u64);
            // SAFETY: `b` is borrowed mutably for this call, which waits below for the
            // completion of every entry it published before returning (or marks the ring
            // broken so that nothing is submitted from it again).
            if unsafe { sq.push(&e) }.is_err() {
                break;
            }
            pushed += 1;
        }
        drop(sq);
        let r = wait_all(&sub, &mut cq, pushed, results);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// A batch of writes borrowing their data for `'a` (one that takes nothing when the
    /// ring is broken).
    pub fn writes<'a>(&mut self) -> Writes<'_, 'a> {
        let broken = self.broken;
        let fd = self.fd;
        let (sub, sq, cq) = self.ring.split();
        Writes {
            fd,
            sub,
            sq: (!broken).then_some(sq),
            broken: &mut self.broken,
            cq,
            n: 0,
            _data: PhantomData,
        }
    }
}

/// Writes being gathered for one submission. The data of every write is borrowed for
/// `'a`, which outlives the batch; the batch submits and waits for them when it is
/// submitted or dropped, so the kernel never reads them after `'a`. Forgetting the batch
/// (`mem::forget`) leaves its entries unpublished: the kernel never sees them.
pub(crate) struct Writes<'r, 'a> {
    fd: RawFd,
    sub: Submitter<'r>,
    sq: Option<squeue::SubmissionQueue<'r>>,
    cq: cqueue::CompletionQueue<'r>,
    broken: &'r mut bool,
    n: u32,
    _data: PhantomData<&'a [libc::iovec]>,
}

impl<'a> Writes<'_, 'a> {
    /// Adds one frame; false when the batch is full.
    pub fn push(&mut self, iov: vring::IoVecs<'a>) -> bool {
        let Some(sq) = self.sq.as_mut() else {
            return false;
        };
        let s = iov.into_slice();
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        // RWF_NOWAIT: a write the fd cannot take now completes with EAGAIN instead of
        // being parked until it can (the submission waits for every write).
        let e = opcode::Writev::new(types::Fd(self.fd), s.as_ptr(), len)
            .rw_flags(libc::RWF_NOWAIT)
            .build()
            .user_data(u64::from(self.n));
        // SAFETY: the entry points to `s` and, through it, to data borrowed for `'a`
        // (an `IoVecs` is only built from borrowed slices and chains, each chain keeping
        // its guest memory mapped). The batch cannot outlive `'a`, and it waits for every
        // entry it published before it goes (submit or drop).
        if unsafe { sq.push(&e) }.is_err() {
            return false;
        }
        self.n += 1;
        true
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// Submits the batch, waits for every write, and stores each one's result (bytes
    /// written, or a negated errno) in `results`, in the order they were pushed.
    pub fn submit(mut self, results: &mut [i32]) -> io::Result<()> {
        self.finish(results)
    }

    fn finish(&mut self, results: &mut [i32]) -> io::Result<()> {
        // Publishes the entries (dropping the queue view stores its tail).
        drop(self.sq.take());
        let want = self.n as usize;
        self.n = 0;
        let r = wait_all(&self.sub, &mut self.cq, want, results);
        if r.is_err() {
            // Entries the kernel did not take stay published: the ring must not be used
            // again (its owner drops it, which discards them).
            *self.broken = true;
        }
        r
    }
}

/// Submits what is published and waits for `want` completions, storing each result at
/// its entry's `user_data` index in `results`. An error means the ring must not be used
/// again.
fn wait_all(
    sub: &Submitter<'_>,
    cq: &mut cqueue::CompletionQueue<'_>,
    want: usize,
    results: &mut [i32],
) -> io::Result<()> {
    let mut done = 0;
    let mut tries = 0;
    while done < want {
        match sub.submit_and_wait(want - done) {
            Ok(_) => {}
            // Interrupted, out of request memory for a moment, or completions to reap
            // first: reap, then try again.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                tries += 1;
                if tries > MAX_TRIES {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        cq.sync();
        for c in &mut *cq {
            let i = usize::try_from(c.user_data()).unwrap_or(usize::MAX);
            if let Some(r) = results.get_mut(i) {
                *r = c.result();
            }
            done += 1;
        }
    }
    Ok(())
}

impl Drop for Writes<'_, '_> {
    fn drop(&mut self) {
        if self.n > 0 {
            let _ = self.finish(&mut []);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(
            &w,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        (r, w)
    }

    fn ring_or_skip(fd: RawFd) -> Option<TapRing> {
        match TapRing::new(fd) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}): nothing to test");
                None
            }
        }
    }

    #[test]
    fn a_batch_writes_every_frame_in_order_and_reports_each() {
        let (r, w) = pipe();
        let Some(mut ring) = ring_or_skip(w.as_raw_fd()) else {
            return;
        };
        let frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let mut store = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            frames.len() * 2
        ];
        let mut results = [0i32; 10];
        {
            let mut batch = ring.writes();
            for (f, chunk) in frames.iter().zip(store.chunks_mut(2)) {
                let mut v = vring::IoVecs::new(chunk);
                let (a, b) = f.split_at(f.len() / 2);
                v.push_bytes(a);
                v.push_bytes(b);
                assert!(batch.push(v));
            }
            assert_eq!(batch.len(), 10);
            batch.submit(&mut results).unwrap();
        }
        let want: Vec<i32> = (1..=10).collect();
        assert_eq!(results.to_vec(), want);
        let mut got = vec![0u8; 100];
        let n = nix::unistd::read(&r, &mut got).unwrap();
        let expect: Vec<u8> = frames.concat();
        assert_eq!(&got[..n], expect.as_slice());
        assert!(!ring.is_broken());
    }

    #[test]
    fn a_read_batch_takes_what_is_there_and_the_rest_completes_with_eagain() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let Some(mut ring) = ring_or_skip(b.as_raw_fd()) else {
            return;
        };
        for m in [&b"one"[..], b"second", b"3"] {
            a.send(m).unwrap();
        }
        let mut mem = [[0u8; 64]; 5];
        let mut bufs: Vec<&mut [u8]> = mem.iter_mut().map(|b| &mut b[..]).collect();
        let mut results = [0i32; 5];
        ring.read_batch(&mut bufs, &mut results).unwrap();
        assert_eq!(results, [3, 6, 1, -libc::EAGAIN, -libc::EAGAIN]);
        assert_eq!(&bufs[0][..3], b"one");
        assert_eq!(&bufs[1][..6], b"second");
        assert_eq!(&bufs[2][..1], b"3");
    }

    #[test]
    fn a_full_fd_completes_with_eagain_instead_of_waiting() {
        let (_r, w) = pipe();
        let Some(mut ring) = ring_or_skip(w.as_raw_fd()) else {
            return;
        };
        // Fill the pipe (64 KiB by default), then one write more.
        let big = vec![7u8; 1 << 20];
        let mut store = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2];
        let mut results = [0i32; 2];
        let mut batch = ring.writes();
        for chunk in store.chunks_mut(1) {
            let mut v = vring::IoVecs::new(chunk);
            v.push_bytes(&big);
            assert!(batch.push(v));
        }
        batch.submit(&mut results).unwrap();
        assert!(results[0] > 0, "{results:?}");
        assert_eq!(results[1], -libc::EAGAIN, "{results:?}");
    }

    #[test]
    fn the_ring_is_restricted_to_writev_and_read() {
        let (_r, w) = pipe();
        let Some(mut ring) = ring_or_skip(w.as_raw_fd()) else {
            return;
        };
        // No registration after set-up.
        let e = ring.ring.submitter().register_files(&[w.as_raw_fd()]);
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EACCES));
        // No other operation: a plain write, an open, a nop all fail with EACCES.
        let mut buf = [0u8; 8];
        let path = c"/etc/passwd";
        let ops = [
            opcode::Write::new(types::Fd(w.as_raw_fd()), buf.as_mut_ptr(), 8).build(),
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).build(),
            opcode::Nop::new().build(),
        ];
        for (i, e) in ops.iter().enumerate() {
            // SAFETY: every entry points to data that outlives the submission below, which
            // waits for its completion.
            unsafe { ring.ring.submission().push(&e.clone().user_data(i as u64)) }.unwrap();
        }
        ring.ring.submit_and_wait(ops.len()).unwrap();
        let got: Vec<(u64, i32)> = ring
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        assert_eq!(got.len(), ops.len());
        for (i, r) in got {
            assert_eq!(r, -libc::EACCES, "operation {i} was allowed");
        }
    }
}
