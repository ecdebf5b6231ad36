//! 64 KiB TSO frames VM to VM through a switch, in both directions: the generator of
//! `cargo xtask bench --scenarios tso` (bin/xtask/src/bench/tso.rs; docs/bench.md).
//!
//! `tso_gen A.sock B.sock [--window N] [--queue-size N] [--rx-buf N] [--payload N]
//! [--mss N]` connects one frontend to each vhost-user socket (busy polling, virtio
//! features as a Linux guest asks: MRG_RXBUF, CSUM, GUEST_CSUM, HOST_TSO4, GUEST_TSO4, ...;
//! it fails unless CSUM, GUEST_CSUM, HOST_TSO4, GUEST_TSO4 and MRG_RXBUF are negotiated on
//! both ports) and prints `ready {json}`. It then obeys one command per line on stdin and
//! answers with one line on stdout each:
//!
//! - `start`: one frame A to B, then one B to A (the switch learns both MACs; each is
//!   checked on arrival), then a closed loop: `--window` frames in flight per direction,
//!   and one more sent for every one received (testpmd's closed loop, with the same frame
//!   sent again rather than the received one). Answers `started {json}`.
//! - `stats`: `stats {json}`: per direction frames and bytes received so far, and what they
//!   looked like (GSO header kept or not, partial checksum or not), with the time.
//! - `stop`: stops sending, receives what is still in flight; `stopped {json}`.
//! - `quit` or EOF: exits.
//!
//! Every frame A to B is the same Ethernet/IPv4/TCP frame, 52:54:00:be:00:0a
//! 198.18.0.10:40000 to 52:54:00:be:00:0b 198.18.0.11:5201 (B to A the reverse), with a
//! `virtio_net_hdr` as Linux sends a TSO frame: `NEEDS_CSUM`, `GSO_TCPV4`, `gso_size`
//! `--mss` (1448), `hdr_len` 54, `csum_start` 34, `csum_offset` 16, the TCP checksum field
//! holding the pseudo-header sum with the TCP length (Linux's `__tcp_v4_send_check`). `--payload` (65160 = 45 x 1448) bytes
//! of TCP payload make a 65214-byte frame (IP total length 65200). The frame goes out in
//! 4096-byte descriptors through an indirect table, like a Linux skb of page fragments;
//! rx buffers are `--rx-buf` (4096) bytes, mergeable, `--queue-size` (1024) per ring.
//!
//! What is received is counted whatever it looks like: a switch may deliver the TSO frame
//! as it came (GSO header kept), as one 64 KiB frame without a GSO header, or segmented.
//! The first frames of each direction are compared with what was sent, and a checksum that
//! is said to be complete is verified.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use virtio_net::features as f;
use virtio_net::{NetHdr, GSO_NONE, GSO_TCPV4, HDR_F_DATA_VALID, HDR_F_NEEDS_CSUM};
use vnet_frontend::{Frontend, FrontendConfig, FrontendError, TxLayout};

const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x00, 0x0b];
const IP_A: [u8; 4] = [198, 18, 0, 10];
const IP_B: [u8; 4] = [198, 18, 0, 11];
const PORT_A: u16 = 40_000;
const PORT_B: u16 = 5201;
/// Ethernet + IPv4 + TCP header bytes.
const HEADERS: usize = 14 + 20 + 20;
const CSUM_START: usize = 14 + 20;
/// Offset of the TCP checksum in the TCP header.
const CSUM_OFFSET: usize = 16;
/// What must be negotiated on both ports for TSO frames to go through as they are.
const REQUIRED: u64 = f::CSUM | f::GUEST_CSUM | f::HOST_TSO4 | f::GUEST_TSO4 | f::MRG_RXBUF;
/// Received frames compared in full with what was sent, per direction.
const CHECKED: u64 = 4;
/// In-flight frames with nothing received for this long are taken as lost, and sent again.
const STALL: Duration = Duration::from_millis(100);

/// Options.
struct Opts {
    sock_a: String,
    sock_b: String,
    window: u64,
    queue_size: u16,
    rx_buf: u32,
    payload: usize,
    mss: u16,
}

