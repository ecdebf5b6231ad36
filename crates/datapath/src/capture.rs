//! Packet capture: copies of a port's frames for `vnetctl capture`.
//!
//! A port being captured holds a [`Sink`] on each worker: a mailbox (the lock-free ring
//! workers hand frames over with) of its own, which the capture thread drains. A frame
//! that does not fit (the reader is slow) is not copied, only counted: a capture never
//! slows the switch. A port not being captured costs one branch per burst (tx) or per
//! delivery (rx).
//!
//! A record: direction (1 byte: 0 into the switch, 1 out of it), virtio-net header length
//! (1 byte), 6 bytes of padding, the time (u64 ns since the epoch), the original frame
//! length (u32), then the virtio-net header and the first `snaplen` bytes of the frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::frame::Src;
use crate::mailbox::{mailbox, Receiver, Sender};
use crate::types::PortId;

/// Bytes of a record before the virtio-net header.
pub const RECORD_HEAD: usize = 20;
/// Bytes each worker's capture ring holds.
const RING_BYTES: usize = 4 << 20;

/// Which way a frame went, from the switch's view (as `vnetctl stats`: `in` is what the
/// port sent, `out` what the switch delivered to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the port into the switch.
    In,
    /// From the switch to the port.
    Out,
}

/// A worker's end of a capture.
pub(crate) struct Sink {
    tx: Sender,
    lost: Arc<AtomicU64>,
    /// Frames not copied and not yet added to `lost`.
    unpublished: u64,
    /// After a full ring, this many frames are counted lost without looking at it again:
    /// a stuck reader costs the datapath a decrement per frame.
    skip: u32,
    take_in: bool,
    take_out: bool,
    snaplen: usize,
}

/// Frames counted lost without a look at the ring after it was found full.
const SKIP_AFTER_FULL: u32 = 255;

impl Drop for Sink {
    fn drop(&mut self) {
        self.lost.fetch_add(self.unpublished, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("capture::Sink")
    }
}

impl Sink {
    /// Whether frames going `dir` are captured.
    #[inline]
    pub fn wants(&self, dir: Direction) -> bool {
        match dir {
            Direction::In => self.take_in,
            Direction::Out => self.take_out,
        }
    }

