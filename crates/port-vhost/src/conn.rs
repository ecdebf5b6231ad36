//! The vhost-user message loop of one connection: read a message (header, body, fds),
//! validate it, dispatch it to [`VhostUserNet`], reply.
//!
//! Message layouts and validators come from the `vhost` crate; the loop is ours, so the
//! order in which frontends really send messages is accepted: QEMU 7.2, for one, sends
//! SET_VRING_ENABLE before SET_FEATURES.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    FrontendReq, VhostUserConfig, VhostUserConfigFlags, VhostUserMemory, VhostUserMemoryRegion,
    VhostUserMsgValidator, VhostUserSingleMemoryRegion, VhostUserU64, VhostUserVringAddr,
    VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{Error as VuError, VhostUserBackendReqHandlerMut};
use vm_memory::ByteValued;

use crate::{QueueControl, VhostUserNet};

/// How long the rest of a message may take once its first bytes arrived.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(1);

/// Largest message body accepted (vhost-user's own limit).
pub const MAX_BODY: usize = 0x1000;
const HDR_LEN: usize = 12;
const FLAG_VERSION_1: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
/// `SET_VRING_KICK/CALL/ERR`: bits 0-7 are the ring index, bit 8 says "no fd".
const VRING_IDX_MASK: u64 = 0xff;
const VRING_NOFD: u64 = 0x100;

/// Why a message was refused; the connection is dropped after it.
#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    /// The frontend closed the socket.
    #[error("frontend disconnected")]
    Disconnected,
    /// A socket error.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// A message started but was not complete within [`MESSAGE_DEADLINE`].
    #[error("message not complete within {} ms", MESSAGE_DEADLINE.as_millis())]
    Stalled,
    /// A malformed message.
    #[error("{0}")]
    Malformed(String),
    /// The handler refused a well-formed request.
    #[error("{request:?} refused: {err}")]
    Refused {
        /// The request.
        request: FrontendReq,
        /// Why.
        err: VuError,
    },
}

fn malformed(what: impl Into<String>) -> MsgError {
    MsgError::Malformed(what.into())
}

/// Decodes a message body of exactly `T`'s size, checked by its validator.
fn body<T: ByteValued + Default + VhostUserMsgValidator>(
    b: &[u8],
    req: FrontendReq,
) -> Result<T, MsgError> {
    let mut v = T::default();
    if b.len() != std::mem::size_of::<T>() {
        return Err(malformed(format!(
            "{req:?}: body of {} bytes, expected {}",
            b.len(),
            std::mem::size_of::<T>()
        )));
    }
    v.as_mut_slice().copy_from_slice(b);
    if !v.is_valid() {
        return Err(malformed(format!("{req:?}: invalid body")));
    }
    Ok(v)
}

/// What to send back.
enum Reply {
    /// Nothing, or a REPLY_ACK if the frontend asked for one.
    Ack,
    /// A reply body.
    Data(Vec<u8>),
}

/// One message as read from the socket, not yet looked at beyond its header.
#[derive(Debug)]
pub struct Message {
    code: u32,
    flags: u32,
    body: Vec<u8>,
    files: Vec<File>,
}

