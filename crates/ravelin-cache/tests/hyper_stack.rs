//! The layer in a real hyper stack over loopback sockets: client → caching proxy → origin.
// Test code: helpers outside #[test] functions may panic too (a panic is a failed test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ravelin_cache::CacheLayer;
use tokio::net::TcpListener;
use tower::{Layer, service_fn};

/// Serves `svc` on a free loopback port until the test ends.
async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An origin that answers every path with a 1 MiB body after a short delay, counting requests.
async fn origin(calls: Arc<AtomicUsize>) -> SocketAddr {
    serve(service_fn(move |req: Request<Incoming>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let body = Bytes::from(vec![b'x'; 1 << 20]);
            let cc = if req.uri().path() == "/private" {
                "private"
            } else {
                "max-age=300"
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", cc)
                    .header("etag", "\"v1\"")
                    .body(Full::new(body))
                    .unwrap(),
            )
        }
    }))
    .await
}

/// The caching proxy: the cache layer in front of a hyper client to the origin.
async fn proxy(origin: SocketAddr) -> (SocketAddr, ravelin_cache::CacheHandle) {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let forward = service_fn(move |mut req: Request<Incoming>| {
        let client = client.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            *req.uri_mut() = format!("http://{origin}{path}").parse().unwrap();
            client.request(req).await
        }
    });
    let layer = CacheLayer::builder()
        .max_object_bytes(4 << 20)
        .build()
        .unwrap();
    let handle = layer.handle();
    (serve(layer.layer(forward)).await, handle)
}

