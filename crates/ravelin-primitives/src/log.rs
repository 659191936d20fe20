//! Rate-limited error reporting: a failure storm must not become a logging storm.
//!
//! On 18 November 2025 the error reporting that enriched every panic with debug data burned CPU
//! on top of the outage. [`LogLimiter`] bounds how many lines a source may write per window and
//! counts what it held back, so the next line that is written can say how much was suppressed.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock, Nanos};

/// A clock shared by a [`LogLimiter`] and whatever else reads the same time.
type SharedClock = Arc<dyn Clock<Instant = Nanos>>;

/// Bits of the packed state holding the number of lines written in the current window.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// The most lines a window can allow (the count field's capacity).
const MAX_LINES: u32 = (1 << COUNT_BITS) - 1;
/// The window index lives in the remaining 40 bits and is compared with wrapping arithmetic.
const INDEX_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;
/// Half the index space: a difference this large or larger is read as "in the past".
const INDEX_HALF: u64 = 1 << (63 - COUNT_BITS);
/// The shortest window: with 40 bits of index, wrapping comparisons stay right for 17 years.
const MIN_WINDOW: Duration = Duration::from_millis(1);

/// Allows at most `max_lines` log lines per window (e.g. 5 per second) from one source and
/// counts the rest.
///
/// Lock-free: one atomic read-modify-write per call, plus a clock read. Cheap enough for every
/// failure of a guard, not meant for the success path (nothing should log there).
///
/// A summary of what was held back rides on the next permitted line:
/// [`LogPermit::suppressed`] is the number of calls suppressed since the previous permitted one.
/// Write it as a field of your line or as one summary line of its own; a burst of any size then
/// costs at most `max_lines + 1` lines per window.
///
/// ```
/// use ravelin_primitives::{LogLimiter, clock::ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = LogLimiter::per_second(2).with_clock(clock.clone());
/// let mut written = 0;
/// for _ in 0..10_000 {
///     if let Some(permit) = limiter.check() {
///         if permit.suppressed() > 0 {
///             tracing::warn!(suppressed = permit.suppressed(), "similar messages suppressed");
///         }
///         tracing::warn!("redis unreachable");
///         written += 1;
///     }
/// }
/// assert_eq!(written, 2);
///
/// clock.advance(Duration::from_secs(1));
/// let permit = limiter.check().unwrap();
/// assert_eq!(permit.suppressed(), 9_998);
/// ```
pub struct LogLimiter {
    max_lines: u32,
    window_nanos: u64,
    window: Duration,
    origin: Nanos,
    clock: SharedClock,
    /// `window index << COUNT_BITS | lines written in that window`.
    state: AtomicU64,
    /// Suppressed since the last permitted line.
    suppressed: AtomicU64,
    /// Suppressed since creation.
    suppressed_total: AtomicU64,
}

/// Permission to write one line; see [`LogLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a permit means the caller should write its line"]
pub struct LogPermit {
    suppressed: u64,
}

impl LogPermit {
    /// Lines suppressed since the previous permitted line (0 when nothing was held back).
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

// === impl LogLimiter ===

impl LogLimiter {
    /// At most `max_lines` per `window`. `max_lines` is capped at 16,777,215 and `window` is
    /// at least one millisecond.
    pub fn new(max_lines: u32, window: Duration) -> Self {
        let clock: SharedClock = Arc::new(MonotonicClock::new());
        let window_nanos = Nanos::from_duration(window.max(MIN_WINDOW)).as_u64();
        Self {
            max_lines: max_lines.min(MAX_LINES),
            window_nanos,
            window: Duration::from_nanos(window_nanos),
            origin: clock.now(),
            clock,
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            suppressed_total: AtomicU64::new(0),
        }
    }

    /// At most `max_lines` per second.
    pub fn per_second(max_lines: u32) -> Self {
        Self::new(max_lines, Duration::from_secs(1))
    }

    /// Uses `clock` instead of the default [`MonotonicClock`] (tests: a
    /// [`ManualClock`](crate::clock::ManualClock), or a `TokioClock` under paused time).
    pub fn with_clock(mut self, clock: impl Clock<Instant = Nanos>) -> Self {
        self.clock = Arc::new(clock);
        self.origin = self.clock.now();
        self.state = AtomicU64::new(0);
        self
    }

