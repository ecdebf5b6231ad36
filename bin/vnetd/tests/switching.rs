//! vnetd switching frames between userspace virtio-net frontends: learning, unicast,
//! flooding, no hairpin, counters, across ring feature sets.

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::time::Duration;

use common::*;
use frontend::Frontend;
use virtio_net::NetHdr;

const WAIT: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(150);

fn recv_one(f: &mut Frontend) -> Vec<u8> {
    let (_, b) = f.recv(0, WAIT).unwrap().expect("frame expected");
    b
}

fn expect_none(f: &mut Frontend, who: &str) {
    if let Some((_, b)) = f.recv(0, QUIET).unwrap() {
        panic!(
            "{who} got an unexpected frame of {} bytes: {:02x?}",
            b.len(),
            &b[..14.min(b.len())]
        );
    }
}

fn scenario(feat: Feat) {
    scenario_in(feat, "event");
}

fn scenario_in(feat: Feat, mode: &str) {
    scenario_with(feat, &["--datapath", mode]);
}

fn scenario_with(feat: Feat, args: &[&str]) {
    scenario_ports(feat, ["", "", ""], args);
}

/// The scenario with port options `opts` for a, b and c.
fn scenario_ports(feat: Feat, opts: [&str; 3], args: &[&str]) {
    let v = Vnetd::start_ports_args(&[("a", opts[0]), ("b", opts[1]), ("c", opts[2])], args);
    let mut a = connect(&v.sock("a"), feat.features());
    let mut b = connect(&v.sock("b"), feat.features());
    let mut c = connect(&v.sock("c"), feat.features());
    v.wait_ports("all ports up", |p| {
        p.iter().all(|p| p.state == api::PortState::Up)
    });
    // The ring layout asked for is the one negotiated.
    for p in v.ports() {
        let feats = p.features.unwrap_or_default();
        assert_eq!(
            feats.split_whitespace().any(|x| x == "packed"),
            feat.packed,
            "port {}: {feats}",
            p.name
        );
    }
    let h = NetHdr::default();
    let (ma, mb, mc) = (mac(1), mac(2), mac(3));

    // 1. Broadcast from A floods to B and C, never back to A.
    let bc = frame(MacAddr::BROADCAST, ma, 60, 1);
    a.send(0, &h, &bc).unwrap();
    assert_eq!(recv_one(&mut b), bc, "{feat:?}");
    assert_eq!(recv_one(&mut c), bc, "{feat:?}");
    expect_none(&mut a, "a (hairpin)");

    // 2. B answers A: A was learned, so only A gets it (a 1514-byte frame).
    let ba = frame(ma, mb, 1514, 2);
    b.send(0, &h, &ba).unwrap();
    assert_eq!(recv_one(&mut a), ba, "{feat:?}");
    expect_none(&mut c, "c (unicast to a)");

    // 3. A to B, now learned too: only B.
    let ab = frame(mb, ma, 100, 3);
    a.send(0, &h, &ab).unwrap();
    assert_eq!(recv_one(&mut b), ab, "{feat:?}");
    expect_none(&mut c, "c (unicast to b)");

    // 4. Unknown unicast from C floods to A and B.
    let unknown = frame(mac(99), mc, 200, 4);
    c.send(0, &h, &unknown).unwrap();
    assert_eq!(recv_one(&mut a), unknown);
    assert_eq!(recv_one(&mut b), unknown);
    expect_none(&mut c, "c (hairpin)");

    // 5. A frame to A's own MAC from A is a hairpin: dropped and counted.
    a.send(0, &h, &frame(ma, ma, 64, 5)).unwrap();
    expect_none(&mut a, "a (self)");

    // 6. A burst: 200 frames A -> B arrive complete and in order.
    let burst: Vec<Vec<u8>> = (0..200)
        .map(|i| frame(mb, ma, 64 + i * 7, i as u8))
        .collect();
    // Chunks stay below the 15 rx chains a no-MRG, no-indirect guest can post (64 KiB each).
    for chunk in burst.chunks(10) {
        let refs: Vec<(NetHdr, &[u8])> = chunk.iter().map(|x| (h, x.as_slice())).collect();
        a.send_burst(0, &refs).unwrap();
        for x in chunk {
            assert_eq!(&recv_one(&mut b), x);
        }
    }
    expect_none(&mut c, "c (burst)");

    // Counters: rx = frames the switch took from the port, tx = frames it gave to it.
    std::thread::sleep(Duration::from_millis(50));
    let burst_bytes: u64 = burst.iter().map(|x| x.len() as u64).sum();
    let sa = v.port_stats("a");
    let sb = v.port_stats("b");
    let sc = v.port_stats("c");
    assert_eq!(
        (sa.rx_packets, sa.rx_bytes),
        (203, 60 + 100 + 64 + burst_bytes),
        "{sa:?}"
    );
    assert_eq!((sa.tx_packets, sa.tx_bytes), (2, 1514 + 200), "{sa:?}");
    assert_eq!(sa.drops.get("hairpin"), Some(&1), "{sa:?}");
    assert_eq!((sb.rx_packets, sb.rx_bytes), (1, 1514), "{sb:?}");
    assert_eq!(
        (sb.tx_packets, sb.tx_bytes),
        (203, 60 + 100 + 200 + burst_bytes),
        "{sb:?}"
    );
    assert_eq!((sc.rx_packets, sc.tx_packets), (1, 1), "{sc:?}");
    assert_eq!(sb.total_drops() + sc.total_drops(), 0, "{sb:?} {sc:?}");

    // The FDB shows the three stations on their ports.
    let api::Response::Fdb(fdb) = v.call(api::Request::Fdb) else {
        panic!()
    };
    for (m, p) in [
        ("52:54:00:00:00:01", "a"),
        ("52:54:00:00:00:02", "b"),
        ("52:54:00:00:00:03", "c"),
    ] {
        assert!(
            fdb.iter().any(|e| e.mac.to_string() == m && e.port == p),
            "{m} on {p}: {fdb:?}"
        );
    }
    if args.windows(2).any(|w| w == ["--workers", "2"]) {
        // The rings ran where the test says they did.
        let log = v.log_text();
        for (port, worker) in [("a", 0), ("b", 1), ("c", 0)] {
            for ring in 0..2 {
                let line = format!("port {port}: ring {ring} started on worker {worker}");
                assert!(log.contains(&line), "{line} not in the log:\n{log}");
            }
        }
    }
}

