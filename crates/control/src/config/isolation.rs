//! A port's tenant-isolation settings: port security, learning limit, VLAN, rate limits.
//! The same keys on the command line (`spoofchk=off`, `ips=..`, `max-macs=..`, `vlan=..`,
//! `trunk=..`, `ingress-mbit=..` ...) and in TOML (`spoofchk = false`, `allowed_macs`,
//! `ips`, `max_macs`, `vlan`, `trunk`, `ingress_mbit` ...).

use std::fmt;
use std::net::IpAddr;

use wire::MacAddr;

use super::validate::mac_for_port;
use super::ConfigError;

/// Highest VLAN ID (4095 is reserved, 0 means untagged).
pub const MAX_VLAN: u16 = 4094;
/// Learned addresses a vhost-user port may have when `max-macs` is not given.
pub const DEFAULT_MAX_MACS_VHOST: u32 = 64;
/// Learned addresses a TAP port (the host, and whatever is bridged behind it) may have.
pub const DEFAULT_MAX_MACS_TAP: u32 = 1024;

/// A port's isolation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// With a configured MAC, frames from other source MACs are dropped (`spoofchk=off`
    /// turns it off, as for an SR-IOV VF).
    pub spoofchk: bool,
    /// More MACs the port may send from (TOML `allowed_macs`).
    pub allowed_macs: Vec<MacAddr>,
    /// IP addresses the port may claim in ARP and neighbour advertisements (empty: not
    /// checked).
    pub ips: Vec<IpAddr>,
    /// Most learned addresses (None: the default for the port kind).
    pub max_macs: Option<u32>,
    /// Access port of this VLAN.
    pub vlan: Option<u16>,
    /// Trunk port of these VLANs.
    pub trunk: Vec<u16>,
    /// Rate limits, in Mbit/s and thousands of frames per second.
    pub ingress_mbit: Option<u64>,
    /// See `ingress_mbit`.
    pub ingress_kpps: Option<u64>,
    /// See `ingress_mbit`.
    pub egress_mbit: Option<u64>,
    /// See `ingress_mbit`.
    pub egress_kpps: Option<u64>,
    /// Broadcast, multicast and unknown-unicast frames the port may send, thousands/s.
    pub flood_kpps: Option<u64>,
}

impl Default for Isolation {
    fn default() -> Self {
        Isolation {
            spoofchk: true,
            allowed_macs: Vec::new(),
            ips: Vec::new(),
            max_macs: None,
            vlan: None,
            trunk: Vec::new(),
            ingress_mbit: None,
            ingress_kpps: None,
            egress_mbit: None,
            egress_kpps: None,
            flood_kpps: None,
        }
    }
}

/// A port setting's value is wrong: names the port, the key, the value and what was
/// expected.
pub(super) fn bad(
    port: &str,
    key: &'static str,
    value: impl fmt::Display,
    expected: &'static str,
) -> ConfigError {
    ConfigError::Isolation {
        port: port.to_string(),
        key,
        value: value.to_string(),
        expected,
    }
}

fn vlan_id(port: &str, key: &'static str, v: u64) -> Result<u16, ConfigError> {
    u16::try_from(v)
        .ok()
        .filter(|v| (1..=MAX_VLAN).contains(v))
        .ok_or_else(|| bad(port, key, v, "a VLAN ID in 1..=4094"))
}

fn rate(port: &str, key: &'static str, v: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(0) => Err(bad(port, key, 0, "a positive number")),
        v => Ok(v),
    }
}

