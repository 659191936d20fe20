//! A flood of unique keys against a bounded table: memory never grows, and a hot key stays
//! limited exactly (its decisions match a single-key reference limiter step for step).

// Test helpers are test code: they may unwrap and index (clippy.toml allows this inside
// #[test] functions only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ravelin_ratelimit::{DirectLimiter, Limiter, ManualClock, MemoryStore, Nanos, Quota};

const FLOOD: u32 = 1_000_000;
const CAPACITY: usize = 100_000;

#[test]
fn million_unique_keys_against_capacity_100k() {
    // 10 requests per minute per key: every flood key stays live (and so occupies a slot) for six
    // seconds after its one request, so the whole flood is live at once: 10x the capacity.
    let quota = Quota::per_minute(10).unwrap();
    let limiter: Limiter<IpAddr, ManualClock> =
        Limiter::with_clock(quota, CAPACITY, ManualClock::new());
    // The reference: the hot key alone, with nothing else competing for memory.
    let reference = DirectLimiter::with_clock(quota, ManualClock::new());
    let hot = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

    let initial = limiter.stats();
    assert!(initial.slots >= CAPACITY);
    assert!(initial.slots < CAPACITY + CAPACITY / 10, "{initial:?}");
    assert!(initial.bytes <= 16 * initial.slots + 64 * 64, "{initial:?}");

    let mut hot_allowed = 0;
    let mut now = 0u64;
    for i in 0..FLOOD {
        // 1 µs between requests: the flood takes one second of fake time.
        now += 1_000;
        let key = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_ffff_u128 << 80 | u128::from(i)));
        let d = limiter.check(&key, 1, Nanos::new(now));
        assert!(d.allowed, "a fresh key is always allowed");
        if i % 10 == 0 {
            // The hot key hammers every 10 µs: far above its rate.
            let got = limiter.check(&hot, 1, Nanos::new(now));
            let want = reference.check(1, Nanos::new(now));
            assert_eq!(got, want, "hot key diverged at request {i}");
            hot_allowed += u32::from(got.allowed);
        }
        if i % 100_000 == 0 {
            assert_eq!(limiter.stats().slots, initial.slots);
            assert_eq!(limiter.stats().bytes, initial.bytes);
        }
    }
    let stats = limiter.stats();
    assert_eq!((stats.slots, stats.bytes), (initial.slots, initial.bytes));
    assert!(limiter.live_keys(Nanos::new(now)) <= stats.slots);
    // The table is over capacity by design: most of the flood was evicted, and counted.
    assert!(stats.evictions > u64::from(FLOOD) / 2, "{stats:?}");
    assert_eq!(stats.overflows, 0);
    // Within one second, the hot key got its burst of 10 and nothing more.
    assert_eq!(hot_allowed, 10);

    // Time passes: everything expires, and expired entries are reclaimed without evictions.
    let later = now + Duration::from_secs(3600).as_nanos() as u64;
    let before = limiter.stats().evictions;
    for i in 0..50_000u32 {
        let key = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_eeee_u128 << 80 | u128::from(i)));
        assert!(limiter.check(&key, 1, Nanos::new(later)).allowed);
    }
    assert_eq!(limiter.stats().evictions, before);
}

#[test]
fn store_flood_keeps_hot_key_exact_and_memory_flat() {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(10_000, clock.clone());
    let quota = Quota::per_minute(5).unwrap();
    let reference = DirectLimiter::with_clock(quota, ManualClock::new());
    let initial = store.stats();
    let mut now = 0u64;
    for i in 0..200_000u32 {
        now += 1_000;
        clock.set(Nanos::new(now));
        let key = i.to_be_bytes();
        let check = ravelin_ratelimit::Check {
            rule: "flood",
            key: &key,
            quota,
            cost: 1,
            enforce: true,
        };
        assert!(store.check_sync(&[check])[0].allowed);
        if i % 7 == 0 {
            let hot = ravelin_ratelimit::Check {
                key: b"hot",
                ..check
            };
            assert_eq!(
                store.check_sync(&[hot])[0],
                reference.check(1, Nanos::new(now))
            );
        }
    }
    assert_eq!(store.stats().bytes, initial.bytes);
    assert!(store.stats().evictions > 0);
}

/// Many threads on one key with the clock stopped: exactly `burst` requests pass, never more.
#[test]
fn concurrent_checks_never_over_admit() {
    for _ in 0..20 {
        let quota = Quota::per_second(1).unwrap().with_burst(1000).unwrap();
        let limiter: Arc<Limiter<u32, ManualClock>> =
            Arc::new(Limiter::with_clock(quota, 1024, ManualClock::new()));
        let allowed = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                let allowed = Arc::clone(&allowed);
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        // The hot key, and a churn of other keys competing for inserts.
                        if limiter.check(&7, 1, Nanos::new(5)).allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                        limiter.check(&(i % 64 + 100), 1, Nanos::new(5));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 1000);
    }
}

/// Threads churning unique keys through a 16-entry table (every insert evicts) while other
/// threads spend the last unit of a few heavily used keys: replacements racing with updates
/// never hand a limited key extra units, never deadlock, and never grow the table.
#[test]
fn replacement_races_leave_limited_keys_exact() {
    for round in 0..10u64 {
        let quota = Quota::per_second(1).unwrap().with_burst(100).unwrap();
        let limiter: Arc<Limiter<u64, ManualClock>> =
            Arc::new(Limiter::with_clock(quota, 16, ManualClock::new()));
        let hot: Vec<u64> = (0..4).map(|i| 1_000_000 + i).collect();
        // Bring each hot key to one unit left: its TAT is far above any churn key's.
        for key in &hot {
            for _ in 0..99 {
                assert!(limiter.check(key, 1, Nanos::new(5)).allowed);
            }
        }
        let allowed = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let limiter = Arc::clone(&limiter);
                let allowed = Arc::clone(&allowed);
                let hot = hot.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        if t % 2 == 0 {
                            limiter.check(&(round << 40 | t << 32 | i), 1, Nanos::new(5));
                        } else if limiter
                            .check(&hot[(i % 4) as usize], 1, Nanos::new(5))
                            .allowed
                        {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 4, "round {round}");
        assert_eq!(limiter.stats().slots, 16);
        assert!(limiter.stats().evictions > 0);
    }
}

/// Concurrent two-rule batches: the tight rule admits exactly its burst, and the loose rule ends
/// charged for exactly the admitted requests (denied ones were never charged, or were refunded
/// after losing a race).
#[test]
fn concurrent_batches_charge_only_admitted_requests() {
    for _ in 0..10 {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(1024, clock.clone());
        let loose = Quota::per_second(1).unwrap().with_burst(1000).unwrap();
        let tight = Quota::per_second(1).unwrap().with_burst(10).unwrap();
        let admitted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                let admitted = Arc::clone(&admitted);
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        let checks = [
                            ravelin_ratelimit::Check {
                                rule: "loose",
                                key: b"k",
                                quota: loose,
                                cost: 1,
                                enforce: true,
                            },
                            ravelin_ratelimit::Check {
                                rule: "tight",
                                key: b"k",
                                quota: tight,
                                cost: 1,
                                enforce: true,
                            },
                        ];
                        let decisions = store.check_sync(&checks);
                        if decisions.iter().all(|d| d.allowed) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 10);
        let probe = ravelin_ratelimit::Check {
            rule: "loose",
            key: b"k",
            quota: loose,
            cost: 0,
            enforce: true,
        };
        assert_eq!(store.check_sync(&[probe])[0].remaining, 990);
    }
}