    /// Like [`with_clock`](Self::with_clock) for an already shared clock.
    pub fn with_shared_clock(mut self, clock: Arc<dyn Clock<Instant = Nanos>>) -> Self {
        self.origin = clock.now();
        self.clock = clock;
        self.state = AtomicU64::new(0);
        self
    }

    /// Lines allowed per window.
    pub fn max_lines(&self) -> u32 {
        self.max_lines
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether the caller may write a line now. `None`: stay quiet (the call is counted as
    /// suppressed).
    pub fn check(&self) -> Option<LogPermit> {
        let since = self
            .clock
            .now()
            .as_u64()
            .saturating_sub(self.origin.as_u64());
        let now_window = (since / self.window_nanos) & INDEX_MASK;
        let now_tag = now_window << COUNT_BITS;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let current_window = current >> COUNT_BITS;
            // A thread that read the clock just before another one opened the next window sees
            // a window "in the past": it counts against the newer window instead of reopening
            // its own.
            let ahead = now_window.wrapping_sub(current_window) & INDEX_MASK;
            let same_window = ahead == 0 || ahead >= INDEX_HALF;
            let count = current & COUNT_MASK;
            let next = if same_window {
                if count >= u64::from(self.max_lines) {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    self.suppressed_total.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current + 1
            } else if self.max_lines == 0 {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                self.suppressed_total.fetch_add(1, Ordering::Relaxed);
                return None;
            } else {
                now_tag | 1
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(LogPermit {
                        suppressed: self.suppressed.swap(0, Ordering::Relaxed),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Calls suppressed since the last permitted line, not yet reported.
    pub fn pending_suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    /// Calls suppressed since creation.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for LogLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLimiter")
            .field("max_lines", &self.max_lines)
            .field("window", &self.window)
            .field("pending_suppressed", &self.pending_suppressed())
            .field("suppressed_total", &self.suppressed_total())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use proptest::prelude::*;

    #[test]
    fn allows_max_lines_per_window_then_reports_suppressed() {
        let clock = ManualClock::new();
        let limiter = LogLimiter::per_second(3).with_clock(clock.clone());
        let permits: Vec<_> = (0..10).filter_map(|_| limiter.check()).collect();
        assert_eq!(permits.len(), 3);
        assert!(permits.iter().all(|p| p.suppressed() == 0));
        assert_eq!(limiter.pending_suppressed(), 7);

        clock.advance(Duration::from_millis(999));
        assert!(limiter.check().is_none());

        clock.advance(Duration::from_millis(1));
        assert_eq!(limiter.check().unwrap().suppressed(), 8);
        assert_eq!(limiter.check().unwrap().suppressed(), 0);
        assert_eq!(limiter.suppressed_total(), 8);
    }

    #[test]
    fn zero_lines_suppresses_everything() {
        let limiter = LogLimiter::per_second(0);
        assert!((0..100).all(|_| limiter.check().is_none()));
        assert_eq!(limiter.suppressed_total(), 100);
    }

    #[test]
    fn concurrent_callers_share_the_budget() {
        let limiter = LogLimiter::new(50, Duration::from_secs(3600));
        let allowed = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if limiter.check().is_some() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        // An hour-long window cannot roll over during the test.
        assert_eq!(allowed.load(Ordering::Relaxed), 50);
        assert_eq!(limiter.suppressed_total(), 40_000 - 50);
    }

    proptest! {
        /// Against a naive model: per window, the first `max` calls are permitted, and each
        /// permit carries the number of suppressed calls since the previous permit.
        #[test]
        fn matches_a_naive_model(
            max in 0u32..5,
            steps in proptest::collection::vec(0u64..1500, 1..200),
        ) {
            let clock = ManualClock::new();
            let limiter = LogLimiter::per_second(max).with_clock(clock.clone());
            let mut model_window = 0u64;
            let mut model_count = 0u32;
            let mut model_suppressed = 0u64;
            let mut now_ms = 0u64;
            for step in steps {
                clock.advance(Duration::from_millis(step));
                now_ms += step;
                let window = now_ms / 1000;
                if window != model_window {
                    model_window = window;
                    model_count = 0;
                }
                let expected = if model_count < max {
                    model_count += 1;
                    Some(std::mem::take(&mut model_suppressed))
                } else {
                    model_suppressed += 1;
                    None
                };
                prop_assert_eq!(limiter.check().map(|p| p.suppressed()), expected);
            }
        }
    }
}
