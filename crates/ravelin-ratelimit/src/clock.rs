//! Injectable time: limiters read a monotonic nanosecond count through [`Clock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic source of nanoseconds for GCRA.
///
/// Only differences matter; the origin is arbitrary. A clock that steps backwards is tolerated:
/// decisions become stricter, never more lenient (see [`Quota::decide`](crate::Quota::decide)).
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the clock's origin.
    fn now_nanos(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

/// The process's monotonic clock, counted from the clock's creation.
///
/// It reads the CPU's time-stamp counter through [`quanta`] where that counter is invariant (as
/// governor does), falling back to the OS monotonic clock. `std::time::Instant::now()` would cost
/// ~30 ns here and, being a serialising `clock_gettime`, stops the CPU from overlapping a
/// limiter's cache misses with the next request's: in the 1M-key benchmark that doubled the cost
/// of a check. Cores whose counters disagree by a few nanoseconds look like a clock stepping back,
/// which GCRA tolerates (decisions get stricter by that much).
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    clock: quanta::Clock,
    origin: u64,
}

impl MonotonicClock {
    /// A clock whose origin is now. The first clock in a process calibrates the counter against
    /// the OS clock (a few milliseconds, once).
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Self { clock, origin }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // Saturates at zero should a core's counter read below the origin.
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }
}

/// A clock moved by hand, for tests. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use ravelin_ratelimit::{Clock, FakeClock};
///
/// let clock = FakeClock::new();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_nanos(), 2_000_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    nanos: Arc<AtomicU64>,
}

impl FakeClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `nanos`, which may be in the past (to test clocks that step back).
    pub fn set_nanos(&self, nanos: u64) {
        self.nanos.store(nanos, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}
