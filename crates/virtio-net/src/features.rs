//! Feature bits (virtio 1.x §5.1.3, §6) as `u64` masks.
#![allow(missing_docs)]

pub const CSUM: u64 = 1 << 0;
pub const GUEST_CSUM: u64 = 1 << 1;
pub const CTRL_GUEST_OFFLOADS: u64 = 1 << 2;
pub const MTU: u64 = 1 << 3;
pub const MAC: u64 = 1 << 5;
pub const GUEST_TSO4: u64 = 1 << 7;
pub const GUEST_TSO6: u64 = 1 << 8;
pub const GUEST_ECN: u64 = 1 << 9;
pub const GUEST_UFO: u64 = 1 << 10;
pub const HOST_TSO4: u64 = 1 << 11;
pub const HOST_TSO6: u64 = 1 << 12;
pub const HOST_ECN: u64 = 1 << 13;
pub const HOST_UFO: u64 = 1 << 14;
pub const MRG_RXBUF: u64 = 1 << 15;
pub const STATUS: u64 = 1 << 16;
pub const CTRL_VQ: u64 = 1 << 17;
pub const CTRL_RX: u64 = 1 << 18;
pub const CTRL_VLAN: u64 = 1 << 19;
pub const GUEST_ANNOUNCE: u64 = 1 << 21;
pub const MQ: u64 = 1 << 22;
pub const CTRL_MAC_ADDR: u64 = 1 << 23;
/// The driver can receive USO (`GSO_UDP_L4`) over IPv4.
pub const GUEST_USO4: u64 = 1 << 54;
/// The driver can receive USO over IPv6.
pub const GUEST_USO6: u64 = 1 << 55;
/// The device can receive USO (`GSO_UDP_L4`) from the driver.
pub const HOST_USO: u64 = 1 << 56;

/// Transport bits (§6).
pub const RING_INDIRECT_DESC: u64 = 1 << 28;
pub const RING_EVENT_IDX: u64 = 1 << 29;
/// vhost-user: the frontend may send `GET_PROTOCOL_FEATURES`.
pub const VHOST_USER_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const VERSION_1: u64 = 1 << 32;
pub const ACCESS_PLATFORM: u64 = 1 << 33;
pub const RING_PACKED: u64 = 1 << 34;
pub const IN_ORDER: u64 = 1 << 35;

/// `virtio_net_config.status` bit: link is up.
pub const STATUS_LINK_UP: u16 = 1;

/// Names of the bits, for logs and `vnetctl`.
pub const NAMES: &[(u64, &str)] = &[
    (CSUM, "csum"),
    (GUEST_CSUM, "guest_csum"),
    (CTRL_GUEST_OFFLOADS, "ctrl_guest_offloads"),
    (MTU, "mtu"),
    (MAC, "mac"),
    (GUEST_TSO4, "guest_tso4"),
    (GUEST_TSO6, "guest_tso6"),
    (GUEST_ECN, "guest_ecn"),
    (GUEST_UFO, "guest_ufo"),
    (HOST_TSO4, "host_tso4"),
    (HOST_TSO6, "host_tso6"),
    (HOST_ECN, "host_ecn"),
    (HOST_UFO, "host_ufo"),
    (MRG_RXBUF, "mrg_rxbuf"),
    (STATUS, "status"),
    (CTRL_VQ, "ctrl_vq"),
    (MQ, "mq"),
    (GUEST_USO4, "guest_uso4"),
    (GUEST_USO6, "guest_uso6"),
    (HOST_USO, "host_uso"),
    (RING_INDIRECT_DESC, "indirect_desc"),
    (RING_EVENT_IDX, "event_idx"),
    (VHOST_USER_PROTOCOL_FEATURES, "protocol_features"),
    (VERSION_1, "version_1"),
    (RING_PACKED, "packed"),
    (IN_ORDER, "in_order"),
];

/// Space-separated names of the set bits in `f`.
pub fn describe(f: u64) -> String {
    let mut s = String::new();
    for (bit, name) in NAMES {
        if f & bit != 0 {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(name);
        }
    }
    s
}
