//! Upstream health over real loopback sockets (issue 13): a failing upstream is contacted at
//! most once per breaker window; a failed connection attempt of a bodiless idempotent request
//! is retried, within the retry budget, and never for other requests; an upstream's host name
//! keeps its last good addresses when lookups fail or come back empty.
//!
//! Time-based logic (cooldowns, the budget's window, DNS refresh) runs on a `ManualClock`; the
//! behaviour runs over real sockets. No assertion reads a wall clock.
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use ravelin_primitives::clock::ManualClock;
use ravelin_proxy::dns::Lookup;
use ravelin_proxy::{DnsConfig, Forward, HealthConfig, NameResolver, RetryConfig, Upstream};
use tokio::net::{TcpListener, TcpSocket};
use tower::ServiceExt;

use support::{BOUND, eventually, metric, read_whole};

// === per-upstream health ===

/// A listener that counts connections and closes each at once: an upstream that is up at the
/// TCP level and answers nothing. `healthy` turns it into a 200 origin.
struct CountingListener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl CountingListener {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(false));
        let (count, up) = (Arc::clone(&accepted), Arc::clone(&healthy));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                if !up.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"up"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            accepted,
            healthy,
        }
    }

    fn contacts(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// One GET through `forward` (no server in front: the upstream side is what is tested).
async fn forward_get(forward: &Forward, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let request = Request::get(format!("http://edge.test{path}"))
        .header("host", "edge.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(BOUND, forward.clone().oneshot(request))
        .await
        .unwrap()
        .unwrap();
    read_whole(response).await
}

/// An upstream that accepts and closes every connection: after 3 failures its circuit opens;
/// then, over 10 s of (manual) time with 5 requests every 250 ms, it is contacted at most once
/// per `open_for` (the shortest window), every other request being answered 503 with
/// Retry-After without a connection. Once it is healthy, the next probe closes the circuit.
#[tokio::test]
async fn a_failing_upstream_is_contacted_at_most_once_per_breaker_window() {
    let dead = CountingListener::start().await;
    let clock = ManualClock::new();
    let open_for = Duration::from_secs(1);
    let forward = Forward::new(
        Upstream::builder("flaky", format!("http://{}", dead.addr))
            .health(HealthConfig {
                consecutive_failures: 3,
                open_for,
                max_open_for: Duration::from_secs(4),
                ..HealthConfig::default()
            })
            .clock(clock.clone())
            .build()
            .unwrap(),
    );

    for _ in 0..3 {
        let (status, _, _) = forward_get(&forward, "/").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(dead.contacts(), 3);

    let step = Duration::from_millis(250);
    let steps = 40_u32;
    let (mut bad_gateway, mut refused) = (0, 0);
    for _ in 0..steps {
        for _ in 0..5 {
            let (status, headers, _) = forward_get(&forward, "/").await;
            match status {
                StatusCode::BAD_GATEWAY => bad_gateway += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    refused += 1;
                    let seconds: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                    assert!((1..=6).contains(&seconds), "{seconds}");
                }
                other => panic!("unexpected {other}"),
            }
        }
        clock.advance(step);
    }
    let elapsed = step * steps;
    let windows = usize::try_from(elapsed.as_millis() / open_for.as_millis()).unwrap();
    let probes = dead.contacts() - 3;
    // Each contact was a 502; every other request was refused without one.
    assert_eq!(bad_gateway, probes);
    assert_eq!(refused + bad_gateway, 200);
    assert!(probes <= windows, "{probes} probes in {windows} windows");
    // The circuit does probe: cooldowns of 1–1.5 s, 2–3 s, then 4–6 s fit at least twice in 10 s.
    assert!(probes >= 2, "{probes} probes");

    // The upstream recovers: the first request after the cooldown probes it and closes the
    // circuit; the next ones go through.
    dead.healthy.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(10));
    for _ in 0..3 {
        let (status, _, body) = forward_get(&forward, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "up");
    }
}

// === retries ===

/// A recorder that forwards to Prometheus and runs `hook` when the named counter is
/// incremented: lets a test act at the exact moment the proxy decides to retry.
struct HookRecorder {
    inner: PrometheusRecorder,
    name: &'static str,
    hook: Arc<dyn Fn() + Send + Sync>,
}

struct HookedCounter {
    inner: metrics::Counter,
    hook: Arc<dyn Fn() + Send + Sync>,
}

impl metrics::CounterFn for HookedCounter {
    fn increment(&self, value: u64) {
        self.inner.increment(value);
        (self.hook)();
    }

    fn absolute(&self, value: u64) {
        self.inner.absolute(value);
    }
}

impl metrics::Recorder for HookRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        let inner = self.inner.register_counter(key, meta);
        if key.name() == self.name {
            metrics::Counter::from_arc(Arc::new(HookedCounter {
                inner,
                hook: Arc::clone(&self.hook),
            }))
        } else {
            inner
        }
    }

    fn register_gauge(&self, key: &metrics::Key, meta: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.inner.register_gauge(key, meta)
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.inner.register_histogram(key, meta)
    }
}

