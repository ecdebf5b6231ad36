//! The bench's own traffic helpers, started as `cargo xtask bench-helper JOB` processes by
//! the TAP scenario: a bare `write()` / `read()` loop on a TAP fd (opened with `port-tap`,
//! `IFF_TAP | IFF_NO_PI`), the host-side AF_PACKET sender (frames built with `wire`), and a
//! spinner standing in for a polling guest. Network jobs touch only the bench's TAPs
//! (`vnbtap<n>`), and only inside a network namespace of the bench.

use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use wire::{EthernetFrame, Ipv4Addr, Ipv4Packet, MacAddr, UdpPacket};

use super::super::proc::sleep;
use super::super::vm2vm::MAC_A;
use super::super::TAG;
use super::{GUEST_IP, HOST_IP, IF_PREFIX, MAC_TAP, SEND_BATCH, UDP_PORT};

/// This program, for the helper processes (bare loops, the host-side sender): a hard link
/// to it taken once, so a `cargo build` that replaces `target/debug/xtask` while the bench
/// runs does not take the helpers' executable away.
pub(super) fn helper_exe() -> Result<PathBuf> {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(p) = EXE.get() {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Links of earlier benches (their programs may be replaced since) are not needed.
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(".xtask-bench-helper-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    let link = dir.join(format!(".xtask-bench-helper-{}", std::process::id()));
    let chosen = if fs::hard_link(&exe, &link).is_ok() {
        link
    } else {
        exe
    };
    Ok(EXE.get_or_init(|| chosen).clone())
}

/// A helper process (this program's `bench-helper JOB`) pinned to `cpu`.
pub(super) fn helper_command(
    cpu: usize,
    job: &str,
    ifname: &str,
    size: u32,
    extra: &[&str],
) -> Result<Command> {
    let exe = helper_exe()?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(exe).args([
        "bench-helper",
        job,
        "--size",
        &size.to_string(),
    ]);
    if !ifname.is_empty() {
        cmd.args(["--ifname", ifname]);
    }
    cmd.args(extra);
    Ok(cmd)
}

/// Options of the hidden `cargo xtask bench-helper`: the bench's own traffic helpers.
#[derive(Debug, clap::Args)]
pub struct HelperArgs {
    /// What to do.
    #[arg(value_enum)]
    job: Job,
    /// The TAP interface, in the bench's namespace (`vnbtap<n>`).
    #[arg(long, default_value = "")]
    ifname: String,
    /// Frame size in bytes, without FCS.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(60..=1514))]
    size: u32,
    /// `send`: this many frames, then exit (0: until stdin closes).
    #[arg(long, default_value_t = 0)]
    count: u32,
}

/// A helper's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Job {
    /// Open the TAP, say `ready`, wait for `go` on stdin, then write() frames to the host
    /// in a loop.
    TapWrite,
    /// Open the TAP, say `ready`, then read() frames in a loop.
    TapRead,
    /// Send frames to the guest on the TAP through an AF_PACKET socket, in a loop.
    Send,
    /// Spin: the CPU a polling guest takes.
    Spin,
}

/// Runs a helper until its stdin closes (the bench drops it) or, for `send --count`, the
/// frames are out.
pub fn helper(args: &HelperArgs) -> Result<()> {
    let go = Arc::new(AtomicBool::new(false));
    {
        let go = go.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "go" => go.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            std::process::exit(0);
        });
    }
    if args.job == Job::Spin {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    // Network jobs only on our interfaces, only inside a namespace of the bench.
    if !args.ifname.starts_with(IF_PREFIX) {
        bail!("refusing interface {:?}: not a bench TAP", args.ifname);
    }
    let ns = bench_netns()?;
    let size = usize::try_from(args.size)?;
    let ready = || -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready ({} in {ns})", args.ifname)?;
        out.flush()?;
        Ok(())
    };
    match args.job {
        Job::TapWrite => {
            let mut tap = open_tap(&args.ifname)
                .with_context(|| format!("cannot open TAP {}", args.ifname))?;
            ready()?;
            while !go.load(Ordering::Acquire) {
                sleep(Duration::from_millis(1));
            }
            let frame = udp_frame(size, MAC_TAP, MAC_A, GUEST_IP, HOST_IP);
            loop {
                match tap.write(&frame) {
                    Ok(_) => {}
                    // The fd is non-blocking: a full socket buffer is not an error.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("write to the TAP"),
                }
            }
        }
        Job::TapRead => {
            let mut tap = open_tap(&args.ifname)
                .with_context(|| format!("cannot open TAP {}", args.ifname))?;
            // The fd is non-blocking: sleep in epoll when the TAP is empty, as a blocking
            // read would.
            let epoll = Epoll::new().context("epoll")?;
            epoll
                .ctl(
                    ControlOperation::Add,
                    tap.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, 0),
                )
                .context("epoll_ctl")?;
            ready()?;
            let mut buf = vec![0u8; 65536];
            loop {
                match tap.read(&mut buf) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        wait_readable(&epoll).context("epoll_wait")?;
                    }
                    Err(e) => return Err(e).context("read from the TAP"),
                }
            }
        }
        Job::Send => {
            let sock = sys::PacketSocket::bind(&args.ifname)
                .with_context(|| format!("cannot open an AF_PACKET socket on {}", args.ifname))?;
            let frame = udp_frame(size, MAC_A, MAC_TAP, HOST_IP, GUEST_IP);
            if args.count > 0 {
                for _ in 0..args.count {
                    sock.send_batch(&frame, 1).context("send")?;
                }
                return Ok(());
            }
            ready()?;
            loop {
                match sock.send_batch(&frame, SEND_BATCH) {
                    Ok(_) => {}
                    // The device's queue is full: try again.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(e) => return Err(e).context("sendmmsg"),
                }
            }
        }
        Job::Spin => unreachable!("spins above"),
    }
}

