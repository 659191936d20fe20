//! One clock abstraction for every crate, after governor's `clock` module: a [`Clock`] names the
//! kind of instant it reads ([`Clock::Instant`]), and every implementation — the fast monotonic
//! clock, the Tokio clock, the wall clock and the test clock — plugs into the same trait.
//!
//! | clock | `Instant` | for |
//! |---|---|---|
//! | [`MonotonicClock`] | [`Nanos`] | the data plane: GCRA, guard budgets, breakers, log windows (a TSC read, a few ns) |
//! | [`TokioClock`] (feature `tokio`) | [`Nanos`] | tests under `tokio::time::pause()` |
//! | [`WallClock`] | [`SystemTime`] | HTTP freshness, which compares `Date`/`Expires` (wall-clock times) |
//! | [`ManualClock<I>`] | `I` | tests: moves only when told to; clones share one time |
//!
//! The data plane never sleeps on these clocks; it only compares instants. Tests drive them by
//! hand ([`ManualClock`]) or through Tokio's paused time ([`TokioClock`]), so no test waits for
//! real time to pass.
//!
//! ```
//! use std::time::Duration;
//! use ravelin_primitives::clock::{Clock, ManualClock, Nanos};
//!
//! /// Generic over the clock, as the limiters and breakers are.
//! fn age<C: Clock<Instant = Nanos>>(clock: &C, born: Nanos) -> Duration {
//!     clock.now() - born
//! }
//!
//! let clock = ManualClock::new();
//! let born = clock.now();
//! clock.advance(Duration::from_secs(3));
//! assert_eq!(age(&clock, born), Duration::from_secs(3));
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

// === Clock ===

/// A source of instants of one kind ([`Clock::Instant`]).
///
/// Implementations are cheap to read and never block. Monotonic clocks (`Instant = `[`Nanos`])
/// must not go backwards, except where documented ([`ManualClock::set`] may step back, to test
/// how a consumer tolerates it). Share one clock as `Arc<dyn Clock<Instant = Nanos>>`; `Arc<C>`
/// is itself a clock.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// What this clock reads: [`Nanos`] for monotonic clocks, [`SystemTime`] for wall clocks.
    type Instant: Reference;

    /// The current instant.
    fn now(&self) -> Self::Instant;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    type Instant = C::Instant;

    #[inline]
    fn now(&self) -> Self::Instant {
        (**self).now()
    }
}

/// An instant a [`Clock`] reads (governor's `clock::Reference`): ordered, copyable, and with the
/// saturating arithmetic clocks and their consumers need.
pub trait Reference: Copy + Ord + Send + Sync + fmt::Debug + 'static {
    /// The instant a [`ManualClock`] of this kind counts from: [`Nanos::ZERO`], or the Unix
    /// epoch for [`SystemTime`].
    const ORIGIN: Self;

    /// The time from `earlier` to `self`; zero when `earlier` is later.
    fn saturating_since(&self, earlier: Self) -> Duration;

    /// `self + duration`, saturating at the latest representable instant.
    fn saturating_plus(self, duration: Duration) -> Self;
}

// === Nanos ===

/// A monotonic instant: nanoseconds since an arbitrary origin (each clock's own, usually its
/// creation). Only differences between readings of one clock mean anything.
///
/// Arithmetic saturates: `Nanos + Duration` stops at [`Nanos::MAX`] (about 584 years), `Nanos -
/// Duration` at zero, and `later - earlier` is a [`Duration`] that is zero when `earlier` is in
/// fact later (counters of two cores may disagree by a few nanoseconds).
///
/// ```
/// use std::time::Duration;
/// use ravelin_primitives::clock::Nanos;
///
/// let t = Nanos::new(1_500);
/// assert_eq!((t + Duration::from_nanos(500)).as_u64(), 2_000);
/// assert_eq!(t - Nanos::new(2_000), Duration::ZERO);
/// assert_eq!(Nanos::MAX + Duration::from_secs(1), Nanos::MAX);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(u64);

impl Nanos {
    /// The origin.
    pub const ZERO: Nanos = Nanos(0);
    /// The latest representable instant.
    pub const MAX: Nanos = Nanos(u64::MAX);

    /// `nanos` nanoseconds after the origin.
    #[inline]
    pub const fn new(nanos: u64) -> Self {
        Nanos(nanos)
    }

