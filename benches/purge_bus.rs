//! The fleet-wide purge bus (`ravelin_cache::purge_bus`, issue 16) against a local Redis.
//!
//! ```text
//! cargo bench -p ravelin --no-default-features --features cache --bench purge_bus
//! ```
//!
//! (The bus is behind ravelin-cache's `redis` feature, which the dev-dependency `ravelin-edge`
//! turns on for every bench and test build.) Starts its own `redis-server` on a free loopback
//! port (or uses `RAVELIN_REDIS_URL`; the Redis-down part then is skipped); without either it
//! prints a skip message and exits successfully.
//!
//! Printed before the criterion group, two `PurgeBus`es (A and B) over two caches in one process,
//! on one 2-worker Tokio runtime, sharing the server:
//!
//! - **Fan-out**: the same page stored in both caches, then `A.purge_url`; the time from that
//!   call returning to B's cache being empty, polled every ~10 µs (p50/p99/max over many purges,
//!   each started with both readers idle in their blocking `XREAD`), with the default `block`
//!   (1 s) and with `block = 10ms`. Then a burst: 1,000 purges back to back on A, and the time
//!   until B applied them all.
//! - **Publish cost**: the time one `purge_url` call on A takes, for a URL not stored (so the
//!   local part is the smallest), against `CacheHandle::purge_url` without the bus; with Redis up
//!   (each call waits for the previous one to be published, as sparse purges are) and with the
//!   server killed (outbox filling, then full: the oldest is dropped on each call).
//!
//! Criterion group `purge_bus_hit`: the `cache_hit` request of `benches/cache.rs` (a stored 4 KiB
//! page through the whole layer) with the layer's own `MemoryStore` (`memory_store`) and with the
//! `ResettableStore` the bus swaps (`resettable_store`, one more `ArcSwap` load per store call).

// criterion_group! generates an undocumented `pub fn`; a bench whose setup fails must stop loudly.
#![allow(
    missing_docs,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ravelin_cache::purge_bus::{Publication, PurgeBus, PurgeBusConfig, ResettableStore};
use ravelin_cache::{CacheConfig, CacheHandle, CacheLayer};
use ravelin_test_support::redis as support;
use tower::{Layer, Service};

use common::{Inner, URL, drain, inner, no_redis, now, pct, request, two_worker_runtime};

/// Purges timed one by one for the fan-out distribution.
const FANOUT_PURGES: usize = 1_000;
/// Purges published back to back for the burst.
const BURST: usize = 1_000;
/// Calls timed one by one for the publish cost.
const CALLS: usize = 5_000;
/// How long a purge may take to reach B before it counts as lost.
const GIVE_UP: Duration = Duration::from_secs(5);

/// One proxy's cache over a `ResettableStore`, and its bus.
struct Proxy {
    service: ravelin_cache::Cache<Inner>,
    handle: CacheHandle,
    bus: PurgeBus,
}

impl Proxy {
    fn new(redis_url: &str, stream: &str, instance: &str, block: Duration) -> Self {
        let cfg = CacheConfig::default();
        let store = ResettableStore::for_config(&cfg);
        let layer = CacheLayer::builder()
            .config(cfg)
            .storage(store.clone())
            .build()
            .expect("default config is valid");
        let bus_cfg = PurgeBusConfig {
            stream: stream.to_string(),
            instance: Some(instance.to_string()),
            block,
            ..PurgeBusConfig::new(redis_url)
        };
        let bus = PurgeBus::new(&bus_cfg, layer.handle(), store).expect("bus config is valid");
        bus.start().expect("inside the runtime");
        Self {
            service: layer.layer(inner()),
            handle: layer.handle(),
            bus,
        }
    }

    /// Stores the page (a miss whose body is read to the end).
    fn fill(&mut self) {
        let resp = now(self.service.call(request(URL))).expect("origin answers");
        drain(resp.into_body());
        // The object and its `Vary` record.
        assert!(self.handle.usage().entries > 0, "the page is stored");
    }
}

/// Polls `done` every ~10 µs until it holds; `None` after [`GIVE_UP`].
fn wait_until(mut done: impl FnMut() -> bool) -> Option<Instant> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(Instant::now());
        }
        if start.elapsed() > GIVE_UP {
            return None;
        }
        std::thread::sleep(Duration::from_micros(10));
    }
}

