//! The vnetd control protocol, shared by the daemon and `vnetctl`.
//!
//! Transport: a unix stream socket (by default [`DEFAULT_CONTROL_PATH`]). The client writes
//! one [`Request`] as a single line of JSON, the daemon answers with one [`Response`] line.
//! Lines end with `\n`; JSON never contains a raw newline, so framing is unambiguous.
//!
//! ```text
//! > {"cmd":"ports"}
//! < {"result":"ports","data":[{"name":"vm1","kind":"vhost-user",...}]}
//! > {"cmd":"version"}
//! < {"result":"version","data":{"version":"0.1.0"}}
//! < {"result":"error","data":{"message":"unknown command"}}
//! ```
//!
//! Compatibility: decoders ignore unknown fields, drop counters are a map keyed by reason
//! name, and an unknown port kind, mode or state decodes as `Unknown`, so a newer daemon
//! does not break an older CLI.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
pub use wire::MacAddr;

pub mod pcapng;

/// Where vnetd listens unless told otherwise.
pub const DEFAULT_CONTROL_PATH: &str = "/run/vnet/vnetd.sock";

/// Longest line either side accepts (the reply to `fdb` on a full table is the largest).
pub const MAX_LINE_LEN: usize = 16 << 20;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// List the ports and their state.
    Ports,
    /// Per-port counters.
    Stats,
    /// The forwarding database.
    Fdb,
    /// The daemon's version.
    Version,
    /// Add a port while the others keep forwarding.
    AddPort {
        /// What kind of port `spec` describes.
        kind: PortKind,
        /// The port exactly as vnetd's `--vhost-user` or `--tap` flag takes it.
        spec: String,
    },
    /// Change what can change on a running port (MAC as enforced, port security, VLAN,
    /// learning limit, rate limits).
    SetPort {
        /// The port's name.
        name: String,
        /// `KEY=VALUE` items, keys as on vnetd's command line.
        settings: Vec<String>,
    },
    /// Capture a port's frames: the `done` reply is followed on the same connection by a
    /// pcapng stream, until `count` frames or until the client closes.
    Capture {
        /// The port's name.
        port: String,
        /// Frames the port sends into the switch.
        take_in: bool,
        /// Frames the switch delivers to the port.
        take_out: bool,
        /// Bytes kept of each frame.
        snaplen: u32,
        /// Frames to capture (None: until the client closes).
        count: Option<u64>,
    },
    /// The running configuration, as the TOML vnetd reads.
    ShowConfig,
    /// Re-read `--config` and apply the difference.
    Reload,
    /// Remove a port: its rings stop, its frontend is disconnected, the socket file vnetd
    /// created is removed, its frames and FDB entries are released.
    DelPort {
        /// The port's name.
        name: String,
    },
}

impl Request {
    /// The command name as it appears on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ports => "ports",
            Request::Stats => "stats",
            Request::Fdb => "fdb",
            Request::Version => "version",
            Request::AddPort { .. } => "add_port",
            Request::DelPort { .. } => "del_port",
            Request::SetPort { .. } => "set_port",
            Request::ShowConfig => "show_config",
            Request::Capture { .. } => "capture",
            Request::Reload => "reload",
        }
    }
}

/// The daemon's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "data", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Ports`].
    Ports(Vec<PortInfo>),
    /// Answer to [`Request::Stats`].
    Stats(Vec<PortStats>),
    /// Answer to [`Request::Fdb`].
    Fdb(Vec<FdbEntry>),
    /// Answer to [`Request::Version`].
    Version {
        /// The daemon's version string.
        version: String,
    },
    /// Answer to [`Request::ShowConfig`].
    Config {
        /// The configuration as TOML.
        toml: String,
    },
    /// A change was made; what it was, for humans.
    Done {
        /// What changed.
        message: String,
    },
    /// The request failed.
    Error {
        /// What went wrong, for humans.
        message: String,
    },
}

impl Response {
    /// The variant name as it appears on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Ports(_) => "ports",
            Response::Stats(_) => "stats",
            Response::Fdb(_) => "fdb",
            Response::Version { .. } => "version",
            Response::Done { .. } => "done",
            Response::Config { .. } => "config",
            Response::Error { .. } => "error",
        }
    }

    /// Shorthand for an error response.
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

