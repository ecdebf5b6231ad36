//! Queue-level tests against the device simulator in `testutil` (no backend, no socket).

use super::*;
use crate::queue::{QueueParams, RxPoll, RxQueue, TxQueue};
use crate::testutil::Dev;
use std::time::{Duration, Instant};
use virtio_net::NetHdr;
use virtio_net::HDR_LEN_V1;

/// Driver rx/tx queues plus a device that loops every tx frame back into rx buffers.
struct Sim {
    mem: GuestMemory,
    tx: TxQueue,
    rx: RxQueue,
    txd: Dev,
    rxd: Dev,
    mrg: bool,
}

#[derive(Debug, Clone, Copy)]
struct Opts {
    mrg: bool,
    event_idx: bool,
    indirect: bool,
    layout: TxLayout,
    big: bool,
    size: u16,
}

const OPTS: Opts = Opts {
    mrg: true,
    event_idx: true,
    indirect: false,
    layout: TxLayout::HdrSeparate,
    big: false,
    size: 64,
};

impl Sim {
    fn new(o: Opts) -> Sim {
        let mut mem = GuestMemory::new(0x4000_0000, 64 << 20, 3).unwrap();
        let hdr_len = HDR_LEN_V1;
        let p = |index| QueueParams {
            index,
            size: o.size,
            event_idx: o.event_idx,
            packed: false,
            hdr_len,
            indirect: o.indirect,
            big: o.big,
        };
        let mut rx = RxQueue::new(&mut mem, p(0), o.mrg, 2048).unwrap();
        rx.publish(&mem).unwrap();
        let tx = TxQueue::new(&mut mem, p(1), o.layout).unwrap();
        let txd = Dev::new(tx.ring.addrs(), o.event_idx);
        let rxd = Dev::new(rx.ring.addrs(), o.event_idx);
        Sim {
            mem,
            tx,
            rx,
            txd,
            rxd,
            mrg: o.mrg,
        }
    }

    fn send(&mut self, frame: &[u8]) {
        self.tx.reclaim(&self.mem).unwrap();
        assert!(self
            .tx
            .enqueue(&mut self.mem, &NetHdr::default(), frame)
            .unwrap());
        self.tx.ring.publish(&self.mem).unwrap();
    }

    /// Device: moves every available tx chain into rx buffers. Returns frames moved.
    fn device_loop(&mut self) -> usize {
        let mut n = 0;
        while let Some((head, descs)) = self.txd.pop(&self.mem) {
            let bytes = Dev::read_chain(&self.mem, &descs);
            self.txd.add_used(&mut self.mem, u32::from(head), 0);
            self.txd.publish(&self.mem);
            self.deliver(&bytes);
            n += 1;
        }
        n
    }

    /// Device: writes header + frame `bytes` into rx chains (merging with MRG_RXBUF).
    fn deliver(&mut self, bytes: &[u8]) {
        let mut bytes = bytes.to_vec();
        if self.mrg {
            let nbufs = bytes.len().div_ceil(2048).max(1);
            bytes[10..12].copy_from_slice(&u16::try_from(nbufs).unwrap().to_le_bytes());
            let mut off = 0;
            for _ in 0..nbufs {
                let (head, descs) = self.rxd.pop(&self.mem).expect("rx buffer");
                let w = Dev::write_chain(&mut self.mem, &descs, &bytes[off..]);
                self.rxd
                    .add_used(&mut self.mem, u32::from(head), u32::try_from(w).unwrap());
                off += w;
            }
            assert_eq!(off, bytes.len());
        } else {
            let (head, descs) = self.rxd.pop(&self.mem).expect("rx chain");
            let w = Dev::write_chain(&mut self.mem, &descs, &bytes);
            assert_eq!(w, bytes.len(), "rx chain too small");
            self.rxd
                .add_used(&mut self.mem, u32::from(head), u32::try_from(w).unwrap());
        }
        self.rxd.publish(&self.mem);
    }

