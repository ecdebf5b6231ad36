//! A port's policy as one worker applies it: port security, VLAN, MTU, and its share of
//! the port's rate limits as token buckets.

use std::time::{Duration, Instant};

use switch::{PortSecurity, TokenBucket, VlanMode};

use crate::types::{Limit, PortPolicy, MAX_FRAME};

/// How much a bucket holds beyond its rate: 10 ms worth, and at least one largest frame
/// (bytes) or 32 frames.
const BURST_TIME: Duration = Duration::from_millis(10);

/// A bytes and a frames bucket; a frame passes when both have room.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buckets {
    bytes: Option<TokenBucket>,
    frames: Option<TokenBucket>,
}

/// The part of a port one worker serves: `here` of its `of` queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    pub here: u64,
    pub of: u64,
}

impl Share {
    /// All of it.
    #[cfg(test)]
    pub const ALL: Share = Share { here: 1, of: 1 };

    /// This worker's part of `rate` (at least 1).
    fn of_rate(self, rate: u64) -> u64 {
        let v = u128::from(rate) * u128::from(self.here) / u128::from(self.of.max(1));
        u64::try_from(v).unwrap_or(u64::MAX).max(1)
    }
}

fn burst(rate: u64, min: u64) -> u64 {
    let per_burst = u128::from(rate) * BURST_TIME.as_micros() / 1_000_000;
    u64::try_from(per_burst).unwrap_or(u64::MAX).max(min)
}

impl Buckets {
    /// `share` of `limit` (this worker's part of the port).
    fn new(limit: Limit, share: Share, now: Instant) -> Buckets {
        let max_frame = u64::try_from(MAX_FRAME).unwrap_or(u64::MAX);
        Buckets {
            bytes: limit.mbit.map(|m| {
                let rate = share.of_rate(m.saturating_mul(1_000_000) / 8);
                TokenBucket::new(rate, burst(rate, max_frame), now)
            }),
            frames: limit.kpps.map(|k| {
                let rate = share.of_rate(k.saturating_mul(1000));
                TokenBucket::new(rate, burst(rate, 32), now)
            }),
        }
    }

    #[inline]
    pub fn is_set(&self) -> bool {
        self.bytes.is_some() || self.frames.is_some()
    }

    /// Takes a frame of `len` bytes if both buckets have room; else nothing.
    #[inline(always)]
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        self.admit_many(1, || len, now).is_some()
    }

    /// Takes `frames` frames of `bytes()` bytes in all if both buckets have room for all
    /// of them, and says how many bytes it took (0 without a bytes limit: `bytes` is not
    /// called); else takes nothing (the caller goes frame by frame). A burst under its
    /// limits pays one bucket update, not one per frame.
    #[inline(always)]
    pub fn admit_many(
        &mut self,
        frames: usize,
        bytes: impl FnOnce() -> usize,
        now: Instant,
    ) -> Option<usize> {
        let frames = u64::try_from(frames).unwrap_or(u64::MAX);
        let bytes = self.bytes.is_some().then(bytes).unwrap_or(0);
        let b64 = u64::try_from(bytes).unwrap_or(u64::MAX);
        if let Some(b) = &mut self.bytes {
            if b.wait_for(b64, now) > Duration::ZERO {
                return None;
            }
        }
        if let Some(f) = &mut self.frames {
            if !f.take(frames, now) {
                return None;
            }
        }
        if let Some(b) = &mut self.bytes {
            b.take(b64, now);
        }
        Some(bytes)
    }

    /// Puts back what [`admit_many`](Self::admit_many) took for frames that did not go.
    #[inline]
    pub fn give_back(&mut self, frames: usize, bytes: usize) {
        if let Some(b) = &mut self.bytes {
            b.give_back(u64::try_from(bytes).unwrap_or(u64::MAX));
        }
        if let Some(f) = &mut self.frames {
            f.give_back(u64::try_from(frames).unwrap_or(u64::MAX));
        }
    }

    /// How long until a frame of `len` bytes would pass.
    pub fn wait(&mut self, len: usize, now: Instant) -> Duration {
        let b = self.bytes.as_mut().map_or(Duration::ZERO, |b| {
            b.wait_for(u64::try_from(len).unwrap_or(u64::MAX), now)
        });
        let f = self
            .frames
            .as_mut()
            .map_or(Duration::ZERO, |f| f.wait_for(1, now));
        b.max(f)
    }
}

/// A port's policy on one worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    pub security: Option<PortSecurity>,
    pub vlan: VlanMode,
    /// Largest IP packet delivered to the port.
    pub mtu: Option<usize>,
    pub ingress: Buckets,
    pub egress: Buckets,
    /// Frames flooded from the port (broadcast, multicast, unknown unicast).
    pub flood: Option<TokenBucket>,
}

impl Policy {
    /// `p` on a worker that serves `ingress` of what the port sends and `egress` of what it
    /// receives.
    pub fn new(p: &PortPolicy, ingress: Share, egress: Share, now: Instant) -> Policy {
        Policy {
            security: p.security.clone(),
            vlan: p.vlan.clone(),
            mtu: p.mtu.map(usize::from),
            ingress: Buckets::new(p.ingress, ingress, now),
            egress: Buckets::new(p.egress, egress, now),
            flood: p.flood_kpps.map(|k| {
                let rate = ingress.of_rate(k.saturating_mul(1000));
                TokenBucket::new(rate, burst(rate, 32), now)
            }),
        }
    }

    /// A frame may be flooded from the port now.
    pub fn admit_flood(&mut self, now: Instant) -> bool {
        self.flood.as_mut().is_none_or(|b| b.take(1, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_both_or_nothing() {
        let t0 = Instant::now();
        let limit = Limit {
            mbit: Some(8), // 1 MB/s: 10 ms burst is 10 kB, raised to one max frame
            kpps: Some(1), // 1000/s: 10 frames, raised to 32
        };
        let mut b = Buckets::new(limit, Share::ALL, t0);
        let mut n = 0;
        while b.admit(100, t0) {
            n += 1;
        }
        assert_eq!(n, 32, "frames bucket empties first");
        assert!(b.wait(100, t0) > Duration::ZERO);
        // Half the port on this worker: half the rate.
        let mut half = Buckets::new(
            Limit {
                mbit: None,
                kpps: Some(10),
            },
            Share { here: 1, of: 2 },
            t0,
        );
        let mut passed = 0;
        for ms in 0..=1000u64 {
            while half.admit(64, t0 + Duration::from_millis(ms)) {
                passed += 1;
            }
        }
        assert_eq!(passed, 5000 + 50);
        assert!(!Buckets::default().is_set());
        // Many at once: all or nothing, and what did not go can be given back.
        let mut b = Buckets::new(limit, Share::ALL, t0);
        assert_eq!(b.admit_many(30, || 3000, t0), Some(3000));
        assert_eq!(b.admit_many(3, || 300, t0), None, "2 frames left, not 3");
        assert_eq!(b.admit_many(2, || 200, t0), Some(200));
        b.give_back(10, 1000);
        assert_eq!(b.admit_many(10, || 1000, t0), Some(1000));
        assert!(!b.admit(100, t0));
        // Without a bytes limit the bytes are not counted.
        let mut f = Buckets::new(
            Limit {
                mbit: None,
                kpps: Some(1),
            },
            Share::ALL,
            t0,
        );
        assert_eq!(f.admit_many(32, || unreachable!(), t0), Some(0));
        assert_eq!(Buckets::default().admit_many(usize::MAX, || 0, t0), Some(0));
        assert!(Buckets::default().admit(1_000_000, t0));
    }
}
