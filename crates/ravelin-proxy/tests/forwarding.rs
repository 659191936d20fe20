//! Forwarding and serving over real loopback sockets: demo origin ← Forward ← Server ← client.
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use ravelin_proxy::{Forward, Server, ServerConfig, Upstream, demo};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use support::{BOUND, Serving, TestBody, client, empty, h2_client, read_whole};

/// The proxy under test: Server(config) → Forward(upstream).
async fn start_proxy(upstream: Upstream, config: ServerConfig) -> Serving {
    Serving::start(Forward::new(upstream), config, None).await
}

async fn send(
    client: &Client<HttpConnector, TestBody>,
    request: Request<TestBody>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = tokio::time::timeout(BOUND, client.request(request))
        .await
        .unwrap()
        .unwrap();
    read_whole(response).await
}

fn header_of(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

fn upstream(url: &str) -> Upstream {
    Upstream::builder("origin", url).build().unwrap()
}

#[tokio::test]
async fn forwards_with_proxy_headers_and_without_hop_by_hop() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(upstream(&origin.url()), ServerConfig::default()).await;
    let request = Request::get(proxy.url("/echo?q=1"))
        .header("host", "shop.example")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9v")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    let (status, headers, body) = send(&client(), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("via").unwrap(), "1.1 ravelin");
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["uri"], "/echo?q=1");
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(
            header_of(&echo, gone).is_empty(),
            "{gone} reached the origin: {echo}"
        );
    }
    assert_eq!(header_of(&echo, "x-end-to-end"), ["kept"]);
    assert_eq!(header_of(&echo, "via"), ["1.1 ravelin"]);
    assert_eq!(
        header_of(&echo, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(header_of(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(header_of(&echo, "x-forwarded-host"), ["shop.example"]);
    // The upstream's own authority, not the client's Host (nginx's default).
    assert_eq!(header_of(&echo, "host"), [origin.addr().to_string()]);
    proxy.stop().await;
}

/// The response direction: hop-by-hop fields the upstream sends (the fixed set and those its
/// `Connection` names) do not reach the client; end-to-end fields do, and `Via` is appended.
#[tokio::test]
async fn response_hop_by_hop_fields_are_removed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\n\
                      connection: keep-alive, x-upstream-private\r\n\
                      keep-alive: timeout=5\r\n\
                      x-upstream-private: secret\r\n\
                      proxy-authenticate: Basic\r\n\
                      x-end-to-end: kept\r\n\
                      content-length: 2\r\n\
                      \r\n\
                      ok",
                )
                .await;
        }
    });
    let proxy = start_proxy(upstream(&format!("http://{addr}")), ServerConfig::default()).await;
    let (status, headers, body) = send(
        &client(),
        Request::get(proxy.url("/")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
    for gone in ["x-upstream-private", "keep-alive", "proxy-authenticate"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the client: {headers:?}"
        );
    }
    // hyper's server may add its own `connection` for the client hop, never the upstream's.
    for value in headers.get_all("connection") {
        assert!(
            !value.to_str().unwrap().contains("x-upstream-private"),
            "the upstream's Connection reached the client: {headers:?}"
        );
    }
    assert_eq!(headers.get("x-end-to-end").unwrap(), "kept");
    assert_eq!(headers.get("via").unwrap(), "1.1 ravelin");
    proxy.stop().await;
}

#[tokio::test]
async fn every_method_and_large_bodies_pass_through() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(upstream(&origin.url()), ServerConfig::default()).await;
    let client = client();
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"] {
        let body = Bytes::from(vec![b'x'; 3 * 1024 * 1024 + 7]);
        let request = Request::builder()
            .method(method)
            .uri(proxy.url("/echo"))
            .body(Full::new(body).boxed())
            .unwrap();
        let (status, _, body) = send(&client, request).await;
        assert_eq!(status, StatusCode::OK, "{method}");
        let echo: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["method"], method);
        assert_eq!(echo["body_bytes"], 3 * 1024 * 1024 + 7);
    }
    proxy.stop().await;
}

