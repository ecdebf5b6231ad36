//! The forwarding database (IEEE 802.1Q-2022 §8.8, "Filtering Database"): dynamic entries
//! learned from source addresses, keyed by `(MAC, VLAN)`, removed after the ageing time, and
//! static entries (a port's configured addresses) that never age and never move.
//!
//! Tenant isolation: a static address sent from another port is refused
//! ([`Learn::Static`]), and a port may hold at most its limit of learned addresses
//! ([`Fdb::set_port_limit`], [`Learn::LimitReached`]); a full table never evicts a live
//! entry of another port.
//!
//! Layout: one open-addressing table with linear probing, allocated in [`Fdb::new`] and never
//! resized. It has at least twice as many slots as the entry capacity, so a probe always meets
//! an empty slot and chains stay short. Removal uses backward-shift deletion (no tombstones),
//! so the table does not degrade however long it runs. Slots are chosen by a keyed hash (a
//! 64-bit mixer over the packed key, xor-ed with two secret random keys drawn from `std`'s
//! randomly seeded hasher): cheap enough to run twice per frame, and a guest that does not
//! know the keys cannot aim its source MACs at one probe chain.
//!
//! Time is a parameter: every operation takes `now`, and an entry whose age (`now` minus
//! the last time its source was seen) has reached the ageing time is treated as absent. Such
//! entries are physically removed by [`Fdb::age`], by [`Fdb::learn`] when the table is full,
//! or by re-learning. A `now` earlier than an entry's timestamp counts as age zero.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::decide::DECISION_CACHE;
use crate::{is_valid_source, MacAddr, PortKey};

/// Default ageing time, 300 s (IEEE 802.1Q-2022 Table 8-6, recommended value).
pub const DEFAULT_AGING_TIME: Duration = Duration::from_secs(300);

/// Largest entry capacity [`Fdb::new`] accepts; larger requests are clamped to it.
pub const MAX_CAPACITY: usize = 1 << 22;

/// Port indexes above this get no per-port limit (a port id is a `u16` in the datapath).
const MAX_PORTS: usize = 1 << 16;

/// The outcome of [`Fdb::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn<P> {
    /// A new entry was created (or an expired one was taken over).
    New,
    /// The entry existed on the same port; its age was reset.
    Refreshed,
    /// The address moved: it was live on `from` and now points at the new port.
    Moved {
        /// The port the address was on before.
        from: P,
    },
    /// The table is full of live entries; nothing was learned.
    TableFull,
    /// The address is a static entry of port `owner`, not of this one: nothing changed.
    Static {
        /// The port the address is configured on.
        owner: P,
    },
    /// The port already holds its limit of learned addresses: nothing was learned.
    LimitReached,
    /// The address is a group address or all zeros and is never learned.
    InvalidMac,
}

/// One live entry, as reported by [`Fdb::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry<P> {
    /// The station address.
    pub mac: MacAddr,
    /// The VLAN it was learned on.
    pub vlan: u16,
    /// The port it was learned on.
    pub port: P,
    /// Time since its source was last seen (zero for static entries).
    pub age: Duration,
    /// A configured (static) entry rather than a learned one.
    pub fixed: bool,
}

#[derive(Clone, Copy)]
struct Slot<P> {
    mac: MacAddr,
    vlan: u16,
    port: P,
    last_seen: Instant,
    /// Static: never ages, never moves, not counted against the port's limit.
    fixed: bool,
    /// The slot the key hashes to, kept so deletion does not rehash.
    home: usize,
}

enum Probe {
    Found(usize),
    Vacant(usize),
    /// No empty slot on the whole walk; impossible while `len < slots.len()`.
    Exhausted,
}

/// A bounded MAC learning table over port ids `P`, keyed by `(MAC, VLAN)`.
///
/// One open-addressing table (linear probing, backward-shift deletion, randomly keyed
/// SipHash) allocated in [`Fdb::new`] and never resized: at least two slots per entry, so
/// probes stay short and always end. Every operation takes `now`; an entry whose age has
/// reached the ageing time is treated as absent until [`Fdb::age`], a full-table
/// [`Fdb::learn`] or re-learning removes or replaces it.
pub struct Fdb<P> {
    slots: Box<[Option<Slot<P>>]>,
    /// `slots.len() - 1`; `slots.len()` is a power of two.
    mask: usize,
    len: usize,
    capacity: usize,
    aging: Duration,
    /// Secret keys of the slot hash.
    keys: (u64, u64),
    /// Bumped by every change that can alter a decision (entry added, moved or removed).
    pub(crate) gen: u64,
    /// The last decision per ingress port (modulo [`DECISION_CACHE`]), reused for the same
    /// frame addresses for `cache_for`: see [`Fdb::decide`].
    pub(crate) cache: [Option<crate::decide::Cached<P>>; DECISION_CACHE],
    /// How long a decision is reused: 1 ms, or 1/64 of the ageing time if less (how much
    /// later than exactly an entry may age).
    pub(crate) cache_for: Duration,
    /// A lower bound of the oldest `last_seen` in the table (`None` when empty). While
    /// `now - oldest < aging` no entry can be expired, so a full table refuses a new address
    /// without scanning.
    oldest: Option<Instant>,
    /// Learned entries per port index, and each port's limit (ports never given a limit are
    /// not limited).
    learned: Vec<PortLearned>,
}

