//! Loop test against a third-party backend: DPDK's vhost PMD in `dpdk-testpmd`, io
//! forwarding with loop topology, so every frame the frontend sends comes back unchanged.
//!
//! Skipped (with a message) when `dpdk-testpmd` is not on PATH, unless
//! `VNET_REQUIRE_DPDK=1`, which turns that into a failure.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use virtio_net::{features as f, NetHdr};
use vnet_frontend::{Frontend, FrontendConfig, FrontendError, MemRegistration, TxLayout};

/// testpmd busy-polls a core; run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running `dpdk-testpmd`; killed, and its socket and runtime dir removed, on drop
/// (also when the test panics).
struct Testpmd {
    child: Child,
    /// Held open: non-interactive testpmd exits when stdin reaches EOF.
    _stdin: Option<ChildStdin>,
    sock: PathBuf,
    log: PathBuf,
    prefix: String,
}

impl Testpmd {
    /// Starts testpmd with a vhost-user server port of `queues` queue pairs and extra
    /// vdev arguments (e.g. ",tso=1"). `None` if DPDK is not installed and not required.
    fn start(queues: u16, vdev_extra: &str) -> Option<Testpmd> {
        let Some(bin) = testbed::dpdk::which(testbed::dpdk::TESTPMD) else {
            testbed::skip(
                "VNET_REQUIRE_DPDK",
                "DPDK tests: dpdk-testpmd is not on PATH (run `cargo xtask deps`)",
            );
            return None;
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("vnetfe-{}-{n}", std::process::id());
        let sock = PathBuf::from(format!("/tmp/{prefix}.sock"));
        let log = PathBuf::from(format!("/tmp/{prefix}.log"));
        let _ = std::fs::remove_file(&sock);
        let logf = File::create(&log).expect("create testpmd log");
        let mut child = Command::new(bin)
            .args([
                "-l",
                "0,1",
                "--no-huge",
                "-m",
                "256",
                "--no-pci",
                "--no-shconf",
            ])
            .arg(format!("--file-prefix={prefix}"))
            .arg(format!(
                "--vdev=net_vhost0,iface={},queues={queues},client=0{vdev_extra}",
                sock.display()
            ))
            .args([
                "--",
                "--forward-mode=io",
                "--port-topology=loop",
                "--auto-start",
                "--total-num-mbufs=8192",
            ])
            .arg(format!("--rxq={queues}"))
            .arg(format!("--txq={queues}"))
            .stdin(Stdio::piped())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .spawn()
            .expect("spawn dpdk-testpmd");
        let stdin = child.stdin.take();
        let mut tp = Testpmd {
            child,
            _stdin: stdin,
            sock,
            log,
            prefix,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !tp.sock.exists() {
            if let Ok(Some(status)) = tp.child.try_wait() {
                panic!(
                    "testpmd exited ({status}) before creating its socket:\n{}",
                    tp.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no socket after 30 s:\n{}",
                tp.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(tp)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn config(&self) -> FrontendConfig {
        FrontendConfig {
            connect_timeout: Duration::from_secs(10),
            ..FrontendConfig::new(&self.sock)
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- testpmd log ----\n{}", self.log_text());
        }
        let _ = std::fs::remove_file(&self.sock);
        let _ = std::fs::remove_file(&self.log);
        testbed::dpdk::remove_files(&self.prefix);
    }
}

/// A frame of `len` bytes: locally administered MACs, ethertype 0x88b5 (local
/// experimental), then `seq` and a pattern depending on both.
fn frame(len: usize, seq: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5]);
    v.extend_from_slice(&seq.to_be_bytes());
    let mut x = seq.wrapping_mul(2_654_435_761);
    while v.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.push(x.to_le_bytes()[2]);
    }
    v.truncate(len);
    v
}

/// Sends `count` frames of each size in bursts, expects each burst back byte-identical
/// and in order.
fn roundtrip(fe: &mut Frontend, qp: u16, sizes: &[usize], count: usize, what: &str) {
    let mrg = fe.negotiated_features() & f::MRG_RXBUF != 0;
    let buf = fe.config().rx_buf_size as usize;
    let mut seq = 0u32;
    for &len in sizes {
        // No more than the rx ring holds, or the backend drops the excess.
        let per_frame = if mrg {
            (len + fe.hdr_len()).div_ceil(buf)
        } else {
            1
        };
        let burst = (fe.rx_chains() / per_frame).clamp(1, 32);
        let mut left = count;
        while left > 0 {
            let n = left.min(burst);
            let frames: Vec<Vec<u8>> = (0..n)
                .map(|i| frame(len, seq + u32::try_from(i).unwrap()))
                .collect();
            let burst: Vec<(NetHdr, &[u8])> = frames
                .iter()
                .map(|f| (NetHdr::default(), f.as_slice()))
                .collect();
            let mut queued = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            while queued < n {
                match fe.send_burst(qp, &burst[queued..]) {
                    Ok(()) => queued = n,
                    Err(FrontendError::RingFull { sent, .. }) => {
                        queued += sent;
                        assert!(Instant::now() < deadline, "{what}: tx ring stays full");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("{what}: send of {len}-byte frames: {e}"),
                }
            }
            for (i, want) in frames.iter().enumerate() {
                let got = fe
                    .recv(qp, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("{what}: recv: {e}"));
                let (hdr, data) = got.unwrap_or_else(|| {
                    panic!("{what}: {len}-byte frame {} of burst not looped back", i)
                });
                assert_eq!(
                    data.len(),
                    want.len(),
                    "{what}: length of a {len}-byte frame"
                );
                assert!(
                    data == *want,
                    "{what}: {len}-byte frame {} differs",
                    seq as usize + i
                );
                assert_eq!(hdr.gso_type, 0, "{what}: gso_type on rx");
            }
            seq += u32::try_from(n).unwrap();
            left -= n;
        }
    }
    // Nothing extra came back.
    let extra = fe.recv_all(qp, Duration::from_millis(50)).unwrap();
    assert!(
        extra.is_empty(),
        "{what}: {} unexpected frames",
        extra.len()
    );
}

struct Case {
    name: &'static str,
    clear: u64,
    layout: TxLayout,
    indirect: bool,
    regions: usize,
    busy_poll: bool,
}

const BASE: Case = Case {
    name: "",
    clear: 0,
    layout: TxLayout::HdrSeparate,
    indirect: true,
    regions: 1,
    busy_poll: false,
};

fn run_case(tp: &Testpmd, case: &Case, frames: usize) {
    let cfg = FrontendConfig {
        wanted_features: tp.config().wanted_features & !case.clear,
        tx_layout: case.layout,
        use_indirect: case.indirect,
        regions: case.regions,
        busy_poll: case.busy_poll,
        guest_base: if case.regions > 1 { 1 << 32 } else { 0 },
        mem_registration: MemRegistration::Auto,
        ..tp.config()
    };
    let mut fe = Frontend::connect(cfg).unwrap_or_else(|e| panic!("{}: connect: {e}", case.name));
    let feat = fe.negotiated_features();
    // With MRG_RXBUF, or GUEST_TSO (64 KiB rx chains), 9000-byte frames fit; otherwise rx
    // chains hold 1526 bytes of frame and DPDK would drop them.
    let jumbo = feat & (f::MRG_RXBUF | f::GUEST_TSO4 | f::GUEST_TSO6) != 0;
    let sizes: &[usize] = if jumbo {
        &[64, 1514, 9000]
    } else {
        &[64, 1514]
    };
    println!(
        "{}: negotiated [{}] protocol {:#x} (offered [{}] protocol {:#x}); sizes {sizes:?}",
        case.name,
        f::describe(feat),
        fe.protocol_features(),
        f::describe(fe.offered_features()),
        fe.offered_protocol_features(),
    );
    roundtrip(&mut fe, 0, sizes, frames, case.name);
    assert!(fe.mac().is_ok());
}

#[test]
fn dpdk_loop_feature_matrix() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tp) = Testpmd::start(1, "") else {
        return;
    };
    let cases = [
        Case {
            name: "defaults (mrg, event_idx, indirect), hdr separate",
            ..BASE
        },
        Case {
            name: "no mrg/event_idx/indirect, contiguous",
            clear: f::MRG_RXBUF | f::RING_EVENT_IDX | f::RING_INDIRECT_DESC,
            layout: TxLayout::Contiguous,
            indirect: false,
            ..BASE
        },
        Case {
            name: "no mrg, no guest_tso (1538-byte rx chains), hdr separate direct",
            clear: f::MRG_RXBUF | f::GUEST_TSO4 | f::GUEST_TSO6,
            indirect: false,
            ..BASE
        },
        Case {
            name: "mrg, no event_idx, split 256 + indirect",
            clear: f::RING_EVENT_IDX,
            layout: TxLayout::Split(256),
            ..BASE
        },
        Case {
            name: "no mrg, event_idx, split 1000 direct, busy poll",
            clear: f::MRG_RXBUF,
            layout: TxLayout::Split(1000),
            indirect: false,
            busy_poll: true,
            ..BASE
        },
        Case {
            name: "4 regions at 4 GiB, mrg, event_idx, contiguous",
            layout: TxLayout::Contiguous,
            regions: 4,
            ..BASE
        },
        Case {
            name: "legacy header (no version_1, no mrg), hdr separate",
            clear: f::VERSION_1 | f::MRG_RXBUF,
            ..BASE
        },
    ];
    for case in &cases {
        run_case(&tp, case, 100);
        // Let DPDK tear the device down before the next connection.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dpdk_loop_tso_big_rx_buffers() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tp) = Testpmd::start(1, ",tso=1") else {
        return;
    };
    let cases = [
        Case {
            name: "tso=1, no mrg: 17 x 4 KiB rx chains",
            clear: f::MRG_RXBUF,
            indirect: false,
            ..BASE
        },
        Case {
            name: "tso=1, no mrg: indirect rx tables",
            clear: f::MRG_RXBUF,
            layout: TxLayout::Split(4096),
            ..BASE
        },
        Case {
            name: "tso=1, mrg",
            ..BASE
        },
    ];
    for case in &cases {
        run_case(&tp, case, 100);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dpdk_reconnect_and_two_queue_pairs() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tp) = Testpmd::start(2, "") else {
        return;
    };
    let cfg = FrontendConfig {
        queue_pairs: 2,
        ..tp.config()
    };
    let mut fe = Frontend::connect(cfg).expect("connect with 2 queue pairs");
    println!(
        "2 queue pairs: negotiated [{}] protocol {:#x}",
        f::describe(fe.negotiated_features()),
        fe.protocol_features()
    );
    assert_ne!(fe.negotiated_features() & f::MQ, 0, "MQ negotiated");
    assert_eq!(
        fe.negotiated_features() & f::CTRL_VQ,
        0,
        "CTRL_VQ never acked"
    );
    for round in 0..3 {
        for qp in 0..2 {
            roundtrip(
                &mut fe,
                qp,
                &[64, 1514],
                40,
                &format!("round {round} qp {qp}"),
            );
        }
        fe.disconnect();
        assert!(matches!(
            fe.send(0, &NetHdr::default(), &frame(64, 0)),
            Err(FrontendError::Disconnected)
        ));
        std::thread::sleep(Duration::from_millis(100));
        fe.reconnect().expect("reconnect");
    }
}
