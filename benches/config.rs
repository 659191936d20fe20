//! Reading the active snapshot: `ravelin_config::Store::current` beside an `RwLock<Arc<T>>` and a
//! plain `Arc` clone (the floor: what any shared read costs).

// A benchmark harness, not the data plane: a failed setup must stop the run loudly, and criterion's
// macros generate undocumented items.
#![allow(clippy::expect_used, missing_docs)]

use std::sync::{Arc, RwLock};

use criterion::{Criterion, criterion_group, criterion_main};
use ravelin_config::{Format, Store, Validate, Violations};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Limits {
    requests_per_second: u32,
}

impl Validate for Limits {
    fn validate(&self) -> Result<(), Violations> {
        Ok(())
    }
}

fn config_read(c: &mut Criterion) {
    let store: Store<Limits> = Store::builder("bench")
        .format(Format::Json)
        .initial_bytes(&br#"{"requests_per_second": 100}"#[..], "bench")
        .build()
        .expect("valid document");
    let rwlock = RwLock::new(Arc::new(Limits {
        requests_per_second: 100,
    }));
    let plain = Arc::new(Limits {
        requests_per_second: 100,
    });

    let mut group = c.benchmark_group("config_read");
    group.bench_function("ravelin", |b| {
        b.iter(|| std::hint::black_box(store.current().requests_per_second))
    });
    group.bench_function("ravelin_load_full", |b| {
        b.iter(|| std::hint::black_box(store.load().requests_per_second))
    });
    group.bench_function("rwlock", |b| {
        b.iter(|| {
            let guard = rwlock.read().expect("not poisoned");
            std::hint::black_box(Arc::clone(&guard).requests_per_second)
        })
    });
    group.bench_function("arc_clone", |b| {
        b.iter(|| std::hint::black_box(Arc::clone(&plain).requests_per_second))
    });
    group.finish();

    // The same reads while a second thread reads the same value in a loop: the request path of a
    // server runs on every core at once, and a lock's shared counter is written by every reader.
    let mut group = c.benchmark_group("config_read_contended");
    group.bench_function("ravelin", |b| {
        contended(b, || store.current().requests_per_second)
    });
    group.bench_function("rwlock", |b| {
        contended(b, || {
            let guard = rwlock.read().expect("not poisoned");
            Arc::clone(&guard).requests_per_second
        })
    });
    group.bench_function("arc_clone", |b| {
        contended(b, || Arc::clone(&plain).requests_per_second)
    });
    group.finish();
}

/// Measures `read` on this thread while another thread runs it continuously.
fn contended(b: &mut criterion::Bencher<'_>, read: impl Fn() -> u32 + Sync) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::black_box(read());
            }
        });
        b.iter(|| std::hint::black_box(read()));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

criterion_group!(benches, config_read);
criterion_main!(benches);
