//! Our packed driver ring against vnetd's packed device ring (`vring::PackedQueue`), over
//! the same shared memory: every chain the driver posts is popped by the device with the
//! same buffers and id, every used descriptor comes back to the driver with its token and
//! length, in order, through many wraps of small rings (sizes need not be powers of two),
//! with chains given back (`unpop`) and popped again, direct and indirect; and neither
//! side loses a notification it asked for.

use std::fs::OpenOptions;
use std::sync::Arc;

use proptest::prelude::*;
use vring::{Chain, PackedQueue, QueueConfig};

use super::*;

/// The driver's memory as the device maps it (a second mapping of the same memfd).
fn device_mem(mem: &GuestMemory) -> Arc<vring::GuestMemory> {
    let specs = mem
        .region_infos()
        .into_iter()
        .map(|r| vring::RegionSpec {
            gpa: r.guest_phys_addr,
            size: r.memory_size,
            uaddr: r.userspace_addr,
            mmap_offset: r.mmap_offset,
            // The same memfd, opened again (as a backend receives it over the socket).
            file: OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/self/fd/{}", r.mmap_handle))
                .unwrap(),
        })
        .collect();
    Arc::new(vring::GuestMemory::map(specs).unwrap())
}

struct Pair {
    mem: GuestMemory,
    drv: PackedRing,
    dev: PackedQueue,
}

fn pair(size: u16, event_idx: bool, indirect: bool) -> Pair {
    let mut mem = GuestMemory::new(0, 4 << 20, 1).unwrap();
    let drv = PackedRing::new(&mut mem, 1, size, event_idx).unwrap();
    let a = drv.addrs();
    let cfg = QueueConfig {
        size,
        desc_uaddr: mem.host_addr(a.desc).unwrap(),
        avail_uaddr: mem.host_addr(a.avail).unwrap(),
        used_uaddr: mem.host_addr(a.used).unwrap(),
        next_avail: INITIAL_BASE,
        next_used: None,
        event_idx,
        indirect,
        packed: true,
        device_reads: false,
        in_order: false,
    };
    let dev = PackedQueue::new(device_mem(&mem), &cfg).unwrap();
    Pair { mem, drv, dev }
}

/// One step of the exchange.
#[derive(Debug, Clone)]
enum Op {
    /// Post a chain of these `(len, write)` buffers (indirect when asked and possible).
    Post(Vec<(u32, bool)>, bool),
    Publish,
    /// Device pops up to n chains, gives back the last `back` of them, uses the rest;
    /// with `bufs`, each lone writable buffer `fill_bufs` takes is filled that way (and
    /// cannot be given back).
    Serve(u8, u8, bool),
    /// Driver consumes what is used.
    Reap,
    /// Driver asks for calls; device for kicks.
    Arm,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::collection::vec((1u32..3000, any::<bool>()), 1..5), any::<bool>())
            .prop_map(|(s, i)| Op::Post(s, i)),
        2 => Just(Op::Publish),
        // One writable buffer: an rx buffer, which `fill_bufs` takes.
        2 => (1u32..3000).prop_map(|l| Op::Post(vec![(l, true)], false)),
        3 => (1u8..8, 0u8..3, any::<bool>()).prop_map(|(n, b, bufs)| Op::Serve(n, b, bufs)),
        2 => Just(Op::Reap),
        1 => Just(Op::Arm),
    ]
}

/// What the driver posted, by token.
#[derive(Debug, Clone)]
struct Posted {
    segs: Vec<Seg>,
    /// Through an indirect table.
    indirect: bool,
    published: bool,
}

