//! virtio-net queues on top of a [`DriverRing`] (split or packed): the txq (driver writes frames, device reads)
//! and the rxq (device writes frames into buffers the driver posted), §5.1.6.

use virtio_net::NetHdr;

use crate::config::TxLayout;
use crate::driver::DriverRing;
use crate::guest::GuestMemory;
use crate::ring::{Seg, DESC_SIZE};
use crate::FrontendError;

/// Largest frame a GSO-capable peer may hand over: 64 KiB IP datagram + Ethernet + VLAN
/// (the figure virtio-net uses for big rx buffers, §5.1.6.3.1).
pub(crate) const MAX_GSO_FRAME: usize = 65550;
/// Largest non-GSO frame the driver accepts for tx (jumbo frames).
pub(crate) const MAX_JUMBO_FRAME: usize = 9216;
/// Without GSO, an rx chain holds at least this much frame (§5.1.6.3.1).
pub(crate) const MIN_RX_FRAME: usize = 1526;
/// Descriptor size of big (no MRG_RXBUF, GSO) rx chains.
const BIG_RX_DESC: u32 = 4096;
/// At most this many tx slots / indirect rx chains when each holds a 64 KiB frame.
const BIG_SLOTS: usize = 64;

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

fn to_u32(v: usize, what: &str) -> Result<u32, FrontendError> {
    u32::try_from(v).map_err(|_| FrontendError::Config(format!("{what} {v} too large")))
}

/// What both queue kinds are built from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueParams {
    /// vring index.
    pub index: u16,
    /// Descriptors in the ring.
    pub size: u16,
    /// RING_EVENT_IDX negotiated.
    pub event_idx: bool,
    /// virtio-net header length.
    pub hdr_len: usize,
    /// Use indirect tables.
    pub indirect: bool,
    /// RING_PACKED negotiated.
    pub packed: bool,
    /// tx: HOST_TSO4/6/UFO negotiated (64 KiB frames); rx: GUEST_TSO4/6/UFO negotiated.
    pub big: bool,
}

impl QueueParams {
    /// The ring these parameters describe, allocated in `mem`.
    fn ring(&self, mem: &mut GuestMemory) -> Result<DriverRing, FrontendError> {
        DriverRing::new(mem, self.index, self.size, self.event_idx, self.packed)
    }
}

/// Driver state of a txq.
#[derive(Debug)]
pub(crate) struct TxQueue {
    pub(crate) ring: DriverRing,
    /// Buffer of each slot: header + frame, contiguous.
    slots: Vec<u64>,
    /// Indirect table of each slot (empty without indirect).
    tables: Vec<u64>,
    free_slots: Vec<u32>,
    slot_size: usize,
    /// Largest frame (without header) the layout can carry.
    max_frame: usize,
    layout: TxLayout,
    hdr_len: usize,
    segs: Vec<Seg>,
}

impl TxQueue {
    /// Allocates the ring and its buffers. `big`: GSO frames of up to 64 KiB may be sent.
    pub(crate) fn new(
        mem: &mut GuestMemory,
        p: QueueParams,
        layout: TxLayout,
    ) -> Result<TxQueue, FrontendError> {
        let ring = p.ring(mem)?;
        let (size, hdr_len, indirect, big) = (p.size, p.hdr_len, p.indirect, p.big);
        let frame = if big { MAX_GSO_FRAME } else { MAX_JUMBO_FRAME };
        let slot_size = round_up(hdr_len + frame, 64);
        let nslots = if big {
            usize::from(size).min(BIG_SLOTS)
        } else {
            usize::from(size)
        };
        let max_segs = match layout {
            TxLayout::HdrSeparate => 2,
            TxLayout::Contiguous => 1,
            TxLayout::Split(0) => {
                return Err(FrontendError::Config("TxLayout::Split(0)".into()));
            }
            TxLayout::Split(n) => slot_size.div_ceil(n as usize),
        }
        .min(usize::from(size));
        let capacity = match layout {
            TxLayout::Split(n) => (n as usize).saturating_mul(max_segs).min(slot_size),
            _ => slot_size,
        };
        let max_frame = capacity
            .min(hdr_len + frame)
            .checked_sub(hdr_len)
            .ok_or_else(|| {
                FrontendError::Config(format!(
                    "{layout:?} with {size} descriptors cannot carry the {hdr_len}-byte header"
                ))
            })?;
        let mut slots = Vec::with_capacity(nslots);
        let mut tables = Vec::new();
        for _ in 0..nslots {
            slots.push(mem.alloc(slot_size as u64, 64)?);
            if indirect {
                tables.push(mem.alloc(DESC_SIZE * max_segs as u64, 16)?);
            }
        }
        let free_slots = (0..to_u32(nslots, "tx slots")?).rev().collect();
        Ok(TxQueue {
            ring,
            slots,
            tables,
            free_slots,
            slot_size,
            max_frame,
            layout,
            hdr_len,
            segs: Vec::with_capacity(max_segs),
        })
    }

