//! Handler tests: ring lifecycle rules. (The fuzz harnesses run in `vnet-fuzz-harness`.)

use std::fs::File;

use vhost::vhost_user::message::VhostUserMemoryRegion;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserVringAddrFlags};
use vhost::vhost_user::VhostUserBackendReqHandlerMut;

use crate::testing::RingBuilder;
use crate::*;

fn dev_with_pairs(queue_pairs: u16) -> NetDevice {
    NetDevice {
        name: "fuzz".into(),
        mac: wire::MacAddr([0x52, 0x54, 0, 0, 0, 9]),
        mtu: 9000,
        queue_pairs,
        max_mem: DEFAULT_MAX_MEM,
    }
}

fn fd() -> File {
    crate::testing::eventfd().unwrap()
}

/// A handler with 1 MiB of guest memory at gpa 0 (uaddr 0x1000_0000) and ring 1 set up
/// (size 256, rings at uaddr 0x1000_0000.. ), not yet kicked.
fn ready(features: u64) -> VhostUserNet<RingBuilder> {
    ready_pairs(1, features, &[1])
}

/// A handler with `queue_pairs` pairs, 1 MiB of guest memory and the rings in `rings`
/// set up (each at its own 16 KiB slot of guest memory, base 5), not yet kicked.
fn ready_pairs(queue_pairs: u16, features: u64, rings: &[u32]) -> VhostUserNet<RingBuilder> {
    let mut n = VhostUserNet::new(dev_with_pairs(queue_pairs), RingBuilder::default());
    n.set_features(features).unwrap();
    let r = VhostUserMemoryRegion {
        guest_phys_addr: 0,
        memory_size: 1 << 20,
        user_addr: 0x1000_0000,
        mmap_offset: 0,
    };
    n.set_mem_table(&[r], vec![vring::mem::memfd(c"m", 1 << 20).unwrap()])
        .unwrap();
    for &q in rings {
        // Ring 1 keeps the layout the tests below were written for (uaddr 0x1000_0000).
        let at = 0x1000_0000 + u64::from(q.saturating_sub(1)) * 0x4000;
        n.set_vring_num(q, 256).unwrap();
        n.set_vring_addr(
            q,
            VhostUserVringAddrFlags::empty(),
            at,
            at + 0x2000,
            at + 0x1000,
            0,
        )
        .unwrap();
        n.set_vring_base(q, 5).unwrap();
    }
    n
}

#[test]
fn ring_starts_on_kick_without_protocol_features() {
    let mut n = ready(features::VERSION_1_ONLY);
    assert_eq!(n.running_rings(), 0);
    n.set_vring_kick(1, Some(fd())).unwrap();
    assert_eq!(n.running_rings(), 1);
    // GET_VRING_BASE stops it and reports where it was (the base we set, nothing consumed).
    let base = { n.get_vring_base(1).unwrap().num };
    assert_eq!(base, 5);
    assert_eq!(n.running_rings(), 0);
}

#[test]
fn with_protocol_features_ring_waits_for_enable_and_kick_is_kept() {
    let mut n =
        ready(features::VERSION_1_ONLY | virtio_net::features::VHOST_USER_PROTOCOL_FEATURES);
    n.set_vring_kick(1, Some(fd())).unwrap();
    assert_eq!(n.running_rings(), 0, "not enabled yet");
    n.set_vring_enable(1, true).unwrap();
    assert_eq!(n.running_rings(), 1, "the kick that came first is not lost");
    n.set_vring_enable(1, false).unwrap();
    assert_eq!(n.running_rings(), 0);
    n.set_vring_enable(1, true).unwrap();
    assert_eq!(n.running_rings(), 1);
    assert_eq!(n.control().started, 2);
}

#[test]
fn bad_ring_addresses_are_refused_by_the_datapath_builder() {
    let mut n = ready(features::VERSION_1_ONLY);
    n.set_vring_addr(1, VhostUserVringAddrFlags::empty(), 0xdead_0000, 0, 0, 0)
        .unwrap();
    n.set_vring_kick(1, Some(fd())).unwrap();
    assert_eq!(n.control().refused, 1);
}

#[test]
fn hostile_arguments_are_errors() {
    let mut n = ready(features::VERSION_1_ONLY);
    assert!(n.set_vring_num(1, 3).is_err());
    assert!(n.set_vring_num(1, 65536).is_err());
    assert!(
        n.set_vring_num(7, 256).is_err(),
        "queue index beyond the queue pairs"
    );
    assert!(n.set_vring_base(1, 70000).is_err());
    assert!(n.set_features(1 << 60).is_err(), "a feature never offered");
    assert!(n
        .get_config(10, 100, VhostUserConfigFlags::empty())
        .is_err());
    let cfg = n.get_config(0, 12, VhostUserConfigFlags::empty()).unwrap();
    assert_eq!(&cfg[..6], &[0x52, 0x54, 0, 0, 0, 9]);
    assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 9000);
    let overlap = VhostUserMemoryRegion {
        guest_phys_addr: 0,
        memory_size: 4096,
        user_addr: 0,
        mmap_offset: 0,
    };
    assert!(n
        .set_mem_table(&[overlap, overlap], vec![fd(), fd()])
        .is_err());
}

