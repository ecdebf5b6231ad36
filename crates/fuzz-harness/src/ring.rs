//! Hostile split rings for the `vring` crate.

use std::sync::Arc;

use vring::{Chain, GuestMemory, QueueConfig, RegionSpec, SplitQueue};

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
        while let Ok(true) = q.pop(&mut ch) {
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