fn parse_opts() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mut pos = Vec::new();
    let mut o = Opts {
        sock_a: String::new(),
        sock_b: String::new(),
        window: 16,
        queue_size: 1024,
        rx_buf: 4096,
        payload: 45 * 1448,
        mss: 1448,
    };
    while let Some(a) = args.next() {
        let mut val = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--window" => o.window = val("--window")?.max(1),
            "--queue-size" => {
                o.queue_size = u16::try_from(val("--queue-size")?).map_err(|e| e.to_string())?;
            }
            "--rx-buf" => o.rx_buf = u32::try_from(val("--rx-buf")?).map_err(|e| e.to_string())?,
            "--payload" => {
                o.payload = usize::try_from(val("--payload")?).map_err(|e| e.to_string())?;
            }
            "--mss" => o.mss = u16::try_from(val("--mss")?).map_err(|e| e.to_string())?,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => pos.push(a),
        }
    }
    let [a, b]: [String; 2] = pos
        .try_into()
        .map_err(|_| "usage: tso_gen A.sock B.sock [--window N] [--queue-size N] [--rx-buf N] [--payload N] [--mss N]".to_string())?;
    if o.payload + HEADERS - 14 > 65535 {
        return Err(format!(
            "--payload {} makes an IP datagram over 64 KiB",
            o.payload
        ));
    }
    o.sock_a = a;
    o.sock_b = b;
    Ok(o)
}

/// The ones' complement sum of `data` (big-endian 16-bit words), not folded.
fn sum(data: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap_or(0)
}

