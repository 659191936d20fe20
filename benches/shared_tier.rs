//! The cache's shared second tier (`[cache.shared_tier]`, `ravelin_cache::shared_tier`, issue 16)
//! against a local Redis.
//!
//! ```text
//! cargo bench -p ravelin --no-default-features --features cache --bench shared_tier
//! ```
//!
//! (The tier is behind ravelin-cache's `redis` feature, which the dev-dependency `ravelin-edge`
//! turns on for every bench and test build.) Starts its own `redis-server` on a free loopback
//! port (or uses `RAVELIN_REDIS_URL`); without either it prints a skip message and runs only the
//! criterion group without a tier.
//!
//! Printed before the criterion group, on one 2-worker Tokio runtime: three `CacheLayer`s in one
//! process over the in-process origin of `benches/cache.rs` (a 4 KiB page, ready at once), A and
//! B sharing one tier, C without one. Each request is timed from `call` to its body read to the
//! end, inside one `block_on` (the same harness for every row):
//!
//! - **Miss** on A (the tier is asked, misses, the origin answers, the put runs in the
//!   background — the next request waits for it) and on C (no tier), interleaved, each URL new.
//! - **Shared-tier hit** on B: each URL A filled, requested once on B, so every request is B's
//!   first local miss, answered from Redis (checked: `Cache-Status` carries `detail=shared`).
//! - **Local hit** on B (tier configured, the entries it took from Redis) and on C (no tier),
//!   interleaved.
//!
//! Criterion group `shared_tier_local_hit`: the `cache_hit` request of `benches/cache.rs` (a
//! stored 4 KiB page through the whole layer, polled with a no-op waker) on a layer with and
//! without `shared_tier` configured: a local hit must not touch the tier.

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
use http_body_util::BodyExt;
use ravelin_cache::shared_tier::SharedTierConfig;
use ravelin_cache::{Cache, CacheConfig, CacheLayer};
use ravelin_test_support::redis as support;
use tokio::runtime::Runtime;
use tower::{Layer, Service};

use common::{Inner, drain, inner, no_redis, now, pct, request, two_worker_runtime};

/// Distinct URLs, so requests, per row.
const N: usize = 2_000;
/// How long a background put may take before the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(10);

fn url(i: usize) -> String {
    format!("http://shop.example/product/{i}?color=red")
}

fn layer(tier: Option<&SharedTierConfig>) -> CacheLayer {
    let cfg = CacheConfig {
        shared_tier: tier.cloned(),
        ..CacheConfig::default()
    };
    CacheLayer::builder()
        .config(cfg)
        .build()
        .expect("valid config")
}

// === Timing ===

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    if samples.is_empty() {
        println!("{label:<52} no samples");
        return;
    }
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{label:<52} n={:<5} p50 {:>9.2?}  p99 {:>9.2?}  p99.9 {:>9.2?}  max {:>9.2?}  mean {:>9.2?}",
        samples.len(),
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        pct(&samples, 0.999),
        samples[samples.len() - 1],
        mean,
    );
}

/// One request through `svc`, timed from `call` to the body read to the end; returns the time
/// and the `Cache-Status` header.
fn timed(rt: &Runtime, svc: &mut Cache<Inner>, url: &str) -> (Duration, String) {
    rt.block_on(async {
        let req = request(url);
        let t0 = Instant::now();
        let resp = svc.call(req).await.expect("the layer answers");
        let cs = resp
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await.ok().map(|c| c.to_bytes());
        let took = t0.elapsed();
        assert_eq!(body.map(|b| b.len()), Some(4096), "{cs}");
        (took, cs)
    })
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < GIVE_UP, "gave up waiting");
        std::thread::sleep(Duration::from_micros(20));
    }
}

