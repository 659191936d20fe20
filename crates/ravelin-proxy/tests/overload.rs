//! Overload behaviour over real loopback sockets (issue 13): requests past the in-flight bound
//! and connections past `max_connections` are answered 503 with `Retry-After` at once, while
//! admitted requests complete normally.
//!
//! No assertion reads a wall clock: "at once" is shown by ordering (the 503s arrive while the
//! origin still holds every admitted request, and none of them reaches it).
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusBuilder;
use ravelin_proxy::{Forward, LoadShedLayer, OverloadConfig, ServerConfig, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::ServiceBuilder;

use support::{BOUND, Serving, TestBody, client, eventually, metric, read_whole};

/// An empty request body (an `Empty`, where `support::empty` is a `Full` of no bytes).
fn empty() -> TestBody {
    Empty::new().boxed()
}

// === a held origin ===

/// An origin that answers 200 only once released: every request is held until then.
struct HeldOrigin {
    addr: SocketAddr,
    arrivals: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
    count: Arc<AtomicUsize>,
}

impl HeldOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let arrived = arrived.clone();
                let released = released.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = arrived.send(());
                        let mut released = released.clone();
                        async move {
                            let _ = released.wait_for(|go| *go).await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"held and released",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            arrivals,
            release,
            count,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `n` more requests have arrived.
    async fn arrived(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(BOUND, self.arrivals.recv())
                .await
                .expect("a request reaches the origin")
                .unwrap();
        }
    }

    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// Status, headers and body of one GET through `client`.
async fn get(
    client: &Client<HttpConnector, TestBody>,
    url: String,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = tokio::time::timeout(
        BOUND,
        client.request(Request::get(url).body(empty()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    read_whole(response).await
}

// === load shedding ===

/// With the bound at 3 and the origin holding every request, 3 + 4 concurrent requests: the 4
/// over the bound are answered 503 + Retry-After while the origin still holds the 3 (so at
/// once, not after queueing), and never reach it; the 3 complete normally once released; and
/// their slots are free again afterwards.
#[tokio::test]
async fn requests_past_the_bound_are_shed_at_once_and_admitted_ones_complete() {
    let mut origin = HeldOrigin::start().await;
    let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
    let (shed, service) = metrics::with_local_recorder(&*recorder, || {
        let shed = LoadShedLayer::new(&OverloadConfig {
            max_requests: 3,
            ..OverloadConfig::default()
        });
        let upstream = Upstream::builder("held", origin.url()).build().unwrap();
        let service = ServiceBuilder::new()
            .layer(shed.clone())
            .service(Forward::new(upstream));
        (shed, service)
    });
    let proxy = Serving::start(service, ServerConfig::default(), None).await;
    let client = client();

    let spawn_get = |path: String| {
        let (client, url) = (client.clone(), proxy.url(&path));
        tokio::spawn(async move { get(&client, url).await })
    };
    let admitted: Vec<_> = (0..3)
        .map(|i| spawn_get(format!("/admitted/{i}")))
        .collect();
    origin.arrived(3).await;
    assert_eq!(shed.in_flight(), 3);

    let excess: Vec<_> = (0..4).map(|i| spawn_get(format!("/excess/{i}"))).collect();
    for answer in excess {
        let (status, headers, body) = answer.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(
            String::from_utf8_lossy(&body).contains("at capacity"),
            "{body:?}"
        );
    }
    // Every 503 arrived while the origin still held the admitted three, and no excess request
    // reached it.
    assert_eq!(origin.count.load(Ordering::SeqCst), 3);
    assert!(admitted.iter().all(|task| !task.is_finished()));
    assert_eq!(
        metric(
            &recorder,
            "ravelin_proxy_shed_total{reason=\"max_requests\"}"
        ),
        4.0
    );

    origin.release();
    for answer in admitted {
        let (status, _, body) = answer.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "held and released");
    }
    // A slot is held until its response body is done, then freed.
    eventually("the admitted requests' slots are freed", || {
        shed.in_flight() == 0
    })
    .await;
    let (status, _, _) = get(&client, proxy.url("/after")).await;
    assert_eq!(status, StatusCode::OK);
    proxy.stop_quietly(BOUND).await;
}

/// Writes one HTTP/1.1 GET on a fresh connection.
async fn raw_get(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: edge.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

/// Reads until the peer closes (bounded).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut text))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    String::from_utf8_lossy(&text).into_owned()
}

/// With `max_connections = 2` held by two slow requests, new connections (HTTP/1.1 and
/// HTTP/2) are accepted and answered 503 + Retry-After and closed, while the origin still
/// holds the two; the two complete normally once released.
#[tokio::test]
async fn connections_past_max_connections_are_answered_503_at_once() {
    let mut origin = HeldOrigin::start().await;
    let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
    let upstream = metrics::with_local_recorder(&*recorder, || {
        Upstream::builder("held", origin.url()).build().unwrap()
    });
    let server = ServerConfig::default()
        .max_connections(2)
        .overflow_connections(4)
        .retry_after(Duration::from_secs(3));
    // The server registers its handles when bound: bind under the recorder too.
    let proxy = Serving::start(Forward::new(upstream), server, Some(&recorder)).await;

    let mut first = raw_get(proxy.addr, "/one").await;
    let mut second = raw_get(proxy.addr, "/two").await;
    origin.arrived(2).await;

    let mut third = raw_get(proxy.addr, "/three").await;
    let answer = read_to_close(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nretry-after: 3\r\n"), "{answer}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains("connection limit"), "{answer}");

    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let (status, headers, _) = get(&h2, proxy.url("/four")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "3");

    // Both answers came while the two admitted requests were held at the origin.
    assert_eq!(origin.count.load(Ordering::SeqCst), 2);
    assert_eq!(
        metric(
            &recorder,
            "ravelin_proxy_connections_rejected_total{reason=\"max_connections\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &recorder,
            "ravelin_proxy_shed_total{reason=\"max_connections\"}"
        ),
        2.0
    );
    assert_eq!(metric(&recorder, "ravelin_proxy_connections_total"), 2.0);

    origin.release();
    for stream in [&mut first, &mut second] {
        let mut head = [0u8; 12];
        tokio::time::timeout(BOUND, stream.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    drop((first, second));
    proxy.stop_quietly(BOUND).await;
}

/// At `max_connections = 2`, one slot held by a request and one by a socket that has sent
/// nothing: a new connection takes the silent socket's slot (closed as `reclaimed`, as nginx
/// reuses connections with nothing in flight) and is served; the next one, with both slots
/// carrying requests, is answered 503 at once.
#[tokio::test]
async fn a_connection_with_nothing_in_flight_makes_room_before_anyone_gets_503() {
    let mut origin = HeldOrigin::start().await;
    let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
    let upstream = metrics::with_local_recorder(&*recorder, || {
        Upstream::builder("held", origin.url()).build().unwrap()
    });
    let config = ServerConfig::default()
        .max_connections(2)
        .overload(&OverloadConfig {
            overflow_connections: 4,
            ..OverloadConfig::default()
        });
    let proxy = Serving::start(Forward::new(upstream), config, Some(&recorder)).await;

    let mut busy = raw_get(proxy.addr, "/busy").await;
    origin.arrived(1).await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    eventually("the silent socket holds the second slot", || {
        metric(&recorder, "ravelin_proxy_connections_active") == 2.0
    })
    .await;

    let mut newcomer = raw_get(proxy.addr, "/newcomer").await;
    // The newcomer's request reached the origin: it was admitted, in the silent socket's slot.
    origin.arrived(1).await;
    assert_eq!(read_to_close(&mut silent).await, "");
    eventually("the silent socket is counted as reclaimed", || {
        metric(
            &recorder,
            "ravelin_proxy_connections_closed_total{reason=\"reclaimed\"}",
        ) == 1.0
    })
    .await;

    // Both slots now carry requests: nothing to reclaim, so 503 at once.
    let mut late = raw_get(proxy.addr, "/late").await;
    let answer = read_to_close(&mut late).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(origin.count.load(Ordering::SeqCst), 2);
    assert_eq!(
        metric(
            &recorder,
            "ravelin_proxy_connections_rejected_total{reason=\"max_connections\"}"
        ),
        1.0
    );

    origin.release();
    for stream in [&mut busy, &mut newcomer] {
        let mut head = [0u8; 12];
        tokio::time::timeout(BOUND, stream.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    drop((busy, newcomer));
    proxy.stop_quietly(BOUND).await;
}

#[test]
fn overflow_and_retry_after_bounds_are_checked() {
    let base = ServerConfig::default;
    let error = base()
        .overflow_connections(ServerConfig::OVERFLOW_CONNECTIONS_LIMIT + 1)
        .check()
        .unwrap_err();
    assert!(
        error.to_string().contains("overflow_connections"),
        "{error}"
    );
    for bad in [Duration::ZERO, Duration::from_secs(3601)] {
        let error = base().retry_after(bad).check().unwrap_err();
        assert!(error.to_string().contains("retry_after"), "{error}");
    }
    base()
        .overflow_connections(ServerConfig::OVERFLOW_CONNECTIONS_LIMIT)
        .retry_after(Duration::from_secs(3600))
        .check()
        .unwrap();
}
