//! The vhost-user side (`port-vhost`):
//!
//! * [`fuzz_messages`]: arbitrary bytes (and fds) on the socket, parsed by the `vhost`
//!   crate and dispatched to our handler;
//! * [`fuzz_handler`]: arbitrary sequences of handler calls with hostile arguments.
//!
//! Both drive a [`RingBuilder`] that builds each started ring exactly as the datapath
//! does, so ring-address validation is exercised too. Nothing may panic.

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

use port_vhost::testing::RingBuilder;
use port_vhost::{conn, NetDevice, VhostUserNet};

use crate::input::Input;

fn device() -> NetDevice {
    NetDevice {
        name: "fuzz".into(),
        mac: wire::MacAddr([0x52, 0x54, 0, 0, 0, 1]),
        mtu: 1500,
        queue_pairs: 2,
        // Small, so tables of several regions run into it.
        max_mem: 0x8_0000,
    }
}

fn small_memfd(size: u64) -> File {
    vring::mem::memfd(c"vhost-fuzz", size).unwrap()
}

fn eventfd() -> File {
    // Kick, call and err must be eventfds (anything else is refused).
    port_vhost::testing::eventfd().unwrap()
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
        if conn::handle_one(&mut ours, &mut net).is_err() {
            break;
        }
    }
    net.reset();
}

/// Mostly small values, sometimes wild ones.
fn addr(i: &mut Input<'_>) -> u64 {
    match i.u8() % 4 {
        0 => i.u64(),
        _ => u64::from(i.u32() % 0x3_0000),
    }
}

fn region(i: &mut Input<'_>) -> VhostUserMemoryRegion {
    VhostUserMemoryRegion {
        guest_phys_addr: addr(i),
        memory_size: addr(i),
        user_addr: addr(i),
        mmap_offset: addr(i) % 0x1_0000,
    }
}

/// Sequences of handler calls with hostile arguments.
pub fn fuzz_handler(data: &[u8]) {
    let mut i = Input(data);
    let mut net = VhostUserNet::new(device(), RingBuilder::default());
    for _ in 0..64 {
        if i.is_empty() {
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
                addr(&mut i),
                addr(&mut i),
                addr(&mut i),
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

#[cfg(test)]
mod tests {
    #[test]
    fn message_fuzz_with_valid_prefix() {
        // A well-formed GET_FEATURES then garbage: exercises the reply path.
        let mut d = vec![1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        d.extend_from_slice(&[0xff; 40]);
        super::fuzz_messages(&d);
    }
}
