//! Frames of a tx burst to TAP queues, gathered and written when the burst ends: one
//! io_uring submission per queue instead of one `writev` per frame (see `crate::uring`).
//!
//! Only frames written straight from the burst's own chains wait (their bytes stay the
//! guest's until the burst's used pass, which comes after the flush); a frame from a
//! buffer of ours (completed, segmented, read from another TAP) is written at once, after
//! whatever its queue has gathered, so each queue keeps the order of its frames.

use switch::DropReason;
use vring::Chain;

use super::{port_mut, Ctx, Followup};
use crate::frame::HEAD_LEN;
use crate::port::tap::{TapQueue, TapWrite};
use crate::port::Port;
use crate::types::PortId;

/// The index of `c` in `burst`, if it is one of the burst's chains.
pub(super) fn burst_index(burst: &[Chain], c: &Chain) -> Option<u16> {
    let size = std::mem::size_of::<Chain>();
    let off = (std::ptr::from_ref(c) as usize).checked_sub(burst.as_ptr() as usize)?;
    let i = off / size;
    let same = off % size == 0 && burst.get(i).is_some_and(|b| std::ptr::eq(b, c));
    same.then(|| u16::try_from(i).ok()).flatten()
}

/// What a delivery needs to let a TAP frame wait for the end of the burst.
pub(super) struct TapOut<'s> {
    /// The running burst's chains (empty outside a tx burst).
    pub burst: &'s [Chain],
    /// Queues with frames waiting, to flush at the end of the burst.
    pub dirty: &'s mut Vec<(PortId, u16)>,
    /// iovecs of a batch.
    pub arena: &'s mut [libc::iovec],
}

impl TapOut<'_> {
    /// Lets `head` followed by `len` bytes of `body` from `off` wait on queue `q`
    /// (queue `qi` of `port`: `at`) for the end of the burst; false if it cannot (then the
    /// caller writes it itself, after calling [`TapOut::flush_before`]).
    pub fn defer(
        &mut self,
        at: (PortId, usize),
        q: &mut TapQueue,
        head: &[u8],
        body: &Chain,
        off: usize,
        len: usize,
    ) -> bool {
        let (port, qi) = at;
        let Some(frame) = burst_index(self.burst, body) else {
            return false;
        };
        let (Ok(head_len), Ok(off), Ok(len), Ok(qi)) = (
            u8::try_from(head.len()),
            u32::try_from(off),
            u32::try_from(len),
            u16::try_from(qi),
        ) else {
            return false;
        };
        if !q.can_defer() || head.len() > HEAD_LEN {
            return false;
        }
        if q.pending.is_empty() {
            if self.dirty.len() == self.dirty.capacity() {
                return false;
            }
            self.dirty.push((port, qi));
        }
        let mut h = [0u8; HEAD_LEN];
        h[..head.len()].copy_from_slice(head);
        q.pending.push(TapWrite {
            frame,
            head_len,
            head: h,
            off,
            len,
        });
        true
    }

    /// Writes what queue `qi` of `dst` gathered so far, before a frame that cannot wait.
    pub fn flush_before(
        &mut self,
        dst: &mut Port,
        port: PortId,
        qi: usize,
        iov: &mut [libc::iovec],
        followups: &mut Vec<Followup>,
    ) {
        flush_queue(dst, port, qi, self.burst, self.arena, iov, followups);
    }
}

/// Writes the frames queue `qi` of `dst` gathered and counts what became of them.
fn flush_queue(
    dst: &mut Port,
    port: PortId,
    qi: usize,
    burst: &[Chain],
    arena: &mut [libc::iovec],
    iov: &mut [libc::iovec],
    followups: &mut Vec<Followup>,
) {
    let Some(tap) = dst.tap_mut() else {
        return;
    };
    let Some(q) = tap.queues.get_mut(qi) else {
        return;
    };
    if q.pending.is_empty() {
        return;
    }
    let s = q.flush_pending(burst, arena, iov);
    if s.queued && !q.out_armed {
        q.out_armed = true;
        followups.push(Followup::TapWritable { port, queue: qi });
    }
    if s.gone && tap.mark_gone() {
        followups.push(Followup::TapGone(port));
    }
    dst.counters.count_tx_many(s.frames, s.bytes);
    dst.counters.count_drops(DropReason::TxError, s.failed);
    dst.counters.count_drops(DropReason::PortDown, s.down);
}

/// Writes everything the burst gathered for TAP queues (before its chains go back).
pub(crate) fn flush_all(cx: &mut Ctx<'_>) {
    let Ctx {
        ports,
        scratch,
        followups,
        burst,
        ..
    } = cx;
    while let Some((port, qi)) = scratch.tap_dirty.pop() {
        if let Some(dst) = port_mut(ports, port) {
            let (arena, iov) = (&mut scratch.tap_iov, &mut scratch.iov);
            flush_queue(dst, port, usize::from(qi), burst, arena, iov, followups);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_index_finds_only_the_bursts_own_chains() {
        let burst: Vec<Chain> = (0..4).map(|_| Chain::new()).collect();
        for (i, c) in burst.iter().enumerate() {
            assert_eq!(burst_index(&burst, c), u16::try_from(i).ok());
        }
        let other = Chain::new();
        assert_eq!(burst_index(&burst, &other), None);
        assert_eq!(burst_index(&[], &burst[0]), None);
        assert_eq!(burst_index(&burst[1..3], &burst[3]), None);
        assert_eq!(burst_index(&burst[1..3], &burst[0]), None);
    }
}