    /// `duration` after the origin, saturating at [`Nanos::MAX`].
    #[inline]
    pub fn from_duration(duration: Duration) -> Self {
        Nanos(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the origin.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The time since the origin.
    #[inline]
    pub const fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + duration`, saturating at [`Nanos::MAX`].
    #[inline]
    pub fn saturating_add(self, duration: Duration) -> Self {
        Nanos(self.0.saturating_add(Nanos::from_duration(duration).0))
    }

    /// `self - duration`, saturating at [`Nanos::ZERO`].
    #[inline]
    pub fn saturating_sub(self, duration: Duration) -> Self {
        Nanos(self.0.saturating_sub(Nanos::from_duration(duration).0))
    }
}

impl Reference for Nanos {
    const ORIGIN: Self = Nanos::ZERO;

    #[inline]
    fn saturating_since(&self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    #[inline]
    fn saturating_plus(self, duration: Duration) -> Self {
        self.saturating_add(duration)
    }
}

impl From<u64> for Nanos {
    #[inline]
    fn from(nanos: u64) -> Self {
        Nanos(nanos)
    }
}

impl From<Nanos> for u64 {
    #[inline]
    fn from(nanos: Nanos) -> Self {
        nanos.0
    }
}

impl Add<Duration> for Nanos {
    type Output = Nanos;

    /// Saturating.
    #[inline]
    fn add(self, duration: Duration) -> Nanos {
        self.saturating_add(duration)
    }
}

impl Sub<Duration> for Nanos {
    type Output = Nanos;

    /// Saturating at zero.
    #[inline]
    fn sub(self, duration: Duration) -> Nanos {
        self.saturating_sub(duration)
    }
}

impl Sub for Nanos {
    type Output = Duration;

    /// The time from `earlier` to `self`; zero when `earlier` is later.
    #[inline]
    fn sub(self, earlier: Nanos) -> Duration {
        self.saturating_since(earlier)
    }
}

impl Reference for SystemTime {
    const ORIGIN: Self = SystemTime::UNIX_EPOCH;

    fn saturating_since(&self, earlier: Self) -> Duration {
        self.duration_since(earlier).unwrap_or(Duration::ZERO)
    }

    /// `self + duration`, or `self` when the platform cannot represent the sum.
    fn saturating_plus(self, duration: Duration) -> Self {
        self.checked_add(duration).unwrap_or(self)
    }
}

// === MonotonicClock ===

/// The process's monotonic clock on the CPU's time-stamp counter, counted from the clock's
/// creation. The default clock of every data-plane consumer.
///
/// It reads the counter through [`quanta`] where that counter is invariant (as governor does),
/// falling back to the OS monotonic clock. `std::time::Instant::now()` would cost ~20–30 ns here
/// (a vDSO `clock_gettime`) and, being serialising, stops the CPU from overlapping a limiter's
/// cache misses with the next request's: in ravelin-ratelimit's 1M-key benchmark that doubled
/// the cost of a check. A counter read costs a few nanoseconds. Cores whose counters disagree by
/// a few nanoseconds can make a reading look earlier than one taken on another core; consumers
/// compare with saturating arithmetic ([`Nanos`]), and GCRA tolerates it (decisions get stricter
/// by that much).
///
/// ```
/// use ravelin_primitives::clock::{Clock, MonotonicClock};
///
/// let clock = MonotonicClock::new();
/// let a = clock.now();
/// let b = clock.now();
/// assert!(b >= a);
/// ```
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

impl MonotonicClock {
    /// The counter as it is, unscaled: one read and nothing else. A value meaningful only to
    /// this clock's [`between`](Self::between): for timing a span with two reads scaled once,
    /// where [`now`](Clock::now) would scale both (a guard's budget is checked on every request
    /// this way).
    #[inline]
    pub fn ticks(&self) -> u64 {
        self.clock.raw()
    }

    /// The time between two [`ticks`](Self::ticks) readings of this clock; zero if `end` reads
    /// before `start` (counters of two cores may disagree by a few nanoseconds).
    ///
    /// ```
    /// use ravelin_primitives::clock::MonotonicClock;
    ///
    /// let clock = MonotonicClock::new();
    /// let start = clock.ticks();
    /// let took = clock.between(start, clock.ticks());
    /// assert!(took < std::time::Duration::from_secs(1));
    /// assert_eq!(clock.between(clock.ticks(), start), std::time::Duration::ZERO);
    /// ```
    #[inline]
    pub fn between(&self, start: u64, end: u64) -> Duration {
        Duration::from_nanos(self.clock.delta_as_nanos(start, end))
    }
}

impl Clock for MonotonicClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        // Saturates at zero should a core's counter read below the origin.
        Nanos(self.clock.delta_as_nanos(self.origin, self.clock.raw()))
    }
}

// === TokioClock ===

/// Tokio's clock ([`tokio::time::Instant::now`]), counted from the clock's creation: follows
/// `tokio::time::pause()` and `advance()` in tests, the OS monotonic clock otherwise.
///
/// ```
/// use std::time::Duration;
/// use ravelin_primitives::clock::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let clock = TokioClock::new();
/// let t0 = clock.now();
/// tokio::time::advance(Duration::from_secs(10)).await;
/// assert_eq!(clock.now() - t0, Duration::from_secs(10));
/// # }
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

#[cfg(feature = "tokio")]
impl TokioClock {
    /// A clock whose origin is Tokio's now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

#[cfg(feature = "tokio")]
impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from_duration(tokio::time::Instant::now().saturating_duration_since(self.origin))
    }
}