#[test]
fn switching_across_feature_sets() {
    for feat in Feat::all() {
        eprintln!("scenario {feat:?}");
        scenario(feat);
    }
}

/// The richest and the plainest ring feature sets, split and packed.
fn extremes() -> Vec<Feat> {
    Feat::extremes()
}

/// Two workers: ports a and c run on worker 0, b on worker 1, so frames between b and the
/// others cross workers (through a mailbox) and a <-> c stays on one. Everything the
/// one-worker scenario checks holds: delivery, flooding, hairpin, counters, the FDB.
#[test]
fn two_workers() {
    for mode in ["event", "poll"] {
        for feat in extremes() {
            eprintln!("scenario 2 workers {mode} {feat:?}");
            scenario_with(feat, &["--workers", "2", "--datapath", mode]);
        }
    }
}

/// Each port in its own mode (`datapath=` on the port): a polled, b kick-driven, c
/// adaptive, on one worker and spread over two.
#[test]
fn per_port_datapath_modes() {
    let opts = ["datapath=poll", "datapath=event", "datapath=adaptive"];
    for workers in ["1", "2"] {
        for feat in extremes() {
            eprintln!("scenario per-port modes, {workers} worker(s), {feat:?}");
            scenario_ports(feat, opts, &["--workers", workers]);
        }
    }
}

#[test]
fn poll_and_adaptive_datapath_modes() {
    for mode in ["poll", "adaptive"] {
        for feat in extremes() {
            eprintln!("scenario {mode} {feat:?}");
            scenario_in(feat, mode);
        }
    }
}

