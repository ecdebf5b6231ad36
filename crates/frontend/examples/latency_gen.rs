//! Round-trip latency through a switch: the generator of `cargo xtask bench --scenarios
//! latency` (bin/xtask/src/bench/latency.rs; docs/bench.md).
//!
//! `latency_gen A.sock B.sock [--secs S] [--size N] [--packed] [--gap-us N]` connects one
//! frontend to
//! each vhost-user socket and prints `ready {json}` (the negotiated features). Then, on one
//! thread, request and response with one frame in flight: A sends a `--size`-byte frame
//! to B's MAC; as soon as B has it (spinning on its used ring, no system call), B sends
//! one back to A's MAC; as soon as A has that, the round trip is done and the next
//! starts. Each round trip crosses the switch twice. After a warm-up of 2000 round trips
//! it measures for `--secs` seconds and prints `result {json}`: the number of round trips,
//! their percentiles (p50, p90, p99, p99.9), minimum and maximum in nanoseconds, and how
//! many frames were lost (nothing back within 100 ms: sent again, not counted).
//! `--gap-us N` waits N microseconds (spinning) between round trips, so that a switch in
//! event mode goes to sleep before each request: every round trip then includes its
//! wake-ups, and a lost wake-up shows as a lost frame.
//!
//! `--load C.sock D.sock [--load-burst N]` adds a background load on two other ports of
//! the switch: before each request, C sends a burst of N frames (default 32) to D, which
//! the switch forwards while the request follows them; D's frames are drained (not
//! checked) after each round trip. The result then also gives the background frames D
//! received per second.
//!
//! The frontends spin rather than sleep, like DPDK's virtio-user PMD: what is measured is
//! the switch (its wake-up on the kick in event mode included), not the guest's interrupt
//! path. A kick is sent whenever the switch asks for one.
//!
//! Frames are 52:54:00:be:00:0a to 52:54:00:be:00:0b (and back) with the local
//! experimental EtherType 0x88b5 and a sequence number, and are checked on arrival.

use std::time::{Duration, Instant};

use virtio_net::features as f;
use virtio_net::NetHdr;
use vnet_frontend::{Frontend, FrontendConfig, FrontendError, TxLayout, DEFAULT_FEATURES};

const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x00, 0x0b];
const MAC_C: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x00, 0x0c];
const MAC_D: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x00, 0x0d];
const WARMUP: usize = 2000;
const LOST: Duration = Duration::from_millis(100);

struct Opts {
    socks: [String; 2],
    secs: f64,
    size: usize,
    packed: bool,
    gap: Duration,
    /// Background load: C and D's sockets and C's burst per round trip.
    load: Option<([String; 2], usize)>,
}

fn opts() -> Result<Opts, String> {
    let mut socks = Vec::new();
    let (mut secs, mut size, mut packed, mut gap) = (5.0, 64, false, 0u64);
    let (mut load, mut burst) = (None, 32usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--secs" => secs = val("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--size" => size = val("--size")?.parse().map_err(|e| format!("--size: {e}"))?,
            "--packed" => packed = true,
            "--gap-us" => {
                gap = val("--gap-us")?
                    .parse()
                    .map_err(|e| format!("--gap-us: {e}"))?
            }
            "--load" => {
                let c = val("--load")?;
                let d = val("--load")?;
                load = Some([c, d]);
            }
            "--load-burst" => {
                burst = val("--load-burst")?
                    .parse()
                    .map_err(|e| format!("--load-burst: {e}"))?
            }
            s if !s.starts_with("--") => socks.push(s.to_string()),
            s => return Err(format!("unknown option {s}")),
        }
    }
    let [a, b]: [String; 2] = socks.try_into().map_err(|_| {
        "usage: latency_gen A.sock B.sock [--secs S] [--size N] [--packed] [--gap-us N] \
         [--load C.sock D.sock [--load-burst N]]"
    })?;
    if !(60..=1514).contains(&size) {
        return Err(format!("--size {size} outside 60..=1514"));
    }
    Ok(Opts {
        socks: [a, b],
        secs,
        size,
        packed,
        gap: Duration::from_micros(gap),
        load: load.map(|l| (l, burst.clamp(1, 256))),
    })
}

fn frame(dst: [u8; 6], src: [u8; 6], size: usize, seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; size];
    b[0..6].copy_from_slice(&dst);
    b[6..12].copy_from_slice(&src);
    b[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    b[14..22].copy_from_slice(&seq.to_be_bytes());
    b
}