/// A port that refuses connections until `listen` is called on it: bound, not listening.
/// Once listening, it serves 200s and counts the requests it gets.
struct RefusingFirst {
    addr: SocketAddr,
    socket: Arc<Mutex<Option<TcpSocket>>>,
    served: Arc<AtomicUsize>,
}

impl RefusingFirst {
    fn new() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        Self {
            addr,
            socket: Arc::new(Mutex::new(Some(socket))),
            served: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Starts listening (once) and serving. Called from inside the runtime.
    fn listen(socket: &Mutex<Option<TcpSocket>>, served: &Arc<AtomicUsize>) {
        let Some(socket) = socket.lock().unwrap().take() else {
            return;
        };
        let listener = socket.listen(16).unwrap();
        let served = Arc::clone(served);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let served = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                        served.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"second time lucky",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    /// A recorder that makes the port listen when the proxy counts its first retry, i.e.
    /// after the first attempt was refused and before the second is made.
    fn recorder(&self) -> HookRecorder {
        let (socket, served) = (Arc::clone(&self.socket), Arc::clone(&self.served));
        HookRecorder {
            inner: PrometheusBuilder::new().build_recorder(),
            name: "ravelin_proxy_upstream_retries_total",
            hook: Arc::new(move || Self::listen(&socket, &served)),
        }
    }
}

/// A GET whose first connection attempt is refused is retried and served; a POST in the same
/// situation is not retried (502), and neither is a GET with a body.
#[tokio::test]
async fn a_refused_get_is_retried_and_a_post_never() {
    let origin = RefusingFirst::new();
    let recorder = origin.recorder();
    let forward = metrics::with_local_recorder(&recorder, || {
        Forward::new(
            Upstream::builder("restarting", format!("http://{}", origin.addr))
                .build()
                .unwrap(),
        )
    });
    let retries = |recorder: &HookRecorder| {
        metric(
            &recorder.inner,
            "ravelin_proxy_upstream_retries_total{upstream=\"restarting\"}",
        )
    };

    // POST first, while the port still refuses: answered 502, never retried.
    let post = Request::post("http://edge.test/form")
        .header("host", "edge.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(BOUND, forward.clone().oneshot(post))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    // A GET with a body: its body is not kept, so it cannot be sent again.
    let with_body = Request::get("http://edge.test/search")
        .header("host", "edge.test")
        .body(Full::new(Bytes::from_static(b"query")))
        .unwrap();
    let response = tokio::time::timeout(BOUND, forward.clone().oneshot(with_body))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(retries(&recorder), 0.0);
    assert_eq!(origin.served.load(Ordering::SeqCst), 0);

    // A bodiless GET: the first attempt is refused, the retry finds the port listening.
    let (status, _, body) = forward_get(&forward, "/page").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "second time lucky");
    assert_eq!(retries(&recorder), 1.0);
    assert_eq!(origin.served.load(Ordering::SeqCst), 1);
}

/// A stream of 200 GETs to a port that refuses everything (health checking off, so every
/// request tries): with `max_retries = 3`, the retries stay within 10 % of the requests plus
/// the reserve of 1 per second over the 10 s window, and the rest are counted as refused by
/// the budget.
#[tokio::test]
async fn retries_never_exceed_the_budget_under_a_stream_of_failures() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let recorder = PrometheusBuilder::new().build_recorder();
    let clock = ManualClock::new();
    let forward = metrics::with_local_recorder(&recorder, || {
        Forward::new(
            Upstream::builder("gone", format!("http://{closed}"))
                .health(HealthConfig::disabled())
                .retry(RetryConfig {
                    max_retries: 3,
                    budget_ratio: 0.1,
                    min_retries_per_second: 1,
                    backoff_base: Duration::ZERO,
                    backoff_max: Duration::ZERO,
                })
                .clock(clock.clone())
                .build()
                .unwrap(),
        )
    });
    let requests = 200_u32;
    for _ in 0..requests {
        let (status, _, _) = forward_get(&forward, "/").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    let retries = metric(
        &recorder,
        "ravelin_proxy_upstream_retries_total{upstream=\"gone\"}",
    );
    let exhausted = metric(
        &recorder,
        "ravelin_proxy_upstream_retry_budget_exhausted_total{upstream=\"gone\"}",
    );
    // Within one 10 s window (the clock does not move): 10 % of 200 plus 1/s × 10 s.
    let budget = 0.1 * f64::from(requests) + 10.0;
    assert!(retries <= budget, "{retries} retries, budget {budget}");
    assert!(retries >= budget - 1.0, "the budget is used: {retries}");
    // Every request that wanted a retry and found none left is counted, once.
    assert!(exhausted > 0.0);
    assert!(exhausted <= f64::from(requests));
}

// === upstream names ===

/// Answers the first lookup with `first`, then fails, then answers with no address, and so on.
#[derive(Debug)]
struct FlakyResolver {
    first: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl NameResolver for FlakyResolver {
    fn lookup(&self, host: &str, port: u16) -> Lookup {
        assert_eq!(host, "origin.test");
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let first = SocketAddr::new(self.first.ip(), port);
        Box::pin(async move {
            match call {
                0 => Ok(vec![first]),
                n if n % 2 == 1 => Err(io::Error::other("resolver unreachable")),
                _ => Ok(Vec::new()),
            }
        })
    }
}

/// An upstream named by a host: the first lookup's address keeps serving while later lookups
/// fail or come back empty, each counted by result.
#[tokio::test]
async fn a_failing_or_empty_lookup_keeps_the_last_good_addresses() {
    let origin = CountingListener::start().await;
    origin.healthy.store(true, Ordering::SeqCst);
    let recorder = PrometheusBuilder::new().build_recorder();
    let clock = ManualClock::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = metrics::with_local_recorder(&recorder, || {
        Upstream::builder(
            "named",
            format!("http://origin.test:{}", origin.addr.port()),
        )
        .resolver(FlakyResolver {
            first: origin.addr,
            calls: Arc::clone(&calls),
        })
        .dns(DnsConfig::default())
        // No pooling: every request opens a connection, so every request resolves.
        .max_idle_per_host(0)
        .clock(clock.clone())
        .build()
        .unwrap()
    });
    assert_eq!(upstream.resolved_addresses(), None);
    let forward = Forward::new(upstream.clone());
    let lookups = |result: &str| {
        metric(
            &recorder,
            &format!(
                "ravelin_proxy_upstream_dns_lookups_total{{upstream=\"named\",result=\"{result}\"}}"
            ),
        )
    };

    let (status, _, _) = forward_get(&forward, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstream.resolved_addresses(), Some(vec![origin.addr]));
    assert_eq!(lookups("ok"), 1.0);

    // Within `refresh`: no lookup.
    let (status, _, _) = forward_get(&forward, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    for (round, result) in [(1, "error"), (2, "empty"), (3, "error")] {
        clock.advance(Duration::from_secs(31));
        // The set is stale: this connection uses it and starts a lookup in the background.
        let (status, _, _) = forward_get(&forward, "/").await;
        assert_eq!(status, StatusCode::OK);
        let want = if result == "error" {
            (round + 1) / 2
        } else {
            1
        };
        eventually("the background lookup is counted", || {
            lookups(result) == f64::from(want)
        })
        .await;
        assert_eq!(upstream.resolved_addresses(), Some(vec![origin.addr]));
        let (status, _, _) = forward_get(&forward, "/").await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        metric(
            &recorder,
            "ravelin_proxy_upstream_addresses{upstream=\"named\"}"
        ),
        1.0
    );
}