/// How many addresses one port has learned, and may.
#[derive(Debug, Clone, Copy)]
struct PortLearned {
    count: u32,
    max: u32,
}

/// [`Fdb::add_static`] found no room: the table is full of live entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("forwarding table full ({capacity} entries)")]
pub struct TableFull {
    /// The table's capacity.
    pub capacity: usize,
}

impl<P> fmt::Debug for Fdb<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fdb")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("aging", &self.aging)
            .finish_non_exhaustive()
    }
}

impl<P: PortKey> Fdb<P> {
    /// A table holding at most `capacity` entries (clamped to [`MAX_CAPACITY`]) that expire
    /// after `aging`. This is the only allocation the table ever makes.
    pub fn new(capacity: usize, aging: Duration) -> Self {
        let capacity = capacity.min(MAX_CAPACITY);
        // At least 2 slots per entry: a probe always ends on an empty slot, and the load
        // factor stays at or below 1/2.
        let nslots = (capacity * 2).next_power_of_two().max(2);
        Fdb {
            slots: vec![None; nslots].into_boxed_slice(),
            mask: nslots - 1,
            len: 0,
            capacity,
            aging,
            keys: {
                let r = RandomState::new();
                (r.hash_one(0u8), r.hash_one(1u8))
            },
            oldest: None,
            gen: 0,
            cache: [None; DECISION_CACHE],
            cache_for: Duration::from_millis(1).min(aging / 64),
            learned: Vec::new(),
        }
    }

    /// Lets `port` hold at most `max` learned addresses (its static ones do not count).
    /// Allocates (off the per-frame path): call it when the port is added.
    pub fn set_port_limit(&mut self, port: P, max: u32) {
        let i = port.index();
        if i >= MAX_PORTS {
            return;
        }
        if self.learned.len() <= i {
            self.learned.resize(
                i + 1,
                PortLearned {
                    count: 0,
                    max: u32::MAX,
                },
            );
        }
        self.learned[i].max = max;
        self.gen = self.gen.wrapping_add(1);
    }

    /// Learned addresses stored for `port` (expired ones included until removed).
    pub fn learned_count(&self, port: P) -> u32 {
        self.learned.get(port.index()).map_or(0, |l| l.count)
    }

    /// Whether `port` may learn one more address.
    fn may_learn(&self, port: P) -> bool {
        self.learned
            .get(port.index())
            .is_none_or(|l| l.count < l.max)
    }

    fn count_learned(&mut self, port: P, up: bool) {
        if let Some(l) = self.learned.get_mut(port.index()) {
            l.count = if up {
                l.count.saturating_add(1)
            } else {
                l.count.saturating_sub(1)
            };
        }
    }

    /// Makes `mac` on `vlan` a static entry of `port`: it never ages, and a frame from it on
    /// any other port is refused ([`Learn::Static`]). Replaces whatever entry the address had.
    pub fn add_static(&mut self, mac: MacAddr, vlan: u16, port: P) -> Result<(), TableFull> {
        let home = self.home(&mac, vlan);
        let i = match self.probe(home, &mac, vlan) {
            Probe::Found(i) => {
                if let Some(old) = self.slots[i].as_ref().filter(|s| !s.fixed).map(|s| s.port) {
                    self.count_learned(old, false);
                }
                i
            }
            Probe::Vacant(i) if self.len < self.capacity => {
                self.len += 1;
                i
            }
            Probe::Vacant(_) | Probe::Exhausted => {
                return Err(TableFull {
                    capacity: self.capacity,
                })
            }
        };
        self.slots[i] = Some(Slot {
            mac,
            vlan,
            port,
            last_seen: Instant::now(),
            fixed: true,
            home,
        });
        self.gen = self.gen.wrapping_add(1);
        Ok(())
    }

