//! Rate-limited warnings: a peer that misbehaves in a loop (reconnects with a protocol
//! error, breaks its rings again and again, retries a refused connection) must not flood
//! the log. Each source gets a few lines per window; the first line after a quiet spell
//! says how many were suppressed. Time is a parameter.

use std::time::{Duration, Instant};

/// Lines allowed per window.
pub const LINES_PER_WINDOW: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The budget of one log source.
#[derive(Debug, Clone, Default)]
pub struct LogLimit {
    window: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

impl LogLimit {
    /// Whether a line may be logged at `now`: `Some(n)` with the number of lines
    /// suppressed since the last one logged (to mention when non-zero), `None` to stay
    /// quiet (counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if fresh {
            self.window = Some(now);
            self.lines = 0;
        }
        if self.lines < LINES_PER_WINDOW {
            self.lines += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// ` (N similar lines suppressed)` for a non-zero count, else nothing.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar line(s) suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_the_next_window_reports_it() {
        let t0 = Instant::now();
        let mut l = LogLimit::default();
        let logged = (0..100).filter(|_| l.allow(t0).is_some()).count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        assert_eq!(
            l.allow(t0 + WINDOW),
            Some(100 - u64::from(LINES_PER_WINDOW))
        );
        assert_eq!(l.allow(t0 + WINDOW), Some(0));
        assert_eq!(suppressed_note(3), " (3 similar line(s) suppressed)");
    }
}