/// Reads `buf.len()` bytes, all of them by `deadline`.
fn read_exact_by(sock: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> Result<(), MsgError> {
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MsgError::Stalled);
        }
        sock.set_read_timeout(Some(left))?;
        match sock.read(&mut buf[done..]) {
            Ok(0) => return Err(MsgError::Disconnected),
            Ok(n) => done += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(MsgError::Stalled)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads one message: waits as long as it takes for its first bytes, then the whole
/// message must arrive within [`MESSAGE_DEADLINE`] (a peer sending a byte at a time is
/// dropped instead of holding its thread and its port's handler).
pub fn read_message(sock: &mut UnixStream) -> Result<Message, MsgError> {
    let mut hdr = [0u8; HDR_LEN];
    sock.set_read_timeout(None)?;
    let (n, files) = crate::sys::recv_with_files(sock, &mut hdr)?;
    if n == 0 {
        return Err(MsgError::Disconnected);
    }
    let deadline = Instant::now() + MESSAGE_DEADLINE;
    if n < HDR_LEN {
        read_exact_by(sock, &mut hdr[n..], deadline)?;
    }
    let word = |i: usize| u32::from_ne_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    let (code, flags, size) = (word(0), word(4), word(8));
    if flags & 0x3 != FLAG_VERSION_1 || flags & FLAG_REPLY != 0 || flags & !0xf != 0 {
        return Err(malformed(format!("bad header flags {flags:#x}")));
    }
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > MAX_BODY {
        return Err(malformed(format!("message body of {size} bytes")));
    }
    let mut body = vec![0u8; size];
    read_exact_by(sock, &mut body, deadline)?;
    Ok(Message {
        code,
        flags,
        body,
        files,
    })
}

/// Reads and handles one message (tests and fuzzing; the daemon reads without holding
/// the handler, see [`read_message`] and [`handle_message`]).
pub fn handle_one<C: QueueControl + std::fmt::Debug>(
    sock: &mut UnixStream,
    net: &mut VhostUserNet<C>,
) -> Result<(), MsgError> {
    let m = read_message(sock)?;
    handle_message(sock, net, m)
}

/// Validates, dispatches and answers one message.
pub fn handle_message<C: QueueControl + std::fmt::Debug>(
    sock: &mut UnixStream,
    net: &mut VhostUserNet<C>,
    m: Message,
) -> Result<(), MsgError> {
    let Message {
        code,
        flags,
        body: b,
        files,
    } = m;
    let size = b.len();
    let req =
        FrontendReq::try_from(code).map_err(|()| malformed(format!("unknown request {code}")))?;
    tracing::trace!(
        "port {}: {req:?} flags {flags:#x}, {size} bytes, {} fd(s): {:02x?}",
        net.dev.name,
        files.len(),
        &b[..b.len().min(64)]
    );
    let result = dispatch(net, req, &b, files);
    let need_ack = flags & FLAG_NEED_REPLY != 0 && net.reply_ack_negotiated();
    match result {
        Ok(Reply::Data(data)) => send(sock, code, &data)?,
        Ok(Reply::Ack) => {
            if need_ack {
                send(sock, code, &0u64.to_ne_bytes())?;
            }
        }
        Err(e) => {
            if need_ack {
                let _ = send(sock, code, &1u64.to_ne_bytes());
            }
            return Err(e);
        }
    }
    Ok(())
}

fn send(sock: &mut UnixStream, code: u32, body: &[u8]) -> io::Result<()> {
    let mut m = Vec::with_capacity(HDR_LEN + body.len());
    m.extend_from_slice(&code.to_ne_bytes());
    m.extend_from_slice(&(FLAG_VERSION_1 | FLAG_REPLY).to_ne_bytes());
    m.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_ne_bytes());
    m.extend_from_slice(body);
    sock.write_all(&m)
}

fn no_files(req: FrontendReq, files: &[File]) -> Result<(), MsgError> {
    if files.is_empty() {
        Ok(())
    } else {
        Err(malformed(format!(
            "{req:?} came with {} unexpected fd(s)",
            files.len()
        )))
    }
}

fn one_file(req: FrontendReq, mut files: Vec<File>) -> Result<File, MsgError> {
    match files.len() {
        1 => Ok(files.remove(0)),
        n => Err(malformed(format!("{req:?} came with {n} fds, expected 1"))),
    }
}

