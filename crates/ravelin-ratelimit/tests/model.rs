//! The limiters against a naive reference model of GCRA.
//!
//! The model is the *continuous-state leaky bucket* of ITU-T I.371 (a bucket level and the time
//! of the last conforming cell), a different formulation from the virtual-scheduling TAT the
//! crate implements; both are specified to accept exactly the same cells. Arithmetic is in i128,
//! so the model cannot share an overflow or rounding bug with the implementation.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use ravelin_ratelimit::{
    Check, Decision, DirectLimiter, Limiter, ManualClock, MemoryStore, Nanos, Quota,
};

/// The leaky bucket: `level` ns of outstanding work as of `last`.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    level: i128,
    last: i128,
}

impl Bucket {
    /// Evaluates one arrival; `commit` says whether to store the result when it conforms.
    fn evaluate(&self, quota: &Quota, now: u64, cost: u32) -> (Decision, Bucket) {
        let t = i128::from(quota.emission_interval_nanos());
        let tau = t * i128::from(quota.burst());
        let now = i128::from(now);
        // Drain since the last conforming arrival (a clock stepping back fills the bucket).
        let drained = (self.level - (now - self.last)).max(0);
        let needed = drained + t * i128::from(cost);
        // Every span here lies in 0..=τ < 2^62, so the conversions are exact.
        let secs = |ns: i128| Duration::from_nanos(ns as u64);
        if needed <= tau {
            let decision = Decision {
                allowed: true,
                limit: quota.burst(),
                remaining: ((tau - needed) / t) as u32,
                reset_after: secs(needed),
                retry_after: Duration::ZERO,
            };
            let next = if cost == 0 {
                *self
            } else {
                Bucket {
                    level: needed,
                    last: now,
                }
            };
            (decision, next)
        } else {
            let decision = Decision {
                allowed: false,
                limit: quota.burst(),
                remaining: ((tau - drained).max(0) / t) as u32,
                reset_after: secs(drained),
                retry_after: secs(needed - tau),
            };
            (decision, *self)
        }
    }
}

fn quota() -> impl Strategy<Value = Quota> {
    (1u32..50, 1u64..5_000, 1u32..60).prop_filter_map("valid quota", |(limit, window_ms, burst)| {
        Quota::new(limit, Duration::from_millis(window_ms))
            .and_then(|q| q.with_burst(burst))
            .ok()
    })
}

/// Time steps: mostly forward, sometimes backward (a clock stepping back), sometimes zero.
fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0i64..200_000_000,
        2 => Just(0i64),
        1 => -50_000_000i64..0,
    ]
}

fn advance(now: u64, step: i64) -> u64 {
    if step >= 0 {
        now.saturating_add(step.unsigned_abs())
    } else {
        now.saturating_sub(step.unsigned_abs())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn direct_matches_model(
        quota in quota(),
        arrivals in prop::collection::vec((step(), 0u32..70), 1..200),
    ) {
        let clock = ManualClock::new();
        clock.set(Nanos::new(1_000_000_000));
        let limiter = DirectLimiter::with_clock(quota, clock.clone());
        let mut model = Bucket::default();
        let mut now = 1_000_000_000u64;
        for (step, cost) in arrivals {
            now = advance(now, step);
            clock.set(Nanos::new(now));
            let got = limiter.check_now(cost);
            let (want, next) = model.evaluate(&quota, now, cost);
            prop_assert_eq!(got, want);
            if want.allowed {
                model = next;
            }
        }
    }

    #[test]
    fn keyed_matches_model(
        quota in quota(),
        arrivals in prop::collection::vec((step(), 0u8..6, 0u32..70), 1..300),
    ) {
        let limiter: Limiter<u8, ManualClock> = Limiter::with_clock(quota, 64, ManualClock::new());
        let mut model: HashMap<u8, Bucket> = HashMap::new();
        let mut now = 1_000_000_000u64;
        for (step, key, cost) in arrivals {
            now = advance(now, step);
            let got = limiter.check(&key, cost, Nanos::new(now));
            let bucket = model.entry(key).or_default();
            let (want, next) = bucket.evaluate(&quota, now, cost);
            prop_assert_eq!(got, want, "key {} at {}", key, now);
            if want.allowed {
                *bucket = next;
            }
            let peeked = limiter.peek(&key, cost, Nanos::new(now));
            let (want_peek, _) = bucket.evaluate(&quota, now, cost);
            prop_assert_eq!(peeked, want_peek);
        }
        prop_assert_eq!(limiter.stats().evictions, 0);
    }

    /// A batch of rules, some shadow: every decision matches the model, and a request denied by
    /// an enforcing rule changes no rule's state.
    #[test]
    fn store_batches_match_model(
        quotas in prop::collection::vec((quota(), any::<bool>(), 0u32..8), 1..4),
        arrivals in prop::collection::vec((step(), 0u8..3), 1..200),
    ) {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(1024, clock.clone());
        let names = ["a", "b", "c", "d"];
        let mut model: HashMap<(usize, u8), Bucket> = HashMap::new();
        let mut now = 1_000_000_000u64;
        for (step, key) in arrivals {
            now = advance(now, step);
            clock.set(Nanos::new(now));
            let key_bytes = [key];
            let checks: Vec<Check<'_>> = quotas
                .iter()
                .enumerate()
                .map(|(i, (quota, enforce, cost))| Check {
                    rule: names[i],
                    key: &key_bytes,
                    quota: *quota,
                    cost: *cost,
                    enforce: *enforce,
                })
                .collect();
            let got = store.check_sync(&checks);
            let evaluated: Vec<(Decision, Bucket)> = quotas
                .iter()
                .enumerate()
                .map(|(i, (quota, _, cost))| {
                    model.entry((i, key)).or_default().evaluate(quota, now, *cost)
                })
                .collect();
            let want: Vec<Decision> = evaluated.iter().map(|(d, _)| *d).collect();
            prop_assert_eq!(&got, &want);
            let passes = quotas
                .iter()
                .zip(&want)
                .all(|((_, enforce, _), d)| !enforce || d.allowed);
            if passes {
                for (i, (decision, next)) in evaluated.into_iter().enumerate() {
                    if decision.allowed {
                        model.insert((i, key), next);
                    }
                }
            }
        }
    }
}

#[test]
fn burst_then_one_per_interval() {
    let quota = Quota::per_second(10).unwrap().with_burst(3).unwrap();
    let limiter = DirectLimiter::with_clock(quota, ManualClock::new());
    let t = quota.emission_interval_nanos();
    for remaining in [2, 1, 0] {
        let d = limiter.check(1, Nanos::new(0));
        assert!(d.allowed);
        assert_eq!(d.remaining, remaining);
    }
    let denied = limiter.check(1, Nanos::new(0));
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after, Duration::from_nanos(t));
    assert_eq!(denied.reset_after, Duration::from_nanos(3 * t));
    // One interval later exactly one unit is back.
    assert!(limiter.check(1, Nanos::new(t)).allowed);
    assert!(!limiter.check(1, Nanos::new(t)).allowed);
    // A cost equal to the burst needs a full bucket.
    let full = 10 * t;
    assert!(limiter.check(3, Nanos::new(full)).allowed);
    assert!(!limiter.check(1, Nanos::new(full)).allowed);
}

