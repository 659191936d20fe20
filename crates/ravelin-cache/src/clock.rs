//! The wall clock the cache reads for HTTP freshness arithmetic.
//!
//! HTTP ages are computed against `Date`, `Expires` and `Last-Modified`, which are wall-clock times,
//! so the cache needs a [`SystemTime`], not a monotonic instant. Tests inject a [`ManualClock`]
//! and move time explicitly instead of sleeping. (Timeouts — waiting for a coalesced fetch, a slow
//! origin — use `tokio::time`, which tests control with `tokio::time::pause()`.)

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; clones share one time.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use ravelin_cache::{Clock, ManualClock};
///
/// let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_000_000));
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_000_030));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    // Milliseconds since the Unix epoch: HTTP dates have one-second resolution, so milliseconds are
    // plenty, and an atomic keeps reads lock-free.
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `time` (times before the Unix epoch clamp to it).
    pub fn at(time: SystemTime) -> Self {
        Self {
            millis: Arc::new(AtomicU64::new(to_millis(time))),
        }
    }

    /// A clock stopped at the current system time.
    pub fn starting_now() -> Self {
        Self::at(SystemTime::now())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // `fetch_update` with a saturating add: the clock never wraps around.
        let _ = self
            .millis
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                Some(m.saturating_add(by))
            });
    }

    /// Sets the clock to `time`.
    pub fn set(&self, time: SystemTime) {
        self.millis.store(to_millis(time), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &httpdate::fmt_http_date(self.now()))
            .finish()
    }
}

fn to_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
