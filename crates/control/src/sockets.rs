//! Unix sockets with owners: where vnetd may create them, who owns them, who may connect.
//!
//! The rules (README, "Security"):
//! * A socket vnetd creates (server-mode vhost-user ports, the control socket) or connects
//!   to (client-mode ports) must sit in a directory owned by root or by vnetd's user that
//!   neither its group nor others may write, unless the operator allows shared directories
//!   (`--allow-shared-socket-dir`): in a directory others may write, another local user
//!   could put their own socket at the path first and pose as the VM or as vnetd.
//! * A socket file is created 0600 (bind under umask 0177), then given its group and
//!   final mode before `listen`, so nobody connects in between.
//! * An existing socket file at the path is removed only when nothing accepts on it: a
//!   second vnetd on the same path fails with a clear error and the first keeps serving.
//! * A port may name the peer uids it accepts (`SO_PEERCRED`); others are refused.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};

/// Who owns a socket file vnetd creates, and its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Permission bits.
    pub mode: u32,
    /// Owner (None: vnetd's current user).
    pub uid: Option<u32>,
    /// Group (None: vnetd's current group).
    pub gid: Option<u32>,
}

/// Where sockets may be: the directory rule above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirRule {
    /// The uid vnetd runs as once set up (may own socket directories besides root).
    pub run_uid: u32,
    /// Directories others may write are accepted.
    pub allow_shared: bool,
}

fn err(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// The directory `path` is in (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks the directory rule for a socket at `path`.
pub fn check_dir(path: &Path, rule: DirRule) -> io::Result<()> {
    if rule.allow_shared {
        return Ok(());
    }
    let dir = parent(path);
    let md = std::fs::metadata(&dir)
        .map_err(|e| err(e.kind(), format!("directory {}: {e}", dir.display())))?;
    let mode = md.permissions().mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("its group and other users"),
        (true, false) => Some("its group"),
        (false, true) => Some("other users"),
        (false, false) => None,
    };
    if let Some(who) = who {
        return Err(err(
            io::ErrorKind::PermissionDenied,
            format!(
                "directory {} (mode {mode:04o}) is writable by {who}, who could put their own \
                 socket at {}: use a directory only vnetd's user can write (such as /run/vnet), \
                 or accept the risk with --allow-shared-socket-dir",
                dir.display(),
                path.display()
            ),
        ));
    }
    if md.uid() != 0 && md.uid() != rule.run_uid {
        return Err(err(
            io::ErrorKind::PermissionDenied,
            format!(
                "directory {} is owned by uid {}, neither root nor vnetd's user (uid {}): its \
                 owner could replace {}; use another directory, or accept the risk with \
                 --allow-shared-socket-dir",
                dir.display(),
                md.uid(),
                rule.run_uid,
                path.display()
            ),
        ));
    }
    Ok(())
}

/// A new non-blocking unix stream socket and the address of `path`.
fn unix_socket(path: &Path) -> io::Result<(OwnedFd, UnixAddr)> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    Ok((fd, UnixAddr::new(path)?))
}

/// Connects without blocking: a listener with a full backlog is `WouldBlock`, never a wait.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let (fd, addr) = unix_socket(path)?;
    socket::connect(fd.as_raw_fd(), &addr)?;
    Ok(UnixStream::from(fd))
}

/// Whether something accepts connections on the socket at `path` (a full backlog counts).
fn served(path: &Path) -> io::Result<bool> {
    match connect_nonblocking(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates a listening socket at `path` owned as `owner` says (non-blocking, for the
/// control thread's poll loop). A stale socket file is replaced; a live one, or any other
/// kind of file, is an error naming the path.
pub fn listen(path: &Path, owner: Owner, rule: DirRule) -> io::Result<UnixListener> {
    let dir = parent(path);
    if !dir.exists() {
        // A missing directory is created 0755, owned by root: only vnetd writes in it.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
            .create(&dir)
            .map_err(|e| {
                err(
                    e.kind(),
                    format!("creating directory {}: {e}", dir.display()),
                )
            })?;
    }
    check_dir(path, rule)?;
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            return Err(err(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if served(path)? {
            return Err(err(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: another process (another vnetd?) accepts connections on it",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let (fd, addr) = unix_socket(path)?;
    // Created 0600 whatever the process umask; umask is per process, and only this
    // (control) thread creates files.
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o177));
    let bound = socket::bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound?;
    let finish = || -> io::Result<()> {
        if owner.uid.is_some() || owner.gid.is_some() {
            nix::unistd::chown(
                path,
                owner.uid.map(Uid::from_raw),
                owner.gid.map(Gid::from_raw),
            )?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(owner.mode))?;
        socket::listen(
            &fd.as_fd(),
            socket::Backlog::new(16).unwrap_or(socket::Backlog::MAXCONN),
        )?;
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(fd))
}

/// The uid of the process at the other end of `s` (`SO_PEERCRED`).
pub fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    let cred = socket::getsockopt(s, socket::sockopt::PeerCredentials)?;
    Ok(cred.uid())
}

/// A group name or numeric gid.
pub fn resolve_group(name: &str) -> io::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(name)? {
        Some(g) => Ok(g.gid.as_raw()),
        None => Err(err(
            io::ErrorKind::NotFound,
            format!("no group named `{name}`"),
        )),
    }
}

/// `USER[:GROUP]` (names or numeric ids) as `(uid, gid)`; without a group, the user's
/// primary group.
pub fn resolve_user(spec: &str) -> io::Result<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid))?,
        Err(_) => User::from_name(user)?,
    };
    let (uid, primary) = match (found, user.parse::<u32>()) {
        (Some(u), _) => (u.uid.as_raw(), Some(u.gid.as_raw())),
        (None, Ok(uid)) => (uid, None),
        (None, Err(_)) => {
            return Err(err(
                io::ErrorKind::NotFound,
                format!("no user named `{user}`"),
            ));
        }
    };
    let gid = match group {
        Some(g) => resolve_group(g)?,
        None => primary.ok_or_else(|| {
            err(
                io::ErrorKind::NotFound,
                format!("uid {uid} has no passwd entry: give its group as {uid}:GROUP"),
            )
        })?,
    };
    Ok((uid, gid))
}
