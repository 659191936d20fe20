//! ravelin-ratelimit against governor: the same quotas and keys in the same criterion groups.
//!
//! ```text
//! cargo bench -p ravelin --no-default-features --features ratelimit --bench ratelimit
//! ```
//!
//! Groups: `ratelimit_direct` (one un-keyed limiter), `ratelimit_keyed_hot` (one key),
//! `ratelimit_keyed_1m` (keys uniform over 1,000,000 `IpAddr`s), and `_2t` variants of the keyed
//! groups where two threads check concurrently (time per check per thread). Each function reads
//! its crate's own clock on every check, as a server would.
//!
//! After the groups, memory per key is measured for both at 100k and 1M keys as the growth of the
//! resident set of a fresh child process (no allocator hook: the workspace forbids `unsafe`), and
//! printed.

// A benchmark harness, not the data plane: a failed setup must stop the run loudly, indexes come
// from a generator bounded by the key count, and criterion's macros generate undocumented items.
#![allow(clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use ravelin_ratelimit::{DirectLimiter, Limiter, Quota};

/// Mostly allowed, as in a healthy service, even for one key checked back to back: one unit per
/// nanosecond with a burst of a million. Allowed checks are the expensive ones (they write).
const PER_SECOND: u32 = 1_000_000_000;
const BURST: u32 = 1_000_000;
const KEYS: usize = 1_000_000;

fn ravelin_quota() -> Quota {
    Quota::per_second(PER_SECOND)
        .and_then(|q| q.with_burst(BURST))
        .expect("valid quota")
}

fn governor_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::new(PER_SECOND).expect("non-zero"))
        .allow_burst(NonZeroU32::new(BURST).expect("non-zero"))
}

/// 1,000,000 distinct addresses, half IPv4 and half IPv6, as a proxy sees them.
fn keys() -> Vec<IpAddr> {
    (0..KEYS as u32)
        .map(|i| {
            if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
            } else {
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    i as u16,
                    0,
                    0,
                    0,
                    (i >> 16) as u16,
                ))
            }
        })
        .collect()
}

/// A cheap deterministic sequence of indexes, so both limiters see the same key order.
struct Indexes(u64);

impl Indexes {
    #[inline]
    fn next(&mut self) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize * KEYS) >> 32
    }
}

fn config<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    group
}

fn direct(c: &mut Criterion) {
    let mut group = config(c, "ratelimit_direct");
    let ravelin = DirectLimiter::new(ravelin_quota());
    group.bench_function("ravelin", |b| {
        b.iter(|| black_box(ravelin.check_now(1).allowed))
    });
    let governor = governor::RateLimiter::direct(governor_quota());
    group.bench_function("governor", |b| {
        b.iter(|| black_box(governor.check().is_ok()))
    });
    group.finish();
}

fn keyed_hot(c: &mut Criterion) {
    let hot = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let mut group = config(c, "ratelimit_keyed_hot");
    let ravelin: Limiter<IpAddr> = Limiter::new(ravelin_quota(), 100_000);
    group.bench_function("ravelin", |b| {
        b.iter(|| black_box(ravelin.check_now(black_box(&hot), 1).allowed))
    });
    let governor = governor::RateLimiter::keyed(governor_quota());
    group.bench_function("governor", |b| {
        b.iter(|| black_box(governor.check_key(black_box(&hot)).is_ok()))
    });
    group.finish();
}

fn keyed_1m(c: &mut Criterion) {
    let keys = keys();
    let mut group = config(c, "ratelimit_keyed_1m");
    // Room for every key, as governor's map holds every key: the comparison is lookup speed.
    let ravelin: Limiter<IpAddr> = Limiter::new(ravelin_quota(), KEYS + KEYS / 4);
    let governor = governor::RateLimiter::keyed(governor_quota());
    for key in &keys {
        ravelin.check_now(key, 1);
        let _ = governor.check_key(key);
    }
    let mut next = Indexes(0x9e37_79b9_7f4a_7c15);
    group.bench_function("ravelin", |b| {
        b.iter(|| black_box(ravelin.check_now(&keys[next.next()], 1).allowed))
    });
    let mut next = Indexes(0x9e37_79b9_7f4a_7c15);
    group.bench_function("governor", |b| {
        b.iter(|| black_box(governor.check_key(&keys[next.next()]).is_ok()))
    });
    group.finish();
}

