//! Ring tests: virtio-queue's mock driver plays the guest, virtio-queue's own device-side
//! `Queue` serves as a differential oracle.
#![allow(clippy::cast_possible_truncation)]

use std::fs::File;
use std::sync::Arc;

use proptest::prelude::*;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

use crate::queue::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use crate::*;

pub(crate) const MEM_SIZE: usize = 0x3100_0000; // mock puts indirect tables at 0x3000_0000
const BUF: u64 = 0x10_0000;

pub(crate) struct TestMem {
    pub ours: Arc<GuestMemory>,
    pub theirs: GuestMemoryMmap,
}

fn memfd(size: usize) -> File {
    crate::mem::memfd(c"vring-test", size as u64).unwrap()
}

/// Guest memory mapped twice: by us and by vm-memory, gpa 0, uaddr = gpa + `uoff`.
pub(crate) fn test_mem_at(uoff: u64) -> TestMem {
    let f = memfd(MEM_SIZE);
    let theirs = GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(f.try_clone().unwrap(), 0)),
    )])
    .unwrap();
    let ours = GuestMemory::map(vec![RegionSpec {
        gpa: 0,
        size: MEM_SIZE as u64,
        uaddr: uoff,
        mmap_offset: 0,
        file: f,
    }])
    .unwrap();
    TestMem {
        ours: Arc::new(ours),
        theirs,
    }
}

fn test_mem() -> TestMem {
    test_mem_at(0)
}

fn cfg(mq: &MockSplitQueue<GuestMemoryMmap>, size: u16) -> QueueConfig {
    QueueConfig {
        size,
        desc_uaddr: mq.desc_table_addr().0,
        avail_uaddr: mq.avail_addr().0,
        used_uaddr: used_of(mq).0,
        next_avail: 0,
        event_idx: false,
        indirect: true,
        ..QueueConfig::default()
    }
}

/// The mock packs its used ring too close to the avail ring for EVENT_IDX; ours lives
/// 4 KiB after the queue start.
fn used_of(mq: &MockSplitQueue<GuestMemoryMmap>) -> GuestAddress {
    mq.start().unchecked_add(0x1000)
}

fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

fn segs_of(q: &mut SplitQueue) -> Vec<(u32, u32)> {
    let mut c = Chain::new();
    let mut out = vec![];
    while q.pop(&mut c).unwrap() {
        out.push((c.readable_len(), c.writable_len()));
    }
    out
}

#[test]
fn pops_chains_and_publishes_used() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    mq.add_desc_chains(
        &[
            d(BUF, 12, DESC_F_NEXT, 1),
            d(BUF + 0x1000, 100, 0, 0),
            d(BUF + 0x2000, 1500, DESC_F_WRITE, 0),
        ],
        0,
    )
    .unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    assert_eq!(q.refresh_avail().unwrap(), 2);
    assert_eq!(segs_of(&mut q), vec![(112, 0), (0, 1500)]);
    assert_eq!(q.next_avail(), 2);
    q.push_used_head(0, 0);
    q.push_used_head(2, 1500);
    assert!(q.flush_used(), "no NO_INTERRUPT: a call is due");
    let used = used_of(&mq);
    let idx: u16 = m.theirs.read_obj(used.unchecked_add(2)).unwrap();
    assert_eq!(idx, 2);
    let id1: u32 = m.theirs.read_obj(used.unchecked_add(4 + 8)).unwrap();
    let len1: u32 = m.theirs.read_obj(used.unchecked_add(8 + 8)).unwrap();
    assert_eq!((id1, len1), (2, 1500));
}