#[test]
fn port_down_on_disconnect_and_back_on_reconnect() {
    let v = Vnetd::start(&["a", "b"]);
    let all = frontend::DEFAULT_FEATURES;
    let mut a = connect(&v.sock("a"), all);
    let mut b = connect(&v.sock("b"), all);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let h = NetHdr::default();
    a.send(0, &h, &frame(MacAddr::BROADCAST, mac(1), 60, 0))
        .unwrap();
    recv_one(&mut b);
    drop(b);
    v.wait_ports("b down", |p| {
        p.iter()
            .any(|p| p.name == "b" && p.state == api::PortState::Down)
    });
    // Frames to the absent port are dropped quietly; A still works. (Wait until vnetd took
    // the frame, so it cannot reach the next b.)
    a.send(0, &h, &frame(mac(2), mac(1), 60, 1)).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while v.port_stats("a").rx_packets < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            v.port_stats("a")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut b = connect(&v.sock("b"), all);
    v.wait_ports("b up again", |p| {
        p.iter().all(|p| p.state == api::PortState::Up)
    });
    let x = frame(mac(2), mac(1), 60, 2);
    a.send(0, &h, &x).unwrap();
    assert_eq!(recv_one(&mut b), x);
}

#[test]
fn multi_region_memory_with_add_mem_reg_and_set_mem_table() {
    use frontend::{FrontendConfig, MemRegistration};
    for reg in [MemRegistration::AddMemReg, MemRegistration::SetMemTable] {
        let v = Vnetd::start(&["a", "b"]);
        let cfg = |p| FrontendConfig {
            regions: 3,
            guest_base: 0x1_0000_0000,
            mem_registration: reg,
            ..FrontendConfig::new(v.sock(p))
        };
        let mut a = Frontend::connect(cfg("a")).unwrap();
        let mut b = Frontend::connect(cfg("b")).unwrap();
        v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
        let h = NetHdr::default();
        // Enough traffic that buffers in every region are used.
        for i in 0..300u32 {
            let x = frame(
                MacAddr::BROADCAST,
                mac(1),
                60 + (i as usize * 13) % 1400,
                i as u8,
            );
            a.send(0, &h, &x).unwrap();
            assert_eq!(recv_one(&mut b), x, "{reg:?} frame {i}");
        }
        assert!(
            v.log_text()
                .contains("port a: guest memory now 3 region(s)"),
            "{}",
            v.log_text()
        );
    }
}

/// Event mode sleeps between frames: after the grace period a txq's kicks are re-armed and
/// the worker waits in epoll. A request/response exchange with a pause before every
/// request (longer than the grace period) makes each request wake vnetd, and each answer
/// come while the ring is still polled with its kicks disarmed; a wake-up lost on either
/// path leaves a frame in a ring and `recv` times out. The frontends sleep on their call
/// eventfds too, so vnetd's calls are covered as well. Split and packed rings, with and
/// without EVENT_IDX (kick suppression by `avail_event`, by flags, by the event
/// suppression structures).
#[test]
fn event_mode_wakes_for_every_frame() {
    for packed in [false, true] {
        for event_idx in [true, false] {
            let feat = Feat {
                mrg: true,
                event_idx,
                indirect: true,
                packed,
            };
            let v = Vnetd::start_ports_args(&[("a", ""), ("b", "")], &["--datapath", "event"]);
            let mut a = connect(&v.sock("a"), feat.features());
            let mut b = connect(&v.sock("b"), feat.features());
            v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
            let h = NetHdr::default();
            let rounds = 300u32;
            for i in 0..rounds {
                // Longer than the 30 us grace period: vnetd is asleep when the request
                // comes (the previous answer came back a while ago).
                std::thread::sleep(Duration::from_micros(200));
                let tag = (i % 251) as u8;
                let req = frame(mac(2), mac(1), 64, tag);
                a.send(0, &h, &req).unwrap();
                let got = b.recv(0, WAIT).unwrap();
                assert_eq!(
                    got.map(|(_, f)| f),
                    Some(req),
                    "{feat:?}: request {i} not delivered (a lost wake-up?)"
                );
                let resp = frame(mac(1), mac(2), 64, tag);
                b.send(0, &h, &resp).unwrap();
                let got = a.recv(0, WAIT).unwrap();
                assert_eq!(
                    got.map(|(_, f)| f),
                    Some(resp),
                    "{feat:?}: answer {i} not delivered (a lost wake-up?)"
                );
            }
            // Counters are published after the burst that counted them, within
            // milliseconds: the last answer can be read before that.
            let want = (u64::from(rounds), u64::from(rounds));
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let (mut sa, mut sb) = (v.port_stats("a"), v.port_stats("b"));
            while (sa.rx_packets, sb.tx_packets) != want && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                (sa, sb) = (v.port_stats("a"), v.port_stats("b"));
            }
            assert_eq!((sa.rx_packets, sb.tx_packets), want);
            assert_eq!(sa.total_drops() + sb.total_drops(), 0, "{sa:?} {sb:?}");
        }
    }
}

