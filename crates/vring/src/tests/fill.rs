//! `DeviceRing::fill_bufs` on a split ring: runs of frames into lone rx buffers.

use super::*;

/// A run of frames: each one's head and source length, in order (no lead bytes).
pub(super) struct Frames<const N: usize>(pub Vec<([u8; N], usize)>);

impl<const N: usize> FillFrames<N, 0> for Frames<N> {
    fn frame(&self, k: usize) -> Option<FillFrame<'_, N, 0>> {
        self.0.get(k).map(|(head, len)| FillFrame {
            head,
            lead: &[],
            len: *len,
        })
    }
}

/// Frames of a 2-byte head and a 3-byte lead: both written, then the source's bytes.
struct Parts(Vec<([u8; 2], [u8; 3], usize)>);

impl FillFrames<2, 3> for Parts {
    fn frame(&self, k: usize) -> Option<FillFrame<'_, 2, 3>> {
        self.0.get(k).map(|(head, lead, len)| FillFrame {
            head,
            lead,
            len: *len,
        })
    }
}

/// Reads `n` bytes of the driver's memory at `addr`.
fn read(m: &TestMem, addr: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    m.theirs.read_slice(&mut b, GuestAddress(addr)).unwrap();
    b
}

/// A run fills lone writable buffers in order, each with its prefix and its frame's
/// bytes, and uses them with the length written; it stops, nothing popped for that frame,
/// at a frame that does not fit, a chain of two (left for `pop`), a frame the caller
/// refuses, and the end of what is available; what it used the driver sees in order.
#[test]
fn fill_bufs_fills_runs_of_lone_buffers() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    let rx = |k: u64| BUF + 0x1000 * k;
    mq.add_desc_chains(
        &[
            // 0, 1: the sources, 100 readable bytes each.
            d(BUF, 100, 0, 0),
            d(BUF + 0x100, 100, 0, 0),
            // 2: a lone writable buffer of 60 bytes, 3 and 4 of 100.
            d(rx(2), 60, DESC_F_WRITE, 0),
            d(rx(3), 100, DESC_F_WRITE, 0),
            d(rx(4), 100, DESC_F_WRITE, 0),
            // 5-6: a chain of two writable buffers.
            d(rx(5), 12, DESC_F_WRITE | DESC_F_NEXT, 6),
            d(rx(6), 100, DESC_F_WRITE, 0),
            // 7: a lone writable buffer of 100.
            d(rx(7), 100, DESC_F_WRITE, 0),
        ],
        0,
    )
    .unwrap();
    let src: Vec<u8> = (0..100u8).collect();
    m.theirs.write_slice(&src, GuestAddress(BUF)).unwrap();
    m.theirs
        .write_slice(&[0x77; 100], GuestAddress(BUF + 0x100))
        .unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    assert_eq!(q.refresh_avail().unwrap(), 7);
    let mut srcs = [Chain::new(), Chain::new()];
    assert!(q.pop(&mut srcs[0]).unwrap());
    assert!(q.pop(&mut srcs[1]).unwrap());
    let run = |lens: &[usize]| {
        let f = lens.iter().enumerate().map(|(k, &l)| ([k as u8 + 1; 4], l));
        Frames(f.collect())
    };
    // Frame 0: 4 + 57 bytes do not fit in 60: nothing popped, nothing written.
    assert_eq!(q.fill_bufs(&srcs, 10, &run(&[57, 10])), 0);
    assert_eq!(q.next_avail(), 2);
    assert_eq!(read(&m, rx(2), 4), [0; 4], "nothing written");
    // Past its source (10 + 95 > 100): the same.
    assert_eq!(q.fill_bufs(&srcs, 10, &run(&[95])), 0);
    assert_eq!(q.fill_bufs(&srcs, 10, &Frames::<4>(vec![])), 0, "refused");
    // 4 + 56 fill the 60 bytes; the second frame goes into buffer 3; a run of three stops
    // before the chain of two.
    let srcs3 = [Chain::new(), Chain::new(), Chain::new()];
    assert_eq!(q.fill_bufs(&srcs3, 0, &run(&[0, 0, 0])), 0, "empty sources");
    assert_eq!(q.fill_bufs(&srcs, 10, &run(&[56, 40])), 2);
    assert_eq!(q.next_avail(), 4);
    assert_eq!(read(&m, rx(2), 4), [1; 4]);
    assert_eq!(read(&m, rx(2) + 4, 56), src[10..66]);
    assert_eq!(read(&m, rx(3), 4), [2; 4]);
    assert_eq!(read(&m, rx(3) + 4, 40), [0x77; 40]);
    assert_eq!(
        q.fill_bufs(&srcs, 0, &run(&[1, 2])),
        1,
        "buffer 4, then the chain"
    );
    assert_eq!(q.next_avail(), 5);
    assert_eq!(
        q.fill_bufs(&srcs, 0, &run(&[1])),
        0,
        "a chain is left for pop"
    );
    let mut c = Chain::new();
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.writable_len(), 112);
    q.push_used(&c, 0);
    assert_eq!(
        q.fill_bufs(&srcs, 0, &run(&[96, 1])),
        1,
        "then nothing more"
    );
    assert_eq!(q.pending(), 0);
    assert_eq!(q.fill_bufs(&srcs, 0, &run(&[1])), 0);
    q.flush_used();
    let used = used_of(&mq);
    let idx: u16 = m.theirs.read_obj(used.unchecked_add(2)).unwrap();
    assert_eq!(idx, 5);
    let elem = |i: u64| -> (u32, u32) {
        let id = m.theirs.read_obj(used.unchecked_add(4 + 8 * i)).unwrap();
        let len = m.theirs.read_obj(used.unchecked_add(8 + 8 * i)).unwrap();
        (id, len)
    };
    let want = [(2, 60), (3, 44), (4, 5), (5, 0), (7, 100)];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(elem(i as u64), *w, "used element {i}");
    }
}