/// Bodies stream: the first chunk crosses the proxy before the second one exists, in both
/// directions. A buffering proxy would deadlock here, which the bound turns into a failure.
#[tokio::test]
async fn bodies_stream_both_ways() {
    // An origin that reports each request chunk as it arrives and answers with a body whose
    // second chunk is only produced after the test says so.
    let (seen_tx, mut seen_rx) = mpsc::channel::<usize>(8);
    let (release_tx, release_rx) = mpsc::channel::<()>(1);
    let release_rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = listener.local_addr().unwrap();
    let service = tower::service_fn(move |request: Request<Incoming>| {
        let seen_tx = seen_tx.clone();
        let release_rx = release_rx.clone();
        async move {
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    seen_tx.send(data.len()).await.unwrap();
                }
            }
            let mut release = release_rx.lock().await.take().unwrap();
            let stream = async_stream(move |tx| async move {
                tx.send(Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                    b"first",
                ))))
                .await
                .unwrap();
                release.recv().await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
                    .await
                    .unwrap();
            });
            Ok::<_, Infallible>(Response::new(StreamBody::new(stream)))
        }
    });
    let server = Server::from_listener(listener, ServerConfig::default()).unwrap();
    let (stop_origin, origin_stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(service, async {
        let _ = origin_stopped.await;
    }));
    let proxy = start_proxy(
        upstream(&format!("http://{origin_addr}")),
        ServerConfig::default(),
    )
    .await;

    let (chunk_tx, chunk_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let request = Request::post(proxy.url("/stream"))
        .body(StreamBody::new(tokio_stream(chunk_rx)).boxed())
        .unwrap();
    let client = client();
    let pending = tokio::spawn(async move { client.request(request).await });
    chunk_tx
        .send(Ok(Frame::data(Bytes::from_static(b"hello"))))
        .await
        .unwrap();
    let first = tokio::time::timeout(BOUND, seen_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first, 5,
        "the first request chunk reached the origin before the second was sent"
    );
    chunk_tx
        .send(Ok(Frame::data(Bytes::from_static(b"world!"))))
        .await
        .unwrap();
    drop(chunk_tx);
    assert_eq!(
        tokio::time::timeout(BOUND, seen_rx.recv()).await.unwrap(),
        Some(6)
    );

    let response = tokio::time::timeout(BOUND, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let frame = tokio::time::timeout(BOUND, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        frame.into_data().unwrap(),
        "first",
        "first response chunk arrived before the second existed"
    );
    release_tx.send(()).await.unwrap();
    let rest = tokio::time::timeout(BOUND, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "second");
    proxy.stop().await;
    let _ = stop_origin.send(());
}

/// A stream from a producer closure over an mpsc channel (no extra dependency).
fn async_stream<F, Fut, T>(producer: F) -> impl futures_core_stream::Stream<Item = T>
where
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(producer(tx));
    tokio_stream(rx)
}

fn tokio_stream<T>(rx: mpsc::Receiver<T>) -> futures_core_stream::ReceiverStream<T> {
    futures_core_stream::ReceiverStream(rx)
}

