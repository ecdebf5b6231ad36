//! Frames handed from one worker to another: a bounded single-producer, single-consumer
//! byte ring, one per ordered pair of workers.
//!
//! A guest rxq has exactly one writer, the worker that owns it. When a frame's egress port
//! has no rxq on the worker that switched it, that worker copies the frame (virtio_net_hdr
//! included) into the mailbox of a worker that owns one, and that worker delivers it. So
//! frames between workers cost a second copy; frames between ports on the same worker do not.
//!
//! Records are 8-byte aligned: an 8-byte header (payload length, ingress port, egress port)
//! then the payload. A record never wraps: when it does not fit before the end of the
//! buffer, the producer writes a padding header there and starts again at offset 0.
//!
//! Ordering: the producer writes a record, then stores `tail` with Release; the consumer
//! loads `tail` with Acquire before reading records, and stores `head` with Release after
//! it is done with them; the producer loads `head` with Acquire before reusing that space.
//! Positions grow without bound (wrapping `usize`) and are reduced modulo the capacity.
//!
//! [`mailbox`] returns the two ends: a [`Sender`] and a [`Receiver`], neither `Clone`, both
//! taking `&mut self`, so one producer and one consumer is a rule the compiler enforces.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::types::PortId;

/// Bytes of a record header.
const REC_HDR: usize = 8;
/// Payload length that marks padding up to the end of the buffer.
const PAD: u32 = u32::MAX;

/// Keeps the two indexes on separate cache lines.
#[repr(align(64))]
struct Padded(AtomicUsize);

/// A single-producer, single-consumer ring of frames, shared by its two ends.
struct Mailbox {
    buf: Box<[UnsafeCell<u8>]>,
    /// `buf.len() - 1`; the length is a power of two.
    mask: usize,
    /// Consumer position.
    head: Padded,
    /// Producer position.
    tail: Padded,
}

// SAFETY: the producer only writes bytes in `[tail, head + cap)` and the consumer only reads
// bytes in `[head, tail)`; the atomics (Release/Acquire pairs above) hand each byte range
// from one side to the other, so no byte is accessed by both threads at once. There is one
// producer and one consumer: the only handles on a Mailbox are the one `Sender` and the one
// `Receiver` that `mailbox` makes, neither `Clone`, and pushing and popping take `&mut`.
unsafe impl Sync for Mailbox {}
// SAFETY: the buffer is owned memory with no thread affinity.
unsafe impl Send for Mailbox {}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("capacity", &self.buf.len())
            .finish_non_exhaustive()
    }
}

fn record_len(payload: usize) -> usize {
    REC_HDR + payload.next_multiple_of(REC_HDR)
}

/// The producing end of a mailbox.
#[derive(Debug)]
pub(crate) struct Sender {
    ring: Arc<Mailbox>,
}

/// The consuming end of a mailbox.
#[derive(Debug)]
pub(crate) struct Receiver {
    ring: Arc<Mailbox>,
}

/// A mailbox of `capacity` bytes (rounded up to a power of two, at least 4 KiB): its two
/// ends.
pub(crate) fn mailbox(capacity: usize) -> (Sender, Receiver) {
    let ring = Arc::new(Mailbox::new(capacity));
    (Sender { ring: ring.clone() }, Receiver { ring })
}

impl Sender {
    /// Appends a record of `len` payload bytes written by `fill`. Returns false (nothing
    /// appended) when the mailbox has no room.
    pub fn push(
        &mut self,
        ingress: PortId,
        egress: PortId,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.ring.push(ingress, egress, len, fill)
    }

    /// Whether a record of `len` payload bytes would fit now (the consumer only makes
    /// more room): lets a producer skip preparing a record that would be refused.
    pub fn has_room(&self, len: usize) -> bool {
        self.ring.has_room(len)
    }
}

