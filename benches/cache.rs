//! ravelin-cache benches.
//!
//! - `cache_hit`: a full request through the cache layer answered from the store
//!   (`ravelin_layer_hit`), beside the inner service called directly (`inner_direct`).
//! - `cache_store_zipf`: each candidate store replaying a Zipf(1.0) trace of 1,000,000 requests over
//!   100,000 objects, with capacity for 10% of the objects' bytes; throughput is measured, the hit
//!   ratio is printed (it is a property of the trace, not of timing).
//! - `cache_store_scan`: the same trace with one-hit wonders interleaved (every other request is a
//!   key never seen again), to show admission: a store without it lets the scan flush hot objects.
//! - `cache_purge`: purging a surrogate tag carried by 10,000 stored responses.
//!
//! Run: `cargo bench -p ravelin --no-default-features --features cache --bench cache`
// A benchmark harness, not the data plane: a failed setup must stop the run loudly, and
// criterion's macros generate undocumented items.
#![allow(clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use rand::{Rng, SeedableRng, rngs::StdRng};
use ravelin_cache::CacheLayer;
use tower::{Layer, Service, service_fn};

use common::{URL, current_thread_runtime, drain, now, page, request};

const OBJECTS: usize = 100_000;
const REQUESTS: usize = 1_000_000;

fn cache_hit(c: &mut Criterion) {
    let inner = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(page()) });
    let layer = CacheLayer::builder()
        .build()
        .expect("default config is valid");
    let rt = current_thread_runtime();
    let _guard = rt.enter();
    let mut cached = layer.layer(inner);
    // Fill the cache once (the miss streams the body into the store as it is read).
    let resp = now(cached.call(request(URL))).expect("origin answers");
    drain(resp.into_body());
    let resp = now(cached.call(request(URL))).expect("hit");
    assert!(
        resp.headers()["cache-status"]
            .to_str()
            .unwrap_or("")
            .contains("hit")
    );

    let mut g = c.benchmark_group("cache_hit");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    g.bench_function("ravelin_layer_hit", |b| {
        b.iter(|| {
            let resp = now(cached.call(black_box(request(URL)))).expect("hit");
            black_box(drain(resp.into_body()))
        })
    });
    let mut direct = inner;
    g.bench_function("inner_direct", |b| {
        b.iter(|| {
            let resp = now(direct.call(black_box(request(URL)))).expect("origin answers");
            black_box(drain(resp.into_body()))
        })
    });
    g.finish();
}

// === Stores on a Zipf trace ===

struct Trace {
    keys: Vec<u64>,
    sizes: Vec<u32>,
    capacity: u64,
}

/// Object sizes are log-uniform between 1 KiB and 64 KiB, fixed per object.
fn object_size(id: u64) -> u32 {
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    let exp = 10.0 + (h % 10_000) as f64 / 10_000.0 * 6.0;
    2f64.powf(exp) as u32
}

/// Zipf(1.0) over `OBJECTS` ids by inverse CDF; with `scan`, every other request is a fresh id
/// that never recurs (a one-hit wonder).
fn trace(scan: bool) -> Trace {
    let mut cdf = Vec::with_capacity(OBJECTS);
    let mut total = 0.0;
    for k in 1..=OBJECTS {
        total += 1.0 / k as f64;
        cdf.push(total);
    }
    let mut rng = StdRng::seed_from_u64(7);
    let mut next_unique = OBJECTS as u64;
    let keys = (0..REQUESTS)
        .map(|i| {
            if scan && i % 2 == 1 {
                next_unique += 1;
                next_unique
            } else {
                let u = rng.random::<f64>() * total;
                cdf.partition_point(|c| *c < u) as u64
            }
        })
        .collect();
    let sizes: Vec<u32> = (0..OBJECTS as u64).map(object_size).collect();
    let bytes: u64 = sizes.iter().map(|s| u64::from(*s)).sum();
    Trace {
        keys,
        sizes,
        capacity: bytes / 10,
    }
}

