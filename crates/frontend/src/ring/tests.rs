use super::*;
use crate::testutil::Dev;

fn setup(size: u16, event_idx: bool) -> (GuestMemory, SplitRing, Dev) {
    let mut mem = GuestMemory::new(0, 1 << 20, 1).unwrap();
    let ring = SplitRing::new(&mut mem, 1, size, event_idx).unwrap();
    let dev = Dev::new(ring.addrs(), event_idx);
    (mem, ring, dev)
}

fn seg(gpa: u64, len: u32, write: bool) -> Seg {
    Seg { gpa, len, write }
}

#[test]
fn need_event_matches_spec() {
    // event in [old, new) -> notify.
    assert!(need_event(5, 6, 5));
    assert!(need_event(5, 10, 0));
    assert!(!need_event(10, 10, 0));
    assert!(!need_event(4, 10, 5));
    // Wrapping.
    assert!(need_event(0xffff, 2, 0xfffe));
    assert!(need_event(0, 2, 0xfffe));
    assert!(!need_event(2, 2, 0xfffe));
}

#[test]
fn chain_roundtrip_frees_descriptors() {
    let (mut mem, mut ring, mut dev) = setup(8, false);
    let segs = [
        seg(0x8000, 10, false),
        seg(0x9000, 100, false),
        seg(0xa000, 50, true),
    ];
    let head = ring.post(&mut mem, &segs, 77).unwrap().unwrap();
    assert_eq!(ring.free_count(), 5);
    // Not visible before publish.
    assert!(dev.pop(&mem).is_none());
    assert!(ring.publish(&mem).unwrap(), "no NO_NOTIFY: kick");
    let (h, descs) = dev.pop(&mem).unwrap();
    assert_eq!(h, head);
    assert_eq!(descs.len(), 3);
    for (d, s) in descs.iter().zip(&segs) {
        assert_eq!((d.addr, d.len), (s.gpa, s.len));
        assert_eq!(d.flags & DESC_F_WRITE != 0, s.write);
    }
    assert_eq!(descs[0].flags & DESC_F_NEXT, DESC_F_NEXT);
    assert_eq!(descs[2].flags & DESC_F_NEXT, 0);
    assert_eq!(ring.pending_used(&mem, false).unwrap(), 0);
    dev.add_used(&mut mem, u32::from(head), 50);
    dev.publish(&mem);
    assert_eq!(ring.pending_used(&mem, false).unwrap(), 1);
    let u = ring.take_used(&mem).unwrap();
    assert_eq!((u.head, u.len, u.token), (head, 50, Some(77)));
    assert_eq!(ring.free_count(), 8);
    assert_eq!(ring.inflight(), 0);
}

#[test]
fn indirect_uses_one_descriptor() {
    let (mut mem, mut ring, mut dev) = setup(4, true);
    let table = mem.alloc(16 * 5, 16).unwrap();
    let segs: Vec<Seg> = (0..5)
        .map(|i| seg(0x10000 + i * 0x100, 64, false))
        .collect();
    let head = ring
        .post_indirect(&mut mem, table, &segs, 1)
        .unwrap()
        .unwrap();
    assert_eq!(ring.free_count(), 3);
    ring.publish(&mem).unwrap();
    let (h, descs) = dev.pop(&mem).unwrap();
    assert_eq!(h, head);
    assert_eq!(descs.len(), 5);
    assert!(descs
        .iter()
        .zip(&segs)
        .all(|(d, s)| d.addr == s.gpa && d.len == 64));
}

#[test]
fn ring_full_when_descriptors_run_out() {
    let (mut mem, mut ring, _dev) = setup(4, false);
    let two = [seg(0x8000, 1, false), seg(0x8001, 1, false)];
    assert!(ring.post(&mut mem, &two, 0).unwrap().is_some());
    assert!(ring.post(&mut mem, &two, 1).unwrap().is_some());
    assert!(ring.post(&mut mem, &two[..1], 2).unwrap().is_none());
    assert!(ring.post(&mut mem, &[], 3).unwrap().is_none());
}

#[test]
fn kick_suppression_without_event_idx() {
    let (mut mem, mut ring, dev) = setup(8, false);
    dev.set_used_flags(&mem, USED_F_NO_NOTIFY);
    ring.post(&mut mem, &[seg(0x8000, 1, false)], 0).unwrap();
    assert!(!ring.publish(&mem).unwrap());
    dev.set_used_flags(&mem, 0);
    ring.post(&mut mem, &[seg(0x8000, 1, false)], 1).unwrap();
    assert!(ring.publish(&mem).unwrap());
    // Nothing new: no kick.
    assert!(!ring.publish(&mem).unwrap());
}

#[test]
fn kick_suppression_with_event_idx() {
    let (mut mem, mut ring, dev) = setup(8, true);
    // Device wants a kick when avail.idx moves past 2.
    dev.set_avail_event(&mem, 2);
    ring.post(&mut mem, &[seg(0x8000, 1, false)], 0).unwrap();
    assert!(!ring.publish(&mem).unwrap(), "0 -> 1 does not pass 2");
    ring.post(&mut mem, &[seg(0x8000, 1, false)], 1).unwrap();
    assert!(!ring.publish(&mem).unwrap(), "1 -> 2 does not pass 2");
    ring.post(&mut mem, &[seg(0x8000, 1, false)], 2).unwrap();
    ring.post(&mut mem, &[seg(0x8000, 1, false)], 3).unwrap();
    assert!(ring.publish(&mem).unwrap(), "2 -> 4 passes 2");
}

