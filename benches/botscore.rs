//! ravelin-botscore: the cost of scoring one request.
//!
//! Group `botscore_score`:
//! - `ua_only`: a User-Agent-only record with the shipped model;
//! - `full_request`: whole request heads (browsers, libraries, crawlers, scrapers from the seeded
//!   generator, cycled) with the shipped model;
//! - `max_features`: the same heads with a model at the feature limit (256 rows, every kind);
//! - `guard_check`: `BotGuard::check` on the same heads (scoring, route lookup, verdict with the
//!   score header and extensions), i.e. what the tower layer pays besides its own bookkeeping.
//!
//! Reproduce: `cargo bench -p ravelin --no-default-features --features botscore-train --bench botscore`
//! (the request generator, `ravelin_botscore::synth`, is part of the trainer)

// A benchmark harness, not the data plane: a failed setup must stop the run loudly, the cycling
// indexes stay in bounds by construction, and criterion's macros generate undocumented items.
#![allow(clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, Request, Version};
use ravelin_botscore::synth::{ClientKind, Generator};
use ravelin_botscore::{BotGuard, Model, RequestView, Scorer, max_features_model};
use ravelin_failsafe::{Guard, RequestHead};

/// A fixed, mixed set of request heads: mostly browsers, the rest automation.
fn heads() -> Vec<(Version, HeaderMap)> {
    let mut generator = Generator::new(20_251_118);
    let kinds = [
        ClientKind::Browser,
        ClientKind::Browser,
        ClientKind::Browser,
        ClientKind::Browser,
        ClientKind::Curl,
        ClientKind::Python,
        ClientKind::Go,
        ClientKind::HeadlessChrome,
        ClientKind::Scraper,
        ClientKind::SpoofingBrowser,
        ClientKind::Crawler,
    ];
    (0..64)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let req = generator.request(kind, None);
            (req.version, req.header_map())
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let builtin = match Model::builtin() {
        Ok(model) => model,
        Err(e) => panic!("the shipped model must load: {e}"),
    };
    let max = max_features_model();
    assert_eq!(max.features().len(), 256);
    let heads = heads();
    let requests: Vec<Request<()>> = heads
        .iter()
        .map(|(version, headers)| {
            let mut r = Request::new(());
            *r.version_mut() = *version;
            *r.headers_mut() = headers.clone();
            r
        })
        .collect();
    let uas = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "python-requests/2.32.3",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1",
    ];
    let guard = match BotGuard::builder(Scorer::from_model(builtin.clone())).build() {
        Ok(guard) => guard,
        Err(e) => panic!("guard: {e}"),
    };

    let mut group = c.benchmark_group("botscore_score");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .throughput(Throughput::Elements(1));

    let mut i = 0usize;
    group.bench_function("ua_only", |b| {
        b.iter(|| {
            i = (i + 1) % uas.len();
            black_box(builtin.score(&RequestView::user_agent_only(Some(black_box(uas[i])))))
        })
    });
    let mut i = 0usize;
    group.bench_function("full_request", |b| {
        b.iter(|| {
            i = (i + 1) % heads.len();
            let (version, headers) = &heads[i];
            black_box(builtin.score(&RequestView::new(*version, black_box(headers))))
        })
    });
    let mut i = 0usize;
    group.bench_function("max_features", |b| {
        b.iter(|| {
            i = (i + 1) % heads.len();
            let (version, headers) = &heads[i];
            black_box(max.score(&RequestView::new(*version, black_box(headers))))
        })
    });
    let mut i = 0usize;
    group.bench_function("guard_check", |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            let head = RequestHead::from_request(&requests[i]);
            black_box(guard.check(black_box(&head)).into_inner())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