    /// Largest frame `enqueue` accepts.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Frees the slots of chains the device has used. Returns how many.
    pub(crate) fn reclaim(&mut self, mem: &GuestMemory) -> Result<usize, FrontendError> {
        let mut n = 0;
        loop {
            let pending = self.ring.pending_used(mem, false)?;
            if pending == 0 {
                return Ok(n);
            }
            for _ in 0..pending {
                if let Some(t) = self.ring.take_used(mem)?.token {
                    self.free_slots.push(t);
                }
                n += 1;
            }
        }
    }

    /// Copies header + frame into a free slot and posts it (unpublished). `Ok(false)` if no
    /// slot or not enough descriptors are free.
    pub(crate) fn enqueue(
        &mut self,
        mem: &mut GuestMemory,
        hdr: &NetHdr,
        frame: &[u8],
    ) -> Result<bool, FrontendError> {
        if frame.len() > self.max_frame {
            return Err(FrontendError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        let Some(slot) = self.free_slots.pop() else {
            return Ok(false);
        };
        let gpa = self.slots[slot as usize];
        let mut h = [0u8; virtio_net::HDR_LEN_V1];
        hdr.write(&mut h[..self.hdr_len]);
        mem.write(gpa, &h[..self.hdr_len])?;
        mem.write(gpa + self.hdr_len as u64, frame)?;
        let total = self.hdr_len + frame.len();
        self.segs.clear();
        let seg = |gpa: u64, len: usize| Seg {
            gpa,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            write: false,
        };
        match self.layout {
            TxLayout::HdrSeparate => {
                self.segs.push(seg(gpa, self.hdr_len));
                if !frame.is_empty() {
                    self.segs.push(seg(gpa + self.hdr_len as u64, frame.len()));
                }
            }
            TxLayout::Contiguous => self.segs.push(seg(gpa, total)),
            TxLayout::Split(n) => {
                let n = n as usize;
                let mut off = 0;
                while off < total {
                    let len = n.min(total - off);
                    self.segs.push(seg(gpa + off as u64, len));
                    off += len;
                }
            }
        }
        let posted = match self.tables.get(slot as usize) {
            Some(&table) => self.ring.post_indirect(mem, table, &self.segs, slot)?,
            None => self.ring.post(mem, &self.segs, slot)?,
        };
        if posted.is_none() {
            self.free_slots.push(slot);
            return Ok(false);
        }
        Ok(true)
    }

    /// Slot size in bytes (header + largest frame).
    #[allow(dead_code)]
    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }
}

/// A posted rx chain: one contiguous buffer cut into descriptors.
#[derive(Debug)]
struct RxSlot {
    gpa: u64,
    capacity: u32,
    segs: Vec<Seg>,
    table: Option<u64>,
}

/// Outcome of one rx poll.
#[derive(Debug)]
pub(crate) enum RxPoll {
    /// A frame; `kick` if the device wants to hear about the refilled buffers.
    Frame {
        hdr: NetHdr,
        data: Vec<u8>,
        kick: bool,
    },
    /// Nothing used.
    Empty,
    /// A merged frame whose later buffers are not published yet.
    Incomplete,
}

/// Driver state of an rxq.
#[derive(Debug)]
pub(crate) struct RxQueue {
    pub(crate) ring: DriverRing,
    slots: Vec<RxSlot>,
    /// Slots not currently posted (a refill that found no descriptors).
    unposted: Vec<u32>,
    hdr_len: usize,
    mrg: bool,
}

impl RxQueue {
    /// Allocates the ring and buffers and posts all chains (unpublished; call
    /// [`RxQueue::publish`]). `big`: GUEST_TSO4/6/UFO negotiated.
    pub(crate) fn new(
        mem: &mut GuestMemory,
        p: QueueParams,
        mrg: bool,
        rx_buf_size: u32,
    ) -> Result<RxQueue, FrontendError> {
        let ring = p.ring(mem)?;
        let (size, hdr_len, indirect, big) = (p.size, p.hdr_len, p.indirect, p.big);
        let buf = rx_buf_size as usize;
        let (desc_size, capacity, nchains, indirect) = if mrg {
            if buf < hdr_len {
                return Err(FrontendError::Config(format!(
                    "rx_buf_size {rx_buf_size} smaller than the {hdr_len}-byte header"
                )));
            }
            (buf, buf, usize::from(size), false)
        } else {
            let desc = if big { BIG_RX_DESC as usize } else { buf };
            if desc == 0 {
                return Err(FrontendError::Config("rx_buf_size 0".into()));
            }
            let need = hdr_len + if big { MAX_GSO_FRAME } else { MIN_RX_FRAME };
            let cap = round_up(need.max(buf), desc);
            let k = cap / desc;
            if k > usize::from(size) {
                return Err(FrontendError::Config(format!(
                    "an rx chain of {k} descriptors is longer than the ring of {size}"
                )));
            }
            let nchains = if indirect {
                usize::from(size).min(if big { BIG_SLOTS } else { usize::MAX })
            } else {
                usize::from(size) / k
            };
            if nchains == 0 {
                return Err(FrontendError::Config(format!(
                    "an rx chain of {k} descriptors does not fit a ring of {size}"
                )));
            }
            (desc, cap, nchains, indirect)
        };
        let mut slots = Vec::with_capacity(nchains);
        for _ in 0..nchains {
            let gpa = mem.alloc(capacity as u64, 64)?;
            let segs: Vec<Seg> = (0..capacity / desc_size)
                .map(|i| Seg {
                    gpa: gpa + (i * desc_size) as u64,
                    len: u32::try_from(desc_size).unwrap_or(u32::MAX),
                    write: true,
                })
                .collect();
            let table = if indirect {
                Some(mem.alloc(DESC_SIZE * segs.len() as u64, 16)?)
            } else {
                None
            };
            slots.push(RxSlot {
                gpa,
                capacity: to_u32(capacity, "rx chain")?,
                segs,
                table,
            });
        }
        let mut q = RxQueue {
            ring,
            slots,
            unposted: (0..to_u32(nchains, "rx chains")?).rev().collect(),
            hdr_len,
            mrg,
        };
        q.refill(mem)?;
        Ok(q)
    }

