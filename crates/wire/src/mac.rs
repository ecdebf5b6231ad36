//! The 48-bit IEEE 802 MAC address.

use core::fmt;
use core::str::FromStr;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address in `b`, which must be exactly 6 bytes long.
    pub fn from_bytes(b: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The octets as a slice.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The 48 bits in the low bits of a u64 (first octet lowest): one number to compare,
    /// hash or pack beside other fields.
    #[inline]
    pub fn to_u64(&self) -> u64 {
        let [a, b, c, d, e, f] = self.0;
        u64::from_le_bytes([a, b, c, d, e, f, 0, 0])
    }

    /// All ones.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// The group (I/G) bit is set; true for broadcast too.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// An individual address (group bit clear). The zero address counts as unicast.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The locally administered (U/L) bit is set.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// All zeros.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> Self {
        m.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// A string that is not a MAC address; carries the offending input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMacError {
    /// The input that failed to parse.
    pub input: String,
}

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid MAC address {:?} (expected six hex octets like 52:54:00:12:34:56)",
            self.input
        )
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Parses six `:`- or `-`-separated octets of one or two hex digits each.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError {
            input: s.to_owned(),
        };
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            let hex = !p.is_empty() && p.len() <= 2 && p.bytes().all(|c| c.is_ascii_hexdigit());
            if !hex {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// With the `serde` feature, a [`MacAddr`] is its text form: serialized with `Display`
/// (`"52:54:00:12:34:56"`), deserialized with `FromStr` (the error names the input).
#[cfg(feature = "serde")]
mod serde_impl {
    use super::MacAddr;
    use core::fmt;
    use serde::de::{self, Deserializer, Visitor};
    use serde::{Deserialize, Serialize, Serializer};

    impl Serialize for MacAddr {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    struct MacVisitor;

    impl Visitor<'_> for MacVisitor {
        type Value = MacAddr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a MAC address string like \"52:54:00:12:34:56\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<MacAddr, E> {
            v.parse().map_err(E::custom)
        }
    }

    impl<'de> Deserialize<'de> for MacAddr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
            d.deserialize_str(MacVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_roundtrip() {
        let m = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(m.to_string(), "52:54:00:12:34:56");
        assert_eq!(format!("{m:?}"), "MacAddr(52:54:00:12:34:56)");
        assert_eq!("52:54:00:12:34:56".parse::<MacAddr>(), Ok(m));
        assert_eq!("52-54-00-12-34-56".parse::<MacAddr>(), Ok(m));
        assert_eq!("52:54:0:12:34:56".parse::<MacAddr>().map(|x| x.0[2]), Ok(0));
        assert_eq!(
            "FF:ff:FF:ff:FF:ff".parse::<MacAddr>(),
            Ok(MacAddr::BROADCAST)
        );
    }

    #[test]
    fn parse_errors_name_the_input() {
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5g",
            "52:54:00:12:34:",
            "052:54:00:12:34:56",
            "52:54-00:12:34:56",
            "+1:54:00:12:34:56",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")));
        }
    }

    #[test]
    fn classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let mc = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(mc.is_multicast() && !mc.is_broadcast());
        let uc = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        assert!(uc.is_unicast() && uc.is_local() && !uc.is_zero());
        assert!(MacAddr::ZERO.is_zero());
        assert_eq!(
            MacAddr::from_bytes(&[1, 2, 3, 4, 5, 6]),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(MacAddr::from_bytes(&[1, 2, 3, 4, 5]), None);
        assert_eq!(MacAddr::from_bytes(&[0; 7]), None);
        assert!(MacAddr([0, 0, 0, 0, 0, 1]) < MacAddr([0, 0, 0, 0, 1, 0]));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_is_the_text_form() {
        let m = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0xab]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"52:54:00:12:34:ab\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), m);
        // Through a reader the string is not borrowed: same result.
        let owned: MacAddr = serde_json::from_reader(json.as_bytes()).unwrap();
        assert_eq!(owned, m);
        let e = serde_json::from_str::<MacAddr>("\"52:54:zz\"").unwrap_err();
        assert!(e.to_string().contains("\"52:54:zz\""), "{e}");
        assert!(serde_json::from_str::<MacAddr>("5").is_err());
    }
}