#[test]
fn call_suppression_both_modes() {
    for event_idx in [false, true] {
        let (mut mem, mut ring, mut dev) = setup(8, event_idx);
        for t in 0..4 {
            ring.post(&mut mem, &[seg(0x8000, 1, true)], t).unwrap();
        }
        ring.publish(&mem).unwrap();
        for _ in 0..4 {
            dev.pop(&mem).unwrap();
        }
        // Initially suppressed.
        dev.add_used(&mut mem, 0, 1);
        assert!(
            !dev.publish(&mem),
            "event_idx {event_idx}: call while disabled"
        );
        // Enabling sees the entry already there: do not sleep.
        assert!(ring.enable_calls(&mem).unwrap());
        ring.take_used(&mem).unwrap();
        ring.disable_calls(&mem).unwrap();
        // Enable with nothing pending: the next used entry calls.
        assert!(!ring.enable_calls(&mem).unwrap());
        dev.add_used(&mut mem, 1, 1);
        assert!(
            dev.publish(&mem),
            "event_idx {event_idx}: no call when enabled"
        );
        ring.take_used(&mem).unwrap();
        ring.disable_calls(&mem).unwrap();
        dev.add_used(&mut mem, 2, 1);
        assert!(
            !dev.publish(&mem),
            "event_idx {event_idx}: call after disable"
        );
    }
}

#[test]
fn wraps_16_bit_indexes() {
    let (mut mem, mut ring, mut dev) = setup(4, true);
    for i in 0..70_000u32 {
        let head = ring
            .post(&mut mem, &[seg(0x8000, 8, false)], i)
            .unwrap()
            .unwrap();
        ring.publish(&mem).unwrap();
        let (h, _) = dev.pop(&mem).unwrap();
        assert_eq!(h, head);
        dev.add_used(&mut mem, u32::from(h), 0);
        dev.publish(&mem);
        assert_eq!(ring.pending_used(&mem, false).unwrap(), 1);
        assert_eq!(ring.take_used(&mem).unwrap().token, Some(i));
    }
    assert_eq!(ring.free_count(), 4);
}

#[test]
fn rejects_bad_used_ring() {
    // used.idx jumping ahead of what is in flight.
    let (mut mem, mut ring, mut dev) = setup(8, false);
    ring.post(&mut mem, &[seg(0x8000, 8, true)], 0).unwrap();
    ring.publish(&mem).unwrap();
    dev.used_idx = 2;
    dev.publish(&mem);
    assert!(matches!(
        ring.pending_used(&mem, false),
        Err(FrontendError::BadBackend { queue: 1, .. })
    ));
    dev.used_idx = 100;
    dev.publish(&mem);
    assert!(ring.pending_used(&mem, true).is_err());

    // Out-of-range id, id not in flight, duplicate id.
    for (id, second) in [(8u32, None), (3, None), (0, Some(0u32))] {
        let (mut mem, mut ring, mut dev) = setup(8, false);
        ring.post(&mut mem, &[seg(0x8000, 8, true)], 0).unwrap();
        ring.post(&mut mem, &[seg(0x8000, 8, true)], 1).unwrap();
        ring.publish(&mem).unwrap();
        let (h, _) = dev.pop(&mem).unwrap();
        match second {
            None => dev.add_used(&mut mem, id, 0),
            Some(_) => {
                dev.add_used(&mut mem, u32::from(h), 0);
                dev.add_used(&mut mem, u32::from(h), 0);
            }
        }
        dev.publish(&mem);
        let n = ring.pending_used(&mem, false).unwrap();
        let mut err = None;
        for _ in 0..n {
            if let Err(e) = ring.take_used(&mem) {
                err = Some(e);
                break;
            }
        }
        assert!(
            matches!(err, Some(FrontendError::BadBackend { .. })),
            "id {id}: {err:?}"
        );
    }
}

#[test]
fn raw_post_reserves_until_used() {
    let (mut mem, mut ring, mut dev) = setup(8, false);
    let d = encode_desc(0x8000, 60, 0, 0);
    ring.raw_post(&mut mem, &[d, d], &[1, 1]).unwrap();
    assert_eq!(ring.free_count(), 6);
    // Reserved ids are busy for another raw post.
    assert!(matches!(
        ring.raw_post(&mut mem, &[d], &[0]),
        Err(FrontendError::DescriptorBusy { desc: 0, .. })
    ));
    // Normal posts avoid them.
    let head = ring
        .post(&mut mem, &[seg(0x9000, 1, false)], 9)
        .unwrap()
        .unwrap();
    assert!(head >= 2);
    ring.publish(&mem).unwrap();
    for _ in 0..3 {
        let (h, _) = dev.pop(&mem).unwrap();
        dev.add_used(&mut mem, u32::from(h), 0);
    }
    dev.publish(&mem);
    assert_eq!(ring.pending_used(&mem, false).unwrap(), 3);
    assert_eq!(ring.take_used(&mem).unwrap().token, None);
    assert_eq!(ring.free_count(), 5);
    assert_eq!(ring.take_used(&mem).unwrap().token, None);
    assert_eq!(ring.free_count(), 7, "raw descriptors released");
    assert_eq!(ring.take_used(&mem).unwrap().token, Some(9));
    assert_eq!(ring.free_count(), 8);
    assert_eq!(ring.size(), 8);
}
