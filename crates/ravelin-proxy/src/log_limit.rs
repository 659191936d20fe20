//! A log-line budget: at most N lines per second per limiter, then one summary line with the
//! number suppressed. Error reporting must not be able to eat the machine (18 November: the
//! panic reports enriched with debug data burned CPU of their own).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// See the module docs. Lock-free; approximate at window edges, which is fine for logs.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    base: Instant,
    per_second: u32,
    window: AtomicU64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            base: Instant::now(),
            per_second,
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now; `n` lines were suppressed since the last one
    /// written (report it in that line). `None`: stay quiet.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = self.base.elapsed().as_secs();
        let window = self.window.load(Ordering::Relaxed);
        if now != window
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_lines_within_a_window() {
        let limiter = LogLimiter::new(5);
        let admitted = (0..10_000).filter(|_| limiter.admit().is_some()).count();
        // All 10,000 calls land in at most a couple of one-second windows.
        assert!(admitted <= 15, "{admitted}");
        assert!(admitted >= 5);
    }
}
