//! What measures a guard's time budget. The clocks themselves are ravelin-primitives' one
//! [`Clock`] abstraction (re-exported at the crate root).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ravelin_primitives::clock::{Clock, MonotonicClock, Nanos};

/// A monotonic clock shared by a guard's breaker, log limiter and (when injected) budget.
pub(crate) type SharedClock = Arc<dyn Clock<Instant = Nanos>>;

/// What measures a guard's time budget (and the duration histogram) on the request path.
///
/// By default the CPU's time-stamp counter, read through `quanta` by [`MonotonicClock`] (as
/// ravelin-ratelimit's limiters and governor do): a few nanoseconds per read where
/// `Instant::now()` (a vDSO `clock_gettime`) costs about 20 ns on the project's benchmark VM,
/// and every evaluation reads it twice. `quanta` falls back to the OS monotonic clock where the
/// counter is not invariant. The default is held by value, not behind `dyn`, so the two reads
/// inline, and marks are raw counter values ([`MonotonicClock::ticks`]) scaled to a duration
/// once per evaluation. When the layer was given a clock
/// ([`GuardLayerBuilder::clock`](crate::GuardLayerBuilder::clock)), the budget is measured on
/// that clock instead, so tests can make a guard overrun by advancing a
/// [`ManualClock`](crate::ManualClock) inside it.
#[derive(Clone)]
pub(crate) enum Stopwatch {
    /// The time-stamp counter; marks are raw counter values ([`MonotonicClock::ticks`]).
    Counter(MonotonicClock),
    /// The injected clock; marks are its [`Nanos`] as numbers.
    Injected(SharedClock),
}

impl Stopwatch {
    /// A stopwatch on the time-stamp counter.
    pub(crate) fn counter() -> Self {
        Stopwatch::Counter(MonotonicClock::new())
    }

    /// A stopwatch on an injected clock.
    pub(crate) fn injected(clock: SharedClock) -> Self {
        Stopwatch::Injected(clock)
    }

    /// The current mark: one clock read. Its unit is the stopwatch's own (a stopwatch never
    /// changes clock), so marks are only compared by the stopwatch that took them.
    #[inline]
    pub(crate) fn mark(&self) -> u64 {
        match self {
            Stopwatch::Counter(clock) => clock.ticks(),
            Stopwatch::Injected(clock) => clock.now().as_u64(),
        }
    }

    /// The time between two marks of this stopwatch (zero if `end` reads before `start`, as
    /// counters of two cores may by a few nanoseconds).
    #[inline]
    pub(crate) fn between(&self, start: u64, end: u64) -> Duration {
        match self {
            Stopwatch::Counter(clock) => clock.between(start, end),
            Stopwatch::Injected(_) => Nanos::new(end) - Nanos::new(start),
        }
    }
}

impl fmt::Debug for Stopwatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopwatch::Counter(_) => f.write_str("Stopwatch::Counter"),
            Stopwatch::Injected(clock) => {
                f.debug_tuple("Stopwatch::Injected").field(clock).finish()
            }
        }
    }
}