/// The name of the bench namespace this process runs in, or an error outside one.
fn bench_netns() -> Result<String> {
    match testbed::netns::current() {
        Some(name) if testbed::netns::owner_pid(TAG, &name).is_some() => Ok(name),
        _ => bail!("not inside a network namespace of the bench ({TAG}<pid>): refusing to send"),
    }
}

/// Opens TAP `ifname` (in this process's namespace) for plain frames: `IFF_TAP |
/// IFF_NO_PI`, no virtio-net header, one queue. The fd is non-blocking.
fn open_tap(ifname: &str) -> io::Result<File> {
    let tap = port_tap::sys::open_tun()?;
    port_tap::sys::set_iff(
        &tap,
        ifname,
        port_tap::sys::IFF_TAP | port_tap::sys::IFF_NO_PI,
    )?;
    Ok(tap)
}

/// Waits until `tap` (non-blocking) has a frame to read.
fn wait_readable(epoll: &Epoll) -> io::Result<()> {
    let mut events = [EpollEvent::default()];
    epoll.wait(-1, &mut events).map(drop)
}

/// An Ethernet/IPv4/UDP frame of `size` bytes (no FCS), UDP port 9 to 9, zero payload, a
/// valid IPv4 header checksum and no UDP checksum.
fn udp_frame(
    size: usize,
    dst: MacAddr,
    src: MacAddr,
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
) -> Vec<u8> {
    const ETH: usize = 14;
    const IP: usize = 20;
    let mut f = vec![0u8; size.max(ETH + IP + 8)];
    let len = f.len();
    let mut eth = EthernetFrame::new_checked(&mut f[..]).expect("a frame of 42 bytes or more");
    eth.set_dst(dst);
    eth.set_src(src);
    eth.set_ethertype(wire::ETHERTYPE_IPV4);
    let ip = &mut f[ETH..];
    ip[0] = 0x45; // version 4, 20-byte header: what the view checks
    let mut ip = Ipv4Packet::new_header_checked(ip).expect("a 20-byte IPv4 header");
    ip.set_total_len(u16::try_from(len - ETH).unwrap_or(u16::MAX));
    ip.set_ttl(64);
    ip.set_protocol(wire::IP_PROTO_UDP);
    ip.set_src_addr(ip_src);
    ip.set_dst_addr(ip_dst);
    ip.fill_checksum();
    let mut udp = UdpPacket::new_header_checked(&mut f[ETH + IP..]).expect("an 8-byte UDP header");
    udp.set_src_port(UDP_PORT);
    udp.set_dst_port(UDP_PORT);
    udp.set_len(u16::try_from(len - ETH - IP).unwrap_or(u16::MAX));
    f
}

