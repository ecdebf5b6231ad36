//! Fuzz harnesses for the vhost-user side, shared by `cargo test` (proptest, stable) and
//! the libFuzzer targets under `fuzz/`:
//!
//! * [`fuzz_messages`]: arbitrary bytes (and fds) on the socket, parsed by the `vhost`
//!   crate and dispatched to our handler;
//! * [`fuzz_handler`]: arbitrary sequences of handler calls with hostile arguments.
//!
//! Both drive a [`RingBuilder`] that builds each started ring exactly as the datapath
//! does, so ring-address validation is exercised too. Nothing may panic.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserMemoryRegion, VhostUserSingleMemoryRegion,
    VhostUserVringAddrFlags,
};
use vhost::vhost_user::VhostUserBackendReqHandlerMut;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::{NetDevice, QueueControl, ReadyQueue, VhostUserNet};

/// A [`QueueControl`] that builds the ring like the datapath and keeps it.
#[derive(Debug, Default)]
pub struct RingBuilder {
    rings: Vec<(u16, vring::SplitQueue)>,
    pub started: usize,
    pub refused: usize,
}

impl RingBuilder {
    /// Indexes of the rings running now, in start order.
    pub fn running(&self) -> Vec<u16> {
        self.rings.iter().map(|(i, _)| *i).collect()
    }
}

impl QueueControl for RingBuilder {
    fn start_queue(&mut self, q: ReadyQueue) {
        match vring::SplitQueue::new(q.mem, &q.cfg) {
            Ok(mut r) => {
                let _ = r.refresh_avail();
                self.rings.push((q.index, r));
                self.started += 1;
            }
            Err(_) => self.refused += 1,
        }
    }

    fn stop_queue(&mut self, index: u16) -> Option<u16> {
        let i = self.rings.iter().position(|(x, _)| *x == index)?;
        Some(self.rings.swap_remove(i).1.next_avail())
    }

    fn set_call(&mut self, _index: u16, _call: Option<File>) {}
}

fn device() -> NetDevice {
    NetDevice {
        name: "fuzz".into(),
        mac: [0x52, 0x54, 0, 0, 0, 1],
        mtu: 1500,
        queue_pairs: 2,
    }
}

fn small_memfd(size: u64) -> File {
    vring::mem::memfd(c"vhost-fuzz", size).unwrap()
}

fn eventfd() -> File {
    // An eventfd stands in for kick/call/err; any fd will do for the handler.
    small_memfd(8)
}

/// Bytes in, message by message, with an fd attached to some of them.
pub fn fuzz_messages(data: &[u8]) {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    let mut net = VhostUserNet::new(device(), RingBuilder::default());
    let fd = small_memfd(1 << 16);
    // Feed the input in pieces; a piece whose first byte is odd carries an fd.
    for piece in data.chunks(64) {
        let with_fd = piece.first().is_some_and(|b| b & 1 == 1);
        let sent = if with_fd {
            theirs.send_with_fds(&[piece], &[fd.as_raw_fd()])
        } else {
            (&theirs)
                .write(piece)
                .map_err(vmm_sys_util::errno::Error::from)
        };
        if sent.is_err() {
            break;
        }
    }
    drop(theirs);
    for _ in 0..64 {
        if crate::conn::handle_one(&mut ours, &mut net).is_err() {
            break;
        }
    }
    net.reset();
}

/// Reads little-endian values off the input, yielding zeros when it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    /// Mostly small values, sometimes wild ones.
    fn addr(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            _ => u64::from(self.u32() % 0x3_0000),
        }
    }
}

fn region(i: &mut Input<'_>) -> VhostUserMemoryRegion {
    VhostUserMemoryRegion {
        guest_phys_addr: i.addr(),
        memory_size: i.addr(),
        user_addr: i.addr(),
        mmap_offset: i.addr() % 0x1_0000,
    }
}

/// Sequences of handler calls with hostile arguments.
pub fn fuzz_handler(data: &[u8]) {
    let mut i = Input(data);
    let mut net = VhostUserNet::new(device(), RingBuilder::default());
    for _ in 0..64 {
        if i.0.is_empty() {
            break;
        }
        let q8 = i.u8() % 6;
        let q = u32::from(q8);
        let _ = match i.u8() % 16 {
            0 => net.set_features(i.u64()),
            1 => {
                let n = usize::from(i.u8() % 4);
                let regions: Vec<_> = (0..n).map(|_| region(&mut i)).collect();
                let files = (0..n).map(|_| small_memfd(0x2_0000)).collect();
                net.set_mem_table(&regions, files)
            }
            2 => {
                let r = region(&mut i);
                let single = VhostUserSingleMemoryRegion::new(
                    r.guest_phys_addr,
                    r.memory_size,
                    r.user_addr,
                    r.mmap_offset,
                );
                net.add_mem_region(&single, small_memfd(0x2_0000))
            }
            3 => {
                let r = region(&mut i);
                let single =
                    VhostUserSingleMemoryRegion::new(r.guest_phys_addr, r.memory_size, 0, 0);
                net.remove_mem_region(&single)
            }
            4 => net.set_vring_num(q, i.u32() % 70000),
            5 => net.set_vring_addr(
                q,
                VhostUserVringAddrFlags::empty(),
                i.addr(),
                i.addr(),
                i.addr(),
                0,
            ),
            6 => net.set_vring_base(q, i.u32()),
            7 => net.get_vring_base(q).map(|_| ()),
            8 => net.set_vring_kick(q8, (i.u8() % 2 == 0).then(eventfd)),
            9 => net.set_vring_call(q8, (i.u8() % 2 == 0).then(eventfd)),
            10 => net.set_vring_err(q8, Some(eventfd())),
            11 => net.set_vring_enable(q, i.u8() % 2 == 0),
            12 => net
                .get_config(i.u32() % 64, i.u32() % 64, VhostUserConfigFlags::empty())
                .map(|_| ()),
            13 => net.set_protocol_features(i.u64()),
            14 => {
                net.reset();
                Ok(())
            }
            _ => net.get_queue_num().map(|_| ()),
        };
    }
    net.reset();
    assert_eq!(net.running_rings(), 0, "reset stops every ring");
}