#[test]
fn chain_copies_in_out_and_guest_to_guest() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    m.theirs
        .write_slice(&payload[..1000], GuestAddress(BUF))
        .unwrap();
    m.theirs
        .write_slice(&payload[1000..], GuestAddress(BUF + 0x10000))
        .unwrap();
    mq.add_desc_chains(
        &[
            d(BUF, 1000, DESC_F_NEXT, 1),
            d(BUF + 0x10000, 2000, 0, 0),
            d(BUF + 0x20000, 10, DESC_F_WRITE | DESC_F_NEXT, 3),
            d(BUF + 0x30000, 4000, DESC_F_WRITE, 0),
        ],
        0,
    )
    .unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    q.refresh_avail().unwrap();
    let (mut tx, mut rx) = (Chain::new(), Chain::new());
    assert!(q.pop(&mut tx).unwrap());
    assert!(q.pop(&mut rx).unwrap());
    let mut got = vec![0u8; 3000];
    assert_eq!(tx.read_at(0, &mut got), 3000);
    assert_eq!(got, payload);
    let mut tail = [0u8; 50];
    assert_eq!(tx.read_at(2990, &mut tail), 10);
    assert_eq!(rx.write_at(0, b"0123456789ab"), 12);
    assert_eq!(tx.copy_to(5, &rx, 12, 2995), 2995);
    let mut back = vec![0u8; 3007];
    m.theirs
        .read_slice(&mut back[..10], GuestAddress(BUF + 0x20000))
        .unwrap();
    m.theirs
        .read_slice(&mut back[10..], GuestAddress(BUF + 0x30000))
        .unwrap();
    assert_eq!(&back[..12], b"0123456789ab");
    assert_eq!(&back[12..], &payload[5..]);
    // Readable side only of tx, writable side only of rx.
    assert_eq!(tx.write_at(0, b"x"), 0);
    assert_eq!(rx.read_at(0, &mut tail), 0);
    // Fixed-size copies only inside one buffer: the fast path, or None / false.
    assert_eq!(
        tx.read_array::<4>(996),
        Some([payload[996], payload[997], payload[998], payload[999]])
    );
    assert_eq!(tx.read_array::<8>(996), None, "spans two buffers");
    assert_eq!(tx.read_array::<8>(2995), None, "past the end");
    assert!(rx.write_array(2, b"AB"));
    assert!(!rx.write_array(8, b"ABCD"), "spans two buffers");
    assert!(rx.write_array(10, b"ABCD"));
    m.theirs
        .read_slice(&mut back[..16], GuestAddress(BUF + 0x20000))
        .unwrap();
    assert_eq!(&back[..10], b"01AB456789");
    let mut head = [0u8; 4];
    m.theirs
        .read_slice(&mut head, GuestAddress(BUF + 0x30000))
        .unwrap();
    assert_eq!(&head, b"ABCD");
    // A copy inside one buffer on both sides (the fast path) and one that is not.
    assert_eq!(tx.copy_to(0, &rx, 100, 64), 64);
    assert_eq!(tx.copy_to(990, &rx, 100, 20), 20);
    let mut mid = [0u8; 20];
    m.theirs
        .read_slice(&mut mid, GuestAddress(BUF + 0x30000 + 90))
        .unwrap();
    assert_eq!(&mid[..], &payload[990..1010]);
}

#[test]
fn indirect_chain_matches_oracle() {
    let m = test_mem();
    let mut mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    mq.add_indirect_chain(5).unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    q.refresh_avail().unwrap();
    let mut c = Chain::new();
    assert!(q.pop(&mut c).unwrap());
    let mut oracle: Queue = mq.create_queue().unwrap();
    let chain = oracle.iter(&m.theirs).unwrap().next().unwrap();
    let total: u32 = chain.map(|d| d.len()).sum();
    assert_eq!(c.readable_len() + c.writable_len(), total);
    // Without the feature the same chain is refused.
    let mut cfg2 = cfg(&mq, 16);
    cfg2.indirect = false;
    let mut q2 = SplitQueue::new(m.ours.clone(), &cfg2).unwrap();
    q2.refresh_avail().unwrap();
    assert!(matches!(q2.pop(&mut c), Err(RingError::BadIndirect { .. })));
}

fn pop_err(descs: &[RawDescriptor], heads: &[u16]) -> RingError {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    for (i, x) in descs.iter().enumerate() {
        mq.desc_table().store(i as u16, *x).unwrap();
    }
    for (i, h) in heads.iter().enumerate() {
        mq.avail().ring().ref_at(i).unwrap().store(*h);
    }
    mq.avail().idx().store(heads.len() as u16);
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    let mut c = Chain::new();
    if let Err(e) = q.refresh_avail() {
        return e;
    }
    loop {
        match q.pop(&mut c) {
            Ok(true) => continue,
            Ok(false) => panic!("no error"),
            Err(e) => return e,
        }
    }
}