/// Splits `a:b:[v6]:c` on the colons outside brackets.
fn colon_list(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0u32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl Isolation {
    /// Parses the command-line values (`get(key)` gives a key's value, if given).
    pub(super) fn from_spec<'a>(
        port: &str,
        get: impl Fn(&'static str) -> Result<Option<&'a str>, ConfigError>,
    ) -> Result<Isolation, ConfigError> {
        let num = |key: &'static str| -> Result<Option<u64>, ConfigError> {
            get(key)?
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| bad(port, key, v, "a decimal number"))
                })
                .transpose()
        };
        let spoofchk = match get("spoofchk")? {
            None | Some("on" | "true" | "yes" | "1") => true,
            Some("off" | "false" | "no" | "0") => false,
            Some(v) => return Err(bad(port, "spoofchk", v, "on or off")),
        };
        let ips = match get("ips")? {
            None => Vec::new(),
            Some(v) => colon_list(v)
                .into_iter()
                .map(|a| {
                    a.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .map_err(|_| {
                            bad(
                                port,
                                "ips",
                                a,
                                "IP addresses, `:`-separated, IPv6 in [brackets]",
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let trunk = match get("trunk")? {
            None => Vec::new(),
            Some(v) => v
                .split(':')
                .map(|t| {
                    t.parse::<u64>()
                        .map_err(|_| bad(port, "trunk", t, "VLAN IDs, `:`-separated"))
                        .and_then(|n| vlan_id(port, "trunk", n))
                })
                .collect::<Result<_, _>>()?,
        };
        let max_macs = num("max-macs")?
            .map(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad(port, "max-macs", n, "a number in 1..=4294967295"))
            })
            .transpose()?;
        let iso = Isolation {
            spoofchk,
            allowed_macs: Vec::new(),
            ips,
            max_macs,
            vlan: num("vlan")?.map(|v| vlan_id(port, "vlan", v)).transpose()?,
            trunk,
            ingress_mbit: num("ingress-mbit")?,
            ingress_kpps: num("ingress-kpps")?,
            egress_mbit: num("egress-mbit")?,
            egress_kpps: num("egress-kpps")?,
            flood_kpps: num("flood-kpps")?,
        };
        iso.validate(port)?;
        Ok(iso)
    }

    /// VLAN membership for `vnetctl ports`: `10` (access), `trunk:10,20`, or none.
    pub fn vlan_text(&self) -> Option<String> {
        match (self.vlan, self.trunk.is_empty()) {
            (Some(v), _) => Some(v.to_string()),
            (None, false) => {
                let t: Vec<String> = self.trunk.iter().map(u16::to_string).collect();
                Some(format!("trunk:{}", t.join(",")))
            }
            (None, true) => None,
        }
    }

    /// The limits in effect for `vnetctl ports`: `spoofchk` when sources are checked
    /// (`has_mac`: the port has a configured MAC), the learning limit, the rates.
    pub fn limits_text(&self, has_mac: bool, default_max_macs: u32) -> String {
        let mut out = Vec::new();
        if self.spoofchk && (has_mac || !self.allowed_macs.is_empty() || !self.ips.is_empty()) {
            out.push("spoofchk".to_string());
        }
        out.push(format!(
            "max-macs={}",
            self.max_macs.unwrap_or(default_max_macs)
        ));
        for (key, v) in self.rates() {
            if let Some(v) = v {
                out.push(format!("{key}={v}"));
            }
        }
        out.join(" ")
    }

    /// The rate limits with their command-line keys.
    fn rates(&self) -> [(&'static str, Option<u64>); 5] {
        [
            ("ingress-mbit", self.ingress_mbit),
            ("ingress-kpps", self.ingress_kpps),
            ("egress-mbit", self.egress_mbit),
            ("egress-kpps", self.egress_kpps),
            ("flood-kpps", self.flood_kpps),
        ]
    }

    /// Checks the settings together.
    pub fn validate(&self, port: &str) -> Result<(), ConfigError> {
        if self.vlan.is_some() && !self.trunk.is_empty() {
            return Err(bad(
                port,
                "trunk",
                "",
                "either `vlan` (access) or `trunk`, not both",
            ));
        }
        if let Some(v) = self.vlan {
            vlan_id(port, "vlan", u64::from(v))?;
        }
        for t in &self.trunk {
            vlan_id(port, "trunk", u64::from(*t))?;
        }
        if self.max_macs == Some(0) {
            return Err(bad(port, "max-macs", 0, "a number in 1..=4294967295"));
        }
        for (key, v) in self.rates() {
            rate(port, key, v)?;
        }
        for m in &self.allowed_macs {
            super::validate::check_station_mac(port, m)?;
        }
        Ok(())
    }

    /// The command-line form of what differs from the defaults, each item led by a comma.
    pub(super) fn fmt_spec(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.spoofchk {
            f.write_str(",spoofchk=off")?;
        }
        if !self.ips.is_empty() {
            let ips: Vec<String> = self
                .ips
                .iter()
                .map(|ip| match ip {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                })
                .collect();
            write!(f, ",ips={}", ips.join(":"))?;
        }
        if let Some(n) = self.max_macs {
            write!(f, ",max-macs={n}")?;
        }
        if let Some(v) = self.vlan {
            write!(f, ",vlan={v}")?;
        }
        if !self.trunk.is_empty() {
            let t: Vec<String> = self.trunk.iter().map(u16::to_string).collect();
            write!(f, ",trunk={}", t.join(":"))?;
        }
        for (key, v) in self.rates() {
            if let Some(v) = v {
                write!(f, ",{key}={v}")?;
            }
        }
        Ok(())
    }
}

/// Declares the TOML table of a port kind: its own fields, then the isolation keys, with
/// unknown keys refused (serde's `flatten` cannot refuse them) and
/// `isolation()` taking the isolation keys out.
macro_rules! port_table {
    ($(#[$m:meta])* struct $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$m])*
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[$fm])* $field: $ty,)*
            spoofchk: Option<bool>,
            #[serde(default)]
            allowed_macs: Vec<String>,
            #[serde(default)]
            ips: Vec<String>,
            max_macs: Option<u64>,
            vlan: Option<u64>,
            #[serde(default)]
            trunk: Vec<u64>,
            ingress_mbit: Option<u64>,
            ingress_kpps: Option<u64>,
            egress_mbit: Option<u64>,
            egress_kpps: Option<u64>,
            flood_kpps: Option<u64>,
        }

        impl $name {
            fn isolation(&mut self) -> $crate::config::isolation::RawIsolation {
                $crate::config::isolation::RawIsolation {
                    spoofchk: self.spoofchk,
                    allowed_macs: std::mem::take(&mut self.allowed_macs),
                    ips: std::mem::take(&mut self.ips),
                    max_macs: self.max_macs,
                    vlan: self.vlan,
                    trunk: std::mem::take(&mut self.trunk),
                    ingress_mbit: self.ingress_mbit,
                    ingress_kpps: self.ingress_kpps,
                    egress_mbit: self.egress_mbit,
                    egress_kpps: self.egress_kpps,
                    flood_kpps: self.flood_kpps,
                }
            }
        }
    };
}
pub(super) use port_table;

/// The isolation keys of a port's TOML table.
pub(super) struct RawIsolation {
    pub spoofchk: Option<bool>,
    pub allowed_macs: Vec<String>,
    pub ips: Vec<String>,
    pub max_macs: Option<u64>,
    pub vlan: Option<u64>,
    pub trunk: Vec<u64>,
    pub ingress_mbit: Option<u64>,
    pub ingress_kpps: Option<u64>,
    pub egress_mbit: Option<u64>,
    pub egress_kpps: Option<u64>,
    pub flood_kpps: Option<u64>,
}

impl RawIsolation {
    pub(super) fn into_isolation(self, port: &str) -> Result<Isolation, ConfigError> {
        let iso = Isolation {
            spoofchk: self.spoofchk.unwrap_or(true),
            allowed_macs: self
                .allowed_macs
                .iter()
                .map(|m| mac_for_port(port, m))
                .collect::<Result<_, _>>()?,
            ips: self
                .ips
                .iter()
                .map(|a| {
                    a.parse::<IpAddr>()
                        .map_err(|_| bad(port, "ips", a, "IP addresses"))
                })
                .collect::<Result<_, _>>()?,
            max_macs: self
                .max_macs
                .map(|n| {
                    u32::try_from(n)
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(port, "max_macs", n, "a number in 1..=4294967295"))
                })
                .transpose()?,
            vlan: self.vlan.map(|v| vlan_id(port, "vlan", v)).transpose()?,
            trunk: self
                .trunk
                .into_iter()
                .map(|v| vlan_id(port, "trunk", v))
                .collect::<Result<_, _>>()?,
            ingress_mbit: self.ingress_mbit,
            ingress_kpps: self.ingress_kpps,
            egress_mbit: self.egress_mbit,
            egress_kpps: self.egress_kpps,
            flood_kpps: self.flood_kpps,
        };
        iso.validate(port)?;
        Ok(iso)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_lists_keep_bracketed_v6() {
        assert_eq!(
            colon_list("198.18.0.1:[2001:db8::1]:198.18.0.2"),
            vec!["198.18.0.1", "[2001:db8::1]", "198.18.0.2"]
        );
        assert_eq!(colon_list("10"), vec!["10"]);
    }
}

#[cfg(test)]
mod spec_tests {
    use crate::config::{Config, VhostUserPort};

    #[test]
    fn command_line_round_trip() {
        let spec = "name=vm1,socket=/s,mac=52:54:00:00:00:01,spoofchk=off,\
                    ips=198.18.0.1:[2001:db8::1],max-macs=4,vlan=10,ingress-mbit=100,\
                    egress-kpps=50,flood-kpps=5";
        let p: VhostUserPort = spec.parse().unwrap();
        let iso = &p.isolation;
        assert!(!iso.spoofchk);
        assert_eq!(iso.ips.len(), 2);
        assert_eq!(
            (
                iso.max_macs,
                iso.vlan,
                iso.ingress_mbit,
                iso.egress_kpps,
                iso.flood_kpps
            ),
            (Some(4), Some(10), Some(100), Some(50), Some(5))
        );
        let again: VhostUserPort = p.to_string().parse().unwrap();
        assert_eq!(again, p);
        let trunk: VhostUserPort = "name=t,socket=/t,trunk=10:20:4094".parse().unwrap();
        assert_eq!(trunk.isolation.trunk, vec![10, 20, 4094]);
    }

    #[test]
    fn bad_values_name_port_and_key() {
        for (spec, want) in [
            (
                "vlan=0",
                "port vm1: bad `vlan` value `0`: expected a VLAN ID in 1..=4094",
            ),
            ("vlan=4095", "bad `vlan` value `4095`"),
            (
                "vlan=10,trunk=20",
                "either `vlan` (access) or `trunk`, not both",
            ),
            ("trunk=10:x", "bad `trunk` value `x`"),
            (
                "ingress-kpps=0",
                "bad `ingress-kpps` value `0`: expected a positive number",
            ),
            (
                "spoofchk=maybe",
                "bad `spoofchk` value `maybe`: expected on or off",
            ),
            ("ips=198.18.0", "bad `ips` value `198.18.0`"),
            ("max-macs=0", "bad `max-macs` value `0`"),
        ] {
            let e = format!("name=vm1,socket=/s,{spec}")
                .parse::<VhostUserPort>()
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    /// The README's two-tenant example parses, both forms.
    #[test]
    fn readme_example() {
        let readme = include_str!("../../../../README.md");
        let sec = &readme[readme.find("## Multi-tenant").unwrap()..];
        let block = |from: &str| {
            let start = sec.find(from).unwrap() + from.len();
            let end = start + sec[start..].find("```\n").unwrap();
            sec[start..end].to_string()
        };
        let cli = block("```sh\n");
        let mut ports = 0;
        for line in cli.lines() {
            let line = line.trim().trim_end_matches('\\').trim();
            if let Some(spec) = line.strip_prefix("--vhost-user ") {
                spec.parse::<VhostUserPort>().unwrap();
                ports += 1;
            } else if let Some(spec) = line.strip_prefix("--tap ") {
                spec.parse::<crate::config::TapPort>().unwrap();
                ports += 1;
            }
        }
        assert_eq!(ports, 4);
        let c = Config::from_toml_str(&block("```toml\n"), "README").unwrap();
        assert_eq!(c.ports.len(), 3);
    }

    #[test]
    fn toml_lists() {
        let c = Config::from_toml_str(
            "[[vhost_user]]\nname = \"vm1\"\nsocket = \"/s\"\nmac = \"52:54:00:00:00:01\"\n\
             allowed_macs = [\"52:54:00:00:00:02\"]\nips = [\"198.18.0.1\"]\ntrunk = [10, 20]\n\
             [[tap]]\nname = \"h\"\nmtu = 9000\nvlan = 10\nspoofchk = false\n",
            "t.toml",
        )
        .unwrap();
        let macs: Vec<String> = c.ports[0].macs().map(|m| m.to_string()).collect();
        assert_eq!(macs, ["52:54:00:00:00:01", "52:54:00:00:00:02"]);
        assert_eq!(c.ports[0].isolation().trunk, vec![10, 20]);
        assert_eq!(c.ports[1].isolation().vlan, Some(10));
        assert!(!c.ports[1].isolation().spoofchk);
        let e = Config::from_toml_str("[[tap]]\nname = \"h\"\nvlan = 5000\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port h: bad `vlan` value `5000`"), "{e}");
        // An allowed MAC of one port cannot be another port's.
        let e = Config::from_toml_str(
            "[[vhost_user]]\nname = \"a\"\nsocket = \"/a\"\nmac = \"52:54:00:00:00:01\"\n\
             [[vhost_user]]\nname = \"b\"\nsocket = \"/b\"\nallowed_macs = [\"52:54:00:00:00:01\"]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("52:54:00:00:00:01"), "{e}");
    }
}
