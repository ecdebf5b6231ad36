//! The TOML form of the configuration: [`Config::from_toml_str`] and [`Config::load`], with
//! errors located by file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::access::{Access, RawAccess, RawSize, Security};
use super::isolation::port_table;
use super::validate::{check_mtu, check_queues, mac_for_port, port_datapath};
use super::{
    Config, ConfigError, PortConfig, TapPort, VhostUserPort, AGING_SECS_RANGE, MAX_FDB_CAPACITY,
    MAX_WORKERS, TAP_HOLD_MS_RANGE,
};

impl Config {
    /// Parses and validates a TOML configuration. `origin` names the text in error messages
    /// (usually the file path). Ports added later (from the command line) need another
    /// [`Config::validate`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            origin: origin.to_string(),
            location: e.span().map(|s| Location::of(text, s.start)),
            message: e.message().trim().lines().collect::<Vec<_>>().join("; "),
        })?;
        let at = |span: std::ops::Range<usize>, error: ConfigError| ConfigError::At {
            origin: origin.to_string(),
            location: Location::of(text, span.start),
            error: Box::new(error),
        };

        let mut config = Config {
            control: raw.control,
            ..Config::default()
        };
        if let Some(d) = raw.datapath {
            let (span, value) = (d.span(), d.into_inner());
            config.datapath = value
                .parse()
                .map_err(|message| at(span, ConfigError::Datapath { message }))?;
        }
        if let Some(w) = raw.workers {
            let (span, value) = (w.span(), w.into_inner());
            config.workers = usize::try_from(value)
                .ok()
                .filter(|w| (1..=MAX_WORKERS).contains(w))
                .ok_or_else(|| at(span, ConfigError::Workers { value }))?;
        }
        if let Some(h) = raw.tap_hold_ms {
            let (span, value) = (h.span(), h.into_inner());
            if !TAP_HOLD_MS_RANGE.contains(&value) {
                return Err(at(span, ConfigError::TapHold { value }));
            }
            config.tap_hold_ms = value;
        }
        if let Some(b) = raw.tap_batch {
            config.tap_batch = b;
        }
        let sec = &mut config.security;
        for (field, key, value) in [
            (&mut sec.user, "user", raw.user),
            (&mut sec.socket_group, "socket_group", raw.socket_group),
            (&mut sec.control_group, "control_group", raw.control_group),
        ] {
            if let Some(v) = value {
                let (span, v) = (v.span(), v.into_inner());
                *field = Some(
                    Security::check_name(key, &v)
                        .map(|()| v)
                        .map_err(|e| at(span, e))?,
                );
            }
        }
        if let Some(m) = raw.socket_mode {
            let (span, v) = (m.span(), m.into_inner());
            sec.socket_mode = Some(Security::mode("socket_mode", &v).map_err(|e| at(span, e))?);
        }
        if let Some(m) = raw.seccomp {
            let (span, v) = (m.span(), m.into_inner());
            sec.seccomp = v.parse().map_err(|_| {
                at(
                    span,
                    ConfigError::Security {
                        key: "seccomp",
                        value: v.clone(),
                        expected: "enforce, log or off",
                    },
                )
            })?;
        }
        sec.allow_shared_socket_dir = raw.allow_shared_socket_dir.unwrap_or(false);
        config.log_level = raw.log_level;
        if let Some(f) = raw.log_format {
            let (span, v) = (f.span(), f.into_inner());
            config.log_format = v.parse().map_err(|_| {
                at(
                    span,
                    ConfigError::Security {
                        key: "log_format",
                        value: v.clone(),
                        expected: "text or json",
                    },
                )
            })?;
        }
        if let Some(m) = raw.metrics {
            let (span, v) = (m.span(), m.into_inner());
            config.metrics = Some(Config::metrics_addr(&v).map_err(|e| at(span, e))?);
        }
        if let Some(fdb) = raw.fdb {
            if let Some(c) = fdb.capacity {
                let (span, value) = (c.span(), c.into_inner());
                config.fdb.capacity = usize::try_from(value)
                    .ok()
                    .filter(|c| (1..=MAX_FDB_CAPACITY).contains(c))
                    .ok_or_else(|| at(span, ConfigError::FdbCapacity { value }))?;
            }
            if let Some(a) = fdb.aging_secs {
                let (span, value) = (a.span(), a.into_inner());
                if !AGING_SECS_RANGE.contains(&value) {
                    return Err(at(span, ConfigError::FdbAging { value }));
                }
                config.fdb.aging_secs = value;
            }
        }

        // Ports in file order of kind: vhost-user ports, then tap ports.
        let ports = (raw.vhost_user.into_iter())
            .map(|p| {
                (
                    p.span(),
                    p.into_inner().into_port().map(PortConfig::VhostUser),
                )
            })
            .chain(
                (raw.tap.into_iter())
                    .map(|p| (p.span(), p.into_inner().into_port().map(PortConfig::Tap))),
            );
        let mut spans = Vec::new();
        for (span, port) in ports {
            config.ports.push(port.map_err(|e| at(span.clone(), e))?);
            spans.push(span);
        }

        config
            .check()
            .map_err(|(index, error)| match index.and_then(|i| spans.get(i)) {
                Some(span) => at(span.clone(), error),
                None => error,
            })?;
        Ok(config)
    }

    /// Parses a `--metrics` / `metrics =` address (`ADDR:PORT`).
    pub fn metrics_addr(text: &str) -> Result<std::net::SocketAddr, ConfigError> {
        text.parse().map_err(|_| ConfigError::Security {
            key: "metrics",
            value: text.to_string(),
            expected: "ADDR:PORT, such as 127.0.0.1:9100",
        })
    }

    /// Reads, parses and validates a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }
}

