//! Setup shared by the cache benches (`cache`, `purge_bus`, `shared_tier`), each of which
//! includes this file with `mod common;`: the in-process origin of `benches/cache.rs` (a 4 KiB
//! cacheable page, ready at once) and its request, polling without a runtime, the percentile of
//! sorted timings, the Tokio runtimes and the check for a Redis to run against.
//!
//! Not a bench itself: Cargo only builds the `[[bench]]` targets, and a file in a subdirectory of
//! `benches/` is never taken for one.

// Each bench uses part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use ravelin_test_support::redis as support;
use tokio::runtime::Runtime;
use tower::service_fn;

/// The page's URL, the request of the `cache_hit` bench.
pub(crate) const URL: &str = "http://shop.example/product/7?color=red";

/// Polls a future that is expected to be ready at once (the services of these benches answer
/// without waiting), so a bench measures the services, not a runtime.
pub(crate) fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Reads a body whose frames are all ready.
pub(crate) fn drain<B: hyper::body::Body<Data = Bytes>>(body: B) -> usize {
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    let mut n = 0;
    while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
        if let Some(d) = frame.data_ref() {
            n += d.len();
        }
    }
    n
}

/// The origin's answer: a cacheable 4 KiB HTML page with validators, `Vary` and surrogate keys.
pub(crate) fn page() -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "public, max-age=3600")
        .header("etag", "\"5f3c-1a2b\"")
        .header("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT")
        .header("vary", "accept-encoding")
        .header("surrogate-key", "page product-7")
        .body(Full::new(Bytes::from_static(&[b'x'; 4096])))
        .unwrap_or_default()
}

/// A browser-like `GET url`.
pub(crate) fn request(url: &str) -> Request<()> {
    Request::get(url)
        .header("accept-encoding", "gzip, br")
        .header("user-agent", "bench")
        .body(())
        .unwrap_or_default()
}

/// The origin as a nameable service: every request answered with [`page`], ready at once.
pub(crate) type Inner = tower::util::ServiceFn<
    fn(Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

/// The origin, [`Inner`].
pub(crate) fn inner() -> Inner {
    fn answer(_req: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
        std::future::ready(Ok(page()))
    }
    service_fn(answer as fn(_) -> _)
}

/// The `p` quantile (0 to 1) of `sorted`, which must not be empty.
#[allow(clippy::indexing_slicing)]
pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A current-thread Tokio runtime (for the layer's background tasks; requests are polled with
/// [`now`]).
pub(crate) fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The 2-worker Tokio runtime the Redis benches run their clients on.
pub(crate) fn two_worker_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Whether there is no Redis to run against (no `RAVELIN_REDIS_URL` and no `redis-server`);
/// then it prints that the rows named by `what` are skipped.
pub(crate) fn no_redis(what: &str) -> bool {
    let missing = std::env::var(support::URL_ENV).map_or(true, |u| u.is_empty())
        && support::find_binary().is_none();
    if missing {
        println!(
            "skipped: redis-server not found and {} not set ({what})",
            support::URL_ENV
        );
    }
    missing
}
