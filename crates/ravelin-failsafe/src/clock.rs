//! Injectable time for the circuit breaker and the log limiter.
//!
//! The data plane never sleeps on these clocks; it only compares instants. Tests drive them by
//! hand ([`ManualClock`]) or through Tokio's paused time ([`TokioClock`]), so no test waits for
//! real time to pass.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic source of instants.
///
/// Read only off the success path (breaker cooldowns, log windows), so a `dyn Clock` call costs
/// nothing that matters.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant. Must never go backwards.
    fn now(&self) -> Instant;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// The operating system's monotonic clock ([`Instant::now`]). The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Tokio's clock ([`tokio::time::Instant::now`]): follows `tokio::time::pause()` and
/// `advance()` in tests, the system clock otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use ravelin_failsafe::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now() - t0, Duration::from_secs(30));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    base: Instant,
    offset_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at the moment of its creation.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward by `by` (saturating after about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// How far the clock has been advanced since its creation.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::Acquire))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let offset = self.elapsed();
        self.base.checked_add(offset).unwrap_or(self.base)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

/// What measures a guard's time budget (and the duration histogram) on the request path.
///
/// By default the CPU's time-stamp counter read through `quanta` (as ravelin-ratelimit's clock
/// and governor do): a few nanoseconds per read where `Instant::now()` (a vDSO
/// `clock_gettime`) costs about 20 ns on the project's benchmark VM, and every evaluation reads
/// it twice. `quanta` falls back to the OS monotonic clock where the counter is not invariant.
/// When the layer was given a clock ([`GuardLayer::clock`](crate::GuardLayer::clock)), the
/// budget is measured on that clock instead, so tests can make a guard overrun by advancing a
/// [`ManualClock`] inside it.
#[derive(Clone)]
pub(crate) enum Stopwatch {
    /// The time-stamp counter; marks are raw counter values.
    Counter(quanta::Clock),
    /// The injected clock; marks are nanoseconds since `origin`.
    Injected {
        clock: Arc<dyn Clock>,
        origin: Instant,
    },
}

impl Stopwatch {
    /// A stopwatch on the time-stamp counter.
    pub(crate) fn counter() -> Self {
        Stopwatch::Counter(quanta::Clock::new())
    }

    /// A stopwatch on an injected clock.
    pub(crate) fn injected(clock: Arc<dyn Clock>) -> Self {
        let origin = clock.now();
        Stopwatch::Injected { clock, origin }
    }

    /// The current mark: one clock read.
    #[inline]
    pub(crate) fn mark(&self) -> u64 {
        match self {
            Stopwatch::Counter(clock) => clock.raw(),
            Stopwatch::Injected { clock, origin } => nanos_since(*origin, clock.now()),
        }
    }

    /// The time between two marks (zero if `end` reads before `start`, as counters of two
    /// cores may by a few nanoseconds).
    #[inline]
    pub(crate) fn between(&self, start: u64, end: u64) -> Duration {
        match self {
            Stopwatch::Counter(clock) => Duration::from_nanos(clock.delta_as_nanos(start, end)),
            Stopwatch::Injected { .. } => Duration::from_nanos(end.saturating_sub(start)),
        }
    }
}

impl fmt::Debug for Stopwatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopwatch::Counter(_) => f.write_str("Stopwatch::Counter"),
            Stopwatch::Injected { clock, .. } => {
                f.debug_tuple("Stopwatch::Injected").field(clock).finish()
            }
        }
    }
}

/// Nanoseconds since `origin`, saturating: how the breaker and the log limiter keep instants in
/// atomics.
pub(crate) fn nanos_since(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// A duration in nanoseconds, saturating.
pub(crate) fn as_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