/// The kind of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortKind {
    /// A vhost-user virtio-net port (a VM or a userspace driver).
    VhostUser,
    /// A kernel tap interface.
    Tap,
    /// A kind this client does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

/// Which side of the vhost-user socket vnetd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortMode {
    /// vnetd listens, the frontend connects.
    Server,
    /// vnetd connects (and reconnects) to the frontend's socket.
    Client,
    /// Not a socket port (TAP).
    Kernel,
    /// A mode this client does not know.
    #[serde(other)]
    Unknown,
}

/// The state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortState {
    /// No peer, or the peer is not ready.
    Down,
    /// A peer is connected but has not started the device yet.
    Connected,
    /// Forwarding.
    Up,
    /// The peer broke the protocol or the rings; see [`PortInfo::broken_reason`].
    Broken,
    /// A state this client does not know.
    #[serde(other)]
    Unknown,
}

macro_rules! display_as_wire_name {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The name as it appears on the wire.
            pub fn as_str(&self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

display_as_wire_name!(PortKind { VhostUser => "vhost-user", Tap => "tap", Unknown => "unknown" });
display_as_wire_name!(PortMode { Server => "server", Client => "client", Kernel => "kernel", Unknown => "unknown" });
display_as_wire_name!(PortState {
    Down => "down",
    Connected => "connected",
    Up => "up",
    Broken => "broken",
    Unknown => "unknown",
});

/// One port, as listed by [`Request::Ports`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// The port's name.
    pub name: String,
    /// Its kind.
    pub kind: PortKind,
    /// The vhost-user socket path (none for tap ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// The TAP interface, as `ifname` or `ifname@netns` (tap ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Server or client side of the socket.
    pub mode: PortMode,
    /// The MAC address presented to the guest, `aa:bb:cc:dd:ee:ff` on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Current state.
    pub state: PortState,
    /// Negotiated virtio features by name (e.g. `VERSION_1,MRG_RXBUF,CSUM`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// Queue pairs (configured, or negotiated once up).
    pub queue_pairs: u16,
    /// MTU.
    pub mtu: u16,
    /// Why the port is broken, when [`PortState::Broken`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_reason: Option<String>,
    /// VLAN membership: `10` (access), `trunk:10,20`, none for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<String>,
    /// Isolation settings in effect, e.g. `spoofchk max-macs=64 ingress=100M,5kpps
    /// flood=2kpps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<String>,
}

/// Counters of one port, from the switch's view: `rx` is what the switch received from the
/// port, `tx` what it sent to the port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// The port's name.
    pub name: String,
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_packets: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Dropped frames by reason name (`hairpin`, `no_rx_buffer`, ...).
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// Per queue pair of a vhost-user port: descriptor chains the switch took from and
    /// gave to the guest (empty for TAP ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueStats>,
}

/// Ring counters of one queue pair, from the switch's view like [`PortStats`]: used
/// entries the device returned on the pair's txq (`rx_chains`: one per frame the guest
/// sent) and on its rxq (`tx_chains`: one per receive buffer filled; a frame merged over
/// several buffers takes several).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue pair number (rxq `2 * pair`, txq `2 * pair + 1`).
    pub pair: u16,
    /// Chains taken from the pair's txq.
    pub rx_chains: u64,
    /// Chains filled on the pair's rxq.
    pub tx_chains: u64,
}

impl PortStats {
    /// Sum of all drop counters (saturating).
    pub fn total_drops(&self) -> u64 {
        self.drops.values().fold(0u64, |a, d| a.saturating_add(*d))
    }

    /// Frames dropped for `reason` (a [`PortStats::drops`] key; 0 when absent).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }
}

/// One forwarding database entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// Station address, `aa:bb:cc:dd:ee:ff` on the wire.
    pub mac: MacAddr,
    /// VLAN it was learned on (0: untagged).
    pub vlan: u16,
    /// Name of the port it was learned on.
    pub port: String,
    /// Seconds since the address was last seen (0 for static entries).
    pub age_secs: u64,
    /// A configured address of the port (never ages, never moves), not a learned one.
    #[serde(default, rename = "static")]
    pub fixed: bool,
}