/// A minimal `Stream` over an mpsc receiver, so the test needs no stream crate.
mod futures_core_stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(super) use futures_util::Stream;

    pub(super) struct ReceiverStream<T>(pub(super) tokio::sync::mpsc::Receiver<T>);

    impl<T> Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    // A port that was just free: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = start_proxy(
        Upstream::builder("dead", format!("http://{dead}"))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
        ServerConfig::default(),
    )
    .await;
    let (status, headers, body) = send(
        &client(),
        Request::get(proxy.url("/")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    assert!(String::from_utf8_lossy(&body).contains("could not be reached"));
    proxy.stop().await;

    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(
        Upstream::builder("slow", origin.url())
            .response_timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
        ServerConfig::default(),
    )
    .await;
    let (status, _, body) = send(
        &client(),
        Request::get(proxy.url("/slow?ms=5000"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(String::from_utf8_lossy(&body).contains("did not answer in time"));
    proxy.stop().await;
}

#[tokio::test]
async fn garbage_from_upstream_is_502() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
        }
    });
    let proxy = start_proxy(upstream(&format!("http://{addr}")), ServerConfig::default()).await;
    let (status, _, body) = send(
        &client(),
        Request::get(proxy.url("/")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        String::from_utf8_lossy(&body).contains("invalid response"),
        "{body:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn http2_on_both_sides() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(
        Upstream::builder("h2", origin.url())
            .http2(true)
            .build()
            .unwrap(),
        ServerConfig::default(),
    )
    .await;
    let client = h2_client();
    for _ in 0..3 {
        let (status, headers, body) = send(
            &client,
            Request::get(proxy.url("/echo")).body(empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers.get("via").unwrap(),
            "2 ravelin",
            "the response came over HTTP/2"
        );
        let echo: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(header_of(&echo, "via"), ["2 ravelin"]);
        assert!(
            header_of(&echo, "host").is_empty(),
            "HTTP/2 carries :authority, not Host"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn header_count_limit_answers_431() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(
        upstream(&origin.url()),
        ServerConfig::default().max_headers(20),
    )
    .await;
    let mut request = Request::get(proxy.url("/"));
    for i in 0..40 {
        request = request.header(format!("x-h{i}"), "v");
    }
    let (status, _, _) = send(&client(), request.body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    proxy.stop().await;
}

/// The default limit (100 fields) is hyper's own, which the server then leaves unset: a head of
/// 100 fields is served and one of 101 answered 431 all the same. (Served here by a service that
/// counts the fields, not forwarded: an origin has its own limit.)
#[tokio::test]
async fn default_header_count_limit_is_100_fields() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let count_fields = tower::service_fn(|request: Request<Incoming>| async move {
        let fields = request.headers().len().to_string();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(fields))))
    });
    let task = tokio::spawn(server.serve(count_fields, async {
        let _ = stopped.await;
    }));
    // The client adds `Host`: 99 more fields make 100, 100 more make 101.
    for (extra, expected) in [
        (99, StatusCode::OK),
        (100, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    ] {
        let mut request = Request::get(format!("http://{addr}/"));
        for i in 0..extra {
            request = request.header(format!("x-h{i}"), "v");
        }
        let (status, _, body) = send(&client(), request.body(empty()).unwrap()).await;
        assert_eq!(status, expected, "{extra} fields besides Host");
        if status == StatusCode::OK {
            assert_eq!(body, "100");
        }
    }
    let _ = stop.send(());
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn header_byte_limit_answers_431() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(
        upstream(&origin.url()),
        ServerConfig::default().max_header_bytes(ServerConfig::MIN_HEADER_BYTES),
    )
    .await;
    // One field of 16 KiB: under the count limit, over the byte limit.
    let request = Request::get(proxy.url("/"))
        .header("x-big", "v".repeat(16 * 1024))
        .body(empty())
        .unwrap();
    let (status, _, _) = send(&client(), request).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // A head within the limit on a fresh connection is still served.
    let (status, _, _) = send(
        &client(),
        Request::get(proxy.url("/")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn per_ip_limit_closes_extra_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(
        upstream(&origin.url()),
        ServerConfig::default().max_connections_per_ip(1),
    )
    .await;
    let mut first = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    first
        .write_all(b"GET /api/time HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(BOUND, first.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    // The first connection is still open (keep-alive), so a second one from 127.0.0.1 is refused.
    let mut second = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let _ = second.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(BOUND, second.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(
        read.is_err() || rest.is_empty(),
        "second connection was served: {rest:?}"
    );
    drop(first);
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(upstream(&origin.url()), ServerConfig::default()).await;
    let url = proxy.url("/slow?ms=300");
    let in_flight =
        tokio::spawn(
            async move { send(&client(), Request::get(url).body(empty()).unwrap()).await },
        );
    // Wait until the origin has the request, so shutdown really happens mid-request.
    let deadline = tokio::time::Instant::now() + BOUND;
    while origin.origin().requests() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let summary = proxy.stop().await;
    assert_eq!(summary.forced_closed, 0);
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slept 300 ms\n");
}

#[tokio::test]
async fn shutdown_deadline_closes_stuck_requests() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = start_proxy(
        upstream(&origin.url()),
        ServerConfig::default().shutdown_timeout(Duration::from_millis(100)),
    )
    .await;
    let url = proxy.url("/slow?ms=30000");
    let in_flight = tokio::spawn(async move {
        client()
            .request(Request::get(url).body(empty()).unwrap())
            .await
    });
    let deadline = tokio::time::Instant::now() + BOUND;
    while origin.origin().requests() == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let summary = proxy.stop().await;
    assert_eq!(summary.forced_closed, 1);
    assert!(
        tokio::time::timeout(BOUND, in_flight)
            .await
            .unwrap()
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn routes_pick_upstreams_and_unmatched_is_404() {
    use ravelin_proxy::{Route, Routes, SharedRoutes, Target};
    let web = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let api = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let routes = SharedRoutes::new(Routes::new([
        Route::new("web", "/", upstream(&web.url()).into()).host("www.test"),
        Route::new(
            "api",
            "/api",
            Target {
                upstream: Upstream::builder("api", api.url()).build().unwrap(),
                response_timeout: Some(Duration::from_millis(200)),
            },
        )
        .host("www.test"),
    ]));
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(Forward::new(routes.clone()), async {
        let _ = stopped.await;
    }));
    let get = |host: &str, path: &str| {
        Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(empty())
            .unwrap()
    };
    let client = client();
    assert_eq!(send(&client, get("www.test", "/")).await.0, StatusCode::OK);
    assert_eq!(web.origin().requests(), 1);
    assert_eq!(
        send(&client, get("www.test", "/api/time")).await.0,
        StatusCode::OK
    );
    assert_eq!(api.origin().requests(), 1);
    let (status, _, body) = send(&client, get("other.test", "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("no route"));
    // A reload swaps the table for the next request.
    routes.store(Routes::new([Route::new(
        "all",
        "/",
        upstream(&api.url()).into(),
    )]));
    assert_eq!(
        send(&client, get("other.test", "/api/time")).await.0,
        StatusCode::OK
    );
    let _ = stop.send(());
    task.await.unwrap();
}
