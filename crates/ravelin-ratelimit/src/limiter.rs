//! The plain data-plane API, usable without tower: [`Limiter`] (keyed) and [`DirectLimiter`].

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use ravelin_primitives::clock::{Clock, MonotonicClock, Nanos};

use crate::gcra::{Decision, Quota};
use crate::table::{Table, TableStats};

/// One GCRA state for everything: a global limit (e.g. the requests an origin can take).
///
/// ```
/// use ravelin_ratelimit::{DirectLimiter, Quota};
///
/// let limiter = DirectLimiter::new(Quota::per_second(100)?);
/// let decision = limiter.check_now(1);
/// assert!(decision.allowed);
/// assert_eq!(decision.remaining, 99);
/// # Ok::<(), ravelin_ratelimit::QuotaError>(())
/// ```
pub struct DirectLimiter<C = MonotonicClock> {
    quota: Quota,
    tat: AtomicU64,
    clock: C,
}

impl<C> fmt::Debug for DirectLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectLimiter")
            .field("quota", &self.quota)
            .field("tat", &self.tat.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DirectLimiter {
    /// A limiter on the process's monotonic clock.
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, MonotonicClock::new())
    }
}

impl<C: Clock<Instant = Nanos>> DirectLimiter<C> {
    /// A limiter reading `clock`.
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        Self {
            quota,
            tat: AtomicU64::new(0),
            clock,
        }
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The clock's current reading, for [`check`](Self::check).
    #[inline]
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// Spends `cost` units at `now` (a reading of this limiter's clock) if they are available.
    #[inline]
    pub fn check(&self, cost: u32, now: Nanos) -> Decision {
        let now = now.as_u64();
        let mut stored = self.tat.load(Ordering::Acquire);
        loop {
            let evaluation = self.quota.decide(stored, now, cost);
            let Some(new_tat) = evaluation.new_tat else {
                return evaluation.decision;
            };
            match self.tat.compare_exchange_weak(
                stored,
                new_tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return evaluation.decision,
                Err(actual) => stored = actual,
            }
        }
    }

    /// [`check`](Self::check) at the clock's current time.
    #[inline]
    pub fn check_now(&self, cost: u32) -> Decision {
        self.check(cost, self.now())
    }

    /// What spending `cost` at `now` would decide, without spending.
    pub fn peek(&self, cost: u32, now: Nanos) -> Decision {
        self.quota
            .decide(self.tat.load(Ordering::Acquire), now.as_u64(), cost)
            .decision
    }
}

/// GCRA per key, in a table of fixed size: a per-client or per-API-key limit without tower.
///
/// The table holds `capacity` entries of 16 bytes, allocated once; see the
/// [crate docs](crate#memory-bound) for what happens when more keys are live than fit.
///
/// ```
/// use std::net::IpAddr;
/// use ravelin_ratelimit::{Limiter, Quota};
///
/// let limiter: Limiter<IpAddr> = Limiter::new(Quota::per_minute(60)?, 100_000);
/// let client: IpAddr = "192.0.2.7".parse().unwrap();
/// let now = limiter.now();
/// let decision = limiter.check(&client, 1, now);
/// assert!(decision.allowed);
/// assert_eq!(decision.remaining, 59);
/// # Ok::<(), ravelin_ratelimit::QuotaError>(())
/// ```
pub struct Limiter<K: ?Sized, C = MonotonicClock> {
    quota: Quota,
    table: Table,
    hasher: foldhash::quality::RandomState,
    clock: C,
    _key: PhantomData<fn(&K)>,
}

impl<K: ?Sized, C> fmt::Debug for Limiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("quota", &self.quota)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + ?Sized> Limiter<K> {
    /// A limiter with room for `capacity` keys, on the process's monotonic clock.
    pub fn new(quota: Quota, capacity: usize) -> Self {
        Self::with_clock(quota, capacity, MonotonicClock::new())
    }
}

impl<K: Hash + ?Sized, C: Clock<Instant = Nanos>> Limiter<K, C> {
    /// A limiter with room for `capacity` keys, reading `clock`.
    pub fn with_clock(quota: Quota, capacity: usize, clock: C) -> Self {
        Self {
            quota,
            table: Table::new(capacity, "limiter"),
            hasher: foldhash::quality::RandomState::default(),
            clock,
            _key: PhantomData,
        }
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The clock's current reading, for [`check`](Self::check).
    #[inline]
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// Spends `cost` units of `key`'s quota at `now` (a reading of this limiter's clock) if
    /// they are available.
    #[inline]
    pub fn check(&self, key: &K, cost: u32, now: Nanos) -> Decision {
        let now = now.as_u64();
        let quota = self.quota;
        self.table
            .apply(self.hasher.hash_one(key), now, |tat| {
                quota.decide(tat, now, cost)
            })
            .decision
    }

    /// [`check`](Self::check) at the clock's current time.
    #[inline]
    pub fn check_now(&self, key: &K, cost: u32) -> Decision {
        self.check(key, cost, self.now())
    }

    /// What spending `cost` of `key`'s quota at `now` would decide, without spending.
    pub fn peek(&self, key: &K, cost: u32, now: Nanos) -> Decision {
        let tat = self.table.read(self.hasher.hash_one(key));
        self.quota.decide(tat, now.as_u64(), cost).decision
    }

    /// Memory and degradation counters. `slots` and `bytes` never change after construction.
    pub fn stats(&self) -> TableStats {
        self.table.stats()
    }

    /// How many keys hold state at `now` (a full scan of the table: for tests and status pages,
    /// not for the request path).
    pub fn live_keys(&self, now: Nanos) -> usize {
        self.table.live_entries(now.as_u64())
    }
}