async fn get(addr: SocketAddr, path: &str) -> (http::response::Parts, Bytes) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            Request::get(format!("http://{addr}{path}"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_over_sockets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (proxy, handle) = proxy(origin(calls.clone()).await).await;

    let (miss, body) = get(proxy, "/big").await;
    assert_eq!(body.len(), 1 << 20);
    // The 1 MiB body streams to the client while it is recorded: the head cannot know it will
    // be stored, so it does not say so (the hit below shows it was).
    assert_eq!(
        miss.headers["cache-status"],
        "ravelin; fwd=uri-miss; ttl=300; detail=storing"
    );

    let (hit, body) = get(proxy, "/big").await;
    assert_eq!(body.len(), 1 << 20);
    assert!(
        hit.headers["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("ravelin; hit")
    );
    assert_eq!(hit.headers["content-length"], "1048576");
    assert!(hit.headers.contains_key("age"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.stats().hits, 1);
}

async fn get_range(addr: SocketAddr, path: &str, range: &str) -> (http::response::Parts, Bytes) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            Request::get(format!("http://{addr}{path}"))
                .header("range", range)
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

/// RFC 9111 §3.4 over sockets: a range miss at the start of a 1 MiB object gets its 10 bytes as
/// soon as they arrive; the rest is still read (hyper drops the body once it has sent the
/// range) and stored, so a later range is a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_miss_fills_the_whole_object_over_sockets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (proxy, handle) = proxy(origin(calls.clone()).await).await;

    let (miss, body) = get_range(proxy, "/big", "bytes=0-9").await;
    assert_eq!(miss.status, 206);
    assert_eq!(body.len(), 10);
    assert_eq!(miss.headers["content-range"], "bytes 0-9/1048576");
    // Polled with a closed range (a miss of it joins the fill); a suffix range on a miss would
    // go to the origin with its Range (it may not fill), on a hit it is served from the store.
    let mut hit = None;
    for _ in 0..100 {
        let (parts, body) = get_range(proxy, "/big", "bytes=1048571-1048575").await;
        if parts.headers["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("ravelin; hit")
        {
            hit = Some((parts, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (hit, body) = hit.expect("the whole object was stored");
    assert_eq!(hit.status, 206);
    assert_eq!(body.len(), 5);
    assert_eq!(
        hit.headers["content-range"],
        "bytes 1048571-1048575/1048576"
    );
    let (suffix, body) = get_range(proxy, "/big", "bytes=-5").await;
    assert_eq!(suffix.status, 206);
    assert_eq!(body.len(), 5);
    assert!(
        suffix.headers["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("ravelin; hit")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.stats().hits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_share_one_origin_fetch_over_sockets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (proxy, handle) = proxy(origin(calls.clone()).await).await;
    let clients: Vec<_> = (0..50)
        .map(|_| tokio::spawn(get(proxy, "/shared")))
        .collect();
    for c in clients {
        let (_, body) = c.await.unwrap();
        assert_eq!(body.len(), 1 << 20);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.stats().coalesced, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_responses_are_fetched_per_client_over_sockets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (proxy, _) = proxy(origin(calls.clone()).await).await;
    let clients: Vec<_> = (0..5)
        .map(|_| tokio::spawn(get(proxy, "/private")))
        .collect();
    for c in clients {
        let (parts, _) = c.await.unwrap();
        assert!(
            parts.headers["cache-status"]
                .to_str()
                .unwrap()
                .contains("detail=private")
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

// === Edge defaults over sockets ===

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, UpstreamError>;

/// The proxy's upstream body error: hyper's, or the body idle timeout the proxy enforces.
#[derive(Debug)]
enum UpstreamError {
    Hyper(hyper::Error),
    Idle,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Hyper(e) => write!(f, "upstream body: {e}"),
            UpstreamError::Idle => f.write_str("upstream body idle timeout"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// What the edge proxy does to an upstream body: an error after `idle` without a frame.
struct IdleTimeout {
    inner: Incoming,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, UpstreamError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(UpstreamError::Hyper)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(UpstreamError::Idle))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The caching proxy as the edge will run it: the upstream body under an idle timeout, and
/// `CloseDelimited` on HTTP/1.x responses with neither `Content-Length` nor chunked framing.
async fn edge_proxy(
    origin: SocketAddr,
    configure: impl FnOnce(ravelin_cache::CacheLayerBuilder) -> ravelin_cache::CacheLayerBuilder,
) -> (SocketAddr, ravelin_cache::CacheHandle) {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let forward = service_fn(move |mut req: Request<Incoming>| {
        let client = client.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            *req.uri_mut() = format!("http://{origin}{path}").parse().unwrap();
            let resp = client.request(req).await?;
            let close_delimited = !resp.headers().contains_key("content-length")
                && !resp.headers().contains_key("transfer-encoding")
                && resp.status() != http::StatusCode::NOT_MODIFIED
                && resp.status() != http::StatusCode::NO_CONTENT;
            let (mut parts, body) = resp.into_parts();
            if close_delimited {
                parts.extensions.insert(ravelin_http::CloseDelimited);
            }
            let idle = Duration::from_millis(300);
            let body = IdleTimeout {
                inner: body,
                idle,
                timer: Box::pin(tokio::time::sleep(idle)),
            };
            Ok::<_, hyper_util::client::legacy::Error>(Response::from_parts(
                parts,
                BoxBody::new(body),
            ))
        }
    });
    let layer = configure(CacheLayer::builder().max_object_bytes(4 << 20))
        .build()
        .unwrap();
    let handle = layer.handle();
    (serve(layer.layer(forward)).await, handle)
}

/// An origin answering each request with `reply(request, n)` (n counts from 0).
async fn scripted_origin<F>(reply: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(&Request<Incoming>, usize) -> Response<BoxOrigin> + Send + Sync + 'static,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let reply = Arc::new(reply);
    let addr = serve(service_fn(move |req: Request<Incoming>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let resp = reply(&req, n);
        async move { Ok::<_, Infallible>(resp) }
    }))
    .await;
    (addr, calls)
}

type BoxOrigin = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(body: &'static str) -> BoxOrigin {
    Full::new(Bytes::from_static(body.as_bytes())).boxed()
}

/// A body of `first`, then nothing ever again (a stalled upstream).
fn stalling(first: &'static str) -> BoxOrigin {
    use futures_util::StreamExt;
    let frames = futures_util::stream::iter([Ok(http_body::Frame::data(Bytes::from_static(
        first.as_bytes(),
    )))])
    .chain(futures_util::stream::pending());
    BodyExt::boxed(http_body_util::StreamBody::new(frames))
}

/// An origin over raw TCP that writes `bytes` as its whole answer to every request, then
/// closes the connection (100 ms later).
async fn raw_origin(bytes: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(bytes).await;
                // Let the proxy send the head on before the body ends (or is cut short).
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, calls)
}

/// A client request; the body's error, if any, is returned rather than raised.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Result<Bytes, hyper::Error>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client.request(b.body(Empty::new()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.map(|c| c.to_bytes()))
}

fn cache_status(parts: &http::response::Parts) -> String {
    parts
        .headers
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_responses_are_not_shared_without_an_opt_in_over_sockets() {
    let (origin, calls) = scripted_origin(|req, n| {
        let cc = if req.uri().path() == "/public" {
            "public, max-age=300"
        } else {
            "max-age=300"
        };
        Response::builder()
            .header("cache-control", cc)
            .header("set-cookie", format!("session={n}"))
            .body(full("page"))
            .unwrap()
    })
    .await;
    let (proxy, _) = edge_proxy(origin, |b| b).await;

    let (first, _) = send(proxy, "GET", "/private-ish", &[]).await;
    assert_eq!(first.headers["set-cookie"], "session=0");
    assert!(
        cache_status(&first).ends_with("detail=set-cookie"),
        "{}",
        cache_status(&first)
    );
    let (second, _) = send(proxy, "GET", "/private-ish", &[]).await;
    assert_eq!(
        second.headers["set-cookie"], "session=1",
        "not the first client's cookie"
    );

    let (first, body) = send(proxy, "GET", "/public", &[]).await;
    assert_eq!(
        first.headers["set-cookie"], "session=2",
        "the fetching client keeps its cookie"
    );
    assert_eq!(body.unwrap(), "page");
    let (hit, body) = send(proxy, "GET", "/public", &[]).await;
    assert!(
        cache_status(&hit).starts_with("ravelin; hit"),
        "{}",
        cache_status(&hit)
    );
    assert!(
        hit.headers.get("set-cookie").is_none(),
        "the stored copy has no cookie"
    );
    assert_eq!(body.unwrap(), "page");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_bypass_or_evict_over_sockets() {
    let (origin, calls) = scripted_origin(|_, _| {
        Response::builder()
            .header("cache-control", "max-age=300")
            .body(full("hot"))
            .unwrap()
    })
    .await;
    let (proxy, _) = edge_proxy(origin, |b| b).await;
    let _ = send(proxy, "GET", "/hot", &[]).await;
    for headers in [
        &[("cache-control", "no-cache")][..],
        &[("cache-control", "max-age=0")],
        &[("pragma", "no-cache")],
        &[("cache-control", "no-store")],
    ] {
        let (parts, body) = send(proxy, "GET", "/hot", headers).await;
        assert!(
            cache_status(&parts).starts_with("ravelin; hit"),
            "{headers:?}: {}",
            cache_status(&parts)
        );
        assert_eq!(body.unwrap(), "hot");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (parts, _) = send(proxy, method, "/hot", &[]).await;
        assert_eq!(cache_status(&parts), "ravelin; fwd=method");
        let (parts, _) = send(proxy, "GET", "/hot", &[]).await;
        assert!(
            cache_status(&parts).starts_with("ravelin; hit"),
            "after {method}: {}",
            cache_status(&parts)
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "the four unsafe requests, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_request_directives_and_invalidation_when_configured_over_sockets() {
    let (origin, calls) = scripted_origin(|_, _| {
        Response::builder()
            .header("cache-control", "max-age=300")
            .body(full("hot"))
            .unwrap()
    })
    .await;
    let (proxy, _) = edge_proxy(origin, |b| {
        b.request_directives(true).invalidate_on_unsafe(true)
    })
    .await;
    let _ = send(proxy, "GET", "/hot", &[]).await;
    let (parts, _) = send(proxy, "GET", "/hot", &[("pragma", "no-cache")]).await;
    assert!(
        cache_status(&parts).contains("fwd=request"),
        "{}",
        cache_status(&parts)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Let the forced fetch's body finish storing, then evict with a POST.
    let (parts, _) = send(proxy, "GET", "/hot", &[]).await;
    assert!(
        cache_status(&parts).starts_with("ravelin; hit"),
        "{}",
        cache_status(&parts)
    );
    let _ = send(proxy, "POST", "/hot", &[]).await;
    let (parts, _) = send(proxy, "GET", "/hot", &[]).await;
    assert!(
        cache_status(&parts).contains("fwd=uri-miss"),
        "{}",
        cache_status(&parts)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_content_length_body_is_neither_stored_nor_claimed_over_sockets() {
    let (origin, calls) = raw_origin(
        b"HTTP/1.1 200 OK\r\ncache-control: max-age=300\r\ncontent-length: 100\r\n\r\nonly ten b",
    )
    .await;
    let (proxy, _) = edge_proxy(origin, |b| b).await;
    for _ in 0..2 {
        let (parts, body) = send(proxy, "GET", "/t", &[]).await;
        assert!(body.is_err(), "the client sees the truncation");
        let status = cache_status(&parts);
        assert!(!status.contains("stored"), "{status}");
        assert!(status.contains("fwd=uri-miss"), "{status}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_responses_are_not_stored_over_sockets() {
    // Whole or cut short, a body that ends at connection close looks the same.
    for bytes in [
        &b"HTTP/1.1 200 OK\r\ncache-control: max-age=300\r\nconnection: close\r\n\r\nthe whole body"[..],
        &b"HTTP/1.1 200 OK\r\ncache-control: max-age=300\r\nconnection: close\r\n\r\nthe wh"[..],
    ] {
        let (origin, calls) = raw_origin(bytes).await;
        let (proxy, _) = edge_proxy(origin, |b| b).await;
        for _ in 0..2 {
            let (parts, body) = send(proxy, "GET", "/c", &[]).await;
            assert!(body.is_ok());
            assert_eq!(cache_status(&parts), "ravelin; fwd=uri-miss; detail=close-delimited");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
    // The same response framed by Content-Length, and chunked, is stored.
    for bytes in [
        &b"HTTP/1.1 200 OK\r\ncache-control: max-age=300\r\ncontent-length: 14\r\nconnection: close\r\n\r\nthe whole body"[..],
        &b"HTTP/1.1 200 OK\r\ncache-control: max-age=300\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\ne\r\nthe whole body\r\n0\r\n\r\n"[..],
    ] {
        let (origin, calls) = raw_origin(bytes).await;
        let (proxy, _) = edge_proxy(origin, |b| b).await;
        let (first, body) = send(proxy, "GET", "/c", &[]).await;
        assert_eq!(body.unwrap(), "the whole body");
        assert!(cache_status(&first).ends_with("detail=storing"), "{}", cache_status(&first));
        let (hit, body) = send(proxy, "GET", "/c", &[]).await;
        assert!(cache_status(&hit).starts_with("ravelin; hit"), "{}", cache_status(&hit));
        assert_eq!(body.unwrap(), "the whole body");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_is_claimed_for_an_empty_body_and_a_304_over_sockets() {
    let (origin, _) = scripted_origin(|req, _| {
        if req.headers().contains_key("if-none-match") {
            return Response::builder()
                .status(304)
                .header("cache-control", "max-age=300")
                .header("etag", "\"v\"")
                .body(full(""))
                .unwrap();
        }
        let cc = if req.uri().path() == "/empty" {
            "max-age=300"
        } else {
            "max-age=0"
        };
        Response::builder()
            .header("cache-control", cc)
            .header("etag", "\"v\"")
            .body(full(if req.uri().path() == "/empty" {
                ""
            } else {
                "body"
            }))
            .unwrap()
    })
    .await;
    let (proxy, _) = edge_proxy(origin, |b| b).await;
    let (parts, _) = send(proxy, "GET", "/empty", &[]).await;
    assert_eq!(
        cache_status(&parts),
        "ravelin; fwd=uri-miss; ttl=300; stored"
    );
    let (parts, _) = send(proxy, "GET", "/v", &[]).await;
    assert_eq!(
        cache_status(&parts),
        "ravelin; fwd=uri-miss; ttl=0; detail=storing"
    );
    let (parts, body) = send(proxy, "GET", "/v", &[]).await;
    assert_eq!(
        cache_status(&parts),
        "ravelin; fwd=stale; fwd-status=304; ttl=300; stored"
    );
    assert_eq!(body.unwrap(), "body");
}

/// Leader and followers of one fill, against an origin whose first body stalls after its first
/// bytes; the proxy's idle timeout turns the stall into an error. The first head is delayed so
/// that every client joins the fill before it arrives.
async fn stalled_fill(
    content_length: bool,
) -> (
    Vec<(String, Result<Bytes, hyper::Error>)>,
    Duration,
    usize,
    SocketAddr,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let origin = serve(service_fn(move |_req: Request<Incoming>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut b = Response::builder().header("cache-control", "max-age=300");
            if content_length {
                b = b.header("content-length", "1000");
            }
            let resp = if n == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                b.body(stalling("first bytes")).unwrap()
            } else {
                b.body(full(Box::leak("x".repeat(1000).into_boxed_str())))
                    .unwrap()
            };
            Ok::<_, Infallible>(resp)
        }
    }))
    .await;
    // A long coalesce timeout: followers must be released by the failure, not by waiting.
    let (proxy, _) = edge_proxy(origin, |b| b.coalesce_timeout(Duration::from_secs(60))).await;
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(async move {
                let (parts, body) = send(proxy, "GET", "/stall", &[]).await;
                (cache_status(&parts), body)
            })
        })
        .collect();
    let mut out = Vec::new();
    for c in clients {
        out.push(c.await.unwrap());
    }
    (out, started.elapsed(), calls.load(Ordering::SeqCst), proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_fill_releases_streaming_followers_with_an_error_over_sockets() {
    let (results, elapsed, calls, proxy) = stalled_fill(true).await;
    // 200 ms to the head, then the 300 ms idle timeout; 60 s of coalesce_timeout never waited.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    for (status, body) in &results {
        assert!(
            body.is_err(),
            "every client streamed the failed fill: {status}"
        );
        assert!(!status.contains("stored"), "{status}");
    }
    let collapsed = results
        .iter()
        .filter(|(s, _)| s.contains("; collapsed"))
        .count();
    assert_eq!(collapsed, 5, "{results:?}");
    assert_eq!(calls, 1);
    // Nothing of the failed fill was stored.
    let (parts, body) = send(proxy, "GET", "/stall", &[]).await;
    assert!(
        cache_status(&parts).contains("fwd=uri-miss"),
        "{}",
        cache_status(&parts)
    );
    assert_eq!(body.unwrap().len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_fill_of_unknown_length_sends_waiting_followers_to_the_origin_over_sockets() {
    let (results, elapsed, calls, _) = stalled_fill(false).await;
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let failed = results.iter().filter(|(_, b)| b.is_err()).count();
    assert_eq!(failed, 1, "only the leader saw the stall: {results:?}");
    let alone = results
        .iter()
        .filter(|(s, _)| s.contains("collapsed=?0"))
        .count();
    assert_eq!(alone, 5, "{results:?}");
    for (status, body) in &results {
        assert!(!status.contains("; stored"), "{status}");
        if let Ok(b) = body {
            assert_eq!(b.len(), 1000, "{status}");
        }
    }
    assert_eq!(calls, 6);
}

/// The error of an origin body that fails (issue 17): a concrete type, so the test can see it
/// come back out of `BodyError::Origin` unchanged.
#[derive(Debug)]
struct OriginReset;

impl std::fmt::Display for OriginReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("origin reset the stream")
    }
}

impl std::error::Error for OriginReset {}

/// The body most tower stacks erase to: its error is a `BoxError` (`Box<dyn Error + Send +
/// Sync>`, which is itself no `Error`).
type BoxedOrigin = http_body_util::combinators::BoxBody<Bytes, ravelin_cache::BoxError>;

/// A cacheable answer whose body is `text`, or, when `fails`, whose body fails after a first
/// chunk.
fn boxed_answer(text: &'static str, fails: bool) -> Response<BoxedOrigin> {
    let body: BoxedOrigin = if fails {
        let frames = futures_util::stream::iter([
            Ok(http_body::Frame::data(Bytes::from_static(text.as_bytes()))),
            Err(ravelin_cache::BoxError::from(OriginReset)),
        ]);
        BodyExt::boxed(http_body_util::StreamBody::new(frames))
    } else {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(ravelin_cache::BoxError::from)
            .boxed()
    };
    Response::builder()
        .header("cache-control", "max-age=300")
        .body(body)
        .unwrap()
}

/// A `CacheBody` over an inner body whose error is `BoxError` is a body hyper serves (this did
/// not compile while `BodyError<E>` was an `Error` only when `E` was: E0277), hits and misses
/// alike; a failing origin body reaches the client as a broken response and is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_body_with_a_box_error_is_served_by_hyper_over_sockets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::builder().build().unwrap();
    let handle = layer.handle();
    let c = calls.clone();
    let origin = service_fn(move |req: Request<Incoming>| {
        c.fetch_add(1, Ordering::SeqCst);
        let fails = req.uri().path() == "/fails";
        async move { Ok::<_, Infallible>(boxed_answer("boxed body", fails)) }
    });
    let proxy = serve(layer.layer(origin)).await;

    let (miss, body) = send(proxy, "GET", "/ok", &[]).await;
    assert_eq!(body.unwrap(), "boxed body");
    assert!(cache_status(&miss).contains("fwd=uri-miss"), "{miss:?}");
    let (hit, body) = send(proxy, "GET", "/ok", &[]).await;
    assert_eq!(body.unwrap(), "boxed body");
    assert!(cache_status(&hit).starts_with("ravelin; hit"), "{hit:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The origin body fails mid-stream: hyper cuts the response off (before or after the head,
    // depending on what it had flushed; never a complete response), and nothing is stored, so
    // the next request goes back to the origin.
    let completes = || async {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let request = Request::get(format!("http://{proxy}/fails"))
            .body(Empty::new())
            .unwrap();
        match client.request(request).await {
            Ok(resp) => resp.into_body().collect().await.is_ok(),
            Err(_) => false,
        }
    };
    assert!(
        !completes().await,
        "a failed origin body must not look complete"
    );
    assert!(!completes().await);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(handle.stats().hits, 1);
}

/// The origin's error comes out of `BodyError::Origin` as it went in: boxed once, never
/// stringified, so `downcast_ref` finds its type (and `source()` points at it).
#[tokio::test]
async fn body_error_origin_keeps_the_inner_error() {
    use std::error::Error as _;
    let origin = service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(boxed_answer("partial ", true))
    });
    let svc = CacheLayer::builder().build().unwrap().layer(origin);
    let resp = tower::ServiceExt::oneshot(
        svc,
        Request::get("http://example.com/x")
            .body(Empty::new())
            .unwrap(),
    )
    .await
    .unwrap();
    let error = resp.into_body().collect().await.unwrap_err();
    let ravelin_cache::BodyError::Origin(inner) = &error else {
        panic!("expected the origin's error, got {error:?}");
    };
    assert!(inner.downcast_ref::<OriginReset>().is_some(), "{inner:?}");
    assert!(error.source().is_some_and(|s| s.is::<OriginReset>()));
    assert_eq!(
        error.to_string(),
        "origin body failed: origin reset the stream"
    );
}