fn latencies(rt: &Runtime, server: &support::RedisServer) {
    let tier = SharedTierConfig {
        prefix: support::unique_prefix("bench-shared-tier"),
        ..SharedTierConfig::new(server.url())
    };
    let (a, b, c) = {
        let _guard = rt.enter();
        (layer(Some(&tier)), layer(Some(&tier)), layer(None))
    };
    let (ha, hb) = (a.handle(), b.handle());
    let (mut sa, mut sb, mut sc) = {
        let _guard = rt.enter();
        (a.layer(inner()), b.layer(inner()), c.layer(inner()))
    };
    let tier_a = ha.shared_tier().expect("tier configured");

    // Warm-up: connections made, code paths run once (URLs outside the measured range).
    for i in N..N + 50 {
        timed(rt, &mut sa, &url(i));
        timed(rt, &mut sc, &url(i));
        let want = (i - N + 1) as u64;
        wait_until(|| tier_a.status().puts >= want);
        timed(rt, &mut sb, &url(i));
        timed(rt, &mut sb, &url(i));
    }
    let base_puts = tier_a.status().puts;
    let base_shared = hb.stats().shared_hits;

    let (mut miss_tier, mut miss_plain) = (Vec::with_capacity(N), Vec::with_capacity(N));
    for i in 0..N {
        let (t, cs) = timed(rt, &mut sc, &url(i));
        assert!(cs.contains("fwd=uri-miss"), "{cs}");
        miss_plain.push(t);
        let (t, cs) = timed(rt, &mut sa, &url(i));
        assert!(cs.contains("fwd=uri-miss"), "{cs}");
        miss_tier.push(t);
        // The put is in the background: wait for it, so B finds the entry and the next
        // measurement does not overlap it.
        let want = base_puts + i as u64 + 1;
        wait_until(|| tier_a.status().puts >= want);
    }
    report("miss, no tier (origin in process)", miss_plain);
    report("miss, tier configured (Redis GET miss + origin)", miss_tier);

    let mut shared = Vec::with_capacity(N);
    let mut not_shared = 0;
    for i in 0..N {
        let (t, cs) = timed(rt, &mut sb, &url(i));
        if cs.contains("detail=shared") {
            shared.push(t);
        } else {
            not_shared += 1;
            println!("  not a shared hit on B: {cs}");
        }
    }
    report("shared-tier hit on B (first local miss on B)", shared);
    println!(
        "  B: shared_hits +{}, not shared {not_shared}; tier on B: {:?}",
        hb.stats().shared_hits - base_shared,
        hb.shared_tier().map(|t| {
            let s = t.status();
            (s.hits, s.misses, s.unavailable, s.errors)
        })
    );

    let lookups = |t: &ravelin_cache::shared_tier::SharedTier| {
        let s = t.status();
        s.hits + s.misses + s.unavailable
    };
    let tier_b = hb.shared_tier().expect("tier configured");
    let asked = lookups(tier_b);
    let (mut hit_tier, mut hit_plain) = (Vec::with_capacity(N), Vec::with_capacity(N));
    for i in 0..N {
        let (t, cs) = timed(rt, &mut sb, &url(i));
        assert!(
            cs.starts_with("ravelin; hit") && !cs.contains("shared"),
            "{cs}"
        );
        hit_tier.push(t);
        let (t, cs) = timed(rt, &mut sc, &url(i));
        assert!(cs.starts_with("ravelin; hit"), "{cs}");
        hit_plain.push(t);
    }
    // A local hit does not ask the tier.
    assert_eq!(lookups(tier_b), asked, "local hits asked the tier");
    report("local hit, no tier", hit_plain);
    report("local hit, tier configured (B)", hit_tier);
}

// === Local hits with and without the tier, criterion ===

fn hits(c: &mut Criterion, tier: Option<&SharedTierConfig>) {
    let url = url(7);
    let mut plain = layer(None).layer(inner());
    let mut services = vec![("no_tier", &mut plain)];
    let mut tiered = tier.map(|t| layer(Some(t)).layer(inner()));
    if let Some(svc) = tiered.as_mut() {
        services.push(("tier_configured", svc));
    }
    for (_, svc) in &mut services {
        let resp = now(svc.call(request(&url))).expect("origin answers");
        drain(resp.into_body());
        let resp = now(svc.call(request(&url))).expect("hit");
        let cs = resp.headers()["cache-status"].to_str().unwrap_or("");
        assert!(cs.starts_with("ravelin; hit"), "{cs}");
    }
    let mut g = c.benchmark_group("shared_tier_local_hit");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for (name, svc) in services {
        g.bench_function(name, |b| {
            b.iter(|| {
                let resp = now(svc.call(black_box(request(&url)))).expect("hit");
                black_box(drain(resp.into_body()))
            })
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = two_worker_runtime();
    let server = if no_redis("shared-tier rows") {
        None
    } else {
        let _guard = rt.enter();
        support::RedisServer::start()
    };
    let tier = server.as_ref().map(|s| {
        latencies(&rt, s);
        SharedTierConfig {
            prefix: support::unique_prefix("bench-shared-tier-hit"),
            ..SharedTierConfig::new(s.url())
        }
    });
    let _guard = rt.enter();
    hits(c, tier.as_ref());
}

criterion_group!(benches, bench);
criterion_main!(benches);
