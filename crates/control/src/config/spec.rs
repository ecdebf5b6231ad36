//! The command-line form of a port: `--vhost-user name=..,socket=..` and `--tap name=..`,
//! comma-separated `key[=value]` items, parsed by `FromStr` and printed back by `Display`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use wire::MacAddr;

use super::access::Access;
use super::isolation::Isolation;
use super::validate::{check_mtu, check_queues, mac_for_port, port_datapath};
use super::{ConfigError, TapPort, VhostUserPort};

/// The command-line flag of a vhost-user port, as named in error messages.
pub const VHOST_USER_FLAG: &str = "--vhost-user";
/// The command-line flag of a tap port, as named in error messages.
pub const TAP_FLAG: &str = "--tap";

/// A port kind's own keys, then the isolation keys every port has.
macro_rules! keys {
    ($($k:literal),*) => {
        &[
            $($k,)* "spoofchk", "ips", "max-macs", "vlan", "trunk", "ingress-mbit",
            "ingress-kpps", "egress-mbit", "egress-kpps", "flood-kpps",
        ]
    };
}
const VHOST_USER_KEYS: &[&str] = keys!(
    "name", "socket", "client", "mac", "queues", "mtu", "datapath", "mode", "group", "uids",
    "max-mem"
);
const TAP_KEYS: &[&str] = keys!("name", "ifname", "netns", "queues", "mac", "mtu");

impl FromStr for VhostUserPort {
    type Err = ConfigError;

    /// Parses and validates the command-line form.
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let items = Items::parse(VHOST_USER_FLAG, spec, VHOST_USER_KEYS)?;
        let name = items.required_value("name")?.to_string();
        let socket = PathBuf::from(items.required_value("socket")?);
        let client = items.flag("client")?;
        let mac = items.mac("mac", &name)?;
        let queue_pairs = match items.number("queues")? {
            Some(n) => check_queues(&name, n)?,
            None => 1,
        };
        let mtu = items
            .number("mtu")?
            .map(|n| check_mtu(&name, n))
            .transpose()?;
        let datapath = items
            .value("datapath")?
            .map(|m| port_datapath(&name, m))
            .transpose()?;
        let isolation = Isolation::from_spec(&name, |k| items.value(k))?;
        let access = Access::from_spec(&name, |k| items.value(k))?;
        let port = VhostUserPort {
            name,
            socket,
            client,
            mac,
            queue_pairs,
            mtu,
            datapath,
            isolation,
            access,
        };
        port.validate()?;
        Ok(port)
    }
}

impl fmt::Display for VhostUserPort {
    /// The command-line form (parses back to the same port for UTF-8 paths).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name={},socket={}", self.name, self.socket.display())?;
        if self.client {
            f.write_str(",client")?;
        }
        if let Some(mac) = &self.mac {
            write!(f, ",mac={mac}")?;
        }
        write!(f, ",queues={}", self.queue_pairs)?;
        if let Some(mtu) = self.mtu {
            write!(f, ",mtu={mtu}")?;
        }
        if let Some(m) = self.datapath {
            write!(f, ",datapath={m}")?;
        }
        self.access.fmt_spec(f)?;
        self.isolation.fmt_spec(f)
    }
}

impl FromStr for TapPort {
    type Err = ConfigError;

    /// Parses and validates the command-line form.
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let items = Items::parse(TAP_FLAG, spec, TAP_KEYS)?;
        let name = items.required_value("name")?.to_string();
        let ifname = items.value("ifname")?.unwrap_or(&name).to_string();
        let netns = items.value("netns")?.map(str::to_string);
        let queues = match items.number("queues")? {
            Some(n) => check_queues(&name, n)?,
            None => 1,
        };
        let mac = items.mac("mac", &name)?;
        let mtu = items
            .number("mtu")?
            .map(|n| check_mtu(&name, n))
            .transpose()?;
        let isolation = Isolation::from_spec(&name, |k| items.value(k))?;
        let port = TapPort {
            name,
            ifname,
            netns,
            queues,
            mac,
            mtu,
            isolation,
        };
        port.validate()?;
        Ok(port)
    }
}

impl fmt::Display for TapPort {
    /// The command-line form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name={},ifname={}", self.name, self.ifname)?;
        if let Some(ns) = &self.netns {
            write!(f, ",netns={ns}")?;
        }
        write!(f, ",queues={}", self.queues)?;
        if let Some(mac) = &self.mac {
            write!(f, ",mac={mac}")?;
        }
        if let Some(mtu) = self.mtu {
            write!(f, ",mtu={mtu}")?;
        }
        self.isolation.fmt_spec(f)
    }
}

/// The `key[=value]` items of one command-line port argument.
struct Items<'a> {
    flag: &'static str,
    spec: &'a str,
    items: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Items<'a> {
    /// Splits on `,` (empty items are skipped) and refuses unknown or repeated keys.
    fn parse(
        flag: &'static str,
        spec: &'a str,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        let mut items: Vec<(&str, Option<&str>)> = Vec::new();
        for item in spec.split(',').filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            if !known.contains(&key) {
                return Err(ConfigError::UnknownKey {
                    flag,
                    spec: spec.to_string(),
                    key: key.to_string(),
                    known,
                });
            }
            if items.iter().any(|(k, _)| *k == key) {
                return Err(ConfigError::DuplicateKey {
                    flag,
                    spec: spec.to_string(),
                    key: key.to_string(),
                });
            }
            items.push((key, value));
        }
        Ok(Items { flag, spec, items })
    }

    fn get(&self, key: &str) -> Option<Option<&'a str>> {
        self.items.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn bad_value(&self, key: &'static str, value: &str, expected: &'static str) -> ConfigError {
        ConfigError::BadValue {
            flag: self.flag,
            spec: self.spec.to_string(),
            key,
            value: value.to_string(),
            expected,
        }
    }

    /// A `key=value` item's value; a bare `key` is an error.
    fn value(&self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Some(v)) => Ok(Some(v)),
            Some(None) => Err(self.bad_value(key, "", "`key=value`")),
        }
    }

    fn required_value(&self, key: &'static str) -> Result<&'a str, ConfigError> {
        self.value(key)?.ok_or_else(|| ConfigError::MissingKey {
            flag: self.flag,
            spec: self.spec.to_string(),
            key,
        })
    }

    /// A boolean: bare `key`, or `key=true|false|yes|no|on|off|1|0`; false when absent.
    fn flag(&self, key: &'static str) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(v)) => match v {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(self.bad_value(key, v, "true or false")),
            },
        }
    }

    fn number(&self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        self.value(key)?
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| self.bad_value(key, v, "a decimal number"))
            })
            .transpose()
    }

    fn mac(&self, key: &'static str, port: &str) -> Result<Option<MacAddr>, ConfigError> {
        self.value(key)?.map(|v| mac_for_port(port, v)).transpose()
    }
}