    /// Copies a frame: `hdr` (its virtio-net header), then `parts` in order.
    pub fn push(&mut self, dir: Direction, hdr: &[u8], parts: &[Src<'_>]) {
        if !self.wants(dir) {
            return;
        }
        if self.skip > 0 {
            self.skip -= 1;
            self.unpublished += 1;
            return;
        }
        if self.unpublished > 0 {
            self.lost.fetch_add(self.unpublished, Ordering::Relaxed);
            self.unpublished = 0;
        }
        let total: usize = parts.iter().map(Src::len).sum();
        let kept = total.min(self.snaplen);
        let hl = hdr.len().min(255);
        let len = RECORD_HEAD + hl + kept;
        if !self.tx.has_room(len) {
            // A full ring (a slow or stuck reader): count it, and do not look again for a
            // while.
            self.unpublished += 1;
            self.skip = SKIP_AFTER_FULL;
            return;
        }
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let ok = self.tx.push(PortId(0), PortId(0), len, |b| {
            b[0] = u8::from(dir == Direction::Out);
            b[1] = u8::try_from(hl).unwrap_or(0);
            b[2..8].fill(0);
            b[8..16].copy_from_slice(&ns.to_ne_bytes());
            b[16..20].copy_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_ne_bytes());
            b[RECORD_HEAD..RECORD_HEAD + hl].copy_from_slice(&hdr[..hl]);
            let mut at = RECORD_HEAD + hl;
            for p in parts {
                if at >= b.len() {
                    break;
                }
                at += p.read_at(0, &mut b[at..]);
            }
        });
        if !ok {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One captured frame, as the capture thread reads it.
#[derive(Debug)]
pub struct Captured<'a> {
    /// Which way it went.
    pub dir: Direction,
    /// When (ns since the epoch).
    pub ns: u64,
    /// Its length on the wire (Ethernet frame, no virtio-net header).
    pub len: usize,
    /// Its virtio-net header.
    pub hdr: &'a [u8],
    /// Its first bytes (up to the snap length).
    pub data: &'a [u8],
}

/// The capture thread's end: every worker's ring and the count of frames not copied.
pub struct Capture {
    rx: Vec<Receiver>,
    lost: Arc<AtomicU64>,
    /// The port captured.
    pub port: PortId,
    /// Stops the capture on every worker (set by the datapath's handle), when this goes.
    pub(crate) stop: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("port", &self.port).finish()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl Capture {
    /// Hands every frame waiting (in no particular order across workers) to `f`; returns
    /// how many.
    pub fn drain(&mut self, mut f: impl FnMut(&Captured<'_>)) -> usize {
        let mut n = 0;
        for r in &mut self.rx {
            while r.pop(|_, _, b| {
                if b.len() < RECORD_HEAD {
                    return;
                }
                let hl = usize::from(b[1]);
                let word = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
                let len = u32::from_ne_bytes(b[16..20].try_into().unwrap_or([0; 4]));
                let Some(hdr) = b.get(RECORD_HEAD..RECORD_HEAD + hl) else {
                    return;
                };
                f(&Captured {
                    dir: if b[0] == 1 {
                        Direction::Out
                    } else {
                        Direction::In
                    },
                    ns: word(8),
                    len: len as usize,
                    hdr,
                    data: &b[RECORD_HEAD + hl..],
                });
                n += 1;
            }) {}
        }
        n
    }

    /// Whether no worker captures any more: the port was removed (each worker dropped its
    /// end with the port). Only meaningful once the workers took their ends: every end is
    /// alive from [`crate::Datapath::start_capture`] until a worker drops it.
    pub fn port_gone(&self) -> bool {
        Arc::strong_count(&self.lost) == 1
    }

    /// Frames the workers could not copy because the rings were full (complete once the
    /// capture is stopped: see [`Capture::stop`]).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Stops the capture on every worker and returns the count of frames lost, complete:
    /// the workers add what they still held when they drop their ends (between bursts,
    /// within a few milliseconds; waited for up to `wait`).
    pub fn stop(self, wait: std::time::Duration) -> u64 {
        let lost = self.lost.clone();
        drop(self);
        let deadline = std::time::Instant::now() + wait;
        // Each worker's sink holds a reference until it is dropped.
        while Arc::strong_count(&lost) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        lost.load(Ordering::Relaxed)
    }
}

/// A capture of `port` for `workers` workers: the sinks to hand to them and the reader.
pub(crate) fn capture(
    port: PortId,
    workers: usize,
    take_in: bool,
    take_out: bool,
    snaplen: usize,
) -> (Vec<Sink>, Capture) {
    let lost = Arc::new(AtomicU64::new(0));
    let (mut sinks, mut rx) = (Vec::new(), Vec::new());
    for _ in 0..workers {
        let (tx, r) = mailbox(RING_BYTES);
        sinks.push(Sink {
            tx,
            lost: lost.clone(),
            unpublished: 0,
            skip: 0,
            take_in,
            take_out,
            snaplen,
        });
        rx.push(r);
    }
    (
        sinks,
        Capture {
            rx,
            lost,
            port,
            stop: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_loses_frames_and_counts_every_one() {
        let (mut sinks, mut cap) = capture(PortId(3), 1, true, false, 1000);
        let frame = [0x5au8; 1000];
        let n = 20_000u64;
        for _ in 0..n {
            sinks[0].push(Direction::In, &[0u8; 12], &[Src::Bytes(&frame)]);
            // Out is not asked for: neither copied nor counted.
            sinks[0].push(Direction::Out, &[0u8; 12], &[Src::Bytes(&frame)]);
        }
        let mut got = 0u64;
        let drained = cap.drain(|f| {
            assert_eq!(
                (f.dir, f.len, f.hdr.len(), f.data.len()),
                (Direction::In, 1000, 12, 1000)
            );
            got += 1;
        });
        assert_eq!(drained as u64, got);
        assert!(got > 1000 && got < n, "{got}");
        // The workers' ends publish what they still count when they go.
        drop(sinks);
        assert_eq!(got + cap.lost(), n);
        // Room again after draining: the next frame is copied (after the skip window).
        let (mut sinks, mut cap) = capture(PortId(3), 1, true, true, 64);
        sinks[0].push(Direction::Out, &[], &[Src::Bytes(&frame[..60])]);
        assert_eq!(cap.drain(|f| assert_eq!(f.data.len(), 60)), 1);
    }
}
