//! Hostile peers: a guest that corrupts its rings loses only its own port (marked broken,
//! with a log line and a counter) while the other ports keep forwarding; garbage on a
//! vhost-user socket never takes vnetd down.

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use frontend::{Frontend, RawDesc};
use virtio_net::NetHdr;

const WAIT: Duration = Duration::from_secs(3);

fn ping(from: &mut Frontend, to: &mut Frontend, dst: MacAddr, src: MacAddr, tag: u8) {
    pass_frame(from, to, dst, src, tag, WAIT);
}

fn broken(v: &Vnetd, name: &str) -> bool {
    v.ports()
        .iter()
        .any(|p| p.name == name && p.state == api::PortState::Broken && p.broken_reason.is_some())
}

/// The features of every frontend: split rings, or packed ones.
fn features(packed: bool) -> u64 {
    if packed {
        frontend::DEFAULT_FEATURES | virtio_net::features::RING_PACKED
    } else {
        frontend::DEFAULT_FEATURES
    }
}

fn three_good_and_evil(packed: bool) -> (Vnetd, Frontend, Frontend, Frontend, Frontend) {
    let v = Vnetd::start(&["a", "b", "c", "evil"]);
    let all = features(packed);
    let mut a = connect(&v.sock("a"), all);
    let mut b = connect(&v.sock("b"), all);
    let mut c = connect(&v.sock("c"), all);
    let mut evil = connect(&v.sock("evil"), all);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    ping(&mut a, &mut b, mac(2), mac(1), 0);
    ping(&mut b, &mut a, mac(1), mac(2), 0);
    // The first ping flooded (b unknown then): clear it from c and evil.
    for f in [&mut c, &mut evil] {
        f.recv_all(0, Duration::from_millis(100)).unwrap();
    }
    (v, a, b, c, evil)
}

fn others_still_forward(v: &Vnetd, a: &mut Frontend, b: &mut Frontend, c: &mut Frontend) {
    for i in 1..20 {
        ping(a, b, mac(2), mac(1), i);
        ping(b, a, mac(1), mac(2), i);
    }
    ping(c, a, mac(1), mac(3), 99);
    ping(a, c, mac(3), mac(1), 98);
    let sb = v.port_stats("b");
    assert_eq!(sb.dropped("ring_broken"), 0, "{sb:?}");
}

#[test]
fn tx_avail_idx_jump_breaks_only_that_port() {
    let (v, mut a, mut b, mut c, mut evil) = three_good_and_evil(false);
    // avail.idx 1000 ahead of what the device consumed: impossible for a real driver.
    evil.set_avail_idx(1, 1000).unwrap();
    evil.kick(1).unwrap();
    v.wait_ports("evil broken", |_| broken(&v, "evil"));
    let se = v.port_stats("evil");
    assert_eq!(se.drops.get("ring_broken"), Some(&1), "{se:?}");
    assert!(
        v.log_text()
            .contains("port evil: guest violated the virtqueue rules"),
        "{}",
        v.log_text()
    );
    others_still_forward(&v, &mut a, &mut b, &mut c);
}

/// Raw descriptors no real driver writes, on either ring layout. Split: a table from id 0,
/// chain head 0. Packed: consecutive ring entries (`next` is the buffer id).
fn hostile_chains(packed: bool) -> Vec<Vec<RawDesc>> {
    let d = |addr, len, flags, next| RawDesc {
        addr,
        len,
        flags,
        next,
    };
    let mut v = vec![
        // A buffer far outside guest memory.
        vec![d(0xdead_0000_0000, 1500, 0, 0)],
        // A huge length.
        vec![d(0x1000, u32::MAX, 0, 0)],
        // An indirect table with more entries than the queue.
        vec![d(0x1000, 16 * 1000, RawDesc::INDIRECT, 0)],
        // Indirect with NEXT.
        vec![
            d(0x1000, 32, RawDesc::INDIRECT | RawDesc::NEXT, 0),
            d(0x1000, 64, 0, 0),
        ],
    ];
    if packed {
        // Every entry of the ring chained to the next: longer than the queue.
        v.push(vec![d(0x1000, 64, RawDesc::NEXT, 0); 256]);
    } else {
        // 0 -> 1 -> 0: a loop.
        v.push(vec![
            d(0x1000, 64, RawDesc::NEXT, 1),
            d(0x1000, 64, RawDesc::NEXT, 0),
        ]);
        // next out of range.
        v.push(vec![d(0x1000, 64, RawDesc::NEXT, 60000)]);
    }
    v
}

#[test]
fn descriptor_loop_and_wild_address_break_only_that_port() {
    for packed in [false, true] {
        for descs in hostile_chains(packed) {
            eprintln!("packed {packed}: {descs:?}");
            let (v, mut a, mut b, mut c, mut evil) = three_good_and_evil(packed);
            evil.raw_post_tx(0, &descs, &[0]).unwrap();
            v.wait_ports("evil broken", |_| broken(&v, "evil"));
            others_still_forward(&v, &mut a, &mut b, &mut c);
            // The broken port comes back when its frontend reconnects.
            drop(evil);
            v.wait_ports("evil down", |p| {
                p.iter()
                    .any(|p| p.name == "evil" && p.state == api::PortState::Down)
            });
            let mut evil = connect(&v.sock("evil"), features(packed));
            v.wait_ports("evil up", |p| {
                p.iter().all(|p| p.state == api::PortState::Up)
            });
            ping(&mut evil, &mut a, mac(1), mac(9), 7);
        }
    }
}

