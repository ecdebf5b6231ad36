//! VLAN membership of a port (IEEE 802.1Q access and trunk ports): which VLAN a frame from
//! the port belongs to, whether a frame of a VLAN may leave through it, and what happens
//! to the tag on the way out.

use crate::DropReason;

/// Highest VLAN ID a port may carry (4095 is reserved).
pub const VID_MAX: u16 = 4094;

/// A set of VLAN IDs (0..=4095), as bits.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    /// No VLAN.
    pub const EMPTY: VlanSet = VlanSet([0; 64]);

    /// Adds `vid` (ignored above 4095).
    pub fn insert(&mut self, vid: u16) {
        if let Some(w) = self.0.get_mut(usize::from(vid >> 6)) {
            *w |= 1 << (vid & 63);
        }
    }

    /// Whether `vid` is in the set.
    pub fn contains(&self, vid: u16) -> bool {
        self.0
            .get(usize::from(vid >> 6))
            .is_some_and(|w| w & (1 << (vid & 63)) != 0)
    }

    /// The VLAN IDs in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=4095u16).filter(|v| self.contains(*v))
    }
}

impl FromIterator<u16> for VlanSet {
    fn from_iter<I: IntoIterator<Item = u16>>(it: I) -> Self {
        let mut s = VlanSet::EMPTY;
        for v in it {
            s.insert(v);
        }
        s
    }
}

impl std::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// How a port carries VLANs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VlanMode {
    /// No VLAN configuration (the default): untagged frames are VLAN 0, tagged ones keep
    /// their tag and their VLAN, and the port takes frames of every VLAN, tagged as they
    /// travel (VLAN 0 untagged).
    #[default]
    Native,
    /// An access port of one VLAN: untagged to and from the guest, carried as that VLAN in
    /// the switch; a tagged frame from the guest is dropped.
    Access(u16),
    /// A trunk: 802.1Q-tagged frames of these VLANs pass; untagged frames and other VLANs
    /// are dropped.
    Trunk(Box<VlanSet>),
}

/// What to do with a frame's tag as it leaves through a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagAction {
    /// Send it as it is.
    Keep,
    /// Remove its 802.1Q tag.
    Strip,
    /// Insert an 802.1Q tag with this VLAN ID.
    Insert(u16),
}

impl VlanMode {
    /// Whether the port carries VLANs other than the default (frames may need tags
    /// added or removed on their way in or out).
    pub fn is_native(&self) -> bool {
        matches!(self, VlanMode::Native)
    }

    /// The VLAN of a frame that came in through this port, from its tag (`Some(vid)` when
    /// 802.1Q-tagged), or why it is dropped ([`DropReason::Vlan`]).
    #[inline]
    pub fn ingress(&self, tag: Option<u16>) -> Result<u16, DropReason> {
        match (self, tag) {
            (VlanMode::Native, t) => Ok(t.unwrap_or(0)),
            (VlanMode::Access(v), None) => Ok(*v),
            (VlanMode::Trunk(set), Some(v)) if v != 0 && set.contains(v) => Ok(v),
            (VlanMode::Access(_), Some(_)) | (VlanMode::Trunk(_), _) => Err(DropReason::Vlan),
        }
    }

    /// Whether a frame of `vlan`, tagged on arrival or not (`tagged`), may leave through
    /// this port, and what happens to its tag; `None` when the port is not in that VLAN.
    #[inline]
    pub fn egress(&self, vlan: u16, tagged: bool) -> Option<TagAction> {
        let member = match self {
            VlanMode::Native => true,
            VlanMode::Access(v) => *v == vlan,
            VlanMode::Trunk(set) => vlan != 0 && set.contains(vlan),
        };
        if !member {
            return None;
        }
        let want_tag = match self {
            VlanMode::Access(_) => false,
            VlanMode::Trunk(_) => true,
            VlanMode::Native => vlan != 0,
        };
        Some(match (want_tag, tagged) {
            (true, true) | (false, false) => TagAction::Keep,
            (false, true) => TagAction::Strip,
            (true, false) => TagAction::Insert(vlan),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        let s: VlanSet = [1, 100, 4094, 4095].into_iter().collect();
        assert!(s.contains(1) && s.contains(4095) && !s.contains(0) && !s.contains(2));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 100, 4094, 4095]);
        assert!(!VlanSet::EMPTY.contains(7));
        let mut t = VlanSet::EMPTY;
        t.insert(u16::MAX); // ignored
        assert_eq!(t, VlanSet::EMPTY);
    }

    #[test]
    fn ingress_rules() {
        let trunk = VlanMode::Trunk(Box::new([10, 20].into_iter().collect()));
        assert_eq!(VlanMode::Native.ingress(None), Ok(0));
        assert_eq!(VlanMode::Native.ingress(Some(5)), Ok(5));
        assert_eq!(VlanMode::Access(10).ingress(None), Ok(10));
        assert_eq!(
            VlanMode::Access(10).ingress(Some(10)),
            Err(DropReason::Vlan)
        );
        assert_eq!(trunk.ingress(Some(20)), Ok(20));
        assert_eq!(trunk.ingress(Some(30)), Err(DropReason::Vlan));
        assert_eq!(trunk.ingress(None), Err(DropReason::Vlan));
        assert_eq!(trunk.ingress(Some(0)), Err(DropReason::Vlan));
    }

    #[test]
    fn egress_rules() {
        use TagAction::*;
        let trunk = VlanMode::Trunk(Box::new([10, 20].into_iter().collect()));
        // Access: only its VLAN, always untagged.
        assert_eq!(VlanMode::Access(10).egress(10, false), Some(Keep));
        assert_eq!(VlanMode::Access(10).egress(10, true), Some(Strip));
        assert_eq!(VlanMode::Access(10).egress(20, false), None);
        assert_eq!(VlanMode::Access(10).egress(0, false), None);
        // Trunk: its VLANs, always tagged.
        assert_eq!(trunk.egress(10, false), Some(Insert(10)));
        assert_eq!(trunk.egress(20, true), Some(Keep));
        assert_eq!(trunk.egress(30, true), None);
        assert_eq!(trunk.egress(0, false), None);
        // Native: everything, tagged unless VLAN 0.
        assert_eq!(VlanMode::Native.egress(0, false), Some(Keep));
        assert_eq!(VlanMode::Native.egress(10, false), Some(Insert(10)));
        assert_eq!(VlanMode::Native.egress(10, true), Some(Keep));
    }
}