#[test]
fn defences() {
    use RingError::*;
    let loop2 = [d(BUF, 1, DESC_F_NEXT, 1), d(BUF, 1, DESC_F_NEXT, 0)];
    assert_eq!(pop_err(&loop2, &[0]), ChainTooLong(16));
    let self_loop = [d(BUF, 1, DESC_F_NEXT, 0)];
    assert_eq!(pop_err(&self_loop, &[0]), ChainTooLong(16));
    assert_eq!(
        pop_err(&[d(BUF, 1, DESC_F_NEXT, 16)], &[0]),
        IndexOutOfRange {
            index: 16,
            size: 16
        }
    );
    assert_eq!(
        pop_err(&[d(BUF, 1, 0, 0)], &[17]),
        IndexOutOfRange {
            index: 17,
            size: 16
        }
    );
    let oob = MEM_SIZE as u64 - 10;
    assert_eq!(
        pop_err(&[d(oob, 11, 0, 0)], &[0]),
        BufferOutOfMemory { addr: oob, len: 11 }
    );
    assert_eq!(
        pop_err(&[d(u64::MAX - 5, 100, 0, 0)], &[0]),
        BufferOutOfMemory {
            addr: u64::MAX - 5,
            len: 100
        }
    );
    let rw = [d(BUF, 1, DESC_F_WRITE | DESC_F_NEXT, 1), d(BUF, 1, 0, 0)];
    assert_eq!(pop_err(&rw, &[0]), ReadableAfterWritable);
    let big = [d(0, u32::MAX, DESC_F_NEXT, 1), d(0, 2, 0, 0)];
    // The first buffer is out of memory before the sum overflows; use writable halves.
    assert!(matches!(pop_err(&big, &[0]), BufferOutOfMemory { .. }));
    let ind_next = [
        d(BUF, 32, DESC_F_INDIRECT | DESC_F_NEXT, 1),
        d(BUF, 1, 0, 0),
    ];
    assert!(matches!(pop_err(&ind_next, &[0]), BadIndirect { .. }));
    let ind_len = [d(BUF, 33, DESC_F_INDIRECT, 0)];
    assert!(matches!(pop_err(&ind_len, &[0]), BadIndirect { .. }));
    let ind_zero = [d(BUF, 0, DESC_F_INDIRECT, 0)];
    assert!(matches!(pop_err(&ind_zero, &[0]), BadIndirect { .. }));
    let mid_ind = [d(BUF, 1, DESC_F_NEXT, 1), d(BUF, 16, DESC_F_INDIRECT, 0)];
    assert!(matches!(pop_err(&mid_ind, &[0]), BadIndirect { .. }));
}

#[test]
fn nested_indirect_and_indirect_loop_refused() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    let table = 0x20_0000u64;
    // Table entry 0 is itself indirect.
    m.theirs
        .write_obj(d(table, 16, DESC_F_INDIRECT, 0), GuestAddress(table))
        .unwrap();
    // Second table: 0 -> 1 -> 0 loop.
    let t2 = 0x21_0000u64;
    m.theirs
        .write_obj(d(BUF, 1, DESC_F_NEXT, 1), GuestAddress(t2))
        .unwrap();
    m.theirs
        .write_obj(d(BUF, 1, DESC_F_NEXT, 0), GuestAddress(t2 + 16))
        .unwrap();
    mq.desc_table()
        .store(0, d(table, 16, DESC_F_INDIRECT, 0))
        .unwrap();
    mq.desc_table()
        .store(1, d(t2, 32, DESC_F_INDIRECT, 0))
        .unwrap();
    mq.avail().ring().ref_at(0).unwrap().store(0);
    mq.avail().ring().ref_at(1).unwrap().store(1);
    mq.avail().idx().store(2);
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    q.refresh_avail().unwrap();
    let mut c = Chain::new();
    assert!(matches!(q.pop(&mut c), Err(RingError::BadIndirect { .. })));
    // The failed pop did not advance; skip it by hand to test the second chain.
    q.unpop(0);
    let mut q = SplitQueue::new(
        m.ours.clone(),
        &QueueConfig {
            next_avail: 1,
            ..cfg(&mq, 16)
        },
    )
    .unwrap();
    q.refresh_avail().unwrap();
    assert_eq!(q.pop(&mut c), Err(RingError::ChainTooLong(2)));
}

#[test]
fn avail_idx_jump_is_an_error() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    mq.avail().idx().store(17);
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    assert_eq!(
        q.refresh_avail(),
        Err(RingError::AvailIdxOutOfRange { avail: 17, next: 0 })
    );
    mq.avail().idx().store(16);
    assert_eq!(q.refresh_avail(), Ok(16));
}

#[test]
fn bad_ring_config_refused() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    let good = cfg(&mq, 16);
    for size in [0u16, 3, 100] {
        let c = QueueConfig { size, ..good };
        assert_eq!(
            SplitQueue::new(m.ours.clone(), &c).unwrap_err(),
            RingError::BadSize(u32::from(size))
        );
    }
    let c = QueueConfig {
        desc_uaddr: MEM_SIZE as u64 - 8,
        ..good
    };
    assert!(matches!(
        SplitQueue::new(m.ours.clone(), &c),
        Err(RingError::BadRingAddr { part: "desc", .. })
    ));
    let c = QueueConfig {
        used_uaddr: good.used_uaddr + 2,
        ..good
    };
    assert!(matches!(
        SplitQueue::new(m.ours.clone(), &c),
        Err(RingError::BadRingAddr { part: "used", .. })
    ));
}