#[test]
fn cost_above_burst_is_denied_without_charging() {
    let quota = Quota::per_second(5).unwrap();
    let limiter = DirectLimiter::with_clock(quota, ManualClock::new());
    let d = limiter.check(6, Nanos::new(0));
    assert!(!d.allowed);
    assert_eq!(d.remaining, 5);
    assert!(d.retry_after > Duration::ZERO);
    assert_eq!(limiter.check(5, Nanos::new(0)).remaining, 0);
}

#[test]
fn zero_cost_reads_without_charging() {
    let quota = Quota::per_second(2).unwrap();
    let limiter = DirectLimiter::with_clock(quota, ManualClock::new());
    for _ in 0..10 {
        let d = limiter.check(0, Nanos::new(0));
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
    }
}

#[test]
fn clock_stepping_back_grants_nothing_extra() {
    let quota = Quota::per_second(1).unwrap().with_burst(2).unwrap();
    let t = quota.emission_interval_nanos();
    let limiter = DirectLimiter::with_clock(quota, ManualClock::new());
    let start = 100 * t;
    assert!(limiter.check(1, Nanos::new(start)).allowed);
    assert!(limiter.check(1, Nanos::new(start)).allowed);
    assert!(!limiter.check(1, Nanos::new(start)).allowed);
    // Time goes back far: still denied, and the wait grows instead of shrinking.
    let back = limiter.check(1, Nanos::new(start - 50 * t));
    assert!(!back.allowed);
    assert_eq!(back.remaining, 0);
    assert!(back.retry_after > Duration::from_nanos(t));
    // Back to zero: no panic, no grant.
    assert!(!limiter.check(1, Nanos::new(0)).allowed);
    // Forward again: the same single unit returns after one interval.
    assert!(limiter.check(1, Nanos::new(start + t)).allowed);
    assert!(!limiter.check(1, Nanos::new(start + t)).allowed);
}

#[test]
fn extreme_quotas_and_times_do_not_panic() {
    let quotas = [
        Quota::new(1, Duration::from_secs(100 * 365 * 86_400)).unwrap(),
        Quota::new(u32::MAX, Duration::from_secs(10)).unwrap(),
        Quota::new(1, Duration::from_nanos(1)).unwrap(),
    ];
    for quota in quotas {
        let limiter = DirectLimiter::with_clock(quota, ManualClock::new());
        for now in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX, 3] {
            for cost in [0, 1, u32::MAX] {
                let _ = limiter.check(cost, Nanos::new(now));
            }
        }
    }
    assert!(Quota::new(0, Duration::from_secs(1)).is_err());
    assert!(Quota::new(1, Duration::ZERO).is_err());
    assert!(Quota::new(10, Duration::from_nanos(5)).is_err());
    assert!(Quota::per_second(1).unwrap().with_burst(0).is_err());
    assert!(Quota::new(1, Duration::from_secs(200 * 365 * 86_400)).is_err());
}