/// Mergeable rx buffers and EVENT_IDX, no indirect descriptors: what DPDK's virtio-user
/// and Linux guests negotiate for the express lane's frames.
fn express_feat(packed: bool) -> Feat {
    Feat {
        mrg: true,
        event_idx: true,
        indirect: false,
        packed,
    }
}

/// A station that moves in the middle of a burst: the frames after the move go where the
/// table now says, not where the frames with the same addresses before it went.
#[test]
fn a_station_moving_within_a_burst_redirects_the_rest() {
    for packed in [false, true] {
        let feat = express_feat(packed);
        let v = Vnetd::start_ports_args(&[("a", ""), ("b", "")], &[]);
        let cfg = |name: &str| frontend::FrontendConfig {
            wanted_features: feat.features(),
            tx_layout: frontend::TxLayout::Contiguous,
            ..frontend::FrontendConfig::new(v.sock(name))
        };
        let mut a = Frontend::connect(cfg("a")).unwrap();
        let mut b = Frontend::connect(cfg("b")).unwrap();
        v.wait_ports("all ports up", |p| {
            p.iter().all(|p| p.state == api::PortState::Up)
        });
        let h = NetHdr::default();
        let (ma, mb) = (mac(1), mac(2));
        a.send(0, &h, &frame(MacAddr::BROADCAST, ma, 64, 0))
            .unwrap();
        recv_one(&mut b);
        b.send(0, &h, &frame(ma, mb, 64, 0)).unwrap();
        recv_one(&mut a);

        // Four frames a -> b; then one from a with b's address as its source (b's
        // station moves to port a), to a's own address (hairpin); then four more a -> b,
        // which now resolve to port a as well.
        let burst: Vec<Vec<u8>> = (0..9u8)
            .map(|i| match i {
                4 => frame(ma, mb, 70, i),
                _ => frame(mb, ma, 64 + usize::from(i), i),
            })
            .collect();
        let refs: Vec<(NetHdr, &[u8])> = burst.iter().map(|x| (h, x.as_slice())).collect();
        a.send_burst(0, &refs).unwrap();

        let got: Vec<Vec<u8>> = b
            .recv_all(0, QUIET)
            .unwrap()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(got, burst[..4].to_vec(), "packed {packed}: b's frames");
        std::thread::sleep(Duration::from_millis(50));
        let sa = v.port_stats("a");
        assert_eq!(
            (sa.rx_packets, sa.dropped("hairpin")),
            (1 + 9, 5),
            "packed {packed}: {sa:?}"
        );
        assert_eq!(v.port_stats("b").tx_packets, 1 + 4, "packed {packed}");
    }
}

