//! Hostile split and packed rings for the `vring` crate.

use std::sync::Arc;

use vring::{
    Chain, DeviceRing, FillFrame, FillFrames, GuestMemory, PackedQueue, QueueConfig, RegionSpec,
    SplitQueue,
};

/// A run of frames for `fill_bufs`: a 12-byte head, 4 bytes of lead and these source
/// lengths.
struct Lens<'a>(&'a [usize]);

impl FillFrames<12, 4> for Lens<'_> {
    fn frame(&self, k: usize) -> Option<FillFrame<'_, 12, 4>> {
        self.0.get(k).map(|&len| FillFrame {
            head: &[0x55; 12],
            lead: &[0xaa; 4],
            len,
        })
    }
}

/// Hostile-ring fuzz harness: a random descriptor table, avail ring and index over a small
/// memory; popping must never panic and every buffer it yields lies in guest memory.
pub fn fuzz_ring(data: &[u8]) {
    let m = fuzz_mem();
    let size = 8u16;
    let (desc, avail, used) = (0u64, 0x100u64, 0x200u64);
    let n = data.len().min(16 * 8 + 2 + 16 + 2);
    assert!(m.write(desc, &data[..n.min(128)]));
    if n > 128 {
        assert!(m.write(avail + 2, &data[128..n]));
    }
    let c = QueueConfig {
        size,
        desc_uaddr: desc,
        avail_uaddr: avail,
        used_uaddr: used,
        event_idx: data.first().is_some_and(|b| b & 1 == 1),
        indirect: data.first().is_some_and(|b| b & 2 == 2),
        ..QueueConfig::default()
    };
    let mut q = SplitQueue::new(m.clone(), &c).expect("fixed layout is valid");
    let mut ch = Chain::new();
    let mut prev = Chain::new();
    for _ in 0..3 {
        if q.refresh_avail().is_err() {
            return;
        }
        let mut lone = 0u32;
        loop {
            lone += 1;
            // Every other time, lone rx buffers through `fill_bufs` (a run of frames from
            // the last chain popped): written through the ring, never past it or the
            // source.
            if lone % 2 == 0 {
                let n = (prev.readable_len() as usize).min(1 << 12);
                let lens = [n.saturating_sub(12), n / 2];
                let srcs = std::slice::from_ref(&prev);
                if DeviceRing::fill_bufs(&mut q, srcs, 0, &Lens(&lens)) > 0 {
                    continue;
                }
            }
            let Ok(true) = q.pop(&mut ch) else { break };
            let mut buf = vec![0u8; ch.readable_len().min(1 << 16) as usize];
            assert_eq!(ch.read_at(0, &mut buf), buf.len());
            // The fixed-size fast paths agree with the general copies where they apply.
            if let Some(h) = ch.read_array::<30>(0) {
                assert_eq!(&h[..], &buf[..30]);
            }
            let _ = ch.write_array(0, &[0x55; 12]);
            ch.write_at(0, &[0xaa; 64]);
            // Guest to guest, possibly overlapping: never out of the checked buffers.
            let n = (prev.readable_len().min(ch.writable_len()) as usize).min(1 << 12);
            assert!(prev.copy_to(0, &ch, 0, n) <= n);
            q.push_used(&ch, 1);
            std::mem::swap(&mut ch, &mut prev);
        }
        q.flush_used();
        let _ = q.enable_notify();
    }
}

/// Hostile packed-ring fuzz harness: a random descriptor ring (flags, ids, chains,
/// indirect tables into a random table area), random driver event suppression and a
/// random resume position; popping, giving back, using and flushing must never panic and
/// every buffer a chain yields lies in guest memory.
pub fn fuzz_packed(data: &[u8]) {
    let m = fuzz_mem();
    // Byte 0: size (1..=8) and features; byte 1: resume position and wrap counter.
    let b0 = data.first().copied().unwrap_or(0);
    let b1 = data.get(1).copied().unwrap_or(0x80);
    let size = u16::from(b0 & 7) + 1;
    let (desc, driver, device, tables) = (0u64, 0x100u64, 0x110u64, 0x400u64);
    let rest = data.get(2..).unwrap_or(&[]);
    // The ring, the driver area, then indirect tables.
    let ring_len = 16 * usize::from(size);
    let n = rest.len().min(ring_len);
    assert!(m.write(desc, &rest[..n]));
    if let Some(ev) = rest.get(ring_len..ring_len + 4) {
        assert!(m.write(driver, ev));
    }
    if let Some(t) = rest.get(ring_len + 4..) {
        assert!(m.write(tables, &t[..t.len().min(0x400)]));
    }
    let c = QueueConfig {
        size,
        desc_uaddr: desc,
        avail_uaddr: driver,
        used_uaddr: device,
        event_idx: b0 & 8 != 0,
        indirect: b0 & 16 != 0,
        packed: true,
        device_reads: b0 & 32 != 0,
        in_order: b0 & 64 != 0,
        next_avail: u16::from(b1 & 7) | (u16::from(b1 & 0x80) << 8),
        next_used: None,
    };
    let Ok(mut q) = PackedQueue::new(m.clone(), &c) else {
        // A position past the ring is refused, nothing else is.
        assert!(u16::from(b1 & 7) >= size);
        return;
    };
    let mut chains: Vec<Chain> = (0..4).map(|_| Chain::new()).collect();
    for round in 0..4 {
        // Two chains first, used at once (one given back on odd rounds: it comes again);
        // on round 2, runs of frames into lone buffers instead.
        for k in 0..2 {
            if round == 2 {
                // A run of frames into lone buffers; one that does not fit stops it.
                let lens = [k * 40, 40, 8];
                let _ = DeviceRing::fill_bufs(&mut q, &chains[..3], 0, &Lens(&lens));
                continue;
            }
            let Ok(true) = q.pop(&mut chains[3]) else {
                break;
            };
            if round % 2 == 1 && k == 1 {
                q.unpop(1);
                break;
            }
            q.push_used(&chains[3], 12);
        }
        let mut got = 0;
        while got < chains.len() {
            match q.pop(&mut chains[got]) {
                Ok(true) => {
                    let ch = &chains[got];
                    let mut buf = vec![0u8; ch.readable_len().min(1 << 16) as usize];
                    assert_eq!(ch.read_at(0, &mut buf), buf.len());
                    ch.write_at(0, &[0xaa; 64]);
                    got += 1;
                }
                Ok(false) | Err(_) => break,
            }
        }
        // Give some back on odd rounds: they come again.
        let back = if round % 2 == 1 { got.min(2) } else { 0 };
        q.unpop(u16::try_from(back).unwrap_or(0));
        for ch in &chains[..got - back] {
            q.push_used(ch, 7);
        }
        let _ = q.flush_used();
        let _ = q.enable_notify();
        q.disable_notify();
    }
}

fn fuzz_mem() -> Arc<GuestMemory> {
    Arc::new(
        GuestMemory::map(vec![RegionSpec {
            gpa: 0,
            size: 1 << 16,
            uaddr: 0,
            mmap_offset: 0,
            file: vring::mem::memfd(c"vring-fuzz", 1 << 16).unwrap(),
        }])
        .unwrap(),
    )
}