impl Posted {
    /// One writable buffer of at least `len` bytes in the ring itself: what `fill_bufs`
    /// takes for a frame of `len` bytes.
    fn lone(&self, len: u32) -> bool {
        !self.indirect && self.segs.len() == 1 && self.segs[0].write && self.segs[0].len >= len
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn driver_and_device_agree(
        size in 2u16..12,
        event_idx in any::<bool>(),
        indirect in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut p = pair(size, event_idx, indirect);
        let (_s, srcs, _) = sources();
        let buf_base = p.mem.alloc(64 << 10, 4096).unwrap();
        let tables = p.mem.alloc(64 * 16 * 8, 16).unwrap();
        let mut posted: Vec<Posted> = Vec::new();
        // Tokens in the order the device must see them, and in the order used.
        let mut to_pop: std::collections::VecDeque<u32> = Default::default();
        let mut to_reap: std::collections::VecDeque<(u32, u32)> = Default::default();
        let mut chains: Vec<Chain> = (0..8).map(|_| Chain::new()).collect();
        let mut kicks_wanted = false;
        let mut calls_wanted = false;
        for op in ops {
            match op {
                Op::Post(lens, ind) => {
                    let token = u32::try_from(posted.len()).unwrap();
                    // Device-readable buffers first.
                    let mut lens = lens;
                    lens.sort_by_key(|&(_, w)| w);
                    let segs: Vec<Seg> = lens
                        .iter()
                        .enumerate()
                        .map(|(i, &(len, write))| Seg {
                            gpa: buf_base + 4096 * ((u64::from(token) * 5 + i as u64) % 16),
                            len,
                            write,
                        })
                        .collect();
                    // A chain is never longer than the queue (§2.8.8), indirect or not.
                    let ind = ind && indirect && segs.len() <= usize::from(size);
                    let r = if ind {
                        let t = tables + 16 * 8 * (u64::from(token) % 64);
                        p.drv.post_indirect(&mut p.mem, t, &segs, token).unwrap()
                    } else {
                        p.drv.post(&mut p.mem, &segs, token).unwrap()
                    };
                    if r.is_some() {
                        posted.push(Posted { segs, indirect: ind, published: false });
                    }
                }
                Op::Publish => {
                    let kick = p.drv.publish(&p.mem).unwrap();
                    let fresh: Vec<u32> = posted
                        .iter_mut()
                        .enumerate()
                        .filter(|(_, x)| !x.published)
                        .map(|(t, x)| {
                            x.published = true;
                            u32::try_from(t).unwrap()
                        })
                        .collect();
                    if kicks_wanted && !fresh.is_empty() {
                        // The device asked for kicks: new chains must bring one.
                        prop_assert!(kick, "lost kick");
                        kicks_wanted = false;
                    }
                    to_pop.extend(fresh);
                }
                Op::Serve(n, back, bufs) => {
                    // Each pop: a chain (its index in `chains`), or a lone buffer that
                    // `fill_bufs` filled with its head and lead (2 bytes) and used at
                    // once, ahead of the chains popped before it.
                    let mut got: Vec<Option<usize>> = Vec::new();
                    let mut next_chain = 0;
                    // Pops since the last fill: all that `unpop` can give back.
                    let mut since_fill = 0;
                    let frame = Frames(vec![0]);
                    while got.len() < usize::from(n) {
                        if bufs && p.dev.fill_bufs(&srcs[..1], 0, &frame) == 1 {
                            let token = to_pop[got.len()];
                            let want = &posted[token as usize];
                            prop_assert!(want.lone(2), "not a lone buffer: {:?}", want);
                            to_reap.push_back((token, 2));
                            got.push(None);
                            since_fill = 0;
                            continue;
                        }
                        if let Some(&token) = to_pop.get(got.len()).filter(|_| bufs) {
                            let want = &posted[token as usize];
                            prop_assert!(!want.lone(2), "a lone buffer refused: {:?}", want);
                        }
                        if p.dev.pop(&mut chains[next_chain]).unwrap() {
                            got.push(Some(next_chain));
                            next_chain += 1;
                            since_fill += 1;
                        } else {
                            break;
                        }
                    }
                    prop_assert_eq!(got.len(), usize::from(n).min(to_pop.len()));
                    let back = usize::from(back).min(got.len());
                    p.dev.unpop(u16::try_from(back).unwrap());
                    // Nothing from before a fill comes back.
                    let back = back.min(since_fill);
                    got.truncate(got.len() - back);
                    let served = got.len();
                    for g in got {
                        let token = to_pop.pop_front().unwrap();
                        let Some(i) = g else {
                            continue;
                        };
                        let want = &posted[token as usize].segs;
                        let c = &chains[i];
                        let rlen: u32 = want.iter().filter(|s| !s.write).map(|s| s.len).sum();
                        let wlen: u32 = want.iter().filter(|s| s.write).map(|s| s.len).sum();
                        prop_assert_eq!(c.readable_len(), rlen);
                        prop_assert_eq!(c.writable_len(), wlen);
                        // The device reads what the driver's buffers hold.
                        let mut b = vec![0u8; rlen as usize];
                        prop_assert_eq!(c.read_at(0, &mut b), b.len());
                        let mut w = vec![0u8; rlen as usize];
                        let mut at = 0;
                        for s in want.iter().filter(|s| !s.write) {
                            p.mem.read(s.gpa, &mut w[at..at + s.len as usize]).unwrap();
                            at += s.len as usize;
                        }
                        prop_assert_eq!(b, w);
                        let len = wlen.min(17 * token + 1);
                        p.dev.push_used(c, len);
                        to_reap.push_back((token, len));
                    }
                    let call = p.dev.flush_used();
                    if calls_wanted && served > 0 {
                        prop_assert!(call, "lost call");
                        calls_wanted = false;
                    }
                }
                Op::Reap => {
                    let n = p.drv.pending_used(&p.mem, true).unwrap();
                    prop_assert_eq!(usize::from(n), to_reap.len());
                    for _ in 0..n {
                        let u = p.drv.take_used(&p.mem).unwrap();
                        let (token, len) = to_reap.pop_front().unwrap();
                        prop_assert_eq!(u.token, Some(token));
                        prop_assert_eq!(u.len, len);
                    }
                }
                Op::Arm => {
                    // Both ask to be told, as a sleeping side does; with everything seen.
                    let n = p.drv.pending_used(&p.mem, true).unwrap();
                    for _ in 0..n {
                        let u = p.drv.take_used(&p.mem).unwrap();
                        let (token, _) = to_reap.pop_front().unwrap();
                        prop_assert_eq!(u.token, Some(token));
                    }
                    prop_assert!(!p.drv.enable_calls(&p.mem).unwrap());
                    calls_wanted = true;
                    let ready = p.dev.enable_notify().unwrap();
                    prop_assert_eq!(ready > 0, !to_pop.is_empty());
                    kicks_wanted = ready == 0;
                }
            }
        }
    }
}

#[test]
fn base_round_trip_after_wraps() {
    // A ring of 3 (not a power of two) served through several laps keeps the device's
    // avail and used positions in step, as GET_VRING_BASE reports them.
    let mut p = pair(3, false, false);
    let buf = p.mem.alloc(4096, 64).unwrap();
    let mut c = Chain::new();
    for i in 0..10u32 {
        let segs = [Seg {
            gpa: buf,
            len: 64,
            write: false,
        }];
        p.drv.post(&mut p.mem, &segs, i).unwrap().unwrap();
        p.drv.publish(&p.mem).unwrap();
        assert!(p.dev.pop(&mut c).unwrap());
        p.dev.push_used(&c, 0);
        p.dev.flush_used();
        assert_eq!(p.drv.take_used(&p.mem).unwrap().token, Some(i));
    }
    // 10 entries: position 1 on the fourth lap (wrap counter 1 -> 0 -> 1 -> 0).
    let half = 1u32;
    assert_eq!(p.dev.base(), half | half << 16);
}

/// A run of frames for `fill_bufs`: a 1-byte head, a 1-byte lead (the frame's number)
/// and source lengths.
struct Frames(Vec<usize>);

/// The leads of [`Frames`]: frame k's is k.
const LEADS: [[u8; 1]; 4] = [[0], [1], [2], [3]];

impl vring::FillFrames<1, 1> for Frames {
    fn frame(&self, k: usize) -> Option<vring::FillFrame<'_, 1, 1>> {
        let len = *self.0.get(k)?;
        Some(vring::FillFrame {
            head: &[0xf0],
            lead: LEADS.get(k)?,
            len,
        })
    }
}

