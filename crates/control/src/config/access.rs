//! Who may reach vnetd and what a frontend may map: the socket options of a vhost-user port
//! (`mode=`, `group=`, `uids=`, `max-mem=`) and the daemon's own security settings
//! (`user`, `seccomp`, socket defaults, the control socket's group).

use std::fmt;

use super::isolation::bad;
use super::ConfigError;

/// How the seccomp filters are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// A syscall outside a thread's allowlist kills the process (the default).
    #[default]
    Enforce,
    /// A syscall outside the allowlist is allowed and logged by the kernel (audit log).
    Log,
    /// No filter.
    Off,
}

impl std::str::FromStr for SeccompMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(SeccompMode::Enforce),
            "log" => Ok(SeccompMode::Log),
            "off" => Ok(SeccompMode::Off),
            _ => Err(format!(
                "unknown seccomp mode `{s}`: expected enforce, log or off"
            )),
        }
    }
}

impl fmt::Display for SeccompMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeccompMode::Enforce => "enforce",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        })
    }
}

/// The daemon's security settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// `USER[:GROUP]` to switch to once set up (`--user`).
    pub user: Option<String>,
    /// seccomp filters (`--seccomp`).
    pub seccomp: SeccompMode,
    /// Default mode of vhost-user socket files (`--socket-mode`, octal; else 0600).
    pub socket_mode: Option<u32>,
    /// Default group of vhost-user socket files (`--socket-group`).
    pub socket_group: Option<String>,
    /// Group of the control socket, which is then 0660 (`--control-group`; else 0600).
    pub control_group: Option<String>,
    /// Accept sockets in directories other users may write (`--allow-shared-socket-dir`).
    pub allow_shared_socket_dir: bool,
}

impl Security {
    /// Checks a `user`, `socket_group` or `control_group` value (`user` may be
    /// `USER:GROUP`).
    pub fn check_name(key: &'static str, value: &str) -> Result<(), ConfigError> {
        let ok = match (key, value.split_once(':')) {
            ("user", Some((u, g))) => check_group(u) && check_group(g),
            _ => check_group(value),
        };
        if ok {
            Ok(())
        } else {
            Err(ConfigError::Security {
                key,
                value: value.to_string(),
                expected: if key == "user" {
                    "USER or USER:GROUP (names or numeric ids)"
                } else {
                    "a group name or gid"
                },
            })
        }
    }

    /// Parses an octal socket mode setting.
    pub fn mode(key: &'static str, value: &str) -> Result<u32, ConfigError> {
        parse_mode(value).ok_or_else(|| ConfigError::Security {
            key,
            value: value.to_string(),
            expected: "an octal mode up to 777, such as 0660",
        })
    }
}

/// Default mode of a vhost-user socket: only vnetd's user (QEMU as root, or the same user).
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// Largest `max-mem`: the whole 47-bit user address space.
pub const MAX_MAX_MEM: u64 = 1 << 47;

/// Who may connect to a vhost-user port and what its frontend may map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// Mode of the socket file vnetd creates (server mode), else the daemon's default.
    pub mode: Option<u32>,
    /// Group of the socket file vnetd creates, else the daemon's default.
    pub group: Option<String>,
    /// Peer uids allowed to connect (`SO_PEERCRED`); empty: anyone who can open the socket.
    pub uids: Vec<u32>,
    /// Most bytes of guest memory the frontend may have mapped (default 1 TiB).
    pub max_mem: Option<u64>,
}

/// A file mode in octal (`660`, `0660`, `0o660`), permission bits only.
pub fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// A byte count with an optional binary suffix: `4096`, `512M`, `64G`, `1T` (K, M, G, T
/// are powers of 1024; a trailing `iB` or `B` is accepted).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim_end_matches("iB").trim_end_matches('B');
    let (digits, shift) = match t.char_indices().last()? {
        (i, 'K' | 'k') => (&t[..i], 10),
        (i, 'M' | 'm') => (&t[..i], 20),
        (i, 'G' | 'g') => (&t[..i], 30),
        (i, 'T' | 't') => (&t[..i], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// A group name or numeric gid, as `chown` takes it.
pub fn check_group(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !text.starts_with('-')
}

impl Access {
    /// The command-line keys (`mode=660,group=kvm,uids=0:107,max-mem=64G`).
    pub(super) fn from_spec<'a>(
        port: &str,
        get: impl Fn(&'static str) -> Result<Option<&'a str>, ConfigError>,
    ) -> Result<Access, ConfigError> {
        let uids = match get("uids")? {
            None => Vec::new(),
            Some(v) => v
                .split(':')
                .map(|u| {
                    u.parse::<u32>()
                        .map_err(|_| bad(port, "uids", v, "uids separated by `:`"))
                })
                .collect::<Result<_, _>>()?,
        };
        let access = Access {
            mode: get("mode")?
                .map(|m| {
                    parse_mode(m).ok_or_else(|| bad(port, "mode", m, "an octal mode up to 777"))
                })
                .transpose()?,
            group: get("group")?.map(str::to_string),
            uids,
            max_mem: get("max-mem")?
                .map(|m| parse_size(m).ok_or_else(|| bad(port, "max-mem", m, "a size such as 64G")))
                .transpose()?,
        };
        access.validate(port)?;
        Ok(access)
    }

    /// The TOML keys: `mode = "0660"`, `group = "kvm"`, `uids = [0, 107]`,
    /// `max_mem = "64G"` (or a number of bytes).
    pub(super) fn from_raw(port: &str, raw: RawAccess) -> Result<Access, ConfigError> {
        let access = Access {
            mode: raw
                .mode
                .map(|m| {
                    parse_mode(&m).ok_or_else(|| bad(port, "mode", &m, "an octal mode up to 777"))
                })
                .transpose()?,
            group: raw.group,
            uids: raw.uids,
            max_mem: match raw.max_mem {
                None => None,
                Some(RawSize::Bytes(n)) => Some(n),
                Some(RawSize::Text(t)) => Some(
                    parse_size(&t).ok_or_else(|| bad(port, "max_mem", &t, "a size such as 64G"))?,
                ),
            },
        };
        access.validate(port)?;
        Ok(access)
    }

    /// Checks the values on their own.
    pub fn validate(&self, port: &str) -> Result<(), ConfigError> {
        if let Some(g) = &self.group {
            if !check_group(g) {
                return Err(bad(port, "group", g, "a group name or gid"));
            }
        }
        if let Some(m) = self.max_mem {
            if !(1 << 20..=MAX_MAX_MEM).contains(&m) {
                return Err(bad(port, "max-mem", m, "a size from 1M to 128T"));
            }
        }
        Ok(())
    }

    /// The command-line form of the set keys (each with its leading comma).
    pub(super) fn fmt_spec(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = self.mode {
            write!(f, ",mode={m:04o}")?;
        }
        if let Some(g) = &self.group {
            write!(f, ",group={g}")?;
        }
        if !self.uids.is_empty() {
            let u: Vec<String> = self.uids.iter().map(u32::to_string).collect();
            write!(f, ",uids={}", u.join(":"))?;
        }
        if let Some(m) = self.max_mem {
            write!(f, ",max-mem={m}")?;
        }
        Ok(())
    }
}

/// `max_mem` in TOML: bytes or a size with a suffix.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    /// A number of bytes.
    Bytes(u64),
    /// `"64G"`.
    Text(String),
}

/// The access keys of a `[[vhost_user]]` table.
#[derive(Debug, Default)]
pub(super) struct RawAccess {
    pub mode: Option<String>,
    pub group: Option<String>,
    pub uids: Vec<u32>,
    pub max_mem: Option<RawSize>,
}
