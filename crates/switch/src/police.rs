//! Token buckets for rate limits and storm control: a rate, a burst, time as a parameter.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, holding at most `burst`. Tokens are bytes or
/// frames, as the caller counts them.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens per second.
    rate: u64,
    /// Most tokens held.
    burst: u64,
    /// Tokens held, in millionths (so slow rates refill smoothly).
    micro: u64,
    /// When `micro` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, refilled at `rate` per second.
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            micro: burst.saturating_mul(1_000_000),
            last: now,
        }
    }

    /// Tokens per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    #[inline(always)]
    fn refill(&mut self, now: Instant) {
        // Frames of one burst share `now`: one subtraction per burst, not per frame.
        if now > self.last {
            self.refill_since(now);
        }
    }

    #[inline(never)]
    fn refill_since(&mut self, now: Instant) {
        let ns = now.duration_since(self.last).as_nanos();
        self.last = now;
        // rate tokens/s = rate micro-tokens/us = rate/1000 micro-tokens/ns (what is lost to
        // the division is under a millionth of a token).
        let add =
            u64::try_from(ns.saturating_mul(u128::from(self.rate)) / 1000).unwrap_or(u64::MAX);
        self.micro = self
            .micro
            .saturating_add(add)
            .min(self.burst.saturating_mul(1_000_000));
    }

    /// Takes `n` tokens if the bucket holds them at `now`; false (nothing taken) if not.
    ///
    /// The bucket is refilled only when what it holds falls short: a port far under its
    /// limit pays a comparison per call, not a reading of the time. Tokens earned since
    /// the last refill are all added then (up to the burst), so over any span what passes
    /// is still at most the burst and the rate times the span.
    #[inline(always)]
    pub fn take(&mut self, n: u64, now: Instant) -> bool {
        let need = n.saturating_mul(1_000_000);
        if !self.holds(need, now) {
            return false;
        }
        self.micro -= need;
        true
    }

    /// Whether the bucket holds `need` millionths of tokens at `now`, refilling it first
    /// only if what it holds falls short.
    #[inline(always)]
    fn holds(&mut self, need: u64, now: Instant) -> bool {
        if self.micro < need {
            self.refill(now);
        }
        self.micro >= need
    }

    /// Puts back `n` tokens taken for frames that then did not go (capped at the burst).
    #[inline]
    pub fn give_back(&mut self, n: u64) {
        self.micro = self
            .micro
            .saturating_add(n.saturating_mul(1_000_000))
            .min(self.burst.saturating_mul(1_000_000));
    }

    /// How long until `n` tokens are there (zero if they are now).
    #[inline]
    pub fn wait_for(&mut self, n: u64, now: Instant) -> Duration {
        let need = n.saturating_mul(1_000_000);
        if self.holds(need, now) || self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros((need - self.micro).div_ceil(self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, t0);
        // The burst is there at once, then nothing.
        assert!(b.take(100, t0));
        assert!(!b.take(1, t0));
        // 1000/s: 10 ms brings 10 tokens.
        let t1 = t0 + Duration::from_millis(10);
        assert!(b.take(10, t1));
        assert!(!b.take(1, t1));
        assert_eq!(b.wait_for(5, t1), Duration::from_millis(5));
        // Idle long: capped at the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert!(b.take(100, t2));
        assert!(!b.take(1, t2));
        // Over two seconds, what passes is rate * time + burst.
        let mut b = TokenBucket::new(1000, 10, t0);
        let mut passed = 0;
        for ms in 0..=2000u64 {
            let now = t0 + Duration::from_millis(ms);
            while b.take(1, now) {
                passed += 1;
            }
        }
        assert_eq!(passed, 2000 + 10);
        // Calls less than a microsecond apart lose no time.
        let mut b = TokenBucket::new(1_000_000, 2, t0);
        let mut passed = 0;
        for ns in (0..=10_000u64).step_by(300) {
            passed += u32::from(b.take(1, t0 + Duration::from_nanos(ns)));
        }
        assert_eq!(
            passed,
            2 + 9,
            "the burst, then one per microsecond (9.9 us)"
        );
        // A time going backwards refills nothing.
        let mut b = TokenBucket::new(1000, 1, t1);
        assert!(b.take(1, t1));
        assert!(!b.take(1, t0));
    }

    #[test]
    fn give_back_restores_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 10, t0);
        assert!(b.take(8, t0));
        assert!(!b.take(3, t0));
        b.give_back(5);
        assert!(b.take(7, t0), "2 left and 5 given back");
        assert!(!b.take(1, t0));
        // Never more than the burst, whatever is given back.
        b.give_back(1_000);
        assert!(b.take(10, t0));
        assert!(!b.take(1, t0));
    }
}
