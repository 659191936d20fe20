//! `guard_overhead`: what a `GuardLayer` adds to a request whose guard allows it.
//!
//! Every function sends one request through a service whose inner service answers at once,
//! and drives `poll_ready`, `call` and the response future to completion with a no-op waker:
//! no runtime, so the numbers are the layers' own cost.
//!
//! - `bare`: the inner service alone;
//! - `allow_guard`: a no-op synchronous guard through `GuardLayer` (breaker, kill switch,
//!   panic containment, metrics without a recorder, as in a library test);
//! - `allow_guard_prometheus`: the same with its metric handles bound to a Prometheus
//!   recorder, as in a proxy binary;
//! - `allow_guard_time_every_call`: `allow_guard` with `duration_sampling(1)`, i.e. every
//!   evaluation recorded in the duration histogram (the default records one in 16; the two
//!   clock reads that enforce the budget happen on every call either way);
//! - `tower_http_catch_panic`: tower-http's `CatchPanicLayer` over the same inner service, for
//!   reference (it catches panics of the whole service and boxes the response body).
//!
//! Run: `cargo bench -p ravelin --no-default-features --features failsafe --bench failsafe`

#![allow(clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response};
use http_body_util::Empty;
use ravelin::failsafe::{
    DEFAULT_DURATION_SAMPLING, FailurePolicy, GuardLayer, KillSwitch, Verdict, guard_fn,
};
use tower::{Layer, Service, service_fn};

/// One request: `poll_ready`, `call`, and the response future polled to completion.
fn one_request<S>(service: &mut S)
where
    S: Service<Request<()>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    while service.poll_ready(&mut cx).is_pending() {}
    let mut future = pin!(service.call(Request::new(())));
    loop {
        if let Poll::Ready(response) = future.as_mut().poll(&mut cx) {
            drop(black_box(response));
            return;
        }
    }
}

type Ready = std::future::Ready<Result<Response<Empty<Bytes>>, Infallible>>;

/// The trivial origin: answers at once with an empty 200.
fn inner()
-> impl Service<Request<()>, Response = Response<Empty<Bytes>>, Error = Infallible, Future = Ready>
+ Clone {
    service_fn(|_request: Request<()>| std::future::ready(Ok(Response::new(Empty::new()))))
}

/// The no-op guard's layer, timing one evaluation in `duration_sampling`.
fn guard_layer(duration_sampling: u32) -> GuardLayer<impl ravelin::failsafe::Guard> {
    GuardLayer::builder(guard_fn("noop", |_head| Ok(Verdict::allow())))
        .policy(FailurePolicy::open())
        .kill_switch(KillSwitch::standalone("noop"))
        .duration_sampling(duration_sampling)
        .build()
        .expect("the bench's guard settings are in range")
}

fn guard_overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("guard_overhead");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);

    let mut bare = inner();
    group.bench_function("bare", |b| b.iter(|| one_request(&mut bare)));

    let mut guarded = guard_layer(DEFAULT_DURATION_SAMPLING).layer(inner());
    group.bench_function("allow_guard", |b| b.iter(|| one_request(&mut guarded)));

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let mut recorded = metrics::with_local_recorder(&recorder, || {
        guard_layer(DEFAULT_DURATION_SAMPLING).layer(inner())
    });
    group.bench_function("allow_guard_prometheus", |b| {
        b.iter(|| one_request(&mut recorded))
    });

    let mut timed = guard_layer(1).layer(inner());
    group.bench_function("allow_guard_time_every_call", |b| {
        b.iter(|| one_request(&mut timed))
    });

    let mut catch_panic = tower_http::catch_panic::CatchPanicLayer::new().layer(inner());
    group.bench_function("tower_http_catch_panic", |b| {
        b.iter(|| one_request(&mut catch_panic))
    });

    group.finish();
}

// `criterion_main!` written out: the macros generate undocumented public items.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    guard_overhead(&mut criterion);
    criterion.final_summary();
}