/// Runs `check` on two threads, `iters` times each, and returns the wall time: criterion then
/// reports the time per check per thread under contention.
fn two_threads(iters: u64, check: impl Fn(&mut Indexes) + Sync) -> Duration {
    let barrier = Barrier::new(2);
    let times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                let barrier = &barrier;
                let check = &check;
                s.spawn(move || {
                    let mut next = Indexes(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        check(&mut next);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    times.into_iter().max().unwrap_or_default()
}

fn keyed_hot_2t(c: &mut Criterion) {
    let hot = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let mut group = config(c, "ratelimit_keyed_hot_2t");
    let ravelin: Limiter<IpAddr> = Limiter::new(ravelin_quota(), 100_000);
    group.bench_function("ravelin", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(ravelin.check_now(black_box(&hot), 1).allowed);
            })
        })
    });
    let governor = governor::RateLimiter::keyed(governor_quota());
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(governor.check_key(black_box(&hot)).is_ok());
            })
        })
    });
    group.finish();
}

fn keyed_1m_2t(c: &mut Criterion) {
    let keys = keys();
    let mut group = config(c, "ratelimit_keyed_1m_2t");
    let ravelin: Limiter<IpAddr> = Limiter::new(ravelin_quota(), KEYS + KEYS / 4);
    let governor = governor::RateLimiter::keyed(governor_quota());
    for key in &keys {
        ravelin.check_now(key, 1);
        let _ = governor.check_key(key);
    }
    group.bench_function("ravelin", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |next| {
                black_box(ravelin.check_now(&keys[next.next()], 1).allowed);
            })
        })
    });
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |next| {
                black_box(governor.check_key(&keys[next.next()]).is_ok());
            })
        })
    });
    group.finish();
}

/// Set in a child process of this bench to measure one limiter's memory in a fresh heap.
const MEMORY_ENV: &str = "RAVELIN_RATELIMIT_BENCH_MEMORY";

/// Resident set size in bytes, from `/proc/self/statm` (0 where unavailable).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// In the child: build one limiter, insert `n` distinct keys, print the resident-set growth and,
/// for ravelin, the table's own accounting.
fn measure_child(spec: &str) {
    let mut parts = spec.split(':');
    let (Some(which), Some(n), capacity) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let n: usize = n.parse().expect("key count");
    let keys = keys();
    let keys = &keys[..n];
    let before = rss_bytes();
    if which == "governor" {
        let governor = governor::RateLimiter::keyed(governor_quota());
        for key in keys {
            let _ = governor.check_key(key);
        }
        let grown = rss_bytes().saturating_sub(before);
        println!("{grown} {} 0 0", governor.len());
    } else {
        let capacity: usize = capacity.and_then(|c| c.parse().ok()).unwrap_or(n);
        let ravelin: Limiter<IpAddr> = Limiter::new(ravelin_quota(), capacity);
        // One instant for all keys, so every key is live at once: the worst case for the bound.
        let now = ravelin.now();
        for key in keys {
            ravelin.check(key, 1, now);
        }
        let grown = rss_bytes().saturating_sub(before);
        let stats = ravelin.stats();
        println!(
            "{grown} {} {} {}",
            ravelin.live_keys(now),
            stats.bytes,
            stats.evictions
        );
    }
}