#[test]
fn event_idx_suppression_both_ways() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    mq.add_desc_chains(&[d(BUF, 10, 0, 0), d(BUF, 10, 0, 0), d(BUF, 10, 0, 0)], 0)
        .unwrap();
    let c = QueueConfig {
        event_idx: true,
        ..cfg(&mq, 16)
    };
    let mut q = SplitQueue::new(m.ours.clone(), &c).unwrap();
    let used_event = mq.avail_addr().unchecked_add(4 + 2 * 16);
    let avail_event = used_of(&mq).unchecked_add(4 + 8 * 16);
    // Driver wants a call once used.idx passes 2 (used_event = 1).
    m.theirs.write_obj(1u16, used_event).unwrap();
    q.refresh_avail().unwrap();
    let mut ch = Chain::new();
    q.pop(&mut ch).unwrap();
    q.push_used(&ch, 0);
    assert!(!q.flush_used(), "used.idx 0->1 does not cross used_event 1");
    q.pop(&mut ch).unwrap();
    q.push_used(&ch, 0);
    assert!(q.flush_used(), "used.idx 1->2 crosses used_event 1");
    // Device side: enable_notify publishes avail_event = next_avail and reports pending.
    assert_eq!(q.enable_notify().unwrap(), 1);
    let ae: u16 = m.theirs.read_obj(avail_event).unwrap();
    assert_eq!(ae, 2);
    // Without EVENT_IDX: NO_INTERRUPT in avail.flags suppresses calls, used.flags toggles.
    let mq2 = MockSplitQueue::create(&m.theirs, GuestAddress(0x8000), 16);
    mq2.add_desc_chains(&[d(BUF, 10, 0, 0)], 0).unwrap();
    let mut q2 = SplitQueue::new(m.ours.clone(), &cfg(&mq2, 16)).unwrap();
    m.theirs.write_obj(1u16, mq2.avail_addr()).unwrap();
    q2.refresh_avail().unwrap();
    q2.pop(&mut ch).unwrap();
    q2.push_used(&ch, 0);
    assert!(!q2.flush_used());
    q2.disable_notify();
    assert_eq!(m.theirs.read_obj::<u16>(used_of(&mq2)).unwrap(), 1);
    assert_eq!(q2.enable_notify().unwrap(), 0);
    assert_eq!(m.theirs.read_obj::<u16>(used_of(&mq2)).unwrap(), 0);
}

#[test]
fn uaddr_differs_from_gpa() {
    let m = test_mem_at(0x7f00_0000_0000);
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    mq.add_desc_chains(&[d(BUF, 10, 0, 0)], 0).unwrap();
    let mut c = cfg(&mq, 16);
    c.desc_uaddr += 0x7f00_0000_0000;
    c.avail_uaddr += 0x7f00_0000_0000;
    c.used_uaddr += 0x7f00_0000_0000;
    let mut q = SplitQueue::new(m.ours.clone(), &c).unwrap();
    q.refresh_avail().unwrap();
    assert_eq!(segs_of(&mut q), vec![(10, 0)]);
    // gpa-addressed rings are not accepted as user addresses.
    assert!(SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).is_err());
}

#[test]
fn region_table_checks() {
    let f = || memfd(1 << 20);
    let spec = |gpa, size, uaddr, off| RegionSpec {
        gpa,
        size,
        uaddr,
        mmap_offset: off,
        file: f(),
    };
    assert!(matches!(
        GuestMemory::map(vec![spec(0, 0, 0, 0)]),
        Err(MemError::EmptyRegion { index: 0 })
    ));
    assert!(matches!(
        GuestMemory::map(vec![spec(0, 1 << 20, 0, 1)]),
        Err(MemError::FileTooSmall { .. })
    ));
    assert!(matches!(
        GuestMemory::map(vec![spec(u64::MAX, 2, 0, 0)]),
        Err(MemError::Overflow { .. })
    ));
    assert!(matches!(
        GuestMemory::map(vec![spec(0, 4096, 0, 0), spec(4095, 4096, 1 << 30, 0)]),
        Err(MemError::Overlap { a: 0, b: 1 })
    ));
    // Two adjacent regions: a buffer spanning both is translated in two pieces.
    let mem = GuestMemory::map(vec![
        spec(1 << 20, 1 << 20, 1 << 40, 0),
        spec(0, 1 << 20, 0, 0),
    ])
    .unwrap();
    assert_eq!(mem.region_count(), 2);
    let data: Vec<u8> = (0..200u8).collect();
    assert!(mem.write((1 << 20) - 100, &data));
    let mut back = vec![0u8; 200];
    assert!(mem.read((1 << 20) - 100, &mut back));
    assert_eq!(back, data);
    assert!(!mem.write((2 << 20) - 100, &data), "runs past the end");
    let mut hint = 0;
    assert!(mem.translate((1 << 20) - 100, 200, &mut hint).is_none());
    assert!(mem.translate((1 << 20) - 100, 100, &mut hint).is_some());
}