/// A run takes at most [`FILL_RUN`] frames; the next call goes on where it stopped.
#[test]
fn fill_bufs_takes_at_most_fill_run_frames_a_call() {
    let m = test_mem();
    let size = 128u16;
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), size);
    // 0: the source; 1..: lone writable buffers of 64 bytes.
    let mut descs = vec![d(BUF, 64, 0, 0)];
    descs.extend((1..u64::from(size)).map(|k| d(BUF + 0x100 * k, 64, DESC_F_WRITE, 0)));
    mq.add_desc_chains(&descs, 0).unwrap();
    m.theirs
        .write_slice(&[0x3c; 64], GuestAddress(BUF))
        .unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, size)).unwrap();
    assert_eq!(q.refresh_avail().unwrap(), size);
    let mut src = Chain::new();
    assert!(q.pop(&mut src).unwrap());
    // The same readable buffer as the source of every frame.
    let srcs: Vec<Chain> = (1..size)
        .map(|_| {
            let mut c = Chain::new();
            c.bind(q.mem());
            c.set_single(0, src.segs[0], false);
            c
        })
        .collect();
    let frames = Frames(vec![([9u8; 4], 8); srcs.len()]);
    assert_eq!(q.fill_bufs(&srcs, 0, &frames), FILL_RUN);
    let rest = usize::from(size) - 1 - FILL_RUN;
    assert_eq!(q.fill_bufs(&srcs[FILL_RUN..], 0, &frames), rest);
    assert_eq!(q.shadow_len(), usize::from(size) - 1);
    assert_eq!(
        read(&m, BUF + 0x100 * u64::from(size - 1), 12),
        [vec![9u8; 4], vec![0x3c; 8]].concat()
    );
}

/// A frame's head and lead go first, in that order, then its source's bytes; the length
/// used counts all three.
#[test]
fn fill_bufs_writes_head_lead_and_source() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 4);
    mq.add_desc_chains(&[d(BUF, 32, 0, 0), d(BUF + 0x1000, 16, DESC_F_WRITE, 0)], 0)
        .unwrap();
    m.theirs
        .write_slice(&[0x42; 32], GuestAddress(BUF))
        .unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 4)).unwrap();
    assert_eq!(q.refresh_avail().unwrap(), 2);
    let mut src = Chain::new();
    assert!(q.pop(&mut src).unwrap());
    let srcs = std::slice::from_ref(&src);
    assert_eq!(
        q.fill_bufs(srcs, 30, &Parts(vec![([1, 2], [3, 4, 5], 12)])),
        0
    );
    assert_eq!(
        q.fill_bufs(srcs, 30, &Parts(vec![([1, 2], [3, 4, 5], 2)])),
        1
    );
    assert_eq!(read(&m, BUF + 0x1000, 8), [1, 2, 3, 4, 5, 0x42, 0x42, 0]);
    q.flush_used();
    let used = used_of(&mq);
    let len: u32 = m.theirs.read_obj(used.unchecked_add(8)).unwrap();
    assert_eq!(len, 7);
}

/// `push_used_all` records each chain as used, in order, like `push_used` one by one.
#[test]
fn push_used_all_records_each_chain_in_order() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 4);
    let descs: Vec<_> = (0..3u64).map(|k| d(BUF + 0x100 * k, 64, 0, 0)).collect();
    mq.add_desc_chains(&descs, 0).unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 4)).unwrap();
    assert_eq!(q.refresh_avail().unwrap(), 3);
    let mut chains = [Chain::new(), Chain::new(), Chain::new()];
    for c in &mut chains {
        assert!(q.pop(c).unwrap());
    }
    q.push_used_all(&chains[..2], 7);
    q.push_used(&chains[2], 9);
    assert_eq!(q.shadow_len(), 3);
    q.flush_used();
    let used = used_of(&mq);
    for (i, want) in [(0u32, 7u32), (1, 7), (2, 9)].into_iter().enumerate() {
        let at = 8 * i as u64;
        let id: u32 = m.theirs.read_obj(used.unchecked_add(4 + at)).unwrap();
        let len: u32 = m.theirs.read_obj(used.unchecked_add(8 + at)).unwrap();
        assert_eq!((id, len), want, "used element {i}");
    }
}