/// Errors of the protocol helpers and the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The control socket could not be reached.
    #[error(
        "cannot connect to vnetd control socket {}: {} (is vnetd running? use --control PATH)",
        path.display(),
        io_message(error)
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The connect error (part of the message, not a separate `source()`, so
        /// `{:#}` chains print it once).
        error: io::Error,
    },
    /// Sending or receiving on an established connection failed.
    #[error("{op} on vnetd control socket {}: {}", path.display(), io_message(error))]
    Io {
        /// What was being done ("sending request", "reading reply").
        op: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The error (part of the message).
        error: io::Error,
    },
    /// No complete reply arrived in time.
    #[error("vnetd did not reply on {} within {timeout:?}", path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The daemon closed the connection before a complete reply line.
    #[error("vnetd closed the control connection {} without a reply", path.display())]
    Closed {
        /// The socket path.
        path: PathBuf,
    },
    /// A line exceeded [`MAX_LINE_LEN`].
    #[error("control message longer than {MAX_LINE_LEN} bytes")]
    TooLong,
    /// A line was not valid JSON for the expected message.
    #[error("malformed control message: {error} in `{excerpt}`")]
    Decode {
        /// The parse error (part of the message).
        error: serde_json::Error,
        /// The start of the offending line.
        excerpt: String,
    },
}

/// An io::Error's text without the " (os error N)" suffix `std` appends.
fn io_message(e: &io::Error) -> String {
    let s = e.to_string();
    match (e.raw_os_error(), s.rfind(" (os error ")) {
        (Some(_), Some(i)) => s[..i].to_string(),
        _ => s,
    }
}

/// Encodes a message as one JSON line, `\n` included.
///
/// The protocol types always serialize (string keys, no custom serializers); should a
/// foreign `T` fail, the line is a [`Response::Error`] saying so, so a peer never receives
/// an empty or broken line.
pub fn encode_line<T: Serialize>(msg: &T) -> String {
    let mut line = serde_json::to_string(msg).unwrap_or_else(|e| {
        let fallback = Response::error(format!("cannot encode reply: {e}"));
        serde_json::to_string(&fallback).unwrap_or_default()
    });
    line.push('\n');
    line
}

/// Decodes one JSON line (a trailing `\n` or `\r\n` is allowed).
pub fn decode_line<T: DeserializeOwned>(line: &str) -> Result<T, ApiError> {
    if line.len() > MAX_LINE_LEN {
        return Err(ApiError::TooLong);
    }
    let trimmed = line.trim_end_matches(['\n', '\r']);
    serde_json::from_str(trimmed).map_err(|error| ApiError::Decode {
        error,
        excerpt: excerpt(trimmed),
    })
}

fn excerpt(line: &str) -> String {
    const MAX: usize = 80;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

/// Sends `req` to the daemon at `path` and waits for its one-line reply, at most `timeout`
/// overall for writing and reading (a zero timeout counts as one millisecond).
///
/// A [`Response::Error`] is returned as `Ok`: the exchange worked, the daemon said no.
pub fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ApiError> {
    let timeout = timeout.max(Duration::from_millis(1));
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(path).map_err(|error| ApiError::Connect {
        path: path.to_path_buf(),
        error,
    })?;
    let io_err = |op: &'static str, error: io::Error| {
        if matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ApiError::Timeout {
                path: path.to_path_buf(),
                timeout,
            }
        } else {
            ApiError::Io {
                op,
                path: path.to_path_buf(),
                error,
            }
        }
    };
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| io_err("setting write timeout", e))?;
    stream
        .write_all(encode_line(req).as_bytes())
        .map_err(|e| io_err("sending request", e))?;

    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ApiError::Timeout {
                path: path.to_path_buf(),
                timeout,
            });
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| io_err("setting read timeout", e))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading reply", e)),
        };
        let Some(data) = chunk.get(..n) else {
            return Err(io_err("reading reply", io::ErrorKind::InvalidData.into()));
        };
        if n == 0 {
            return Err(ApiError::Closed {
                path: path.to_path_buf(),
            });
        }
        let scan_from = buf.len();
        buf.extend_from_slice(data);
        if let Some(pos) = buf[scan_from..].iter().position(|&b| b == b'\n') {
            buf.truncate(scan_from + pos);
            break;
        }
        if buf.len() > MAX_LINE_LEN {
            return Err(ApiError::TooLong);
        }
    }
    let line = String::from_utf8_lossy(&buf);
    decode_line(&line)
}

#[cfg(test)]
mod tests;