#[test]
#[allow(clippy::incompatible_msrv)] // std::io::pipe in a test; builds use a newer toolchain
fn only_regular_files_within_the_limit_are_mapped_from_their_offset() {
    use std::os::fd::OwnedFd;
    let spec = |size, off, file| RegionSpec {
        gpa: 0,
        size,
        uaddr: 0,
        mmap_offset: off,
        file,
    };
    // A pipe, an eventfd-like anonymous inode and a character device are refused.
    let (r, _w) = std::io::pipe().unwrap();
    assert!(matches!(
        GuestMemory::map(vec![spec(4096, 0, File::from(OwnedFd::from(r)))]),
        Err(MemError::NotAFile { kind: "pipe", .. })
    ));
    let zero = File::options()
        .read(true)
        .write(true)
        .open("/dev/zero")
        .unwrap();
    assert!(matches!(
        GuestMemory::map(vec![spec(4096, 0, zero)]),
        Err(MemError::NotAFile {
            kind: "character device",
            ..
        })
    ));
    // Over the limit: refused before anything is mapped, for a table and for one more region.
    assert!(matches!(
        GuestMemory::map_within(vec![spec(1 << 20, 0, memfd(1 << 20))], (1 << 20) - 1),
        Err(MemError::OverLimit { total, limit }) if total == 1 << 20 && limit == (1 << 20) - 1
    ));
    let mem = GuestMemory::map_within(vec![spec(1 << 19, 0, memfd(1 << 20))], 1 << 20).unwrap();
    let more = RegionSpec {
        gpa: 1 << 20,
        size: (1 << 19) + 1,
        uaddr: 1 << 20,
        mmap_offset: 0,
        file: memfd(1 << 20),
    };
    assert!(matches!(
        mem.with_region(more, 1 << 20),
        Err(MemError::OverLimit { .. })
    ));
    // A region at an unaligned offset deep in a file sees the file's bytes from there on,
    // and only its pages are mapped (not the file from offset 0).
    let file = memfd(64 << 20);
    let off = (60 << 20) + 123;
    std::os::unix::fs::FileExt::write_all_at(&file, b"region start", off).unwrap();
    let mem = GuestMemory::map(vec![spec(1 << 20, off, file)]).unwrap();
    let mut buf = [0u8; 12];
    assert!(mem.read(0, &mut buf));
    assert_eq!(&buf, b"region start");
    // The 123 bytes before the region in its first page, the region, rounded to pages.
    assert_eq!(mem.mapped_len(), (1 << 20) + 4096);
}

#[test]
fn spanning_buffer_becomes_two_segments() {
    let f = || memfd(1 << 20);
    let mem = Arc::new(
        GuestMemory::map(vec![
            RegionSpec {
                gpa: 0,
                size: 1 << 20,
                uaddr: 0,
                mmap_offset: 0,
                file: f(),
            },
            RegionSpec {
                gpa: 1 << 20,
                size: 1 << 20,
                uaddr: 1 << 20,
                mmap_offset: 0,
                file: f(),
            },
        ])
        .unwrap(),
    );
    // Ring at 0, one chain whose buffer straddles the region boundary.
    let desc = 0u64;
    let avail = 16 * 4;
    let used = 0x1000;
    let buf = (1u64 << 20) - 8;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&buf.to_le_bytes());
    raw[8..12].copy_from_slice(&16u32.to_le_bytes());
    assert!(mem.write(desc, &raw));
    assert!(mem.write(avail + 2, &1u16.to_le_bytes()));
    assert!(mem.write(buf, b"ABCDEFGHIJKLMNOP"));
    let c = QueueConfig {
        size: 4,
        desc_uaddr: desc,
        avail_uaddr: avail,
        used_uaddr: used,
        ..Default::default()
    };
    let mut q = SplitQueue::new(mem.clone(), &c).unwrap();
    q.refresh_avail().unwrap();
    let mut ch = Chain::new();
    assert!(q.pop(&mut ch).unwrap());
    assert_eq!(ch.seg_count(), 2);
    let mut got = [0u8; 16];
    assert_eq!(ch.read_at(0, &mut got), 16);
    assert_eq!(&got, b"ABCDEFGHIJKLMNOP");
}

