//! The HTTP/1.1 upstream pool over real loopback sockets (issue 13): sequential requests share
//! one connection, concurrent ones get their own and are reused afterwards, a connection the
//! origin closes is not used again, `max_idle_connections = 0` keeps none, and an idle
//! connection is closed past the idle timeout with no traffic to trigger it.
//!
//! The origin is a hyper server that counts the connections it accepted and the ones that
//! ended. No assertion reads a clock; waits are bounded, a hang is a failure.
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ravelin_proxy::{Forward, Upstream};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

use support::{BOUND, eventually};

/// An origin that answers every request `200 ok`, counting connections.
struct Origin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    /// Held requests wait on it (the `/slow` path) until released.
    release: Arc<Notify>,
    /// Requests waiting on `release`.
    waiting: Arc<AtomicUsize>,
}

impl Origin {
    /// `close_each`: every response says `Connection: close`.
    async fn start(close_each: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let waiting = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(AtomicBool::new(close_each));
        let (count, done, gate, held) = (
            Arc::clone(&accepted),
            Arc::clone(&ended),
            Arc::clone(&release),
            Arc::clone(&waiting),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (done, gate, held, close) = (
                    Arc::clone(&done),
                    Arc::clone(&gate),
                    Arc::clone(&held),
                    Arc::clone(&close),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (gate, held, close) =
                            (Arc::clone(&gate), Arc::clone(&held), Arc::clone(&close));
                        async move {
                            if request.uri().path() == "/slow" {
                                let released = gate.notified();
                                held.fetch_add(1, Ordering::SeqCst);
                                released.await;
                            }
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            if close.load(Ordering::SeqCst) {
                                response.headers_mut().insert(
                                    http::header::CONNECTION,
                                    http::HeaderValue::from_static("close"),
                                );
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            ended,
            release,
            waiting,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `n` GETs of `/slow` through `forward`, each in its own task, once all `n` are held at
/// `origin` (until `origin.release`).
async fn hold(
    origin: &Origin,
    forward: &Forward,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(StatusCode, Bytes)>> {
    let held = (0..n)
        .map(|_| {
            let forward = forward.clone();
            tokio::spawn(async move { get(&forward, "/slow").await })
        })
        .collect();
    eventually(&format!("{n} held requests at the origin"), || {
        origin.waiting.load(Ordering::SeqCst) == n
    })
    .await;
    held
}

/// One GET through `forward`, its body read to the end.
async fn get(forward: &Forward, path: &str) -> (StatusCode, Bytes) {
    let request = Request::get(format!("http://edge.test{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(BOUND, forward.clone().oneshot(request))
        .await
        .expect("answered within the bound")
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let origin = Origin::start(false).await;
    let forward = Forward::new(Upstream::builder("origin", origin.url()).build().unwrap());
    for _ in 0..20 {
        assert_eq!(
            get(&forward, "/").await,
            (StatusCode::OK, Bytes::from("ok"))
        );
    }
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test]
async fn concurrent_requests_get_their_own_connections_then_reuse_them() {
    let origin = Origin::start(false).await;
    let forward = Forward::new(Upstream::builder("origin", origin.url()).build().unwrap());
    // All four are at the origin at once: four connections.
    let held = hold(&origin, &forward, 4).await;
    assert_eq!(origin.accepted(), 4);
    origin.release.notify_waiters();
    for request in held {
        assert_eq!(request.await.unwrap().0, StatusCode::OK);
    }
    // Afterwards they are reused: no new connection for sequential traffic.
    for _ in 0..10 {
        assert_eq!(get(&forward, "/").await.0, StatusCode::OK);
    }
    assert_eq!(origin.accepted(), 4);
}

#[tokio::test]
async fn long_responses_in_flight_do_not_keep_a_finished_connection_from_reuse() {
    let origin = Origin::start(false).await;
    let forward = Forward::new(Upstream::builder("origin", origin.url()).build().unwrap());
    // One connection used and given back first, then many held at the origin (their
    // connections given back pending, busy until released).
    assert_eq!(get(&forward, "/").await.0, StatusCode::OK);
    let held = hold(&origin, &forward, 24).await;
    let before = origin.accepted();
    // Sequential requests meanwhile: one connection between them, whatever is in flight.
    for _ in 0..20 {
        assert_eq!(get(&forward, "/").await.0, StatusCode::OK);
    }
    assert!(
        origin.accepted() <= before + 1,
        "{} new connections for 20 sequential requests",
        origin.accepted() - before
    );
    origin.release.notify_waiters();
    for request in held {
        assert_eq!(request.await.unwrap().0, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_connection_the_origin_closes_is_not_used_again() {
    let origin = Origin::start(true).await;
    let forward = Forward::new(Upstream::builder("origin", origin.url()).build().unwrap());
    for _ in 0..5 {
        assert_eq!(
            get(&forward, "/").await,
            (StatusCode::OK, Bytes::from("ok"))
        );
    }
    assert_eq!(origin.accepted(), 5);
}

#[tokio::test]
async fn no_idle_connections_kept_when_the_pool_is_off() {
    let origin = Origin::start(false).await;
    let forward = Forward::new(
        Upstream::builder("origin", origin.url())
            .max_idle_per_host(0)
            .build()
            .unwrap(),
    );
    for _ in 0..5 {
        assert_eq!(get(&forward, "/").await.0, StatusCode::OK);
    }
    assert_eq!(origin.accepted(), 5);
    // And each is closed once its exchange is over.
    eventually("every connection closed", || origin.ended() == 5).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_past_the_idle_timeout_without_traffic() {
    let origin = Origin::start(false).await;
    let forward = Forward::new(
        Upstream::builder("origin", origin.url())
            .pool_idle_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    assert_eq!(get(&forward, "/").await.0, StatusCode::OK);
    assert_eq!(origin.ended(), 0, "kept for the next request");
    // No further request: the pool's sweep closes it (within the bound).
    eventually("the idle connection closed", || origin.ended() == 1).await;
    // The next request opens a new one.
    assert_eq!(get(&forward, "/").await.0, StatusCode::OK);
    assert_eq!(origin.accepted(), 2);
}
