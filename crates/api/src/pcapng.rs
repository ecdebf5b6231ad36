//! pcapng blocks (draft-ietf-opsawg-pcapng): what `vnetctl capture` writes, readable by
//! `tcpdump -r` and Wireshark. One section, one Ethernet interface (the port) with
//! nanosecond timestamps; each frame an Enhanced Packet Block whose `epb_flags` give its
//! direction (inbound: the port sent it into the switch; outbound: the switch delivered
//! it) and, for a frame with offload metadata (GSO, checksum to complete), a comment with
//! its virtio-net header; an Interface Statistics Block at the end counts the frames lost.

/// Block types.
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;
/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u16 = 1;

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A block of `kind` around `body` (which must be a multiple of 4 bytes long).
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(12 + body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&len.to_le_bytes());
    out
}

fn end_of_options(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 0]);
}

/// The section header and the interface description of port `name`.
pub fn header(name: &str, snaplen: u32) -> Vec<u8> {
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    option(&mut shb, 4, b"vnetd"); // shb_userappl
    end_of_options(&mut shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&snaplen.to_le_bytes());
    option(&mut idb, 2, name.as_bytes()); // if_name
    option(&mut idb, 9, &[9]); // if_tsresol: 10^-9 s
    end_of_options(&mut idb);
    let mut out = block(SHB, &shb);
    out.extend(block(IDB, &idb));
    out
}

/// What a virtio-net header says beyond "a plain frame", for the frame's comment.
pub fn describe_hdr(hdr: &[u8]) -> Option<String> {
    if hdr.len() < 10 {
        return None;
    }
    let u16le = |i: usize| u16::from_le_bytes([hdr[i], hdr[i + 1]]);
    let (flags, gso) = (hdr[0], hdr[1]);
    if flags == 0 && gso == 0 {
        return None;
    }
    let mut parts = vec!["virtio-net:".to_string()];
    let kind = match gso & 0x7f {
        0 => None,
        1 => Some("tcpv4"),
        3 => Some("udp"),
        4 => Some("tcpv6"),
        5 => Some("udp_l4"),
        _ => Some("unknown"),
    };
    if let Some(k) = kind {
        parts.push(format!(
            "gso {k}{} gso_size {} hdr_len {}",
            if gso & 0x80 != 0 { " ecn" } else { "" },
            u16le(4),
            u16le(2)
        ));
    }
    if flags & 1 != 0 {
        parts.push(format!(
            "needs_csum csum_start {} csum_offset {}",
            u16le(6),
            u16le(8)
        ));
    }
    if flags & 2 != 0 {
        parts.push("data_valid".into());
    }
    Some(parts.join(" "))
}

/// One frame: `data` (its first bytes), `len` on the wire, at `ns` since the epoch.
pub fn packet(ns: u64, data: &[u8], len: usize, outbound: bool, comment: Option<&str>) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + data.len());
    b.extend_from_slice(&0u32.to_le_bytes()); // interface 0
    b.extend_from_slice(&u32::try_from(ns >> 32).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&u32::try_from(ns & 0xffff_ffff).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    b.extend_from_slice(data);
    b.resize(b.len().next_multiple_of(4), 0);
    // epb_flags: bits 0-1 direction (1 inbound, 2 outbound).
    option(
        &mut b,
        2,
        &(if outbound { 2u32 } else { 1u32 }).to_le_bytes(),
    );
    if let Some(c) = comment {
        option(&mut b, 1, c.as_bytes()); // opt_comment
    }
    end_of_options(&mut b);
    block(EPB, &b)
}

/// The closing statistics: frames seen and frames lost (not copied: the reader was slow).
pub fn statistics(ns: u64, received: u64, dropped: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&u32::try_from(ns >> 32).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&u32::try_from(ns & 0xffff_ffff).unwrap_or(0).to_le_bytes());
    option(&mut b, 4, &received.to_le_bytes()); // isb_ifrecv
    option(&mut b, 5, &dropped.to_le_bytes()); // isb_ifdrop
    end_of_options(&mut b);
    block(ISB, &b)
}

/// Reads a pcapng stream block by block (as `vnetctl capture` copies it): counts the
/// frames and takes the lost count from the statistics block.
#[derive(Debug, Default)]
pub struct Counter {
    pending: Vec<u8>,
    /// Enhanced packet blocks seen.
    pub frames: u64,
    /// `isb_ifdrop` of the last statistics block.
    pub lost: Option<u64>,
}

impl Counter {
    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while self.pending.len() - at >= 12 {
            let word =
                |i: usize| u32::from_le_bytes(self.pending[i..i + 4].try_into().unwrap_or([0; 4]));
            let (kind, len) = (word(at), word(at + 4) as usize);
            if len < 12 || self.pending.len() - at < len {
                break;
            }
            match kind {
                EPB => self.frames += 1,
                ISB => self.lost = isb_drop(&self.pending[at + 8..at + len - 4]),
                _ => {}
            }
            at += len;
        }
        self.pending.drain(..at);
    }
}

fn isb_drop(body: &[u8]) -> Option<u64> {
    let mut at = 12;
    while at + 4 <= body.len() {
        let code = u16::from_le_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_le_bytes([body[at + 2], body[at + 3]]));
        let v = body.get(at + 4..at + 4 + len)?;
        if code == 5 && len == 8 {
            return Some(u64::from_le_bytes(v.try_into().ok()?));
        }
        if code == 0 {
            break;
        }
        at += 4 + len.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_framed_and_counted_back() {
        let mut s = header("a", 65535);
        s.extend(packet(1, &[0xaa; 61], 61, true, Some("virtio-net: x")));
        s.extend(packet(2, &[0xbb; 64], 1514, false, None));
        s.extend(statistics(3, 7, 5));
        assert_eq!(s.len() % 4, 0);
        let mut c = Counter::default();
        // Fed in awkward pieces, as a pipe delivers them.
        for chunk in s.chunks(7) {
            c.feed(chunk);
        }
        assert_eq!((c.frames, c.lost), (2, Some(5)));
        let mut hdr = [0u8; 12];
        hdr[0] = 1;
        hdr[1] = 1;
        hdr[2..4].copy_from_slice(&54u16.to_le_bytes());
        hdr[4..6].copy_from_slice(&1448u16.to_le_bytes());
        hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
        assert_eq!(
            describe_hdr(&hdr).unwrap(),
            "virtio-net: gso tcpv4 gso_size 1448 hdr_len 54 needs_csum csum_start 34 \
             csum_offset 16"
        );
        assert_eq!(describe_hdr(&[0; 12]), None);
    }
}
