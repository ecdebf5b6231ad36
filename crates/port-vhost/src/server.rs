//! The vhost-user socket of a port, in either role: vnetd listens (server mode) or vnetd
//! connects to a VMM's listening socket (client mode). Either way one connection at a
//! time drives one [`VhostUserNet`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::conn::MsgError;

use crate::{QueueControl, VhostUserNet};

/// How long a frontend may stall in the middle of a message before we give up on it: the
/// control thread serves every port, so one peer must not block it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds a listening socket at `path`, replacing a stale socket file (never another kind of
/// file). Non-blocking, for the control thread's poll loop.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Connects to a VMM's vhost-user server socket (client mode).
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path)
}

/// Shared handle to a port's request handler.
pub type SharedNet<C> = Arc<Mutex<VhostUserNet<C>>>;

/// One live frontend connection.
pub struct Connection<C: QueueControl + std::fmt::Debug + 'static> {
    stream: UnixStream,
    net: SharedNet<C>,
}

impl<C: QueueControl + std::fmt::Debug + 'static> std::fmt::Debug for Connection<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.stream.as_raw_fd())
            .finish()
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The frontend closed the socket.
    #[error("frontend disconnected")]
    Disconnected,
    /// The frontend sent something we refuse; the connection is dropped.
    #[error("protocol error: {0}")]
    Protocol(MsgError),
}

impl<C: QueueControl + std::fmt::Debug + 'static> Connection<C> {
    /// Wraps a connected stream (blocking, with [`IO_TIMEOUT`]) around `net`.
    pub fn new(stream: UnixStream, net: SharedNet<C>) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Connection { stream, net })
    }

    /// The socket fd, to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Handles one request; call when the socket is readable.
    pub fn handle(&mut self) -> Result<(), ConnError> {
        let mut net = match self.net.lock() {
            Ok(n) => n,
            Err(p) => p.into_inner(),
        };
        match crate::conn::handle_one(&mut self.stream, &mut net) {
            Ok(()) => Ok(()),
            Err(MsgError::Disconnected) => Err(ConnError::Disconnected),
            Err(MsgError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Err(ConnError::Disconnected)
            }
            Err(e) => Err(ConnError::Protocol(e)),
        }
    }
}