mod features {
    pub const VERSION_1_ONLY: u64 = virtio_net::features::VERSION_1;
}

#[test]
fn add_and_remove_mem_regions_restart_running_rings() {
    use vhost::vhost_user::message::VhostUserSingleMemoryRegion;
    let mut n = ready(features::VERSION_1_ONLY);
    n.set_vring_kick(1, Some(fd())).unwrap();
    assert_eq!(n.control().started, 1);
    // Hot-plug a second region: the running ring restarts on the new table, same base.
    let extra = VhostUserSingleMemoryRegion::new(1 << 30, 1 << 20, 0x2000_0000, 0);
    n.add_mem_region(&extra, vring::mem::memfd(c"x", 1 << 20).unwrap())
        .unwrap();
    assert_eq!((n.control().started, n.running_rings()), (2, 1));
    // Overlapping regions are refused without touching the ring, the same ranges over
    // another file too; a removal that names part of a region is refused.
    assert!(n
        .add_mem_region(&extra, vring::mem::memfd(c"y", 1 << 20).unwrap())
        .is_err());
    let half = VhostUserSingleMemoryRegion::new(1 << 30, 1 << 19, 0x2000_0000, 0);
    assert!(n.remove_mem_region(&half).is_err());
    let moved = VhostUserSingleMemoryRegion::new(1 << 30, 1 << 20, 0x3000_0000, 0);
    assert!(n.remove_mem_region(&moved).is_err(), "other user address");
    // A region nowhere in the table is already gone: nothing to do.
    let unknown = VhostUserSingleMemoryRegion::new(5 << 30, 1 << 20, 0, 0);
    n.remove_mem_region(&unknown).unwrap();
    assert_eq!(n.control().started, 2);
    n.remove_mem_region(&extra).unwrap();
    assert_eq!((n.control().started, n.running_rings()), (3, 1));
    // Removing it again (QEMU 7.2 does, once per queue pair) changes nothing.
    n.remove_mem_region(&extra).unwrap();
    assert_eq!((n.control().started, n.running_rings()), (3, 1));
    // Without memory the ring waits; it runs again once its region is back.
    let first = VhostUserSingleMemoryRegion::new(0, 1 << 20, 0x1000_0000, 0);
    n.remove_mem_region(&first).unwrap();
    assert_eq!(n.running_rings(), 0);
    n.add_mem_region(&first, vring::mem::memfd(c"z", 1 << 20).unwrap())
        .unwrap();
    assert_eq!((n.control().started, n.running_rings()), (4, 1));
}

#[test]
fn a_region_added_again_is_accepted_only_when_identical() {
    use vhost::vhost_user::message::VhostUserSingleMemoryRegion;
    let mut n = ready(features::VERSION_1_ONLY);
    n.set_vring_kick(1, Some(fd())).unwrap();
    let file = vring::mem::memfd(c"x", 2 << 20).unwrap();
    let extra = VhostUserSingleMemoryRegion::new(1 << 30, 1 << 20, 0x2000_0000, 0);
    n.add_mem_region(&extra, file.try_clone().unwrap()).unwrap();
    assert_eq!(n.control().started, 2);
    // The same region again, through another descriptor of the same file: accepted, and
    // the running ring is not disturbed.
    n.add_mem_region(&extra, file.try_clone().unwrap()).unwrap();
    assert_eq!((n.control().started, n.running_rings()), (2, 1));
    // Same ranges, other offset in the same file: refused.
    let shifted = VhostUserSingleMemoryRegion::new(1 << 30, 1 << 20, 0x2000_0000, 1 << 20);
    assert!(n
        .add_mem_region(&shifted, file.try_clone().unwrap())
        .is_err());
    // Same ranges, other file: refused.
    assert!(n
        .add_mem_region(&extra, vring::mem::memfd(c"y", 1 << 20).unwrap())
        .is_err());
    // Same guest range at another user address: refused.
    let other_uaddr = VhostUserSingleMemoryRegion::new(1 << 30, 1 << 20, 0x3000_0000, 0);
    assert!(n
        .add_mem_region(&other_uaddr, file.try_clone().unwrap())
        .is_err());
    // A region inside the mapped one, same file: refused (it overlaps without being it).
    let inner = VhostUserSingleMemoryRegion::new(1 << 30, 1 << 19, 0x2000_0000, 0);
    assert!(n.add_mem_region(&inner, file).is_err());
    assert_eq!((n.control().started, n.running_rings()), (2, 1));
}