/// A split txq with IN_ORDER: one flush of three chains writes one used element (the
/// last chain's head, at its own slot) and moves `used.idx` by three; without IN_ORDER,
/// or on an rxq, every chain gets its element.
#[test]
fn in_order_txq_publishes_one_used_element_per_batch() {
    for (in_order, device_reads, batched) in [
        (true, true, true),
        (false, true, false),
        (true, false, false),
    ] {
        let mem = Arc::new(
            GuestMemory::map(vec![RegionSpec {
                gpa: 0,
                size: 1 << 20,
                uaddr: 0,
                mmap_offset: 0,
                file: memfd(1 << 20),
            }])
            .unwrap(),
        );
        let (desc, avail, used) = (0u64, 0x400u64, 0x800u64);
        // Descriptors 0..3, one 64-byte buffer each, all three made available.
        for i in 0..3u64 {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&(0x1000 + 0x100 * i).to_le_bytes());
            raw[8..12].copy_from_slice(&64u32.to_le_bytes());
            assert!(mem.write(desc + 16 * i, &raw));
            assert!(mem.write(avail + 4 + 2 * i, &(i as u16).to_le_bytes()));
        }
        assert!(mem.write(avail + 2, &3u16.to_le_bytes()));
        // Stale garbage in the used ring, to see which elements get written.
        assert!(mem.write(used + 4, &[0xee; 8 * 8]));
        let c = QueueConfig {
            size: 8,
            desc_uaddr: desc,
            avail_uaddr: avail,
            used_uaddr: used,
            in_order,
            device_reads,
            ..Default::default()
        };
        let mut q = SplitQueue::new(mem.clone(), &c).unwrap();
        q.refresh_avail().unwrap();
        let mut ch = Chain::new();
        for _ in 0..3 {
            assert!(q.pop(&mut ch).unwrap());
            q.push_used(&ch, 0);
        }
        q.flush_used();
        let mut idx = [0u8; 2];
        assert!(mem.read(used + 2, &mut idx));
        assert_eq!(u16::from_le_bytes(idx), 3);
        let elem = |slot: u64| {
            let mut e = [0u8; 8];
            assert!(mem.read(used + 4 + 8 * slot, &mut e));
            u32::from_le_bytes([e[0], e[1], e[2], e[3]])
        };
        assert_eq!(elem(2), 2, "the last chain's element");
        if batched {
            assert_eq!((elem(0), elem(1)), (0xeeee_eeee, 0xeeee_eeee));
        } else {
            assert_eq!((elem(0), elem(1)), (0, 1));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// Differential: whenever our queue accepts a direct chain, virtio-queue's device-side
    /// iterator sees the same buffers.
    #[test]
    fn matches_virtio_queue_oracle(
        descs in proptest::collection::vec(
            (0u64..0x4000, 0u32..0x800, 0u16..4, 0u16..16), 16),
        heads in proptest::collection::vec(0u16..16, 1..8),
    ) {
        let m = test_mem();
        let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
        for (i, (a, l, f, n)) in descs.iter().enumerate() {
            mq.desc_table().store(i as u16, d(BUF + a, *l, f & 3, *n)).unwrap();
        }
        for (i, h) in heads.iter().enumerate() {
            mq.avail().ring().ref_at(i).unwrap().store(*h);
        }
        mq.avail().idx().store(heads.len() as u16);
        let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
        q.refresh_avail().unwrap();
        let mut oracle: Queue = mq.create_queue().unwrap();
        let mut c = Chain::new();
        for _ in 0..heads.len() {
            let theirs = oracle.pop_descriptor_chain(&m.theirs);
            match q.pop(&mut c) {
                Ok(true) => {
                    let t = theirs.expect("oracle has the chain");
                    let (mut r, mut w) = (0u32, 0u32);
                    for x in t {
                        if x.is_write_only() { w += x.len() } else { r += x.len() }
                    }
                    prop_assert_eq!((r, w), (c.readable_len(), c.writable_len()));
                }
                Ok(false) => prop_assert!(false, "pending chain not popped"),
                Err(_) => break,
            }
        }
    }
}

#[test]
fn notify_on_more_asks_for_a_kick_past_what_is_already_available() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    mq.add_desc_chains(&[d(BUF, 10, 0, 0), d(BUF, 10, 0, 0)], 0)
        .unwrap();
    let c = QueueConfig {
        event_idx: true,
        ..cfg(&mq, 16)
    };
    let mut q = SplitQueue::new(m.ours.clone(), &c).unwrap();
    let avail_event = used_of(&mq).unchecked_add(4 + 8 * 16);
    // Two chains are available but (say) not enough: ask for a kick on the third.
    assert_eq!(q.enable_notify_on_more().unwrap(), 2);
    assert_eq!(m.theirs.read_obj::<u16>(avail_event).unwrap(), 2);
    // Plain enable_notify would have asked for a kick at our next index, already passed.
    assert_eq!(q.enable_notify().unwrap(), 2);
    assert_eq!(m.theirs.read_obj::<u16>(avail_event).unwrap(), 0);
}