// === WallClock ===

/// The operating system's wall clock ([`SystemTime::now`]), for arithmetic against HTTP dates.
/// It can step (NTP, an operator); use a monotonic clock for everything else.
///
/// ```
/// use std::time::SystemTime;
/// use ravelin_primitives::clock::{Clock, WallClock};
///
/// let before = SystemTime::now();
/// assert!(WallClock.now() >= before);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Clock for WallClock {
    type Instant = SystemTime;

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

// === ManualClock ===

/// A clock that moves only when told to, for tests. Clones share one time.
///
/// `ManualClock` (= `ManualClock<Nanos>`, from [`new`](ManualClock::new)) stands in for the
/// monotonic clocks and starts at [`Nanos::ZERO`]; `ManualClock<SystemTime>` (from
/// [`at`](ManualClock::at)) stands in for [`WallClock`]. The time is held as nanoseconds since
/// [`Reference::ORIGIN`] in one atomic, so reads are lock-free and a wall-clock `ManualClock`
/// covers 1970 to 2554 (earlier times clamp to the epoch).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use ravelin_primitives::clock::{Clock, ManualClock, Nanos};
///
/// let clock = ManualClock::new();
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(shared.now(), Nanos::new(2_000_000_000));
/// shared.set(Nanos::new(5));
/// assert_eq!(clock.now(), Nanos::new(5));
///
/// let wall = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_000_000));
/// wall.advance(Duration::from_secs(30));
/// assert_eq!(wall.now(), UNIX_EPOCH + Duration::from_secs(1_000_030));
/// ```
pub struct ManualClock<I = Nanos> {
    /// Nanoseconds since `I::ORIGIN`.
    nanos: Arc<AtomicU64>,
    _instant: PhantomData<fn() -> I>,
}

impl ManualClock<Nanos> {
    /// A monotonic test clock at [`Nanos::ZERO`].
    pub fn new() -> Self {
        Self::at(Nanos::ZERO)
    }
}

impl Default for ManualClock<Nanos> {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock<SystemTime> {
    /// A wall-clock test clock stopped at the current system time.
    pub fn starting_now() -> Self {
        Self::at(SystemTime::now())
    }
}

impl<I: Reference> ManualClock<I> {
    /// A clock stopped at `time`.
    pub fn at(time: I) -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(offset(time))),
            _instant: PhantomData,
        }
    }

    /// Moves the clock (and its clones) forward by `by`, saturating.
    pub fn advance(&self, by: Duration) {
        let by = Nanos::from_duration(by).0;
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock (and its clones) to `time`, which may be in the past: for testing how a
    /// consumer tolerates a clock that steps back.
    pub fn set(&self, time: I) {
        self.nanos.store(offset(time), Ordering::Release);
    }
}

/// Nanoseconds from `I::ORIGIN` to `time`, saturating.
fn offset<I: Reference>(time: I) -> u64 {
    Nanos::from_duration(time.saturating_since(I::ORIGIN)).0
}

impl<I: Reference> Clock for ManualClock<I> {
    type Instant = I;

    fn now(&self) -> I {
        I::ORIGIN.saturating_plus(Duration::from_nanos(self.nanos.load(Ordering::Acquire)))
    }
}

impl<I> Clone for ManualClock<I> {
    fn clone(&self) -> Self {
        Self {
            nanos: Arc::clone(&self.nanos),
            _instant: PhantomData,
        }
    }
}