/// Sources for `fill_bufs` runs: two chains of one readable buffer of 200 bytes (0, 1,
/// ..., 199) on a ring of their own (returned too, with the bytes).
fn sources() -> (Pair, [Chain; 2], Vec<u8>) {
    let mut s = pair(4, false, false);
    let sbuf = s.mem.alloc(4096, 64).unwrap();
    let bytes: Vec<u8> = (0..200u8).collect();
    s.mem.write(sbuf, &bytes).unwrap();
    let mut srcs = [Chain::new(), Chain::new()];
    for (t, c) in (0u32..).zip(srcs.iter_mut()) {
        let seg = Seg {
            gpa: sbuf,
            len: 200,
            write: false,
        };
        s.drv.post(&mut s.mem, &[seg], t).unwrap().unwrap();
        s.drv.publish(&s.mem).unwrap();
        assert!(s.dev.pop(c).unwrap());
    }
    (s, srcs, bytes)
}

/// `fill_bufs` on a packed ring of 3, through several laps: each run fills the lone
/// writable buffers in order (their prefix, then the source's bytes) and the driver takes
/// them back with their tokens and lengths; a run stops before a chain of two (left for
/// `pop`), a buffer the frame does not fit, and the end of what is available; `unpop`
/// never gives back what a run used.
#[test]
fn fill_bufs_fills_runs_of_lone_buffers_across_wraps() {
    let (_s, srcs, bytes) = sources();
    let mut p = pair(3, false, false);
    let rx = p.mem.alloc(4 * 4096, 64).unwrap();
    let buf = |k: u64| rx + 256 * (k % 16);
    let lone = |k: u64, len: u32| Seg {
        gpa: buf(k),
        len,
        write: true,
    };
    let mut token = 0u32;
    for lap in 0..4usize {
        // Two lone buffers: both filled by one run.
        for _ in 0..2 {
            let seg = lone(u64::from(token), 64);
            p.drv.post(&mut p.mem, &[seg], token).unwrap().unwrap();
            token += 1;
        }
        p.drv.publish(&p.mem).unwrap();
        let lens = Frames(vec![40 + lap, 50]);
        assert_eq!(p.dev.fill_bufs(&srcs, 10, &lens), 2, "lap {lap}");
        p.dev.unpop(1);
        assert_eq!(p.dev.fill_bufs(&srcs, 10, &lens), 0, "nothing given back");
        p.dev.flush_used();
        for (k, len) in [(0u8, 40 + lap), (1, 50usize)] {
            let u = p.drv.take_used(&p.mem).unwrap();
            let t = token - 2 + u32::from(k);
            assert_eq!((u.token, u.len), (Some(t), 2 + u32::try_from(len).unwrap()));
            let mut got = vec![0u8; 2 + len];
            p.mem.read(buf(u64::from(t)), &mut got).unwrap();
            assert_eq!(got[..2], [0xf0, k]);
            assert_eq!(got[2..], bytes[10..10 + len]);
        }
    }
    // A lone buffer, then a chain of two: the run stops before the chain.
    p.drv
        .post(&mut p.mem, &[lone(0, 64)], 100)
        .unwrap()
        .unwrap();
    let chain = [lone(1, 12), lone(2, 64)];
    p.drv.post(&mut p.mem, &chain, 101).unwrap().unwrap();
    p.drv.publish(&p.mem).unwrap();
    assert_eq!(p.dev.fill_bufs(&srcs, 0, &Frames(vec![62, 1])), 1);
    assert_eq!(
        p.dev.fill_bufs(&srcs, 0, &Frames(vec![1])),
        0,
        "left for pop"
    );
    let mut c = Chain::new();
    assert!(p.dev.pop(&mut c).unwrap());
    assert_eq!(c.writable_len(), 76);
    p.dev.push_used(&c, 3);
    p.dev.flush_used();
    for want in [(100, 64), (101, 3)] {
        let u = p.drv.take_used(&p.mem).unwrap();
        assert_eq!((u.token, u.len), (Some(want.0), want.1));
    }
    // A buffer of 16 bytes takes a frame of 14 after its prefix, not one of 15.
    p.drv
        .post(&mut p.mem, &[lone(3, 16)], 102)
        .unwrap()
        .unwrap();
    p.drv.publish(&p.mem).unwrap();
    assert_eq!(
        p.dev.fill_bufs(&srcs, 0, &Frames(vec![15])),
        0,
        "does not fit"
    );
    assert_eq!(p.dev.fill_bufs(&srcs, 0, &Frames(vec![14, 1])), 1);
    assert_eq!(
        p.dev.fill_bufs(&srcs, 0, &Frames(vec![1])),
        0,
        "nothing available"
    );
    p.dev.flush_used();
    let u = p.drv.take_used(&p.mem).unwrap();
    assert_eq!((u.token, u.len), (Some(102), 16));
}