    /// Posts every unposted chain that fits.
    fn refill(&mut self, mem: &mut GuestMemory) -> Result<(), FrontendError> {
        while let Some(&s) = self.unposted.last() {
            let slot = &self.slots[s as usize];
            let posted = match slot.table {
                Some(t) => self.ring.post_indirect(mem, t, &slot.segs, s)?,
                None => self.ring.post(mem, &slot.segs, s)?,
            };
            if posted.is_none() {
                break;
            }
            self.unposted.pop();
        }
        Ok(())
    }

    /// Publishes posted chains; true if the device wants a kick.
    pub(crate) fn publish(&mut self, mem: &GuestMemory) -> Result<bool, FrontendError> {
        self.ring.publish(mem)
    }

    /// Validates a used element and returns its slot.
    fn used_slot(&self, token: Option<u32>, len: u32, head: u16) -> Result<&RxSlot, FrontendError> {
        let slot = token
            .and_then(|t| self.slots.get(t as usize))
            .ok_or_else(|| self.bad(format!("used id {head} is not an rx chain")))?;
        if len > slot.capacity {
            return Err(self.bad(format!(
                "used len {len} exceeds the {}-byte chain {head}",
                slot.capacity
            )));
        }
        Ok(slot)
    }

    fn bad(&self, reason: String) -> FrontendError {
        FrontendError::BadBackend {
            queue: self.ring.index(),
            reason,
        }
    }

    /// Takes the next frame if the device has completed one (§5.1.6.4), and refills.
    pub(crate) fn poll(&mut self, mem: &mut GuestMemory) -> Result<RxPoll, FrontendError> {
        self.refill(mem)?;
        let mut pending = self.ring.pending_used(mem, false)?;
        if pending == 0 {
            return Ok(RxPoll::Empty);
        }
        let (head, token, len) = self.ring.peek_used(mem, 0)?;
        let hdr_len = self.hdr_len;
        let first = self.used_slot(token, len, head)?;
        if (len as usize) < hdr_len {
            return Err(self.bad(format!(
                "used len {len} shorter than the {hdr_len}-byte header"
            )));
        }
        let mut hb = [0u8; virtio_net::HDR_LEN_V1];
        mem.read(first.gpa, &mut hb[..hdr_len])?;
        let hdr = NetHdr::parse(&hb[..hdr_len]).ok_or_else(|| self.bad("short header".into()))?;
        let nbufs = if self.mrg { hdr.num_buffers } else { 1 };
        if nbufs == 0 || usize::from(nbufs) > self.slots.len() {
            return Err(self.bad(format!(
                "num_buffers {nbufs} with {} rx buffers",
                self.slots.len()
            )));
        }
        if pending < nbufs {
            pending = self.ring.pending_used(mem, true)?;
            if pending < nbufs {
                return Ok(RxPoll::Incomplete);
            }
        }
        // Validate all the frame's elements before consuming any.
        let mut total = 0usize;
        for i in 0..nbufs {
            let (head, token, len) = self.ring.peek_used(mem, i)?;
            self.used_slot(token, len, head)?;
            total += len as usize;
        }
        let mut data = Vec::with_capacity(total - hdr_len);
        for i in 0..nbufs {
            let used = self.ring.take_used(mem)?;
            let s = used.token.unwrap_or(0);
            let gpa = self.slots[s as usize].gpa;
            let skip = if i == 0 { hdr_len } else { 0 };
            let len = used.len as usize - skip;
            let at = data.len();
            data.resize(at + len, 0);
            mem.read(gpa + skip as u64, &mut data[at..])?;
            self.unposted.push(s);
        }
        self.refill(mem)?;
        let kick = self.ring.publish(mem)?;
        Ok(RxPoll::Frame { hdr, data, kick })
    }

    /// Number of rx chains.
    pub(crate) fn chains(&self) -> usize {
        self.slots.len()
    }
}