    /// Removes the static entry of `mac` on `vlan`; true if there was one.
    pub fn remove_static(&mut self, mac: &MacAddr, vlan: u16) -> bool {
        match self.probe(self.home(mac, vlan), mac, vlan) {
            Probe::Found(i) if self.slots[i].as_ref().is_some_and(|s| s.fixed) => {
                self.remove_at(i).is_some()
            }
            _ => false,
        }
    }

    /// A table of `capacity` entries with the default ageing time of 300 s.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::new(capacity, DEFAULT_AGING_TIME)
    }

    /// Number of stored entries, including expired ones not yet removed by [`Fdb::age`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The ageing time.
    pub fn aging_time(&self) -> Duration {
        self.aging
    }

    /// Changes the ageing time; applies to existing entries at once.
    pub fn set_aging_time(&mut self, aging: Duration) {
        self.aging = aging;
    }

    /// Learns that `mac` on `vlan` lives behind `port`, as seen at `now`.
    ///
    /// A full table first drops every expired entry (so the oldest expired one, and any
    /// other, makes room); if none is expired it refuses with [`Learn::TableFull`] and the
    /// address stays unknown, which only costs flooding.
    pub fn learn(&mut self, mac: MacAddr, vlan: u16, port: P, now: Instant) -> Learn<P> {
        if !is_valid_source(&mac) {
            return Learn::InvalidMac;
        }
        let home = self.home(&mac, vlan);
        let vacant = match self.probe(home, &mac, vlan) {
            Probe::Found(i) => {
                let aging = self.aging;
                let Some(&Slot {
                    port: before,
                    last_seen,
                    fixed,
                    ..
                }) = self.slots[i].as_ref()
                else {
                    return Learn::TableFull; // unreachable: probe found it occupied
                };
                if fixed {
                    return if before == port {
                        Learn::Refreshed
                    } else {
                        Learn::Static { owner: before }
                    };
                }
                let expired = is_expired(last_seen, now, aging);
                if expired || before != port {
                    if !self.may_learn(port) {
                        return Learn::LimitReached;
                    }
                    self.count_learned(before, false);
                    self.count_learned(port, true);
                    self.gen = self.gen.wrapping_add(1);
                }
                if let Some(slot) = self.slots[i].as_mut() {
                    slot.port = port;
                    slot.last_seen = now;
                }
                self.note_seen(now);
                return if expired {
                    Learn::New
                } else if before == port {
                    Learn::Refreshed
                } else {
                    Learn::Moved { from: before }
                };
            }
            Probe::Vacant(i) => i,
            Probe::Exhausted => return Learn::TableFull,
        };
        if !self.may_learn(port) {
            return Learn::LimitReached;
        }
        let vacant = if self.len < self.capacity {
            vacant
        } else {
            if !self.may_have_expired(now) || self.age(now) == 0 {
                return Learn::TableFull;
            }
            // Removal shifted entries: find the key's vacant slot again.
            match self.probe(home, &mac, vlan) {
                Probe::Vacant(i) => i,
                // Unreachable: the key was absent and removal freed slots.
                Probe::Found(_) | Probe::Exhausted => return Learn::TableFull,
            }
        };
        self.slots[vacant] = Some(Slot {
            mac,
            vlan,
            port,
            last_seen: now,
            fixed: false,
            home,
        });
        self.len += 1;
        self.count_learned(port, true);
        self.gen = self.gen.wrapping_add(1);
        self.note_seen(now);
        Learn::New
    }

    /// The port `mac` on `vlan` was learned on, unless unknown or expired at `now`.
    pub fn lookup(&self, mac: &MacAddr, vlan: u16, now: Instant) -> Option<P> {
        match self.probe(self.home(mac, vlan), mac, vlan) {
            Probe::Found(i) => self.slots[i]
                .as_ref()
                .filter(|s| s.fixed || !is_expired(s.last_seen, now, self.aging))
                .map(|s| s.port),
            Probe::Vacant(_) | Probe::Exhausted => None,
        }
    }

    /// Removes one entry; returns its port if it was stored (expired or not).
    pub fn remove(&mut self, mac: &MacAddr, vlan: u16) -> Option<P> {
        match self.probe(self.home(mac, vlan), mac, vlan) {
            Probe::Found(i) => self.remove_at(i).map(|s| s.port),
            Probe::Vacant(_) | Probe::Exhausted => None,
        }
    }

    /// Removes every entry expired at `now`; returns how many.
    pub fn age(&mut self, now: Instant) -> usize {
        let aging = self.aging;
        self.retain(|s| s.fixed || !is_expired(s.last_seen, now, aging))
    }

    /// Removes every learned entry pointing at `port` (the port went down); its static
    /// entries stay. Returns how many.
    pub fn flush_port(&mut self, port: P) -> usize {
        self.retain(|s| s.fixed || s.port != port)
    }

    /// Removes every entry of `port`, static ones too, and its limit (the port is gone).
    pub fn forget_port(&mut self, port: P) -> usize {
        let n = self.retain(|s| s.port != port);
        if let Some(l) = self.learned.get_mut(port.index()) {
            *l = PortLearned {
                count: 0,
                max: u32::MAX,
            };
        }
        n
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.len = 0;
        self.learned.iter_mut().for_each(|l| l.count = 0);
        self.gen = self.gen.wrapping_add(1);
        self.oldest = None;
    }

    /// The entries live at `now`, in table order (unspecified).
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = FdbEntry<P>> + '_ {
        let aging = self.aging;
        self.slots.iter().filter_map(move |s| {
            s.as_ref()
                .filter(|s| s.fixed || !is_expired(s.last_seen, now, aging))
                .map(|s| FdbEntry {
                    mac: s.mac,
                    vlan: s.vlan,
                    port: s.port,
                    age: if s.fixed {
                        Duration::ZERO
                    } else {
                        now.saturating_duration_since(s.last_seen)
                    },
                    fixed: s.fixed,
                })
        })
    }

    fn home(&self, mac: &MacAddr, vlan: u16) -> usize {
        let key = mac.to_u64() | u64::from(vlan) << 48;
        // fmix64 (MurmurHash3's finalizer) over the key xor-ed with the secrets.
        let mut h = key ^ self.keys.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= (h >> 33) ^ self.keys.1;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        // `mask` fits in u64 and the masked value fits in usize.
        usize::try_from(h & self.mask as u64).unwrap_or(0)
    }

    /// Walks the probe chain from `home`. Ends on the key or on an empty slot; there is always
    /// one since `len <= capacity < slots.len()`, and the walk is bounded by the table size
    /// regardless.
    fn probe(&self, home: usize, mac: &MacAddr, vlan: u16) -> Probe {
        let mut i = home & self.mask;
        for _ in 0..self.slots.len() {
            match &self.slots[i] {
                None => return Probe::Vacant(i),
                Some(s) if s.vlan == vlan && s.mac == *mac => return Probe::Found(i),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        Probe::Exhausted
    }

    /// Empties slot `i` and shifts the rest of its cluster back so every entry stays reachable
    /// from its home slot (backward-shift deletion for linear probing).
    fn remove_at(&mut self, i: usize) -> Option<Slot<P>> {
        let removed = self.slots[i].take()?;
        self.len -= 1;
        if !removed.fixed {
            self.count_learned(removed.port, false);
        }
        self.gen = self.gen.wrapping_add(1);
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        while let Some(s) = &self.slots[j] {
            // The entry at `j` may fill the hole if the hole lies on its probe path, i.e.
            // cyclically within [home, j].
            let from_home = j.wrapping_sub(s.home) & self.mask;
            let from_hole = j.wrapping_sub(hole) & self.mask;
            if from_hole <= from_home {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        if self.len == 0 {
            self.oldest = None;
        }
        Some(removed)
    }

    /// Removes the entries for which `keep` is false; returns how many. Recomputes the
    /// exact `oldest` bound on the way.
    fn retain(&mut self, mut keep: impl FnMut(&Slot<P>) -> bool) -> usize {
        let mut removed = 0;
        let mut oldest: Option<Instant> = None;
        let mut i = 0;
        while i < self.slots.len() {
            match &self.slots[i] {
                Some(s) if !keep(s) => {
                    // Backward shift may move a not yet visited entry into `i`: look at
                    // `i` again. An entry can also wrap around to the end of the table and
                    // be visited twice, which is harmless.
                    self.remove_at(i);
                    removed += 1;
                }
                Some(s) => {
                    if !s.fixed {
                        oldest = Some(oldest.map_or(s.last_seen, |o| o.min(s.last_seen)));
                    }
                    i += 1;
                }
                None => i += 1,
            }
        }
        self.oldest = oldest;
        removed
    }

    fn note_seen(&mut self, now: Instant) {
        self.oldest = Some(self.oldest.map_or(now, |o| o.min(now)));
    }

    fn may_have_expired(&self, now: Instant) -> bool {
        self.oldest
            .is_some_and(|oldest| is_expired(oldest, now, self.aging))
    }
}

fn is_expired(last_seen: Instant, now: Instant, aging: Duration) -> bool {
    now.saturating_duration_since(last_seen) >= aging
}

#[cfg(test)]
mod tests;
