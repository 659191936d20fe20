//! Bodies through `Forward` over real loopback sockets: a stalled upstream body is cut after
//! `body_idle_timeout`, a slow but live one is not, a malformed client body is the client's
//! 400 (not an upstream 502), and a response framed by connection close is marked.
//!
//! Timeouts are short (300 ms) and every wait has a generous bound ([`BOUND`]): assertions
//! are on behaviour, never on how long something took.
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use ravelin_http::CloseDelimited;
use ravelin_proxy::{Forward, IngressConfig, Upstream, demo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use support::{BOUND, Proxy, client, empty};

impl Proxy {
    fn upstream_errors(&self, kind: &str) -> f64 {
        self.metric(&format!(
            "ravelin_proxy_upstream_errors_total{{upstream=\"origin\",kind=\"{kind}\"}}"
        ))
    }

    async fn stop(self) {
        // Connections a test left stalled are closed by the shutdown deadline.
        self.into_server()
            .stop_quietly(Duration::from_secs(60))
            .await;
    }
}

/// A raw origin: reads one request head per connection, then runs `answer` on the socket.
async fn raw_origin<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                answer(socket).await;
            });
        }
    });
    addr
}

/// The upstream sends its head and part of the body, then nothing while keeping the
/// connection open. After `body_idle_timeout` the client's response is cut off (it has its
/// 200 already; the body ends in an error) and the cut is counted.
#[tokio::test]
async fn stalled_upstream_body_is_cut_after_the_idle_timeout() {
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel::<TcpStream>();
    let origin = raw_origin(move |mut socket| {
        let held_tx = held_tx.clone();
        async move {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst part")
                .await;
            // Keep the socket open, silent, for as long as the test runs.
            let _ = held_tx.send(socket);
        }
    })
    .await;
    let proxy = Proxy::start(IngressConfig::new(), || {
        Upstream::builder("origin", format!("http://{origin}"))
            .body_idle_timeout(Duration::from_millis(300))
            .build()
            .unwrap()
    })
    .await;
    let response = tokio::time::timeout(
        BOUND,
        client().request(Request::get(proxy.url("/big")).body(empty()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let collected = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .expect("a stalled upstream body pinned the client");
    assert!(
        collected.is_err(),
        "the client saw a complete body from a stalled upstream"
    );
    assert_eq!(proxy.upstream_errors("body_idle_timeout"), 1.0);
    let _held = held_rx.recv().await;
    proxy.stop().await;
}

/// A body whose frames keep coming is never cut, however long it takes in total: the timeout
/// is between frames. Gaps of 50 ms against a 1 s timeout, 1.5 s in all.
#[tokio::test]
async fn slow_but_live_upstream_body_is_not_cut() {
    let origin = raw_origin(|mut socket| async move {
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if socket.write_all(b"1\r\nx\r\n").await.is_err() {
                return;
            }
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let proxy = Proxy::start(IngressConfig::new(), || {
        Upstream::builder("origin", format!("http://{origin}"))
            .body_idle_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    })
    .await;
    let response = tokio::time::timeout(
        BOUND,
        client().request(Request::get(proxy.url("/slow")).body(empty()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let body = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), 30);
    assert_eq!(proxy.upstream_errors("body_idle_timeout"), 0.0);
    proxy.stop().await;
}

/// A malformed chunk in the client's request body is the client's fault: 400, counted as a
/// client error, and not as an upstream error.
#[tokio::test]
async fn malformed_chunked_client_body_is_400_not_an_upstream_error() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = Proxy::start(IngressConfig::new(), || {
        Upstream::builder("origin", origin.url()).build().unwrap()
    })
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: a.example\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\nZZ-not-a-size\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .expect("the proxy neither answered nor closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    assert!(text.contains("request body"), "{text:?}");
    assert_eq!(
        proxy
            .metric("ravelin_proxy_client_errors_total{upstream=\"origin\",kind=\"request_body\"}"),
        1.0
    );
    for kind in ["connect", "protocol", "timeout"] {
        assert_eq!(proxy.upstream_errors(kind), 0.0, "{kind}");
    }
    assert_eq!(
        proxy.metric("ravelin_proxy_upstream_responses_total{upstream=\"origin\",class=\"5xx\"}"),
        0.0
    );
    proxy.stop().await;
}

/// `CloseDelimited` marks an HTTP/1.1 response with neither Content-Length nor chunked
/// framing, and only that one.
#[tokio::test]
async fn close_delimited_responses_are_marked() {
    async fn forward_once(
        head: &'static [u8],
        close: bool,
    ) -> http::Response<ravelin_proxy::ForwardBody> {
        let origin = raw_origin(move |mut socket| async move {
            let _ = socket.write_all(head).await;
            if close {
                let _ = socket.shutdown().await;
            } else {
                // Hold the connection open a while; the body is framed.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
        let forward = Forward::new(
            Upstream::builder("origin", format!("http://{origin}"))
                .build()
                .unwrap(),
        );
        let request = Request::get("/")
            .header("host", "a.example")
            .body(empty())
            .unwrap();
        tokio::time::timeout(BOUND, forward.oneshot(request))
            .await
            .unwrap()
            .unwrap()
    }

    let response = forward_once(b"HTTP/1.1 200 OK\r\n\r\nuntil close", true).await;
    assert!(response.extensions().get::<CloseDelimited>().is_some());
    let body = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(body, "until close");

    let response = forward_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false).await;
    assert!(response.extensions().get::<CloseDelimited>().is_none());
    let response = forward_once(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        false,
    )
    .await;
    assert!(response.extensions().get::<CloseDelimited>().is_none());
    let response = forward_once(b"HTTP/1.1 204 No Content\r\n\r\n", true).await;
    assert!(response.extensions().get::<CloseDelimited>().is_none());
}