/// Spins until `f` receives a frame with sequence number `seq` (others are stale: a lost
/// frame that came late) or `LOST` passes.
fn wait_for(f: &mut Frontend, seq: u64) -> Result<bool, FrontendError> {
    let start = Instant::now();
    loop {
        if let Some((_, got)) = f.recv(0, Duration::ZERO)? {
            if got.get(14..22) == Some(&seq.to_be_bytes()[..]) {
                return Ok(true);
            }
        } else if start.elapsed() > LOST {
            return Ok(false);
        }
    }
}

/// The sample at `per_mille` thousandths of the way through `sorted` (nearest rank).
fn percentile(sorted: &[u64], per_mille: usize) -> u64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0;
    };
    sorted[(last * per_mille + 500) / 1000]
}

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("latency_gen: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("latency_gen: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Opts) -> Result<(), FrontendError> {
    let wanted = if o.packed {
        DEFAULT_FEATURES | f::RING_PACKED
    } else {
        DEFAULT_FEATURES
    };
    let connect = |sock: &str| {
        Frontend::connect(FrontendConfig {
            wanted_features: wanted,
            busy_poll: true,
            // Header and frame in one buffer, as DPDK's virtio-user PMD and Linux send
            // small frames (the header pushed into the headroom).
            tx_layout: TxLayout::Contiguous,
            ..FrontendConfig::new(sock)
        })
    };
    let mut a = connect(&o.socks[0])?;
    let mut b = connect(&o.socks[1])?;
    let mut load = match &o.load {
        Some(([c, d], burst)) => Some((connect(c)?, connect(d)?, *burst)),
        None => None,
    };
    let background: Vec<Vec<u8>> = match &load {
        Some((_, _, n)) => (0..*n)
            .map(|i| frame(MAC_D, MAC_C, o.size, i as u64))
            .collect(),
        None => Vec::new(),
    };
    let (mut bg_got, mut bg_since) = (0u64, None::<Instant>);
    println!(
        "ready {{\"a_features\":\"{:#x}\",\"b_features\":\"{:#x}\"}}",
        a.negotiated_features(),
        b.negotiated_features()
    );
    let hdr = NetHdr::default();
    let mut samples: Vec<u64> = Vec::with_capacity(1 << 22);
    let (mut lost, mut seq) = (0u64, 0u64);
    let mut measuring_since: Option<Instant> = None;
    let mut done = 0usize;
    loop {
        if !o.gap.is_zero() {
            let until = Instant::now() + o.gap;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        if let Some((c, _, _)) = load.as_mut() {
            let burst: Vec<(NetHdr, &[u8])> =
                background.iter().map(|f| (hdr, f.as_slice())).collect();
            match c.send_burst(0, &burst) {
                Ok(()) | Err(FrontendError::RingFull { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        seq += 1;
        let ab = frame(MAC_B, MAC_A, o.size, seq);
        let ba = frame(MAC_A, MAC_B, o.size, seq);
        let t0 = Instant::now();
        a.send(0, &hdr, &ab)?;
        if !wait_for(&mut b, seq)? {
            lost += 1;
            continue;
        }
        b.send(0, &hdr, &ba)?;
        if !wait_for(&mut a, seq)? {
            lost += 1;
            continue;
        }
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        done += 1;
        if let Some((_, d, _)) = load.as_mut() {
            while d.recv(0, Duration::ZERO)?.is_some() {
                if measuring_since.is_some() {
                    bg_got += 1;
                }
            }
        }
        match measuring_since {
            None if done >= WARMUP => {
                measuring_since = Some(Instant::now());
                bg_since = measuring_since;
                lost = 0;
            }
            None => {}
            Some(since) => {
                if samples.len() < samples.capacity() {
                    samples.push(ns);
                }
                if since.elapsed().as_secs_f64() >= o.secs {
                    break;
                }
            }
        }
    }
    let secs = measuring_since.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let bg_secs = bg_since.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let bg_mpps = if bg_secs > 0.0 {
        bg_got as f64 / bg_secs / 1e6
    } else {
        0.0
    };
    samples.sort_unstable();
    println!(
        "result {{\"round_trips\":{},\"secs\":{secs:.3},\"p50_ns\":{},\"p90_ns\":{},\
         \"p99_ns\":{},\"p999_ns\":{},\"min_ns\":{},\"max_ns\":{},\"lost\":{lost},\
         \"background_mpps\":{bg_mpps:.4}}}",
        samples.len(),
        percentile(&samples, 500),
        percentile(&samples, 900),
        percentile(&samples, 990),
        percentile(&samples, 999),
        samples.first().copied().unwrap_or(0),
        samples.last().copied().unwrap_or(0),
    );
    Ok(())
}