impl Trace {
    fn size(&self, key: u64) -> u32 {
        self.sizes
            .get(key as usize)
            .copied()
            .unwrap_or_else(|| object_size(key))
    }
}

/// A stored object: only its size matters to the store.
#[derive(Clone)]
struct Obj(u32);

#[derive(Clone)]
struct Bytes32;

impl quick_cache::Weighter<u64, Arc<Obj>> for Bytes32 {
    fn weight(&self, _key: &u64, val: &Arc<Obj>) -> u64 {
        u64::from(val.0)
    }
}

/// Replays the trace (get, and insert on a miss); returns the hits on Zipf keys.
fn replay(name: &str, t: &Trace) -> u64 {
    let hot = |k: u64| k < OBJECTS as u64;
    let mut hits = 0;
    match name {
        "quick_cache" => {
            let c: quick_cache::sync::Cache<u64, Arc<Obj>, Bytes32> =
                quick_cache::sync::Cache::with_weighter(OBJECTS / 10, t.capacity, Bytes32);
            for &k in &t.keys {
                if c.get(&k).is_some() {
                    hits += u64::from(hot(k));
                } else {
                    c.insert(k, Arc::new(Obj(t.size(k))));
                }
            }
        }
        "moka_tinylfu" | "moka_lru" => {
            let mut b = moka::sync::Cache::builder()
                .max_capacity(t.capacity)
                .weigher(|_k: &u64, v: &Arc<Obj>| v.0);
            if name == "moka_lru" {
                b = b.eviction_policy(moka::policy::EvictionPolicy::lru());
            }
            let c: moka::sync::Cache<u64, Arc<Obj>> = b.build();
            for &k in &t.keys {
                if c.get(&k).is_some() {
                    hits += u64::from(hot(k));
                } else {
                    c.insert(k, Arc::new(Obj(t.size(k))));
                }
            }
        }
        _ => {}
    }
    hits
}

const CANDIDATES: [&str; 3] = ["quick_cache", "moka_tinylfu", "moka_lru"];

fn store_group(c: &mut Criterion, group: &str, scan: bool) {
    let t = trace(scan);
    let zipf_requests = if scan { REQUESTS / 2 } else { REQUESTS };
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(REQUESTS as u64));
    for name in CANDIDATES {
        let hits = replay(name, &t);
        println!(
            "{group}/{name}: hit ratio {:.4} ({hits} hits of {zipf_requests} Zipf requests)",
            hits as f64 / zipf_requests as f64
        );
        g.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| black_box(replay(name, &t)),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn cache_store_zipf(c: &mut Criterion) {
    store_group(c, "cache_store_zipf", false);
}

fn cache_store_scan(c: &mut Criterion) {
    store_group(c, "cache_store_scan", true);
}

// === Purge ===

fn cache_purge(c: &mut Criterion) {
    let rt = current_thread_runtime();
    let _guard = rt.enter();
    let inner = service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("cache-control", "max-age=3600")
                .header("cache-tag", "bulk")
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap_or_default(),
        )
    });
    let mut g = c.benchmark_group("cache_purge");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(10_000));
    g.bench_function("purge_tag_10k", |b| {
        b.iter_batched(
            || {
                let layer = CacheLayer::builder()
                    .build()
                    .expect("default config is valid");
                let handle = layer.handle();
                let mut svc = layer.layer(inner);
                for i in 0..10_000 {
                    let req = Request::get(format!("http://shop.example/item/{i}"))
                        .body(())
                        .unwrap_or_default();
                    let resp = now(svc.call(req)).expect("origin answers");
                    drain(resp.into_body());
                }
                handle
            },
            |handle| assert_eq!(handle.purge_tag("bulk"), 10_000),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    cache_hit,
    cache_store_zipf,
    cache_store_scan,
    cache_purge
);
criterion_main!(benches);