impl Receiver {
    /// Hands the oldest record to `f` (ingress port, egress port, payload) and removes it.
    /// Returns false when the mailbox is empty.
    pub fn pop(&mut self, f: impl FnOnce(PortId, PortId, &[u8])) -> bool {
        self.ring.pop(f)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

impl Mailbox {
    fn new(capacity: usize) -> Mailbox {
        let cap = capacity.max(4096).next_power_of_two();
        Mailbox {
            buf: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
            mask: cap - 1,
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
        }
    }

    fn cap(&self) -> usize {
        self.mask + 1
    }

    /// Address of byte `pos` (modulo the capacity). Derived from the whole buffer, whose
    /// bytes are `UnsafeCell`s: writing through it from `&self` is allowed.
    fn ptr(&self, pos: usize) -> *mut u8 {
        UnsafeCell::raw_get(self.buf.as_ptr())
            .cast::<u8>()
            .wrapping_add(pos & self.mask)
    }

    /// Producer side of [`Sender::push`].
    fn push(
        &self,
        ingress: PortId,
        egress: PortId,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Ok(len32) = u32::try_from(len) else {
            return false;
        };
        if len32 == PAD {
            return false;
        }
        let Some((tail, pad, start, need)) = self.placement(len) else {
            return false;
        };
        if pad > 0 {
            self.write_hdr(tail, PAD, ingress, egress);
        }
        self.write_hdr(start, len32, ingress, egress);
        // SAFETY: `[start + 8, start + 8 + len)` lies inside the buffer (the record does not
        // wrap: `need <= cap - (start & mask)`) and in the free space the consumer does not
        // read until `tail` is published below; no other reference to it exists.
        let payload = unsafe { std::slice::from_raw_parts_mut(self.ptr(start + REC_HDR), len) };
        fill(payload);
        // Release: the record's bytes become visible before the new tail.
        self.tail
            .0
            .store(start.wrapping_add(need), Ordering::Release);
        true
    }

    fn write_hdr(&self, pos: usize, len: u32, ingress: PortId, egress: PortId) {
        let mut h = [0u8; REC_HDR];
        h[0..4].copy_from_slice(&len.to_ne_bytes());
        h[4..6].copy_from_slice(&ingress.0.to_ne_bytes());
        h[6..8].copy_from_slice(&egress.0.to_ne_bytes());
        // SAFETY: `pos` is 8-aligned in the buffer (records are multiples of 8), so the 8
        // header bytes do not wrap; the range is free space owned by the producer.
        unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), self.ptr(pos), REC_HDR) };
    }

    /// Consumer side of [`Receiver::pop`].
    fn pop(&self, f: impl FnOnce(PortId, PortId, &[u8])) -> bool {
        let mut head = self.head.0.load(Ordering::Relaxed);
        // Acquire: records up to `tail` are fully written.
        let tail = self.tail.0.load(Ordering::Acquire);
        loop {
            if head == tail {
                return false;
            }
            let mut h = [0u8; REC_HDR];
            // SAFETY: `[head, head + 8)` is a published record header inside the buffer
            // (8-aligned, never wrapping).
            unsafe { std::ptr::copy_nonoverlapping(self.ptr(head), h.as_mut_ptr(), REC_HDR) };
            let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]);
            if len == PAD {
                head = head.wrapping_add(self.cap() - (head & self.mask));
                continue;
            }
            let ingress = PortId(u16::from_ne_bytes([h[4], h[5]]));
            let egress = PortId(u16::from_ne_bytes([h[6], h[7]]));
            let len = len as usize;
            // SAFETY: the producer published `[head, head + record_len(len))` (Acquire on
            // `tail` above) and does not touch it until `head` moves past it below.
            let payload = unsafe { std::slice::from_raw_parts(self.ptr(head + REC_HDR), len) };
            f(ingress, egress, payload);
            // Release: we are done reading the record before the producer may reuse it.
            self.head
                .0
                .store(head.wrapping_add(record_len(len)), Ordering::Release);
            return true;
        }
    }

    /// True when nothing waits (as seen by the consumer).
    fn is_empty(&self) -> bool {
        self.head.0.load(Ordering::Relaxed) == self.tail.0.load(Ordering::Acquire)
    }

    /// Producer side of [`Sender::has_room`]: the test `push` makes.
    fn has_room(&self, len: usize) -> bool {
        self.placement(len).is_some()
    }

    /// Where a record of `len` payload bytes goes, if it fits now: `(tail, pad, start,
    /// need)`, with `pad` bytes of padding at `tail` when the record would wrap and the
    /// record itself (`need` bytes) at `start`. Producer side only.
    #[inline]
    fn placement(&self, len: usize) -> Option<(usize, usize, usize, usize)> {
        let need = record_len(len);
        let tail = self.tail.0.load(Ordering::Relaxed);
        // Acquire: the consumer finished reading the space it released.
        let head = self.head.0.load(Ordering::Acquire);
        let free = self.cap() - tail.wrapping_sub(head);
        let to_end = self.cap() - (tail & self.mask);
        let (pad, start) = if need <= to_end {
            (0, tail)
        } else {
            (to_end, tail.wrapping_add(to_end))
        };
        (pad + need <= free).then_some((tail, pad, start, need))
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data made of deliberate truncations
mod tests {
    use super::*;

    fn frame(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[test]
    fn records_in_order_with_wrap_and_full() {
        let (mut tx, mut m) = mailbox(4096);
        // Fill, drain half, fill again: records wrap around the end several times.
        let mut next_in = 0usize;
        let mut next_out = 0usize;
        for round in 0..50 {
            loop {
                let len = 60 + (next_in * 37) % 500;
                let f = frame(next_in, len);
                let ok = tx.push(PortId(1), PortId(2), len, |b| b.copy_from_slice(&f));
                if !ok {
                    break;
                }
                next_in += 1;
            }
            assert!(next_in > next_out, "round {round}: nothing fit");
            let drain = (next_in - next_out).div_ceil(2);
            for _ in 0..drain {
                let mut got = None;
                assert!(m.pop(|i, e, b| got = Some((i, e, b.to_vec()))));
                let (i, e, b) = got.unwrap();
                assert_eq!((i, e), (PortId(1), PortId(2)));
                assert_eq!(b, frame(next_out, 60 + (next_out * 37) % 500));
                next_out += 1;
            }
        }
        while m.pop(|_, _, _| next_out += 1) {}
        assert_eq!(next_in, next_out);
        assert!(m.is_empty());
        assert!(!m.pop(|_, _, _| {}));
        // A record larger than the whole mailbox never fits.
        assert!(!tx.push(PortId(0), PortId(0), 8192, |_| {}));
    }

    #[test]
    fn two_threads_see_every_frame_once_in_order() {
        let (mut p, mut m) = mailbox(8192);
        let n = 20_000usize;
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                let len = 1 + i % 1500;
                let f = frame(i, len);
                if p.push(PortId(i as u16), PortId(3), len, |b| b.copy_from_slice(&f)) {
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut got = 0;
        while got < n {
            let ok = m.pop(|i, _, b| {
                assert_eq!(i, PortId(got as u16));
                assert_eq!(b, frame(got, 1 + got % 1500).as_slice());
            });
            if ok {
                got += 1;
            } else {
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert!(m.is_empty());
    }
}
