//! Connection hygiene over real loopback sockets: the first-head deadline, idle timeouts for
//! HTTP/1.1 and HTTP/2, per-IP budgets grouped by prefix, and config bounds.
//!
//! No assertion is on timing: timeouts are configured short (200 ms) and every wait has a
//! generous bound ([`BOUND`]), so a slow machine makes a test slower, never wrong.
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use ravelin_proxy::{ServeSummary, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A bound on every wait: a hang is a failure, not a timing measurement.
const BOUND: Duration = Duration::from_secs(10);
/// The short timeout the tests configure.
const SHORT: Duration = Duration::from_millis(200);
/// A timeout long enough never to fire during a test.
const LONG: Duration = Duration::from_secs(60);

type TestBody = BoxBody<Bytes, Infallible>;

/// `/big`'s length: far more than loopback's socket buffers hold, so a client that does not
/// read stops the server's writes.
const BIG_BODY: usize = 32 * 1024 * 1024;
const BIG_CHUNK: usize = 256 * 1024;
type Chunks = mpsc::Sender<Bytes>;

/// A server with its own metrics recorder (so counts belong to this test alone) and a service
/// that answers `/` with `ok`, `/stream` with a body the test writes through [`Chunks`], and
/// `/big` with [`BIG_BODY`] bytes at once.
struct Harness {
    addr: SocketAddr,
    recorder: Arc<PrometheusRecorder>,
    streams: mpsc::UnboundedReceiver<Chunks>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ServeSummary>,
}

impl Harness {
    async fn start(config: ServerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
        // The server registers its metric handles when created: with this test's recorder.
        let server = metrics::with_local_recorder(&*recorder, || {
            Server::from_listener(listener, config).unwrap()
        });
        let (streams_tx, streams) = mpsc::unbounded_channel::<Chunks>();
        let service = tower::service_fn(move |request: Request<Incoming>| {
            let streams_tx = streams_tx.clone();
            async move {
                let body: TestBody = if request.uri().path() == "/stream" {
                    let (chunks, rx) = mpsc::channel::<Bytes>(4);
                    streams_tx.send(chunks).unwrap();
                    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
                    });
                    StreamBody::new(frames).boxed()
                } else if request.uri().path() == "/big" {
                    let chunk = Bytes::from(vec![b'x'; BIG_CHUNK]);
                    let frames = futures_util::stream::iter(
                        (0..BIG_BODY / BIG_CHUNK)
                            .map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
                    );
                    StreamBody::new(frames).boxed()
                } else {
                    Full::new(Bytes::from_static(b"ok")).boxed()
                };
                Ok::<_, Infallible>(Response::new(body))
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(service, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            recorder,
            streams,
            stop: Some(stop),
            task,
        }
    }

    /// The value of one metric series (`name` with its labels, as rendered), 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let rendered = self.recorder.handle().render();
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    fn closed(&self, reason: &str) -> f64 {
        self.metric(&format!(
            "ravelin_proxy_connections_closed_total{{reason=\"{reason}\"}}"
        ))
    }

    /// Waits (bounded) until `series` reads `value`.
    async fn wait_metric(&self, series: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + BOUND;
        while self.metric(series) != value {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} stayed at {} instead of {value}",
                self.metric(series)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_closed(&self, reason: &str, count: f64) {
        self.wait_metric(
            &format!("ravelin_proxy_connections_closed_total{{reason=\"{reason}\"}}"),
            count,
        )
        .await;
    }

    async fn next_stream(&mut self) -> Chunks {
        tokio::time::timeout(BOUND, self.streams.recv())
            .await
            .unwrap()
            .unwrap()
    }

    async fn stop(mut self) -> ServeSummary {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(BOUND, self.task)
            .await
            .unwrap()
            .unwrap()
    }
}

/// Reads until the peer closes (EOF or reset), bounded. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {BOUND:?}; read so far: {seen:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends one keep-alive `GET /` and reads its `ok` response.
async fn get_ok(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the response: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{seen:?}");
}

async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 (prior knowledge) client connection; the handle resolves when the server ends it.
async fn h2_connect(
    addr: SocketAddr,
) -> (H2Sender, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

async fn h2_get(sender: &mut H2Sender, path: &str) -> Response<Incoming> {
    let request = Request::get(format!("http://x{path}"))
        .body(Empty::new())
        .unwrap();
    tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .unwrap()
        .unwrap()
}

async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(BOUND, body.frame()).await.unwrap()?;
        // hyper may end the stream with an empty DATA frame.
        if let Ok(data) = frame.unwrap().into_data()
            && !data.is_empty()
        {
            return Some(data);
        }
    }
}

#[tokio::test]
async fn silent_and_stalled_connections_are_closed_and_free_their_slots() {
    let proxy = Harness::start(
        ServerConfig::default()
            .max_connections(4)
            .request_head_timeout(SHORT)
            .header_read_timeout(LONG)
            .idle_timeout(LONG),
    )
    .await;
    // Four connections take every slot without ever delivering a request head: one silent,
    // one silent after a TCP half-close-free idle, one with a partial HTTP/1.1 head, one with
    // only the HTTP/2 preface.
    let mut stalled = Vec::new();
    for opening in [
        &b""[..],
        &b""[..],
        &b"GET / HT"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        stalled.push(stream);
    }
    // All four are accepted and hold their slots.
    proxy
        .wait_metric("ravelin_proxy_connections_active", 4.0)
        .await;
    // A real client waits in the backlog until the deadline frees a slot, then is served.
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    get_ok(&mut client).await;
    for stream in &mut stalled {
        read_until_closed(stream).await;
    }
    proxy.wait_closed("head_timeout", 4.0).await;
    // The served connection had its head in time: it is not closed by the head deadline.
    assert_eq!(proxy.metric("ravelin_proxy_connections_active"), 1.0);
    get_ok(&mut client).await;
    drop(client);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_http1_keep_alive_connection_is_closed() {
    let proxy = Harness::start(
        ServerConfig::default()
            .idle_timeout(SHORT)
            .request_head_timeout(LONG)
            .header_read_timeout(LONG),
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    get_ok(&mut stream).await;
    get_ok(&mut stream).await;
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    proxy.wait_closed("idle", 1.0).await;
    assert_eq!(proxy.closed("error"), 0.0);
    proxy.stop().await;
}

/// hyper's HTTP/1.1 `header_read_timeout` starts when the previous response is done, so it
/// bounds each later request on a keep-alive connection: the wait before its first byte and
/// a head dribbled byte by byte alike.
#[tokio::test]
async fn later_http1_heads_are_bounded_by_header_read_timeout() {
    let proxy = Harness::start(
        ServerConfig::default()
            .header_read_timeout(SHORT)
            .request_head_timeout(LONG)
            .idle_timeout(LONG),
    )
    .await;
    // The gap before the next head.
    let mut quiet = TcpStream::connect(proxy.addr).await.unwrap();
    get_ok(&mut quiet).await;
    read_until_closed(&mut quiet).await;
    // A next head that never completes.
    let mut dribbling = TcpStream::connect(proxy.addr).await.unwrap();
    get_ok(&mut dribbling).await;
    let (mut reader, mut writer) = dribbling.into_split();
    let dribble = tokio::spawn(async move {
        let _ = writer.write_all(b"GET / HTTP/1.1\r\n").await;
        while writer.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(BOUND, reader.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "dribbling connection still open");
    dribble.abort();
    proxy.wait_closed("header_read_timeout", 2.0).await;
    assert_eq!(proxy.closed("idle"), 0.0);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_http2_connection_gets_goaway_but_a_streaming_one_stays() {
    let mut proxy = Harness::start(
        ServerConfig::default()
            .idle_timeout(SHORT)
            .request_head_timeout(LONG),
    )
    .await;
    // B: a response that streams for as long as the test wants.
    let (mut b, b_conn) = h2_connect(proxy.addr).await;
    let response = h2_get(&mut b, "/stream").await;
    assert_eq!(response.status(), StatusCode::OK);
    let chunks = proxy.next_stream().await;
    let mut body = response.into_body();
    chunks.send(Bytes::from_static(b"first")).await.unwrap();
    assert_eq!(next_chunk(&mut body).await.unwrap(), "first");

    // A: one short request, then nothing. The server ends it with GOAWAY and a clean close.
    let (mut a, a_conn) = h2_connect(proxy.addr).await;
    let response = h2_get(&mut a, "/").await;
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
    let ended = tokio::time::timeout(BOUND, a_conn).await.unwrap().unwrap();
    assert!(
        ended.is_ok(),
        "idle HTTP/2 connection ended badly: {ended:?}"
    );
    proxy.wait_closed("idle", 1.0).await;
    // Several more idle periods pass; B's request has been in flight all along.
    tokio::time::sleep(SHORT * 3).await;
    assert!(!b_conn.is_finished(), "streaming connection was closed");
    chunks.send(Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(next_chunk(&mut body).await.unwrap(), "second");
    // No GOAWAY either: B still takes new requests.
    let response = h2_get(&mut b, "/").await;
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
    // Once the stream ends, B is idle and is closed in its turn.
    drop(chunks);
    let last = next_chunk(&mut body).await;
    assert!(last.is_none(), "{last:?}");
    let ended = tokio::time::timeout(BOUND, b_conn).await.unwrap().unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    proxy.wait_closed("idle", 2.0).await;
    assert_eq!(proxy.closed("error"), 0.0);
    proxy.stop().await;
}

#[tokio::test]
async fn per_ip_budget_is_shared_by_an_ipv4_prefix() {
    // 127.0.0.2 and 127.0.0.3 share one /24: the second is refused while the first is open.
    let grouped = Harness::start(
        ServerConfig::default()
            .max_connections_per_ip(1)
            .per_ip_ipv4_prefix_len(24),
    )
    .await;
    let mut first = connect_from("127.0.0.2", grouped.addr).await;
    get_ok(&mut first).await;
    let mut second = connect_from("127.0.0.3", grouped.addr).await;
    let _ = second.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let served = read_until_closed(&mut second).await;
    assert!(
        served.is_empty(),
        "second /24 neighbour was served: {served:?}"
    );
    grouped
        .wait_metric(
            "ravelin_proxy_connections_rejected_total{reason=\"per_ip_limit\"}",
            1.0,
        )
        .await;
    // The budget is the prefix's, not the address's: when the first closes, the neighbour fits.
    drop(first);
    grouped
        .wait_metric("ravelin_proxy_connections_active", 0.0)
        .await;
    let mut third = connect_from("127.0.0.3", grouped.addr).await;
    get_ok(&mut third).await;
    drop(third);
    grouped.stop().await;

    // With one address per budget (the IPv4 default), the same two are both served.
    let exact = Harness::start(ServerConfig::default().max_connections_per_ip(1)).await;
    let mut first = connect_from("127.0.0.2", exact.addr).await;
    get_ok(&mut first).await;
    let mut second = connect_from("127.0.0.3", exact.addr).await;
    get_ok(&mut second).await;
    assert_eq!(
        exact.metric("ravelin_proxy_connections_rejected_total{reason=\"per_ip_limit\"}"),
        0.0
    );
    drop((first, second));
    exact.stop().await;
}

#[tokio::test]
async fn out_of_bounds_config_is_refused_naming_the_field() {
    let base = ServerConfig::default;
    let cases: Vec<(ServerConfig, &str)> = vec![
        (base().max_connections(0), "max_connections"),
        (base().max_connections((1 << 61) + 1), "max_connections"),
        (
            base().max_connections(ServerConfig::MAX_CONNECTIONS_LIMIT + 1),
            "max_connections",
        ),
        (
            base().max_connections(10).max_connections_per_ip(11),
            "max_connections_per_ip",
        ),
        (base().per_ip_ipv4_prefix_len(0), "per_ip_ipv4_prefix_len"),
        (base().per_ip_ipv4_prefix_len(33), "per_ip_ipv4_prefix_len"),
        (base().per_ip_ipv6_prefix_len(0), "per_ip_ipv6_prefix_len"),
        (base().per_ip_ipv6_prefix_len(129), "per_ip_ipv6_prefix_len"),
        (base().max_headers(0), "max_headers"),
        (base().max_headers(20_000_000), "max_headers"),
        (base().max_header_bytes(8191), "max_header_bytes"),
        (base().max_header_bytes((1 << 20) + 1), "max_header_bytes"),
        (base().max_concurrent_streams(0), "max_concurrent_streams"),
        (
            base().max_concurrent_streams(10_001),
            "max_concurrent_streams",
        ),
        (
            base().header_read_timeout(Duration::ZERO),
            "header_read_timeout",
        ),
        (
            base().request_head_timeout(Duration::ZERO),
            "request_head_timeout",
        ),
        (
            base().request_head_timeout(Duration::from_secs(3601)),
            "request_head_timeout",
        ),
        (base().idle_timeout(Duration::ZERO), "idle_timeout"),
        (
            base().idle_timeout(Duration::from_secs(3601)),
            "idle_timeout",
        ),
        (
            base().http2_keep_alive_interval(Duration::ZERO),
            "http2_keep_alive_interval",
        ),
        (
            base().http2_keep_alive_timeout(Duration::from_secs(7200)),
            "http2_keep_alive_timeout",
        ),
        (
            base().shutdown_timeout(Duration::from_secs(601)),
            "shutdown_timeout",
        ),
    ];
    for (config, field) in cases {
        let error = config.check().unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("server config: {field} must ")),
            "{error}"
        );
        assert!(error.contains(", got "), "{error}");
    }
    // The exact messages of two findings from the review.
    assert_eq!(
        base()
            .max_connections((1 << 61) + 1)
            .check()
            .unwrap_err()
            .to_string(),
        "server config: max_connections must be between 1 and 1000000, got 2305843009213693953"
    );
    assert_eq!(
        base()
            .max_headers(20_000_000)
            .check()
            .unwrap_err()
            .to_string(),
        "server config: max_headers must be between 1 and 1024, got 20000000"
    );
    // `bind` runs the same checks before binding.
    let refused = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        base().max_headers(20_000_000),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("max_headers"), "{refused}");
    // Every bound itself is accepted.
    base()
        .max_connections(ServerConfig::MAX_CONNECTIONS_LIMIT)
        .max_connections_per_ip(ServerConfig::MAX_CONNECTIONS_LIMIT)
        .per_ip_ipv4_prefix_len(1)
        .per_ip_ipv6_prefix_len(128)
        .max_headers(ServerConfig::MAX_HEADERS_LIMIT)
        .max_header_bytes(ServerConfig::MAX_HEADER_BYTES_LIMIT)
        .max_concurrent_streams(ServerConfig::MAX_CONCURRENT_STREAMS_LIMIT)
        .header_read_timeout(ServerConfig::TIMEOUT_LIMIT)
        .request_head_timeout(ServerConfig::TIMEOUT_LIMIT)
        .idle_timeout(ServerConfig::TIMEOUT_LIMIT)
        .http2_keep_alive_interval(ServerConfig::TIMEOUT_LIMIT)
        .http2_keep_alive_timeout(ServerConfig::TIMEOUT_LIMIT)
        .shutdown_timeout(ServerConfig::SHUTDOWN_TIMEOUT_LIMIT)
        .check()
        .unwrap();
    base().max_connections_per_ip(0).check().unwrap();
    base().shutdown_timeout(Duration::ZERO).check().unwrap();
}

/// At shutdown, connections with nothing in flight are closed at once or within a second: a
/// silent socket or a half-sent head does not hold the drain until the deadline.
#[tokio::test]
async fn shutdown_closes_quiet_connections_without_waiting_for_the_deadline() {
    let proxy = Harness::start(
        ServerConfig::default()
            .request_head_timeout(LONG)
            .header_read_timeout(LONG)
            .idle_timeout(LONG)
            .shutdown_timeout(LONG),
    )
    .await;
    let mut keep_alive = TcpStream::connect(proxy.addr).await.unwrap();
    get_ok(&mut keep_alive).await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut half_head = TcpStream::connect(proxy.addr).await.unwrap();
    half_head.write_all(b"GET / HT").await.unwrap();
    let (mut h2, h2_conn) = h2_connect(proxy.addr).await;
    let response = h2_get(&mut h2, "/").await;
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
    proxy
        .wait_metric("ravelin_proxy_connections_active", 4.0)
        .await;
    let recorder = Arc::clone(&proxy.recorder);
    // `stop` is bounded by BOUND, well under the 60 s deadline.
    let summary = proxy.stop().await;
    assert_eq!(summary.forced_closed, 0);
    assert_eq!(summary.connections, 4);
    for stream in [&mut keep_alive, &mut silent, &mut half_head] {
        read_until_closed(stream).await;
    }
    let ended = tokio::time::timeout(BOUND, h2_conn).await.unwrap().unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    let rendered = recorder.handle().render();
    assert!(
        rendered.contains("ravelin_proxy_connections_closed_total{reason=\"shutdown\"} 4"),
        "{rendered}"
    );
    assert!(
        rendered.contains("ravelin_proxy_connections_active 0"),
        "{rendered}"
    );
}

/// A client that stops reading a response (its receive window full) is dropped `send_timeout`
/// after the socket stopped taking bytes, freeing its slots; a client that reads, pausing
/// between reads (for far less than `send_timeout`), is not.
///
/// Before: nothing bounded it — the connection, its `max_connections` and per-IP slots and the
/// response behind it were held for as long as the client kept the socket open.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    let proxy = Harness::start(ServerConfig::default().send_timeout(SHORT)).await;
    let socket = TcpSocket::new_v4().unwrap();
    // A small receive buffer: the server's writes stop sooner (the kernel rounds it up).
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(proxy.addr).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    proxy.wait_closed("send_timeout", 1.0).await;
    // The server is gone from the socket: reading now drains what was buffered, then ends.
    let rest = tokio::time::timeout(BOUND, async {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the connection ends");
    assert!(rest < BIG_BODY, "read {rest} bytes of a dropped response");
    proxy.stop().await;

    // Reading, with pauses: never dropped (the bound is long next to the pauses, so a slow
    // machine cannot turn a pause into a stall).
    let proxy = Harness::start(ServerConfig::default().send_timeout(Duration::from_secs(5))).await;
    let mut reader = TcpStream::connect(proxy.addr).await.unwrap();
    reader
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let total = tokio::time::timeout(BOUND, async {
        let mut buf = vec![0u8; 1 << 16];
        let (mut total, mut reads) = (0usize, 0u32);
        loop {
            match reader.read(&mut buf).await.unwrap() {
                0 => return total,
                n => total += n,
            }
            reads += 1;
            if reads % 64 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await
    .expect("the whole response within the bound");
    assert!(total > BIG_BODY, "{total} bytes: head and the whole body");
    assert_eq!(proxy.closed("send_timeout"), 0.0);
    proxy.stop().await;
}
