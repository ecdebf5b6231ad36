//! The vhost-user connection of a port, in either role (vnetd listens, or connects to a
//! VMM's socket): each connection is served by a thread of its own, so a frontend that
//! stalls mid-message, or never reads its replies, holds only its own port's handshake.
//!
//! Why a thread per connection rather than one non-blocking loop: a vhost-user message
//! may carry fds with its first bytes and its reply can depend on a worker's answer; a
//! blocking reader per connection keeps that sequence plain code, and the cost is one
//! mostly sleeping thread per VM. Each message must be complete within
//! [`crate::conn::MESSAGE_DEADLINE`] of its first byte, replies within [`IO_TIMEOUT`].
//! The handler is locked only while a complete message is dispatched, never while waiting
//! for one.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::conn::MsgError;
/// Whether the peer of a unix stream closed its end, without reading or waiting.
pub use crate::sys::peer_hung_up;

use crate::{QueueControl, VhostUserNet};

/// How long a reply may take to be written before the frontend is dropped.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared handle to a port's request handler.
pub type SharedNet<C> = Arc<Mutex<VhostUserNet<C>>>;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The frontend closed the socket (or vnetd closed the connection).
    #[error("frontend disconnected")]
    Disconnected,
    /// The frontend sent something we refuse; the connection is dropped.
    #[error("protocol error: {0}")]
    Protocol(MsgError),
}

/// One live frontend connection and the thread serving it.
#[derive(Debug)]
pub struct Connection {
    /// A second handle to the socket, to shut it down from the control thread.
    stream: UnixStream,
    thread: Option<JoinHandle<ConnError>>,
    done: Arc<AtomicBool>,
}

fn lock<C: QueueControl>(net: &SharedNet<C>) -> std::sync::MutexGuard<'_, VhostUserNet<C>> {
    match net.lock() {
        Ok(n) => n,
        Err(p) => p.into_inner(),
    }
}

/// Serves messages until the frontend goes or breaks a rule; returns why it ended.
fn serve<C: QueueControl + std::fmt::Debug>(mut s: UnixStream, net: &SharedNet<C>) -> ConnError {
    let r = loop {
        let m = match crate::conn::read_message(&mut s) {
            Ok(m) => m,
            Err(e) => break e,
        };
        if let Err(e) = crate::conn::handle_message(&mut s, &mut lock(net), m) {
            break e;
        }
    };
    match r {
        MsgError::Disconnected => ConnError::Disconnected,
        MsgError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ) =>
        {
            ConnError::Disconnected
        }
        e => ConnError::Protocol(e),
    }
}

impl Connection {
    /// Starts serving `stream` for `net` on a new thread named after the port. When the
    /// connection ends, the handler is reset (every ring stops), `on_exit` runs with the
    /// reason, and [`Connection::finished`] turns true.
    pub fn spawn<C: QueueControl + std::fmt::Debug + 'static>(
        port: &str,
        stream: UnixStream,
        net: SharedNet<C>,
        on_exit: impl FnOnce(&ConnError) + Send + 'static,
    ) -> io::Result<Connection> {
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let ours = stream.try_clone()?;
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vnet-vu-{port}"))
            .spawn(move || {
                let why = serve(stream, &net);
                lock(&net).reset();
                // Finished before `on_exit` wakes the owner, so it finds this one done.
                flag.store(true, Ordering::Release);
                on_exit(&why);
                why
            })?;
        Ok(Connection {
            stream: ours,
            thread: Some(thread),
            done,
        })
    }

    /// The socket fd.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Whether the connection ended (its thread is about to exit or has), or its peer
    /// closed its end (the thread will notice soon).
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire) || crate::sys::peer_hung_up(&self.stream)
    }

    /// Ends the connection (if it still runs) and waits for its thread; returns why it
    /// ended.
    pub fn close(mut self) -> ConnError {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(ConnError::Disconnected)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stream.shutdown(Shutdown::Both);
            let _ = t.join();
        }
    }
}