fn dispatch<C: QueueControl + std::fmt::Debug>(
    net: &mut VhostUserNet<C>,
    req: FrontendReq,
    b: &[u8],
    files: Vec<File>,
) -> Result<Reply, MsgError> {
    use FrontendReq as R;
    let refused = |err| MsgError::Refused { request: req, err };
    let u64_reply = |v: u64| Reply::Data(v.to_ne_bytes().to_vec());
    // Every request but these carries no fd.
    if !matches!(
        req,
        R::SET_MEM_TABLE
            | R::ADD_MEM_REG
            | R::SET_VRING_KICK
            | R::SET_VRING_CALL
            | R::SET_VRING_ERR
    ) {
        no_files(req, &files)?;
    }
    Ok(match req {
        R::GET_FEATURES => {
            body_empty(req, b)?;
            u64_reply(net.get_features().map_err(refused)?)
        }
        R::SET_FEATURES => {
            let v: VhostUserU64 = body(b, req)?;
            net.set_features(v.value).map_err(refused)?;
            Reply::Ack
        }
        R::GET_PROTOCOL_FEATURES => {
            body_empty(req, b)?;
            u64_reply(net.get_protocol_features().map_err(refused)?.bits())
        }
        R::SET_PROTOCOL_FEATURES => {
            let v: VhostUserU64 = body(b, req)?;
            net.set_protocol_features(v.value).map_err(refused)?;
            Reply::Ack
        }
        R::SET_OWNER => {
            body_empty(req, b)?;
            net.set_owner().map_err(refused)?;
            Reply::Ack
        }
        R::RESET_OWNER | R::RESET_DEVICE => {
            body_empty(req, b)?;
            net.reset();
            Reply::Ack
        }
        R::GET_QUEUE_NUM => {
            body_empty(req, b)?;
            u64_reply(net.get_queue_num().map_err(refused)?)
        }
        R::GET_MAX_MEM_SLOTS => {
            body_empty(req, b)?;
            u64_reply(net.get_max_mem_slots().map_err(refused)?)
        }
        R::SET_MEM_TABLE => {
            let hl = std::mem::size_of::<VhostUserMemory>();
            let head: VhostUserMemory = body(b.get(..hl).unwrap_or(&[]), req)?;
            let n = usize::try_from(head.num_regions).unwrap_or(0);
            let rl = std::mem::size_of::<VhostUserMemoryRegion>();
            if b.len() != hl + n * rl || files.len() != n {
                return Err(malformed(format!(
                    "SET_MEM_TABLE: {n} regions, {} bytes, {} fds",
                    b.len(),
                    files.len()
                )));
            }
            let regions = b[hl..]
                .chunks_exact(rl)
                .map(|c| body::<VhostUserMemoryRegion>(c, req))
                .collect::<Result<Vec<_>, _>>()?;
            net.set_mem_table(&regions, files).map_err(refused)?;
            Reply::Ack
        }
        R::ADD_MEM_REG => {
            let r: VhostUserSingleMemoryRegion = body(b, req)?;
            net.add_mem_region(&r, one_file(req, files)?)
                .map_err(refused)?;
            Reply::Ack
        }
        R::REM_MEM_REG => {
            let r: VhostUserSingleMemoryRegion = body(b, req)?;
            net.remove_mem_region(&r).map_err(refused)?;
            Reply::Ack
        }
        R::SET_VRING_NUM => {
            let s: VhostUserVringState = body(b, req)?;
            net.set_vring_num(s.index, s.num).map_err(refused)?;
            Reply::Ack
        }
        R::SET_VRING_BASE => {
            let s: VhostUserVringState = body(b, req)?;
            net.set_vring_base(s.index, s.num).map_err(refused)?;
            Reply::Ack
        }
        R::GET_VRING_BASE => {
            let s: VhostUserVringState = body(b, req)?;
            let r = net.get_vring_base(s.index).map_err(refused)?;
            Reply::Data(r.as_slice().to_vec())
        }
        R::SET_VRING_ENABLE => {
            let s: VhostUserVringState = body(b, req)?;
            let enable = match s.num {
                0 => false,
                1 => true,
                n => return Err(malformed(format!("SET_VRING_ENABLE {n}"))),
            };
            net.set_vring_enable(s.index, enable).map_err(refused)?;
            Reply::Ack
        }
        R::SET_VRING_ADDR => {
            let a: VhostUserVringAddr = body(b, req)?;
            let flags = VhostUserVringAddrFlags::from_bits(a.flags)
                .ok_or_else(|| malformed("SET_VRING_ADDR: unknown flags"))?;
            net.set_vring_addr(a.index, flags, a.descriptor, a.used, a.available, a.log)
                .map_err(refused)?;
            Reply::Ack
        }
        R::SET_VRING_KICK | R::SET_VRING_CALL | R::SET_VRING_ERR => {
            let v: VhostUserU64 = body(b, req)?;
            if v.value & !(VRING_IDX_MASK | VRING_NOFD) != 0 {
                return Err(malformed(format!("{req:?}: bad value {:#x}", v.value)));
            }
            let index = u8::try_from(v.value & VRING_IDX_MASK).unwrap_or(u8::MAX);
            let file = if v.value & VRING_NOFD != 0 {
                no_files(req, &files)?;
                None
            } else {
                Some(one_file(req, files)?)
            };
            match req {
                R::SET_VRING_KICK => net.set_vring_kick(index, file),
                R::SET_VRING_CALL => net.set_vring_call(index, file),
                _ => net.set_vring_err(index, file),
            }
            .map_err(refused)?;
            Reply::Ack
        }
        R::GET_CONFIG => {
            let hl = std::mem::size_of::<VhostUserConfig>();
            let c: VhostUserConfig = body(b.get(..hl).unwrap_or(&[]), req)?;
            let size = usize::try_from(c.size).unwrap_or(usize::MAX);
            if b.len() != hl + size {
                return Err(malformed("GET_CONFIG: payload size mismatch"));
            }
            let flags = VhostUserConfigFlags::from_bits_truncate(c.flags);
            let data = net.get_config(c.offset, c.size, flags).map_err(refused)?;
            let mut out = c.as_slice().to_vec();
            out.extend_from_slice(&data);
            Reply::Data(out)
        }
        R::SET_CONFIG => {
            let hl = std::mem::size_of::<VhostUserConfig>();
            let c: VhostUserConfig = body(b.get(..hl).unwrap_or(&[]), req)?;
            let flags = VhostUserConfigFlags::from_bits_truncate(c.flags);
            net.set_config(c.offset, b.get(hl..).unwrap_or(&[]), flags)
                .map_err(refused)?;
            Reply::Ack
        }
        other => {
            return Err(MsgError::Refused {
                request: other,
                err: VuError::InvalidOperation("request not supported by vnetd"),
            })
        }
    })
}

fn body_empty(req: FrontendReq, b: &[u8]) -> Result<(), MsgError> {
    if b.is_empty() {
        Ok(())
    } else {
        Err(malformed(format!(
            "{req:?}: unexpected body of {} bytes",
            b.len()
        )))
    }
}
