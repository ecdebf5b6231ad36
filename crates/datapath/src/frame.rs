//! Where the bytes of a frame being switched come from, and the part of its start that
//! switching reads.

use virtio_net::HDR_LEN_V1;
use vring::{Chain, IoVecs};

/// Bytes of a frame's start that switching looks at: a virtio_net_hdr v1 and an Ethernet
/// header with a VLAN tag.
pub(crate) const HEAD_LEN: usize = HDR_LEN_V1 + wire::ethernet::TAGGED_HEADER_LEN;

/// Where the bytes of a frame come from.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    /// A guest's tx chain, from this offset: copied guest to guest (or to the kernel).
    Chain(&'a Chain, usize),
    /// A buffer of ours (read from a TAP fd, completed or segmented).
    Bytes(&'a [u8]),
}

impl<'a> Src<'a> {
    pub fn len(&self) -> usize {
        match self {
            Src::Chain(c, off) => (c.readable_len() as usize).saturating_sub(*off),
            Src::Bytes(b) => b.len(),
        }
    }

    pub fn read_at(&self, off: usize, buf: &mut [u8]) -> usize {
        match self {
            Src::Chain(c, o) => c.read_at(o + off, buf),
            Src::Bytes(b) => {
                let s = b.get(off..).unwrap_or(&[]);
                let n = s.len().min(buf.len());
                buf[..n].copy_from_slice(&s[..n]);
                n
            }
        }
    }

    /// The same frame without its first `n` bytes.
    pub fn skip(self, n: usize) -> Self {
        match self {
            Src::Chain(c, o) => Src::Chain(c, o + n),
            Src::Bytes(b) => Src::Bytes(b.get(n..).unwrap_or(&[])),
        }
    }

    /// Adds the whole frame to `iov` (straight from guest memory for a chain); false when
    /// `iov` could not take all of it.
    pub fn push_to(self, iov: &mut IoVecs<'a>) -> bool {
        match self {
            Src::Chain(c, off) => {
                let len = self.len();
                iov.push_chain(c, off, len) == len
            }
            Src::Bytes(b) => iov.push_bytes(b),
        }
    }
}

/// A copy of a frame's Ethernet header (14 bytes, or 18 with an 802.1Q tag), taken once:
/// what forwarding decided on is what is delivered, whatever the guest writes meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EthHead {
    bytes: [u8; TAGGED],
    tagged: bool,
}

const UNTAGGED: usize = wire::ethernet::HEADER_LEN;
const TAGGED: usize = wire::ethernet::TAGGED_HEADER_LEN;
/// Where the EtherType (or the TPID of a tag) sits: after the two addresses.
const TYPE_AT: usize = 12;

impl EthHead {
    /// The header in `b`, the first 18 bytes of a frame of which `avail` bytes exist (the
    /// rest of `b` is ignored when untagged); None when the frame is shorter than its header.
    #[inline]
    pub fn new(b: &[u8; TAGGED], avail: usize) -> Option<EthHead> {
        let tagged =
            u16::from_be_bytes([b[TYPE_AT], b[TYPE_AT + 1]]) == wire::ethernet::ETHERTYPE_VLAN;
        let len = if tagged { TAGGED } else { UNTAGGED };
        (avail >= len).then_some(EthHead { bytes: *b, tagged })
    }

    /// The header at the start of `b` (a frame in one buffer).
    pub fn from_slice(b: &[u8]) -> Option<EthHead> {
        let mut bytes = [0u8; TAGGED];
        let n = b.len().min(TAGGED);
        bytes[..n].copy_from_slice(&b[..n]);
        EthHead::new(&bytes, b.len())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }

    #[inline]
    pub fn len(&self) -> usize {
        if self.tagged {
            TAGGED
        } else {
            UNTAGGED
        }
    }

    #[inline]
    pub fn tagged(&self) -> bool {
        self.tagged
    }

    /// The header as it leaves through a port that wants `action` done to the tag.
    pub fn with(&self, action: switch::TagAction) -> EthHead {
        use switch::TagAction;
        match action {
            TagAction::Keep => *self,
            TagAction::Strip if self.tagged() => {
                let mut bytes = [0u8; TAGGED];
                bytes[..TYPE_AT].copy_from_slice(&self.bytes[..TYPE_AT]);
                // The inner EtherType follows the 4-byte tag.
                bytes[TYPE_AT..UNTAGGED].copy_from_slice(&self.bytes[TYPE_AT + 4..TAGGED]);
                EthHead {
                    bytes,
                    tagged: false,
                }
            }
            TagAction::Insert(vid) if !self.tagged() => {
                let mut bytes = [0u8; TAGGED];
                bytes[..TYPE_AT].copy_from_slice(&self.bytes[..TYPE_AT]);
                bytes[TYPE_AT..TYPE_AT + 2]
                    .copy_from_slice(&wire::ethernet::ETHERTYPE_VLAN.to_be_bytes());
                bytes[TYPE_AT + 2..TYPE_AT + 4].copy_from_slice(&(vid & 0x0fff).to_be_bytes());
                bytes[TYPE_AT + 4..TAGGED].copy_from_slice(&self.bytes[TYPE_AT..UNTAGGED]);
                EthHead {
                    bytes,
                    tagged: true,
                }
            }
            TagAction::Strip | TagAction::Insert(_) => *self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::TagAction;

    #[test]
    fn tags_in_and_out() {
        let untagged: Vec<u8> = (1..=12).chain([0x08, 0x00]).collect();
        let h = EthHead::from_slice(&untagged).unwrap();
        let t = h.with(TagAction::Insert(100));
        assert_eq!(t.as_bytes()[12..], [0x81, 0x00, 0x00, 100, 0x08, 0x00]);
        assert_eq!(t.as_bytes()[..12], untagged[..12]);
        assert_eq!(t.with(TagAction::Strip), h);
        assert_eq!(h.with(TagAction::Keep), h);
        assert_eq!(h.with(TagAction::Strip), h, "nothing to strip");
        let tagged: Vec<u8> = untagged[..12]
            .iter()
            .copied()
            .chain([0x81, 0, 0, 5])
            .collect();
        assert!(
            EthHead::from_slice(&tagged).is_none(),
            "too short for a tag"
        );
        assert!(EthHead::from_slice(&untagged[..13]).is_none());
    }
}
