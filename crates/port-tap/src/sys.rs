//! The system calls of TAP ports: `/dev/net/tun` ioctls, interface flags, `setns`, and
//! vectored reads and writes. All `unsafe` of this crate lives here.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

/// An Ethernet (TAP) device, not IP (TUN).
pub const IFF_TAP: i16 = 0x0002;
/// No packet-information prefix on reads and writes.
pub const IFF_NO_PI: i16 = 0x1000;
/// Each frame carries a `virtio_net_hdr`.
pub const IFF_VNET_HDR: i16 = 0x4000;
/// One fd per queue.
pub const IFF_MULTI_QUEUE: i16 = 0x0100;

/// `struct ifreq` with the union as raw bytes (we use `ifr_flags`, `ifr_hwaddr`, `ifr_mtu`).
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(ifname: &str) -> io::Result<IfReq> {
        let b = ifname.as_bytes();
        if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {ifname:?}"),
            ));
        }
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..b.len()].copy_from_slice(b);
        Ok(r)
    }

    fn set_i16(&mut self, v: i16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    fn get_i16(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn name(&self) -> String {
        let end = self
            .name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens `/dev/net/tun` non-blocking.
pub fn open_tun() -> io::Result<File> {
    let path: &CStr = c"/dev/net/tun";
    // SAFETY: a NUL-terminated path; the result is checked before it is wrapped.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// TUNSETIFF: attaches `tun` to the interface `ifname` (creating it) with `flags`;
/// returns the interface name the kernel used.
pub fn set_iff(tun: &File, ifname: &str, flags: i16) -> io::Result<String> {
    let mut r = IfReq::new(ifname)?;
    r.set_i16(flags);
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `r` is (40 bytes).
    cvt(unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut r as *mut IfReq) })?;
    Ok(r.name())
}

/// TUNSETVNETHDRSZ.
pub fn set_vnet_hdr_size(tun: &File, size: i32) -> io::Result<()> {
    // SAFETY: the ioctl reads one int from the pointer, which points to `size`.
    cvt(unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETVNETHDRSZ, &size as *const i32) })?;
    Ok(())
}

/// TUNSETOFFLOAD with `TUN_F_*` bits (passed by value).
pub fn set_offload(tun: &File, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is accessed.
    cvt(unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) })?;
    Ok(())
}

fn ctl_socket() -> io::Result<File> {
    // SAFETY: plain socket creation; the result is checked.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is fresh and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn ifreq_ioctl(req: libc::c_ulong, r: &mut IfReq) -> io::Result<()> {
    let s = ctl_socket()?;
    // SAFETY: the SIOC* requests used here read/write one `struct ifreq`, which `r` is.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), req, r as *mut IfReq) })?;
    Ok(())
}

// Each setter reads first and changes nothing that is already as asked: reading needs no
// privilege, so a persistent TAP prepared by the operator (`ip tuntap add ... user vnet`,
// up, with its MAC and MTU) attaches without CAP_NET_ADMIN.

/// Sets IFF_UP on `ifname` (in the current network namespace), unless it is up.
pub fn set_up(ifname: &str) -> io::Result<()> {
    let mut r = IfReq::new(ifname)?;
    ifreq_ioctl(libc::SIOCGIFFLAGS, &mut r)?;
    let up = i16::try_from(libc::IFF_UP).unwrap_or(1);
    if r.get_i16() & up != 0 {
        return Ok(());
    }
    let flags = r.get_i16() | up;
    r.set_i16(flags);
    ifreq_ioctl(libc::SIOCSIFFLAGS, &mut r)
}

/// Sets the MAC address of `ifname`, unless it has it.
pub fn set_mac(ifname: &str, mac: wire::MacAddr) -> io::Result<()> {
    let mut r = IfReq::new(ifname)?;
    ifreq_ioctl(libc::SIOCGIFHWADDR, &mut r)?;
    if &r.data[2..8] == mac.as_bytes() {
        return Ok(());
    }
    // struct sockaddr { sa_family_t sa_family; char sa_data[14]; }
    r.data[..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
    r.data[2..8].copy_from_slice(mac.as_bytes());
    ifreq_ioctl(libc::SIOCSIFHWADDR, &mut r)
}

/// Sets the MTU of `ifname`, unless it has it.
pub fn set_mtu(ifname: &str, mtu: u16) -> io::Result<()> {
    let mut r = IfReq::new(ifname)?;
    ifreq_ioctl(libc::SIOCGIFMTU, &mut r)?;
    if r.data[..4] == i32::from(mtu).to_ne_bytes() {
        return Ok(());
    }
    r.data[..4].copy_from_slice(&i32::from(mtu).to_ne_bytes());
    ifreq_ioctl(libc::SIOCSIFMTU, &mut r)
}

/// Moves the calling thread into the network namespace `ns` (a file such as
/// `/run/netns/NAME`).
pub fn enter_netns(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a namespace fd only changes this thread's namespace.
    cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}

/// `writev(fd, iov)`.
///
/// # Safety
/// Every `iov[i].iov_base .. + iov_len` is readable memory of this process for the duration
/// of the call (the kernel reads it; it may be guest memory mapped into vnetd).
pub unsafe fn writev(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    let r = if let [one] = iov {
        // One buffer (a frame contiguous with its header): plain `write` spares the kernel
        // importing an iovec array.
        // SAFETY: `one` describes readable memory (caller); write only reads it.
        unsafe { libc::write(fd, one.iov_base, one.iov_len) }
    } else {
        let n = libc::c_int::try_from(iov.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `iov` describes readable memory (caller); writev only reads it.
        unsafe { libc::writev(fd, iov.as_ptr(), n) }
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(usize::try_from(r).unwrap_or(0))
    }
}

/// `read(fd, buf)`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(usize::try_from(r).unwrap_or(0))
    }
}