// ---- multiqueue ----

const PROTO: u64 = virtio_net::features::VHOST_USER_PROTOCOL_FEATURES;

#[test]
fn get_queue_num_counts_queue_pairs() {
    for pairs in [1u16, 2, 4, 16] {
        let mut n = VhostUserNet::new(dev_with_pairs(pairs), RingBuilder::default());
        assert_eq!(
            n.get_queue_num().unwrap(),
            u64::from(pairs),
            "{pairs} pairs"
        );
        let cfg = n.get_config(0, 12, VhostUserConfigFlags::empty()).unwrap();
        assert_eq!(
            u16::from_le_bytes([cfg[8], cfg[9]]),
            pairs,
            "max_virtqueue_pairs"
        );
    }
    // Zero pairs in the configuration means one.
    let mut n = VhostUserNet::new(dev_with_pairs(0), RingBuilder::default());
    assert_eq!(n.get_queue_num().unwrap(), 1);
}

#[test]
fn get_queue_num_on_the_wire_counts_queue_pairs() {
    use std::io::{Read, Write};
    let (mut ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut n = VhostUserNet::new(dev_with_pairs(2), RingBuilder::default());
    // GET_QUEUE_NUM (17), version 1, no body.
    let mut msg = 17u32.to_ne_bytes().to_vec();
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    theirs.write_all(&msg).unwrap();
    crate::conn::handle_one(&mut ours, &mut n).unwrap();
    let mut reply = [0u8; 20];
    theirs.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..4], &17u32.to_ne_bytes());
    assert_eq!(&reply[8..12], &8u32.to_ne_bytes());
    assert_eq!(u64::from_ne_bytes(reply[12..].try_into().unwrap()), 2);
}

#[test]
fn mq_is_offered_only_with_more_than_one_pair() {
    use vhost::vhost_user::message::VhostUserProtocolFeatures as P;
    use virtio_net::features::{CTRL_VQ, MQ};

    let mut one = VhostUserNet::new(dev_with_pairs(1), RingBuilder::default());
    let f1 = one.get_features().unwrap();
    assert_eq!(f1, OFFERED_FEATURES);
    assert_eq!(f1 & (MQ | CTRL_VQ), 0, "one pair: no MQ, no CTRL_VQ");
    assert!(!one.get_protocol_features().unwrap().contains(P::MQ));
    assert!(
        one.set_features(OFFERED_FEATURES | MQ).is_err(),
        "MQ never offered"
    );
    assert!(one.set_protocol_features(P::MQ.bits()).is_err());

    let mut two = VhostUserNet::new(dev_with_pairs(2), RingBuilder::default());
    let f2 = two.get_features().unwrap();
    assert_eq!(
        f2 & (MQ | CTRL_VQ),
        MQ | CTRL_VQ,
        "MQ and the CTRL_VQ it depends on"
    );
    assert_eq!(
        f2 & !(MQ | CTRL_VQ),
        OFFERED_FEATURES,
        "nothing else changes"
    );
    assert!(two.get_protocol_features().unwrap().contains(P::MQ));
    two.set_protocol_features((P::MQ | P::REPLY_ACK).bits())
        .unwrap();
    // cloud-hypervisor acks CTRL_VQ to the backend; DPDK's virtio-user and QEMU strip it.
    two.set_features(f2).unwrap();
    assert_eq!(two.acked_features(), f2);
    two.set_features(f2 & !CTRL_VQ).unwrap();
    assert_eq!(offered_features(16), f2);
}

#[test]
fn ring_indexes_past_the_queue_pairs_are_refused() {
    for pairs in [1u16, 2] {
        let mut n = ready_pairs(pairs, PROTO, &[]);
        let rings = u32::from(pairs) * 2;
        // The control queue (index 2 * pairs) belongs to the frontend, like any index past it.
        for q in [rings, rings + 1, 255, 256, u32::MAX] {
            assert!(n.set_vring_num(q, 256).is_err(), "{pairs} pairs, ring {q}");
            let addr = n.set_vring_addr(q, VhostUserVringAddrFlags::empty(), 0, 0, 0, 0);
            assert!(addr.is_err());
            assert!(n.set_vring_base(q, 0).is_err());
            assert!(n.get_vring_base(q).is_err());
            assert!(n.set_vring_enable(q, true).is_err());
            if let Ok(q8) = u8::try_from(q) {
                assert!(n.set_vring_kick(q8, Some(fd())).is_err());
                assert!(n.set_vring_call(q8, Some(fd())).is_err());
                assert!(n.set_vring_err(q8, Some(fd())).is_err());
            }
        }
        for q in 0..rings {
            n.set_vring_num(q, 256).unwrap();
        }
        assert_eq!(n.running_rings(), 0);
    }
}