#[test]
fn chain_keeps_its_memory_mapped_and_iovecs_describe_it() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    let payload: Vec<u8> = (0..300u32).map(|i| (i * 13) as u8).collect();
    m.theirs
        .write_slice(&payload[..100], GuestAddress(BUF))
        .unwrap();
    m.theirs
        .write_slice(&payload[100..], GuestAddress(BUF + 0x1000))
        .unwrap();
    mq.add_desc_chains(
        &[d(BUF, 100, DESC_F_NEXT, 1), d(BUF + 0x1000, 200, 0, 0)],
        0,
    )
    .unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    q.refresh_avail().unwrap();
    let mut c = Chain::new();
    assert!(q.pop(&mut c).unwrap());
    // The queue and every other handle on the memory go away: the chain still reads it.
    drop(q);
    drop(mq);
    let TestMem { ours, theirs } = m;
    let weak = Arc::downgrade(&ours);
    drop(ours);
    drop(theirs);
    assert!(weak.upgrade().is_some(), "the chain holds the memory");
    let mut got = vec![0u8; 300];
    assert_eq!(c.read_at(0, &mut got), 300);
    assert_eq!(got, payload);
    // iovecs of bytes [50, 250): one per buffer touched, exactly those bytes.
    let mut storage = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        4
    ];
    let hdr = [7u8; 12];
    let mut iov = IoVecs::new(&mut storage);
    assert!(iov.push_bytes(&hdr));
    assert_eq!(iov.push_chain(&c, 50, 200), 200);
    assert_eq!(iov.len(), 3);
    assert_eq!(iov.total_len(), 212);
    let lens: Vec<usize> = iov.as_slice().iter().map(|v| v.iov_len).collect();
    assert_eq!(lens, vec![12, 50, 150]);
    // Full storage: nothing more is added.
    assert_eq!(iov.push_chain(&c, 0, 300), 100);
    assert!(!iov.push_bytes(&hdr));
    // Releasing the chain lets go of the memory (unmapped now).
    c.release();
    assert!(weak.upgrade().is_none());
    assert_eq!(c.read_at(0, &mut got), 0);
}

/// Pops the one chain of a queue of `size` whose descriptors are `descs` (head 0).
fn pop_sized(size: u16, descs: &[RawDescriptor], mem: &TestMem) -> Result<Chain, RingError> {
    let mq = MockSplitQueue::create(&mem.theirs, GuestAddress(0), size);
    for (i, x) in descs.iter().enumerate() {
        mq.desc_table().store(i as u16, *x).unwrap();
    }
    mq.avail().ring().ref_at(0).unwrap().store(0);
    mq.avail().idx().store(1);
    let mut q = SplitQueue::new(mem.ours.clone(), &cfg(&mq, size)).unwrap();
    q.refresh_avail()?;
    let mut c = Chain::new();
    q.pop(&mut c).map(|_| c)
}

#[test]
fn every_descriptor_counts_and_indirect_tables_fit_the_queue() {
    let m = test_mem();
    // Zero-length descriptors add no buffer but still count: a chain of 1025 of them in a
    // queue of 2048 is too long, one of 1024 pops (empty).
    let chain = |n: u16| -> Vec<RawDescriptor> {
        (0..n)
            .map(|i| {
                let flags = if i + 1 < n { DESC_F_NEXT } else { 0 };
                d(BUF, 0, flags, i + 1)
            })
            .collect()
    };
    assert_eq!(
        pop_sized(2048, &chain(1025), &m).err(),
        Some(RingError::ChainTooLong(MAX_CHAIN_SEGS as u32))
    );
    let c = pop_sized(2048, &chain(1024), &m).unwrap();
    assert_eq!((c.readable_len(), c.seg_count()), (0, 0));
    assert_eq!(c.desc_count(), 1024);
    // An indirect table of 17 entries behind a queue of 16: refused, whatever it holds.
    let table = 0x20_0000u64;
    for i in 0..17u16 {
        m.theirs
            .write_obj(d(BUF, 1, 0, 0), GuestAddress(table + 16 * u64::from(i)))
            .unwrap();
    }
    assert_eq!(
        pop_sized(16, &[d(table, 17 * 16, DESC_F_INDIRECT, 0)], &m).err(),
        Some(RingError::IndirectTooLarge {
            entries: 17,
            size: 16
        })
    );
    // 16 entries fit.
    let c = pop_sized(16, &[d(table, 16 * 16, DESC_F_INDIRECT, 0)], &m).unwrap();
    assert_eq!((c.readable_len(), c.desc_count()), (1, 2));
}