/// A line and column, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number.
    pub line: usize,
    /// Column number.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text).
    pub fn of(text: &str, offset: usize) -> Location {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

// The TOML schema. Integers are read as u64 and range-checked afterwards, so an
// out-of-range value gets the same message as on the command line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    control: Option<PathBuf>,
    workers: Option<Spanned<u64>>,
    datapath: Option<Spanned<String>>,
    tap_hold_ms: Option<Spanned<u64>>,
    tap_batch: Option<bool>,
    user: Option<Spanned<String>>,
    seccomp: Option<Spanned<String>>,
    socket_mode: Option<Spanned<String>>,
    socket_group: Option<Spanned<String>>,
    control_group: Option<Spanned<String>>,
    allow_shared_socket_dir: Option<bool>,
    metrics: Option<Spanned<String>>,
    log_level: Option<String>,
    log_format: Option<Spanned<String>>,
    fdb: Option<RawFdb>,
    #[serde(default)]
    vhost_user: Vec<Spanned<RawVhostUser>>,
    #[serde(default)]
    tap: Vec<Spanned<RawTap>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFdb {
    capacity: Option<Spanned<u64>>,
    aging_secs: Option<Spanned<u64>>,
}

port_table! {
    struct RawVhostUser {
        name: Option<String>,
        socket: Option<PathBuf>,
        client: Option<bool>,
        mac: Option<String>,
        #[serde(alias = "queue_pairs")]
        queues: Option<u64>,
        mtu: Option<u64>,
        datapath: Option<String>,
        mode: Option<String>,
        group: Option<String>,
        #[serde(default)]
        uids: Vec<u32>,
        max_mem: Option<RawSize>,
    }
}

impl RawVhostUser {
    fn into_port(mut self) -> Result<VhostUserPort, ConfigError> {
        let iso = self.isolation();
        let table = "vhost_user";
        let name = self.name.ok_or(ConfigError::MissingTableKey {
            table,
            key: "name",
            port: None,
        })?;
        let socket = self.socket.ok_or_else(|| ConfigError::MissingTableKey {
            table,
            key: "socket",
            port: Some(name.clone()),
        })?;
        let mac = self.mac.map(|m| mac_for_port(&name, &m)).transpose()?;
        let queue_pairs = self.queues.map_or(Ok(1), |q| check_queues(&name, q))?;
        let mtu = self.mtu.map(|m| check_mtu(&name, m)).transpose()?;
        let datapath = self
            .datapath
            .as_deref()
            .map(|m| port_datapath(&name, m))
            .transpose()?;
        let isolation = iso.into_isolation(&name)?;
        let access = Access::from_raw(
            &name,
            RawAccess {
                mode: self.mode,
                group: self.group,
                uids: self.uids,
                max_mem: self.max_mem,
            },
        )?;
        Ok(VhostUserPort {
            access,
            name,
            socket,
            client: self.client.unwrap_or(false),
            mac,
            queue_pairs,
            mtu,
            datapath,
            isolation,
        })
    }
}

port_table! {
    struct RawTap {
        name: Option<String>,
        ifname: Option<String>,
        netns: Option<String>,
        queues: Option<u64>,
        mac: Option<String>,
        mtu: Option<u64>,
    }
}

impl RawTap {
    fn into_port(mut self) -> Result<TapPort, ConfigError> {
        let iso = self.isolation();
        let name = self.name.ok_or(ConfigError::MissingTableKey {
            table: "tap",
            key: "name",
            port: None,
        })?;
        let mac = self.mac.map(|m| mac_for_port(&name, &m)).transpose()?;
        let queues = self.queues.map_or(Ok(1), |q| check_queues(&name, q))?;
        let mtu = self.mtu.map(|m| check_mtu(&name, m)).transpose()?;
        let isolation = iso.into_isolation(&name)?;
        Ok(TapPort {
            ifname: self.ifname.unwrap_or_else(|| name.clone()),
            name,
            netns: self.netns,
            queues,
            mac,
            mtu,
            isolation,
        })
    }
}