/// The AF_PACKET socket of the host-side sender: std, `port-tap` and `wire` have nothing for
/// raw packet sockets, so this is the one `unsafe` left in xtask.
#[allow(unsafe_code)]
mod sys {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// An AF_PACKET socket bound to one interface, for sending only.
    #[derive(Debug)]
    pub struct PacketSocket(OwnedFd);

    impl PacketSocket {
        /// A raw packet socket on `ifname` (protocol 0: it receives nothing), bypassing the
        /// qdisc.
        pub fn bind(ifname: &str) -> io::Result<PacketSocket> {
            let cname = CString::new(ifname).map_err(|_| io::Error::other("NUL in name"))?;
            // SAFETY: a NUL-terminated string that outlives the call.
            let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if index == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: socket(2) with constant arguments; the fd is owned right below.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data, for which all zeroes is a valid value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = u16::try_from(libc::AF_PACKET).map_err(io::Error::other)?;
            addr.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
            let addr_len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
                .map_err(io::Error::other)?;
            // SAFETY: bind reads `addr_len` bytes of `addr`, which lives for the call.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
                    addr_len,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            let one: libc::c_int = 1;
            let one_len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
                .map_err(io::Error::other)?;
            // SAFETY: setsockopt reads one c_int, which lives for the call.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    std::ptr::from_ref(&one).cast::<libc::c_void>(),
                    one_len,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(PacketSocket(fd))
        }

        /// Sends `frame` `n` times (at most 1024) with one sendmmsg; returns how many went.
        pub fn send_batch(&self, frame: &[u8], n: usize) -> io::Result<usize> {
            let n = n.clamp(1, 1024);
            let mut iov = libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast::<libc::c_void>(),
                iov_len: frame.len(),
            };
            let iov_ptr = std::ptr::from_mut(&mut iov);
            let mut msgs: Vec<libc::mmsghdr> = (0..n)
                .map(|_| {
                    // SAFETY: mmsghdr is plain data, for which all zeroes is a valid value.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = iov_ptr;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            let vlen = libc::c_uint::try_from(n).map_err(io::Error::other)?;
            // SAFETY: every header points at `iov`, which points at `frame`; all outlive the
            // call. The kernel reads them and writes only the headers' msg_len.
            let rc = unsafe { libc::sendmmsg(self.0.as_raw_fd(), msgs.as_mut_ptr(), vlen, 0) };
            usize::try_from(rc).map_err(|_| io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_valid_frames() {
        let f = udp_frame(64, MacAddr([2; 6]), MacAddr([4; 6]), GUEST_IP, HOST_IP);
        assert_eq!(f.len(), 64);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 50);
        assert_eq!((ip.src_addr(), ip.dst_addr()), (GUEST_IP, HOST_IP));
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
        assert_eq!(&f[40..42], &[0, 0], "no UDP checksum");
        let big = udp_frame(1514, MacAddr([2; 6]), MacAddr([4; 6]), HOST_IP, GUEST_IP);
        assert!(Ipv4Packet::new_checked(&big[14..])
            .unwrap()
            .verify_checksum());
        assert_eq!(MAC_TAP.to_string(), "52:54:00:be:00:fe");
    }
}
