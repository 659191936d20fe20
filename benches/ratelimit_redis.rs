//! The Redis store's Lua GCRA beside a naive `INCR` + `EXPIRE` fixed window, against a local Redis.
//!
//! ```text
//! cargo bench -p ravelin --no-default-features --features redis --bench ratelimit_redis
//! ```
//!
//! Starts its own `redis-server` on a free loopback port (or uses `RAVELIN_REDIS_URL`); without
//! either it prints a skip message and exits successfully.
//!
//! Group `ratelimit_redis`, functions `ravelin_gcra` and `incr_expire`, each at a concurrency of 1
//! (one check in flight: the time is the round-trip latency) and 32 (32 tasks sharing the store's
//! one multiplexed connection: the time is per check, so 1 / time is the throughput). Both use the
//! same client, the same kind of connection and the same keys: 10,000 addresses, mostly allowed.
//! Before the group, the latency distribution of sequential checks is printed for both.

// criterion_group! generates an undocumented `pub fn`; a bench whose setup fails must stop loudly.
#![allow(
    missing_docs,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ravelin_test_support::redis as support;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ravelin_ratelimit::redis::RedisStore;
use ravelin_ratelimit::{Check, Quota, RateLimitStore};
use redis::aio::ConnectionManager;

const KEYS: usize = 10_000;
const CONCURRENCY: [usize; 2] = [1, 32];

fn keys() -> Arc<Vec<Vec<u8>>> {
    Arc::new(
        (0..KEYS as u32)
            .map(|i| {
                std::net::Ipv4Addr::from(0x0a00_0000 + i)
                    .to_string()
                    .into_bytes()
            })
            .collect(),
    )
}

fn quota() -> Quota {
    // Every check is allowed and writes its key, and keys stay live through the run (each check
    // pushes its key's TAT a second ahead), as the fixed window's keys do: neither variant pays
    // for Redis creating and expiring a key per check, which a quota whose buckets refill
    // between two checks of a key would add to the GCRA side.
    Quota::per_second(1)
        .and_then(|q| q.with_burst(1_000_000))
        .expect("valid quota")
}

/// One limiter under test: a check of one key, returning whether it was allowed.
trait Limit: Clone + Send + Sync + 'static {
    fn allow(&self, key: &[u8]) -> impl Future<Output = bool> + Send;
}

#[derive(Clone)]
struct Gcra(RedisStore);

impl Limit for Gcra {
    async fn allow(&self, key: &[u8]) -> bool {
        let check = Check {
            rule: "bench",
            key,
            quota: quota(),
            cost: 1,
            enforce: true,
        };
        let decisions = self.0.check(&[check]).await.expect("redis check");
        decisions.first().is_some_and(|d| d.allowed)
    }
}

/// The common naive limiter: a counter per key and window, `INCR` then `EXPIRE` in a pipeline.
/// Not atomic with respect to the window edge, and a fixed window lets twice the limit through
/// across an edge, which GCRA does not.
#[derive(Clone)]
struct IncrExpire(ConnectionManager);

impl Limit for IncrExpire {
    async fn allow(&self, key: &[u8]) -> bool {
        let mut conn = self.0.clone();
        let mut full = b"bench:incr:".to_vec();
        full.extend_from_slice(key);
        let (count,): (u64,) = redis::pipe()
            .incr(&full, 1)
            .expire(&full, 1)
            .ignore()
            .query_async(&mut conn)
            .await
            .expect("redis pipeline");
        count <= 1_000_000
    }
}

/// Runs `iters` checks spread over `concurrency` tasks and returns the elapsed time.
async fn run<L: Limit>(
    limit: &L,
    keys: &Arc<Vec<Vec<u8>>>,
    iters: u64,
    concurrency: usize,
) -> Duration {
    let start = Instant::now();
    if concurrency == 1 {
        for i in 0..iters {
            black_box(limit.allow(&keys[i as usize % KEYS]).await);
        }
        return start.elapsed();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let (limit, keys) = (limit.clone(), Arc::clone(keys));
        let share = iters / concurrency as u64 + u64::from((t as u64) < iters % concurrency as u64);
        tasks.spawn(async move {
            for i in 0..share {
                black_box(limit.allow(&keys[(i as usize * 7919 + t) % KEYS]).await);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("bench task");
    }
    start.elapsed()
}

/// Prints p50 / p99 / p99.9 of sequential checks.
async fn latency<L: Limit>(name: &str, limit: &L, keys: &Arc<Vec<Vec<u8>>>) {
    let mut samples = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        let start = Instant::now();
        black_box(limit.allow(&keys[i % KEYS]).await);
        samples.push(start.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "ratelimit_redis latency {name}: p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

fn bench(c: &mut Criterion) {
    if std::env::var(support::URL_ENV).map_or(true, |u| u.is_empty())
        && support::find_binary().is_none()
    {
        println!(
            "skipped: redis-server not found and {} not set",
            support::URL_ENV
        );
        return;
    }
    let Some(server) = support::RedisServer::start() else {
        println!("skipped: no Redis");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (gcra, incr) = rt.block_on(async {
        let store = RedisStore::builder(server.url())
            .key_prefix("bench:gcra:")
            // The bench measures the store, not the failure path: never time out.
            .timeout(Duration::from_secs(5))
            .build()
            .expect("redis store");
        let client = redis::Client::open(server.url()).expect("redis url");
        let manager = ConnectionManager::new(client)
            .await
            .expect("redis connection");
        (Gcra(store), IncrExpire(manager))
    });
    let keys = keys();
    rt.block_on(async {
        latency("ravelin_gcra", &gcra, &keys).await;
        latency("incr_expire", &incr, &keys).await;
    });

    let mut group = c.benchmark_group("ratelimit_redis");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for concurrency in CONCURRENCY {
        group.bench_with_input(
            BenchmarkId::new("ravelin_gcra", concurrency),
            &concurrency,
            |b, &n| b.iter_custom(|iters| rt.block_on(run(&gcra, &keys, iters, n))),
        );
        group.bench_with_input(
            BenchmarkId::new("incr_expire", concurrency),
            &concurrency,
            |b, &n| b.iter_custom(|iters| rt.block_on(run(&incr, &keys, iters, n))),
        );
    }
    group.finish();
    drop(server);
}

criterion_group!(benches, bench);
criterion_main!(benches);