fn run_child(spec: &str) -> Vec<usize> {
    let exe = std::env::current_exe().expect("bench executable");
    let out = std::process::Command::new(exe)
        .env(MEMORY_ENV, spec)
        .output()
        .expect("run memory child");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Memory per key, each limiter measured in its own fresh process (a heap reused from earlier
/// groups would hide growth).
fn memory_per_key() {
    println!("\nmemory per key (resident-set growth of a fresh process / keys inserted):");
    for n in [100_000usize, 1_000_000] {
        if let [grown, held, ..] = run_child(&format!("governor:{n}"))[..] {
            println!(
                "  governor {n:>9} keys: {:>6.1} bytes/key ({held} keys held)",
                grown as f64 / n as f64
            );
        }
        for capacity in [n, n + n / 4] {
            if let [grown, live, bytes, evictions] =
                run_child(&format!("ravelin:{n}:{capacity}"))[..]
            {
                println!(
                    "  ravelin  {n:>9} keys, capacity {capacity:>9}: {:>6.1} bytes/key resident, table {bytes} bytes = {:.1}/key; {live} keys held, {evictions} evicted",
                    grown as f64 / n as f64,
                    bytes as f64 / n as f64,
                );
            }
        }
    }
}

criterion_group!(
    benches,
    direct,
    keyed_hot,
    keyed_1m,
    keyed_hot_2t,
    keyed_1m_2t
);

/// Set to `<case>:<iterations>` to run one bare loop and exit, for `perf stat` (cycles and
/// instructions count only this process, so other work on the machine disturbs them less than
/// wall time). Run once with 0 iterations to measure the setup and subtract it.
const LOOP_ENV: &str = "RAVELIN_RATELIMIT_BENCH_LOOP";

fn bare_loop(spec: &str) {
    let Some((case, n)) = spec.split_once(':') else {
        return;
    };
    let n: u64 = n.parse().expect("iteration count");
    let hot = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let mut next = Indexes(0x9e37_79b9_7f4a_7c15);
    match case {
        "direct-ravelin" => {
            let l = DirectLimiter::new(ravelin_quota());
            for _ in 0..n {
                black_box(l.check_now(1).allowed);
            }
        }
        "direct-governor" => {
            let l = governor::RateLimiter::direct(governor_quota());
            for _ in 0..n {
                black_box(l.check().is_ok());
            }
        }
        "hot-ravelin" => {
            let l: Limiter<IpAddr> = Limiter::new(ravelin_quota(), 100_000);
            for _ in 0..n {
                black_box(l.check_now(black_box(&hot), 1).allowed);
            }
        }
        "hot-governor" => {
            let l = governor::RateLimiter::keyed(governor_quota());
            for _ in 0..n {
                black_box(l.check_key(black_box(&hot)).is_ok());
            }
        }
        "1m-ravelin" => {
            let keys = keys();
            let l: Limiter<IpAddr> = Limiter::new(ravelin_quota(), KEYS + KEYS / 4);
            for key in &keys {
                l.check_now(key, 1);
            }
            for _ in 0..n {
                black_box(l.check_now(&keys[next.next()], 1).allowed);
            }
        }
        "1m-governor" => {
            let keys = keys();
            let l = governor::RateLimiter::keyed(governor_quota());
            for key in &keys {
                let _ = l.check_key(key);
            }
            for _ in 0..n {
                black_box(l.check_key(&keys[next.next()]).is_ok());
            }
        }
        "1m2-ravelin" => {
            let keys = keys();
            let l: Limiter<IpAddr> = Limiter::new(ravelin_quota(), KEYS + KEYS / 4);
            for key in &keys {
                l.check_now(key, 1);
            }
            two_threads(n, |next| {
                black_box(l.check_now(&keys[next.next()], 1).allowed);
            });
        }
        "1m2-governor" => {
            let keys = keys();
            let l = governor::RateLimiter::keyed(governor_quota());
            for key in &keys {
                let _ = l.check_key(key);
            }
            two_threads(n, |next| {
                black_box(l.check_key(&keys[next.next()]).is_ok());
            });
        }
        _ => eprintln!("unknown case {case}"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var(MEMORY_ENV) {
        measure_child(&spec);
        return;
    }
    if let Ok(spec) = std::env::var(LOOP_ENV) {
        bare_loop(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    memory_per_key();
}