/// A TSO frame from `src` to `dst` and its virtio-net header, as Linux sends it.
fn tso_frame(
    o: &Opts,
    src: ([u8; 6], [u8; 4], u16),
    dst: ([u8; 6], [u8; 4], u16),
) -> (NetHdr, Vec<u8>) {
    let mut b = vec![0u8; HEADERS + o.payload];
    b[0..6].copy_from_slice(&dst.0);
    b[6..12].copy_from_slice(&src.0);
    b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut b[14..34];
    ip[0] = 0x45;
    let total = u16::try_from(20 + 20 + o.payload).unwrap_or(u16::MAX);
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64;
    ip[9] = 6; // TCP
    ip[12..16].copy_from_slice(&src.1);
    ip[16..20].copy_from_slice(&dst.1);
    let c = !fold(sum(ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut b[34..54];
    tcp[0..2].copy_from_slice(&src.2.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.2.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&0x2000_0000u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // PSH, ACK
    tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
    // The pseudo-header sum with the TCP length, as Linux seeds a CHECKSUM_PARTIAL frame,
    // GSO or not (`__tcp_v4_send_check`: `~tcp_v4_check(skb->len, saddr, daddr, 0)`).
    let tcp_len = u64::try_from(20 + o.payload).unwrap_or(0);
    let pseudo = sum(&src.1) + sum(&dst.1) + 6 + tcp_len;
    tcp[16..18].copy_from_slice(&fold(pseudo).to_be_bytes());
    for (i, x) in b[HEADERS..].iter_mut().enumerate() {
        *x = u8::try_from(i % 251).unwrap_or(0);
    }
    let hdr = NetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: u16::try_from(HEADERS).unwrap_or(0),
        gso_size: o.mss,
        csum_start: u16::try_from(CSUM_START).unwrap_or(0),
        csum_offset: u16::try_from(CSUM_OFFSET).unwrap_or(0),
        num_buffers: 0,
    };
    (hdr, b)
}

/// Whether the TCP checksum of an IPv4/TCP `frame` (no options in the way) is complete
/// and right.
fn tcp_checksum_ok(frame: &[u8]) -> bool {
    if frame.len() < HEADERS {
        return false;
    }
    let ip = &frame[14..34];
    let ip_total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let Some(l4) = frame.get(CSUM_START..14 + ip_total) else {
        return false;
    };
    let len = u64::try_from(l4.len()).unwrap_or(0);
    let s = sum(&ip[12..20]) + 6 + len + sum(l4);
    fold(s) == 0xffff
}

/// One direction's counters.
#[derive(Default, Clone)]
struct Dir {
    /// Frames sent (the two priming frames included).
    sent: u64,
    frames: u64,
    bytes: u64,
    /// Received with a GSO type (any), and with the sent one and gso_size.
    gso: u64,
    gso_as_sent: u64,
    /// Received with NEEDS_CSUM, with DATA_VALID.
    needs_csum: u64,
    data_valid: u64,
    min_len: u64,
    max_len: u64,
    /// Frames taken as lost (nothing came back within [`STALL`]).
    lost: u64,
    /// Frames of the first [`CHECKED`] that differed from what was sent (apart from a
    /// completed checksum) or carried a wrong complete checksum.
    bad: u64,
    checked: u64,
    /// How the first frame arrived, in words.
    first: String,
    /// Sends that found the tx ring full.
    ring_full: u64,
}

impl Dir {
    fn json(&self) -> String {
        format!(
            "{{\"sent\":{},\"frames\":{},\"bytes\":{},\"gso\":{},\"gso_as_sent\":{},\
             \"needs_csum\":{},\"data_valid\":{},\"min_len\":{},\"max_len\":{},\"lost\":{},\
             \"checked\":{},\"bad\":{},\"ring_full\":{},\"first\":\"{}\"}}",
            self.sent,
            self.frames,
            self.bytes,
            self.gso,
            self.gso_as_sent,
            self.needs_csum,
            self.data_valid,
            self.min_len,
            self.max_len,
            self.lost,
            self.checked,
            self.bad,
            self.ring_full,
            self.first
        )
    }
}

/// Describes a received frame against what was sent, and whether it is right.
fn judge(sent_hdr: &NetHdr, sent: &[u8], hdr: &NetHdr, got: &[u8]) -> (String, bool) {
    let mut words = Vec::new();
    let gso_kept = hdr.gso_type != GSO_NONE;
    if gso_kept {
        words.push(format!(
            "GSO header kept (type {}, gso_size {}, hdr_len {})",
            hdr.gso_type, hdr.gso_size, hdr.hdr_len
        ));
    } else {
        words.push("no GSO header".to_string());
    }
    let mut ok = got.len() == sent.len();
    words.push(format!("{} bytes", got.len()));
    let csum_at = CSUM_START + CSUM_OFFSET;
    if hdr.flags & HDR_F_NEEDS_CSUM != 0 {
        words.push(format!(
            "partial checksum (NEEDS_CSUM, csum_start {}, csum_offset {})",
            hdr.csum_start, hdr.csum_offset
        ));
        if got.len() == sent.len() && got[csum_at..csum_at + 2] != sent[csum_at..csum_at + 2] {
            // Still a valid partial checksum if it is the pseudo-header sum without the
            // length (what DPDK's rte_net_intel_cksum_prepare() writes for TSO).
            let ip = &got[14..34];
            let seed = fold(sum(&ip[12..20]) + 6).to_be_bytes();
            if got[csum_at..csum_at + 2] == seed {
                words.push("seed rewritten to the pseudo-header sum without length".into());
            } else {
                words.push("checksum field changed".into());
                ok = false;
            }
        }
        ok &= got.len() == sent.len()
            && got[..csum_at] == sent[..csum_at]
            && got[csum_at + 2..] == sent[csum_at + 2..];
    } else {
        let valid = tcp_checksum_ok(got);
        let said = if hdr.flags & HDR_F_DATA_VALID != 0 {
            "DATA_VALID"
        } else {
            "no flags"
        };
        words.push(format!(
            "{said}, TCP checksum {}",
            if valid {
                "complete and valid"
            } else {
                "NOT valid"
            }
        ));
        // A Linux guest checks the checksum unless DATA_VALID is set.
        ok &= valid || hdr.flags & HDR_F_DATA_VALID != 0;
        ok &= got.len() == sent.len()
            && got[..csum_at] == sent[..csum_at]
            && got[csum_at + 2..] == sent[csum_at + 2..];
    }
    if gso_kept && (hdr.gso_type != sent_hdr.gso_type || hdr.gso_size != sent_hdr.gso_size) {
        ok = false;
    }
    (words.join(", "), ok)
}

/// A frontend and what goes out of it.
struct Side {
    fe: Frontend,
    hdr: NetHdr,
    frame: Vec<u8>,
}

fn connect(o: &Opts, sock: &str) -> Result<Frontend, String> {
    let fe = Frontend::connect(FrontendConfig {
        busy_poll: true,
        queue_size: o.queue_size,
        rx_buf_size: o.rx_buf,
        mem_size: 64 << 20,
        tx_layout: TxLayout::Split(4096),
        use_indirect: true,
        connect_timeout: Duration::from_secs(20),
        ..FrontendConfig::new(sock)
    })
    .map_err(|e| format!("{sock}: {e}"))?;
    let missing = REQUIRED & !fe.negotiated_features();
    if missing != 0 {
        return Err(format!(
            "{sock}: not negotiated: {} (offered {})",
            f::describe(missing),
            f::describe(fe.offered_features())
        ));
    }
    Ok(fe)
}

/// The generator's state.
struct Gen {
    opts: Opts,
    /// A (sends A to B, receives B to A) and B.
    sides: [Side; 2],
    /// [A to B, B to A].
    dirs: [Dir; 2],
    sending: bool,
    last_rx: [Instant; 2],
    epoch: Instant,
}

impl Gen {
    /// Receives what arrived at the receiving side of direction `d` (at most `max`).
    fn receive(&mut self, d: usize, max: usize) -> Result<usize, FrontendError> {
        let (tx, rx) = if d == 0 { (0, 1) } else { (1, 0) };
        let mut n = 0;
        while n < max {
            let Some((hdr, data)) = self.sides[rx].fe.recv(0, Duration::ZERO)? else {
                break;
            };
            n += 1;
            let dir = &mut self.dirs[d];
            let len = data.len() as u64;
            dir.frames += 1;
            dir.bytes += len;
            dir.min_len = if dir.frames == 1 {
                len
            } else {
                dir.min_len.min(len)
            };
            dir.max_len = dir.max_len.max(len);
            let sent = &self.sides[tx];
            if hdr.gso_type != GSO_NONE {
                dir.gso += 1;
                if hdr.gso_type == sent.hdr.gso_type && hdr.gso_size == sent.hdr.gso_size {
                    dir.gso_as_sent += 1;
                }
            }
            if hdr.flags & HDR_F_NEEDS_CSUM != 0 {
                dir.needs_csum += 1;
            }
            if hdr.flags & HDR_F_DATA_VALID != 0 {
                dir.data_valid += 1;
            }
            if dir.checked < CHECKED {
                let (words, ok) = judge(&sent.hdr, &sent.frame, &hdr, &data);
                dir.checked += 1;
                if !ok {
                    dir.bad += 1;
                }
                if dir.first.is_empty() {
                    dir.first = words;
                }
            }
        }
        if n > 0 {
            self.last_rx[d] = Instant::now();
        }
        Ok(n)
    }

    fn inflight(&self, d: usize) -> u64 {
        let dir = &self.dirs[d];
        dir.sent.saturating_sub(dir.frames + dir.lost)
    }

    /// Sends up to `n` frames in direction `d`; returns how many went.
    fn send(&mut self, d: usize, n: u64) -> Result<u64, FrontendError> {
        if n == 0 {
            return Ok(0);
        }
        let side = &mut self.sides[d];
        let burst: Vec<(NetHdr, &[u8])> = (0..n.min(32))
            .map(|_| (side.hdr, side.frame.as_slice()))
            .collect();
        let went = match side.fe.send_burst(0, &burst) {
            Ok(()) => burst.len() as u64,
            Err(FrontendError::RingFull { sent, .. }) => {
                self.dirs[d].ring_full += 1;
                sent as u64
            }
            Err(e) => return Err(e),
        };
        self.dirs[d].sent += went;
        Ok(went)
    }

    /// One frame each way, each awaited: the switch learns both MACs.
    fn prime(&mut self) -> Result<(), String> {
        for d in 0..2 {
            self.send(d, 1).map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.dirs[d].frames == 0 {
                self.receive(d, 1).map_err(|e| e.to_string())?;
                if Instant::now() > deadline {
                    return Err(format!(
                        "the first frame {} did not arrive within 5 s",
                        ["A to B", "B to A"][d]
                    ));
                }
            }
        }
        Ok(())
    }

    /// One turn of the closed loop.
    fn turn(&mut self) -> Result<(), FrontendError> {
        for d in 0..2 {
            let got = self.receive(d, 64)?;
            if self.sending {
                let room = self.opts.window.saturating_sub(self.inflight(d));
                self.send(d, room)?;
                if got == 0 && self.inflight(d) > 0 && self.last_rx[d].elapsed() > STALL {
                    // Lost in the switch: count them and fill the window again.
                    self.dirs[d].lost += self.inflight(d);
                    self.last_rx[d] = Instant::now();
                }
            }
        }
        Ok(())
    }

    fn stats(&self) -> String {
        format!(
            "{{\"t_ns\":{},\"a_to_b\":{},\"b_to_a\":{},\"window\":{},\"frame_bytes\":{},\
             \"mss\":{},\"sending\":{}}}",
            self.epoch.elapsed().as_nanos(),
            self.dirs[0].json(),
            self.dirs[1].json(),
            self.opts.window,
            self.sides[0].frame.len(),
            self.opts.mss,
            self.sending
        )
    }
}

fn run() -> Result<(), String> {
    let opts = parse_opts()?;
    let fa = connect(&opts, &opts.sock_a)?;
    let fb = connect(&opts, &opts.sock_b)?;
    let max = fa.max_tx_frame().min(fb.max_tx_frame());
    let (ha, frame_a) = tso_frame(&opts, (MAC_A, IP_A, PORT_A), (MAC_B, IP_B, PORT_B));
    let (hb, frame_b) = tso_frame(&opts, (MAC_B, IP_B, PORT_B), (MAC_A, IP_A, PORT_A));
    if frame_a.len() > max {
        return Err(format!(
            "a {}-byte frame does not fit a tx slot ({max} bytes)",
            frame_a.len()
        ));
    }
    println!(
        "ready {{\"a\":{{\"features\":\"{:#x}\",\"hdr_len\":{},\"rx_chains\":{}}},\
         \"b\":{{\"features\":\"{:#x}\",\"hdr_len\":{},\"rx_chains\":{}}},\"frame_bytes\":{}}}",
        fa.negotiated_features(),
        fa.hdr_len(),
        fa.rx_chains(),
        fb.negotiated_features(),
        fb.hdr_len(),
        fb.rx_chains(),
        frame_a.len()
    );
    let (cmd_tx, cmds) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if cmd_tx.send(line.trim().to_string()).is_err() {
                return;
            }
        }
        let _ = cmd_tx.send("quit".into());
    });
    let now = Instant::now();
    let mut g = Gen {
        sides: [
            Side {
                fe: fa,
                hdr: ha,
                frame: frame_a,
            },
            Side {
                fe: fb,
                hdr: hb,
                frame: frame_b,
            },
        ],
        opts,
        dirs: [Dir::default(), Dir::default()],
        sending: false,
        last_rx: [now; 2],
        epoch: now,
    };
    let mut turns = 0u64;
    loop {
        // Commands: every turn when stopped (sleeping on the channel), every 16 turns
        // while traffic runs.
        let cmd = if g.sending {
            turns += 1;
            if turns % 16 == 0 {
                cmds.try_recv().ok()
            } else {
                None
            }
        } else {
            match cmds.recv_timeout(Duration::from_millis(1)) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some("quit".into()),
            }
        };
        match cmd.as_deref() {
            None | Some("") => {}
            Some("start") => {
                g.prime()?;
                g.sending = true;
                g.last_rx = [Instant::now(); 2];
                println!("started {}", g.stats());
            }
            Some("stats") => println!("stats {}", g.stats()),
            Some("stop") => {
                g.sending = false;
                let deadline = Instant::now() + Duration::from_millis(500);
                while Instant::now() < deadline && (g.inflight(0) > 0 || g.inflight(1) > 0) {
                    g.turn().map_err(|e| e.to_string())?;
                }
                println!("stopped {}", g.stats());
            }
            Some("quit") => return Ok(()),
            Some(other) => println!("error unknown command {other:?}"),
        }
        g.turn().map_err(|e| e.to_string())?;
    }
}

fn main() {
    if let Err(e) = run() {
        println!("error {e}");
        eprintln!("tso_gen: {e}");
        std::process::exit(1);
    }
}