/// A frontend that shrinks its memory file after sharing it would make vnetd's next access
/// to that memory raise SIGBUS: vnetd survives it, marks that port broken, and the others
/// keep forwarding.
#[test]
fn truncated_guest_memory_breaks_only_that_port() {
    for packed in [false, true] {
        truncated_memory(packed);
    }
}

fn truncated_memory(packed: bool) {
    let (v, mut a, mut b, mut c, evil) = three_good_and_evil(packed);
    evil.truncate_memory().unwrap();
    // A broadcast reaches evil's rx ring: vnetd touches the truncated memory.
    let x = frame(MacAddr::BROADCAST, mac(1), 60, 7);
    a.send(0, &NetHdr::default(), &x).unwrap();
    for f in [&mut b, &mut c] {
        assert_eq!(f.recv(0, WAIT).unwrap().expect("broadcast").1, x);
    }
    v.wait_ports("evil broken", |_| broken(&v, "evil"));
    let reason = v
        .ports()
        .into_iter()
        .find(|p| p.name == "evil")
        .and_then(|p| p.broken_reason)
        .unwrap_or_default();
    assert!(reason.contains("truncated"), "{reason}");
    others_still_forward(&v, &mut a, &mut b, &mut c);
    let mut v = v;
    assert!(v.alive(), "vnetd died:\n{}", v.log_text());
    // Its mapping is gone for the test process too: never touch or drop it.
    std::mem::forget(evil);
}

#[test]
fn rx_ring_corruption_breaks_receiver_not_sender() {
    for packed in [false, true] {
        rx_ring_corruption(packed);
    }
}

fn rx_ring_corruption(packed: bool) {
    let (v, mut a, mut b, mut c, mut evil) = three_good_and_evil(packed);
    // Point every rx descriptor of evil far outside its memory (the address is the first
    // 8 bytes of a descriptor in both layouts; the rest, flags included, stays).
    let desc = evil.vring_addrs(0).unwrap().desc;
    let wild = 0xdead_0000_0000u64.to_le_bytes();
    for i in 0..256u64 {
        evil.write_guest(desc + 16 * i, &wild).unwrap();
    }
    // A broadcast from a reaches b and c; evil's rx ring is found corrupt on delivery.
    let x = frame(MacAddr::BROADCAST, mac(1), 60, 5);
    a.send(0, &NetHdr::default(), &x).unwrap();
    assert_eq!(b.recv(0, WAIT).unwrap().unwrap().1, x);
    assert_eq!(c.recv(0, WAIT).unwrap().unwrap().1, x);
    v.wait_ports("evil broken", |_| broken(&v, "evil"));
    assert!(!broken(&v, "a"));
    others_still_forward(&v, &mut a, &mut b, &mut c);
    let _ = evil;
}

/// A tiny deterministic generator (no extra dependency).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_vhost_user_messages_never_kill_vnetd() {
    let mut v = Vnetd::start(&["a", "b", "x"]);
    let all = frontend::DEFAULT_FEATURES;
    let mut a = connect(&v.sock("a"), all);
    let mut b = connect(&v.sock("b"), all);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut s = UnixStream::connect(v.sock("x")).unwrap();
        s.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        // A header (request code 0..=45, flags, size) with a random or fitting body.
        let code = (rng.next() % 46) as u32;
        let flags = if rng.next() % 4 == 0 {
            rng.next() as u32
        } else {
            1
        };
        let body_len = (rng.next() % 80) as usize;
        let size = if rng.next() % 3 == 0 {
            rng.next() as u32
        } else {
            body_len as u32
        };
        let mut msg = Vec::new();
        msg.extend_from_slice(&code.to_le_bytes());
        msg.extend_from_slice(&flags.to_le_bytes());
        msg.extend_from_slice(&size.to_le_bytes());
        for _ in 0..body_len {
            msg.push(rng.next() as u8);
        }
        // Several messages per connection sometimes, then hang up.
        let _ = s.write_all(&msg);
        if round % 7 == 0 {
            let _ = s.write_all(&msg);
        }
        drop(s);
    }
    // Truncated header and a stall: the per-message timeout frees the control thread.
    let mut s = UnixStream::connect(v.sock("x")).unwrap();
    s.write_all(&[1, 0, 0]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(v.alive(), "vnetd died:\n{}", v.log_text());
    ping(&mut a, &mut b, mac(2), mac(1), 1);
    drop(s);
    // A real frontend can still use the port that saw all the garbage.
    let mut x = connect(&v.sock("x"), all);
    v.wait_ports("x up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    ping(&mut x, &mut a, mac(1), mac(7), 2);
    assert!(v.alive());
}
