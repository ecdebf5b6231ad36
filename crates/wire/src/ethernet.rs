//! Ethernet II frames, optionally carrying one IEEE 802.1Q tag.
//!
//! ```text
//! untagged: dst(6) src(6) ethertype(2) payload
//! tagged:   dst(6) src(6) 0x8100(2) tci(2) inner ethertype(2) payload
//! ```
//! The FCS is not part of the frames handled here.

use crate::bytes::{array, put, put_u16, range, range_mut, u16_at};
use crate::{Error, MacAddr, Result};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType (TPID) of an IEEE 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// TPID of an IEEE 802.1ad service tag (not interpreted by [`EthernetFrame`]).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Length of the untagged header.
pub const HEADER_LEN: usize = 14;
/// Length of one 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Length of the header with one 802.1Q tag.
pub const TAGGED_HEADER_LEN: usize = HEADER_LEN + VLAN_TAG_LEN;
/// Largest valid VLAN ID (4095 is reserved).
pub const VID_MAX: u16 = 4094;

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
}

/// A view of an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` after checking it holds the whole header (18 bytes when tagged).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = EthernetFrame { buffer };
        let len = f.buffer.as_ref().len();
        if len < HEADER_LEN || len < f.payload_offset() {
            return Err(Error::Truncated);
        }
        Ok(f)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Destination address.
    pub fn dst(&self) -> MacAddr {
        MacAddr(array(self.buffer.as_ref(), field::DST))
    }

    /// Source address.
    pub fn src(&self) -> MacAddr {
        MacAddr(array(self.buffer.as_ref(), field::SRC))
    }

    /// The outer EtherType ([`ETHERTYPE_VLAN`] on a tagged frame).
    pub fn ethertype(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Whether the frame carries an 802.1Q tag.
    pub fn is_vlan_tagged(&self) -> bool {
        self.ethertype() == ETHERTYPE_VLAN
    }

    /// The tag control information (PCP, DEI, VID) of a tagged frame.
    pub fn vlan_tci(&self) -> Option<u16> {
        self.is_vlan_tagged()
            .then(|| u16_at(self.buffer.as_ref(), field::TCI))
    }

    /// The VLAN ID (low 12 bits of the TCI) of a tagged frame. A VID of 0 is a
    /// priority-only tag.
    pub fn vlan(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    /// The priority code point of a tagged frame.
    pub fn vlan_pcp(&self) -> Option<u8> {
        self.vlan_tci().and_then(|tci| u8::try_from(tci >> 13).ok())
    }

    /// Where the payload starts: 14, or 18 when tagged.
    pub fn payload_offset(&self) -> usize {
        if self.is_vlan_tagged() {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The EtherType of the payload (after the tag, if any).
    pub fn inner_ethertype(&self) -> u16 {
        if self.is_vlan_tagged() {
            u16_at(self.buffer.as_ref(), field::INNER_ETHERTYPE)
        } else {
            self.ethertype()
        }
    }

    /// The payload (after the tag, if any), including any padding.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        range(b, self.payload_offset(), b.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst(&mut self, m: MacAddr) {
        put(self.buffer.as_mut(), field::DST, &m.0);
    }

    /// Sets the source address.
    pub fn set_src(&mut self, m: MacAddr) {
        put(self.buffer.as_mut(), field::SRC, &m.0);
    }

    /// Sets the outer EtherType. Changing tagged-ness this way moves the payload offset;
    /// use [`insert_vlan_tag`] / [`strip_vlan_tag`] to add or remove a tag.
    pub fn set_ethertype(&mut self, t: u16) {
        put_u16(self.buffer.as_mut(), field::ETHERTYPE, t);
    }

    /// Sets the payload EtherType (the inner one on a tagged frame).
    pub fn set_inner_ethertype(&mut self, t: u16) {
        let off = if self.is_vlan_tagged() {
            field::INNER_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        put_u16(self.buffer.as_mut(), off, t);
    }

    /// Sets the whole TCI of a tagged frame; returns false (and does nothing) if untagged.
    pub fn set_vlan_tci(&mut self, tci: u16) -> bool {
        if !self.is_vlan_tagged() {
            return false;
        }
        put_u16(self.buffer.as_mut(), field::TCI, tci);
        true
    }

    /// Sets the VID of a tagged frame, keeping PCP and DEI; false if untagged.
    pub fn set_vlan(&mut self, vid: u16) -> bool {
        let tci = self.vlan_tci().unwrap_or(0);
        self.set_vlan_tci((tci & 0xf000) | (vid & 0x0fff))
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let off = self.payload_offset();
        let b = self.buffer.as_mut();
        let len = b.len();
        range_mut(b, off, len)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Copies the untagged frame `frame` into `out` with an 802.1Q tag carrying `tci` inserted
/// after the source address. Returns the new length, or `None` if `frame` is shorter than a
/// header or `out` is too small.
pub fn insert_vlan_tag(frame: &[u8], tci: u16, out: &mut [u8]) -> Option<usize> {
    let new_len = frame.len().checked_add(VLAN_TAG_LEN)?;
    let addrs = frame.get(..field::ETHERTYPE)?;
    let rest = frame.get(field::ETHERTYPE..)?;
    if rest.len() < 2 {
        return None;
    }
    let out = out.get_mut(..new_len)?;
    let (head, tail) = out.split_at_mut(field::ETHERTYPE);
    head.copy_from_slice(addrs);
    let (tag, tail) = tail.split_at_mut(VLAN_TAG_LEN);
    let [tpid_hi, tpid_lo] = ETHERTYPE_VLAN.to_be_bytes();
    let [tci_hi, tci_lo] = tci.to_be_bytes();
    tag.copy_from_slice(&[tpid_hi, tpid_lo, tci_hi, tci_lo]);
    tail.copy_from_slice(rest);
    Some(new_len)
}

/// Copies the tagged frame `frame` into `out` without its outer 802.1Q tag. Returns the new
/// length, or `None` if `frame` is not a complete tagged header or `out` is too small.
pub fn strip_vlan_tag(frame: &[u8], out: &mut [u8]) -> Option<usize> {
    if u16_at(frame, field::ETHERTYPE) != ETHERTYPE_VLAN || frame.len() < TAGGED_HEADER_LEN {
        return None;
    }
    let new_len = frame.len() - VLAN_TAG_LEN;
    let out = out.get_mut(..new_len)?;
    let (head, tail) = out.split_at_mut(field::ETHERTYPE);
    head.copy_from_slice(frame.get(..field::ETHERTYPE)?);
    tail.copy_from_slice(frame.get(field::ETHERTYPE + VLAN_TAG_LEN..)?);
    Some(new_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untagged() -> Vec<u8> {
        let mut f = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x06,
        ];
        f.extend_from_slice(&[0xaa; 28]);
        f
    }

    #[test]
    fn untagged_fields() {
        let b = untagged();
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.inner_ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.vlan(), None);
        assert_eq!(f.vlan_pcp(), None);
        assert_eq!(f.payload_offset(), 14);
        assert_eq!(f.payload(), &[0xaa; 28][..]);
    }

    #[test]
    fn tagged_fields_and_setters() {
        let mut b = vec![0u8; 64];
        insert_vlan_tag(&untagged(), 0xa00a, &mut b).unwrap();
        let mut f = EthernetFrame::new_checked(&mut b[..46]).unwrap();
        assert_eq!(f.ethertype(), ETHERTYPE_VLAN);
        assert_eq!(f.vlan(), Some(10));
        assert_eq!(f.vlan_pcp(), Some(5));
        assert_eq!(f.inner_ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload_offset(), 18);
        assert_eq!(f.payload().len(), 28);
        assert!(f.set_vlan(100));
        assert_eq!(f.vlan_tci(), Some(0xa064));
        f.set_inner_ethertype(ETHERTYPE_IPV4);
        f.set_dst(MacAddr([2, 0, 0, 0, 0, 9]));
        f.set_src(MacAddr([2, 0, 0, 0, 0, 8]));
        f.payload_mut()[0] = 0x45;
        assert_eq!(f.inner_ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.dst(), MacAddr([2, 0, 0, 0, 0, 9]));
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 8]));
        assert_eq!(f.payload()[0], 0x45);

        let mut back = vec![0u8; 64];
        let n = strip_vlan_tag(&b[..46], &mut back).unwrap();
        let g = EthernetFrame::new_checked(&back[..n]).unwrap();
        assert_eq!(g.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(g.payload()[0], 0x45);
        assert_eq!(g.payload().len(), 28);
    }

    #[test]
    fn truncated() {
        let b = untagged();
        assert_eq!(
            EthernetFrame::new_checked(&b[..13]).err(),
            Some(Error::Truncated)
        );
        assert!(EthernetFrame::new_checked(&b[..14]).is_ok());
        let mut t = vec![0u8; 64];
        insert_vlan_tag(&b, 1, &mut t).unwrap();
        assert_eq!(
            EthernetFrame::new_checked(&t[..17]).err(),
            Some(Error::Truncated)
        );
        assert!(EthernetFrame::new_checked(&t[..18]).is_ok());
        let mut u = untagged();
        let mut f = EthernetFrame::new_checked(&mut u[..]).unwrap();
        assert!(!f.set_vlan(3));
        assert_eq!(insert_vlan_tag(&b[..13], 1, &mut t), None);
        assert_eq!(insert_vlan_tag(&b, 1, &mut t[..40]), None);
        assert_eq!(strip_vlan_tag(&b, &mut t), None);
    }
}