fn connected(p: &Proxy) {
    wait_until(|| p.bus.status().connected).expect("the bus connects");
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    if samples.is_empty() {
        println!("{label:<58} no samples");
        return;
    }
    println!(
        "{label:<58} n={:<5} p50 {:>9.2?}  p99 {:>9.2?}  p99.9 {:>9.2?}  max {:>9.2?}",
        samples.len(),
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        pct(&samples, 0.999),
        samples[samples.len() - 1],
    );
}

// === Fan-out ===

fn fanout(redis_url: &str, block: Duration) {
    let stream = support::unique_prefix("bench-purge-bus");
    let mut a = Proxy::new(redis_url, &stream, "bench-a", block);
    let mut b = Proxy::new(redis_url, &stream, "bench-b", block);
    connected(&a);
    connected(&b);
    let mut call = Vec::with_capacity(FANOUT_PURGES);
    let mut reach = Vec::with_capacity(FANOUT_PURGES);
    let mut lost = 0;
    for _ in 0..FANOUT_PURGES {
        a.fill();
        b.fill();
        // Both readers back in their blocking XREAD, the publisher idle.
        std::thread::sleep(Duration::from_millis(2));
        let t0 = Instant::now();
        let outcome = a.bus.purge_url(URL).expect("valid URL");
        let t1 = Instant::now();
        assert!(outcome.removed > 0);
        assert_eq!(a.handle.usage().entries, 0);
        assert_eq!(outcome.publication, Publication::Queued);
        match wait_until(|| b.handle.usage().entries == 0) {
            Some(t2) => reach.push(t2 - t1),
            None => lost += 1,
        }
        call.push(t1 - t0);
    }
    report(
        &format!("fan-out A.purge_url returned -> gone on B (block {block:?})"),
        reach,
    );
    report(
        &format!("  A.purge_url call, page stored (block {block:?})"),
        call,
    );
    if lost > 0 {
        println!("  {lost} purges did not reach B within {GIVE_UP:?}");
    }

    // A burst: distinct URLs back to back, within the outbox's bound (its default, 1,000) once
    // the last fan-out purge is published and counted on B.
    wait_until(|| a.bus.status().outbox == 0 && b.bus.status().applied >= FANOUT_PURGES as u64)
        .expect("the fan-out purges are all applied");
    let before = b.bus.status().applied;
    let t0 = Instant::now();
    for i in 0..BURST {
        a.bus
            .purge_url(&format!("http://shop.example/burst/{i}"))
            .expect("valid URL");
    }
    let t1 = Instant::now();
    let done = wait_until(|| b.bus.status().applied >= before + BURST as u64);
    match done {
        Some(t2) => println!(
            "burst of {BURST} purges (block {block:?}): issued in {:.2?}, all applied on B {:.2?} after the first ({:.0} purges/s)",
            t1 - t0,
            t2 - t0,
            BURST as f64 / (t2 - t0).as_secs_f64()
        ),
        None => println!(
            "burst of {BURST} purges (block {block:?}): B applied only {} within {GIVE_UP:?}",
            b.bus.status().applied - before
        ),
    }
    let s = a.bus.status();
    if s.outbox_dropped > 0 {
        println!("  A's outbox dropped {} purges", s.outbox_dropped);
    }

    // Twice the outbox's bound back to back, Redis up: the publisher drains one entry per
    // XADD round trip, so a faster burst overflows the outbox (the oldest are dropped, never
    // published).
    wait_until(|| a.bus.status().outbox == 0).expect("the burst is published");
    // The counter moves just after the outbox empties.
    std::thread::sleep(Duration::from_millis(5));
    let bound = PurgeBusConfig::default().outbox;
    let s = a.bus.status();
    let (dropped, published) = (s.outbox_dropped, s.published);
    let t0 = Instant::now();
    for i in 0..2 * bound {
        a.bus
            .purge_url(&format!("http://shop.example/overflow/{i}"))
            .expect("valid URL");
    }
    let t1 = Instant::now();
    wait_until(|| a.bus.status().outbox == 0).expect("the outbox drains");
    std::thread::sleep(Duration::from_millis(5));
    let s = a.bus.status();
    println!(
        "burst of {} purges (block {block:?}, outbox {bound}): issued in {:.2?}; published {}, dropped {}",
        2 * bound,
        t1 - t0,
        s.published - published,
        s.outbox_dropped - dropped,
    );
    a.bus.shutdown();
    b.bus.shutdown();
}

// === Publish cost ===