#[test]
fn out_of_range_ring_on_the_wire_is_a_refusal() {
    use std::io::Write;
    let (mut ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut n = VhostUserNet::new(dev_with_pairs(2), RingBuilder::default());
    // SET_VRING_NUM (8) of ring 4 on a 2-pair port: body {index, num}.
    let mut msg = 8u32.to_ne_bytes().to_vec();
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&8u32.to_ne_bytes());
    msg.extend_from_slice(&4u32.to_ne_bytes());
    msg.extend_from_slice(&256u32.to_ne_bytes());
    theirs.write_all(&msg).unwrap();
    let e = crate::conn::handle_one(&mut ours, &mut n).unwrap_err();
    assert!(matches!(e, crate::conn::MsgError::Refused { .. }), "{e}");
    // SET_VRING_KICK (12) of ring 7 without an fd (bit 8).
    let mut msg = 12u32.to_ne_bytes().to_vec();
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&8u32.to_ne_bytes());
    msg.extend_from_slice(&(7u64 | 0x100).to_ne_bytes());
    theirs.write_all(&msg).unwrap();
    let e = crate::conn::handle_one(&mut ours, &mut n).unwrap_err();
    assert!(matches!(e, crate::conn::MsgError::Refused { .. }), "{e}");
}

#[test]
fn set_vring_enable_starts_and_stops_the_second_pair() {
    let mut n = ready_pairs(2, PROTO | virtio_net::features::MQ, &[0, 1, 2, 3]);
    for q in 0..4u8 {
        n.set_vring_kick(q, Some(fd())).unwrap();
    }
    assert_eq!(n.running_rings(), 0, "nothing enabled yet");
    // What a frontend does at start: pair 0 only...
    n.set_vring_enable(0, true).unwrap();
    n.set_vring_enable(1, true).unwrap();
    assert_eq!(n.control().running(), vec![0, 1]);
    // ...then VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 2, translated by the frontend.
    n.set_vring_enable(2, true).unwrap();
    n.set_vring_enable(3, true).unwrap();
    assert_eq!(n.running_rings(), 4);
    let mut running = n.control().running();
    running.sort_unstable();
    assert_eq!(running, vec![0, 1, 2, 3]);
    assert_eq!(n.control().refused, 0);
    // VQ_PAIRS_SET 1: pair 1 stops and keeps its base; pair 0 runs on.
    n.set_vring_enable(2, false).unwrap();
    n.set_vring_enable(3, false).unwrap();
    assert_eq!(n.control().running(), vec![0, 1]);
    let base = { n.get_vring_base(3).unwrap().num };
    assert_eq!(base, 5);
    // GET_VRING_BASE stopped ring 3 until its next kick; ring 2 comes back on enable.
    n.set_vring_enable(2, true).unwrap();
    n.set_vring_enable(3, true).unwrap();
    assert_eq!(n.running_rings(), 3);
    n.set_vring_kick(3, Some(fd())).unwrap();
    assert_eq!(n.running_rings(), 4);
    n.reset();
    assert_eq!(n.running_rings(), 0);
}

#[test]
#[allow(unsafe_code)]
#[allow(clippy::incompatible_msrv)] // std::io::pipe in a test; builds use a newer toolchain
fn notification_fds_must_be_eventfds_and_become_non_blocking() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut n = ready(features::VERSION_1_ONLY);
    let (r, w) = std::io::pipe().unwrap();
    drop(w);
    // A pipe at EOF as kick, a pipe as call, a memfd as err: each refused, no ring runs.
    assert!(n
        .set_vring_kick(1, Some(File::from(OwnedFd::from(r))))
        .is_err());
    assert_eq!(n.running_rings(), 0);
    let (_r, w) = std::io::pipe().unwrap();
    assert!(n
        .set_vring_call(1, Some(File::from(OwnedFd::from(w))))
        .is_err());
    assert!(n
        .set_vring_err(1, Some(vring::mem::memfd(c"e", 8).unwrap()))
        .is_err());
    // A blocking eventfd is accepted and made non-blocking (the VMM shares the flag).
    // SAFETY: eventfd takes no pointers and returns a new fd or -1.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    // SAFETY: a fresh fd owned by nothing else.
    let blocking = unsafe { File::from_raw_fd(efd) };
    let peer = blocking.try_clone().unwrap();
    n.set_vring_call(1, Some(blocking)).unwrap();
    // SAFETY: F_GETFL on an fd we own; no memory is passed.
    let fl = unsafe { libc::fcntl(peer.as_raw_fd(), libc::F_GETFL) };
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    n.set_vring_kick(1, Some(fd())).unwrap();
    assert_eq!(n.running_rings(), 1);
}