impl<I: Reference> fmt::Debug for ManualClock<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn manual_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        assert_eq!(a.now(), Nanos::ZERO);
        b.advance(Duration::from_millis(7));
        assert_eq!(a.now(), Nanos::new(7_000_000));
        a.set(Nanos::new(3));
        assert_eq!(
            b.now(),
            Nanos::new(3),
            "set may step back, and clones follow"
        );
    }

    #[test]
    fn manual_saturates() {
        let clock = ManualClock::at(Nanos::new(u64::MAX - 1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), Nanos::MAX);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Nanos::MAX);
    }

    #[test]
    fn manual_wall_clock_counts_from_the_epoch() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_nanos(123);
        let clock = ManualClock::at(t);
        assert_eq!(clock.now(), t);
        clock.advance(Duration::from_secs(60));
        assert_eq!(clock.now(), t + Duration::from_secs(60));
        clock.set(UNIX_EPOCH);
        assert_eq!(clock.now(), UNIX_EPOCH);
        // Before the epoch clamps to it.
        clock.set(UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(clock.now(), UNIX_EPOCH);
        let now = ManualClock::starting_now();
        assert!(now.now() <= SystemTime::now());
    }

    #[test]
    fn manual_clock_behind_a_shared_dyn_clock() {
        let clock = ManualClock::new();
        let shared: Arc<dyn Clock<Instant = Nanos>> = Arc::new(clock.clone());
        clock.advance(Duration::from_secs(1));
        assert_eq!(shared.now(), Nanos::new(1_000_000_000));
        assert_eq!(Arc::clone(&shared).now(), shared.now());
        assert!(format!("{shared:?}").contains("ManualClock"));
    }

    #[test]
    fn monotonic_never_goes_back() {
        let clock = MonotonicClock::new();
        let mut last = clock.now();
        for _ in 0..100_000 {
            let now = clock.now();
            assert!(now >= last, "{now:?} < {last:?}");
            last = now;
        }
    }

    #[test]
    fn monotonic_clones_share_the_origin_and_follow_real_time() {
        let clock = MonotonicClock::new();
        let copy = clock.clone();
        let start = std::time::Instant::now();
        let t0 = clock.now();
        // A busy wait, not a sleep: the assertion is about the clock, not the scheduler.
        while start.elapsed() < Duration::from_millis(2) {}
        let elapsed = copy.now() - t0;
        assert!(elapsed >= Duration::from_millis(1), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    }

    #[test]
    fn monotonic_ticks_time_a_span_like_now() {
        let clock = MonotonicClock::new();
        let (t0, n0) = (clock.ticks(), clock.now());
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(2) {}
        let (t1, n1) = (clock.ticks(), clock.now());
        let by_ticks = clock.between(t0, t1);
        assert!(by_ticks >= Duration::from_millis(1), "{by_ticks:?}");
        // The two ways of measuring agree to well under a millisecond.
        let by_now = n1 - n0;
        let gap = by_ticks.abs_diff(by_now);
        assert!(gap < Duration::from_millis(1), "{by_ticks:?} vs {by_now:?}");
        assert_eq!(clock.between(t1, t0), Duration::ZERO);
    }

    #[test]
    fn wall_clock_reads_system_time() {
        let before = SystemTime::now();
        let read = WallClock.now();
        let after = SystemTime::now();
        assert!(before <= read && read <= after);
    }

    #[test]
    fn nanos_arithmetic_saturates() {
        let t = Nanos::new(10);
        assert_eq!(t - Duration::from_nanos(20), Nanos::ZERO);
        assert_eq!(t + Duration::MAX, Nanos::MAX);
        assert_eq!(Nanos::new(30) - t, Duration::from_nanos(20));
        assert_eq!(t - Nanos::new(30), Duration::ZERO);
        assert_eq!(Nanos::from_duration(Duration::MAX), Nanos::MAX);
        assert_eq!(u64::from(Nanos::from(42u64)), 42);
        assert_eq!(Nanos::new(1_000).as_duration(), Duration::from_micros(1));
    }

    #[test]
    fn system_time_reference() {
        let t = UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(t.saturating_since(UNIX_EPOCH), Duration::from_secs(10));
        assert_eq!(UNIX_EPOCH.saturating_since(t), Duration::ZERO);
        assert_eq!(
            UNIX_EPOCH.saturating_plus(Duration::from_secs(1)),
            UNIX_EPOCH + Duration::from_secs(1)
        );
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        assert_eq!(clock.now(), Nanos::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), Nanos::new(5_000_000_000));
    }
}
