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
