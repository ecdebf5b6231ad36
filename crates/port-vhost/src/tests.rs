//! Handler tests: ring lifecycle rules and the fuzz harnesses under proptest.

use std::fs::File;

use proptest::prelude::*;
use vhost::vhost_user::message::VhostUserMemoryRegion;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserVringAddrFlags};
use vhost::vhost_user::VhostUserBackendReqHandlerMut;

use crate::fuzz::{fuzz_handler, fuzz_messages, RingBuilder};
use crate::*;

fn dev() -> NetDevice {
    NetDevice {
        name: "fuzz".into(),
        mac: [0x52, 0x54, 0, 0, 0, 9],
        mtu: 9000,
        queue_pairs: 1,
    }
}

fn fd() -> File {
    vring::mem::memfd(c"t", 8).unwrap()
}

/// A handler with 1 MiB of guest memory at gpa 0 (uaddr 0x1000_0000) and ring 1 set up
/// (size 256, rings at uaddr 0x1000_0000.. ), not yet kicked.
fn ready(features: u64) -> VhostUserNet<RingBuilder> {
    let mut n = VhostUserNet::new(dev(), RingBuilder::default());
    n.set_features(features).unwrap();
    let r = VhostUserMemoryRegion {
        guest_phys_addr: 0,
        memory_size: 1 << 20,
        user_addr: 0x1000_0000,
        mmap_offset: 0,
    };
    n.set_mem_table(&[r], vec![vring::mem::memfd(c"m", 1 << 20).unwrap()])
        .unwrap();
    n.set_vring_num(1, 256).unwrap();
    n.set_vring_addr(
        1,
        VhostUserVringAddrFlags::empty(),
        0x1000_0000,
        0x1000_2000,
        0x1000_1000,
        0,
    )
    .unwrap();
    n.set_vring_base(1, 5).unwrap();
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_messages(&data);
    }

    #[test]
    fn handler_sequences_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzz_handler(&data);
    }
}

#[test]
fn message_fuzz_with_valid_prefix() {
    // A well-formed GET_FEATURES then garbage: exercises the reply path.
    let mut d = vec![1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    d.extend_from_slice(&[0xff; 40]);
    fuzz_messages(&d);
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
    // Overlapping or unknown regions are refused without touching the ring.
    assert!(n
        .add_mem_region(&extra, vring::mem::memfd(c"y", 1 << 20).unwrap())
        .is_err());
    let unknown = VhostUserSingleMemoryRegion::new(5 << 30, 1 << 20, 0, 0);
    assert!(n.remove_mem_region(&unknown).is_err());
    assert_eq!(n.control().started, 2);
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