/// One tx burst to two guests, in runs of frames to the same guest (what the express
/// lane delivers a run at a time): each guest gets its frames in order; a receiver that
/// runs out of rx buffers part way gets those that fit and counts the rest once each; a
/// frame over a receiver's MTU in the middle of a run is counted and the run goes on.
#[test]
fn runs_of_a_burst_keep_order_and_count_what_does_not_fit() {
    for packed in [false, true] {
        let feat = express_feat(packed);
        let v = Vnetd::start_ports_args(&[("a", ""), ("b", ""), ("c", "mtu=200")], &[]);
        let cfg = |name: &str, queue_size: u16| frontend::FrontendConfig {
            wanted_features: feat.features(),
            queue_size,
            // Header and frame in one buffer, as DPDK and Linux send small frames: the
            // express lane's frames.
            tx_layout: frontend::TxLayout::Contiguous,
            ..frontend::FrontendConfig::new(v.sock(name))
        };
        let mut a = Frontend::connect(cfg("a", 256)).unwrap();
        // 16 rx buffers: fewer than the frames b is sent.
        let mut b = Frontend::connect(cfg("b", 16)).unwrap();
        let mut c = Frontend::connect(cfg("c", 256)).unwrap();
        v.wait_ports("all ports up", |p| {
            p.iter().all(|p| p.state == api::PortState::Up)
        });
        let h = NetHdr::default();
        let (ma, mb, mc) = (mac(1), mac(2), mac(3));
        // Every station makes itself known.
        a.send(0, &h, &frame(MacAddr::BROADCAST, ma, 64, 0))
            .unwrap();
        recv_one(&mut b);
        recv_one(&mut c);
        b.send(0, &h, &frame(ma, mb, 64, 0)).unwrap();
        c.send(0, &h, &frame(ma, mc, 64, 0)).unwrap();
        recv_one(&mut a);
        recv_one(&mut a);

        // 48 frames: 6 to b, 6 to c, and so on; the 21st (to c) is over c's MTU.
        let burst: Vec<(MacAddr, Vec<u8>)> = (0..48usize)
            .map(|i| {
                let dst = if (i / 6) % 2 == 0 { mb } else { mc };
                let len = if i == 20 { 400 } else { 64 + i };
                (dst, frame(dst, ma, len, i as u8))
            })
            .collect();
        let refs: Vec<(NetHdr, &[u8])> = burst.iter().map(|(_, x)| (h, x.as_slice())).collect();
        a.send_burst(0, &refs).unwrap();

        let to = |m: MacAddr| -> Vec<&Vec<u8>> {
            burst
                .iter()
                .enumerate()
                .filter(|(i, (d, _))| *d == m && *i != 20)
                .map(|(_, (_, x))| x)
                .collect()
        };
        // Each receiver gets the first `n` of its frames, in order.
        let check = |f: &mut Frontend, m: MacAddr, n: usize| {
            let got: Vec<Vec<u8>> = f
                .recv_all(0, QUIET)
                .unwrap()
                .into_iter()
                .map(|x| x.1)
                .collect();
            let want = to(m);
            assert_eq!(
                got.len(),
                n,
                "packed {packed}: {m} got {} frames",
                got.len()
            );
            assert!(
                got.iter().zip(&want).all(|(g, w)| g == *w),
                "packed {packed}: {m}'s frames out of order"
            );
            want
        };
        let want_c = check(&mut c, mc, 23);
        let want_b = check(&mut b, mb, 16);

        std::thread::sleep(Duration::from_millis(50));
        let sa = v.port_stats("a");
        let sb = v.port_stats("b");
        let sc = v.port_stats("c");
        let bytes = |xs: &[&Vec<u8>]| xs.iter().map(|x| x.len() as u64).sum::<u64>();
        let all: u64 = burst.iter().map(|(_, x)| x.len() as u64).sum();
        assert_eq!(
            (sa.rx_packets, sa.rx_bytes),
            (1 + 48, 64 + all),
            "packed {packed}: {sa:?}"
        );
        assert_eq!(
            (sb.tx_packets, sb.tx_bytes, sb.dropped("no_rx_buffer")),
            (1 + 16, 64 + bytes(&want_b[..16]), 8),
            "packed {packed}: {sb:?}"
        );
        assert_eq!(
            (sc.tx_packets, sc.tx_bytes, sc.dropped("oversize")),
            (1 + 23, 64 + bytes(&want_c), 1),
            "packed {packed}: {sc:?}"
        );
        assert_eq!(sa.total_drops(), 0, "packed {packed}: {sa:?}");
    }
}
