//! Sends N small frames from a frontend on socket A to one on socket B through a switch
//! (vnetd), for profiling: `blast A.sock B.sock [frames] [size]`.

use std::time::{Duration, Instant};

use virtio_net::NetHdr;
use vnet_frontend::{Frontend, FrontendConfig};

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    b[0..6].copy_from_slice(&dst);
    b[6..12].copy_from_slice(&src);
    b[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    b
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (a, b) = (&args[1], &args[2]);
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let size: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(64);
    // One descriptor per frame, header included, as DPDK and Linux (ANY_LAYOUT) send.
    let mut fa = Frontend::connect(FrontendConfig {
        busy_poll: true,
        tx_layout: vnet_frontend::TxLayout::Contiguous,
        ..FrontendConfig::new(a)
    })
    .unwrap();
    let mut fb = Frontend::connect(FrontendConfig {
        busy_poll: true,
        ..FrontendConfig::new(b)
    })
    .unwrap();
    let (ma, mb) = ([0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]);
    // Teach the switch where B is.
    fb.send(0, &NetHdr::default(), &frame([0xff; 6], mb, 60))
        .unwrap();
    let _ = fa.recv(0, Duration::from_secs(2)).unwrap();
    let f = frame(mb, ma, size);
    let burst: Vec<(NetHdr, &[u8])> = (0..32).map(|_| (NetHdr::default(), f.as_slice())).collect();
    let t = Instant::now();
    let mut got = 0;
    let mut sent = 0;
    while got < n {
        if sent < n && sent - got < 128 {
            match fa.send_burst(0, &burst) {
                Ok(()) => sent += 32,
                Err(vnet_frontend::FrontendError::RingFull { sent: s, .. }) => sent += s,
                Err(e) => panic!("{e}"),
            }
        }
        while fb.recv(0, Duration::ZERO).unwrap().is_some() {
            got += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{got} frames of {size} B in {secs:.2} s: {:.3} Mpps",
        got as f64 / secs / 1e6
    );
}