    fn recv(&mut self) -> Option<(NetHdr, Vec<u8>)> {
        match self.rx.poll(&mut self.mem).unwrap() {
            RxPoll::Frame { hdr, data, .. } => Some((hdr, data)),
            RxPoll::Empty | RxPoll::Incomplete => None,
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| i.to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// One scenario, run across feature sets and layouts.
#[test]
fn loopback_across_feature_sets() {
    let layouts = [
        TxLayout::HdrSeparate,
        TxLayout::Contiguous,
        TxLayout::Split(100),
        TxLayout::Split(4096),
    ];
    for mrg in [true, false] {
        for event_idx in [true, false] {
            for indirect in [false, true] {
                for big in [false, true] {
                    for layout in layouts {
                        let o = Opts {
                            mrg,
                            event_idx,
                            indirect,
                            layout,
                            big,
                            size: 256,
                        };
                        let mut sim = Sim::new(o);
                        let mut sizes = vec![0, 60, 1514];
                        if mrg || big {
                            sizes.push(9000);
                        }
                        if big && !matches!(layout, TxLayout::Split(100)) {
                            sizes.push(65550);
                        }
                        for (k, &len) in sizes.iter().enumerate() {
                            // Several rounds so the rings wrap and buffers get reposted.
                            for round in 0..3u8 {
                                let f = pattern(len, round.wrapping_add(k.to_le_bytes()[0]));
                                sim.send(&f);
                                assert_eq!(sim.device_loop(), 1, "{o:?}");
                                let (hdr, data) =
                                    sim.recv().unwrap_or_else(|| panic!("{o:?} len {len}"));
                                assert!(data == f, "{o:?} len {len}: data differs");
                                let want_nb = if mrg {
                                    (len + HDR_LEN_V1).div_ceil(2048).max(1)
                                } else {
                                    0
                                };
                                assert_eq!(usize::from(hdr.num_buffers), want_nb, "{o:?}");
                                assert!(sim.recv().is_none());
                            }
                        }
                        // Everything returned: reclaim frees all tx descriptors.
                        sim.tx.reclaim(&sim.mem).unwrap();
                        assert_eq!(sim.tx.ring.inflight(), 0);
                        assert_eq!(sim.tx.ring.free_count(), 256);
                    }
                }
            }
        }
    }
}

#[test]
fn tx_layouts_cut_descriptors_as_configured() {
    let cases = [
        (TxLayout::HdrSeparate, vec![12, 1000]),
        (TxLayout::Contiguous, vec![1012]),
        (TxLayout::Split(300), vec![300, 300, 300, 112]),
    ];
    for indirect in [false, true] {
        for (layout, lens) in &cases {
            let mut sim = Sim::new(Opts {
                layout: *layout,
                indirect,
                ..OPTS
            });
            let hdr = NetHdr {
                flags: virtio_net::HDR_F_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 16,
                ..NetHdr::default()
            };
            let frame = pattern(1000, 1);
            assert!(sim.tx.enqueue(&mut sim.mem, &hdr, &frame).unwrap());
            sim.tx.ring.publish(&sim.mem).unwrap();
            let (_, descs) = sim.txd.pop(&sim.mem).unwrap();
            let got: Vec<usize> = descs.iter().map(|d| d.len as usize).collect();
            assert_eq!(&got, lens, "{layout:?} indirect {indirect}");
            let bytes = Dev::read_chain(&sim.mem, &descs);
            assert_eq!(NetHdr::parse(&bytes[..12]).unwrap(), hdr);
            assert_eq!(&bytes[12..], &frame[..]);
            // One ring descriptor per chain with indirect.
            let used_descs = 64 - sim.tx.ring.free_count();
            assert_eq!(used_descs, if indirect { 1 } else { lens.len() });
        }
    }
}

#[test]
fn tx_full_and_too_large() {
    let mut sim = Sim::new(Opts { size: 8, ..OPTS });
    let max = sim.tx.max_frame();
    assert_eq!(max, 9216);
    assert!(matches!(
        sim.tx.enqueue(&mut sim.mem, &NetHdr::default(), &vec![0; max + 1]),
        Err(FrontendError::FrameTooLarge { len, .. }) if len == max + 1
    ));
    // Two descriptors per frame (HdrSeparate): 4 frames fill 8 descriptors.
    for _ in 0..4 {
        assert!(sim
            .tx
            .enqueue(&mut sim.mem, &NetHdr::default(), &[1; 60])
            .unwrap());
    }
    assert!(!sim
        .tx
        .enqueue(&mut sim.mem, &NetHdr::default(), &[1; 60])
        .unwrap());
    sim.tx.ring.publish(&sim.mem).unwrap();
    assert_eq!(sim.tx.reclaim(&sim.mem).unwrap(), 0);
    assert_eq!(sim.device_loop(), 4);
    assert_eq!(sim.tx.reclaim(&sim.mem).unwrap(), 4);
    assert!(sim
        .tx
        .enqueue(&mut sim.mem, &NetHdr::default(), &[1; 60])
        .unwrap());
    // Split(n): at most ring-size descriptors per chain.
    let sim = Sim::new(Opts {
        size: 8,
        layout: TxLayout::Split(2),
        ..OPTS
    });
    assert_eq!(sim.tx.max_frame(), 16 - HDR_LEN_V1);
    let mut mem = GuestMemory::new(0, 8 << 20, 1).unwrap();
    let p = QueueParams {
        index: 1,
        size: 8,
        event_idx: false,
        packed: false,
        hdr_len: 12,
        indirect: false,
        big: false,
    };
    assert!(matches!(
        TxQueue::new(&mut mem, p, TxLayout::Split(1)),
        Err(FrontendError::Config(_))
    ));
    assert!(matches!(
        TxQueue::new(&mut mem, p, TxLayout::Split(0)),
        Err(FrontendError::Config(_))
    ));
}

/// Delivers raw used elements to rx: `(bytes written into the chain, used len reported)`
/// with the header's num_buffers set to `nbufs`.
fn deliver_raw(sim: &mut Sim, nbufs: u16, elems: &[(usize, u32)]) {
    for (i, &(write, len)) in elems.iter().enumerate() {
        let (head, descs) = sim.rxd.pop(&sim.mem).unwrap();
        let mut b = pattern(write, 9);
        if i == 0 && b.len() >= 12 {
            b[..12].fill(0);
            b[10..12].copy_from_slice(&nbufs.to_le_bytes());
        }
        Dev::write_chain(&mut sim.mem, &descs, &b);
        sim.rxd.add_used(&mut sim.mem, u32::from(head), len);
    }
    sim.rxd.publish(&sim.mem);
}

#[test]
fn rx_merged_frame_waits_for_all_buffers() {
    let mut sim = Sim::new(OPTS);
    // 3 buffers announced, 2 published.
    deliver_raw(&mut sim, 3, &[(2048, 2048), (2048, 2048)]);
    assert!(matches!(
        sim.rx.poll(&mut sim.mem).unwrap(),
        RxPoll::Incomplete
    ));
    assert!(matches!(
        sim.rx.poll(&mut sim.mem).unwrap(),
        RxPoll::Incomplete
    ));
    deliver_raw(&mut sim, 0, &[(100, 100)]);
    let (hdr, data) = sim.recv().unwrap();
    assert_eq!(hdr.num_buffers, 3);
    assert_eq!(data.len(), 2048 * 2 + 100 - 12);
    // All 64 buffers are posted again.
    assert_eq!(sim.rx.ring.inflight(), 64);
}

#[test]
fn rx_rejects_bad_backend_input() {
    type Case<'a> = (&'a str, Opts, u16, &'a [(usize, u32)]);
    let cases: [Case; 6] = [
        ("len beyond the buffer", OPTS, 1, &[(2048, 2049)]),
        ("len shorter than the header", OPTS, 1, &[(12, 11)]),
        ("num_buffers 0", OPTS, 0, &[(100, 100)]),
        ("num_buffers beyond the ring", OPTS, 65, &[(100, 100)]),
        (
            "len beyond a no-mrg chain",
            Opts { mrg: false, ..OPTS },
            1,
            &[(2048, 1_000_000)],
        ),
        (
            "len beyond a big chain",
            Opts {
                mrg: false,
                big: true,
                ..OPTS
            },
            1,
            &[(2048, 65550 + 12 + 4096)],
        ),
    ];
    for (what, o, nbufs, elems) in cases {
        let mut sim = Sim::new(o);
        deliver_raw(&mut sim, nbufs, elems);
        let r = sim.rx.poll(&mut sim.mem);
        assert!(
            matches!(r, Err(FrontendError::BadBackend { queue: 0, .. })),
            "{what}: {r:?}"
        );
    }
    // Without MRG_RXBUF num_buffers is not interpreted.
    let mut sim = Sim::new(Opts { mrg: false, ..OPTS });
    deliver_raw(&mut sim, 0, &[(100, 100)]);
    assert_eq!(sim.recv().unwrap().1.len(), 88);
}

#[test]
fn rx_chain_shapes() {
    // No MRG, no GSO: one 2048-byte descriptor per chain (>= 1526 + 12).
    let sim = Sim::new(Opts { mrg: false, ..OPTS });
    assert_eq!(sim.rx.chains(), 64);
    // Big: 17 x 4096 per chain, so 256 / 17 chains.
    let mut sim = Sim::new(Opts {
        mrg: false,
        big: true,
        size: 256,
        ..OPTS
    });
    assert_eq!(sim.rx.chains(), 15);
    let (_, descs) = sim.rxd.pop(&sim.mem).unwrap();
    assert_eq!(descs.len(), 17);
    assert!(descs.iter().all(|d| d.len == 4096));
    // Big with indirect: one ring descriptor per chain.
    let sim = Sim::new(Opts {
        mrg: false,
        big: true,
        indirect: true,
        size: 256,
        ..OPTS
    });
    assert_eq!(sim.rx.chains(), 64);
    // A 17-descriptor chain cannot fit a ring of 16.
    let mut mem = GuestMemory::new(0, 8 << 20, 1).unwrap();
    let p = QueueParams {
        index: 0,
        size: 16,
        event_idx: false,
        packed: false,
        hdr_len: 12,
        indirect: false,
        big: true,
    };
    assert!(matches!(
        RxQueue::new(&mut mem, p, false, 2048),
        Err(FrontendError::Config(_))
    ));
}

#[test]
fn config_and_rawdesc_encoding() {
    let c = NetConfig::parse(&[1, 2, 3, 4, 5, 6, 1, 0, 4, 0, 0xdc, 0x05]);
    assert_eq!(
        c,
        NetConfig {
            mac: wire::MacAddr([1, 2, 3, 4, 5, 6]),
            status: 1,
            max_virtqueue_pairs: 4,
            mtu: 1500
        }
    );
    assert_eq!(NetConfig::parse(&[9; 7]).status, 0);
    let d = RawDesc {
        addr: 0x1122_3344_5566_7788,
        len: 0x99aa_bbcc,
        flags: RawDesc::NEXT | RawDesc::WRITE,
        next: 0x0102,
    };
    let b = d.encode();
    assert_eq!(&b[..8], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&b[8..12], &0x99aa_bbccu32.to_le_bytes());
    assert_eq!(&b[12..14], &3u16.to_le_bytes());
    assert_eq!(&b[14..], &0x0102u16.to_le_bytes());
}

#[test]
fn connect_times_out_on_missing_socket() {
    let cfg = FrontendConfig {
        connect_timeout: Duration::from_millis(100),
        ..FrontendConfig::new("/nonexistent/vnet-frontend.sock")
    };
    let t = Instant::now();
    assert!(matches!(
        Frontend::connect(cfg),
        Err(FrontendError::Connect { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    let bad = FrontendConfig {
        queue_size: 100,
        ..FrontendConfig::new("/nonexistent")
    };
    assert!(matches!(
        Frontend::connect(bad),
        Err(FrontendError::Config(_))
    ));
}

#[test]
fn frontend_is_send() {
    fn send<T: Send>() {}
    send::<Frontend>();
    send::<FrontendError>();
}