/// `fill_bufs` takes lone device-writable buffers and nothing else (a chain of several
/// descriptors, a device-readable buffer, a buffer outside guest memory are left for
/// `pop`, which says what is wrong with them); a buffer takes a header and bytes of another
/// chain, and nothing is written or popped when they do not fit; its used element carries
/// its id and the length written.
#[test]
fn fill_bufs_takes_lone_rx_buffers_only() {
    let m = test_mem();
    let mq = MockSplitQueue::create(&m.theirs, GuestAddress(0), 16);
    mq.add_desc_chains(
        &[
            // 0-1: the source (a header, then 100 bytes).
            d(BUF, 12, DESC_F_NEXT, 1),
            d(BUF + 0x1000, 100, 0, 0),
            // 2-3: a chain of two writable buffers.
            d(BUF + 0x4000, 32, DESC_F_WRITE | DESC_F_NEXT, 3),
            d(BUF + 0x5000, 32, DESC_F_WRITE, 0),
            // 4: a lone writable buffer.
            d(BUF + 0x2000, 1500, DESC_F_WRITE, 0),
            // 5: a lone device-readable buffer.
            d(BUF + 0x3000, 64, 0, 0),
            // 6: a lone writable buffer outside guest memory.
            d(MEM_SIZE as u64, 64, DESC_F_WRITE, 0),
        ],
        0,
    )
    .unwrap();
    let src = [0x5au8; 100];
    m.theirs
        .write_slice(&src, GuestAddress(BUF + 0x1000))
        .unwrap();
    let mut q = SplitQueue::new(m.ours.clone(), &cfg(&mq, 16)).unwrap();
    assert_eq!(q.refresh_avail().unwrap(), 5);
    let mut c = Chain::new();
    assert!(q.pop(&mut c).unwrap());
    // One frame: a 4-byte header and `len` bytes of `c` from its byte 20.
    let put = |q: &mut SplitQueue, len| {
        let one = fill::Frames(vec![([1, 2, 3, 4], len)]);
        DeviceRing::fill_bufs(q, std::slice::from_ref(&c), 20, &one)
    };
    assert_eq!(put(&mut q, 0), 0, "a chain of two is not a lone buffer");
    assert_eq!(q.next_avail(), 1, "nothing popped");
    let mut other = Chain::new();
    assert!(q.pop(&mut other).unwrap());
    m.theirs
        .write_slice(&[0xee; 1500], GuestAddress(BUF + 0x2000))
        .unwrap();
    assert_eq!(put(&mut q, 100), 0, "past the source buffer");
    assert_eq!(q.next_avail(), 2, "nothing popped");
    let big = fill::Frames(vec![([0; 1500], 1)]);
    assert_eq!(
        DeviceRing::fill_bufs(&mut q, std::slice::from_ref(&c), 20, &big),
        0,
        "past the rx buffer"
    );
    let mut untouched = [0u8; 1500];
    m.theirs
        .read_slice(&mut untouched, GuestAddress(BUF + 0x2000))
        .unwrap();
    assert!(untouched.iter().all(|&x| x == 0xee), "nothing written");
    // Four bytes of header, then 50 bytes of the chain from its byte 20.
    assert_eq!(put(&mut q, 50), 1);
    let mut got = [0u8; 54];
    m.theirs
        .read_slice(&mut got, GuestAddress(BUF + 0x2000))
        .unwrap();
    assert_eq!(got[..4], [1, 2, 3, 4]);
    assert_eq!(got[4..], src[..50]);
    assert_eq!(put(&mut q, 0), 0, "device-readable");
    assert_eq!(q.next_avail(), 3, "nothing popped");
    assert!(q.pop(&mut other).unwrap());
    assert_eq!(put(&mut q, 0), 0, "outside guest memory");
    assert_eq!(q.next_avail(), 4, "nothing popped");
    assert!(
        matches!(q.pop(&mut other), Err(RingError::BufferOutOfMemory { .. })),
        "pop reports it"
    );
    q.flush_used();
    let used = used_of(&mq);
    let id: u32 = m.theirs.read_obj(used.unchecked_add(4)).unwrap();
    let len: u32 = m.theirs.read_obj(used.unchecked_add(8)).unwrap();
    assert_eq!((id, len), (4, 54));
}

mod fill;
