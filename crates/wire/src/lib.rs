//! Packet views over byte buffers, in the style of a checked-constructor wire layer.
//!
//! Every view (`EthernetFrame`, `ArpPacket`, `Ipv4Packet`, `Ipv6Packet`, `TcpPacket`,
//! `UdpPacket`, `Icmpv4Packet`) wraps a `T: AsRef<[u8]>` and is built only through a
//! `new_checked` constructor that validates the lengths the accessors rely on. Accessors read
//! named field ranges on demand (no parsing into structs); setters exist when
//! `T: AsMut<[u8]>`. All field access goes through bounds-checked helpers, so no input can
//! make a view panic: a field that does not fit reads as zero and a setter that does not fit
//! is a no-op (which `new_checked` rules out in practice).
//!
//! [`checksum`] has the internet checksum (RFC 1071) with pseudo-header sums for TCP/UDP.
//! [`MacAddr`] is the 48-bit Ethernet address; with the optional `serde` feature it
//! serializes as its text form. The crate has no other dependencies and no unsafe.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bytes;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
mod mac;
pub mod tcp;
pub mod udp;

pub use arp::ArpPacket;
pub use ethernet::{
    EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN,
};
pub use icmpv4::Icmpv4Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use mac::{MacAddr, ParseMacError};
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

pub use core::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol number (IPv4 `protocol`, IPv6 `next_header`) of ICMP.
pub const IP_PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IP_PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IP_PROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const IP_PROTO_ICMPV6: u8 = 58;

/// Why a buffer was refused by a `new_checked` constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field says).
    Truncated,
    /// A field holds an impossible value (bad version, header length below minimum, ...).
    Malformed,
    /// A valid packet of a kind this view does not handle (e.g. ARP for non-Ethernet).
    Unsupported,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
            Error::Unsupported => "unsupported packet",
        })
    }
}

impl std::error::Error for Error {}

/// Result of the `new_checked` constructors.
pub type Result<T> = core::result::Result<T, Error>;