fn publish_cost(server: &mut support::RedisServer) {
    let stream = support::unique_prefix("bench-purge-bus-cost");
    let a = Proxy::new(server.url(), &stream, "bench-a", Duration::from_secs(1));
    connected(&a);
    let plain = CacheLayer::builder()
        .build()
        .expect("default config is valid")
        .handle();

    let mut local = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let url = format!("http://shop.example/absent/{i}");
        let t0 = Instant::now();
        black_box(plain.purge_url(black_box(&url)).expect("valid URL"));
        local.push(t0.elapsed());
    }
    report("publish cost: CacheHandle::purge_url, no bus", local);

    let mut up = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let url = format!("http://shop.example/absent/{i}");
        let t0 = Instant::now();
        let outcome = black_box(a.bus.purge_url(black_box(&url)).expect("valid URL"));
        up.push(t0.elapsed());
        assert_eq!(outcome.publication, Publication::Queued);
        wait_until(|| a.bus.status().outbox == 0).expect("published");
    }
    report("publish cost: PurgeBus::purge_url, Redis up", up);

    if !server.is_local() {
        println!("publish cost with Redis down: skipped (external server: cannot kill it)");
        a.bus.shutdown();
        return;
    }
    server.kill();
    wait_until(|| !a.bus.status().connected).expect("the reader notices");
    let bound = PurgeBusConfig::default().outbox;
    let mut filling = Vec::with_capacity(bound);
    let mut full = Vec::with_capacity(CALLS);
    for i in 0..bound + CALLS {
        let url = format!("http://shop.example/down/{i}");
        let t0 = Instant::now();
        let outcome = black_box(a.bus.purge_url(black_box(&url)).expect("valid URL"));
        let took = t0.elapsed();
        assert_eq!(outcome.publication, Publication::Pending);
        if i < bound {
            filling.push(took);
        } else {
            full.push(took);
        }
        // Paced as with Redis up, without waiting for anything.
        std::thread::sleep(Duration::from_micros(20));
    }
    report(
        &format!("publish cost: Redis killed, outbox filling (0..{bound})"),
        filling,
    );
    report(
        "publish cost: Redis killed, outbox full (drops oldest)",
        full,
    );
    let s = a.bus.status();
    println!(
        "  A after: outbox {}, dropped {}, errors {}, connected {}",
        s.outbox, s.outbox_dropped, s.errors, s.connected
    );
    a.bus.shutdown();
    server.restart();
}

// === Hits with and without the ResettableStore ===

fn hits(c: &mut Criterion) {
    let mut memory = CacheLayer::builder()
        .build()
        .expect("default config is valid")
        .layer(inner());
    let cfg = CacheConfig::default();
    let store = ResettableStore::for_config(&cfg);
    let mut resettable = CacheLayer::builder()
        .config(cfg)
        .storage(store)
        .build()
        .expect("default config is valid")
        .layer(inner());
    for svc in [&mut memory, &mut resettable] {
        let resp = now(svc.call(request(URL))).expect("origin answers");
        drain(resp.into_body());
        let resp = now(svc.call(request(URL))).expect("hit");
        assert!(
            resp.headers()["cache-status"]
                .to_str()
                .unwrap_or("")
                .contains("hit")
        );
    }
    let mut g = c.benchmark_group("purge_bus_hit");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    g.bench_function("memory_store", |b| {
        b.iter(|| {
            let resp = now(memory.call(black_box(request(URL)))).expect("hit");
            black_box(drain(resp.into_body()))
        })
    });
    g.bench_function("resettable_store", |b| {
        b.iter(|| {
            let resp = now(resettable.call(black_box(request(URL)))).expect("hit");
            black_box(drain(resp.into_body()))
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = two_worker_runtime();
    let _guard = rt.enter();
    if !no_redis("fan-out and publish cost")
        && let Some(mut server) = support::RedisServer::start()
    {
        // The resolution of the fan-out times: what one poll interval really is.
        let sleeps = (0..1_000)
            .map(|_| {
                let t0 = Instant::now();
                std::thread::sleep(Duration::from_micros(10));
                t0.elapsed()
            })
            .collect();
        report("poll interval: thread::sleep(10 µs) takes", sleeps);
        fanout(server.url(), PurgeBusConfig::default().block);
        fanout(server.url(), Duration::from_millis(10));
        publish_cost(&mut server);
    }
    hits(c);
}

criterion_group!(benches, bench);
criterion_main!(benches);
