//! The rules single values follow (names, MAC addresses, queue counts, MTU), shared by the
//! command-line and TOML forms.

use wire::MacAddr;

use super::{
    ConfigError, DatapathMode, MacError, NameError, MAX_NAME_LEN, MAX_QUEUE_PAIRS, MIN_MTU,
};

/// Accepts only addresses a station may own: not multicast/broadcast, not all zeros.
pub fn station_mac_class(mac: &MacAddr) -> Result<(), MacError> {
    if mac.is_multicast() {
        Err(MacError::Multicast)
    } else if mac.is_zero() {
        Err(MacError::Zero)
    } else {
        Ok(())
    }
}

/// Checks a port's MAC address class, naming the port in the error.
pub fn check_station_mac(port: &str, mac: &MacAddr) -> Result<(), ConfigError> {
    station_mac_class(mac).map_err(|reason| ConfigError::BadMac {
        port: port.to_string(),
        value: mac.to_string(),
        reason,
    })
}

/// Checks a port or interface name: 1..=15 characters from `[A-Za-z0-9_.-]`, not `.`/`..`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(NameError::BadChar(c));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    Ok(())
}

pub(super) fn validate_port_name(name: &str) -> Result<(), ConfigError> {
    validate_name(name).map_err(|reason| ConfigError::BadName {
        name: name.to_string(),
        reason,
    })
}

pub(super) fn check_queues(port: &str, value: u64) -> Result<u16, ConfigError> {
    u16::try_from(value)
        .ok()
        .filter(|q| (1..=MAX_QUEUE_PAIRS).contains(q))
        .ok_or_else(|| ConfigError::QueuePairs {
            port: port.to_string(),
            value,
        })
}

pub(super) fn check_mtu(port: &str, value: u64) -> Result<u16, ConfigError> {
    u16::try_from(value)
        .ok()
        .filter(|m| *m >= MIN_MTU)
        .ok_or_else(|| ConfigError::Mtu {
            port: port.to_string(),
            value,
        })
}

/// Parses a port's MAC address ([`MacAddr`]'s syntax) and checks its class; the error
/// names the port and the value as given.
pub(super) fn mac_for_port(port: &str, value: &str) -> Result<MacAddr, ConfigError> {
    let bad = |reason| ConfigError::BadMac {
        port: port.to_string(),
        value: value.to_string(),
        reason,
    };
    let mac: MacAddr = value.parse().map_err(|_| bad(MacError::Syntax))?;
    station_mac_class(&mac).map_err(bad)?;
    Ok(mac)
}

/// Parses a port's `datapath` mode, naming the port in the error.
pub(super) fn port_datapath(port: &str, value: &str) -> Result<DatapathMode, ConfigError> {
    value
        .parse()
        .map_err(|message: String| ConfigError::Datapath {
            message: format!("port {port}: {message}"),
        })
}
